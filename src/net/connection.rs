//! One client connection: its socket, its unparsed input and its replies.
//!
//! Every request executed here is counted once, by command and by what its
//! reply said (`metrics::RequestCounters`, an array increment): the reply
//! queue classifies each reply as it is pushed.

use std::io::{self, Read, Write};

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::node::{Flow, Gate, Node, ReplyQueue, ServerFacts, Session};
use crate::protocol::resp::{self, Args};
use crate::protocol::resp_reply::Version;
use crate::protocol::{self, ErrorReply, Framed, Outcome, Protocol, Reply, Request};
use crate::security::handshake::{HANDSHAKE_PREFIX, MAX_HANDSHAKE_LINE_BYTES};
use crate::security::password::PasswordCheck;
use crate::store::{PREFETCH_BATCH, Store};
use crate::timer::TimerId;

use super::Transport;
use super::metrics::RequestCounters;
use super::read_buffer::{ReadBuffer, ReadOutcome};
/// Stop executing a client's requests while this many reply bytes are
/// unsent, so a client that never reads cannot grow the server's memory.
pub const MAX_UNSENT_REPLY_BYTES: usize = 256 * 1024;

/// Whether a connection to a TLS port opened with TLS.
#[derive(Debug, PartialEq, Eq)]
pub enum FirstByte {
    /// TLS is not required, or the first byte started a TLS handshake.
    Checked,
    /// Nothing has arrived yet.
    NotYet,
    /// The client left without a byte.
    Closed,
    /// Something else: a plaintext client.
    Plaintext,
}

/// What a plaintext client on a TLS port is told, by protocol.
const TLS_REQUIRED_LINE: &[u8] =
    b"ERR this port requires TLS (kvstore-client --tls, redis-cli --tls, openssl s_client)\n";
const TLS_REQUIRED_RESP: &[u8] = b"-ERR this port requires TLS\r\n";
/// What of a refused plaintext client's first bytes is read and dropped.
const PLAINTEXT_DRAIN_BYTES: usize = 4096;

/// What executing the buffered lines found.
#[derive(Debug, PartialEq, Eq)]
pub enum Executed {
    /// Lines ran (or none were whole); the connection stays a client.
    Requests,
    /// The first line was a peer's handshake (here, without its `\n`):
    /// the connection is a peer's, if the line and then its proof check out.
    PeerHandshake(Vec<u8>),
    /// `AUTH` with a wrong password: its reply waits out a delay, and
    /// nothing after it runs until then.
    WrongPassword,
    /// A line-protocol connection opened with what looks like HTTP (a browser
    /// tricked into posting to the server): closed without executing
    /// anything, as Redis does ("Possible SECURITY ATTACK detected").
    CrossProtocol,
}

/// `CLIENT ID`s: unique in this process.
static NEXT_CLIENT_ID: AtomicU64 = AtomicU64::new(1);

