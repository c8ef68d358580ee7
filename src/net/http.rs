//! A small HTTP/1.1 responder for `--metrics-addr`: `GET /metrics` and
//! `GET /health` (and `HEAD` of both), one request per connection, served
//! by the reactor's own loop, never by another thread.
//!
//! A connection goes through [`Phase`]s: read the request head (at most
//! [`MAX_REQUEST_HEAD_BYTES`], nothing past it is needed: no body is
//! accepted), answer it with `Connection: close`, stop sending, read and
//! drop what the client still sends (up to [`MAX_DRAIN_BYTES`]) until it
//! closes, then close. The drain is why a client that sent more than the
//! head (a body, a second request, garbage) still reads the answer: closing
//! a socket with unread bytes resets the connection, and a reset can
//! destroy the answer in the client's buffers before it reads it.
//!
//! Everything is bounded: the head's size, the time a connection may take
//! from accept to close ([`DEADLINE_MS`], enforced by the reactor's timer),
//! the bytes drained, and the connections open at once
//! ([`MAX_CONNECTIONS`]). Any bytes at all get an answer or a close, never
//! a panic: the parser works on bytes and refuses what it does not know
//! with `400 Bad Request`.
//!
//! This module knows HTTP, not metrics: it tells the reactor which
//! resource was asked for ([`Resource`]) and sends back the [`Response`]
//! the reactor makes for it.

use std::io::{self, Read, Write};
use std::net::Shutdown;

use mio::net::TcpStream;

use crate::timer::TimerId;

/// The largest request head read; a longer one is refused.
pub const MAX_REQUEST_HEAD_BYTES: usize = 8 * 1024;
/// A connection is closed this long after its accept, whatever its phase
/// (a scraper's timeout is 10 s by default; an answer takes microseconds).
pub const DEADLINE_MS: u64 = 5_000;
/// Metrics connections open at once; more are answered `503` and closed.
pub const MAX_CONNECTIONS: usize = 16;
/// What is read and dropped after the answer before closing anyway.
pub const MAX_DRAIN_BYTES: usize = 64 * 1024;

/// What a request asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    Metrics,
    Health,
}

/// A parsed request head: a known resource, or the answer it gets without
/// one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// `GET` (or `HEAD`: `head_only`) of a known resource.
    Resource { resource: Resource, head_only: bool },
    /// Answered from the head alone (404, 405, 400).
    Refused(Response),
}

/// An answer: status, type, body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
    /// A `405`'s `Allow` header.
    pub allow: Option<&'static str>,
}

impl Response {
    /// A plain-text answer: `body` and a newline.
    pub fn text(status: u16, body: &str) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: format!("{body}\n"),
            allow: None,
        }
    }

    /// The bytes on the wire; without the body for `HEAD`.
    pub fn encode(&self, head_only: bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.body.len() + 160);
        let _ = write!(
            out,
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n",
            self.status,
            reason_phrase(self.status),
            self.content_type,
            self.body.len()
        );
        if let Some(allow) = self.allow {
            let _ = write!(out, "Allow: {allow}\r\n");
        }
        out.extend_from_slice(b"Connection: close\r\n\r\n");
        if !head_only {
            out.extend_from_slice(self.body.as_bytes());
        }
        out
    }
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// What the head of a request is, once whole: `head` is everything up to
/// and including its blank line.
pub fn parse_head(head: &[u8]) -> Parsed {
    let request_line = head.split(|byte| *byte == b'\n').next().unwrap_or(&[]);
    let request_line = request_line.strip_suffix(b"\r").unwrap_or(request_line);
    let mut parts = request_line.split(|byte| *byte == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return bad_request("malformed request line");
    };
    if method.is_empty() || !method.iter().all(u8::is_ascii_uppercase) {
        return bad_request("malformed method");
    }
    if version != b"HTTP/1.1" && version != b"HTTP/1.0" {
        return bad_request("only HTTP/1.0 and HTTP/1.1 are spoken here");
    }
    if !target.starts_with(b"/") || !target.iter().all(|byte| byte.is_ascii_graphic()) {
        return bad_request("malformed request target");
    }
    if !headers_well_formed(head) {
        return bad_request("malformed header line");
    }
    let path = target.split(|byte| *byte == b'?').next().unwrap_or(target);
    let resource = match path {
        b"/metrics" => Resource::Metrics,
        b"/health" => Resource::Health,
        _ => return Parsed::Refused(Response::text(404, "not found: try /metrics or /health")),
    };
    match method {
        b"GET" => Parsed::Resource {
            resource,
            head_only: false,
        },
        b"HEAD" => Parsed::Resource {
            resource,
            head_only: true,
        },
        _ => Parsed::Refused(Response {
            allow: Some("GET, HEAD"),
            ..Response::text(405, "method not allowed: use GET")
        }),
    }
}

