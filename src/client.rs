//! A small blocking client for the line protocol, over one std `TcpStream`.
//!
//! Used by `kvstore-client`, by the load generator to find the leader, and
//! by integration tests. It owns one connection at a time (to [`Client::addr`]),
//! a buffered reader over it, and the list of addresses it has learned: the
//! one it was created with first, then every leader named in a redirect.
//!
//! # The retry rule
//!
//! A request is resent only when it certainly was not applied:
//!
//! - the reply was `NOT_LEADER <id> <host:port>` (resend to that address) or
//!   `NOT_LEADER -1` (no leader yet: back off exponentially, resend to the
//!   same node);
//! - connecting failed (refused, unreachable, timed out), so nothing was sent;
//!   then back off and try the known addresses in turn, the original first;
//! - the very first write of the request was rejected, so no byte left.
//!
//! Once any byte of the request has been written, a timeout, reset or end of
//! stream means the server may or may not have applied it: resending a `PUT`
//! or `DEL` could apply it twice (and reorder it after a later write), so the
//! client reports [`ClientError::OutcomeUnknown`] and leaves the decision to
//! the caller. Every retry, redirect and reconnect of one [`Client::execute`]
//! call spends from one budget of [`ClientOptions::max_redirects`], so at most
//! `max_redirects + 1` requests are sent per call.
//!
//! After any failure the connection is dropped, never reused: a late reply
//! would otherwise be taken as the answer to the next request.

use std::error::Error;
use std::fmt;
use std::io::{self, BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::thread;
use std::time::Duration;

/// The longest request or reply line, in bytes, without its `\n`.
pub const MAX_LINE_LENGTH: usize = 1024 * 1024;

/// Timeouts and retry bounds of a [`Client`].
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Bound on each connect, each read and each write. Must not be zero.
    pub timeout: Duration,
    /// How many redirects, leaderless retries and reconnects one
    /// [`Client::execute`] call may make before giving up.
    pub max_redirects: u32,
    /// First pause after `NOT_LEADER -1` or a failed connect; doubles each time.
    pub backoff_initial: Duration,
    /// Ceiling of that pause.
    pub backoff_max: Duration,
}

impl Default for ClientOptions {
    fn default() -> ClientOptions {
        ClientOptions {
            timeout: Duration::from_secs(5),
            max_redirects: 16,
            backoff_initial: Duration::from_millis(20),
            backoff_max: Duration::from_millis(500),
        }
    }
}

/// Why a request produced no usable reply.
#[derive(Debug)]
pub enum ClientError {
    /// Could not connect (after retries, when called through `execute`).
    /// Nothing was sent.
    Connect {
        addr: String,
        source: io::Error,
    },
    /// The connection failed before any byte of the request left. Not applied.
    NotSent {
        addr: String,
        source: io::Error,
    },
    /// The request was sent, then a timeout, reset or end of stream: it may or
    /// may not have been applied. Never retried.
    OutcomeUnknown {
        addr: String,
        source: io::Error,
    },
    /// The retry budget ran out while being redirected or waiting for a leader.
    TooManyRedirects {
        last_reply: Vec<u8>,
    },
    /// A `NOT_LEADER` reply whose leader id or address could not be parsed.
    BadRedirect {
        reply: Vec<u8>,
    },
    /// The request is longer than [`MAX_LINE_LENGTH`]; caught before sending.
    LineTooLong {
        length: usize,
        limit: usize,
    },
    /// The request cannot be framed as one line; caught before sending.
    InvalidRequest {
        reason: &'static str,
    },
    /// The reply line exceeded [`MAX_LINE_LENGTH`]. The request was applied
    /// or not as the server decided; the connection was dropped.
    ReplyTooLong {
        addr: String,
        limit: usize,
    },
    /// The server answered `ERR <reason>`.
    Server {
        reply: Vec<u8>,
    },
    /// A reply that makes no sense for the request (e.g. `PONG` to a `DEL`).
    UnexpectedReply {
        reply: Vec<u8>,
    },
    Io(io::Error),
}

