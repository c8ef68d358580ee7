//! What the server reports about itself: the figures `INFO` gets from the
//! reactor ([`facts`]), the Prometheus text of `GET /metrics`, and the
//! answer of `GET /health`.
//!
//! Both `INFO` and `/metrics` read the same counters (`metrics::Metrics`)
//! and the same core getters, so they cannot disagree. The process
//! figures (`process_*`) come from `/proc/self` at scrape time: a few
//! microseconds of reads of kernel memory, on the loop.

use super::http::Response;
use super::metrics::Metrics;
use super::peer::LinkState;
use super::prometheus::{CONTENT_TYPE, Exposition, Kind};
use super::{Endpoint, Server};
use crate::config::Config;
use crate::log::Log;
use crate::node::{Node, ROLE_NAMES, ServerFacts};
use crate::protocol::Outcome;

/// What `INFO` reports that the reactor knows. Built before every batch
/// of requests a connection runs, so it reads no clock and makes no
/// system call: `process_id` is read once at start-up (getpid(2) is a real
/// system call, one per read before), `uptime_ms` is the turn's clock.
#[allow(clippy::too_many_arguments)]
pub(super) fn facts(
    config: &Config,
    process_id: u32,
    tcp_port: u16,
    metrics: &Metrics,
    log: &Log,
    clients: usize,
    client_buffer_bytes: usize,
    uptime_ms: u64,
) -> ServerFacts {
    ServerFacts {
        process_id,
        tcp_port,
        uptime_s: uptime_ms / 1000,
        connected_clients: clients,
        max_clients: config.max_clients,
        total_connections_received: metrics.connections_accepted,
        rejected_connections: metrics.connections_rejected,
        total_commands_processed: metrics.requests.processed(),
        total_error_replies: metrics.requests.total(Outcome::Error),
        total_redirect_replies: metrics.requests.total(Outcome::Redirect),
        log_syncs: metrics.log_syncs(),
        log_bytes: log.disk_bytes(),
        client_buffer_bytes,
    }
}

impl Server {
    /// `GET /health`: 200 `ok: leader <id>` while the node knows a leader
    /// (and, if it leads, hears from a majority); 503 and why otherwise.
    pub(super) fn health_response(&self) -> Response {
        match self.node.health(self.now_ms()) {
            Ok(leader) => Response::text(200, &format!("ok: leader {leader}")),
            Err(reason) => Response::text(503, reason),
        }
    }

    /// `GET /metrics`: every family, in Prometheus's text format.
    pub(super) fn metrics_response(&self) -> Response {
        let mut out = Exposition::new();
        self.export_process(&mut out);
        self.export_clients(&mut out);
        self.export_requests(&mut out);
        self.export_store(&mut out);
        self.export_log(&mut out);
        self.export_cluster(&mut out);
        export_node_stats(&mut out, &self.node);
        Response {
            status: 200,
            content_type: CONTENT_TYPE,
            body: out.finish(),
            allow: None,
        }
    }

    fn export_process(&self, out: &mut Exposition) {
        out.family(
            "kvstore_build_info",
            Kind::Gauge,
            "The kvstore version running, as a label; always 1.",
        );
        let version = env!("CARGO_PKG_VERSION");
        out.sample("kvstore_build_info", &[("version", version)], 1u8);
        out.gauge(
            "process_start_time_seconds",
            "Start time of the process since the Unix epoch, in seconds.",
            self.metrics.start_time_s,
        );
        if let Some(bytes) = resident_memory_bytes() {
            out.gauge(
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                bytes,
            );
        }
        if let Some(count) = open_descriptors() {
            out.gauge(
                "process_open_fds",
                "Number of open file descriptors.",
                count,
            );
        }
        if let Ok((soft_limit, _)) = rlimit::getrlimit(rlimit::Resource::NOFILE) {
            out.gauge(
                "process_max_fds",
                "Maximum number of open file descriptors (the soft limit).",
                soft_limit,
            );
        }
    }

