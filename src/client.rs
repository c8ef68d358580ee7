//! A small blocking client for the line protocol, over one std `TcpStream`,
//! plain or TLS.
//!
//! Used by `kvstore-client`, by the load generator to find the leader, and
//! by integration tests. It owns one connection at a time (to [`Client::addr`]),
//! a buffered reader over it, and the list of addresses it has learned: the
//! one it was created with first, then every leader named in a redirect.
//!
//! # Layout
//!
//! - `stream`: the byte stream under a client, plain or TLS.
//! - [`credentials`]: the client tools' TLS and password flags.
//! - What `kvstore-client` is made of: [`quoting`] (redis-cli's argument
//!   splitting), [`request`] (from arguments to one request line, or a
//!   refusal), [`commands`] and [`completion`] (the command table, for help,
//!   Tab and hints), [`output`] (raw or quoted printing), [`repl`] (the
//!   interactive session), [`pipe`] (pipe mode) over `pipelined` (one
//!   non-blocking connection with a bounded window of requests in flight).
//!
//! # Opening a connection
//!
//! Every connection, the first, a reconnect and one to a leader named in a
//! redirect alike, is opened the same way: TCP, then with
//! [`ClientOptions::tls`] a TLS handshake that verifies the server's
//! certificate against the host of the address dialled, then with
//! [`ClientOptions::password`] `AUTH <password>`, which must be answered
//! `OK`. A refusal at either step ([`ClientError::Tls`],
//! [`ClientError::AuthenticationFailed`]) is final; it is not retried
//! elsewhere.
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

pub mod commands;
pub mod completion;
pub mod credentials;
mod input_lines;
pub mod output;
pub mod pipe;
mod pipelined;
pub mod quoting;
pub mod repl;
pub mod request;
mod stream;

use std::error::Error;
use std::fmt;
use std::io::{self, BufRead, BufReader, ErrorKind, Read, Write};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use rustls::ClientConfig;

use crate::net::Transport;
use stream::Stream;

/// The longest request or reply line, in bytes, without its `\n`.
pub const MAX_LINE_LENGTH: usize = 1024 * 1024;

/// Timeouts, retry bounds and credentials of a [`Client`].
#[derive(Clone)]
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
    /// Speak TLS with these settings, verifying each server by the host of
    /// the address dialled (see [`crate::security::tls`]).
    pub tls: Option<Arc<ClientConfig>>,
    /// Send `AUTH <password>` first on every connection.
    pub password: Option<Vec<u8>>,
}

impl fmt::Debug for ClientOptions {
    /// Everything but the password, which is only said to be there.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("ClientOptions")
            .field("timeout", &self.timeout)
            .field("max_redirects", &self.max_redirects)
            .field("backoff_initial", &self.backoff_initial)
            .field("backoff_max", &self.backoff_max)
            .field("tls", &self.tls.is_some())
            .field("password", &self.password.as_ref().map(|_| "<hidden>"))
            .finish()
    }
}

