//! The mio reactor: the only module that touches sockets and files.
//!
//! One thread runs [`Server::run`]: poll, read what arrived, let the core
//! execute it, then end the turn. Ending a turn is where group commit
//! happens: the records of every write executed in the turn go to the log in
//! one write(2) and (with `--fsync always`) one fdatasync, and only then are
//! the replies that depend on them written to their sockets.
//!
//! Readiness from mio is edge-triggered, so a connection whose read filled
//! its buffer, or that was paused by backpressure, is remembered and read
//! again without waiting for a new event. So is one whose client's FIN was
//! reported together with data (a half-close right after the last request):
//! no later event would announce the EOF behind that data.

mod connection;

use std::fmt;
use std::io::{self, Write};
use std::time::{Duration, Instant};

use mio::event::Event;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;

use crate::config::{Config, FsyncPolicy};
use crate::log::LogFile;
use crate::node::Node;
use crate::protocol::{ErrorReply, Reply};
use crate::timer::TimerWheel;
use connection::{Connection, ReadOutcome};

const LISTENER: Token = Token(usize::MAX - 1);
const SIGNALS: Token = Token(usize::MAX - 2);
const EVENT_CAPACITY: usize = 1024;
/// The poll timeout when no timer is armed (and the cap otherwise).
const MAX_POLL_TIMEOUT_MS: u64 = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TimerEvent {
    FsyncInterval,
    IdleCheck { connection: usize },
}

/// Why the server stopped other than by a signal.
#[derive(Debug)]
pub enum ServerError {
    Bind {
        address: std::net::SocketAddr,
        source: io::Error,
    },
    Signals(io::Error),
    Poll(io::Error),
    /// The log could not be written or synced: acknowledging more would lie.
    Log(io::Error),
}

impl fmt::Display for ServerError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerError::Bind { address, source } => {
                write!(formatter, "cannot listen on {address}: {source}")
            }
            ServerError::Signals(source) => {
                write!(formatter, "cannot install signal handlers: {source}")
            }
            ServerError::Poll(source) => write!(formatter, "event loop failed: {source}"),
            ServerError::Log(source) => write!(
                formatter,
                "log write failed: {source}; unacknowledged writes were refused, stopping"
            ),
        }
    }
}

impl std::error::Error for ServerError {}

pub struct Server {
    config: Config,
    poll: Poll,
    listener: Option<TcpListener>,
    signals: Signals,
    connections: Slab<Connection>,
    node: Node,
    log: LogFile,
    timers: TimerWheel<TimerEvent>,
    started: Instant,
    /// Connections with replies to write at the end of this turn.
    flush_queue: Vec<usize>,
    /// Connections to read (or execute) again without a new event.
    read_again: Vec<usize>,
    /// Connections with replies held for an index not yet released.
    waiting: Vec<usize>,
    log_buffer: Vec<u8>,
    /// Bytes written to the log since its last fdatasync.
    log_dirty: bool,
    /// An interval fdatasync failed; the turn's end turns it into a stop.
    sync_failure: Option<io::Error>,
    /// The released index at the last flush of `waiting`.
    flushed_released_index: u64,
    stop_requested: bool,
}

