//! One load-generating connection: its socket, the requests it has in
//! flight, its unsent request bytes and its unparsed reply bytes.
//!
//! Per loop turn the driver asks a ready connection for at most one read(2)
//! and one write(2). Buffers are allocated when the connection is made and
//! reused: the in-flight ring holds exactly `pipeline` entries, the output
//! holds at most `pipeline` requests, and the input only grows for a reply
//! longer than it (bounded by [`MAX_REPLY_BYTES`]).

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, Write};
use std::time::Instant;

use mio::net::TcpStream;

use super::report::Tally;
use super::wire::{MAX_REPLY_BYTES, Parsed, Protocol, ReplyError, RequestEncoder, parse_reply};
use super::workload::{Key, Operation, Source, Xorshift};
use crate::net::{ReadBuffer, ReadOutcome as BufferRead};

/// Why a connection was given up. Each one counts as an error of the run.
#[derive(Debug)]
pub enum ConnectionError {
    /// The connection could not be made (refused, unreachable, ...).
    Connect(io::Error),
    /// The connection was not made within the connect timeout.
    ConnectTimedOut,
    /// Reading or writing failed (reset, ...).
    Io(io::Error),
    /// The server closed the connection.
    Closed,
    /// The bytes received are not replies of the protocol.
    Reply(ReplyError),
    /// A reply arrived with no request in flight.
    Unsolicited,
}

impl fmt::Display for ConnectionError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectionError::Connect(source) => write!(formatter, "connect failed: {source}"),
            ConnectionError::ConnectTimedOut => write!(formatter, "connect timed out"),
            ConnectionError::Io(source) => write!(formatter, "{source}"),
            ConnectionError::Closed => write!(formatter, "the server closed the connection"),
            ConnectionError::Reply(error) => write!(formatter, "{error}"),
            ConnectionError::Unsolicited => {
                write!(formatter, "a reply arrived with no request in flight")
            }
        }
    }
}

/// How a read went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadOutcome {
    /// The read filled the buffer, or the server's FIN is pending: read
    /// again without waiting for an event (readiness is edge-triggered).
    MoreMaybe,
    /// The socket is empty for now.
    Drained,
}

/// A request sent (or queued to be) and not yet answered.
#[derive(Debug, Clone, Copy)]
struct InFlight {
    operation: Operation,
    queued_at: Instant,
}

pub struct Connection {
    stream: TcpStream,
    connected: bool,
    /// `output[written..]` is queued and not yet accepted by the kernel.
    output: Vec<u8>,
    written: usize,
    /// Received and not yet parsed.
    input: ReadBuffer,
    /// Oldest first: replies come back in request order.
    in_flight: VecDeque<InFlight>,
    random: Xorshift,
}

impl Connection {
    /// Wraps a socket whose non-blocking connect has started.
    pub fn new(
        stream: TcpStream,
        random: Xorshift,
        pipeline: usize,
        encoder: &RequestEncoder,
    ) -> Connection {
        Connection {
            stream,
            connected: false,
            output: Vec::with_capacity(pipeline * encoder.longest_request()),
            written: 0,
            input: ReadBuffer::new(),
            in_flight: VecDeque::with_capacity(pipeline),
            random,
        }
    }

    pub fn stream_mut(&mut self) -> &mut TcpStream {
        &mut self.stream
    }

    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// After any event on a connecting socket: `Ok(true)` once connected,
    /// `Ok(false)` if the connect is still under way.
    pub fn finish_connect(&mut self) -> Result<bool, ConnectionError> {
        if let Some(error) = self.stream.take_error().map_err(ConnectionError::Connect)? {
            return Err(ConnectionError::Connect(error));
        }
        match self.stream.peer_addr() {
            Ok(_) => {}
            Err(error) if error.kind() == io::ErrorKind::NotConnected => return Ok(false),
            Err(error) => return Err(ConnectionError::Connect(error)),
        }
        self.stream
            .set_nodelay(true)
            .map_err(ConnectionError::Connect)?;
        self.connected = true;
        Ok(true)
    }

    /// Requests sent or queued and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// The kernel reported the server's FIN (it may sit behind unread data).
    pub fn note_peer_closed(&mut self) {
        self.input.note_peer_closed();
    }

    /// One read(2) into the input buffer.
    pub fn read_once(&mut self) -> Result<ReadOutcome, ConnectionError> {
        match self.input.read_once(&mut self.stream, MAX_REPLY_BYTES) {
            Ok(BufferRead::MoreMaybe) => Ok(ReadOutcome::MoreMaybe),
            Ok(BufferRead::Drained) => Ok(ReadOutcome::Drained),
            Ok(BufferRead::Closed) => Err(ConnectionError::Closed),
            Ok(BufferRead::Full) => Err(ConnectionError::Reply(ReplyError::TooLong)),
            Err(error) => Err(ConnectionError::Io(error)),
        }
    }