pub struct Connection {
    pub transport: Transport,
    /// Received and not yet executed.
    input: ReadBuffer,
    /// How many bytes at the front of `input` hold no `\n`, learned when
    /// its line was incomplete, and the `consumed_total` it holds for.
    newline_free: (u64, usize),
    pub replies: ReplyQueue,
    /// No more requests will be executed (QUIT, a protocol error, or EOF
    /// after the last whole line): close once every reply has been written.
    pub closing: bool,
    /// The client closed its sending side; buffered whole lines still run.
    pub read_closed: bool,
    /// Reading stopped because replies backed up; resumes when they drain.
    pub paused: bool,
    /// Queued for the end-of-turn flush.
    pub flush_queued: bool,
    /// In the server's list of connections with held replies.
    pub waiting: bool,
    /// When the last whole request was executed (or the connection was
    /// accepted): the idle timeout counts from here, so dripping bytes
    /// without finishing a line does not keep a connection alive.
    pub last_request_ms: u64,
    /// Since when the server has waited for the request line now buffered
    /// in part (or, before the first line, since the accept); `None` while
    /// nothing is buffered after a whole request.
    pub line_started_ms: Option<u64>,
    /// What this connection's buffers counted for, the last time the
    /// reactor added up the client buffer budget.
    pub accounted_bytes: usize,
    /// Whole request lines executed so far.
    requests_executed: u64,
    /// Whether any line has been executed: only the first may be a handshake.
    executed_any: bool,
    /// A `SNAPSHOT` waits for the outcome of this attempt; nothing after it
    /// is executed (or read) until its reply is queued.
    pub awaiting_snapshot: Option<u64>,
    /// Whether commands other than AUTH, PING and QUIT may run: from the
    /// start when no password is required, else after a right `AUTH`.
    pub authenticated: bool,
    /// A wrong password's reply is held until this timer fires.
    pub wrong_password_timer: Option<TimerId>,
    /// Admitted beyond `--max-clients` because it may be a peer: it must
    /// open with a peer handshake, or it is refused.
    pub peer_only: bool,
    /// When it was accepted.
    pub admitted_ms: u64,
    /// The first byte has been seen to start TLS (or TLS is off).
    first_byte_checked: bool,
    /// A RESP connection's state in the core (its first byte was `*`).
    session: Option<Session>,
    /// Where the arguments of the RESP request being executed are in the
    /// input (reused: no allocation per request).
    arguments: Vec<Range<usize>>,
}

impl Connection {
    pub fn new(transport: Transport, now_ms: u64) -> Self {
        Connection {
            transport,
            input: ReadBuffer::new(),
            replies: ReplyQueue::new(),
            closing: false,
            read_closed: false,
            paused: false,
            flush_queued: false,
            waiting: false,
            last_request_ms: now_ms,
            line_started_ms: Some(now_ms),
            accounted_bytes: 0,
            requests_executed: 0,
            executed_any: false,
            newline_free: (0, 0),
            awaiting_snapshot: None,
            authenticated: true,
            wrong_password_timer: None,
            peer_only: false,
            admitted_ms: now_ms,
            first_byte_checked: false,
            session: None,
            arguments: Vec::new(),
        }
    }

    /// On a TLS port, whether the client opened with a TLS handshake record
    /// (peeked, so the TLS session still reads it); plaintext is refused
    /// with a line it can read rather than left to fail the TLS handshake.
    pub fn check_first_byte(&mut self) -> FirstByte {
        if self.first_byte_checked || !self.transport.is_tls() {
            self.first_byte_checked = true;
            return FirstByte::Checked;
        }
        let mut first = [0u8; 1];
        match self.transport.socket().peek(&mut first) {
            Ok(0) => FirstByte::Closed,
            Ok(_) if Transport::looks_like_tls(first[0]) => {
                self.first_byte_checked = true;
                FirstByte::Checked
            }
            Ok(_) => FirstByte::Plaintext,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => FirstByte::NotYet,
            Err(_) => FirstByte::Closed,
        }
    }

    /// Tells a plaintext client on a TLS port why it is cut off, on the
    /// bare socket (best effort: the socket is fresh and has room), and
    /// drains what it sent, so that closing does not reset the connection
    /// and throw the explanation away before the client reads it.
    pub fn refuse_plaintext(&mut self) {
        let mut first = [0u8; 1];
        let socket = self.transport.socket();
        let resp = matches!(socket.peek(&mut first), Ok(1) if first[0] == b'*');
        let text = if resp {
            TLS_REQUIRED_RESP
        } else {
            TLS_REQUIRED_LINE
        };
        let _ = socket.write(text);
        let mut unread = [0u8; PLAINTEXT_DRAIN_BYTES];
        let _ = socket.read(&mut unread);
        let _ = socket.shutdown(std::net::Shutdown::Write);
    }

    /// Whole request lines executed so far.
    pub fn requests_executed(&self) -> u64 {
        self.requests_executed
    }