impl ClientError {
    /// True when the failure is about reaching the server rather than about
    /// the request: the caller should stop sending through this client.
    pub fn is_connection_failure(&self) -> bool {
        matches!(
            self,
            ClientError::Connect { .. }
                | ClientError::NotSent { .. }
                | ClientError::OutcomeUnknown { .. }
                | ClientError::Io(_)
        )
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Connect { addr, source } => {
                write!(formatter, "could not connect to {addr}: {source}")
            }
            ClientError::NotSent { addr, source } => write!(
                formatter,
                "could not send the request to {addr} ({}): it was not applied",
                describe_failure(source)
            ),
            ClientError::OutcomeUnknown { addr, source } => write!(
                formatter,
                "no reply from {addr} after the request was sent ({}): \
                 the write may or may not have been applied",
                describe_failure(source)
            ),
            ClientError::TooManyRedirects { last_reply } => write!(
                formatter,
                "gave up after too many redirects or retries without a leader; last reply: {}",
                last_reply.escape_ascii()
            ),
            ClientError::BadRedirect { reply } => {
                write!(
                    formatter,
                    "malformed redirect from the server: {}",
                    reply.escape_ascii()
                )
            }
            ClientError::LineTooLong { length, limit } => write!(
                formatter,
                "request is {length} bytes long; the limit is {limit} bytes"
            ),
            ClientError::InvalidRequest { reason } => {
                write!(formatter, "invalid request: {reason}")
            }
            ClientError::ReplyTooLong { addr, limit } => write!(
                formatter,
                "reply from {addr} is longer than {limit} bytes; connection dropped"
            ),
            ClientError::Server { reply } => {
                write!(formatter, "the server replied: {}", reply.escape_ascii())
            }
            ClientError::UnexpectedReply { reply } => {
                write!(
                    formatter,
                    "unexpected reply from the server: {}",
                    reply.escape_ascii()
                )
            }
            ClientError::Io(source) => write!(formatter, "{source}"),
        }
    }
}

impl Error for ClientError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            ClientError::Connect { source, .. }
            | ClientError::NotSent { source, .. }
            | ClientError::OutcomeUnknown { source, .. }
            | ClientError::Io(source) => Some(source),
            _ => None,
        }
    }
}

impl From<io::Error> for ClientError {
    fn from(source: io::Error) -> ClientError {
        ClientError::Io(source)
    }
}

/// A few words for the parenthesis of an error message.
fn describe_failure(source: &io::Error) -> String {
    match source.kind() {
        ErrorKind::TimedOut | ErrorKind::WouldBlock => "timed out".to_owned(),
        ErrorKind::ConnectionReset => "connection reset".to_owned(),
        ErrorKind::ConnectionAborted => "connection aborted".to_owned(),
        ErrorKind::UnexpectedEof | ErrorKind::BrokenPipe => "connection closed".to_owned(),
        _ => source.to_string(),
    }
}

/// A blocking connection to one node that can follow redirects to others.
#[derive(Debug)]
pub struct Client {
    options: ClientOptions,
    /// Where the next request goes.
    address: String,
    /// The original address first, then each leader learned from a redirect.
    known_addresses: Vec<String>,
    /// `None` after a failure or a redirect; reopened before the next request.
    connection: Option<BufReader<TcpStream>>,
    /// The request line plus `\n`, reused so a request is one `write`.
    write_buffer: Vec<u8>,
}

impl Client {
    /// Connects to `addr` (`host:port`) once, without retrying, so a wrong
    /// address fails fast. Retries happen inside [`Client::execute`].
    pub fn connect(addr: &str, options: ClientOptions) -> Result<Client, ClientError> {
        let connection =
            open_connection(addr, options.timeout).map_err(|source| ClientError::Connect {
                addr: addr.to_owned(),
                source,
            })?;
        Ok(Client {
            options,
            address: addr.to_owned(),
            known_addresses: vec![addr.to_owned()],
            connection: Some(connection),
            write_buffer: Vec::new(),
        })
    }

    /// The address the next request goes to: the last leader learned.
    pub fn addr(&self) -> &str {
        &self.address
    }

