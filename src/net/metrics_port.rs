//! The `--metrics-addr` listener in the reactor: accepting metrics
//! connections (at most `http::MAX_CONNECTIONS`), driving each through its
//! one exchange as its socket becomes ready, and closing it when done or at
//! its deadline. The HTTP itself is in `http`; what is answered, in
//! `exposition`.
//!
//! A metrics connection never touches the core: answering it only reads.
//! It cannot hold up clients either: a scrape is one read, one answer of
//! a few KiB written without blocking, and the loop goes on.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::net::SocketAddr;

use mio::net::TcpListener;
use mio::{Interest, Registry, Token};

use super::http::{self, HttpConnection, Parsed, Phase, Resource, Response};
use super::{FIRST_METRICS_TOKEN, Server, ServerError, TimerEvent};

/// Tells a connection past the bound `503` and lets it go, best effort:
/// the socket is fresh, so its buffer has room; what it already sent is
/// read and dropped, so that the close is not a reset that could destroy
/// the answer before the client reads it.
fn refuse_busy(stream: &mut mio::net::TcpStream) {
    let busy = Response::text(503, "too many metrics connections");
    let _ = stream.write(&busy.encode(false));
    let mut unread = [0u8; 1024];
    let _ = stream.read(&mut unread);
    let _ = stream.shutdown(Shutdown::Write);
}

/// Binds and registers the metrics listener.
pub(super) fn bind(
    registry: &Registry,
    address: SocketAddr,
    token: Token,
) -> Result<TcpListener, ServerError> {
    let bind_error = |source| ServerError::MetricsBind { address, source };
    let mut listener = TcpListener::bind(address).map_err(bind_error)?;
    registry
        .register(&mut listener, token, Interest::READABLE)
        .map_err(ServerError::Poll)?;
    Ok(listener)
}

impl Server {
    /// Accepts every waiting metrics connection; past the bound, each is
    /// told `503` (best effort) and closed at once.
    pub(super) fn accept_metrics_connections(&mut self) {
        loop {
            let Some(listener) = &self.metrics_listener else {
                return;
            };
            let mut stream = match listener.accept() {
                Ok((stream, _)) => stream,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                // Out of descriptors, or the connection died in the
                // backlog: the next scrape tries again.
                Err(_) => return,
            };
            if self.metrics_connections.len() >= http::MAX_CONNECTIONS {
                refuse_busy(&mut stream);
                continue;
            }
            let deadline_ms = self.now_ms() + http::DEADLINE_MS;
            let entry = self.metrics_connections.vacant_entry();
            let token = Token(FIRST_METRICS_TOKEN + entry.key());
            let interest = Interest::READABLE | Interest::WRITABLE;
            if self
                .poll
                .registry()
                .register(&mut stream, token, interest)
                .is_err()
            {
                continue;
            }
            let key = entry.key();
            let mut connection = HttpConnection::new(stream);
            let event = TimerEvent::MetricsDeadline { connection: key };
            connection.deadline = Some(self.timers.insert(deadline_ms, event));
            entry.insert(connection);
            // Its request may already be waiting: edge-triggered readiness
            // reports it, but serving at once costs nothing.
            self.service_metrics_connection(key);
        }
    }

    /// Moves metrics connection `key` as far as its socket allows: read
    /// its head and answer it, finish writing, drain, close.
    pub(super) fn service_metrics_connection(&mut self, key: usize) {
        let Some(connection) = self.metrics_connections.get_mut(key) else {
            return;
        };
        if connection.phase() == Phase::Reading {
            let answer = match connection.read_head() {
                None => None,
                Some(Parsed::Refused(response)) => Some((response, false)),
                Some(Parsed::Resource {
                    resource,
                    head_only,
                }) => Some((self.answer(resource), head_only)),
            };
            let Some(connection) = self.metrics_connections.get_mut(key) else {
                return;
            };
            if let Some((response, head_only)) = answer {
                connection.respond(&response, head_only);
            }
        } else {
            connection.advance();
        }
        if self.metrics_connections[key].phase() == Phase::Done {
            self.close_metrics_connection(key);
        }
    }

    fn answer(&self, resource: Resource) -> Response {
        match resource {
            Resource::Metrics => self.metrics_response(),
            Resource::Health => self.health_response(),
        }
    }

    /// The deadline of metrics connection `key` passed: a request that never
    /// came whole is told so (best effort); then it is closed.
    pub(super) fn metrics_connection_timed_out(&mut self, key: usize) {
        let Some(connection) = self.metrics_connections.get_mut(key) else {
            return;
        };
        // Its timer fired: nothing to cancel at close.
        connection.deadline = None;
        let late = Response::text(408, "request timeout");
        connection.answer_and_give_up(&late);
        self.close_metrics_connection(key);
    }

    fn close_metrics_connection(&mut self, key: usize) {
        let Some(mut connection) = self.metrics_connections.try_remove(key) else {
            return;
        };
        if let Some(timer) = connection.deadline.take() {
            self.timers.cancel(timer);
        }
        let _ = self.poll.registry().deregister(connection.stream());
    }
}