    /// Notes, after a read and its execution at `now_ms`, whether a whole
    /// request ran (`progressed`) and whether a line is now buffered in part.
    pub fn note_progress(&mut self, now_ms: u64, progressed: bool) {
        if progressed {
            self.last_request_ms = now_ms;
        }
        self.line_started_ms = match (self.input.is_empty(), self.line_started_ms) {
            (true, _) if self.executed_any => None,
            (true, started) => started,
            (false, Some(started)) if !progressed => Some(started),
            (false, _) => Some(now_ms),
        };
    }

    /// The memory this connection's buffers hold: received bytes not yet
    /// executed and replies not yet written (their capacity, which is what
    /// the allocator gave).
    pub fn buffer_bytes(&self) -> usize {
        let session = self.session.as_ref().map_or(0, Session::memory_bytes);
        self.input.capacity_bytes() + self.replies.capacity_bytes() + session
    }

    /// Gives back an idle connection's buffers (they are allocated again by
    /// its next request).
    pub fn release_idle_buffers(&mut self) {
        if self.input.is_empty() {
            self.input.discard();
        }
        self.replies.release_if_empty();
    }

    /// Whether nothing of this connection is in flight: no unsent reply,
    /// nothing awaited.
    pub fn is_quiet(&self) -> bool {
        self.replies.is_empty() && !self.is_held()
    }

    /// Whether another read(2) is useful now.
    pub fn wants_read(&self) -> bool {
        !self.closing && !self.read_closed && !self.is_backpressured() && !self.is_held()
    }

    /// Waiting for a `SNAPSHOT`'s outcome or a wrong password's delay:
    /// nothing after that request runs yet.
    fn is_held(&self) -> bool {
        self.awaiting_snapshot.is_some() || self.wrong_password_timer.is_some()
    }

    /// Whether the connection is waiting on its own unsent replies.
    pub fn is_backpressured(&self) -> bool {
        self.replies.unsent_bytes() > MAX_UNSENT_REPLY_BYTES
    }

    /// The client's FIN has arrived (it may sit behind unread data).
    pub fn note_peer_closed(&mut self) {
        self.input.note_peer_closed();
    }

    /// One read(2) into the input buffer. A buffer holding an incomplete line
    /// grows, up to `max_line_bytes` plus a terminator; past that, framing
    /// reports the line as too long before another read is needed.
    pub fn read_once(&mut self, max_line_bytes: usize) -> io::Result<ReadOutcome> {
        self.input
            .read_once(&mut self.transport, max_line_bytes + 2)
    }

