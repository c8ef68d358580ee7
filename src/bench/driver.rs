//! The event loop: one `mio::Poll` drives every connection.
//!
//! A run is a sequence of phases (preload, warmup, the measured run); each
//! phase draws requests from a [`Source`] and ends once the source is
//! exhausted and every request it sent has been answered, so no phase's
//! replies leak into the next one's counts.
//!
//! Before the first phase every connection is set up (connect, TLS
//! handshake, `AUTH`); only then is it counted as live.
//!
//! Per turn each ready connection gets one read, its whole replies are
//! parsed, its pipeline is refilled, and it gets one write. Readiness is
//! edge-triggered, so a connection whose read filled its buffer is read
//! again next turn without waiting for an event (as the server does).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use rustls::ClientConfig;
use rustls_pki_types::ServerName;

use super::BenchError;
use super::connection::{Connection, ConnectionError, ReadOutcome};
use super::report::{Progress, Tally};
use super::wire::{self, Protocol, RequestEncoder};
use super::workload::{Source, Xorshift};
use crate::net::Transport;

const EVENT_CAPACITY: usize = 1024;
/// How long setting up every client (connect, TLS, `AUTH`) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// With requests in flight and no reply for this long, the run fails.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// Where TLS connections go: their settings and the name the server's
/// certificate must carry.
#[derive(Debug, Clone)]
pub struct TlsTarget {
    pub config: Arc<ClientConfig>,
    pub server_name: ServerName<'static>,
}

/// What the driver needs to know about the run. (Not `Debug`: it holds
/// the password.)
#[derive(Clone)]
pub struct DriverSettings {
    pub address: SocketAddr,
    /// Speak TLS to `address`.
    pub tls: Option<TlsTarget>,
    /// Sent as `AUTH` first on every connection.
    pub password: Option<Vec<u8>>,
    pub clients: usize,
    /// The deepest pipeline of any phase: connection buffers are sized for it.
    pub deepest_pipeline: usize,
    pub protocol: Protocol,
    pub value_size: usize,
    pub seed: u64,
}

/// One phase of a run.
pub struct Phase {
    /// Shown on the progress line.
    pub label: &'static str,
    /// Requests in flight per connection.
    pub pipeline: usize,
    pub source: Source,
    /// Stop sending at this time (the phase still waits for its replies).
    pub deadline: Option<Instant>,
    /// Requests the phase will send, when known (for the progress line).
    pub total: Option<u64>,
    pub tally: Tally,
}

/// Connections lost so far, and why the first one was.
#[derive(Debug, Default)]
pub struct Failures {
    pub count: u64,
    pub first: Option<String>,
}

impl Failures {
    fn record(&mut self, error: &ConnectionError) {
        self.count += 1;
        if self.first.is_none() {
            self.first = Some(error.to_string());
        }
    }
}

pub struct Driver {
    poll: Poll,
    settings: DriverSettings,
    encoder: RequestEncoder,
    /// The `AUTH` request every connection sends first; empty without a password.
    auth_request: Vec<u8>,
    /// Indexed by token; `None` once a connection is given up.
    connections: Vec<Option<Connection>>,
    live: usize,
    /// Requests sent in the current phase and not yet answered.
    outstanding: usize,
    /// Connections to read again without a new event.
    read_again: Vec<usize>,
    failures: Failures,
}

impl Driver {
    /// Opens every connection and waits until each is made or has failed.
    /// Fails only if none could be made.
    pub fn connect(settings: DriverSettings) -> Result<Driver, BenchError> {
        let poll = Poll::new().map_err(BenchError::Poll)?;
        let encoder = RequestEncoder::new(settings.protocol, settings.value_size);
        let auth_request = settings
            .password
            .as_ref()
            .map(|password| wire::encode_auth(settings.protocol, password))
            .unwrap_or_default();
        let mut driver = Driver {
            poll,
            encoder,
            auth_request,
            connections: Vec::with_capacity(settings.clients),
            live: 0,
            outstanding: 0,
            read_again: Vec::new(),
            failures: Failures::default(),
            settings,
        };
        for index in 0..driver.settings.clients {
            driver.start_connect(index);
        }
        driver.await_connects()?;
        if driver.live == 0 {
            return Err(BenchError::NoConnection {
                address: driver.settings.address,
                attempts: driver.settings.clients,
                first_error: driver.failures.first.unwrap_or_default(),
            });
        }
        Ok(driver)
    }

    /// Connections that are up.
    pub fn live(&self) -> usize {
        self.live
    }

