//! Pipe mode: request lines read from stdin when it is not a terminal,
//! sent pipelined, one reply printed per request, in order.
//!
//! Lines are sent as they are read (no quoting, as `nc` sends them), up to
//! [`MAX_IN_FLIGHT_REQUESTS`] requests or [`MAX_IN_FLIGHT_BYTES`] in flight
//! (`pipelined`); blank lines are skipped, and a line whose first word is
//! `quit` or `exit` (any case) ends the input without being sent.
//!
//! # Where requests go
//!
//! Pipelined requests go to one node, so it must be one that serves them:
//! the first `GET` (until one is answered there) and the first `PUT` or
//! `DEL` (until one is answered there) go alone, after every earlier reply
//! has arrived, through [`Client::execute`], which follows `NOT_LEADER` to
//! the leader; the rest go where those were answered. A `NOT_LEADER` in the
//! stream later (a failover, or reads redirected by a follower) certainly
//! was not applied, but requests after it were already sent: resending it
//! would reorder it after them. So the run stops: nothing more is sent,
//! the replies in flight are printed, and [`PipeStop::Redirected`] says
//! which line was refused and from which line on nothing was sent.
//!
//! # When the connection is lost
//!
//! The requests in flight may or may not have been applied; the run stops
//! and [`PipeStop::Lost`] names them. A connection the server closed with
//! nothing in flight (an idle timeout) is reopened before the next request.

use std::fmt;
use std::io::{self, Read, Write};
use std::time::Duration;

use super::input_lines::{InputLine, InputLines};
use super::output::{OutputMode, write_reply};
use super::pipelined::{Failure, Pipelined};
use super::{Client, ClientError, MAX_LINE_LENGTH, is_redirect, is_server_error};

pub use super::pipelined::{MAX_IN_FLIGHT_BYTES, MAX_IN_FLIGHT_REQUESTS};

/// What a pipe run did.
#[derive(Debug, Default)]
pub struct PipeReport {
    pub replies: u64,
    /// Replies that were `ERR ...`.
    pub errors: u64,
    /// Why the run stopped before the end of the input, if it did.
    pub stop: Option<PipeStop>,
}

/// Why a pipe run stopped early. `first_unsent` is the first input line
/// not sent, `None` when every line was.
#[derive(Debug)]
pub enum PipeStop {
    /// `line` was answered `NOT_LEADER` in the middle of the stream.
    Redirected {
        line: u64,
        reply: Vec<u8>,
        first_unsent: Option<u64>,
    },
    /// The connection failed with requests in flight: those of
    /// `maybe_applied` may or may not have been applied.
    Lost {
        address: String,
        error: String,
        maybe_applied: Vec<u64>,
        first_unsent: Option<u64>,
    },
    /// `line` cannot be sent as one request line; it was not.
    InvalidLine { line: u64, reason: String },
    /// Sending `line` through the blocking client failed.
    Client { line: u64, error: ClientError },
    /// Reading stdin or writing stdout failed.
    Io(io::Error),
}

impl fmt::Display for PipeStop {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PipeStop::Redirected {
                line,
                reply,
                first_unsent,
            } => {
                write!(
                    formatter,
                    "line {line} was answered {} in the middle of the stream (the leader \
                     changed): it was not applied, and it was not resent because the \
                     requests after it were already sent; their replies are printed",
                    reply.escape_ascii()
                )?;
                write_unsent(formatter, *first_unsent)
            }
            PipeStop::Lost {
                address,
                error,
                maybe_applied,
                first_unsent,
            } => {
                write!(
                    formatter,
                    "the connection to {address} was lost ({error}) with {} request(s) \
                     unanswered{}: they may or may not have been applied",
                    maybe_applied.len(),
                    line_range(maybe_applied)
                )?;
                write_unsent(formatter, *first_unsent)
            }
            PipeStop::InvalidLine { line, reason } => {
                write!(
                    formatter,
                    "line {line} {reason}; it was not sent, nor anything after it"
                )
            }
            PipeStop::Client { line, error } => {
                write!(formatter, "line {line}: {error}; nothing after it was sent")
            }
            PipeStop::Io(error) => write!(formatter, "{error}"),
        }
    }
}

fn write_unsent(formatter: &mut fmt::Formatter<'_>, first_unsent: Option<u64>) -> fmt::Result {
    match first_unsent {
        Some(line) => write!(formatter, "; nothing from line {line} on was sent"),
        None => Ok(()),
    }
}