    /// Executes every whole line in the buffer, stopping early when replies
    /// back up or the connection is closing, and counts each in `requests`.
    /// `password`: the one `--requirepass-file` names, if any.
    pub fn execute_buffered(
        &mut self,
        node: &mut Node,
        max_line_bytes: usize,
        password: Option<&PasswordCheck>,
        facts: &ServerFacts,
        requests: &mut RequestCounters,
    ) -> Executed {
        if self.peer_only && !self.closing && !could_be_handshake(self.input.buffered()) {
            self.refuse(ErrorReply::TooManyClients, node);
        }
        if !self.executed_any
            && self.session.is_none()
            && self.input.buffered().first() == Some(&b'*')
        {
            // The first byte decides the protocol for the connection's life.
            self.replies.set_protocol(Protocol::Resp(Version::Resp2));
            self.session = Some(Session::new(NEXT_CLIENT_ID.fetch_add(1, Ordering::Relaxed)));
        }
        if self.session.is_some() {
            return self.execute_resp(node, max_line_bytes, password, facts, requests);
        }
        let mut prefetched_lines = 0;
        while !self.closing && !self.is_backpressured() && !self.is_held() {
            if prefetched_lines == 0 {
                let hints = protocol::key_hints;
                prefetched_lines = prefetch_keys(self.input.buffered(), node.store(), hints);
            }
            let (at, newline_free) = self.newline_free;
            let skip = if at == self.input.consumed_total() {
                newline_free
            } else {
                0
            };
            match protocol::next_line_after(self.input.buffered(), skip, max_line_bytes) {
                Framed::Line { line, consumed } => {
                    prefetched_lines = prefetched_lines.saturating_sub(1);
                    let first = !self.executed_any;
                    self.executed_any = true;
                    self.requests_executed += 1;
                    // A browser's request starts with its request line, and
                    // the connection closes on it: only a first line can be
                    // one (no cost on the lines after it).
                    if first && looks_like_http(line) {
                        self.close_input();
                        return Executed::CrossProtocol;
                    }
                    if line.starts_with(HANDSHAKE_PREFIX) {
                        if first && line.len() < MAX_HANDSHAKE_LINE_BYTES {
                            let line = line.to_vec();
                            self.input.consume(consumed);
                            return Executed::PeerHandshake(line);
                        }
                        self.refuse(ErrorReply::BadHandshake, node);
                        continue;
                    }
                    let parsed = protocol::parse(line);
                    let command = match &parsed {
                        Ok(request) => requests.line_request(request),
                        Err(_) => requests.line(line),
                    };
                    // Whatever an earlier refusal left: this request's own.
                    let _ = self.replies.take_outcome();
                    let flow = match parsed {
                        Ok(Request::Auth {
                            password: candidate,
                        }) => {
                            let verdict = password.map(|check| check.matches(candidate));
                            self.input.consume(consumed);
                            if !self.authenticate(verdict, node) {
                                requests.count(command, Outcome::Error);
                                return Executed::WrongPassword;
                            }
                            requests.count(command, self.replies.take_outcome());
                            continue;
                        }
                        parsed => {
                            let authenticated = self.authenticated;
                            execute_line(parsed, node, authenticated, facts, &mut self.replies)
                        }
                    };
                    requests.count(command, self.replies.take_outcome());
                    self.input.consume(consumed);
                    match flow {
                        Flow::Continue => {}
                        Flow::Close => self.closing = true,
                        Flow::AwaitSnapshot { attempt } => {
                            self.awaiting_snapshot = Some(attempt);
                        }
                    }
                }
                Framed::Incomplete => {
                    self.newline_free = (self.input.consumed_total(), self.input.buffered().len());
                    if self.read_closed {
                        // The client left mid-line: that line never counts.
                        self.close_input();
                    }
                    break;
                }
                Framed::TooLong => self.refuse(ErrorReply::LineTooLong { max_line_bytes }, node),
            }
        }
        self.input.shrink_if_idle();
        Executed::Requests
    }

