//! The reactor's peer side: dialing the configured peers, the handshake on
//! both ends, and moving frames between peer connections and the core.
//!
//! Who may become a peer:
//! - a connection whose first line is a `KVPEER` handshake, whose claimed
//!   address is one of `PEERS` and whose id is not ours;
//! - without a cluster secret (a loopback-only cluster, checked at start),
//!   only from a loopback address;
//! - only once its `KVPROOF` checks out, within `HANDSHAKE_TIMEOUT_MS`
//!   (`security::handshake`). Until then it is a [`PendingPeer`] and
//!   nothing it sends reaches the core. Failures are logged at most once a
//!   second, with the remote address.
//!
//! Configured peers keep a way in when `--max-clients` are connected: a
//! connection from a peer's IP address is then admitted as "peer only"
//! (see `Server::admit`), and refused unless it opens with a handshake.
//!
//! What the log says about each outbound link is decided in `peer_health`:
//! lost and connected once, a peer that stays down once a minute, each
//! reconnect attempt only at `DEBUG`.

use std::net::SocketAddr;

use mio::Interest;
use mio::Token;
use mio::net::TcpStream;

use super::peer::{self, LinkFailure, LinkState, OutboundLink, PeerError, PendingPeer};
use super::peer_health::{Notice, PEER_DOWN_REPORT_INTERVAL_MS};
use super::throttle;
use super::{Endpoint, Server, TimerEvent, Transport};
use crate::logger::{self, Field, Level, Value};
use crate::node::message::{self, Envelope, NodeId};
use crate::protocol::ErrorReply;
use crate::security::handshake::{self, Accepting, HANDSHAKE_TIMEOUT_MS, Hello};
use crate::security::tls::server_name_for;

/// Beyond `--max-clients`, at most this many connections per configured
/// peer may wait to prove they are that peer.
pub(super) const PEER_ONLY_SLOTS_PER_PEER: usize = 2;

impl Server {
    /// Whether a connection from `remote` may be a configured peer's.
    pub(super) fn may_be_peer(&self, remote: SocketAddr) -> bool {
        self.links
            .iter()
            .any(|link| link.address.ip() == remote.ip())
    }

    /// A client's first line was a `KVPEER` handshake: answer it with our
    /// proof, and wait for the dialer's.
    pub(super) fn begin_inbound_handshake(&mut self, key: usize, line: &[u8]) {
        let Some(Endpoint::Client(connection)) = self.endpoints.get_mut(key) else {
            return;
        };
        let Ok(remote) = connection.transport.socket().peer_addr() else {
            return self.close(key);
        };
        if !self.settings.cluster_key.is_authenticated() && !remote.ip().is_loopback() {
            let reason = "peers are not authenticated (no --cluster-secret-file), so only \
                          loopback may be a peer";
            return self.refuse_handshake(key, remote, reason);
        }
        if connection.transport.is_tls() && !connection.transport.presented_verified_certificate() {
            let reason = "a peer must present a certificate signed by --tls-ca-file";
            return self.refuse_handshake(key, remote, reason);
        }
        let answered = match self.answer_handshake(line) {
            Ok(answered) => answered,
            Err(reason) => return self.refuse_handshake(key, remote, &reason),
        };
        let claimed = answered.0.claimed();
        if !self.is_configured_peer(claimed) {
            let reason = format!(
                "node {} at {} is not one of PEERS",
                claimed.id, claimed.address
            );
            return self.refuse_handshake(key, remote, &reason);
        }
        self.become_pending_peer(key, answered, remote);
    }

    /// Our reply to a dialer's first line, or why there is none.
    fn answer_handshake(&self, line: &[u8]) -> Result<(Accepting, Vec<u8>), String> {
        let nonce = handshake::fresh_nonce().map_err(|error| error.to_string())?;
        let mut reply = Vec::new();
        let key = &self.settings.cluster_key;
        let now_ms = self.now_ms();
        Accepting::on_hello(line, self.own_hello, nonce, key, now_ms, &mut reply)
            .map(|accepting| (accepting, reply))
            .map_err(|error| error.to_string())
    }

    fn is_configured_peer(&self, hello: Hello) -> bool {
        hello.id != self.config.id && self.links.iter().any(|link| link.address == hello.address)
    }