    /// Every address learned so far, the original first.
    pub fn known_addresses(&self) -> &[String] {
        &self.known_addresses
    }

    /// Sends one request line (without `\n`) and returns one reply line
    /// (without `\n` or `\r\n`). Does not follow redirects or retry; it
    /// reconnects once if the previous request left no usable connection.
    pub fn request_raw(&mut self, line: &[u8]) -> Result<Vec<u8>, ClientError> {
        validate_request(line)?;
        self.ensure_connected()
            .map_err(|source| ClientError::Connect {
                addr: self.address.clone(),
                source,
            })?;
        self.exchange(line)
    }

    /// Like [`Client::request_raw`] but follows `NOT_LEADER` redirects,
    /// backs off on `NOT_LEADER -1` and on failed connects, all within
    /// [`ClientOptions::max_redirects`]. See the module documentation for
    /// exactly when a request is resent.
    pub fn execute(&mut self, line: &[u8]) -> Result<Vec<u8>, ClientError> {
        validate_request(line)?;
        let mut budget = RetryBudget::new(&self.options);
        let mut connect_failures = 0;
        loop {
            if let Err(source) = self.ensure_connected() {
                let failed = self.address.clone();
                budget.spend(|| ClientError::Connect {
                    addr: failed.clone(),
                    source,
                })?;
                budget.back_off();
                connect_failures += 1;
                self.address = self.next_address_after(&failed, connect_failures);
                continue;
            }
            let reply = match self.exchange(line) {
                Ok(reply) => reply,
                Err(error @ ClientError::NotSent { .. }) => {
                    budget.spend(|| error)?;
                    continue;
                }
                Err(error) => return Err(error),
            };
            match parse_redirect(&reply) {
                Redirect::None => return Ok(reply),
                Redirect::Malformed => return Err(ClientError::BadRedirect { reply }),
                Redirect::NoLeader => {
                    budget.spend(|| ClientError::TooManyRedirects { last_reply: reply })?;
                    budget.back_off();
                }
                Redirect::Leader(leader) => {
                    let leader = leader.to_owned();
                    budget.spend(|| ClientError::TooManyRedirects { last_reply: reply })?;
                    self.redirect_to(leader);
                }
            }
        }
    }

    /// `PUT key value`; returns the reply (normally `OK`).
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<Vec<u8>, ClientError> {
        validate_key(key)?;
        let mut line = Vec::with_capacity(5 + key.len() + value.len());
        line.extend_from_slice(b"PUT ");
        line.extend_from_slice(key);
        line.push(b' ');
        line.extend_from_slice(value);
        let reply = self.execute(&line)?;
        reject_server_error(reply)
    }

    /// `GET key`; `None` when the key is absent.
    pub fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, ClientError> {
        let reply = self.execute(&keyed_request(b"GET ", key)?)?;
        if reply == b"NOT_FOUND" {
            return Ok(None);
        }
        reject_server_error(reply).map(Some)
    }

    /// `DEL key`; `true` when the key existed.
    pub fn del(&mut self, key: &[u8]) -> Result<bool, ClientError> {
        let reply = reject_server_error(self.execute(&keyed_request(b"DEL ", key)?)?)?;
        match reply.as_slice() {
            b"OK" => Ok(true),
            b"NOT_FOUND" => Ok(false),
            _ => Err(ClientError::UnexpectedReply { reply }),
        }
    }

    /// `PING`; succeeds on `PONG`.
    pub fn ping(&mut self) -> Result<(), ClientError> {
        let reply = reject_server_error(self.execute(b"PING")?)?;
        if reply == b"PONG" {
            Ok(())
        } else {
            Err(ClientError::UnexpectedReply { reply })
        }
    }

    /// Sends `QUIT` (the server closes without replying) and drops the
    /// connection. Best effort: a connection already gone is not an error.
    pub fn quit(mut self) {
        if let Some(connection) = self.connection.as_mut() {
            let _ = connection.get_mut().write_all(b"QUIT\n");
        }
    }