    /// Executes every whole RESP request in the buffer (see
    /// [`Connection::execute_buffered`]). `AUTH`, and `HELLO`'s `AUTH`
    /// option, are answered here: the password is the connection's
    /// business, not the core's.
    fn execute_resp(
        &mut self,
        node: &mut Node,
        max_request_bytes: usize,
        password: Option<&PasswordCheck>,
        facts: &ServerFacts,
        requests: &mut RequestCounters,
    ) -> Executed {
        let mut prefetched_requests = 0;
        while !self.closing && !self.is_backpressured() && !self.is_held() {
            let buffered = self.input.buffered();
            if prefetched_requests == 0 {
                prefetched_requests = prefetch_keys(buffered, node.store(), resp::key_hints);
            }
            let consumed =
                match resp::next_command(buffered, max_request_bytes, &mut self.arguments) {
                    resp::Framed::Command { consumed } => {
                        prefetched_requests = prefetched_requests.saturating_sub(1);
                        consumed
                    }
                    resp::Framed::Incomplete => {
                        if self.read_closed {
                            self.close_input();
                        }
                        break;
                    }
                    resp::Framed::Error(error) => {
                        let text = format!("ERR {error}");
                        self.replies.push_encoded(node.released(), |out, _| {
                            protocol::resp_reply::error(out, &text);
                            Gate::OPEN
                        });
                        self.close_input();
                        break;
                    }
                };
            self.executed_any = true;
            self.requests_executed += 1;
            let args = Args::new(buffered, &self.arguments);
            if args.is_empty() {
                self.input.consume(consumed);
                continue;
            }
            let command = requests.resp(args.get(0));
            let _ = self.replies.take_outcome();
            let flow = match resp_password(&args) {
                PasswordUse::Auth {
                    user,
                    password: candidate,
                }
                | PasswordUse::Hello(Some((user, candidate))) => {
                    let hello = args.get(0).eq_ignore_ascii_case(b"hello");
                    let verdict = match (password, user) {
                        // Without a password the default user takes any
                        // (Redis's `nopass`); a bare `AUTH` is an error.
                        (None, Some(_)) => Some(true),
                        (None, None) => None,
                        (Some(check), user) => Some(
                            user.is_none_or(|user| user == b"default") && check.matches(candidate),
                        ),
                    };
                    match verdict {
                        Some(false) => {
                            self.input.consume(consumed);
                            requests.count(command, Outcome::Error);
                            return Executed::WrongPassword;
                        }
                        Some(true) if hello => {
                            self.authenticated = true;
                            let session = self.session.as_mut().expect("a RESP session");
                            node.handle_command(args, session, facts, &mut self.replies)
                        }
                        _ => {
                            self.input.consume(consumed);
                            self.authenticate(verdict, node);
                            requests.count(command, self.replies.take_outcome());
                            continue;
                        }
                    }
                }
                PasswordUse::Hello(None) if !self.authenticated => {
                    let text = "NOAUTH HELLO must be called with the client already \
                                authenticated, otherwise the HELLO <proto> AUTH <user> <pass> \
                                option can be used to authenticate the client and select the \
                                RESP protocol version at the same time";
                    self.replies.push_encoded(node.released(), |out, _| {
                        protocol::resp_reply::error(out, text);
                        Gate::OPEN
                    });
                    Flow::Continue
                }
                PasswordUse::None
                    if !self.authenticated && !args.get(0).eq_ignore_ascii_case(b"quit") =>
                {
                    let reply = Reply::Error(ErrorReply::NoAuth);
                    self.replies.push(reply, Gate::OPEN, node.released());
                    Flow::Continue
                }
                _ => {
                    let session = self.session.as_mut().expect("a RESP session");
                    node.handle_command(args, session, facts, &mut self.replies)
                }
            };
            requests.count(command, self.replies.take_outcome());
            self.input.consume(consumed);
            match flow {
                Flow::Continue => {}
                Flow::Close => self.closing = true,
                Flow::AwaitSnapshot { attempt } => self.awaiting_snapshot = Some(attempt),
            }
        }
        self.input.shrink_if_idle();
        Executed::Requests
    }

    /// An `AUTH` whose password was right (`Some(true)`), wrong, or asked
    /// of a server that requires none (`None`): `OK` and authenticated, or
    /// an error. Returns false for a wrong password, whose reply the
    /// reactor sends after a delay ([`Connection::release_wrong_password`]).
    fn authenticate(&mut self, verdict: Option<bool>, node: &Node) -> bool {
        let reply = match verdict {
            None => Reply::Error(ErrorReply::AuthNotConfigured),
            Some(true) => {
                self.authenticated = true;
                Reply::Ok
            }
            Some(false) => return false,
        };
        self.replies.push(reply, Gate::OPEN, node.released());
        true
    }

    /// The delay of a wrong password is over: its reply goes out, and the
    /// requests after it may run.
    pub fn release_wrong_password(&mut self, released: Gate) {
        self.wrong_password_timer = None;
        let reply = Reply::Error(ErrorReply::WrongPassword);
        self.replies.push(reply, Gate::OPEN, released);
    }

