//! What a RESP client asks about the server: `HELLO`, `ROLE`, `INFO`,
//! `CONFIG GET` and Redis Cluster's `CLUSTER SLOTS|SHARDS|NODES|INFO|MYID|
//! KEYSLOT`, in Redis 7's formats.
//!
//! A kvstore cluster shows itself to Redis clients as a Redis Cluster of
//! one shard: every slot on the leader, the followers its replicas. Cluster
//! clients (redis-py `RedisCluster`, `redis-cli -c`, the Rust `redis`
//! crate's `ClusterClient`, Jedis, Lettuce) then send every key to the
//! leader and follow a failover by the `MOVED` and `CLUSTERDOWN` replies
//! and by asking again (see `docs/CLUSTER.md`).

use std::fmt::{self, Write as _};
use std::net::SocketAddr;

use crate::protocol::command_table::CommandSpec;
use crate::protocol::keyslot::{SLOTS, keyslot};
use crate::protocol::resp::Args;
use crate::protocol::resp_reply::{self as wire, Version};

use super::commands::{Call, name_session, parse_i64, unknown_subcommand};
use super::session::Session;
use super::{Node, NodeId, Role};

/// The Redis version kvstore answers as (`HELLO`, `INFO`): clients pick
/// features by it, and kvstore speaks Redis 7's protocol.
pub const REDIS_VERSION: &str = "7.0.0";

/// What the driver knows and the core does not, for `INFO` and `HELLO`.
#[derive(Debug, Clone, Default)]
pub struct ServerFacts {
    pub process_id: u32,
    pub tcp_port: u16,
    pub uptime_s: u64,
    pub connected_clients: usize,
    pub max_clients: usize,
    pub total_connections_received: u64,
    pub rejected_connections: u64,
    pub total_commands_processed: u64,
    /// Requests answered with an error (Redis's `total_error_replies`).
    pub total_error_replies: u64,
    /// Requests sent to the leader, or told none is known.
    pub total_redirect_replies: u64,
    /// fdatasyncs of the log completed.
    pub log_syncs: u64,
    /// Bytes of log on disk (all segments).
    pub log_bytes: u64,
    /// What all client buffers hold.
    pub client_buffer_bytes: usize,
}

impl Node {
    /// Commands about the server rather than keys.
    pub(super) fn introspect(
        &mut self,
        spec: &CommandSpec,
        args: &Args<'_>,
        session: &mut Session,
        facts: &ServerFacts,
        call: &mut Call<'_>,
    ) {
        match spec.name {
            "hello" => self.hello(args, session, call),
            "role" => self.redis_role(call),
            "info" => self.info(args, facts, call),
            "config" => self.config_get(args, call),
            "cluster" => self.cluster(args, call),
            _ => call.error(&format!("ERR command '{}' is not implemented", spec.name)),
        }
    }

    /// `HELLO [protover [AUTH user pass] [SETNAME name]]` (AUTH was checked
    /// by the connection, which owns the password).
    fn hello(&mut self, args: &Args<'_>, session: &mut Session, call: &mut Call<'_>) {
        let mut version = call.version;
        if args.len() > 1 {
            version = match parse_i64(args.get(1)) {
                Some(2) => Version::Resp2,
                Some(3) => Version::Resp3,
                Some(_) => return call.error("NOPROTO unsupported protocol version"),
                None => {
                    return call.error("ERR Protocol version is not an integer or out of range");
                }
            };
        }
        let mut name = None;
        let mut at = 2;
        while at < args.len() {
            let option = args.get(at).to_ascii_uppercase();
            match option.as_slice() {
                b"AUTH" if at + 2 < args.len() => at += 3,
                b"SETNAME" if at + 1 < args.len() => {
                    name = Some(args.get(at + 1));
                    at += 2;
                }
                _ => {
                    let option = String::from_utf8_lossy(args.get(at));
                    return call.error(&format!("ERR Syntax error in HELLO option '{option}'"));
                }
            }
        }
        if let Some(name) = name
            && let Err(text) = name_session(name, session)
        {
            return call.error(text);
        }
        call.version = version;
        self.hello_map(session, call);
    }