impl Default for ClientOptions {
    fn default() -> ClientOptions {
        ClientOptions {
            timeout: Duration::from_secs(5),
            max_redirects: 16,
            backoff_initial: Duration::from_millis(20),
            backoff_max: Duration::from_millis(500),
            tls: None,
            password: None,
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
    /// The TLS handshake with the server was refused: its certificate did
    /// not verify, or it refused ours. Nothing was sent.
    Tls {
        addr: String,
        source: io::Error,
    },
    /// The server answered `AUTH` with something other than `OK`. Nothing
    /// else was sent.
    AuthenticationFailed {
        addr: String,
        reply: Vec<u8>,
    },
    /// The password cannot be sent as `AUTH <password>` on one line.
    InvalidPassword {
        reason: &'static str,
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
                | ClientError::Tls { .. }
                | ClientError::AuthenticationFailed { .. }
                | ClientError::InvalidPassword { .. }
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
            ClientError::Tls { addr, source } => {
                write!(formatter, "TLS with {addr} failed: {source}")
            }
            ClientError::AuthenticationFailed { addr, reply } => write!(
                formatter,
                "authentication with {addr} failed; the server replied: {}",
                reply.escape_ascii()
            ),
            ClientError::InvalidPassword { reason } => {
                write!(formatter, "invalid password: {reason}")
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
            | ClientError::Tls { source, .. }
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
    connection: Option<BufReader<Stream>>,
    /// The request line plus `\n`, reused so a request is one `write`.
    write_buffer: Vec<u8>,
}

impl Client {
    /// Connects to `addr` (`host:port`) once, without retrying, so a wrong
    /// address fails fast. Retries happen inside [`Client::execute`].
    pub fn connect(addr: &str, options: ClientOptions) -> Result<Client, ClientError> {
        let mut client = Client::new(addr, options)?;
        let connection = open_connection(addr, &client.options)
            .map_err(|error| error.into_client_error(addr))?;
        client.connection = Some(connection);
        Ok(client)
    }

    /// A client for `addr` that has not connected yet; the first request,
    /// or [`Client::reconnect`], connects. Only the password is checked.
    pub fn new(addr: &str, options: ClientOptions) -> Result<Client, ClientError> {
        if let Some(password) = &options.password {
            validate_password(password)
                .map_err(|reason| ClientError::InvalidPassword { reason })?;
        }
        Ok(Client {
            options,
            address: addr.to_owned(),
            known_addresses: vec![addr.to_owned()],
            connection: None,
            write_buffer: Vec::new(),
        })
    }

    /// Whether a connection is open. It may still turn out to have been
    /// closed by the server, which the next request notices.
    pub fn is_connected(&self) -> bool {
        self.connection.is_some()
    }

    /// Makes sure there is a usable connection, sending no request: keeps
    /// the current one unless the server has closed it, else tries the
    /// current address, then each other known address, once each and
    /// without backing off (for a person waiting at a prompt). On failure
    /// the error is the current address's, and the address is unchanged.
    pub fn reconnect(&mut self) -> Result<(), ClientError> {
        let first = self.address.clone();
        let first_error = match self.ensure_connected() {
            Ok(()) => return Ok(()),
            Err(OpenError::Refused(error)) => return Err(error),
            Err(error @ OpenError::Unreachable(_)) => error.into_client_error(&first),
        };
        for address in self.known_addresses.clone() {
            if address == first {
                continue;
            }
            self.address = address;
            if self.ensure_connected().is_ok() {
                return Ok(());
            }
        }
        self.address = first;
        Err(first_error)
    }

    /// Hands over a usable connection (opened once, without retrying, if
    /// there is none) as a non-blocking transport, for pipelining. The
    /// client has no connection until [`Client::restore_transport`].
    pub(crate) fn take_transport(&mut self) -> Result<Transport, ClientError> {
        self.ensure_connected()
            .map_err(|error| error.into_client_error(&self.address))?;
        let connection = self.connection.take().expect("just connected");
        debug_assert!(connection.buffer().is_empty(), "an idle connection");
        connection
            .into_inner()
            .into_transport()
            .map_err(ClientError::Io)
    }

    /// Takes back a transport from [`Client::take_transport`], blocking
    /// again. The caller must have read every reply it was owed.
    pub(crate) fn restore_transport(&mut self, transport: Transport) -> Result<(), ClientError> {
        let stream = Stream::from_transport(transport).map_err(ClientError::Io)?;
        self.connection = Some(BufReader::new(stream));
        Ok(())
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
            .map_err(|error| error.into_client_error(&self.address))?;
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
            if let Err(error) = self.ensure_connected() {
                let source = match error {
                    OpenError::Unreachable(source) => source,
                    OpenError::Refused(error) => return Err(error),
                };
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

    /// Makes sure there is a connection to `self.address` that the server has
    /// not closed and that holds no unread bytes (which would belong to no
    /// request and shift every later reply).
    fn ensure_connected(&mut self) -> Result<(), OpenError> {
        if let Some(connection) = &mut self.connection
            && !is_idle_and_open(connection)
        {
            self.connection = None;
        }
        if self.connection.is_none() {
            self.connection = Some(open_connection(&self.address, &self.options)?);
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

/// Whether `reply` is a well-formed `NOT_LEADER` redirect: the request it
/// answers was not applied.
pub fn is_redirect(reply: &[u8]) -> bool {
    !matches!(parse_redirect(reply), Redirect::None | Redirect::Malformed)
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

/// Whether `reply` is the server's `ERR ...`.
pub fn is_server_error(reply: &[u8]) -> bool {
    reply == b"ERR" || reply.starts_with(b"ERR ")
}

/// Turns an `ERR ...` reply into [`ClientError::Server`].
fn reject_server_error(reply: Vec<u8>) -> Result<Vec<u8>, ClientError> {
    if is_server_error(&reply) {
        Err(ClientError::Server { reply })
    } else {
        Ok(reply)
    }
}

/// Why a connection could not be opened.
enum OpenError {
    /// Connecting failed, or the connection was lost while being set up:
    /// no request was sent, so trying again (or elsewhere) is safe.
    Unreachable(io::Error),
    /// The server was reached and refused the TLS handshake or the
    /// password: trying again would not help.
    Refused(ClientError),
}

impl OpenError {
    fn into_client_error(self, addr: &str) -> ClientError {
        match self {
            OpenError::Unreachable(source) => ClientError::Connect {
                addr: addr.to_owned(),
                source,
            },
            OpenError::Refused(error) => error,
        }
    }
}

/// Connects to `address` as the options say: TCP, TLS, then `AUTH`.
fn open_connection(address: &str, options: &ClientOptions) -> Result<BufReader<Stream>, OpenError> {
    let stream = Stream::open(address, options.timeout, options.tls.as_ref())?;
    let mut connection = BufReader::new(stream);
    if let Some(password) = &options.password {
        authenticate(&mut connection, address, password)?;
    }
    Ok(connection)
}

/// Sends `AUTH <password>` and requires `OK`.
fn authenticate(
    connection: &mut BufReader<Stream>,
    address: &str,
    password: &[u8],
) -> Result<(), OpenError> {
    let mut line = Vec::with_capacity(AUTH_COMMAND.len() + password.len() + 1);
    line.extend_from_slice(AUTH_COMMAND);
    line.extend_from_slice(password);
    line.push(b'\n');
    if let Err(WriteFailure::NothingSent(error) | WriteFailure::PartlySent(error)) =
        write_request(connection.get_mut(), &line)
    {
        return Err(stream::classify_failure(address, error));
    }
    match read_reply(connection) {
        Ok(reply) if reply == b"OK" => Ok(()),
        Ok(reply) => Err(OpenError::Refused(ClientError::AuthenticationFailed {
            addr: address.to_owned(),
            reply,
        })),
        Err(ReadFailure::NotSent(error) | ReadFailure::Unknown(error)) => {
            Err(stream::classify_failure(address, error))
        }
        Err(failure @ ReadFailure::TooLong) => {
            Err(OpenError::Refused(failure.into_error(address.to_owned())))
        }
    }
}

/// The command that sends the password, before the password.
const AUTH_COMMAND: &[u8] = b"AUTH ";

/// Why `password` cannot be sent as `AUTH <password>\n`, if it cannot.
pub fn validate_password(password: &[u8]) -> Result<(), &'static str> {
    if password.is_empty() {
        return Err("the password is empty");
    }
    if password.len() + AUTH_COMMAND.len() > MAX_LINE_LENGTH {
        return Err("the password is longer than a request line may be");
    }
    if memchr::memchr(b'\n', password).is_some() {
        return Err("the password contains a newline");
    }
    if password.ends_with(b"\r") {
        return Err("the password ends with a carriage return, which the server would strip");
    }
    Ok(())
}

/// True when nothing is waiting to be read, in the buffer or the stream,
/// and the server has not closed.
fn is_idle_and_open(connection: &mut BufReader<Stream>) -> bool {
    connection.buffer().is_empty() && connection.get_mut().is_idle_and_open()
}

enum WriteFailure {
    /// The first `write` failed: no byte of the request left this process.
    NothingSent(io::Error),
    /// Some bytes left. The server discards a line without `\n`, but the
    /// client does not rely on it: the outcome is reported as unknown.
    PartlySent(io::Error),
}

/// `write_all` that remembers whether any byte was accepted.
fn write_request(stream: &mut impl Write, bytes: &[u8]) -> Result<(), WriteFailure> {
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
fn read_reply(connection: &mut BufReader<Stream>) -> Result<Vec<u8>, ReadFailure> {
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
        let mut connection = open_connection(&address, &ClientOptions::default())
            .unwrap_or_else(|_| panic!("connect"));
        let (accepted, _) = listener.accept().expect("accept");
        assert!(is_idle_and_open(&mut connection));
        drop(accepted);
        let deadline = Instant::now() + Duration::from_secs(5);
        while is_idle_and_open(&mut connection) {
            assert!(Instant::now() < deadline, "close never observed");
            thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn unread_bytes_make_a_connection_unusable() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = listener.local_addr().expect("address").to_string();
        let mut connection = open_connection(&address, &ClientOptions::default())
            .unwrap_or_else(|_| panic!("connect"));
        let (mut accepted, _) = listener.accept().expect("accept");
        accepted.write_all(b"stray\n").expect("write");
        let deadline = Instant::now() + Duration::from_secs(5);
        while is_idle_and_open(&mut connection) {
            assert!(Instant::now() < deadline, "stray bytes never observed");
            thread::sleep(Duration::from_millis(1));
        }
    }

    use crate::security::testing::{Answer, FakeLineServer, Responder, TestPki};
    use crate::security::tls::ClientAuth;

    const PASSWORD: &[u8] = b"pass word";

    fn with_password(tls: Option<Arc<ClientConfig>>) -> ClientOptions {
        ClientOptions {
            tls,
            password: Some(PASSWORD.to_vec()),
            max_redirects: 2,
            backoff_initial: Duration::from_millis(1),
            ..ClientOptions::default()
        }
    }

    /// Answers `AUTH pass word` with `OK` and `PING` with `PONG`, closing
    /// after each `PONG` when `close_after_pong`.
    fn pinged(close_after_pong: bool) -> Responder {
        Box::new(move |line: &[u8]| match line {
            b"AUTH pass word" => Answer::Reply(b"OK\n".to_vec()),
            b"PING" if close_after_pong => Answer::ReplyAndClose(b"PONG\n".to_vec()),
            b"PING" => Answer::Reply(b"PONG\n".to_vec()),
            _ => Answer::Reply(b"ERR unexpected\n".to_vec()),
        })
    }

    fn lines(items: &[&[u8]]) -> Vec<Vec<u8>> {
        items.iter().map(|item| item.to_vec()).collect()
    }

    #[test]
    fn the_password_goes_first_on_every_new_connection() {
        let server = FakeLineServer::start(None, pinged(true));
        let mut client = Client::connect(&server.address.to_string(), with_password(None)).unwrap();
        client.ping().unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while is_idle_and_open(client.connection.as_mut().expect("connection")) {
            assert!(Instant::now() < deadline, "close never observed");
            thread::sleep(Duration::from_millis(1));
        }
        client.ping().unwrap();
        let expected: &[&[u8]] = &[b"AUTH pass word", b"PING", b"AUTH pass word", b"PING"];
        assert_eq!(server.received(), lines(expected));
        assert_eq!(server.connections(), 2);
    }

    #[test]
    fn the_password_goes_first_to_a_leader_named_in_a_redirect() {
        let leader = FakeLineServer::start(None, pinged(false));
        let redirect = format!("NOT_LEADER 2 {}\n", leader.address).into_bytes();
        let follower = FakeLineServer::start(
            None,
            Box::new(move |line: &[u8]| match line {
                b"AUTH pass word" => Answer::Reply(b"OK\n".to_vec()),
                _ => Answer::Reply(redirect.clone()),
            }),
        );
        let mut client =
            Client::connect(&follower.address.to_string(), with_password(None)).unwrap();
        client.ping().unwrap();
        let expected: &[&[u8]] = &[b"AUTH pass word", b"PING"];
        assert_eq!(follower.received(), lines(expected));
        assert_eq!(leader.received(), lines(expected));
    }

    #[test]
    fn a_refused_password_is_an_authentication_error_with_the_reply() {
        let server = FakeLineServer::start(
            None,
            Box::new(|_: &[u8]| Answer::Reply(b"ERR invalid password\n".to_vec())),
        );
        let address = server.address.to_string();
        let error = Client::connect(&address, with_password(None)).unwrap_err();
        assert!(
            matches!(&error, ClientError::AuthenticationFailed { addr, reply }
                if *addr == address && reply == b"ERR invalid password"),
            "{error}"
        );
        assert!(error.to_string().contains("authentication"), "{error}");
        assert!(
            error.to_string().contains("ERR invalid password"),
            "{error}"
        );
        assert!(error.is_connection_failure());
    }

    #[test]
    fn a_password_that_is_not_one_line_is_refused_before_connecting() {
        for password in [&b""[..], b"a\nb", b"ab\r"] {
            let options = ClientOptions {
                password: Some(password.to_vec()),
                ..ClientOptions::default()
            };
            assert!(matches!(
                Client::connect("127.0.0.1:1", options),
                Err(ClientError::InvalidPassword { .. })
            ));
        }
    }

    #[test]
    fn requests_go_over_tls_and_session_tickets_do_not_drop_the_connection() {
        let pki = TestPki::generate();
        let server =
            FakeLineServer::start(Some(pki.server_config(ClientAuth::None)), pinged(false));
        let options = ClientOptions {
            tls: Some(pki.client_config(None)),
            ..ClientOptions::default()
        };
        let mut client = Client::connect(&server.address.to_string(), options).unwrap();
        // The server sends TLS 1.3 session tickets after the handshake: wait
        // until they are in the socket, unread.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !has_unread_bytes(client.connection.as_ref().expect("connection").get_ref()) {
            assert!(Instant::now() < deadline, "no session ticket arrived");
            thread::sleep(Duration::from_millis(1));
        }
        for _ in 0..3 {
            client.ping().unwrap();
        }
        let expected: &[&[u8]] = &[b"PING", b"PING", b"PING"];
        assert_eq!(server.received(), lines(expected));
        assert_eq!(server.connections(), 1);
    }

    fn has_unread_bytes(stream: &Stream) -> bool {
        let Stream::Tls(stream) = stream else {
            panic!("not TLS")
        };
        stream.sock.set_nonblocking(true).unwrap();
        let peeked = stream.sock.peek(&mut [0_u8; 1]);
        stream.sock.set_nonblocking(false).unwrap();
        matches!(peeked, Ok(count) if count > 0)
    }

    #[test]
    fn a_server_the_ca_did_not_sign_is_refused_without_retrying() {
        let pki = TestPki::generate();
        let server =
            FakeLineServer::start(Some(pki.server_config(ClientAuth::None)), pinged(false));
        let distrustful = crate::security::tls::client_config(&pki.untrusted_ca, None).unwrap();
        let options = ClientOptions {
            tls: Some(distrustful),
            ..ClientOptions::default()
        };
        let error = Client::connect(&server.address.to_string(), options).unwrap_err();
        assert!(
            matches!(&error, ClientError::Tls { source, .. }
            if source.kind() == ErrorKind::InvalidData),
            "{error}"
        );
        assert!(error.to_string().contains("certificate"), "{error}");
        assert!(server.received().is_empty());
        assert_eq!(server.connections(), 1);
    }

    #[test]
    fn a_server_requiring_a_certificate_accepts_the_client_certificate() {
        let pki = TestPki::generate();
        let config = pki.server_config(ClientAuth::Required);
        let server = FakeLineServer::start(Some(config), pinged(false));
        let options = with_password(Some(pki.client_config(Some(&pki.client))));
        let mut client = Client::connect(&server.address.to_string(), options).unwrap();
        client.ping().unwrap();
        drop(client);

        let options = with_password(Some(pki.client_config(None)));
        let error = Client::connect(&server.address.to_string(), options).unwrap_err();
        assert!(matches!(error, ClientError::Tls { .. }), "{error}");
    }

    #[test]
    fn options_never_show_the_password() {
        let shown = format!("{:?}", with_password(None));
        assert!(!shown.contains("pass word"), "{shown}");
        assert!(shown.contains("<hidden>"), "{shown}");
    }
}