    /// Answers `reason` and stops reading: the stream can no longer be trusted.
    fn refuse(&mut self, reason: ErrorReply, node: &Node) {
        self.refuse_with(reason, node.released());
    }

    /// [`Connection::refuse`], from the reactor (a timer).
    pub fn refuse_with(&mut self, reason: ErrorReply, released: Gate) {
        self.replies
            .push(Reply::Error(reason), Gate::OPEN, released);
        self.close_input();
    }

    /// The socket and whatever arrived after the handshake line.
    pub fn into_parts(self) -> (Transport, Vec<u8>) {
        (self.transport, self.input.into_rest())
    }

    /// Stops reading and drops what was not executed (memory released now).
    pub fn close_input(&mut self) {
        self.closing = true;
        self.input.discard();
    }

    /// One write(2) of whatever replies may leave. Returns whether every
    /// queued reply (held or not) has now been written.
    pub fn flush(&mut self, released: Gate) -> io::Result<bool> {
        if !self.transport.flush_pending()? {
            return Ok(false);
        }
        loop {
            let sendable = self.replies.sendable(released);
            if sendable.is_empty() {
                return Ok(self.replies.is_empty());
            }
            match self.transport.write(sendable) {
                Ok(count) => {
                    self.replies.consume(count);
                    return Ok(self.replies.is_empty());
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(error) => return Err(error),
            }
        }
    }
}

/// Below this many buffered bytes, lines run without a prefetch: about two
/// requests with 100-byte values.
const PREFETCH_MIN_BYTES: usize = 256;

/// A protocol's way to find the keys of the next requests in a buffer:
/// [`protocol::key_hints`] or [`resp::key_hints`].
type KeyHints = for<'buf> fn(&'buf [u8], &mut [&'buf [u8]]) -> (usize, usize);

/// Warms the store's cache for the keys of the next whole requests in
/// `buffered` ([`Store::prefetch`]); returns how many requests that
/// covered (`usize::MAX`: all of them).
/// A lone line is left alone: its lookup has nothing to overlap with, and
/// a buffer shorter than [`PREFETCH_MIN_BYTES`] (what a client without a
/// pipeline sends) is not even scanned.
fn prefetch_keys(buffered: &[u8], store: &Store, hints: KeyHints) -> usize {
    if buffered.len() < PREFETCH_MIN_BYTES {
        return usize::MAX;
    }
    let mut keys: [&[u8]; PREFETCH_BATCH] = [&[]; PREFETCH_BATCH];
    let (found, lines) = hints(buffered, &mut keys);
    if found > 1 {
        store.prefetch(&keys[..found]);
    }
    lines
}

/// Executes one parsed line other than `AUTH` (which needs the
/// connection): refused before authentication unless allowed, `INFO` here
/// (the core's fields with the driver's figures), the rest by the core.
fn execute_line(
    parsed: Result<Request<'_>, protocol::ParseError>,
    node: &mut Node,
    authenticated: bool,
    facts: &ServerFacts,
    replies: &mut ReplyQueue,
) -> Flow {
    let reply_now = |replies: &mut ReplyQueue, node: &Node, reply: Reply<'_>| {
        replies.push(reply, Gate::OPEN, node.released());
        Flow::Continue
    };
    match parsed {
        Ok(request) if !authenticated && !allowed_before_auth(&request) => {
            reply_now(replies, node, Reply::Error(ErrorReply::NoAuth))
        }
        Ok(Request::Info) => {
            let info = node.info_line(facts);
            reply_now(replies, node, Reply::Value(info.as_bytes()))
        }
        Ok(request) => node.handle_request(request, replies),
        Err(error) => reply_now(replies, node, Reply::Error(ErrorReply::Parse(error))),
    }
}

/// Where a RESP request carries a password.
enum PasswordUse<'a> {
    None,
    /// `AUTH [user] password`.
    Auth {
        user: Option<&'a [u8]>,
        password: &'a [u8],
    },
    /// `HELLO [version [AUTH user password] ...]`, with the user and
    /// password if it has them.
    Hello(Option<(Option<&'a [u8]>, &'a [u8])>),
}