    /// Logs (at most once a second) why a handshake from `remote` was
    /// refused, and closes its connection.
    fn refuse_handshake(&mut self, key: usize, remote: SocketAddr, reason: &str) {
        if let Some(suppressed) = self.handshake_log.admit(self.now_ms()) {
            crate::log_warn!(
                "refused a peer handshake from {remote}: {reason}{}",
                throttle::suppressed_note(suppressed)
            );
        }
        self.close(key);
    }

    /// The client connection at `key` becomes a [`PendingPeer`], under a
    /// new token; the dialer's proof may already be buffered.
    fn become_pending_peer(
        &mut self,
        key: usize,
        (accepting, reply): (Accepting, Vec<u8>),
        remote: SocketAddr,
    ) {
        let Some(Endpoint::Client(connection)) = self.forget_client(key) else {
            return;
        };
        // Until its proof checks out it keeps the slot it came in on, so
        // half-finished handshakes are bounded like clients.
        let peer_only = connection.peer_only;
        self.hold_slot(peer_only);
        let (stream, rest) = connection.into_parts();
        let now_ms = self.now_ms();
        let mut pending = PendingPeer::new(stream, accepting, rest, reply, remote, now_ms);
        pending.peer_only = peer_only;
        let Some(new_key) = self.insert_peer_endpoint(Endpoint::PendingPeer(pending)) else {
            return;
        };
        let deadline_ms = now_ms + HANDSHAKE_TIMEOUT_MS;
        let event = TimerEvent::HandshakeDeadline { endpoint: new_key };
        self.timers.insert(deadline_ms, event);
        self.peer_flush_queue.push(new_key);
        self.service_pending(new_key);
    }

    /// Inserts a peer endpoint that moved from another token and registers
    /// its socket under the new one.
    fn insert_peer_endpoint(&mut self, mut endpoint: Endpoint) -> Option<usize> {
        let entry = self.endpoints.vacant_entry();
        let new_key = entry.key();
        let stream = match &mut endpoint {
            Endpoint::PendingPeer(pending) => pending.transport.socket(),
            Endpoint::Inbound(inbound) => inbound.transport.socket(),
            _ => unreachable!("only peer endpoints move"),
        };
        let interest = Interest::READABLE | Interest::WRITABLE;
        self.poll
            .registry()
            .reregister(stream, Token(new_key), interest)
            .ok()?;
        entry.insert(endpoint);
        Some(new_key)
    }

    /// Reads a pending peer's proof; once it checks out, the connection is
    /// an inbound peer's and its frames go to the core.
    pub(super) fn service_pending(&mut self, key: usize) {
        let now_ms = self.now_ms();
        let Some(Endpoint::PendingPeer(pending)) = self.endpoints.get_mut(key) else {
            return;
        };
        let remote = pending.remote;
        let outcome = pending
            .output
            .flush(&mut pending.transport)
            .and_then(|()| pending.read(&self.settings.cluster_key, now_ms));
        match outcome {
            Ok(None) => {}
            Ok(Some(dialer)) => self.finish_inbound_handshake(key, dialer),
            Err(PeerError::Closed) => self.close(key),
            Err(error) => self.refuse_handshake(key, remote, &error.to_string()),
        }
    }

    /// `dialer` proved itself: its connection becomes its inbound peer
    /// connection, replacing any older one of the same node.
    fn finish_inbound_handshake(&mut self, key: usize, dialer: Hello) {
        let older: Vec<usize> = self
            .endpoints
            .iter()
            .filter(|(_, endpoint)| matches!(endpoint, Endpoint::Inbound(inbound) if inbound.id == dialer.id))
            .map(|(older, _)| older)
            .collect();
        for older in older {
            self.close(older);
        }
        let Some(Endpoint::PendingPeer(pending)) = self.endpoints.try_remove(key) else {
            return;
        };
        self.release_slot(pending.peer_only);
        let inbound = pending.into_inbound(dialer);
        if let Some(new_key) = self.insert_peer_endpoint(Endpoint::Inbound(inbound)) {
            self.service_inbound(new_key);
        }
    }