    fn hello_map(&self, session: &Session, call: &mut Call<'_>) {
        let out = &mut *call.out;
        wire::map(out, 7, call.version);
        wire::bulk(out, b"server");
        wire::bulk(out, b"kvstore");
        wire::bulk(out, b"version");
        wire::bulk(out, REDIS_VERSION.as_bytes());
        wire::bulk(out, b"proto");
        wire::integer(out, if call.version == Version::Resp3 { 3 } else { 2 });
        wire::bulk(out, b"id");
        wire::integer(out, session.id as i64);
        wire::bulk(out, b"mode");
        wire::bulk(out, self.redis_mode().as_bytes());
        wire::bulk(out, b"role");
        wire::bulk(out, self.redis_role_name().as_bytes());
        wire::bulk(out, b"modules");
        wire::array(out, 0);
    }

    fn redis_mode(&self) -> &'static str {
        if self.config.cluster_size > 1 {
            "cluster"
        } else {
            "standalone"
        }
    }

    fn redis_role_name(&self) -> &'static str {
        if self.is_serving_leader() {
            "master"
        } else {
            "replica"
        }
    }

    /// `ROLE` as Redis gives it: a leader is a master with its followers'
    /// acknowledged indexes as their offsets; anyone else is a replica of
    /// the leader it knows (`connect` while it knows none).
    fn redis_role(&self, call: &mut Call<'_>) {
        let out = &mut *call.out;
        if let Role::Leader { followers, .. } = &self.role {
            wire::array(out, 3);
            wire::bulk(out, b"master");
            wire::integer(out, self.commit_index as i64);
            wire::array(out, followers.len());
            for (id, progress) in followers {
                let address = self.peers.get(id).map(|peer| peer.client_address);
                wire::array(out, 3);
                wire::bulk(out, host_of(address).as_bytes());
                wire::bulk(out, port_of(address).to_string().as_bytes());
                wire::bulk(out, progress.match_index().to_string().as_bytes());
            }
            return;
        }
        let leader = self.leader_hint().map(|(_, address)| address);
        wire::array(out, 5);
        wire::bulk(out, b"slave");
        wire::bulk(out, host_of(leader).as_bytes());
        wire::integer(out, leader.map_or(-1, |address| i64::from(address.port())));
        let state: &[u8] = if leader.is_some() {
            b"connected"
        } else {
            b"connect"
        };
        wire::bulk(out, state);
        wire::integer(out, self.commit_index as i64);
    }

    /// `CONFIG GET name...`: the few settings tools ask about (redis-
    /// benchmark asks `save` and `appendonly`); unknown names are left out.
    fn config_get(&self, args: &Args<'_>, call: &mut Call<'_>) {
        if !args.get(1).eq_ignore_ascii_case(b"get") {
            return call.error(&unknown_subcommand(args.get(1), "CONFIG"));
        }
        if args.len() < 3 {
            return call.error(&super::commands::wrong_arity("config|get"));
        }
        let max_memory = self.config.max_memory_bytes.unwrap_or(0).to_string();
        let known: [(&str, &str); 5] = [
            ("save", ""),
            ("appendonly", "yes"),
            ("appendfsync", "always"),
            ("maxmemory", &max_memory),
            ("databases", "1"),
        ];
        let matches: Vec<(&str, &str)> = known
            .iter()
            .filter(|(name, _)| {
                args.iter()
                    .skip(2)
                    .any(|asked| asked == b"*" || asked.eq_ignore_ascii_case(name.as_bytes()))
            })
            .copied()
            .collect();
        wire::map(call.out, matches.len(), call.version);
        for (name, value) in matches {
            wire::bulk(call.out, name.as_bytes());
            wire::bulk(call.out, value.as_bytes());
        }
    }

    /// `INFO [section ...]`: Redis's `field:value` text, with kvstore's own
    /// fields beside Redis's.
    fn info(&self, args: &Args<'_>, facts: &ServerFacts, call: &mut Call<'_>) {
        let wanted = |section: &str| {
            args.len() == 1
                || args.iter().skip(1).any(|asked| {
                    asked.eq_ignore_ascii_case(section.as_bytes())
                        || asked.eq_ignore_ascii_case(b"all")
                        || asked.eq_ignore_ascii_case(b"everything")
                        || asked.eq_ignore_ascii_case(b"default")
                })
        };
        let text = self.info_text(facts, InfoFormat::Resp, wanted);
        wire::verbatim(call.out, text.as_bytes(), call.version);
    }

    /// The line protocol's `INFO`: every field of RESP's `INFO`, in the same
    /// order, as `name=value` pairs separated by single spaces on one line
    /// (no value holds a space), without its terminator.
    pub fn info_line(&self, facts: &ServerFacts) -> String {
        self.info_text(facts, InfoFormat::Line, |_| true)
    }

    /// The `wanted` sections of `INFO` in `format`.
    fn info_text(
        &self,
        facts: &ServerFacts,
        format: InfoFormat,
        wanted: impl Fn(&str) -> bool,
    ) -> String {
        let mut text = InfoText::new(format);
        for (name, section) in INFO_SECTIONS {
            if wanted(name) {
                text.section(name);
                section(self, facts, &mut text);
            }
        }
        text.text
    }

    fn info_server(&self, facts: &ServerFacts, text: &mut InfoText) {
        text.field("redis_version", REDIS_VERSION);
        text.field("kvstore_version", env!("CARGO_PKG_VERSION"));
        text.field("redis_mode", self.redis_mode());
        text.field("arch_bits", 64);
        text.field("process_id", facts.process_id);
        text.field("tcp_port", facts.tcp_port);
        text.field("uptime_in_seconds", facts.uptime_s);
        text.field("uptime_in_days", facts.uptime_s / 86_400);
        text.field("node_id", self.config.id);
    }

    fn info_clients(&self, facts: &ServerFacts, text: &mut InfoText) {
        text.field("connected_clients", facts.connected_clients);
        text.field("maxclients", facts.max_clients);
        text.field("blocked_clients", 0);
        text.field("client_buffer_bytes", facts.client_buffer_bytes);
    }

    fn info_memory(&self, _facts: &ServerFacts, text: &mut InfoText) {
        text.field("used_memory", self.store.used_bytes());
        text.field("maxmemory", self.config.max_memory_bytes.unwrap_or(0));
        text.field("maxmemory_policy", "noeviction");
    }

    fn info_persistence(&self, facts: &ServerFacts, text: &mut InfoText) {
        text.field("loading", 0);
        text.field("aof_enabled", 1);
        text.field("log_bytes", facts.log_bytes);
        text.field("log_last_index", self.log.last_index());
        text.field("log_durable_index", self.log.durable_index());
        text.field("log_syncs", facts.log_syncs);
        text.field("snapshot_index", self.snapshots.newest.index);
    }

    fn info_stats(&self, facts: &ServerFacts, text: &mut InfoText) {
        text.field(
            "total_connections_received",
            facts.total_connections_received,
        );
        text.field("total_commands_processed", facts.total_commands_processed);
        text.field("rejected_connections", facts.rejected_connections);
        text.field("total_error_replies", facts.total_error_replies);
        text.field("total_redirect_replies", facts.total_redirect_replies);
        let stats = self.stats();
        text.field("elections_started", stats.elections_started);
        text.field("elections_won", stats.elections_won);
        text.field("leader_changes", stats.leader_changes);
        text.field("leader_step_downs", stats.stepped_down);
        text.field("snapshots_taken", stats.snapshots_taken);
        text.field("snapshots_installed", stats.snapshots_installed);
        text.field("read_rounds_started", stats.read_rounds_started);
        text.field("read_rounds_confirmed", stats.read_rounds_confirmed);
    }

    fn info_replication(&self, _facts: &ServerFacts, text: &mut InfoText) {
        let role = self.role_reply();
        let redis_role = if self.is_serving_leader() {
            "master"
        } else {
            "slave"
        };
        text.field("role", redis_role);
        text.field("kvstore_role", role.role);
        text.field("leader_id", role.leader.map_or(-1, |id| id as i128));
        text.field("epoch", role.epoch);
        text.field("commit_index", role.commit_index);
        if let Role::Leader { followers, .. } = &self.role {
            text.field("connected_slaves", followers.len());
            for (number, (id, progress)) in followers.iter().enumerate() {
                let address = self.peers.get(id).map(|peer| peer.client_address);
                let online = self.peers.get(id).is_some_and(|peer| peer.up);
                text.field(
                    format_args!("slave{number}"),
                    format_args!(
                        "id={id},ip={},port={},state={},offset={},lag={}",
                        host_of(address),
                        port_of(address),
                        if online { "online" } else { "down" },
                        progress.match_index(),
                        self.log.last_index().saturating_sub(progress.match_index()),
                    ),
                );
            }
        } else if let Some((_, address)) = self.leader_hint() {
            let up = self.known_leader().is_some();
            text.field("master_host", address.ip());
            text.field("master_port", address.port());
            text.field("master_link_status", if up { "up" } else { "down" });
        }
    }

    fn info_cluster(&self, _facts: &ServerFacts, text: &mut InfoText) {
        text.field("cluster_enabled", u8::from(self.config.cluster_size > 1));
    }

    fn info_keyspace(&self, _facts: &ServerFacts, text: &mut InfoText) {
        if !self.store.is_empty() {
            text.field(
                "db0",
                format_args!("keys={},expires=0,avg_ttl=0", self.store.len()),
            );
        }
    }

    /// Redis Cluster's view of a kvstore cluster: one shard, all slots.
    fn cluster(&self, args: &Args<'_>, call: &mut Call<'_>) {
        if self.config.cluster_size == 1 {
            return call.error("ERR This instance has cluster support disabled");
        }
        let sub = args.get(1).to_ascii_lowercase();
        match sub.as_slice() {
            b"keyslot" if args.len() == 3 => {
                wire::integer(call.out, i64::from(keyslot(args.get(2))))
            }
            b"myid" => wire::bulk(call.out, cluster_id(self.config.id).as_bytes()),
            b"info" => self.cluster_info(call),
            b"slots" | b"shards" | b"nodes" => match self.cluster_members() {
                Some(members) => match sub.as_slice() {
                    b"slots" => cluster_slots(&members, call),
                    b"shards" => cluster_shards(&members, call),
                    _ => self.cluster_nodes(&members, call),
                },
                None => call.error(crate::protocol::CLUSTER_DOWN),
            },
            _ => call.error(&unknown_subcommand(args.get(1), "CLUSTER")),
        }
    }

    fn cluster_info(&self, call: &mut Call<'_>) {
        let state = if self.cluster_members().is_some() {
            "ok"
        } else {
            "fail"
        };
        let text = format!(
            "cluster_state:{state}\r\ncluster_slots_assigned:{SLOTS}\r\ncluster_slots_ok:{SLOTS}\r\n\
             cluster_slots_pfail:0\r\ncluster_slots_fail:0\r\ncluster_known_nodes:{}\r\n\
             cluster_size:1\r\ncluster_current_epoch:{}\r\ncluster_my_epoch:{}\r\n",
            self.config.cluster_size, self.promised_epoch, self.promised_epoch,
        );
        wire::verbatim(call.out, text.as_bytes(), call.version);
    }

    /// The leader first, then the other nodes whose client address is
    /// known; `None` while no leader (or its address) is known.
    fn cluster_members(&self) -> Option<Vec<Member>> {
        let leader_id = self.known_leader()?;
        let address_of = |id: NodeId| {
            if id == self.config.id {
                self.client_address
            } else {
                self.peers.get(&id).map(|peer| peer.client_address)
            }
        };
        let mut members = vec![Member {
            id: leader_id,
            address: address_of(leader_id)?,
        }];
        let others = std::iter::once(self.config.id).chain(self.peers.keys().copied());
        for id in others.filter(|id| *id != leader_id) {
            if let Some(address) = address_of(id) {
                members.push(Member { id, address });
            }
        }
        Some(members)
    }

    fn cluster_nodes(&self, members: &[Member], call: &mut Call<'_>) {
        let leader = cluster_id(members[0].id);
        let mut text = String::new();
        for (position, member) in members.iter().enumerate() {
            let myself = if member.id == self.config.id {
                "myself,"
            } else {
                ""
            };
            let (role, master, slots) = if position == 0 {
                ("master", "-".to_string(), format!(" 0-{}", SLOTS - 1))
            } else {
                ("slave", leader.clone(), String::new())
            };
            let _ = writeln!(
                text,
                "{} {}@{} {myself}{role} {master} 0 0 {} connected{slots}",
                cluster_id(member.id),
                member.address,
                member.address.port(),
                self.promised_epoch,
            );
        }
        wire::verbatim(call.out, text.as_bytes(), call.version);
    }
}