fn line_range(lines: &[u64]) -> String {
    match (lines.first(), lines.last()) {
        (Some(first), Some(last)) if first == last => format!(" (line {first})"),
        (Some(first), Some(last)) => format!(" (lines {first} to {last})"),
        _ => String::new(),
    }
}

/// Sends every request line of `input` through `client`'s connection,
/// printing each reply to `output` as `mode` says.
pub fn run(
    client: &mut Client,
    input: impl Read + Send + 'static,
    output: &mut impl Write,
    mode: OutputMode,
    timeout: Duration,
) -> PipeReport {
    let mut printer = Printer {
        output,
        mode,
        replies: 0,
        errors: 0,
        redirect: None,
    };
    let stop = start(client, input, timeout)
        .and_then(|(pipelined, lines)| {
            let mut pipe = Pipe {
                client,
                pipelined,
                lines,
                held: None,
                last_taken: 0,
                input_done: false,
                confirmed: Confirmed::default(),
            };
            pipe.drive(&mut printer)
        })
        .err();
    let _ = printer.output.flush();
    PipeReport {
        replies: printer.replies,
        errors: printer.errors,
        stop,
    }
}

fn start(
    client: &mut Client,
    input: impl Read + Send + 'static,
    timeout: Duration,
) -> Result<(Pipelined, InputLines), PipeStop> {
    let mut pipelined = Pipelined::new(timeout).map_err(PipeStop::Io)?;
    let transport = client
        .take_transport()
        .map_err(|error| PipeStop::Client { line: 1, error })?;
    pipelined.attach(transport).map_err(PipeStop::Io)?;
    let lines = InputLines::spawn(input, pipelined.waker());
    Ok((pipelined, lines))
}

/// Prints replies and counts them; notes the first redirect.
struct Printer<'output, W: Write> {
    output: &'output mut W,
    mode: OutputMode,
    replies: u64,
    errors: u64,
    redirect: Option<(u64, Vec<u8>)>,
}

impl<W: Write> Printer<'_, W> {
    fn print(&mut self, line: u64, reply: &[u8]) -> io::Result<()> {
        write_reply(self.output, reply, self.mode)?;
        self.replies += 1;
        if is_server_error(reply) {
            self.errors += 1;
        }
        if self.redirect.is_none() && is_redirect(reply) {
            self.redirect = Some((line, reply.to_vec()));
        }
        Ok(())
    }
}

/// Which requests the connected node is known to serve.
#[derive(Debug, Default, Clone, Copy)]
struct Confirmed {
    reads: bool,
    writes: bool,
}

/// What a request line is, as far as routing goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Read,
    Write,
    Other,
}

fn kind(line: &[u8]) -> Kind {
    let command = line.split(|&byte| byte == b' ').next().unwrap_or(line);
    if command.eq_ignore_ascii_case(b"GET") {
        Kind::Read
    } else if command.eq_ignore_ascii_case(b"PUT") || command.eq_ignore_ascii_case(b"DEL") {
        Kind::Write
    } else {
        Kind::Other
    }
}

struct Pipe<'client> {
    client: &'client mut Client,
    pipelined: Pipelined,
    lines: InputLines,
    /// A line taken from the input and not sent yet, with its number.
    held: Option<(u64, Vec<u8>)>,
    /// The number of the last line taken from the input.
    last_taken: u64,
    input_done: bool,
    confirmed: Confirmed,
}