fn resp_password<'a>(args: &Args<'a>) -> PasswordUse<'a> {
    let name = args.get(0);
    if name.eq_ignore_ascii_case(b"auth") {
        return match args.len() {
            2 => PasswordUse::Auth {
                user: None,
                password: args.get(1),
            },
            3 => PasswordUse::Auth {
                user: Some(args.get(1)),
                password: args.get(2),
            },
            // Wrong arity: the core answers it.
            _ => PasswordUse::None,
        };
    }
    if !name.eq_ignore_ascii_case(b"hello") {
        return PasswordUse::None;
    }
    let credentials = (2..args.len())
        .find(|&at| args.get(at).eq_ignore_ascii_case(b"auth") && at + 2 < args.len())
        .map(|at| (Some(args.get(at + 1)), args.get(at + 2)));
    PasswordUse::Hello(credentials)
}

/// Whether a line-protocol line is the start of an HTTP request (what a
/// browser sends when a web page posts to the server's port): Redis closes
/// such connections at `POST` and `Host:`; a `GET /... HTTP/1.1` line is
/// caught too.
fn looks_like_http(line: &[u8]) -> bool {
    let starts = |prefix: &[u8]| {
        line.len() >= prefix.len() && line[..prefix.len()].eq_ignore_ascii_case(prefix)
    };
    let request_line = [&b"GET /"[..], b"PUT /", b"HEAD /", b"DELETE /", b"OPTIONS "]
        .iter()
        .any(|method| starts(method))
        && (line.ends_with(b" HTTP/1.1") || line.ends_with(b" HTTP/1.0"));
    starts(b"POST ") || starts(b"HOST:") || request_line
}

/// What a connection may send before `AUTH` when a password is required
/// (besides `AUTH` itself): Redis lets `PING` and `QUIT` through too.
fn allowed_before_auth(request: &Request<'_>) -> bool {
    matches!(request, Request::Ping | Request::Quit)
}