type InfoSection = fn(&Node, &ServerFacts, &mut InfoText);

/// `INFO`'s sections, in Redis's order: both forms of `INFO` write these.
const INFO_SECTIONS: [(&str, InfoSection); 8] = [
    ("server", Node::info_server),
    ("clients", Node::info_clients),
    ("memory", Node::info_memory),
    ("persistence", Node::info_persistence),
    ("stats", Node::info_stats),
    ("replication", Node::info_replication),
    ("cluster", Node::info_cluster),
    ("keyspace", Node::info_keyspace),
];

/// How `INFO`'s fields are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InfoFormat {
    /// RESP: sections of `name:value\r\n` lines under `# Title` headers,
    /// a blank line between sections.
    Resp,
    /// The line protocol: `name=value` pairs separated by a space.
    Line,
}

/// `INFO`'s text being written, in one of its two forms.
struct InfoText {
    text: String,
    format: InfoFormat,
}

impl InfoText {
    fn new(format: InfoFormat) -> Self {
        InfoText {
            text: String::new(),
            format,
        }
    }

    /// Starts section `name` (RESP only: the line form has no sections).
    fn section(&mut self, name: &str) {
        if self.format == InfoFormat::Line {
            return;
        }
        if !self.text.is_empty() {
            self.text.push_str("\r\n");
        }
        let mut title = name.to_string();
        title[..1].make_ascii_uppercase();
        let _ = write!(self.text, "# {title}\r\n");
    }