fn bad_request(reason: &str) -> Parsed {
    Parsed::Refused(Response::text(400, &format!("bad request: {reason}")))
}

/// Whether every line after the request line, up to the blank one, is a
/// `name: value` header with a token for a name.
fn headers_well_formed(head: &[u8]) -> bool {
    head.split(|byte| *byte == b'\n')
        .skip(1)
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
        .take_while(|line| !line.is_empty())
        .all(|line| match line.iter().position(|byte| *byte == b':') {
            Some(colon) if colon > 0 => line[..colon]
                .iter()
                .all(|byte| byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(byte)),
            _ => false,
        })
}

/// Where the head ends (one past its blank line), if it has arrived.
fn head_end(buffered: &[u8]) -> Option<usize> {
    let crlf = memchr::memmem::find(buffered, b"\r\n\r\n").map(|at| at + 4);
    let bare = memchr::memmem::find(buffered, b"\n\n").map(|at| at + 2);
    match (crlf, bare) {
        (Some(crlf), Some(bare)) => Some(crlf.min(bare)),
        (found, None) | (None, found) => found,
    }
}

/// Where a connection is in its one exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Reading the request head.
    Reading,
    /// Writing the answer.
    Writing,
    /// Answered and shut down for writing: dropping what still arrives
    /// until the client closes.
    Draining,
    /// Nothing left to do: close it.
    Done,
}

/// One metrics connection.
pub struct HttpConnection {
    stream: TcpStream,
    head: Vec<u8>,
    output: Vec<u8>,
    written: usize,
    drained: usize,
    phase: Phase,
    /// Closes the connection at [`DEADLINE_MS`] after its accept.
    pub deadline: Option<TimerId>,
}