    /// Makes sure there is a connection to `self.address` that the server has
    /// not closed and that holds no unread bytes (which would belong to no
    /// request and shift every later reply).
    fn ensure_connected(&mut self) -> io::Result<()> {
        if let Some(connection) = &self.connection
            && !is_idle_and_open(connection)
        {
            self.connection = None;
        }
        if self.connection.is_none() {
            self.connection = Some(open_connection(&self.address, self.options.timeout)?);
        }
        Ok(())
    }

    /// Writes one request and reads one reply on the current connection,
    /// dropping the connection on any failure.
    fn exchange(&mut self, line: &[u8]) -> Result<Vec<u8>, ClientError> {
        let Some(connection) = self.connection.as_mut() else {
            return Err(ClientError::NotSent {
                addr: self.address.clone(),
                source: io::Error::new(ErrorKind::NotConnected, "not connected"),
            });
        };
        self.write_buffer.clear();
        self.write_buffer.extend_from_slice(line);
        self.write_buffer.push(b'\n');
        let result = match write_request(connection.get_mut(), &self.write_buffer) {
            Ok(()) => read_reply(connection),
            Err(WriteFailure::NothingSent(source)) => Err(ReadFailure::NotSent(source)),
            Err(WriteFailure::PartlySent(source)) => Err(ReadFailure::Unknown(source)),
        };
        result.map_err(|failure| {
            self.connection = None;
            failure.into_error(self.address.clone())
        })
    }

    /// Moves to `leader`, remembering it as a known address.
    fn redirect_to(&mut self, leader: String) {
        if leader != self.address {
            self.connection = None;
        }
        if !self.known_addresses.contains(&leader) {
            self.known_addresses.push(leader.clone());
        }
        self.address = leader;
    }

    /// The address to try after connecting to `failed` did not work for the
    /// `failures`-th time in this call: the known addresses in turn, the
    /// original first, skipping `failed` unless it is the only one.
    fn next_address_after(&mut self, failed: &str, failures: usize) -> String {
        self.connection = None;
        let others: Vec<&String> = self
            .known_addresses
            .iter()
            .filter(|address| address.as_str() != failed)
            .collect();
        if others.is_empty() {
            return failed.to_owned();
        }
        others[(failures - 1) % others.len()].clone()
    }
}

/// The retry budget and backoff of one `execute` call.
struct RetryBudget {
    remaining: u32,
    backoff: Duration,
    backoff_max: Duration,
}

impl RetryBudget {
    fn new(options: &ClientOptions) -> RetryBudget {
        RetryBudget {
            remaining: options.max_redirects,
            backoff: options.backoff_initial,
            backoff_max: options.backoff_max,
        }
    }

    /// Uses one retry, or returns the error `exhausted` builds if none is left.
    fn spend(&mut self, exhausted: impl FnOnce() -> ClientError) -> Result<(), ClientError> {
        if self.remaining == 0 {
            return Err(exhausted());
        }
        self.remaining -= 1;
        Ok(())
    }

    /// Sleeps for the current backoff, then doubles it up to the ceiling.
    fn back_off(&mut self) {
        thread::sleep(self.backoff);
        self.backoff = (self.backoff * 2).min(self.backoff_max);
    }
}

/// What a reply says about where to send the request.
#[derive(Debug, PartialEq, Eq)]
enum Redirect<'reply> {
    /// Not a redirect: the reply answers the request.
    None,
    /// `NOT_LEADER -1`: the node knows no leader yet.
    NoLeader,
    /// `NOT_LEADER <id> <host:port>`.
    Leader(&'reply str),
    /// Starts with `NOT_LEADER` but does not parse.
    Malformed,
}

fn parse_redirect(reply: &[u8]) -> Redirect<'_> {
    let Some(rest) = reply.strip_prefix(b"NOT_LEADER") else {
        return Redirect::None;
    };
    if rest.is_empty() {
        return Redirect::Malformed;
    }
    let Some(arguments) = rest.strip_prefix(b" ") else {
        return Redirect::None;
    };
    if arguments == b"-1" {
        return Redirect::NoLeader;
    }
    let Ok(arguments) = std::str::from_utf8(arguments) else {
        return Redirect::Malformed;
    };
    let Some((leader_id, address)) = arguments.split_once(' ') else {
        return Redirect::Malformed;
    };
    if leader_id.parse::<u64>().is_err() || !is_host_and_port(address) {
        return Redirect::Malformed;
    }
    Redirect::Leader(address)
}