    fn field(&mut self, name: impl fmt::Display, value: impl fmt::Display) {
        // Writing into a String cannot fail.
        let _ = match self.format {
            InfoFormat::Resp => write!(self.text, "{name}:{value}\r\n"),
            InfoFormat::Line if self.text.is_empty() => write!(self.text, "{name}={value}"),
            InfoFormat::Line => write!(self.text, " {name}={value}"),
        };
    }
}

/// A node as Redis Cluster clients see it.
struct Member {
    id: NodeId,
    address: SocketAddr,
}

/// A node id as Redis Cluster writes one: 40 hex digits.
fn cluster_id(id: NodeId) -> String {
    format!("{id:040x}")
}

fn host_of(address: Option<SocketAddr>) -> String {
    address.map_or_else(String::new, |address| address.ip().to_string())
}

fn port_of(address: Option<SocketAddr>) -> u16 {
    address.map_or(0, |address| address.port())
}

/// `CLUSTER SLOTS`: one range, the leader then its replicas.
fn cluster_slots(members: &[Member], call: &mut Call<'_>) {
    let out = &mut *call.out;
    wire::array(out, 1);
    wire::array(out, 2 + members.len());
    wire::integer(out, 0);
    wire::integer(out, i64::from(SLOTS - 1));
    for member in members {
        wire::array(out, 3);
        wire::bulk(out, member.address.ip().to_string().as_bytes());
        wire::integer(out, i64::from(member.address.port()));
        wire::bulk(out, cluster_id(member.id).as_bytes());
    }
}