    fn export_clients(&self, out: &mut Exposition) {
        out.gauge(
            "kvstore_connected_clients",
            "Client connections open (peers' inbound connections not included).",
            self.clients,
        );
        out.gauge(
            "kvstore_max_clients",
            "Client connections allowed (--max-clients, as fitted to the open-file limit).",
            self.config.max_clients,
        );
        out.counter(
            "kvstore_connections_accepted_total",
            "Connections accepted on the client port, refused ones included.",
            self.metrics.connections_accepted,
        );
        out.counter(
            "kvstore_connections_rejected_total",
            "Connections refused for --max-clients.",
            self.metrics.connections_rejected,
        );
        out.gauge(
            "kvstore_client_buffer_bytes",
            "Bytes all client connections' buffers hold (--max-client-buffer-bytes bounds it).",
            self.client_buffer_bytes,
        );
    }

    fn export_requests(&self, out: &mut Exposition) {
        let mut counted = self.metrics.requests.nonzero().peekable();
        if counted.peek().is_none() {
            return;
        }
        out.family(
            "kvstore_requests_total",
            Kind::Counter,
            "Requests executed, line protocol and RESP, by command and by what the reply \
             said: ok, error, or redirect (to the leader, or no leader known).",
        );
        for (command, outcome, count) in counted {
            let labels = [("command", command), ("result", outcome.name())];
            out.sample("kvstore_requests_total", &labels, count);
        }
    }

    fn export_store(&self, out: &mut Exposition) {
        let status = self.node.status();
        out.gauge(
            "kvstore_keys",
            "Keys in the store.",
            self.node.store().len(),
        );
        out.gauge(
            "kvstore_used_memory_bytes",
            "The store's memory as --max-memory-bytes counts it (keys, values, overhead).",
            status.used_memory_bytes,
        );
        out.gauge(
            "kvstore_max_memory_bytes",
            "--max-memory-bytes; 0 when there is no limit.",
            status.max_memory_bytes,
        );
    }

    fn export_log(&self, out: &mut Exposition) {
        out.gauge(
            "kvstore_log_bytes",
            "Bytes of log on disk, all segments.",
            self.log.disk_bytes(),
        );
        out.gauge(
            "kvstore_log_last_index",
            "Index of the last record in the log.",
            self.node.last_index(),
        );
        out.gauge(
            "kvstore_log_durable_index",
            "Index up to which the log is known durable on this node's disk.",
            self.node.durable_index(),
        );
        out.gauge(
            "kvstore_snapshot_index",
            "Index the newest durable snapshot covers; 0 for none.",
            self.node.status().snapshot_index,
        );
        out.histogram(
            "kvstore_log_fsync_duration_seconds",
            "Time to make one group commit durable: fdatasync of each segment written, and \
             of the directory when a segment was added.",
            &self.metrics.log_sync_seconds,
        );
        out.histogram(
            "kvstore_read_round_duration_seconds",
            "From a ReadIndex round sent to a majority confirming it: what a linearizable \
             read on a cluster leader waits beyond the store.",
            &self.metrics.read_round_seconds,
        );
        out.histogram(
            "kvstore_log_batch_records",
            "Records per log write: the size of each group commit.",
            &self.metrics.log_batch_records,
        );
    }

    fn export_cluster(&self, out: &mut Exposition) {
        let status = self.node.status();
        out.family(
            "kvstore_role",
            Kind::Gauge,
            "The node's role: 1 for the role it plays, 0 for the others.",
        );
        for role in ROLE_NAMES {
            let playing = u8::from(role == status.role);
            out.sample("kvstore_role", &[("role", role)], playing);
        }
        let leader = status.leader.map_or(-1, |id| id as i64);
        out.gauge(
            "kvstore_leader_id",
            "The leader this node knows (itself if it leads); -1 for none.",
            leader,
        );
        out.gauge("kvstore_epoch", "The highest epoch promised.", status.epoch);
        out.gauge(
            "kvstore_commit_index",
            "Every record up to this index is committed.",
            status.commit_index,
        );
        out.gauge(
            "kvstore_healthy",
            "1 when /health answers 200 (a leader is known and, on the leader, a majority \
             is heard), else 0.",
            u8::from(self.node.health(self.now_ms()).is_ok()),
        );
        self.export_followers(out);
        self.export_peers(out);
    }