impl HttpConnection {
    pub fn new(stream: TcpStream) -> Self {
        HttpConnection {
            stream,
            head: Vec::new(),
            output: Vec::new(),
            written: 0,
            drained: 0,
            phase: Phase::Reading,
            deadline: None,
        }
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    pub fn stream(&mut self) -> &mut TcpStream {
        &mut self.stream
    }

    /// Reads until the head is whole, the socket is drained, or the head
    /// is too long. Returns what the head asks for once it is whole (or
    /// the refusal of one too long); `None` while more must arrive, or if
    /// the client left ([`Phase::Done`]).
    pub fn read_head(&mut self) -> Option<Parsed> {
        debug_assert_eq!(self.phase, Phase::Reading);
        let mut chunk = [0u8; 2048];
        loop {
            if let Some(end) = head_end(&self.head) {
                return Some(parse_head(&self.head[..end]));
            }
            if self.head.len() >= MAX_REQUEST_HEAD_BYTES {
                let limit = format!("request head over {MAX_REQUEST_HEAD_BYTES} bytes");
                return Some(bad_request(&limit));
            }
            let room = (MAX_REQUEST_HEAD_BYTES - self.head.len()).min(chunk.len());
            match self.stream.read(&mut chunk[..room]) {
                Ok(0) => {
                    self.phase = Phase::Done;
                    return None;
                }
                Ok(count) => self.head.extend_from_slice(&chunk[..count]),
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return None,
                Err(_) => {
                    self.phase = Phase::Done;
                    return None;
                }
            }
        }
    }

    /// Starts sending `response`, then goes on as [`HttpConnection::advance`].
    pub fn respond(&mut self, response: &Response, head_only: bool) {
        self.output = response.encode(head_only);
        self.written = 0;
        self.head = Vec::new();
        self.phase = Phase::Writing;
        self.advance();
    }

    /// Writes what is left of the answer, then drains: as far as the
    /// socket lets it without blocking.
    pub fn advance(&mut self) {
        if self.phase == Phase::Writing {
            self.write_answer();
        }
        if self.phase == Phase::Draining {
            self.drain();
        }
    }

    fn write_answer(&mut self) {
        while self.written < self.output.len() {
            match self.stream.write(&self.output[self.written..]) {
                Ok(0) => return self.phase = Phase::Done,
                Ok(count) => self.written += count,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => return self.phase = Phase::Done,
            }
        }
        self.output = Vec::new();
        // The answer is all sent: the client's read ends here.
        let _ = self.stream.shutdown(Shutdown::Write);
        self.phase = Phase::Draining;
    }

    fn drain(&mut self) {
        let mut chunk = [0u8; 4096];
        loop {
            if self.drained >= MAX_DRAIN_BYTES {
                return self.phase = Phase::Done;
            }
            match self.stream.read(&mut chunk) {
                Ok(0) => return self.phase = Phase::Done,
                Ok(count) => self.drained += count,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => return self.phase = Phase::Done,
            }
        }
    }

    /// Best effort, for a connection about to be closed on its deadline or
    /// for lack of room: `response`, if nothing was answered yet and the
    /// socket takes it at once.
    pub fn answer_and_give_up(&mut self, response: &Response) {
        if self.phase == Phase::Reading {
            let _ = self.stream.write(&response.encode(false));
        }
        self.phase = Phase::Done;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status_of(head: &[u8]) -> u16 {
        match parse_head(head) {
            Parsed::Resource { .. } => 200,
            Parsed::Refused(response) => response.status,
        }
    }

    #[test]
    fn routes_gets_and_heads_of_the_two_resources() {
        let get = parse_head(b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n");
        assert_eq!(
            get,
            Parsed::Resource {
                resource: Resource::Metrics,
                head_only: false
            }
        );
        let head = parse_head(b"HEAD /health?probe=1 HTTP/1.0\n\n");
        assert_eq!(
            head,
            Parsed::Resource {
                resource: Resource::Health,
                head_only: true
            }
        );
    }

    #[test]
    fn other_paths_methods_and_garbage_are_refused() {
        assert_eq!(status_of(b"GET / HTTP/1.1\r\n\r\n"), 404);
        assert_eq!(status_of(b"GET /metricsx HTTP/1.1\r\n\r\n"), 404);
        assert_eq!(status_of(b"POST /metrics HTTP/1.1\r\n\r\n"), 405);
        assert_eq!(status_of(b"DELETE /health HTTP/1.1\r\n\r\n"), 405);
        for garbage in [
            &b"\r\n\r\n"[..],
            b"GET /metrics\r\n\r\n",
            b"GET /metrics HTTP/2.0\r\n\r\n",
            b"GET  /metrics HTTP/1.1\r\n\r\n",
            b"get /metrics HTTP/1.1\r\n\r\n",
            b"GET metrics HTTP/1.1\r\n\r\n",
            b"GET /metrics HTTP/1.1\r\nno colon here\r\n\r\n",
            b"GET /metrics HTTP/1.1\r\n: empty name\r\n\r\n",
            b"GET /\xff HTTP/1.1\r\n\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\n\n",
        ] {
            assert_eq!(
                status_of(garbage),
                400,
                "{:?}",
                String::from_utf8_lossy(garbage)
            );
        }
    }

    #[test]
    fn the_405_says_what_is_allowed() {
        let Parsed::Refused(response) = parse_head(b"PUT /metrics HTTP/1.1\r\n\r\n") else {
            panic!("PUT accepted");
        };
        let wire = String::from_utf8(response.encode(false)).unwrap();
        assert_eq!(
            wire,
            "HTTP/1.1 405 Method Not Allowed\r\nContent-Type: text/plain; charset=utf-8\r\n\
             Content-Length: 28\r\nAllow: GET, HEAD\r\nConnection: close\r\n\r\n\
             method not allowed: use GET\n"
        );
    }

    #[test]
    fn a_head_answer_has_the_length_of_the_body_it_leaves_out() {
        let response = Response::text(200, "ok: leader 3");
        assert_eq!(
            response.encode(true),
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n\
              Content-Length: 13\r\nConnection: close\r\n\r\n"
        );
    }

    #[test]
    fn the_head_ends_at_the_first_blank_line_of_either_kind() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r\nbody"), Some(18));
        assert_eq!(head_end(b"GET / HTTP/1.1\n\nbody"), Some(16));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: x\r\n"), None);
    }

    /// Seeded random bytes, and random mutations of a good head: every
    /// one gets an answer, none panics.
    #[test]
    fn no_bytes_make_the_parser_panic() {
        let good = b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n";
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for round in 0..20_000 {
            let mut bytes: Vec<u8> = if round % 2 == 0 {
                (0..next() % 64).map(|_| next() as u8).collect()
            } else {
                good.to_vec()
            };
            for _ in 0..next() % 4 {
                if !bytes.is_empty() {
                    let at = (next() as usize) % bytes.len();
                    bytes[at] = next() as u8;
                }
            }
            let end = head_end(&bytes).unwrap_or(bytes.len());
            let _ = parse_head(&bytes[..end]);
        }
    }
}