    /// The handshake deadline of the endpoint at `key` passed: a pending
    /// peer, a dial, or a peer-only client that has not proved itself by
    /// now is dropped. (A later endpoint under the same key has its own
    /// deadline and has not expired.)
    pub(super) fn check_handshake_deadline(&mut self, key: usize, now_ms: u64) {
        let expired_ms = now_ms.saturating_sub(HANDSHAKE_TIMEOUT_MS);
        match self.endpoints.get(key) {
            Some(Endpoint::PendingPeer(pending)) if pending.expired(now_ms) => {
                let reason = format!(
                    "no proof within {HANDSHAKE_TIMEOUT_MS} ms (it claimed {:?})",
                    pending.claimed()
                );
                let remote = pending.remote;
                self.refuse_handshake(key, remote, &reason);
            }
            Some(Endpoint::Outbound { link, connection })
                if connection.handshake_expired(now_ms) =>
            {
                let reason = format!("no handshake within {HANDSHAKE_TIMEOUT_MS} ms");
                self.links[*link].failure = Some(LinkFailure::unreachable(reason));
                self.close(key)
            }
            Some(Endpoint::Client(connection))
                if connection.peer_only
                    && !connection.closing
                    && connection.admitted_ms <= expired_ms =>
            {
                // It said nothing: a client after all, and there is no room.
                let released = self.node.released();
                let mut remote = None;
                if let Some(Endpoint::Client(connection)) = self.endpoints.get_mut(key) {
                    remote = connection.transport.socket().peer_addr().ok();
                    connection.refuse_with(ErrorReply::TooManyClients, released);
                }
                self.metrics.connections_rejected += 1;
                self.log_max_clients(remote);
                self.queue_flush(key);
            }
            _ => {}
        }
    }

    pub(super) fn service_inbound(&mut self, key: usize) {
        let now_ms = self.now_ms();
        let Some(Endpoint::Inbound(inbound)) = self.endpoints.get_mut(key) else {
            return;
        };
        let mut frames = std::mem::take(&mut self.frames);
        let peer_id = inbound.id;
        let mut outcome = inbound
            .read_frames(&mut frames)
            .and_then(|()| inbound.output.flush(&mut inbound.transport));
        for envelope in frames.drain(..) {
            if let Err(invalid) = self.node.handle_message(envelope, now_ms) {
                // Nothing of it was applied; what follows on this
                // connection cannot be trusted either.
                if let Some(suppressed) = self.invalid_frame_log.admit(now_ms) {
                    crate::log_warn!(
                        "refused a frame from node {peer_id}: {invalid}; dropping its \
                         connection{}",
                        throttle::suppressed_note(suppressed)
                    );
                }
                outcome = Err(PeerError::Closed);
                break;
            }
        }
        frames.clear();
        self.frames = frames;
        if let Err(error) = outcome {
            match error {
                // The peer went away (its outbound link's loss is reported
                // by its own side, and ours by our link).
                PeerError::Closed => {}
                PeerError::Io(_) => {
                    crate::log_debug!("dropping the inbound connection of node {peer_id}: {error}")
                }
                _ => {
                    if let Some(suppressed) = self.inbound_log.admit(now_ms) {
                        crate::log_warn!(
                            "dropping the inbound connection of node {peer_id}: {error}{}",
                            throttle::suppressed_note(suppressed)
                        );
                    }
                }
            }
            self.close(key);
        }
    }

    /// Starts a non-blocking connect to configured peer `link`; connect and
    /// handshake must be done within `HANDSHAKE_TIMEOUT_MS`.
    pub(super) fn dial(&mut self, link: usize) {
        let address = self.links[link].address;
        let now_ms = self.now_ms();
        let entry = self.endpoints.vacant_entry();
        let key = entry.key();
        let peer_tls = self
            .settings
            .tls
            .as_ref()
            .and_then(|tls| tls.peer_client.clone());
        let connected = TcpStream::connect(address).and_then(|mut stream| {
            let interest = Interest::READABLE | Interest::WRITABLE;
            self.poll
                .registry()
                .register(&mut stream, Token(key), interest)?;
            match peer_tls {
                Some(config) => Transport::tls_client(stream, config, server_name_for(&address)),
                None => Ok(Transport::plain(stream)),
            }
        });
        match connected {
            Ok(transport) => {
                let connection = OutboundLink::connecting(transport, now_ms);
                entry.insert(Endpoint::Outbound { link, connection });
                self.links[link].endpoint = Some(key);
                let event = TimerEvent::HandshakeDeadline { endpoint: key };
                self.timers.insert(now_ms + HANDSHAKE_TIMEOUT_MS, event);
            }
            Err(error) => {
                self.report_attempt_failed(link, LinkFailure::unreachable(error));
                self.schedule_redial(link);
            }
        }
    }

    pub(super) fn schedule_redial(&mut self, link: usize) {
        let delay_ms = self.links[link].retry_delay_ms;
        self.links[link].retry_delay_ms = (delay_ms * 2).min(peer::MAX_RETRY_DELAY_MS);
        let deadline_ms = self.now_ms() + delay_ms;
        self.timers
            .insert(deadline_ms, TimerEvent::Reconnect { link });
    }