/// `CLUSTER SHARDS`: one shard holding every slot.
fn cluster_shards(members: &[Member], call: &mut Call<'_>) {
    let version = call.version;
    let out = &mut *call.out;
    wire::array(out, 1);
    wire::map(out, 2, version);
    wire::bulk(out, b"slots");
    wire::array(out, 2);
    wire::integer(out, 0);
    wire::integer(out, i64::from(SLOTS - 1));
    wire::bulk(out, b"nodes");
    wire::array(out, members.len());
    for (position, member) in members.iter().enumerate() {
        let role: &[u8] = if position == 0 { b"master" } else { b"replica" };
        wire::map(out, 7, version);
        for (name, value) in [
            (&b"id"[..], cluster_id(member.id).into_bytes()),
            (b"ip", member.address.ip().to_string().into_bytes()),
            (b"endpoint", member.address.ip().to_string().into_bytes()),
            (b"role", role.to_vec()),
            (b"health", b"online".to_vec()),
        ] {
            wire::bulk(out, name);
            wire::bulk(out, &value);
        }
        wire::bulk(out, b"port");
        wire::integer(out, i64::from(member.address.port()));
        wire::bulk(out, b"replication-offset");
        wire::integer(out, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{run, write_log};
    use super::super::{NodeConfig, ReplyQueue};
    use super::*;

    fn facts() -> ServerFacts {
        ServerFacts {
            process_id: 42,
            tcp_port: 7001,
            uptime_s: 90_000,
            connected_clients: 2,
            max_clients: 100,
            total_connections_received: 7,
            rejected_connections: 1,
            total_commands_processed: 9,
            total_error_replies: 3,
            total_redirect_replies: 0,
            log_syncs: 5,
            log_bytes: 300,
            client_buffer_bytes: 4096,
        }
    }

    /// A single node holding `k` = `v`, durable.
    fn node_with_one_key() -> Node {
        let mut node = Node::new(NodeConfig::single(1));
        node.start(0);
        write_log(&mut node);
        run(&mut node, &mut ReplyQueue::new(), b"PUT k v");
        write_log(&mut node);
        node
    }

    #[test]
    fn the_line_protocol_info_is_one_line_of_every_field() {
        let node = node_with_one_key();
        let expected = format!(
            "redis_version=7.0.0 kvstore_version={} redis_mode=standalone arch_bits=64 \
             process_id=42 tcp_port=7001 uptime_in_seconds=90000 uptime_in_days=1 node_id=1 \
             connected_clients=2 maxclients=100 blocked_clients=0 client_buffer_bytes=4096 \
             used_memory={} maxmemory=0 maxmemory_policy=noeviction \
             loading=0 aof_enabled=1 log_bytes=300 log_last_index=2 log_durable_index=2 \
             log_syncs=5 snapshot_index=0 \
             total_connections_received=7 total_commands_processed=9 rejected_connections=1 \
             total_error_replies=3 total_redirect_replies=0 elections_started=1 \
             elections_won=1 leader_changes=0 leader_step_downs=0 snapshots_taken=0 \
             snapshots_installed=0 read_rounds_started=0 read_rounds_confirmed=0 \
             role=master kvstore_role=leader leader_id=1 epoch=1 commit_index=2 connected_slaves=0 \
             cluster_enabled=0 db0=keys=1,expires=0,avg_ttl=0",
            env!("CARGO_PKG_VERSION"),
            crate::store::Store::pair_cost(1, 1),
        );
        assert_eq!(node.info_line(&facts()), expected);
    }

    #[test]
    fn both_forms_of_info_carry_the_same_fields_in_the_same_order() {
        let node = node_with_one_key();
        let resp = node.info_text(&facts(), InfoFormat::Resp, |_| true);
        let from_resp: Vec<(&str, &str)> = resp
            .split("\r\n")
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .map(|line| line.split_once(':').expect("name:value"))
            .collect();
        let line = node.info_line(&facts());
        let from_line: Vec<(&str, &str)> = line
            .split(' ')
            .map(|pair| pair.split_once('=').expect("name=value"))
            .collect();
        assert_eq!(from_resp, from_line);
        assert!(resp.starts_with("# Server\r\nredis_version:7.0.0\r\n"));
        assert!(resp.contains("\r\n\r\n# Clients\r\n"));
    }
}