    /// Parses every whole reply received, matching each with the oldest
    /// request in flight and recording it as answered at `now`. Returns how
    /// many replies were parsed.
    pub fn parse_replies(
        &mut self,
        protocol: Protocol,
        now: Instant,
        tally: &mut Tally,
    ) -> Result<usize, ConnectionError> {
        let mut parsed = 0;
        loop {
            match parse_reply(protocol, self.input.buffered()).map_err(ConnectionError::Reply)? {
                Parsed::Incomplete => return Ok(parsed),
                Parsed::Complete { reply, consumed } => {
                    let request = self
                        .in_flight
                        .pop_front()
                        .ok_or(ConnectionError::Unsolicited)?;
                    let latency = now.saturating_duration_since(request.queued_at);
                    tally.record(request.operation, reply, latency);
                    self.input.consume(consumed);
                    parsed += 1;
                }
            }
        }
    }

    /// Queues requests from `source` until `pipeline` are in flight or the
    /// source has no more; each is timed from `now`. Returns how many.
    pub fn fill_pipeline(
        &mut self,
        pipeline: usize,
        source: &mut Source,
        encoder: &RequestEncoder,
        now: Instant,
    ) -> usize {
        let mut queued = 0;
        while self.in_flight.len() < pipeline {
            let Some((operation, key)) = source.next(&mut self.random) else {
                break;
            };
            encoder.encode(operation, &Key::new(key), &mut self.output);
            self.in_flight.push_back(InFlight {
                operation,
                queued_at: now,
            });
            queued += 1;
        }
        queued
    }

    /// One write(2) of the queued bytes; the rest waits for a writable event.
    pub fn write_once(&mut self) -> Result<(), ConnectionError> {
        while self.written < self.output.len() {
            match self.stream.write(&self.output[self.written..]) {
                Ok(0) => return Err(ConnectionError::Closed),
                Ok(count) => {
                    self.written += count;
                    break;
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                Err(error) => return Err(ConnectionError::Io(error)),
            }
        }
        if self.written == self.output.len() {
            self.output.clear();
            self.written = 0;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::time::Duration;

    use super::*;
    use crate::bench::wire::Protocol;
    use crate::bench::workload::Mix;

    /// A connected client-side `Connection` and the server's end of it.
    fn connected_pair(protocol: Protocol) -> (Connection, std::net::TcpStream, RequestEncoder) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        client.set_nonblocking(true).unwrap();
        let (server, _) = listener.accept().unwrap();
        let encoder = RequestEncoder::new(protocol, 4);
        let mut connection = Connection::new(
            TcpStream::from_std(client),
            Xorshift::new(1, 0),
            4,
            &encoder,
        );
        assert!(connection.finish_connect().unwrap());
        (connection, server, encoder)
    }

    /// Reads until `expected` replies have been parsed (or a deadline).
    fn read_replies(connection: &mut Connection, tally: &mut Tally, expected: usize) {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut parsed = 0;
        while parsed < expected {
            assert!(Instant::now() < deadline, "only {parsed} replies parsed");
            connection.read_once().unwrap();
            parsed += connection
                .parse_replies(Protocol::Resp, Instant::now(), tally)
                .unwrap();
        }
    }

    #[test]
    fn a_bulk_reply_split_across_reads_is_parsed_once_whole() {
        let (mut connection, mut server, encoder) = connected_pair(Protocol::Resp);
        let mut source = Source::mixed(Mix::new(1.0, 10), Some(2));
        assert_eq!(
            connection.fill_pipeline(4, &mut source, &encoder, Instant::now()),
            2
        );
        connection.write_once().unwrap();
        let mut tally = Tally::new(true);

        server.write_all(b"$6\r\nab\r\n").unwrap();
        std::thread::sleep(Duration::from_millis(50));
        connection.read_once().unwrap();
        let parsed = connection
            .parse_replies(Protocol::Resp, Instant::now(), &mut tally)
            .unwrap();
        assert_eq!(parsed, 0, "half a bulk string is not a reply");

        server.write_all(b"\r\n\r\n$-1\r\n").unwrap();
        read_replies(&mut connection, &mut tally, 2);
        assert_eq!(tally.completed, 2);
        assert_eq!(tally.misses, 1);
        assert_eq!(tally.errors(), 0);
        assert_eq!(connection.in_flight(), 0);
    }

    #[test]
    fn a_reply_without_a_request_is_a_protocol_error() {
        let (mut connection, mut server, _) = connected_pair(Protocol::Resp);
        server
            .write_all(b"-ERR max number of clients reached\r\n")
            .unwrap();
        let mut tally = Tally::new(true);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            assert!(Instant::now() < deadline, "the reply never arrived");
            connection.read_once().unwrap();
            match connection.parse_replies(Protocol::Resp, Instant::now(), &mut tally) {
                Ok(_) => continue,
                Err(error) => {
                    assert!(matches!(error, ConnectionError::Unsolicited));
                    break;
                }
            }
        }
    }

    #[test]
    fn the_pipeline_is_never_overfilled() {
        let (mut connection, _server, encoder) = connected_pair(Protocol::Line);
        let mut source = Source::mixed(Mix::new(0.5, 10), None);
        let now = Instant::now();
        assert_eq!(connection.fill_pipeline(4, &mut source, &encoder, now), 4);
        assert_eq!(connection.fill_pipeline(4, &mut source, &encoder, now), 0);
        assert_eq!(connection.in_flight(), 4);
    }
}