/// Whether `buffered` (the first bytes of a connection) may still become a
/// peer's handshake line.
fn could_be_handshake(buffered: &[u8]) -> bool {
    let length = buffered.len().min(HANDSHAKE_PREFIX.len());
    buffered[..length] == HANDSHAKE_PREFIX[..length]
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::net::{Shutdown, TcpListener};
    use std::time::Duration;

    use mio::{Events, Interest, Poll, Token};

    use super::*;
    use crate::net::read_buffer::READ_CHUNK_BYTES;

    /// A server-side connection whose client sent `bytes` and then its FIN,
    /// returned once the poller has reported the FIN.
    fn connection_after_half_close(bytes: &[u8]) -> Connection {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        accepted.set_nonblocking(true).unwrap();
        let mut stream = mio::net::TcpStream::from_std(accepted);
        client.write_all(bytes).unwrap();
        client.shutdown(Shutdown::Write).unwrap();

        let mut poll = Poll::new().unwrap();
        poll.registry()
            .register(&mut stream, Token(0), Interest::READABLE)
            .unwrap();
        let mut events = Events::with_capacity(4);
        let mut fin_reported = false;
        for _ in 0..100 {
            poll.poll(&mut events, Some(Duration::from_millis(100)))
                .unwrap();
            if events.iter().any(|event| event.is_read_closed()) {
                fin_reported = true;
                break;
            }
        }
        assert!(fin_reported, "the poller never reported the FIN");
        Connection::new(Transport::plain(stream), 0)
    }

    #[test]
    fn a_short_read_before_a_reported_fin_asks_to_read_again() {
        let mut connection = connection_after_half_close(b"PING\n");
        connection.note_peer_closed();
        assert_eq!(connection.read_once(64).unwrap(), ReadOutcome::MoreMaybe);
        assert_eq!(connection.read_once(64).unwrap(), ReadOutcome::Closed);
        assert_eq!(connection.input.buffered(), b"PING\n");
    }

    #[test]
    fn without_a_fin_a_short_read_drains() {
        let mut connection = connection_after_half_close(b"PING\n");
        // The same socket, had the FIN not been reported yet.
        assert_eq!(connection.read_once(64).unwrap(), ReadOutcome::Drained);
    }

    /// A server-side connection and its client, over loopback.
    fn connected_pair() -> (Connection, std::net::TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        client.set_nodelay(true).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        accepted.set_nonblocking(true).unwrap();
        let stream = mio::net::TcpStream::from_std(accepted);
        (Connection::new(Transport::plain(stream), 0), client)
    }

    /// Reads until the connection holds `bytes` bytes (polling with a
    /// deadline: each read takes what has arrived so far).
    fn read_until_buffered(connection: &mut Connection, bytes: usize, max_line_bytes: usize) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while connection.input.buffered().len() < bytes {
            assert!(
                std::time::Instant::now() < deadline,
                "{bytes} bytes never fit in the buffer"
            );
            connection.read_once(max_line_bytes).unwrap();
        }
        assert_eq!(connection.input.buffered().len(), bytes);
    }

    /// Sends `stream` in two writes split after `split` bytes, each read and
    /// executed before the next is sent; returns the replies and whether
    /// the connection was closing after the first part and after all of it.
    fn serve_in_two_reads(
        stream: &[u8],
        split: usize,
        max_line_bytes: usize,
    ) -> (Vec<u8>, [bool; 2]) {
        let (mut connection, mut client) = connected_pair();
        let mut node = Node::new(crate::node::NodeConfig::single(1));
        let mut closing = [false; 2];
        for (part, end) in [split, stream.len()].into_iter().enumerate() {
            let start = if part == 0 { 0 } else { split };
            client.write_all(&stream[start..end]).unwrap();
            read_until_buffered(&mut connection, end, max_line_bytes);
            let executed = connection.execute_buffered(
                &mut node,
                max_line_bytes,
                None,
                &ServerFacts::default(),
                &mut RequestCounters::new(),
            );
            assert_eq!(executed, Executed::Requests);
            closing[part] = connection.closing;
            if connection.closing {
                break;
            }
        }
        (
            connection.replies.sendable(node.released()).to_vec(),
            closing,
        )
    }

    /// `GET` of a key that makes the line `line_bytes` long, then `\r\n`.
    fn get_line(line_bytes: usize) -> Vec<u8> {
        format!("GET {}\r\n", "k".repeat(line_bytes - 4)).into_bytes()
    }

    #[test]
    fn a_line_of_exactly_the_limit_is_served_when_its_terminator_is_split() {
        // Above the first read's chunk, the buffer must grow to hold the
        // line and both terminator bytes.
        for limit in [64, 3 * READ_CHUNK_BYTES] {
            let stream = get_line(limit);
            for split in [limit, limit + 1] {
                let (replies, closing) = serve_in_two_reads(&stream, split, limit);
                assert_eq!(replies, b"NOT_FOUND\n", "limit {limit}, split {split}");
                assert_eq!(closing, [false, false], "limit {limit}, split {split}");
            }
        }
    }

    #[test]
    fn a_line_one_over_the_limit_is_refused_when_its_terminator_is_split() {
        let stream = get_line(65);
        let refusal = b"ERR line too long (limit 64 bytes)\n";
        // Refused on the first part: 65 bytes that do not end in \r.
        let (replies, closing) = serve_in_two_reads(&stream, 65, 64);
        assert_eq!((replies.as_slice(), closing), (&refusal[..], [true, false]));
        // 64 bytes could still be a whole line: refused once more arrives.
        let (replies, closing) = serve_in_two_reads(&stream, 64, 64);
        assert_eq!((replies.as_slice(), closing), (&refusal[..], [false, true]));
    }
}
