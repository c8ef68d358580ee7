//! One connection with many requests in flight, for pipe mode: requests
//! are queued in order, written as the socket takes them, and their reply
//! lines handed back in the same order, each with the tag it was queued
//! with.
//!
//! It drives a non-blocking [`Transport`] (plain or TLS, already connected
//! and authenticated by [`super::Client`]) from one `mio` poll, which also
//! wakes on [`WAKER`] when the caller has new input. Reading and writing
//! go on together, so a server that stops reading until its replies are
//! read can never deadlock it. It is bounded: at most
//! [`MAX_IN_FLIGHT_REQUESTS`] requests and [`MAX_IN_FLIGHT_BYTES`] of
//! request bytes in flight, and a reply line of at most
//! [`MAX_LINE_LENGTH`] bytes. It never retries and never interprets a
//! reply.

use std::collections::VecDeque;
use std::io::{self, ErrorKind, Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token, Waker};

use super::MAX_LINE_LENGTH;
use crate::net::Transport;

/// Most requests sent and not yet answered.
pub const MAX_IN_FLIGHT_REQUESTS: usize = 1000;
/// Most bytes of requests sent and not yet answered (one longer request
/// may still go alone).
pub const MAX_IN_FLIGHT_BYTES: usize = 1024 * 1024;
/// The token the caller's [`Waker`] fires.
pub const WAKER: Token = Token(1);

const SOCKET: Token = Token(0);
const READ_CHUNK_BYTES: usize = 64 * 1024;
/// The longest reply, its `\r\n`, and one byte to notice it is too long.
const MAX_REPLY_BYTES: usize = MAX_LINE_LENGTH + 3;

/// Why the connection cannot go on. Every request still in flight may or
/// may not have been applied ([`Pipelined::unanswered`] says which).
#[derive(Debug)]
pub enum Failure {
    /// Reset, closed with requests in flight, or no progress within the
    /// timeout.
    Lost(io::Error),
    /// A reply line longer than [`MAX_LINE_LENGTH`].
    ReplyTooLong,
    /// The reply handler failed (stdout is gone).
    Handler(io::Error),
}

/// A request queued: its tag and its size with its `\n`.
struct InFlight {
    tag: u64,
    bytes: usize,
}

pub struct Pipelined {
    /// `None` while the blocking client has the connection.
    transport: Option<Transport>,
    poll: Poll,
    events: Events,
    /// Kept open here: closing the last handle of a waker's eventfd takes
    /// its event out of the poll, even one already signalled and not yet
    /// collected, so a waker dropped by a thread that has just woken the
    /// poll would lose that wake.
    waker: Arc<Waker>,
    /// Queued request bytes; `unsent[written..]` has not left yet.
    unsent: Vec<u8>,
    written: usize,
    /// Oldest first, as replies come.
    in_flight: VecDeque<InFlight>,
    in_flight_bytes: usize,
    /// Received and not yet handed out.
    input: Vec<u8>,
    /// The server closed its side.
    ended: bool,
    timeout: Duration,
    last_progress: Instant,
}