    /// A leader's view of each follower.
    fn export_followers(&self, out: &mut Exposition) {
        let followers = self.node.followers();
        if followers.is_empty() {
            return;
        }
        let ids: Vec<String> = followers.iter().map(|f| f.id.to_string()).collect();
        out.family(
            "kvstore_follower_match_index",
            Kind::Gauge,
            "On the leader: the index up to which each follower's log is acknowledged durable.",
        );
        for (follower, id) in followers.iter().zip(&ids) {
            let labels = [("follower", id.as_str())];
            out.sample(
                "kvstore_follower_match_index",
                &labels,
                follower.match_index,
            );
        }
        out.family(
            "kvstore_follower_lag_records",
            Kind::Gauge,
            "On the leader: records each follower has not acknowledged yet.",
        );
        for (follower, id) in followers.iter().zip(&ids) {
            let labels = [("follower", id.as_str())];
            out.sample(
                "kvstore_follower_lag_records",
                &labels,
                follower.lag_records,
            );
        }
    }

    /// Each configured peer's outbound link: up once its handshake is done.
    fn export_peers(&self, out: &mut Exposition) {
        if self.links.is_empty() {
            return;
        }
        out.family(
            "kvstore_peer_up",
            Kind::Gauge,
            "1 while this node's link to a configured peer is up (handshake done), else 0. \
             peer is the node id, unknown until the first handshake.",
        );
        for link in &self.links {
            let up = link.endpoint.is_some_and(|key| {
                matches!(
                    self.endpoints.get(key),
                    Some(Endpoint::Outbound { connection, .. })
                        if matches!(connection.state, LinkState::Ready { .. })
                )
            });
            let id = link.id.map_or("unknown".to_string(), |id| id.to_string());
            let address = link.address.to_string();
            let labels = [("peer", id.as_str()), ("address", address.as_str())];
            out.sample("kvstore_peer_up", &labels, u8::from(up));
        }
    }
}

/// The core's own counters (`Node::stats`), the same figures `INFO`'s
/// stats section shows.
fn export_node_stats(out: &mut Exposition, node: &Node) {
    let stats = node.stats();
    out.counter(
        "kvstore_elections_started_total",
        "Elections this node started.",
        stats.elections_started,
    );
    out.counter(
        "kvstore_elections_won_total",
        "Elections this node won.",
        stats.elections_won,
    );
    out.counter(
        "kvstore_leader_changes_total",
        "Changes of the leader this node knows.",
        stats.leader_changes,
    );
    out.counter(
        "kvstore_leader_step_downs_total",
        "Times this node stopped leading.",
        stats.stepped_down,
    );
    out.counter(
        "kvstore_snapshots_taken_total",
        "Snapshots this node took.",
        stats.snapshots_taken,
    );
    out.counter(
        "kvstore_snapshots_installed_total",
        "Snapshots installed from a leader.",
        stats.snapshots_installed,
    );
    out.counter(
        "kvstore_read_rounds_started_total",
        "ReadIndex rounds sent.",
        stats.read_rounds_started,
    );
    out.counter(
        "kvstore_read_rounds_confirmed_total",
        "ReadIndex rounds a majority confirmed.",
        stats.read_rounds_confirmed,
    );
}

/// The process's resident memory: `VmRSS` of `/proc/self/status` (the
/// resident pages of `/proc/self/statm`, in bytes, with no page size to
/// look up).
fn resident_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Descriptors open: the entries of `/proc/self/fd`, less the one the
/// listing itself opens.
fn open_descriptors() -> Option<usize> {
    let entries = std::fs::read_dir("/proc/self/fd").ok()?;
    Some(entries.count().saturating_sub(1))
}
