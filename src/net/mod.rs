//! The mio reactor: the only module that touches sockets and files.
//!
//! One thread runs [`Server::run`]: poll, read what arrived, hand it to the
//! core, then end the turn. The turn's end is where the core's outputs become
//! I/O, in the order its safety argument needs (see `node`): persist the
//! promised epoch, send peer messages, write and fdatasync the turn's log
//! records in one write and one sync (group commit), send what durability
//! produced, and only then write the client replies the core released.
//!
//! Readiness from mio is edge-triggered, so a client whose read filled its
//! buffer, or that was paused by backpressure, is remembered and read again
//! without waiting for a new event. So is one whose FIN was reported together
//! with data (a half-close right after the last request): no later event
//! would announce the EOF behind that data.
//!
//! With `--metrics-addr`, a second listener on the same loop serves
//! `/metrics` and `/health` over HTTP (`http`, `metrics_port`): one short
//! exchange per connection, bounded in size, time and number, read from
//! the same counters as `INFO` (`metrics`, `exposition`).

mod connection;
pub mod descriptor_budget;
mod descriptors;
mod exposition;
mod housekeeping;
mod http;
mod metrics;
mod metrics_port;
mod peer;
mod peer_health;
mod peering;
mod prometheus;
mod read_buffer;
mod snapshotter;
mod syncer;
mod throttle;
mod transport;

pub use read_buffer::{READ_CHUNK_BYTES, ReadBuffer, ReadOutcome};
pub use transport::Transport;

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::event::Event;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;

use crate::config::{Config, FsyncPolicy};
use crate::log::{Base, Log, store_epoch};
use crate::node::message::Envelope;
use crate::node::{
    Gate, LogRead, LogWriteOutcome, Node, SnapshotRead, SnapshotWritten, Step, TimerKind,
};
use crate::protocol::{ErrorReply, Reply};
use crate::security::handshake::{HANDSHAKE_TIMEOUT_MS, Hello};
use crate::security::password::WRONG_PASSWORD_DELAY_MS;
use crate::security::settings::Settings;
use crate::snapshot;
use crate::timer::{TimerId, TimerWheel};
use connection::{Connection, Executed, FirstByte};
use peer::{InboundPeer, OutboundLink, PendingPeer};
use snapshotter::{Report, Snapshotter};
use syncer::Syncer;

const LISTENER: Token = Token(usize::MAX - 1);
const SIGNALS: Token = Token(usize::MAX - 2);
/// The syncer or the snapshotter has something to report.
const HELPER_THREADS: Token = Token(usize::MAX - 3);
const METRICS_LISTENER: Token = Token(usize::MAX - 5);
/// Metrics connections take the tokens from here on, one per slot of
/// their own table (far from the endpoints' tokens, which count up from 0).
const FIRST_METRICS_TOKEN: usize = usize::MAX / 2;
const EVENT_CAPACITY: usize = 1024;
/// The poll timeout when no timer is armed (and the cap otherwise).
const MAX_POLL_TIMEOUT_MS: u64 = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TimerEvent {
    FsyncInterval,
    /// Check every client connection's request and idle deadlines.
    Sweep,
    Reconnect {
        link: usize,
    },
    /// A dial, a pending peer or a peer-only client must have finished its
    /// handshake by now.
    HandshakeDeadline {
        endpoint: usize,
    },
    /// A wrong password's delay is over.
    WrongPassword {
        endpoint: usize,
    },
    /// Accepting failed and no new connection may announce itself: try
    /// again (see `descriptors`).
    AcceptRetry,
    /// A metrics connection's time is up (see `http`).
    MetricsDeadline {
        connection: usize,
    },
    Node(TimerKind),
}

/// Why the server stopped other than by a signal.
#[derive(Debug)]
pub enum ServerError {
    Bind {
        address: SocketAddr,
        source: io::Error,
    },
    /// `--metrics-addr` could not be bound.
    MetricsBind {
        address: SocketAddr,
        source: io::Error,
    },
    Signals(io::Error),
    Poll(io::Error),
    /// The log could not be written or synced: acknowledging more would lie.
    Log(io::Error),
    /// The promised epoch could not be persisted: promising more would lie.
    Epoch(io::Error),
}

impl fmt::Display for ServerError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerError::Bind { address, source } => {
                write!(formatter, "cannot listen on {address}: {source}")
            }
            ServerError::MetricsBind { address, source } => {
                write!(
                    formatter,
                    "cannot serve metrics on {address} (--metrics-addr): {source}"
                )
            }
            ServerError::Signals(source) => {
                write!(formatter, "cannot install signal handlers: {source}")
            }
            ServerError::Poll(source) => write!(formatter, "event loop failed: {source}"),
            ServerError::Log(source) => write!(
                formatter,
                "log write failed: {source}; unacknowledged writes were refused, stopping"
            ),
            ServerError::Epoch(source) => {
                write!(
                    formatter,
                    "cannot persist the promised epoch: {source}; stopping"
                )
            }
        }
    }
}

impl std::error::Error for ServerError {}

/// Everything with a socket, keyed by its mio token.
enum Endpoint {
    Client(Connection),
    /// Sent a peer's first handshake line; its proof is awaited.
    PendingPeer(PendingPeer),
    Inbound(InboundPeer),
    Outbound {
        link: usize,
        connection: OutboundLink,
    },
}