    /// The outbound connection of `link` is closed: a link that was ready
    /// is lost (the core hears of it), any other was a failed attempt;
    /// either way the log hears as `peer_health` decides, and a new dial
    /// is scheduled.
    pub(super) fn link_lost(&mut self, link: usize, state: LinkState) {
        self.links[link].endpoint = None;
        let failure = self.links[link]
            .failure
            .take()
            .unwrap_or_else(|| LinkFailure::unreachable("connection closed"));
        if let LinkState::Ready { id } = state {
            let now_ms = self.now_ms();
            self.node.peer_down(id, now_ms);
            if let Some(notice) = self.links[link].health.lost(now_ms) {
                self.log_link_notice(link, notice, &failure);
            }
        } else {
            self.report_attempt_failed(link, failure);
        }
        if !self.stop_requested {
            self.schedule_redial(link);
        }
    }

    /// An attempt to reach `link` failed: a `DEBUG` line, and a report if
    /// `peer_health` says one is due.
    fn report_attempt_failed(&mut self, link: usize, failure: LinkFailure) {
        let now_ms = self.now_ms();
        let refused = failure.refused;
        let (attempts, notice) = self.links[link].health.attempt_failed(now_ms, refused);
        let address = self.links[link].address;
        let retry_ms = self.links[link].retry_delay_ms;
        crate::log_debug!(
            "reconnect attempt {attempts} to peer {address} failed: {}; next in {retry_ms} ms",
            failure.reason
        );
        if let Some(notice) = notice {
            self.log_link_notice(link, notice, &failure);
        }
    }

    /// About once a second (the sweep): the state a flapping link settled
    /// in, if it was not logged.
    pub(super) fn tick_link_health(&mut self, now_ms: u64) {
        for link in 0..self.links.len() {
            if let Some(notice) = self.links[link].health.tick(now_ms) {
                let failure = LinkFailure::unreachable("it went up and down");
                self.log_link_notice(link, notice, &failure);
            }
        }
    }

    /// Writes what `peer_health` decided to say about `link`.
    fn log_link_notice(&self, link: usize, notice: Notice, failure: &LinkFailure) {
        let address = self.links[link].address;
        let peer = address.to_string();
        let name = match self.links[link].id {
            Some(id) => format!("peer {address} (node {id})"),
            None => format!("peer {address}"),
        };
        let reason = failure.reason.as_str();
        let mut fields: Vec<Field> = vec![
            ("peer", Value::Str(&peer)),
            ("peer_id", Value::from(self.links[link].id)),
        ];
        let every_s = PEER_DOWN_REPORT_INTERVAL_MS / 1000;
        let (level, event, message) = match notice {
            Notice::Unreachable => {
                fields.push(("error", Value::Str(reason)));
                let level = if failure.refused {
                    Level::Warn
                } else {
                    Level::Info
                };
                let message = if failure.refused {
                    format!(
                        "cannot connect to {name}: {reason}; retrying (said again every \
                         {every_s} s while it goes on)"
                    )
                } else {
                    format!(
                        "cannot reach {name} yet: {reason}; retrying (said again every {every_s} \
                         s while it stays unreachable)"
                    )
                };
                (level, "peer_unreachable", message)
            }
            Notice::StillDown { down_ms, attempts } => {
                fields.push(("down_ms", Value::U64(down_ms)));
                fields.push(("attempts", Value::U64(attempts)));
                fields.push(("error", Value::Str(reason)));
                let (seconds, state) = (
                    down_ms / 1000,
                    if failure.refused {
                        "still cannot connect to"
                    } else {
                        "still cannot reach"
                    },
                );
                let message = format!(
                    "{state} {name} after {seconds} s and {attempts} attempts: {reason}; \
                     retrying (said again every {every_s} s)"
                );
                (Level::Warn, "peer_still_down", message)
            }
            Notice::Lost { suppressed } => {
                fields.push(("error", Value::Str(reason)));
                let message = format!(
                    "lost {name}: {reason}; reconnecting (said again every {every_s} s while it \
                     stays down){}",
                    throttle::suppressed_note(suppressed)
                );
                (Level::Warn, "peer_lost", message)
            }
            Notice::Connected {
                down_ms,
                attempts,
                suppressed,
            } => {
                fields.push(("down_ms", Value::from(down_ms)));
                fields.push(("attempts", Value::U64(attempts)));
                let after = match down_ms {
                    Some(down_ms) => {
                        format!(" after {down_ms} ms down and {attempts} failed reconnect attempts")
                    }
                    None if attempts > 0 => format!(" after {attempts} failed attempts"),
                    None => String::new(),
                };
                let message = format!(
                    "{name} connected{after}{}",
                    throttle::suppressed_note(suppressed)
                );
                (Level::Info, "peer_connected", message)
            }
        };
        logger::log_event(level, Some(event), &message, &fields);
    }