/// `host:port` with a non-empty host without spaces and a valid port.
fn is_host_and_port(address: &str) -> bool {
    match address.rsplit_once(':') {
        Some((host, port)) => {
            !host.is_empty() && !host.contains(' ') && port.parse::<u16>().is_ok()
        }
        None => false,
    }
}

/// Rejects what cannot travel as one request line.
fn validate_request(line: &[u8]) -> Result<(), ClientError> {
    if line.is_empty() {
        return Err(ClientError::InvalidRequest {
            reason: "the request is empty",
        });
    }
    if line.len() > MAX_LINE_LENGTH {
        return Err(ClientError::LineTooLong {
            length: line.len(),
            limit: MAX_LINE_LENGTH,
        });
    }
    if memchr::memchr(b'\n', line).is_some() {
        return Err(ClientError::InvalidRequest {
            reason: "the request contains a newline",
        });
    }
    if line.ends_with(b"\r") {
        return Err(ClientError::InvalidRequest {
            reason: "the request ends with a carriage return, which the server would strip",
        });
    }
    Ok(())
}

/// Rejects keys that would not be read back as one word.
fn validate_key(key: &[u8]) -> Result<(), ClientError> {
    if key.is_empty() {
        return Err(ClientError::InvalidRequest {
            reason: "the key is empty",
        });
    }
    if memchr::memchr(b' ', key).is_some() {
        return Err(ClientError::InvalidRequest {
            reason: "the key contains a space",
        });
    }
    Ok(())
}

fn keyed_request(command: &[u8], key: &[u8]) -> Result<Vec<u8>, ClientError> {
    validate_key(key)?;
    let mut line = Vec::with_capacity(command.len() + key.len());
    line.extend_from_slice(command);
    line.extend_from_slice(key);
    Ok(line)
}

/// Turns an `ERR ...` reply into [`ClientError::Server`].
fn reject_server_error(reply: Vec<u8>) -> Result<Vec<u8>, ClientError> {
    if reply == b"ERR" || reply.starts_with(b"ERR ") {
        Err(ClientError::Server { reply })
    } else {
        Ok(reply)
    }
}

/// Resolves `address` and connects to the first resolved address that
/// accepts, with the read, write and connect timeouts set.
fn open_connection(address: &str, timeout: Duration) -> io::Result<BufReader<TcpStream>> {
    let mut last_error = None;
    for socket_address in address.to_socket_addrs()? {
        match TcpStream::connect_timeout(&socket_address, timeout) {
            Ok(stream) => {
                stream.set_read_timeout(Some(timeout))?;
                stream.set_write_timeout(Some(timeout))?;
                stream.set_nodelay(true)?;
                return Ok(BufReader::new(stream));
            }
            Err(error) => last_error = Some(error),
        }
    }
    Err(last_error.unwrap_or_else(|| {
        io::Error::new(ErrorKind::InvalidInput, "the address resolved to nothing")
    }))
}

/// True when nothing is waiting to be read and the peer has not closed: a
/// non-blocking peek must find the socket empty.
fn is_idle_and_open(connection: &BufReader<TcpStream>) -> bool {
    if !connection.buffer().is_empty() {
        return false;
    }
    let stream = connection.get_ref();
    if stream.set_nonblocking(true).is_err() {
        return false;
    }
    let mut byte = [0_u8; 1];
    let peeked = stream.peek(&mut byte);
    let restored = stream.set_nonblocking(false).is_ok();
    restored && matches!(peeked, Err(error) if error.kind() == ErrorKind::WouldBlock)
}

