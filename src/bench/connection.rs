//! One load-generating connection: its transport (plain TCP or TLS), the
//! requests it has in flight, its unsent request bytes and its unparsed
//! reply bytes.
//!
//! Before it carries load a connection is set up, one event at a time:
//! the non-blocking connect, the TLS handshake, and with a password the
//! `AUTH` request, whose reply is consumed here and never reaches a tally.
//! Then, per loop turn, the driver asks it for at most one read and one
//! write. Buffers are allocated when the connection is made and reused:
//! the in-flight ring holds exactly `pipeline` entries, the output holds at
//! most `pipeline` requests, and the input only grows for a reply longer
//! than it (bounded by [`MAX_REPLY_BYTES`]).

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, Write};
use std::time::Instant;

use mio::net::TcpStream;

use super::report::Tally;
use super::wire::{
    MAX_REPLY_BYTES, Parsed, Protocol, Reply, ReplyError, RequestEncoder, parse_reply,
};
use super::workload::{Key, Operation, Source, Xorshift};
use crate::net::{ReadBuffer, ReadOutcome as BufferRead, Transport};

/// Why a connection was given up. Each one counts as an error of the run.
#[derive(Debug)]
pub enum ConnectionError {
    /// The connection could not be made (refused, unreachable, ...).
    Connect(io::Error),
    /// The connection was not made within the connect timeout.
    ConnectTimedOut,
    /// Reading or writing failed (reset, ...).
    Io(io::Error),
    /// TLS failed: the server's certificate did not verify, or a peer
    /// refused the other's handshake or records.
    Tls(io::Error),
    /// The server answered `AUTH` with something other than `OK`.
    AuthenticationFailed { reply: String },
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
            ConnectionError::Tls(source) => write!(formatter, "TLS failed: {source}"),
            ConnectionError::AuthenticationFailed { reply } => {
                write!(
                    formatter,
                    "authentication failed; the server replied: {reply}"
                )
            }
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

/// Where a connection is on its way to carrying load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// The non-blocking connect is under way.
    Connecting,
    /// TCP is up; a TLS handshake may be under way.
    Handshaking,
    /// `AUTH` is queued or sent; its reply is awaited.
    Authenticating,
    /// Carrying load.
    Ready,
}

pub struct Connection {
    transport: Transport,
    stage: Stage,
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
    /// Wraps a transport whose non-blocking connect has started.
    pub fn new(
        transport: Transport,
        random: Xorshift,
        pipeline: usize,
        encoder: &RequestEncoder,
    ) -> Connection {
        Connection {
            transport,
            stage: Stage::Connecting,
            output: Vec::with_capacity(pipeline * encoder.longest_request()),
            written: 0,
            input: ReadBuffer::new(),
            in_flight: VecDeque::with_capacity(pipeline),
            random,
        }
    }

    /// The socket, to register with or remove from the poll.
    pub fn socket_mut(&mut self) -> &mut TcpStream {
        self.transport.socket()
    }

    /// Set up and carrying load.
    pub fn is_ready(&self) -> bool {
        self.stage == Stage::Ready
    }

    /// After any event on a connection still being set up: takes it as far
    /// as it can go now (connect, TLS handshake, `AUTH` with `auth_request`
    /// unless it is empty). `Ok(true)` once it is ready for load.
    pub fn advance_setup(
        &mut self,
        protocol: Protocol,
        auth_request: &[u8],
    ) -> Result<bool, ConnectionError> {
        if self.stage == Stage::Connecting {
            if !self.finish_connect()? {
                return Ok(false);
            }
            self.stage = Stage::Handshaking;
        }
        if self.stage == Stage::Handshaking {
            if !self.advance_handshake()? {
                return Ok(false);
            }
            if auth_request.is_empty() {
                self.stage = Stage::Ready;
            } else {
                self.output.extend_from_slice(auth_request);
                self.stage = Stage::Authenticating;
            }
        }
        if self.stage == Stage::Authenticating {
            self.advance_authentication(protocol)?;
        }
        Ok(self.stage == Stage::Ready)
    }

    /// `Ok(true)` once the TCP connect is done, `Ok(false)` while under way.
    fn finish_connect(&mut self) -> Result<bool, ConnectionError> {
        let socket = self.transport.socket();
        if let Some(error) = socket.take_error().map_err(ConnectionError::Connect)? {
            return Err(ConnectionError::Connect(error));
        }
        match socket.peer_addr() {
            Ok(_) => {}
            Err(error) if error.kind() == io::ErrorKind::NotConnected => return Ok(false),
            Err(error) => return Err(ConnectionError::Connect(error)),
        }
        socket.set_nodelay(true).map_err(ConnectionError::Connect)?;
        Ok(true)
    }