impl Pipe<'_> {
    fn drive(&mut self, printer: &mut Printer<'_, impl Write>) -> Result<(), PipeStop> {
        loop {
            if printer.redirect.is_none() {
                self.take_lines(printer)?;
            }
            let mut print = |line, reply: &[u8]| printer.print(line, reply);
            if let Err(failure) = self.pipelined.exchange(&mut print) {
                return Err(self.failed(failure));
            }
            if self.pipelined.is_idle() && (self.input_done || printer.redirect.is_some()) {
                return match printer.redirect.take() {
                    Some((line, reply)) => Err(PipeStop::Redirected {
                        line,
                        reply,
                        first_unsent: self.first_unsent(),
                    }),
                    None => Ok(()),
                };
            }
            if self.held_can_go() && printer.redirect.is_none() {
                continue;
            }
            printer.output.flush().map_err(PipeStop::Io)?;
            if let Err(failure) = self.pipelined.wait() {
                return Err(self.failed(failure));
            }
        }
    }

    /// Queues input lines while there is room; a line that must go alone
    /// waits until nothing is in flight, then goes.
    fn take_lines(&mut self, printer: &mut Printer<'_, impl Write>) -> Result<(), PipeStop> {
        while !self.input_done {
            let Some((number, line)) = self.next_line()? else {
                return Ok(());
            };
            let kind = kind(&line);
            if !self.can_send(kind) {
                self.held = Some((number, line));
                return Ok(());
            }
            if self.must_go_alone(kind) {
                self.send_alone(number, &line, kind, printer)?;
            } else {
                self.reopen_if_closed(number)?;
                self.pipelined.queue(number, &line);
            }
        }
        Ok(())
    }

    /// Whether a request of `kind` goes alone through the blocking client.
    fn must_go_alone(&self, kind: Kind) -> bool {
        match kind {
            Kind::Read => !self.confirmed.reads,
            Kind::Write => !self.confirmed.writes,
            Kind::Other => false,
        }
    }

    /// Whether a request of `kind` may be sent now: alone once nothing is
    /// in flight, pipelined while there is room.
    fn can_send(&self, kind: Kind) -> bool {
        if self.must_go_alone(kind) {
            self.pipelined.is_idle()
        } else {
            self.pipelined.has_room()
        }
    }

    /// A held line that may now be sent: no event would say so, so the
    /// loop must not wait.
    fn held_can_go(&self) -> bool {
        self.held
            .as_ref()
            .is_some_and(|(_, line)| self.can_send(kind(line)))
    }

    /// The held line, or the next request line from the input; `None`
    /// when none is there yet or the input ended.
    fn next_line(&mut self) -> Result<Option<(u64, Vec<u8>)>, PipeStop> {
        if let Some(held) = self.held.take() {
            return Ok(Some(held));
        }
        loop {
            let Some(event) = self.lines.try_next() else {
                return Ok(None);
            };
            let number = self.last_taken + 1;
            match event {
                InputLine::Line(line) => {
                    self.last_taken = number;
                    match classify(number, line)? {
                        Taken::Blank => {}
                        Taken::Quit => {
                            self.input_done = true;
                            return Ok(None);
                        }
                        Taken::Request(line) => return Ok(Some((number, line))),
                    }
                }
                InputLine::End => {
                    self.input_done = true;
                    return Ok(None);
                }
                InputLine::TooLong => {
                    let reason = format!("is longer than {MAX_LINE_LENGTH} bytes");
                    return Err(PipeStop::InvalidLine {
                        line: number,
                        reason,
                    });
                }
                InputLine::Failed(error) => return Err(PipeStop::Io(error)),
            }
        }
    }

    /// Sends `line` through the blocking client, which follows redirects,
    /// then pipelines to wherever it was answered.
    fn send_alone(
        &mut self,
        number: u64,
        line: &[u8],
        kind: Kind,
        printer: &mut Printer<'_, impl Write>,
    ) -> Result<(), PipeStop> {
        let client_error = |error| PipeStop::Client {
            line: number,
            error,
        };
        let transport = self.pipelined.detach().map_err(PipeStop::Io)?;
        self.client
            .restore_transport(transport)
            .map_err(client_error)?;
        let address = self.client.addr().to_owned();
        let reply = self.client.execute(line).map_err(client_error)?;
        printer.print(number, &reply).map_err(PipeStop::Io)?;
        if self.client.addr() != address {
            self.confirmed = Confirmed::default();
        }
        if !is_server_error(&reply) {
            self.confirmed.reads = true;
            self.confirmed.writes |= kind == Kind::Write;
        }
        let transport = self.client.take_transport().map_err(client_error)?;
        self.pipelined.attach(transport).map_err(PipeStop::Io)
    }

    /// With nothing in flight, a connection the server closed is replaced
    /// (at the same address) before `number` is sent.
    fn reopen_if_closed(&mut self, number: u64) -> Result<(), PipeStop> {
        if !(self.pipelined.is_idle() && self.pipelined.has_ended()) {
            return Ok(());
        }
        let client_error = |error| PipeStop::Client {
            line: number,
            error,
        };
        let transport = self.pipelined.detach().map_err(PipeStop::Io)?;
        drop(transport);
        let transport = self.client.take_transport().map_err(client_error)?;
        self.pipelined.attach(transport).map_err(PipeStop::Io)
    }

    fn failed(&mut self, failure: Failure) -> PipeStop {
        let error = match failure {
            Failure::Handler(error) => return PipeStop::Io(error),
            Failure::Lost(error) => super::describe_failure(&error),
            Failure::ReplyTooLong => format!("a reply was longer than {MAX_LINE_LENGTH} bytes"),
        };
        let (maybe_applied, never_sent) = self.pipelined.unanswered();
        PipeStop::Lost {
            address: self.client.addr().to_owned(),
            error,
            maybe_applied,
            first_unsent: never_sent.first().copied().or(self.first_unsent()),
        }
    }

    /// The first input line not sent, if any (a line not read yet counts,
    /// unless the end of the input is already known).
    fn first_unsent(&mut self) -> Option<u64> {
        match &self.held {
            Some((number, _)) => Some(*number),
            None if self.input_done => None,
            None if self.lines.is_known_to_end() => None,
            None => Some(self.last_taken + 1),
        }
    }
}