    pub(super) fn service_outbound(&mut self, key: usize, writable: bool) {
        let own_hello = self.own_hello;
        let now_ms = self.now_ms();
        let Some(Endpoint::Outbound { link, connection }) = self.endpoints.get_mut(key) else {
            return;
        };
        let link = *link;
        let mut outcome = Ok(None);
        if writable && matches!(connection.state, LinkState::Connecting) {
            outcome = connection.finish_connect(&own_hello, now_ms).map(|()| None);
        }
        if outcome.is_ok() {
            outcome = connection
                .output
                .flush(&mut connection.transport)
                .and_then(|()| connection.read(&self.settings.cluster_key, now_ms));
        }
        match outcome {
            Ok(Some(acceptor)) => self.link_ready(key, link, acceptor),
            Ok(None) => {}
            Err(error) => self.outbound_failed(key, link, error),
        }
    }

    /// Closes an outbound link that failed; `link_lost` reports why.
    fn outbound_failed(&mut self, key: usize, link: usize, error: PeerError) {
        let refused = matches!(error, PeerError::Handshake(_));
        let reason = if refused {
            format!("it failed our handshake: {error}")
        } else {
            error.to_string()
        };
        self.links[link].failure = Some(LinkFailure { reason, refused });
        self.close(key);
    }

    fn link_ready(&mut self, key: usize, link: usize, acceptor: Hello) {
        let duplicate = self
            .links
            .iter()
            .enumerate()
            .any(|(other, known)| other != link && known.id == Some(acceptor.id));
        if acceptor.id == self.config.id || duplicate {
            let reason = format!(
                "it says it is node {}, an id already taken; ids must be unique",
                acceptor.id
            );
            self.links[link].failure = Some(LinkFailure {
                reason,
                refused: true,
            });
            return self.close(key);
        }
        if let Some(Endpoint::Outbound { connection, .. }) = self.endpoints.get_mut(key) {
            connection.state = LinkState::Ready { id: acceptor.id };
        }
        // Our proof goes out before any frame.
        self.peer_flush_queue.push(key);
        self.links[link].id = Some(acceptor.id);
        self.links[link].retry_delay_ms = peer::FIRST_RETRY_DELAY_MS;
        let now_ms = self.now_ms();
        if let Some(notice) = self.links[link].health.connected(now_ms) {
            let failure = LinkFailure::unreachable("");
            self.log_link_notice(link, notice, &failure);
        }
        self.node.peer_up(acceptor.id, acceptor.address);
    }

    /// Queues a message on the ready outbound link to `to`; dropped if
    /// there is none (the protocol recovers from lost messages).
    pub(super) fn send_to_peer(&mut self, to: NodeId, envelope: &Envelope) {
        let Some(key) = self
            .links
            .iter()
            .find(|link| link.id == Some(to))
            .and_then(|link| link.endpoint)
        else {
            return;
        };
        if let Some(Endpoint::Outbound { connection, .. }) = self.endpoints.get_mut(key)
            && matches!(connection.state, LinkState::Ready { .. })
        {
            message::encode_frame(envelope, connection.output.buffer());
            self.peer_flush_queue.push(key);
        }
    }

    pub(super) fn flush_peers(&mut self) {
        for key in std::mem::take(&mut self.peer_flush_queue) {
            let outcome = match self.endpoints.get_mut(key) {
                Some(Endpoint::Outbound { connection, .. }) => {
                    connection.output.flush(&mut connection.transport)
                }
                Some(Endpoint::Inbound(inbound)) => inbound.output.flush(&mut inbound.transport),
                Some(Endpoint::PendingPeer(pending)) => {
                    pending.output.flush(&mut pending.transport)
                }
                _ => Ok(()),
            };
            if let Err(error) = outcome {
                if let Some(Endpoint::Outbound { link, .. }) = self.endpoints.get(key) {
                    self.links[*link].failure = Some(LinkFailure::unreachable(error));
                }
                self.close(key);
            }
        }
    }
}