enum WriteFailure {
    /// The first `write` failed: no byte of the request left this process.
    NothingSent(io::Error),
    /// Some bytes left. The server discards a line without `\n`, but the
    /// client does not rely on it: the outcome is reported as unknown.
    PartlySent(io::Error),
}

/// `write_all` that remembers whether any byte was accepted.
fn write_request(stream: &mut TcpStream, bytes: &[u8]) -> Result<(), WriteFailure> {
    let mut written = 0;
    while written < bytes.len() {
        match stream.write(&bytes[written..]) {
            Ok(0) => {
                let error = io::Error::new(ErrorKind::WriteZero, "the connection accepts no data");
                return Err(failure_after(written, error));
            }
            Ok(count) => written += count,
            Err(error) if error.kind() == ErrorKind::Interrupted => {}
            Err(error) => return Err(failure_after(written, normalize_timeout(error))),
        }
    }
    Ok(())
}

fn failure_after(written: usize, error: io::Error) -> WriteFailure {
    if written == 0 {
        WriteFailure::NothingSent(error)
    } else {
        WriteFailure::PartlySent(error)
    }
}

/// A timed-out socket read or write reports `WouldBlock` on Unix.
fn normalize_timeout(error: io::Error) -> io::Error {
    if error.kind() == ErrorKind::WouldBlock {
        io::Error::new(ErrorKind::TimedOut, "timed out")
    } else {
        error
    }
}

enum ReadFailure {
    NotSent(io::Error),
    Unknown(io::Error),
    TooLong,
}

impl ReadFailure {
    fn into_error(self, addr: String) -> ClientError {
        match self {
            ReadFailure::NotSent(source) => ClientError::NotSent { addr, source },
            ReadFailure::Unknown(source) => ClientError::OutcomeUnknown { addr, source },
            ReadFailure::TooLong => ClientError::ReplyTooLong {
                addr,
                limit: MAX_LINE_LENGTH,
            },
        }
    }
}