pub struct Server {
    config: Config,
    poll: Poll,
    listener: Option<TcpListener>,
    signals: Signals,
    endpoints: Slab<Endpoint>,
    /// Client connections, counted against `--max-clients`.
    clients: usize,
    /// Connections admitted beyond `--max-clients` because they may be a
    /// configured peer's (see `peering`).
    peer_only: usize,
    /// The cluster key and the client password.
    settings: Settings,
    links: Vec<peer::Link>,
    own_hello: Hello,
    node: Node,
    log: Log,
    /// Scratch for reads of the log the core asks for.
    read_buffer: Vec<u8>,
    /// fdatasync off the loop thread, for `--fsync always`.
    syncer: Syncer,
    /// Writes snapshot files off the loop thread.
    snapshotter: Snapshotter,
    /// Open snapshot files, for sending to nodes that lag: the newest and
    /// the one before (a transfer of it may still be under way).
    snapshot_files: BTreeMap<u64, File>,
    /// Clients whose `SNAPSHOT` waits for its outcome.
    snapshot_waiters: Vec<usize>,
    timers: TimerWheel<TimerEvent>,
    node_timers: [Option<TimerId>; 2],
    started: Instant,
    /// Read once: getpid(2) is a system call.
    process_id: u32,
    /// Clients with replies to write at the end of this turn.
    flush_queue: Vec<usize>,
    /// Clients to read (or execute) again without a new event.
    read_again: Vec<usize>,
    /// Clients with replies held behind a gate not yet released.
    waiting: Vec<usize>,
    /// Peer connections with bytes to write at the end of this turn.
    peer_flush_queue: Vec<usize>,
    /// Scratch for decoded peer frames.
    frames: Vec<Envelope>,
    /// Bytes written to the log since its last fdatasync.
    log_dirty: bool,
    /// An interval fdatasync failed; the turn's end turns it into a stop.
    sync_failure: Option<io::Error>,
    /// The gate at the last flush of `waiting`.
    flushed_gate: Gate,
    /// Refused peer frames, logged at most once a second.
    invalid_frame_log: throttle::Throttle,
    /// What all client connections' buffers hold (`housekeeping`).
    client_buffer_bytes: usize,
    /// Connections closed for the client buffer budget, logged likewise.
    budget_log: throttle::Throttle,
    /// Refused or failed peer handshakes, likewise.
    handshake_log: throttle::Throttle,
    /// Plaintext connections to a TLS port, likewise.
    tls_log: throttle::Throttle,
    /// Wrong passwords, likewise; and how many there were.
    wrong_password_log: throttle::Throttle,
    wrong_passwords: u64,
    /// The spare descriptor that lets a connection be refused when none
    /// are left, and retries of accept.
    descriptors: descriptors::Descriptors,
    stop_requested: bool,
    /// What the reactor counts: the one source of `INFO` and `/metrics`.
    metrics: metrics::Metrics,
    /// The `--metrics-addr` listener and its connections (`metrics_port`).
    metrics_listener: Option<TcpListener>,
    metrics_connections: Slab<http::HttpConnection>,
    /// Cross-protocol (HTTP) connections closed, logged at most once a second.
    cross_protocol_log: throttle::Throttle,
    /// Inbound peer connections dropped for a protocol error, likewise.
    inbound_log: throttle::Throttle,
    /// Connections refused at `--max-clients`, likewise.
    max_clients_log: throttle::Throttle,
    /// Clients closed at `--request-timeout-ms`, likewise; and how many.
    request_timeout_log: throttle::Throttle,
    request_timeouts: u64,
}