/// What an input line is.
#[derive(Debug)]
enum Taken {
    Blank,
    /// `quit` or `exit`: the end of the input.
    Quit,
    Request(Vec<u8>),
}

/// An input line, or an error if it cannot be sent as one request.
fn classify(number: u64, line: Vec<u8>) -> Result<Taken, PipeStop> {
    let invalid = |reason: &str| PipeStop::InvalidLine {
        line: number,
        reason: reason.to_owned(),
    };
    if line.is_empty() {
        return Ok(Taken::Blank);
    }
    let command = line.split(|&byte| byte == b' ').next().unwrap_or(&line);
    if command.eq_ignore_ascii_case(b"QUIT") || command.eq_ignore_ascii_case(b"EXIT") {
        return Ok(Taken::Quit);
    }
    if line.ends_with(b"\r") {
        return Err(invalid(
            "ends with a carriage return, which the server would strip",
        ));
    }
    if line.len() > MAX_LINE_LENGTH {
        return Err(invalid(&format!("is longer than {MAX_LINE_LENGTH} bytes")));
    }
    Ok(Taken::Request(line))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::ClientOptions;
    use crate::security::testing::{Answer, FakeLineServer, TestPki};
    use crate::security::tls::ClientAuth;

    /// The connection goes from the blocking client to the pipeline and
    /// back (the PUT goes alone) with its TLS session intact.
    #[test]
    fn pipe_mode_speaks_tls_across_the_handover_to_the_blocking_client() {
        let pki = TestPki::generate();
        let server = FakeLineServer::start(
            Some(pki.server_config(ClientAuth::None)),
            Box::new(|line: &[u8]| match line {
                b"PING" => Answer::Reply(b"PONG\n".to_vec()),
                b"PUT k v" => Answer::Reply(b"OK\n".to_vec()),
                b"GET k" => Answer::Reply(b"v\n".to_vec()),
                _ => Answer::Reply(b"ERR unknown command\n".to_vec()),
            }),
        );
        let options = ClientOptions {
            tls: Some(pki.client_config(None)),
            ..ClientOptions::default()
        };
        let mut client = Client::connect(&server.address.to_string(), options).unwrap();
        let input: &'static [u8] = b"PING\nPUT k v\nGET k\nPING\nFROB\n";
        let mut output = Vec::new();

        let report = run(
            &mut client,
            input,
            &mut output,
            OutputMode::Raw,
            Duration::from_secs(10),
        );

        assert!(report.stop.is_none(), "{:?}", report.stop);
        assert_eq!(output, b"PONG\nOK\nv\nPONG\nERR unknown command\n");
        assert_eq!((report.replies, report.errors), (5, 1));
        assert_eq!(server.connections(), 1);
    }

    #[test]
    fn blank_lines_are_skipped_and_quit_or_exit_end_the_input() {
        assert!(matches!(classify(1, Vec::new()), Ok(Taken::Blank)));
        for line in [&b"quit"[..], b"EXIT", b"Quit now"] {
            assert!(matches!(classify(1, line.to_vec()), Ok(Taken::Quit)));
        }
        assert!(matches!(
            classify(1, b"QUITTER".to_vec()),
            Ok(Taken::Request(_))
        ));
        let refused = classify(7, b"PUT k v\r".to_vec()).unwrap_err();
        assert!(
            refused
                .to_string()
                .starts_with("line 7 ends with a carriage return")
        );
    }

    #[test]
    fn a_lost_connection_names_lines_and_what_was_not_sent() {
        let stop = PipeStop::Lost {
            address: "127.0.0.1:7001".to_owned(),
            error: "connection closed".to_owned(),
            maybe_applied: vec![4, 5, 6],
            first_unsent: Some(7),
        };
        assert_eq!(
            stop.to_string(),
            "the connection to 127.0.0.1:7001 was lost (connection closed) with 3 request(s) \
             unanswered (lines 4 to 6): they may or may not have been applied; nothing from \
             line 7 on was sent"
        );
    }
}