    pub fn failures(&self) -> &Failures {
        &self.failures
    }

    fn start_connect(&mut self, index: usize) {
        let random = Xorshift::new(self.settings.seed, index as u64);
        let started = TcpStream::connect(self.settings.address).and_then(|stream| {
            let mut transport = self.transport_over(stream)?;
            let interest = Interest::READABLE | Interest::WRITABLE;
            self.poll
                .registry()
                .register(transport.socket(), Token(index), interest)?;
            Ok(transport)
        });
        match started {
            Ok(transport) => {
                let depth = self.settings.deepest_pipeline;
                let connection = Connection::new(transport, random, depth, &self.encoder);
                self.connections.push(Some(connection));
            }
            Err(error) => {
                self.failures.record(&ConnectionError::Connect(error));
                self.connections.push(None);
            }
        }
    }

    fn transport_over(&self, stream: TcpStream) -> io::Result<Transport> {
        match &self.settings.tls {
            None => Ok(Transport::plain(stream)),
            Some(target) => Transport::tls_client(
                stream,
                Arc::clone(&target.config),
                target.server_name.clone(),
            ),
        }
    }

    /// Polls until every connection is set up or failed, or the timeout.
    fn await_connects(&mut self) -> Result<(), BenchError> {
        let deadline = Instant::now() + CONNECT_TIMEOUT;
        let mut events = Events::with_capacity(EVENT_CAPACITY);
        while self.pending_connects() > 0 {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            self.poll_once(&mut events, deadline - now)?;
            for event in events.iter() {
                self.advance_setup(event.token().0);
            }
        }
        for index in 0..self.connections.len() {
            if self.connections[index]
                .as_ref()
                .is_some_and(|connection| !connection.is_ready())
            {
                self.give_up(index, &ConnectionError::ConnectTimedOut);
            }
        }
        Ok(())
    }

    fn pending_connects(&self) -> usize {
        self.connections
            .iter()
            .flatten()
            .filter(|connection| !connection.is_ready())
            .count()
    }

    fn advance_setup(&mut self, index: usize) {
        let Some(Some(connection)) = self.connections.get_mut(index) else {
            return;
        };
        if connection.is_ready() {
            return;
        }
        match connection.advance_setup(self.settings.protocol, &self.auth_request) {
            Ok(true) => self.live += 1,
            Ok(false) => {}
            Err(error) => self.give_up(index, &error),
        }
    }

    /// Drops a connection; its requests in flight are lost.
    fn give_up(&mut self, index: usize, error: &ConnectionError) {
        let Some(mut connection) = self.connections[index].take() else {
            return;
        };
        if connection.is_ready() {
            self.live -= 1;
        }
        self.outstanding -= connection.in_flight();
        let _ = self.poll.registry().deregister(connection.socket_mut());
        self.failures.record(error);
    }

    fn poll_once(&mut self, events: &mut Events, timeout: Duration) -> Result<(), BenchError> {
        match self.poll.poll(events, Some(timeout)) {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => Ok(()),
            Err(error) => Err(BenchError::Poll(error)),
        }
    }

    /// Runs `phase` to its end; returns how long it took, from its first
    /// request to its last reply.
    pub fn run_phase(&mut self, phase: &mut Phase) -> Result<Duration, BenchError> {
        let started = Instant::now();
        let mut progress = Progress::new(phase.label, phase.total, started);
        let mut last_reply = started;
        let mut events = Events::with_capacity(EVENT_CAPACITY);
        for index in 0..self.connections.len() {
            self.service(index, false, phase);
        }
        while !(phase.source.is_exhausted() && self.outstanding == 0) {
            if self.live == 0 {
                progress.finish();
                return Err(self.all_lost());
            }
            let now = Instant::now();
            let timeout = self.poll_timeout(now, &progress, phase.deadline);
            self.poll_once(&mut events, timeout)?;
            let answered_before = phase.tally.completed;
            for event in events.iter() {
                let index = event.token().0;
                if event.is_read_closed()
                    && let Some(Some(connection)) = self.connections.get_mut(index)
                {
                    connection.note_peer_closed();
                }
                let readable = event.is_readable() || event.is_read_closed() || event.is_error();
                self.service(index, readable, phase);
            }
            for index in std::mem::take(&mut self.read_again) {
                self.service(index, true, phase);
            }
            let now = Instant::now();
            if phase.tally.completed > answered_before {
                phase.tally.note_reply_gap(now - last_reply);
                last_reply = now;
            } else if self.outstanding > 0 && now - last_reply > REPLY_TIMEOUT {
                progress.finish();
                return Err(BenchError::Stalled {
                    outstanding: self.outstanding,
                    waited: REPLY_TIMEOUT,
                });
            }
            if phase.deadline.is_some_and(|deadline| now >= deadline) {
                phase.source.stop();
            }
            progress.tick(now, phase.tally.completed);
        }
        progress.finish();
        Ok(started.elapsed())
    }