impl Server {
    pub fn bind(
        config: Config,
        settings: Settings,
        node: Node,
        log: Log,
    ) -> Result<Server, ServerError> {
        let poll = Poll::new().map_err(ServerError::Poll)?;
        let bind_error = |source| ServerError::Bind {
            address: config.listen,
            source,
        };
        let mut listener = TcpListener::bind(config.listen).map_err(bind_error)?;
        let listen = listener.local_addr().map_err(bind_error)?;
        let registry = poll.registry();
        registry
            .register(&mut listener, LISTENER, Interest::READABLE)
            .map_err(ServerError::Poll)?;
        let mut signals = Signals::new([SIGINT, SIGTERM]).map_err(ServerError::Signals)?;
        registry
            .register(&mut signals, SIGNALS, Interest::READABLE)
            .map_err(ServerError::Signals)?;
        let metrics_listener = match config.metrics_addr {
            Some(address) => Some(metrics_port::bind(registry, address, METRICS_LISTENER)?),
            None => None,
        };
        // One waker for both helper threads: mio allows one per Poll (debug
        // builds assert it); a wake-up checks both, which costs two
        // try_recv calls.
        let waker = Arc::new(Waker::new(registry, HELPER_THREADS).map_err(ServerError::Poll)?);
        let syncer = Syncer::spawn(Arc::clone(&waker)).map_err(ServerError::Log)?;
        let snapshotter =
            Snapshotter::spawn(config.data_dir.clone(), waker).map_err(ServerError::Log)?;
        let links = config
            .peers
            .iter()
            .map(|address| peer::Link::new(*address))
            .collect();
        let own_hello = Hello {
            id: config.id,
            address: listen,
        };
        let mut node = node;
        node.set_client_address(listen);
        Ok(Server {
            config,
            poll,
            listener: Some(listener),
            signals,
            endpoints: Slab::new(),
            clients: 0,
            peer_only: 0,
            settings,
            links,
            own_hello,
            node,
            log,
            read_buffer: Vec::new(),
            syncer,
            snapshotter,
            snapshot_files: BTreeMap::new(),
            snapshot_waiters: Vec::new(),
            timers: TimerWheel::new(0),
            node_timers: [None, None],
            started: Instant::now(),
            process_id: std::process::id(),
            flush_queue: Vec::new(),
            read_again: Vec::new(),
            waiting: Vec::new(),
            peer_flush_queue: Vec::new(),
            frames: Vec::new(),
            log_dirty: false,
            sync_failure: None,
            flushed_gate: Gate::OPEN,
            invalid_frame_log: throttle::Throttle::default(),
            client_buffer_bytes: 0,
            budget_log: throttle::Throttle::default(),
            handshake_log: throttle::Throttle::default(),
            tls_log: throttle::Throttle::default(),
            wrong_password_log: throttle::Throttle::default(),
            wrong_passwords: 0,
            descriptors: descriptors::Descriptors::open(),
            stop_requested: false,
            metrics: metrics::Metrics::new(),
            metrics_listener,
            metrics_connections: Slab::new(),
            cross_protocol_log: throttle::Throttle::default(),
            inbound_log: throttle::Throttle::default(),
            max_clients_log: throttle::Throttle::default(),
            request_timeout_log: throttle::Throttle::default(),
            request_timeouts: 0,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.own_hello.address
    }

    /// Where `/metrics` and `/health` are served, if anywhere (the port
    /// actually bound).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        let listener = self.metrics_listener.as_ref()?;
        listener.local_addr().ok()
    }

    /// Runs until SIGINT/SIGTERM (then returns Ok after a final fsync) or a
    /// fatal error.
    pub fn run(&mut self) -> Result<(), ServerError> {
        if self.config.fsync == FsyncPolicy::Interval {
            let deadline_ms = self.config.fsync_interval_ms;
            self.timers.insert(deadline_ms, TimerEvent::FsyncInterval);
        }
        for link in 0..self.links.len() {
            self.dial(link);
        }
        let first_sweep_ms = self.sweep_interval_ms();
        self.timers.insert(first_sweep_ms, TimerEvent::Sweep);
        self.node.start(self.now_ms());
        self.end_turn()?;
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
            self.enforce_client_budget();
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
            HELPER_THREADS => {
                self.collect_syncs();
                self.collect_snapshot_reports();
            }
            METRICS_LISTENER => self.accept_metrics_connections(),
            Token(token) if token >= FIRST_METRICS_TOKEN => {
                self.service_metrics_connection(token - FIRST_METRICS_TOKEN)
            }
            Token(key) => match self.endpoints.get_mut(key) {
                Some(Endpoint::Client(connection)) => {
                    if event.is_read_closed() {
                        connection.note_peer_closed();
                    }
                    if event.is_writable() {
                        self.queue_flush(key);
                    }
                    if event.is_readable() || event.is_read_closed() {
                        self.read_and_execute(key);
                    }
                }
                Some(Endpoint::PendingPeer(_)) => self.service_pending(key),
                Some(Endpoint::Inbound(_)) => self.service_inbound(key),
                Some(Endpoint::Outbound { .. }) => self.service_outbound(key, event.is_writable()),
                None => {}
            },
        }
    }

    fn drain_signals(&mut self) {
        for signal in self.signals.pending() {
            crate::log_info!("received signal {signal}, shutting down");
            self.stop_requested = true;
        }
    }