impl Server {
    pub fn bind(config: Config, node: Node, log: LogFile) -> Result<Server, ServerError> {
        let poll = Poll::new().map_err(ServerError::Poll)?;
        let mut listener =
            TcpListener::bind(config.listen).map_err(|source| ServerError::Bind {
                address: config.listen,
                source,
            })?;
        let registry = poll.registry();
        registry
            .register(&mut listener, LISTENER, Interest::READABLE)
            .map_err(ServerError::Poll)?;
        let mut signals = Signals::new([SIGINT, SIGTERM]).map_err(ServerError::Signals)?;
        registry
            .register(&mut signals, SIGNALS, Interest::READABLE)
            .map_err(ServerError::Signals)?;
        let mut timers = TimerWheel::new(0);
        if config.fsync == FsyncPolicy::Interval {
            timers.insert(config.fsync_interval_ms, TimerEvent::FsyncInterval);
        }
        Ok(Server {
            config,
            poll,
            listener: Some(listener),
            signals,
            connections: Slab::new(),
            node,
            log,
            timers,
            started: Instant::now(),
            flush_queue: Vec::new(),
            read_again: Vec::new(),
            waiting: Vec::new(),
            log_buffer: Vec::new(),
            log_dirty: false,
            sync_failure: None,
            flushed_released_index: 0,
            stop_requested: false,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> io::Result<std::net::SocketAddr> {
        match &self.listener {
            Some(listener) => listener.local_addr(),
            None => Err(io::Error::other("listener closed")),
        }
    }

    /// Runs until SIGINT/SIGTERM (then returns Ok after a final fsync) or a
    /// fatal error.
    pub fn run(&mut self) -> Result<(), ServerError> {
        let mut events = Events::with_capacity(EVENT_CAPACITY);
        while !self.stop_requested {
            let timeout = self.poll_timeout();
            match self.poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(ServerError::Poll(error)),
            }
            for event in events.iter() {
                self.dispatch(event);
            }
            self.retry_reads();
            self.fire_timers();
            self.end_turn()?;
        }
        self.shut_down()
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn poll_timeout(&self) -> Duration {
        if !self.read_again.is_empty() {
            return Duration::ZERO;
        }
        let now_ms = self.now_ms();
        let until_ms = self
            .timers
            .next_deadline_ms()
            .map_or(MAX_POLL_TIMEOUT_MS, |deadline_ms| {
                deadline_ms.saturating_sub(now_ms)
            });
        Duration::from_millis(until_ms.min(MAX_POLL_TIMEOUT_MS))
    }

    fn dispatch(&mut self, event: &Event) {
        match event.token() {
            LISTENER => self.accept_all(),
            SIGNALS => self.drain_signals(),
            Token(key) => {
                if event.is_read_closed()
                    && let Some(connection) = self.connections.get_mut(key)
                {
                    connection.note_peer_closed();
                }
                if event.is_writable() {
                    self.queue_flush(key);
                }
                if event.is_readable() || event.is_read_closed() {
                    self.read_and_execute(key);
                }
            }
        }
    }

    fn drain_signals(&mut self) {
        for signal in self.signals.pending() {
            eprintln!("kvstore: received signal {signal}, shutting down");
            self.stop_requested = true;
        }
    }

    fn accept_all(&mut self) {
        loop {
            let Some(listener) = &self.listener else {
                return;
            };
            match listener.accept() {
                Ok((stream, _)) => self.admit(stream),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => {
                    // EMFILE and friends: keep serving the clients we have.
                    eprintln!("kvstore: accept failed: {error}");
                    return;
                }
            }
        }
    }

    fn admit(&mut self, mut stream: TcpStream) {
        if self.connections.len() >= self.config.max_clients {
            let mut refusal = Vec::new();
            Reply::Error(ErrorReply::TooManyClients).encode(&mut refusal);
            // Best effort: the socket is fresh, so its buffer has room.
            let _ = stream.write(&refusal);
            return;
        }
        let _ = stream.set_nodelay(true);
        let now_ms = self.now_ms();
        let entry = self.connections.vacant_entry();
        let key = entry.key();
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(error) = self
            .poll
            .registry()
            .register(&mut stream, Token(key), interest)
        {
            eprintln!("kvstore: cannot register a connection: {error}");
            return;
        }
        let mut connection = Connection::new(stream, now_ms);
        if let Some(idle_ms) = self.config.idle_timeout_ms {
            let event = TimerEvent::IdleCheck { connection: key };
            connection.idle_timer = Some(self.timers.insert(now_ms + idle_ms, event));
        }
        entry.insert(connection);
    }

    /// Executes what is buffered, then one read and the lines it completed.
    /// Remembers the connection for another round if the socket may hold
    /// more, or pauses it if its replies backed up.
    fn read_and_execute(&mut self, key: usize) {
        let now_ms = self.now_ms();
        let max_line_bytes = self.config.max_line_bytes;
        let Some(connection) = self.connections.get_mut(key) else {
            return;
        };
        connection.execute_buffered(&mut self.node, max_line_bytes);
        if connection.wants_read() {
            match connection.read_once(max_line_bytes) {
                Ok(outcome) => {
                    connection.last_active_ms = now_ms;
                    connection.read_closed = outcome == ReadOutcome::Closed;
                    connection.execute_buffered(&mut self.node, max_line_bytes);
                    if outcome == ReadOutcome::MoreMaybe && connection.wants_read() {
                        self.read_again.push(key);
                    }
                }
                Err(_) => return self.close(key),
            }
        }
        let connection = &mut self.connections[key];
        connection.paused = connection.is_backpressured();
        self.queue_flush(key);
    }

    fn retry_reads(&mut self) {
        for key in std::mem::take(&mut self.read_again) {
            self.read_and_execute(key);
        }
    }

    fn queue_flush(&mut self, key: usize) {
        if let Some(connection) = self.connections.get_mut(key)
            && !connection.flush_queued
        {
            connection.flush_queued = true;
            self.flush_queue.push(key);
        }
    }

    fn close(&mut self, key: usize) {
        if !self.connections.contains(key) {
            return;
        }
        let mut connection = self.connections.remove(key);
        if let Some(timer) = connection.idle_timer.take() {
            self.timers.cancel(timer);
        }
        let _ = self.poll.registry().deregister(&mut connection.stream);
    }

    fn fire_timers(&mut self) {
        let now_ms = self.now_ms();
        let mut fired = Vec::new();
        self.timers.expire(now_ms, &mut fired);
        for event in fired {
            match event {
                TimerEvent::FsyncInterval => self.sync_interval(now_ms),
                TimerEvent::IdleCheck { connection } => self.check_idle(connection, now_ms),
            }
        }
    }

    fn sync_interval(&mut self, now_ms: u64) {
        if self.log_dirty {
            match self.log.sync_data() {
                Ok(()) => self.log_dirty = false,
                Err(error) => self.sync_failure = Some(error),
            }
        }
        let deadline_ms = now_ms + self.config.fsync_interval_ms;
        self.timers.insert(deadline_ms, TimerEvent::FsyncInterval);
    }

    fn check_idle(&mut self, key: usize, now_ms: u64) {
        let Some(idle_ms) = self.config.idle_timeout_ms else {
            return;
        };
        let Some(connection) = self.connections.get_mut(key) else {
            return;
        };
        let deadline_ms = connection.last_active_ms + idle_ms;
        if deadline_ms <= now_ms {
            connection.idle_timer = None;
            self.close(key);
        } else {
            let event = TimerEvent::IdleCheck { connection: key };
            connection.idle_timer = Some(self.timers.insert(deadline_ms, event));
        }
    }

    /// Group commit: the records of the turn reach the log in one write and
    /// at most one fdatasync, and only then may the replies that depend on
    /// them be written.
    fn end_turn(&mut self) -> Result<(), ServerError> {
        if let Err(error) = self.commit_log() {
            self.refuse_held_replies();
            return Err(ServerError::Log(error));
        }
        let released_index = self.node.released_index();
        if released_index > self.flushed_released_index {
            self.flushed_released_index = released_index;
            for key in std::mem::take(&mut self.waiting) {
                if let Some(connection) = self.connections.get_mut(key) {
                    connection.waiting = false;
                }
                self.queue_flush(key);
            }
        }
        for key in std::mem::take(&mut self.flush_queue) {
            self.flush_connection(key, released_index);
        }
        Ok(())
    }

    fn commit_log(&mut self) -> io::Result<()> {
        if let Some(error) = self.sync_failure.take() {
            return Err(error);
        }
        let Some(batch) = self.node.take_unwritten(&mut self.log_buffer) else {
            return Ok(());
        };
        let written = self.log.append(&self.log_buffer);
        self.log_buffer.clear();
        written?;
        match self.config.fsync {
            FsyncPolicy::Always => self.log.sync_data()?,
            FsyncPolicy::Interval => self.log_dirty = true,
            FsyncPolicy::Never => {}
        }
        self.node.on_log_released(batch.last_index);
        Ok(())
    }

    fn flush_connection(&mut self, key: usize, released_index: u64) {
        let Some(connection) = self.connections.get_mut(key) else {
            return;
        };
        connection.flush_queued = false;
        let all_sent = match connection.flush(released_index) {
            Ok(all_sent) => all_sent,
            Err(_) => return self.close(key),
        };
        if all_sent && connection.closing {
            return self.close(key);
        }
        if connection.paused && !connection.is_backpressured() {
            connection.paused = false;
            self.read_again.push(key);
        }
        if connection.replies.has_holds() && !connection.waiting {
            connection.waiting = true;
            self.waiting.push(key);
        }
    }

    /// The log failed: no held reply may leave. Each client with one gets
    /// an ERR instead, best effort, before the server stops.
    fn refuse_held_replies(&mut self) {
        for (_, connection) in self.connections.iter_mut() {
            if connection.replies.discard_held() {
                connection
                    .replies
                    .push(Reply::Error(ErrorReply::LogFailed), 0, 0);
            }
            let _ = connection.flush(0);
        }
    }

    /// SIGINT/SIGTERM: stop accepting, make the log durable, send the
    /// replies that are now releasable, and return.
    fn shut_down(&mut self) -> Result<(), ServerError> {
        if let Some(mut listener) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut listener);
        }
        self.config.fsync = FsyncPolicy::Always;
        self.end_turn()?;
        if self.log_dirty {
            self.log.sync_data().map_err(ServerError::Log)?;
        }
        eprintln!(
            "kvstore: log synced at index {}, {} connections closed, bye",
            self.node.released_index(),
            self.connections.len()
        );
        Ok(())
    }
}