    /// Sends and reads what the handshake needs now; `Ok(true)` once done
    /// (at once for plain TCP).
    fn advance_handshake(&mut self) -> Result<bool, ConnectionError> {
        if !self.transport.is_handshaking() {
            return Ok(true);
        }
        self.flush_transport()?;
        self.read_until_drained()?;
        self.flush_transport()?;
        Ok(!self.transport.is_handshaking())
    }

    /// Sends what is left of `AUTH` and reads its reply if it came.
    fn advance_authentication(&mut self, protocol: Protocol) -> Result<(), ConnectionError> {
        self.write_once()?;
        self.read_until_drained()?;
        let Parsed::Complete { reply, consumed } =
            parse_reply(protocol, self.input.buffered()).map_err(ConnectionError::Reply)?
        else {
            return Ok(());
        };
        if reply != Reply::Ok {
            let text = &self.input.buffered()[..consumed];
            return Err(ConnectionError::AuthenticationFailed {
                reply: text.trim_ascii_end().escape_ascii().to_string(),
            });
        }
        self.input.consume(consumed);
        self.stage = Stage::Ready;
        Ok(())
    }

    /// Reads while reads may find more; setup waits for the next event.
    fn read_until_drained(&mut self) -> Result<(), ConnectionError> {
        while self.read_once()? == ReadOutcome::MoreMaybe {}
        Ok(())
    }

    /// Sends what TLS has queued (nothing to do for plain TCP).
    fn flush_transport(&mut self) -> Result<(), ConnectionError> {
        match self.transport.flush_pending() {
            Ok(_) => Ok(()),
            Err(error) => Err(transport_error(error)),
        }
    }

    /// Requests sent or queued and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// The kernel reported the server's FIN (it may sit behind unread data).
    pub fn note_peer_closed(&mut self) {
        self.input.note_peer_closed();
    }

