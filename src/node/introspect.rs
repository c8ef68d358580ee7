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

use std::fmt::Write as _;
use std::net::SocketAddr;

use crate::protocol::command_table::CommandSpec;
use crate::protocol::keyslot::{SLOTS, keyslot};
use crate::protocol::resp::Args;
use crate::protocol::resp_reply::{self as wire, Version};

use super::commands::{Call, parse_i64, set_name, unknown_subcommand};
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
        if let Some(name) = name {
            let mut scratch = Vec::new();
            let mut check = Call {
                out: &mut scratch,
                version,
                gate: call.gate,
                flow: call.flow,
            };
            set_name(name, session, &mut check);
            if scratch.first() == Some(&b'-') {
                call.out.extend_from_slice(&scratch);
                return;
            }
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
        let mut text = String::new();
        for (name, section) in [
            ("server", Self::info_server as InfoSection),
            ("clients", Self::info_clients),
            ("memory", Self::info_memory),
            ("persistence", Self::info_persistence),
            ("stats", Self::info_stats),
            ("replication", Self::info_replication),
            ("cluster", Self::info_cluster),
            ("keyspace", Self::info_keyspace),
        ] {
            if wanted(name) {
                if !text.is_empty() {
                    text.push_str("\r\n");
                }
                let mut title = name.to_string();
                title[..1].make_ascii_uppercase();
                let _ = write!(text, "# {title}\r\n");
                section(self, facts, &mut text);
            }
        }
        wire::verbatim(call.out, text.as_bytes(), call.version);
    }

    fn info_server(&self, facts: &ServerFacts, text: &mut String) {
        let _ = write!(
            text,
            "redis_version:{REDIS_VERSION}\r\nkvstore_version:{}\r\nredis_mode:{}\r\n\
             arch_bits:64\r\nprocess_id:{}\r\ntcp_port:{}\r\nuptime_in_seconds:{}\r\n\
             uptime_in_days:{}\r\nnode_id:{}\r\n",
            env!("CARGO_PKG_VERSION"),
            self.redis_mode(),
            facts.process_id,
            facts.tcp_port,
            facts.uptime_s,
            facts.uptime_s / 86_400,
            self.config.id,
        );
    }

    fn info_clients(&self, facts: &ServerFacts, text: &mut String) {
        let _ = write!(
            text,
            "connected_clients:{}\r\nmaxclients:{}\r\nblocked_clients:0\r\n\
             client_buffer_bytes:{}\r\n",
            facts.connected_clients, facts.max_clients, facts.client_buffer_bytes,
        );
    }

    fn info_memory(&self, _facts: &ServerFacts, text: &mut String) {
        let _ = write!(
            text,
            "used_memory:{}\r\nmaxmemory:{}\r\nmaxmemory_policy:noeviction\r\n",
            self.store.used_bytes(),
            self.config.max_memory_bytes.unwrap_or(0),
        );
    }

    fn info_persistence(&self, facts: &ServerFacts, text: &mut String) {
        let _ = write!(
            text,
            "loading:0\r\naof_enabled:1\r\nlog_bytes:{}\r\nlog_last_index:{}\r\n\
             log_durable_index:{}\r\nlog_syncs:{}\r\nsnapshot_index:{}\r\n",
            facts.log_bytes,
            self.log.last_index(),
            self.log.durable_index(),
            facts.log_syncs,
            self.snapshots.newest.index,
        );
    }

    fn info_stats(&self, facts: &ServerFacts, text: &mut String) {
        let _ = write!(
            text,
            "total_connections_received:{}\r\ntotal_commands_processed:{}\r\n\
             rejected_connections:{}\r\n",
            facts.total_connections_received,
            facts.total_commands_processed,
            facts.rejected_connections,
        );
    }

    fn info_replication(&self, _facts: &ServerFacts, text: &mut String) {
        let role = self.role_reply();
        let _ = write!(
            text,
            "role:{}\r\nkvstore_role:{}\r\nleader_id:{}\r\nepoch:{}\r\ncommit_index:{}\r\n",
            if self.is_serving_leader() {
                "master"
            } else {
                "slave"
            },
            role.role,
            role.leader.map_or(-1, |id| id as i128),
            role.epoch,
            role.commit_index,
        );
        if let Role::Leader { followers, .. } = &self.role {
            let _ = write!(text, "connected_slaves:{}\r\n", followers.len());
            for (number, (id, progress)) in followers.iter().enumerate() {
                let address = self.peers.get(id).map(|peer| peer.client_address);
                let online = self.peers.get(id).is_some_and(|peer| peer.up);
                let _ = write!(
                    text,
                    "slave{number}:id={id},ip={},port={},state={},offset={},lag={}\r\n",
                    host_of(address),
                    port_of(address),
                    if online { "online" } else { "down" },
                    progress.match_index(),
                    self.log.last_index().saturating_sub(progress.match_index()),
                );
            }
        } else if let Some((_, address)) = self.leader_hint() {
            let up = self.known_leader().is_some();
            let _ = write!(
                text,
                "master_host:{}\r\nmaster_port:{}\r\nmaster_link_status:{}\r\n",
                address.ip(),
                address.port(),
                if up { "up" } else { "down" },
            );
        }
    }

    fn info_cluster(&self, _facts: &ServerFacts, text: &mut String) {
        let enabled = u8::from(self.config.cluster_size > 1);
        let _ = write!(text, "cluster_enabled:{enabled}\r\n");
    }

    fn info_keyspace(&self, _facts: &ServerFacts, text: &mut String) {
        if !self.store.is_empty() {
            let _ = write!(
                text,
                "db0:keys={},expires=0,avg_ttl=0\r\n",
                self.store.len()
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

type InfoSection = fn(&Node, &ServerFacts, &mut String);

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