    fn accept_all(&mut self) {
        loop {
            let Some(listener) = &self.listener else {
                return;
            };
            match listener.accept() {
                Ok((stream, remote)) => {
                    self.metrics.connections_accepted += 1;
                    self.admit(stream, remote)
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => {
                    if !self.accept_failed(error) {
                        return;
                    }
                }
            }
        }
    }

    /// A new connection is a client, up to `--max-clients`. Past that it
    /// is refused, unless it comes from a configured peer's address and a
    /// peer-only slot is free: a peer must always be able to get in (a
    /// cluster whose followers are full of idle clients could otherwise not
    /// elect a leader).
    fn admit(&mut self, mut stream: TcpStream, remote: SocketAddr) {
        let peer_only = self.clients >= self.config.max_clients;
        let peer_only_slots = self.links.len() * peering::PEER_ONLY_SLOTS_PER_PEER;
        if peer_only && (self.peer_only >= peer_only_slots || !self.may_be_peer(remote)) {
            self.metrics.connections_rejected += 1;
            let mut refusal = Vec::new();
            Reply::Error(ErrorReply::TooManyClients).encode(&mut refusal);
            // Best effort: the socket is fresh, so its buffer has room.
            let _ = stream.write(&refusal);
            self.log_max_clients(Some(remote));
            return;
        }
        let _ = stream.set_nodelay(true);
        let now_ms = self.now_ms();
        let entry = self.endpoints.vacant_entry();
        let key = entry.key();
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(error) = self
            .poll
            .registry()
            .register(&mut stream, Token(key), interest)
        {
            crate::log_warn!("cannot register a connection: {error}");
            return;
        }
        let transport = match &self.settings.tls {
            Some(tls) => match Transport::tls_server(stream, Arc::clone(&tls.server)) {
                Ok(transport) => transport,
                Err(error) => {
                    crate::log_warn!("cannot start TLS on a connection: {error}");
                    return;
                }
            },
            None => Transport::plain(stream),
        };
        let mut connection = Connection::new(transport, now_ms);
        connection.authenticated = self.settings.password.is_none();
        connection.peer_only = peer_only;
        if peer_only {
            let event = TimerEvent::HandshakeDeadline { endpoint: key };
            self.timers.insert(now_ms + HANDSHAKE_TIMEOUT_MS, event);
        }
        entry.insert(Endpoint::Client(connection));
        self.hold_slot(peer_only);
        self.account_client(key);
    }

    fn client(&mut self, key: usize) -> Option<&mut Connection> {
        match self.endpoints.get_mut(key) {
            Some(Endpoint::Client(connection)) => Some(connection),
            _ => None,
        }
    }

    /// Executes what is buffered, then one read and the lines it completed.
    /// Remembers the connection for another round if the socket may hold
    /// more, or pauses it if its replies backed up.
    fn read_and_execute(&mut self, key: usize) {
        let now_ms = self.now_ms();
        let max_line_bytes = self.config.max_line_bytes;
        let password = self.settings.password.as_ref();
        let Some(Endpoint::Client(connection)) = self.endpoints.get_mut(key) else {
            return;
        };
        match connection.check_first_byte() {
            FirstByte::Checked => {}
            FirstByte::NotYet => return,
            FirstByte::Closed => return self.close(key),
            FirstByte::Plaintext => return self.refuse_plaintext(key),
        }
        let requests_before = connection.requests_executed();
        let facts = exposition::facts(
            &self.config,
            self.process_id,
            self.own_hello.address.port(),
            &self.metrics,
            &self.log,
            self.clients,
            self.client_buffer_bytes,
            now_ms,
        );
        let requests = &mut self.metrics.requests;
        let mut executed =
            connection.execute_buffered(&mut self.node, max_line_bytes, password, &facts, requests);
        if executed == Executed::Requests && connection.wants_read() {
            match connection.read_once(max_line_bytes) {
                Ok(outcome) => {
                    connection.read_closed = outcome == ReadOutcome::Closed;
                    executed = connection.execute_buffered(
                        &mut self.node,
                        max_line_bytes,
                        password,
                        &facts,
                        requests,
                    );
                    if outcome == ReadOutcome::MoreMaybe && connection.wants_read() {
                        self.read_again.push(key);
                    }
                }
                Err(_) => return self.close(key),
            }
        }
        match executed {
            Executed::Requests => {}
            Executed::PeerHandshake(line) => return self.begin_inbound_handshake(key, &line),
            Executed::WrongPassword => self.delay_wrong_password(key, now_ms),
            Executed::CrossProtocol => return self.close_cross_protocol(key),
        }
        let Some(Endpoint::Client(connection)) = self.endpoints.get_mut(key) else {
            return;
        };
        let progressed = connection.requests_executed() != requests_before;
        connection.note_progress(now_ms, progressed);
        if connection.awaiting_snapshot.is_some() && !self.snapshot_waiters.contains(&key) {
            self.snapshot_waiters.push(key);
        }
        connection.paused = connection.is_backpressured();
        self.queue_flush(key);
        self.account_client(key);
    }

    /// Logs (at most once a second) that a connection was refused at
    /// `--max-clients`, with how many have been.
    pub(super) fn log_max_clients(&mut self, remote: Option<SocketAddr>) {
        let now_ms = self.now_ms();
        let Some(suppressed) = self.max_clients_log.admit(now_ms) else {
            return;
        };
        let (max_clients, rejected) = (self.config.max_clients, self.metrics.connections_rejected);
        let from = remote.map_or("an unknown address".to_string(), |remote| {
            remote.to_string()
        });
        let fields = [
            ("max_clients", crate::logger::Value::U64(max_clients as u64)),
            ("rejected", crate::logger::Value::U64(rejected)),
        ];
        crate::logger::log_event(
            crate::logger::Level::Warn,
            Some("max_clients_reached"),
            &format_args!(
                "refused a connection from {from}: --max-clients {max_clients} reached \
                 ({rejected} refused so far){}",
                throttle::suppressed_note(suppressed)
            ),
            &fields,
        );
    }

    /// A connection that spoke HTTP to the line protocol: closed at once,
    /// nothing executed, logged (as Redis logs "Possible SECURITY ATTACK").
    fn close_cross_protocol(&mut self, key: usize) {
        let now_ms = self.now_ms();
        if let Some(suppressed) = self.cross_protocol_log.admit(now_ms) {
            crate::log_warn!(
                "possible security attack: a client sent an HTTP request to the key-value \
                 port; connection closed, nothing executed{}",
                throttle::suppressed_note(suppressed)
            );
        }
        self.close(key);
    }

    fn retry_reads(&mut self) {
        for key in std::mem::take(&mut self.read_again) {
            self.read_and_execute(key);
        }
    }

    fn queue_flush(&mut self, key: usize) {
        if let Some(connection) = self.client(key)
            && !connection.flush_queued
        {
            connection.flush_queued = true;
            self.flush_queue.push(key);
        }
    }

    /// A connection that did not start with TLS on a TLS port: told so in
    /// plain text (RESP's form if it spoke RESP), logged at most once a
    /// second, and closed.
    fn refuse_plaintext(&mut self, key: usize) {
        let now_ms = self.now_ms();
        let Some(connection) = self.client(key) else {
            return;
        };
        let remote = connection.transport.socket().peer_addr().ok();
        connection.refuse_plaintext();
        if let Some(suppressed) = self.tls_log.admit(now_ms) {
            crate::log_warn!(
                "refused a plaintext connection from {}: this port requires TLS{}",
                remote.map_or("an unknown address".to_string(), |remote| remote
                    .to_string()),
                throttle::suppressed_note(suppressed)
            );
        }
        self.close(key);
    }

    /// A wrong password: its reply waits out `WRONG_PASSWORD_DELAY_MS`
    /// (so one connection tries at most ten a second), and is counted and
    /// logged (at most once a second) with the client's address.
    fn delay_wrong_password(&mut self, key: usize, now_ms: u64) {
        self.wrong_passwords += 1;
        let Some(connection) = self.client(key) else {
            return;
        };
        let remote = connection.transport.socket().peer_addr().ok();
        let event = TimerEvent::WrongPassword { endpoint: key };
        let timer = self.timers.insert(now_ms + WRONG_PASSWORD_DELAY_MS, event);
        if let Some(connection) = self.client(key) {
            connection.wrong_password_timer = Some(timer);
        }
        if let Some(suppressed) = self.wrong_password_log.admit(now_ms) {
            crate::log_warn!(
                "wrong password from {} ({} so far){}",
                remote.map_or("an unknown address".to_string(), |remote| remote
                    .to_string()),
                self.wrong_passwords,
                throttle::suppressed_note(suppressed)
            );
        }
    }

    /// The delay of a wrong password at `key` is over: the reply goes out
    /// and the connection goes on.
    fn release_wrong_password(&mut self, key: usize) {
        let released = self.node.released();
        if let Some(connection) = self.client(key) {
            connection.release_wrong_password(released);
            self.read_again.push(key);
            self.queue_flush(key);
        }
    }

    /// Counts a connection slot taken: a client's, or a peer-only one.
    fn hold_slot(&mut self, peer_only: bool) {
        if peer_only {
            self.peer_only += 1;
        } else {
            self.clients += 1;
        }
    }

    /// Counts a connection slot freed.
    fn release_slot(&mut self, peer_only: bool) {
        if peer_only {
            self.peer_only -= 1;
        } else {
            self.clients -= 1;
        }
    }

    /// Takes a client's endpoint out of the table: its timers cancelled and
    /// its slot counted free; the socket stays registered.
    fn forget_client(&mut self, key: usize) -> Option<Endpoint> {
        let Some(Endpoint::Client(mut connection)) = self.endpoints.try_remove(key) else {
            return None;
        };
        self.release_slot(connection.peer_only);
        self.client_buffer_bytes -= connection.accounted_bytes;
        if let Some(timer) = connection.wrong_password_timer.take() {
            self.timers.cancel(timer);
        }
        Some(Endpoint::Client(connection))
    }

    fn close(&mut self, key: usize) {
        if !self.endpoints.contains(key) {
            return;
        }
        if matches!(self.endpoints[key], Endpoint::Client(_)) {
            if let Some(Endpoint::Client(mut connection)) = self.forget_client(key) {
                // A TLS client learns the close was meant (best effort).
                if connection.transport.is_tls() && !connection.transport.is_handshaking() {
                    let _ = connection.transport.send_close_notify();
                }
                let _ = self
                    .poll
                    .registry()
                    .deregister(connection.transport.socket());
            }
            return;
        }
        match self.endpoints.remove(key) {
            Endpoint::Client(_) => unreachable!("closed just above"),
            Endpoint::PendingPeer(mut pending) => {
                self.release_slot(pending.peer_only);
                let _ = self.poll.registry().deregister(pending.transport.socket());
            }
            Endpoint::Inbound(mut inbound) => {
                let _ = self.poll.registry().deregister(inbound.transport.socket());
            }
            Endpoint::Outbound {
                link,
                mut connection,
            } => {
                let _ = self
                    .poll
                    .registry()
                    .deregister(connection.transport.socket());
                self.link_lost(link, connection.state);
            }
        }
    }

    fn fire_timers(&mut self) {
        let now_ms = self.now_ms();
        let mut fired = Vec::new();
        self.timers.expire(now_ms, &mut fired);
        for event in fired {
            match event {
                TimerEvent::FsyncInterval => self.sync_interval(now_ms),
                TimerEvent::Sweep => self.sweep(now_ms),
                TimerEvent::HandshakeDeadline { endpoint } => {
                    self.check_handshake_deadline(endpoint, now_ms)
                }
                TimerEvent::WrongPassword { endpoint } => self.release_wrong_password(endpoint),
                TimerEvent::AcceptRetry => self.retry_accept(),
                TimerEvent::MetricsDeadline { connection } => {
                    self.metrics_connection_timed_out(connection)
                }
                TimerEvent::Reconnect { link } => {
                    if self.links[link].endpoint.is_none() && !self.stop_requested {
                        self.dial(link);
                    }
                }
                TimerEvent::Node(kind) => {
                    self.node_timers[kind as usize] = None;
                    self.node.on_timer(kind, now_ms);
                }
            }
        }
    }

    fn sync_interval(&mut self, now_ms: u64) {
        if self.log_dirty {
            let synced = match self.log.take_sync_job() {
                Some(job) => self.run_sync_job_here(&job),
                None => Ok(()),
            };
            match synced {
                Ok(()) => self.log_dirty = false,
                Err(error) => self.sync_failure = Some(error),
            }
        }
        let deadline_ms = now_ms + self.config.fsync_interval_ms;
        self.timers.insert(deadline_ms, TimerEvent::FsyncInterval);
    }

    /// Runs a sync job on the loop thread (`--fsync interval`), timed.
    fn run_sync_job_here(&mut self, job: &crate::log::SyncJob) -> io::Result<()> {
        let started = Instant::now();
        job.run()?;
        let duration = started.elapsed();
        self.metrics.log_synced(duration);
        syncer::warn_if_slow(duration, self.log.last_index());
        Ok(())
    }

    /// The end of a turn: carry out the core's steps in the order it hands
    /// them out (`node::turn`), which is the order its safety argument needs.
    fn end_turn(&mut self) -> Result<(), ServerError> {
        if let Some(error) = self.sync_failure.take() {
            // Everything written may be in the file (or its page cache).
            self.refuse_after_log_failure(self.log.last_index());
            return Err(ServerError::Log(error));
        }
        while let Some(step) = self.node.next_step() {
            match step {
                Step::Event(event) => log_core_event(&event),
                Step::PersistEpoch(epoch) => {
                    store_epoch(&self.config.data_dir, epoch).map_err(ServerError::Epoch)?;
                }
                Step::ReadLog(read) => self.read_log_for_core(read)?,
                Step::ReadSnapshot(read) => self.read_snapshot_for_core(read),
                Step::ArmTimers(timers) => self.arm_node_timers(timers),
                Step::Send(messages) => {
                    for (to, envelope) in &messages {
                        self.send_to_peer(*to, envelope);
                    }
                    self.flush_peers();
                }
                Step::WriteLog => match self.write_log() {
                    Ok(outcome) => self.node.log_write_done(outcome),
                    Err(error) => {
                        let in_file_through = self.records_possibly_written(&error);
                        self.refuse_after_log_failure(in_file_through);
                        return Err(ServerError::Log(error));
                    }
                },
                Step::VoidHeldReplies => self.refuse_held_replies(|_| ErrorReply::LeadershipLost),
                Step::Release(released) => self.release_replies(released),
                Step::BeginSnapshot { index, .. } => self.snapshotter.begin(index),
                Step::WriteSnapshot(bytes) => self.snapshotter.write(bytes),
                Step::FinishSnapshot(_) => self.snapshotter.finish(),
                Step::AbortSnapshot => self.snapshotter.abort(),
                Step::CompactLog(through) => self.compact_log(through)?,
            }
        }
        self.answer_snapshot_waiters();
        let (sent, confirmed) = (self.node.sent_read_round(), self.node.released().round);
        self.metrics
            .note_read_rounds(sent, confirmed, Instant::now());
        Ok(())
    }

    /// Reads part of a snapshot file for a node that lags.
    fn read_snapshot_for_core(&mut self, read: SnapshotRead) {
        if read.offset > 0 {
            crate::failpoint::reached("snapshot-send");
        }
        let mut buffer = std::mem::take(&mut self.read_buffer);
        let read_ok = self.snapshot_file(read.index).is_some_and(|file| {
            buffer.resize(read.max_bytes, 0);
            match file.read_at(&mut buffer, read.offset) {
                Ok(count) => {
                    buffer.truncate(count);
                    true
                }
                Err(error) => {
                    crate::log_warn!("cannot read snapshot {}: {error}", read.index);
                    false
                }
            }
        });
        self.node
            .on_snapshot_read(read, read_ok.then_some(buffer.as_slice()));
        self.read_buffer = buffer;
    }

    /// The open file of snapshot `index`, opening it if it is the one on
    /// disk (after a restart).
    fn snapshot_file(&mut self, index: u64) -> Option<&File> {
        if !self.snapshot_files.contains_key(&index) {
            let path = self.config.data_dir.join(snapshot::file_name(index));
            let file = File::open(path).ok()?;
            self.keep_snapshot_file(index, file);
        }
        self.snapshot_files.get(&index)
    }

    /// Keeps `file` open as snapshot `index`, and closes all but the two
    /// newest (on the snapshotter: closing the last descriptor of a deleted
    /// file frees its blocks).
    fn keep_snapshot_file(&mut self, index: u64, file: File) {
        self.snapshot_files.insert(index, file);
        while self.snapshot_files.len() > 2 {
            if let Some((_, old)) = self.snapshot_files.pop_first() {
                self.snapshotter.close(old);
            }
        }
    }

    /// Removes the log segments the newest snapshot covers: out of the
    /// log here, their files deleted by the snapshotter (freeing the blocks
    /// of a large file takes milliseconds).
    fn compact_log(&mut self, through: u64) -> Result<(), ServerError> {
        crate::failpoint::reached("compact-log");
        for path in self.log.detach_through(through) {
            self.snapshotter.remove(path);
        }
        Ok(())
    }

    /// The snapshotter wrote, published or gave up: tell the core.
    fn collect_snapshot_reports(&mut self) {
        loop {
            match self.snapshotter.next_report() {
                Ok(Some(Report::Written(bytes))) => self.node.on_snapshot_written(bytes),
                Ok(Some(Report::Published {
                    index,
                    file_bytes,
                    elapsed_ms,
                })) => {
                    // The core logs it (it knows whose snapshot it is).
                    let path = self.config.data_dir.join(snapshot::file_name(index));
                    if let Ok(file) = File::open(path) {
                        self.keep_snapshot_file(index, file);
                    }
                    let written = SnapshotWritten {
                        file_bytes,
                        elapsed_ms,
                    };
                    self.node.on_snapshot_done(Ok(written));
                }
                Ok(Some(Report::Failed { index, error })) => {
                    crate::log_error!(
                        "snapshot at index {index} failed and was abandoned: {error}; \
                         the log keeps every write and the server goes on"
                    );
                    self.node.on_snapshot_done(Err(error.to_string()));
                }
                Ok(None) => return,
                Err(error) => {
                    self.sync_failure = Some(error);
                    return;
                }
            }
        }
    }

    /// Queues the reply of every `SNAPSHOT` whose outcome is known, and
    /// lets those connections go on with what they sent after it.
    fn answer_snapshot_waiters(&mut self) {
        if self.snapshot_waiters.is_empty() {
            return;
        }
        let released = self.node.released();
        for key in std::mem::take(&mut self.snapshot_waiters) {
            let Some(Endpoint::Client(connection)) = self.endpoints.get_mut(key) else {
                continue;
            };
            let Some(attempt) = connection.awaiting_snapshot else {
                continue;
            };
            match self.node.snapshot_reply(attempt) {
                Some(reply) => {
                    connection.replies.push(reply, Gate::OPEN, released);
                    connection.awaiting_snapshot = None;
                    self.read_again.push(key);
                    self.queue_flush(key);
                }
                None => self.snapshot_waiters.push(key),
            }
        }
        for key in std::mem::take(&mut self.flush_queue) {
            self.flush_client(key, released);
        }
    }

    fn arm_node_timers(&mut self, timers: Vec<(TimerKind, u64)>) {
        for (kind, deadline_ms) in timers {
            if let Some(previous) = self.node_timers[kind as usize].take() {
                self.timers.cancel(previous);
            }
            let timer = self.timers.insert(deadline_ms, TimerEvent::Node(kind));
            self.node_timers[kind as usize] = Some(timer);
        }
    }

    /// Reads the records the core asked for (ones it no longer keeps in
    /// memory) and hands them over.
    fn read_log_for_core(&mut self, read: LogRead) -> Result<(), ServerError> {
        let mut buffer = std::mem::take(&mut self.read_buffer);
        self.log
            .read(read.from_index, read.max_bytes, &mut buffer)
            .map_err(ServerError::Log)?;
        self.node.on_log_read(read, &buffer);
        self.read_buffer = buffer;
        Ok(())
    }

    /// Writes the turn's records in one write(2). Under `--fsync always`
    /// the syncer makes them durable and the core hears of it later; under
    /// the weaker policies they are released once written.
    fn write_log(&mut self) -> io::Result<LogWriteOutcome> {
        if self.log.rolls_next() && !self.ready_to_roll()? {
            return Ok(LogWriteOutcome::Deferred);
        }
        let write = self
            .node
            .pending_log_write()
            .expect("Step::WriteLog comes with a pending write");
        if write.reset.is_some() || write.truncate_after.is_some() {
            // A sync in flight covered records this cut replaces: its
            // result must not be reported (reporting less is always safe;
            // the sync requested below covers everything kept).
            let metrics = &mut self.metrics;
            self.syncer
                .wait_idle(|synced| metrics.log_synced(synced.duration))?;
        }
        if let Some(base) = write.reset {
            crate::failpoint::reached("log-reset");
            self.log.reset(Base {
                index: base.index,
                epoch: base.epoch,
            })?;
        }
        if let Some(index) = write.truncate_after {
            self.log.truncate_after(index)?;
        }
        self.log.append(write.first_index, write.bytes)?;
        let last_index = write.last_index;
        if !write.bytes.is_empty() {
            let records = last_index + 1 - write.first_index;
            self.metrics.log_batch_records.observe(records as f64);
        }
        Ok(match self.config.fsync {
            FsyncPolicy::Always => match self.log.take_sync_job() {
                Some(job) => {
                    self.syncer.request(last_index, job);
                    LogWriteOutcome::Syncing
                }
                None => LogWriteOutcome::Released,
            },
            FsyncPolicy::Interval => {
                self.log_dirty = true;
                LogWriteOutcome::Released
            }
            FsyncPolicy::Never => LogWriteOutcome::Released,
        })
    }

    /// Records reach a new segment only once the old one is durable, so
    /// that a crash can tear only the last segment (recovery takes damage
    /// anywhere else for corruption). Under `--fsync always` the write
    /// waits a turn for the syncer; under `interval` the old segment is
    /// synced here, as the interval timer would; `never` promises nothing.
    fn ready_to_roll(&mut self) -> io::Result<bool> {
        match self.config.fsync {
            FsyncPolicy::Never => Ok(true),
            FsyncPolicy::Interval => {
                if let Some(job) = self.log.take_sync_job() {
                    self.run_sync_job_here(&job)?;
                }
                Ok(true)
            }
            FsyncPolicy::Always => {
                if let Some(job) = self.log.take_sync_job() {
                    self.syncer.request(self.log.last_index(), job);
                }
                Ok(self.syncer.is_idle())
            }
        }
    }

    /// The syncer finished: tell the core what is durable.
    fn collect_syncs(&mut self) {
        loop {
            match self.syncer.completed() {
                Ok(Some(synced)) => {
                    self.metrics.log_synced(synced.duration);
                    self.node.on_log_released(synced.index);
                }
                Ok(None) => return,
                Err(error) => {
                    self.sync_failure = Some(error);
                    return;
                }
            }
        }
    }

    /// Writes every reply the core has released to its client.
    fn release_replies(&mut self, released: Gate) {
        if released != self.flushed_gate {
            self.flushed_gate = released;
            for key in std::mem::take(&mut self.waiting) {
                if let Some(connection) = self.client(key) {
                    connection.waiting = false;
                }
                self.queue_flush(key);
            }
        }
        for key in std::mem::take(&mut self.flush_queue) {
            self.flush_client(key, released);
        }
    }

    fn flush_client(&mut self, key: usize, released: Gate) {
        let Some(Endpoint::Client(connection)) = self.endpoints.get_mut(key) else {
            return;
        };
        connection.flush_queued = false;
        let all_sent = match connection.flush(released) {
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
        self.account_client(key);
    }

    /// The last log index whose record may be in the file after the turn's
    /// write failed with `error`: the log cuts a failed append back off, so
    /// only what earlier turns wrote, unless the cut failed too.
    fn records_possibly_written(&self, error: &io::Error) -> u64 {
        let partial_left = error
            .get_ref()
            .is_some_and(|inner| inner.is::<crate::log::PartialWriteLeft>());
        match self.node.pending_log_write() {
            Some(write) if partial_left => write.last_index,
            _ => self.log.last_index(),
        }
    }

    /// The log failed: no held reply may be released. A client whose first
    /// held reply depends on a record that may be in the file (at or below
    /// `in_file_through`), or that a cluster may have replicated (a leader
    /// sends its records before writing them), is told the outcome is
    /// unknown; one whose first held reply depends only on records that
    /// certainly never reached the file is told its write was not applied.
    /// (Later held replies on the same connection depend on later records.)
    fn refuse_after_log_failure(&mut self, in_file_through: u64) {
        let replicated = !self.config.peers.is_empty();
        self.refuse_held_replies(|first_held| {
            if replicated || first_held.index <= in_file_through {
                ErrorReply::LogFailedOutcomeUnknown
            } else {
                ErrorReply::LogFailed
            }
        });
    }

    /// Held replies can no longer be released truthfully (the log failed,
    /// or leadership was lost): each client with one gets the reason for
    /// its first held reply instead, after its releasable replies, and is
    /// closed.
    fn refuse_held_replies(&mut self, reason: impl Fn(Gate) -> ErrorReply) {
        let released = self.node.released();
        let keys: Vec<usize> = self.endpoints.iter().map(|(key, _)| key).collect();
        for key in keys {
            let Some(connection) = self.client(key) else {
                continue;
            };
            let Some(first_held) = connection.replies.first_held_gate() else {
                continue;
            };
            if connection.replies.discard_held() {
                connection
                    .replies
                    .push(Reply::Error(reason(first_held)), Gate::OPEN, Gate::OPEN);
                connection.close_input();
                self.queue_flush(key);
            }
        }
        for key in std::mem::take(&mut self.flush_queue) {
            self.flush_client(key, released);
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
        let metrics = &mut self.metrics;
        let durable = self
            .syncer
            .wait_idle(|synced| metrics.log_synced(synced.duration))
            .map_err(ServerError::Log)?;
        if let Some(index) = durable {
            self.node.on_log_released(index);
        }
        if let Some(job) = self.log.take_sync_job() {
            self.run_sync_job_here(&job).map_err(ServerError::Log)?;
        }
        // What the last sync released: acknowledgements and replies.
        self.end_turn()?;
        crate::log_info!(
            "log synced at index {}, {} client connections closed, bye",
            self.node.last_index(),
            self.clients
        );
        Ok(())
    }
}

/// Writes one of the core's events as a log line (`node::Event`: its
/// text, and its name and fields in JSON).
fn log_core_event(event: &crate::node::Event) {
    let level = event.level();
    if crate::logger::enabled(level) {
        crate::logger::log_event(level, Some(event.name()), event, &event.fields());
    }
}