    /// One read into the input buffer (one read(2) for plain TCP; for TLS,
    /// as many as fill it or drain the socket).
    pub fn read_once(&mut self) -> Result<ReadOutcome, ConnectionError> {
        match self.input.read_once(&mut self.transport, MAX_REPLY_BYTES) {
            Ok(BufferRead::MoreMaybe) => Ok(ReadOutcome::MoreMaybe),
            Ok(BufferRead::Drained) => Ok(ReadOutcome::Drained),
            Ok(BufferRead::Closed) => Err(ConnectionError::Closed),
            Ok(BufferRead::Full) => Err(ConnectionError::Reply(ReplyError::TooLong)),
            Err(error) => Err(transport_error(error)),
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

    /// One write of the queued bytes; the rest waits for a writable event.
    /// With nothing queued, sends what TLS still holds.
    pub fn write_once(&mut self) -> Result<(), ConnectionError> {
        if self.written == self.output.len() {
            return self.flush_transport();
        }
        while self.written < self.output.len() {
            match self.transport.write(&self.output[self.written..]) {
                Ok(0) => return Err(ConnectionError::Closed),
                Ok(count) => {
                    self.written += count;
                    break;
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                Err(error) => return Err(transport_error(error)),
            }
        }
        if self.written == self.output.len() {
            self.output.clear();
            self.written = 0;
        }
        Ok(())
    }
}

/// A TLS refusal (`InvalidData` from the transport) or any other failure.
fn transport_error(error: io::Error) -> ConnectionError {
    if error.kind() == io::ErrorKind::InvalidData {
        ConnectionError::Tls(error)
    } else {
        ConnectionError::Io(error)
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::time::Duration;

    use super::*;
    use crate::bench::wire::{Protocol, encode_auth};
    use crate::bench::workload::Mix;
    use crate::security::testing::{Answer, FakeLineServer, Responder, TestPki};
    use crate::security::tls::{self, ClientAuth};

    /// A connected client-side `Connection` and the server's end of it.
    fn connected_pair(protocol: Protocol) -> (Connection, std::net::TcpStream, RequestEncoder) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        client.set_nonblocking(true).unwrap();
        let (server, _) = listener.accept().unwrap();
        let encoder = RequestEncoder::new(protocol, 4);
        let mut connection = Connection::new(
            Transport::plain(TcpStream::from_std(client)),
            Xorshift::new(1, 0),
            4,
            &encoder,
        );
        assert!(connection.advance_setup(protocol, b"").unwrap());
        (connection, server, encoder)
    }

    /// Reads until `expected` replies have been parsed (or a deadline).
    fn read_replies(
        connection: &mut Connection,
        protocol: Protocol,
        tally: &mut Tally,
        expected: usize,
    ) {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut parsed = 0;
        while parsed < expected {
            assert!(Instant::now() < deadline, "only {parsed} replies parsed");
            connection.read_once().unwrap();
            parsed += connection
                .parse_replies(protocol, Instant::now(), tally)
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
        read_replies(&mut connection, Protocol::Resp, &mut tally, 2);
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

    /// A connection to `server` whose connect has started, over TLS
    /// trusting `trusted_ca` when given.
    fn connection_to(
        server: &FakeLineServer,
        trusted_ca: Option<&std::path::Path>,
        encoder: &RequestEncoder,
    ) -> Connection {
        let stream = TcpStream::connect(server.address).unwrap();
        let transport = match trusted_ca {
            None => Transport::plain(stream),
            Some(ca) => {
                let config = tls::client_config(ca, None).unwrap();
                let name = tls::server_name_for(&server.address);
                Transport::tls_client(stream, config, name).unwrap()
            }
        };
        Connection::new(transport, Xorshift::new(1, 0), 4, encoder)
    }

    /// Advances the setup until it is done or fails (or a deadline).
    fn set_up(connection: &mut Connection, auth_request: &[u8]) -> Result<(), ConnectionError> {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !connection.advance_setup(Protocol::Line, auth_request)? {
            assert!(Instant::now() < deadline, "the setup never finished");
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    }

    /// `AUTH pw` gets `OK`, another password an error; GET and PUT get
    /// line replies.
    fn store_with_password() -> Responder {
        Box::new(
            |line: &[u8]| match line.split(|&byte| byte == b' ').next() {
                _ if line == b"AUTH pw" => Answer::Reply(b"OK\n".to_vec()),
                Some(b"AUTH") => Answer::Reply(b"ERR invalid password\n".to_vec()),
                Some(b"GET") => Answer::Reply(b"xxxx\n".to_vec()),
                Some(b"PUT") => Answer::Reply(b"OK\n".to_vec()),
                _ => Answer::Reply(b"ERR unknown command\n".to_vec()),
            },
        )
    }

    #[test]
    fn the_auth_reply_is_consumed_during_setup_and_never_counted() {
        let pki = TestPki::generate();
        for tls in [false, true] {
            let config = tls.then(|| pki.server_config(ClientAuth::None));
            let server = FakeLineServer::start(config, store_with_password());
            let encoder = RequestEncoder::new(Protocol::Line, 4);
            let trusted = tls.then_some(pki.ca.as_path());
            let mut connection = connection_to(&server, trusted, &encoder);
            set_up(&mut connection, &encode_auth(Protocol::Line, b"pw")).unwrap();
            assert!(connection.is_ready());

            let mut source = Source::mixed(Mix::new(0.5, 10), Some(3));
            let now = Instant::now();
            assert_eq!(connection.fill_pipeline(4, &mut source, &encoder, now), 3);
            connection.write_once().unwrap();
            let mut tally = Tally::new(true);
            read_replies(&mut connection, Protocol::Line, &mut tally, 3);
            assert_eq!(tally.completed, 3, "tls: {tls}");
            assert_eq!(tally.errors(), 0, "tls: {tls}");
            let received = server.received();
            assert_eq!(received.len(), 4, "tls: {tls}");
            assert_eq!(received[0], b"AUTH pw", "tls: {tls}");
        }
    }

    #[test]
    fn a_refused_password_fails_the_connection_with_the_reply() {
        let server = FakeLineServer::start(None, store_with_password());
        let encoder = RequestEncoder::new(Protocol::Line, 4);
        let mut connection = connection_to(&server, None, &encoder);
        let error = set_up(&mut connection, &encode_auth(Protocol::Line, b"guess")).unwrap_err();
        assert!(
            matches!(&error, ConnectionError::AuthenticationFailed { reply }
                if reply == "ERR invalid password"),
            "{error}"
        );
        assert!(!connection.is_ready());
    }

    #[test]
    fn a_server_the_ca_did_not_sign_fails_the_connection_as_tls() {
        let pki = TestPki::generate();
        let config = pki.server_config(ClientAuth::None);
        let server = FakeLineServer::start(Some(config), store_with_password());
        let encoder = RequestEncoder::new(Protocol::Line, 4);
        let mut connection = connection_to(&server, Some(&pki.untrusted_ca), &encoder);
        let error = set_up(&mut connection, b"").unwrap_err();
        assert!(matches!(error, ConnectionError::Tls(_)), "{error}");
        assert!(server.received().is_empty());
    }
}