impl Pipelined {
    /// A poll with no connection yet. `timeout` bounds the wait for
    /// progress while requests are in flight.
    pub fn new(timeout: Duration) -> io::Result<Pipelined> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        Ok(Pipelined {
            transport: None,
            poll,
            events: Events::with_capacity(4),
            waker,
            unsent: Vec::new(),
            written: 0,
            in_flight: VecDeque::new(),
            in_flight_bytes: 0,
            input: Vec::new(),
            ended: false,
            timeout,
            last_progress: Instant::now(),
        })
    }

    /// What interrupts [`Pipelined::wait`] when the caller has more to send.
    pub fn waker(&self) -> Arc<Waker> {
        Arc::clone(&self.waker)
    }

    /// Takes over a connected, authenticated transport with nothing in
    /// flight.
    pub fn attach(&mut self, mut transport: Transport) -> io::Result<()> {
        debug_assert!(self.transport.is_none() && self.is_idle());
        let interest = Interest::READABLE | Interest::WRITABLE;
        self.poll
            .registry()
            .register(transport.socket(), SOCKET, interest)?;
        self.transport = Some(transport);
        self.ended = false;
        Ok(())
    }

    /// Gives the transport back, to hand it to the blocking client. Only
    /// with nothing in flight and no byte received that answers nothing.
    pub fn detach(&mut self) -> io::Result<Transport> {
        assert!(self.is_idle(), "detached with requests in flight");
        let mut transport = self.transport.take().expect("attached");
        self.poll.registry().deregister(transport.socket())?;
        if !self.input.is_empty() {
            let error = io::Error::new(ErrorKind::InvalidData, "bytes that answer no request");
            return Err(error);
        }
        Ok(transport)
    }

    /// Whether one more request may be queued.
    pub fn has_room(&self) -> bool {
        self.in_flight.len() < MAX_IN_FLIGHT_REQUESTS && self.in_flight_bytes < MAX_IN_FLIGHT_BYTES
    }

    /// No request in flight.
    pub fn is_idle(&self) -> bool {
        self.in_flight.is_empty()
    }

    /// The server closed the connection (and every reply it sent was
    /// handed out, if [`Pipelined::is_idle`]).
    pub fn has_ended(&self) -> bool {
        self.ended
    }

    /// Queues `line` (without `\n`) under `tag`; it goes on the next
    /// [`Pipelined::exchange`].
    pub fn queue(&mut self, tag: u64, line: &[u8]) {
        debug_assert!(memchr::memchr(b'\n', line).is_none());
        if self.in_flight.is_empty() {
            self.last_progress = Instant::now();
        }
        self.unsent.extend_from_slice(line);
        self.unsent.push(b'\n');
        self.in_flight.push_back(InFlight {
            tag,
            bytes: line.len() + 1,
        });
        self.in_flight_bytes += line.len() + 1;
    }

    /// The tags of requests in flight: `(maybe applied, never sent)`, each
    /// oldest first. A request partly written counts as maybe applied.
    pub fn unanswered(&self) -> (Vec<u64>, Vec<u64>) {
        let mut unsent_bytes = self.unsent.len() - self.written;
        let mut never_sent = Vec::new();
        for request in self.in_flight.iter().rev() {
            if request.bytes > unsent_bytes {
                break;
            }
            unsent_bytes -= request.bytes;
            never_sent.push(request.tag);
        }
        never_sent.reverse();
        let maybe_applied = self.in_flight.len() - never_sent.len();
        let tags = self
            .in_flight
            .iter()
            .take(maybe_applied)
            .map(|request| request.tag);
        (tags.collect(), never_sent)
    }

    /// Writes what the socket takes, then reads what has arrived, handing
    /// each whole reply to `handle` with its request's tag.
    pub fn exchange(
        &mut self,
        handle: &mut impl FnMut(u64, &[u8]) -> io::Result<()>,
    ) -> Result<(), Failure> {
        if self.transport.is_none() {
            return Ok(());
        }
        self.send().map_err(Failure::Lost)?;
        while !self.ended {
            if !self.receive()? {
                break;
            }
            self.hand_out(handle)?;
        }
        self.hand_out(handle)?;
        if self.ended && !self.in_flight.is_empty() {
            return Err(Failure::Lost(io::Error::new(
                ErrorKind::UnexpectedEof,
                "the server closed the connection",
            )));
        }
        Ok(())
    }

    /// Blocks until the socket or the waker has news. With requests in
    /// flight, no progress for the timeout is a lost connection.
    pub fn wait(&mut self) -> Result<(), Failure> {
        let timeout = if self.in_flight.is_empty() {
            None
        } else {
            let left = self.timeout.saturating_sub(self.last_progress.elapsed());
            if left.is_zero() {
                return Err(Failure::Lost(io::Error::new(
                    ErrorKind::TimedOut,
                    "timed out",
                )));
            }
            Some(left)
        };
        match self.poll.poll(&mut self.events, timeout) {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == ErrorKind::Interrupted => Ok(()),
            Err(error) => Err(Failure::Lost(error)),
        }
    }

    fn send(&mut self) -> io::Result<()> {
        let transport = self.transport.as_mut().expect("attached");
        while self.written < self.unsent.len() {
            match transport.write(&self.unsent[self.written..]) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(count) => {
                    self.written += count;
                    self.last_progress = Instant::now();
                }
                Err(error) if error.kind() == ErrorKind::WouldBlock => break,
                Err(error) if error.kind() == ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
        if self.written == self.unsent.len() {
            self.unsent.clear();
            self.written = 0;
        }
        transport.flush_pending()?;
        Ok(())
    }

    /// One read into the input. `Ok(false)` when nothing more is there now.
    fn receive(&mut self) -> Result<bool, Failure> {
        let filled = self.input.len();
        self.input.resize(filled + READ_CHUNK_BYTES, 0);
        let transport = self.transport.as_mut().expect("attached");
        let read = transport.read(&mut self.input[filled..]);
        let count = match read {
            Ok(0) => {
                self.ended = true;
                0
            }
            Ok(count) => {
                self.last_progress = Instant::now();
                count
            }
            Err(error)
                if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) =>
            {
                self.input.truncate(filled);
                return Ok(error.kind() == ErrorKind::Interrupted);
            }
            Err(error) => {
                self.input.truncate(filled);
                return Err(Failure::Lost(error));
            }
        };
        self.input.truncate(filled + count);
        Ok(!self.ended)
    }

    /// Hands out every whole reply line in the input.
    fn hand_out(
        &mut self,
        handle: &mut impl FnMut(u64, &[u8]) -> io::Result<()>,
    ) -> Result<(), Failure> {
        let mut consumed = 0;
        while let Some(newline) = memchr::memchr(b'\n', &self.input[consumed..]) {
            let line = &self.input[consumed..consumed + newline];
            let reply = line.strip_suffix(b"\r").unwrap_or(line);
            let Some(request) = self.in_flight.pop_front() else {
                let error = io::Error::new(ErrorKind::InvalidData, "a reply to no request");
                return Err(Failure::Lost(error));
            };
            self.in_flight_bytes -= request.bytes;
            handle(request.tag, reply).map_err(Failure::Handler)?;
            consumed += newline + 1;
        }
        self.input.drain(..consumed);
        if self.input.len() >= MAX_REPLY_BYTES {
            return Err(Failure::ReplyTooLong);
        }
        Ok(())
    }
}