    fn poll_timeout(
        &self,
        now: Instant,
        progress: &Progress,
        deadline: Option<Instant>,
    ) -> Duration {
        if !self.read_again.is_empty() {
            return Duration::ZERO;
        }
        let until_deadline = deadline.map_or(Duration::MAX, |deadline| {
            deadline.saturating_duration_since(now)
        });
        progress.until_next(now).min(until_deadline)
    }

    fn all_lost(&self) -> BenchError {
        BenchError::AllConnectionsLost {
            first_error: self.failures.first.clone().unwrap_or_default(),
        }
    }

    /// One turn of one connection: at most one read, parse what arrived,
    /// refill the pipeline, at most one write.
    fn service(&mut self, index: usize, readable: bool, phase: &mut Phase) {
        let Some(Some(connection)) = self.connections.get_mut(index) else {
            return;
        };
        if !connection.is_ready() {
            return;
        }
        let turn = take_turn(
            connection,
            readable,
            phase,
            &self.encoder,
            self.settings.protocol,
        );
        match turn {
            Ok(outcome) => {
                self.outstanding = self.outstanding + outcome.queued - outcome.answered;
                if outcome.read_again {
                    self.read_again.push(index);
                }
            }
            Err(error) => self.give_up(index, &error),
        }
    }
}

/// What one connection's turn did.
struct TurnOutcome {
    answered: usize,
    queued: usize,
    read_again: bool,
}

fn take_turn(
    connection: &mut Connection,
    readable: bool,
    phase: &mut Phase,
    encoder: &RequestEncoder,
    protocol: Protocol,
) -> Result<TurnOutcome, ConnectionError> {
    let mut answered = 0;
    let mut read_again = false;
    if readable {
        read_again = connection.read_once()? == ReadOutcome::MoreMaybe;
    }
    // One clock read per turn: the replies just read were parsed now, and
    // the requests that replace them are queued now.
    let now = Instant::now();
    if readable {
        answered = connection.parse_replies(protocol, now, &mut phase.tally)?;
    }
    let queued = connection.fill_pipeline(phase.pipeline, &mut phase.source, encoder, now);
    connection.write_once()?;
    Ok(TurnOutcome {
        answered,
        queued,
        read_again,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::workload::Mix;
    use crate::security::testing::{Answer, FakeLineServer, TestPki};
    use crate::security::tls::{self, ClientAuth};

    #[test]
    fn a_run_over_tls_with_a_password_measures_only_the_load() {
        let pki = TestPki::generate();
        let server = FakeLineServer::start(
            Some(pki.server_config(ClientAuth::None)),
            Box::new(|line: &[u8]| match line {
                b"AUTH pw" => Answer::Reply(b"OK\n".to_vec()),
                _ if line.starts_with(b"GET ") => Answer::Reply(b"NOT_FOUND\n".to_vec()),
                _ => Answer::Reply(b"OK\n".to_vec()),
            }),
        );
        let settings = DriverSettings {
            address: server.address,
            tls: Some(TlsTarget {
                config: pki.client_config(None),
                server_name: tls::server_name_for(&server.address),
            }),
            password: Some(b"pw".to_vec()),
            // The fake serves one connection at a time.
            clients: 1,
            deepest_pipeline: 8,
            protocol: Protocol::Line,
            value_size: 3,
            seed: 1,
        };
        let mut driver = Driver::connect(settings).unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(driver.live(), 1);
        let mut phase = Phase {
            label: "run",
            pipeline: 8,
            source: Source::mixed(Mix::new(0.5, 100), Some(500)),
            deadline: None,
            total: Some(500),
            tally: Tally::new(true),
        };
        driver
            .run_phase(&mut phase)
            .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(phase.tally.completed, 500);
        assert_eq!(phase.tally.errors(), 0);
        let received = server.received();
        assert_eq!(received.len(), 501);
        assert_eq!(received[0], b"AUTH pw");
        assert!(received[1..].iter().all(|line| !line.starts_with(b"AUTH")));
    }
}