/// Reads one reply line, without its `\n` or `\r\n`.
fn read_reply(connection: &mut BufReader<TcpStream>) -> Result<Vec<u8>, ReadFailure> {
    let mut reply = Vec::new();
    // Room for the longest line, its "\r\n", and one byte to notice overflow.
    let limit = (MAX_LINE_LENGTH + 3) as u64;
    let read = connection
        .by_ref()
        .take(limit)
        .read_until(b'\n', &mut reply);
    match read {
        Err(error) => Err(ReadFailure::Unknown(normalize_timeout(error))),
        Ok(_) if reply.last() == Some(&b'\n') => {
            reply.pop();
            if reply.last() == Some(&b'\r') {
                reply.pop();
            }
            Ok(reply)
        }
        Ok(_) if reply.len() as u64 == limit => Err(ReadFailure::TooLong),
        Ok(_) => Err(ReadFailure::Unknown(io::Error::new(
            ErrorKind::UnexpectedEof,
            "the server closed the connection",
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::time::Instant;

    #[test]
    fn redirect_to_a_leader_is_parsed() {
        assert_eq!(
            parse_redirect(b"NOT_LEADER 2 127.0.0.1:7002"),
            Redirect::Leader("127.0.0.1:7002")
        );
        assert_eq!(
            parse_redirect(b"NOT_LEADER 0 node-a.local:1"),
            Redirect::Leader("node-a.local:1")
        );
    }

    #[test]
    fn no_leader_is_parsed() {
        assert_eq!(parse_redirect(b"NOT_LEADER -1"), Redirect::NoLeader);
    }

    #[test]
    fn malformed_redirects_are_rejected() {
        for reply in [
            &b"NOT_LEADER"[..],
            b"NOT_LEADER ",
            b"NOT_LEADER 2",
            b"NOT_LEADER x 127.0.0.1:7002",
            b"NOT_LEADER -2 127.0.0.1:7002",
            b"NOT_LEADER 2 127.0.0.1",
            b"NOT_LEADER 2 127.0.0.1:99999",
            b"NOT_LEADER 2 :7002",
            b"NOT_LEADER 2 127.0.0.1:7002 extra",
            b"NOT_LEADER 2 \xff:7002",
            b"NOT_LEADER -1 127.0.0.1:7002",
        ] {
            assert_eq!(
                parse_redirect(reply),
                Redirect::Malformed,
                "{}",
                reply.escape_ascii()
            );
        }
    }

    #[test]
    fn ordinary_replies_are_not_redirects() {
        for reply in [
            &b"OK"[..],
            b"",
            b"NOT_FOUND",
            b"NOT_LEADERSHIP",
            b"\x00\xff",
        ] {
            assert_eq!(parse_redirect(reply), Redirect::None);
        }
    }

    #[test]
    fn requests_that_cannot_be_one_line_are_rejected() {
        assert!(validate_request(b"PUT k v").is_ok());
        assert!(validate_request(b"PUT k \x00\xff\r v").is_ok());
        for line in [&b""[..], b"PUT k v\n", b"PUT k\nv", b"PUT k v\r"] {
            assert!(matches!(
                validate_request(line),
                Err(ClientError::InvalidRequest { .. })
            ));
        }
        let long = vec![b'a'; MAX_LINE_LENGTH + 1];
        assert!(matches!(
            validate_request(&long),
            Err(ClientError::LineTooLong { length, .. }) if length == MAX_LINE_LENGTH + 1
        ));
    }

    #[test]
    fn keys_with_spaces_are_rejected() {
        assert!(validate_key(b"k\xff").is_ok());
        assert!(validate_key(b"a b").is_err());
        assert!(validate_key(b"").is_err());
    }

    #[test]
    fn outcome_unknown_message_says_the_write_may_have_happened() {
        let error = ClientError::OutcomeUnknown {
            addr: "127.0.0.1:7001".to_owned(),
            source: io::Error::new(ErrorKind::TimedOut, "timed out"),
        };
        assert_eq!(
            error.to_string(),
            "no reply from 127.0.0.1:7001 after the request was sent (timed out): \
             the write may or may not have been applied"
        );
    }

    #[test]
    fn retry_budget_allows_exactly_max_redirects() {
        let options = ClientOptions {
            max_redirects: 2,
            ..ClientOptions::default()
        };
        let mut budget = RetryBudget::new(&options);
        let exhausted = || ClientError::TooManyRedirects {
            last_reply: Vec::new(),
        };
        assert!(budget.spend(exhausted).is_ok());
        assert!(budget.spend(exhausted).is_ok());
        assert!(budget.spend(exhausted).is_err());
    }

    #[test]
    fn backoff_doubles_up_to_the_ceiling() {
        let options = ClientOptions {
            backoff_initial: Duration::from_millis(1),
            backoff_max: Duration::from_millis(3),
            ..ClientOptions::default()
        };
        let mut budget = RetryBudget::new(&options);
        budget.back_off();
        assert_eq!(budget.backoff, Duration::from_millis(2));
        budget.back_off();
        assert_eq!(budget.backoff, Duration::from_millis(3));
        budget.back_off();
        assert_eq!(budget.backoff, Duration::from_millis(3));
    }

    #[test]
    fn a_connection_closed_by_the_server_is_detected_before_sending() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = listener.local_addr().expect("address").to_string();
        let connection = open_connection(&address, Duration::from_secs(5)).expect("connect");
        let (accepted, _) = listener.accept().expect("accept");
        assert!(is_idle_and_open(&connection));
        drop(accepted);
        let deadline = Instant::now() + Duration::from_secs(5);
        while is_idle_and_open(&connection) {
            assert!(Instant::now() < deadline, "close never observed");
            thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn unread_bytes_make_a_connection_unusable() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = listener.local_addr().expect("address").to_string();
        let connection = open_connection(&address, Duration::from_secs(5)).expect("connect");
        let (mut accepted, _) = listener.accept().expect("accept");
        accepted.write_all(b"stray\n").expect("write");
        let deadline = Instant::now() + Duration::from_secs(5);
        while is_idle_and_open(&connection) {
            assert!(Instant::now() < deadline, "stray bytes never observed");
            thread::sleep(Duration::from_millis(1));
        }
    }
}
