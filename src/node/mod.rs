//! The sans-IO core: the only owner of state. It never performs I/O.
//!
//! Inputs are method calls: a parsed client request (with that client's
//! [`ReplyQueue`]), a peer message, a peer connection up or down, a timer,
//! and "the log is durable up to index i". Outputs are replies pushed onto
//! reply queues (each held behind a [`Gate`]) and the [`Step`]s that end a
//! turn: what it decided that an operator should read ([`Event`]s, which
//! the driver logs), an epoch to persist, log reads, timers, peer messages,
//! the log write, and which replies to release. [`Node::stats`] counts its
//! decisions.
//!
//! Every driver (the reactor in `net`, or the simulator in the tests) ends a
//! turn by asking [`Node::next_step`] for steps until there are none; the
//! order they come in, which the safety argument relies on, is written once
//! in `turn.rs`.
//!
//! A node of a one-node cluster elects itself at start-up and from then on is
//! the single-node server: a write is released once its record is durable.
//! The cluster design (Bully election made safe with epochs, majorities and
//! log adoption) is in `docs/CLUSTER.md`; its parts are in `election.rs` and
//! `replication.rs`.

mod commands;
mod election;
mod events;
mod health;
mod introspect;
mod log_tail;
pub mod message;
mod replication;
mod replies;
mod session;
mod snapshot;
mod strings;
mod transaction;
mod transfer;
mod turn;
mod validate;

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;

pub use events::{ElectionReason, Event, MAX_EVENTS_PER_TURN, NodeStats, StepDownReason};
pub use health::{FollowerProgress, ROLE_NAMES, Unhealthy};
pub use introspect::{REDIS_VERSION, ServerFacts};
pub use log_tail::LogWrite;
pub use message::{Envelope, Message, NodeId};
pub use replies::{Gate, ReplyQueue};
pub use session::Session;
pub use snapshot::{SnapshotPoint, SnapshotSummary, SnapshotWritten};
pub use transfer::{SNAPSHOT_CHUNK_BYTES, SNAPSHOT_WINDOW_BYTES, SnapshotRead};
pub use turn::{LogWriteOutcome, Step};
pub use validate::{InvalidFrame, check_frame};

use crate::config::{
    DEFAULT_ELECTION_TIMEOUT_MS, DEFAULT_HEARTBEAT_MS, FollowerReads, Replication,
};
use crate::log::{Entry, Op};
use crate::protocol::{ErrorReply, ParseError, Reply, Request, RoleReply};
use crate::store::{PREFETCH_BATCH, Store};
use log_tail::LogTail;
use replication::Progress;

/// What a node needs to know about its cluster and its timing.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub id: NodeId,
    /// Nodes in the configured cluster, this one included.
    pub cluster_size: usize,
    pub replication: Replication,
    pub follower_reads: FollowerReads,
    pub heartbeat_ms: u64,
    pub election_timeout_ms: u64,
    /// Seeds the jitter of election timers (deterministic in simulation).
    pub seed: u64,
    /// Committed records beyond this many bytes are dropped from memory
    /// and read back from the log file when a follower needs them.
    pub max_log_memory_bytes: usize,
    /// A snapshot starts once this much log was written since the newest
    /// (and more than its size); 0: only on request.
    pub snapshot_log_bytes: u64,
    /// A leader refuses a write that would take the store's accounted
    /// memory past this (`--max-memory-bytes`); `None`: no limit.
    pub max_memory_bytes: Option<usize>,
    /// Test-only: switch off one safety rule to show the simulator finds
    /// the damage. Never set outside tests.
    #[doc(hidden)]
    pub unsafe_skip_log_adoption: bool,
    /// Test-only: let the log go as soon as a snapshot's bytes are handed
    /// out, before the file is durable.
    #[doc(hidden)]
    pub unsafe_compact_before_snapshot_is_durable: bool,
    /// Test-only: take peer frames without checking them (`validate`).
    #[doc(hidden)]
    pub unsafe_skip_frame_checks: bool,
}

impl NodeConfig {
    /// A one-node cluster: the single-node server.
    pub fn single(id: NodeId) -> Self {
        NodeConfig {
            id,
            cluster_size: 1,
            replication: Replication::Sync,
            follower_reads: FollowerReads::Local,
            heartbeat_ms: DEFAULT_HEARTBEAT_MS,
            election_timeout_ms: DEFAULT_ELECTION_TIMEOUT_MS,
            seed: id,
            max_log_memory_bytes: crate::config::DEFAULT_LOG_MEMORY_BYTES,
            snapshot_log_bytes: crate::config::DEFAULT_SNAPSHOT_LOG_BYTES,
            max_memory_bytes: None,
            unsafe_skip_log_adoption: false,
            unsafe_compact_before_snapshot_is_durable: false,
            unsafe_skip_frame_checks: false,
        }
    }

    /// The node part of a server's configuration; `seed` jitters its timers.
    pub fn from_config(config: &crate::config::Config, seed: u64) -> Self {
        NodeConfig {
            id: config.id,
            cluster_size: config.peers.len() + 1,
            replication: config.replication,
            follower_reads: config.follower_reads,
            heartbeat_ms: config.heartbeat_ms,
            election_timeout_ms: config.election_timeout_ms,
            seed,
            max_log_memory_bytes: config.log_memory_bytes,
            snapshot_log_bytes: config.snapshot_log_bytes,
            max_memory_bytes: config.max_memory_bytes,
            unsafe_skip_log_adoption: false,
            unsafe_compact_before_snapshot_is_durable: false,
            unsafe_skip_frame_checks: false,
        }
    }

    fn majority(&self) -> usize {
        self.cluster_size / 2 + 1
    }
}

/// What the connection should do after a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// The client asked to close (QUIT): send what is queued, then close.
    Close,
    /// `SNAPSHOT`: no reply yet. The connection executes nothing more until
    /// [`Node::snapshot_reply`] for `attempt` is known, then queues it.
    AwaitSnapshot {
        attempt: u64,
    },
}

/// The two timers a node runs; arming one replaces its previous deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TimerKind {
    /// Leader: send heartbeats and check it still hears from a majority.
    Heartbeat,
    /// Everyone else: the current phase of finding a leader timed out.
    Election,
}

/// What the node has decided this turn besides the log write, handed out
/// as [`Step`]s.
#[derive(Debug, Default)]
struct Outbox {
    /// What to log, in the order decided (at most `MAX_EVENTS_PER_TURN`).
    events: VecDeque<Event>,
    /// Events beyond that bound since the last were handed out.
    dropped_events: u64,
    messages: Vec<(NodeId, Envelope)>,
    timers: Vec<(TimerKind, u64)>,
    /// Persist this promised epoch before sending any message.
    persist_epoch: Option<u64>,
    /// Records a follower or a new leader needs that memory no longer holds.
    log_reads: VecDeque<LogRead>,
    /// Chunks of snapshot files to send.
    snapshot_reads: VecDeque<SnapshotRead>,
}

/// A read of the log on disk the core asks for: whole records from
/// `from_index` on (at least one), up to about `max_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogRead {
    pub from_index: u64,
    pub max_bytes: usize,
    pub purpose: ReadPurpose,
}

/// A read of the log asks for this much.
const LOG_READ_BYTES: usize = 4 * 1024 * 1024;

/// What a log read is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadPurpose {
    /// Records from `next_index` on, for an `Append` to `to`. The read
    /// starts at the record before when it is on disk, for its epoch;
    /// otherwise that epoch is known (the compaction point's).
    Append {
        to: NodeId,
        next_index: u64,
        epoch_before: Option<u64>,
    },
    /// Records from `from_index` on, for a `FetchReply` to `to`.
    Fetch { to: NodeId, from_index: u64 },
}

/// A peer this node has a connection to, or had.
#[derive(Debug, Clone, Copy)]
struct Peer {
    client_address: SocketAddr,
    up: bool,
}

/// The role a node plays in the cluster.
#[derive(Debug)]
enum Role {
    Follower {
        leader: Option<NodeId>,
    },
    /// Bully: ELECTION sent to higher ids; waiting for an `Alive`.
    Electing {
        alive_heard: bool,
    },
    /// Asked for promises of `epoch` (Bully's COORDINATOR).
    Candidate {
        epoch: u64,
        promises: BTreeMap<NodeId, LogPosition>,
    },
    /// Won `epoch`; fetching the most up-to-date log before serving.
    Adopting {
        epoch: u64,
        source: NodeId,
        source_last_index: u64,
        /// Records fetched and appended so far, and own records cut.
        records_adopted: u64,
        records_cut: u64,
    },
    Leader {
        epoch: u64,
        followers: BTreeMap<NodeId, Progress>,
        since_ms: u64,
    },
}

/// Where a log ends, for comparing logs: later epoch wins, then longer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct LogPosition {
    last_epoch: u64,
    last_index: u64,
}

/// A write applied to the store ahead of its commit, and what it replaced.
#[derive(Debug)]
struct Undo {
    index: u64,
    key: Box<[u8]>,
    previous: Option<crate::store::StoredPair>,
}

/// A follower's acknowledgement that waits for its records to be durable.
#[derive(Debug, Clone, Copy)]
struct PendingAck {
    leader: NodeId,
    matched_index: u64,
    round: u64,
}

pub struct Node {
    config: NodeConfig,
    store: Store,
    log: LogTail,
    /// Every record at or below this is committed (held by a majority).
    commit_index: u64,
    /// The store reflects every record up to here.
    applied_index: u64,
    /// Records applied ahead of commit (leader only), oldest first.
    undo: VecDeque<Undo>,
    /// The index of the latest DEL this node applied as leader (or, on
    /// taking office, of its last record): what a read of a missing key
    /// may have observed.
    last_delete_index: u64,
    /// The highest epoch promised; persisted before anything relies on it.
    promised_epoch: u64,
    /// The highest epoch seen in any message (a new candidacy goes above it).
    seen_epoch: u64,
    role: Role,
    peers: BTreeMap<NodeId, Peer>,
    /// When the leader was last heard from (follower), for the election timer.
    last_heard_ms: u64,
    pending_ack: Option<PendingAck>,
    /// ReadIndex: the last round sent, the last a majority confirmed, and
    /// whether a read waits for a new round.
    sent_round: u64,
    confirmed_round: u64,
    round_wanted: bool,
    /// Bumped whenever this node stops leading: replies it held can no
    /// longer be trusted, and the driver must drop them.
    leadership_losses: u64,
    /// Replayed records up to here are known committed (from their markers).
    replay_commit_hint: u64,
    random_state: u64,
    outbox: Outbox,
    /// Where the turn contract is (see [`turn`]).
    phase: turn::Phase,
    /// A [`Step::ReadLog`] was handed out and its records not yet handed back.
    read_in_flight: bool,
    /// The leadership losses the driver has voided held replies for.
    voided_leadership_losses: u64,
    snapshots: snapshot::Snapshots,
    /// Snapshots on their way to other nodes.
    outgoing: BTreeMap<NodeId, transfer::Outgoing>,
    /// The writes of the RESP command being executed.
    effects: strings::Effects,
    /// Where this node takes clients (for `CLUSTER SLOTS`), once known.
    client_address: Option<SocketAddr>,
    /// Counts of its decisions, for metrics.
    stats: NodeStats,
    /// Elections started since it last had a leader (0: it has one).
    election_attempt: u64,
    /// The leader it last followed or was (for "leader changed from").
    last_known_leader: Option<NodeId>,
}

impl Node {
    /// A node with an empty log; replay adds what the disk holds.
    pub fn new(config: NodeConfig) -> Node {
        let promised_epoch = 0;
        let random_state = config.seed | 1;
        Node {
            config,
            store: Store::new(),
            log: LogTail::new(),
            commit_index: 0,
            applied_index: 0,
            undo: VecDeque::new(),
            last_delete_index: 0,
            promised_epoch,
            seen_epoch: promised_epoch,
            role: Role::Follower { leader: None },
            peers: BTreeMap::new(),
            last_heard_ms: 0,
            pending_ack: None,
            sent_round: 0,
            confirmed_round: 0,
            round_wanted: false,
            leadership_losses: 0,
            replay_commit_hint: 0,
            random_state,
            outbox: Outbox::default(),
            phase: turn::Phase::Idle,
            read_in_flight: false,
            voided_leadership_losses: 0,
            snapshots: snapshot::Snapshots::default(),
            outgoing: BTreeMap::new(),
            effects: strings::Effects::default(),
            client_address: None,
            stats: NodeStats::default(),
            election_attempt: 0,
            last_known_leader: None,
        }
    }

    /// Where this node takes clients: what Redis Cluster clients are told
    /// to connect to when it leads.
    pub fn set_client_address(&mut self, address: SocketAddr) {
        self.client_address = Some(address);
    }

    /// Takes one record read back from the log at start-up. Records up to
    /// the highest commit marker seen are applied; the rest wait for a leader.
    pub fn replay(&mut self, entry: &Entry<'_>) {
        self.note_log_bytes(crate::log::encoded_len(entry));
        self.log.append(entry);
        self.log.mark_replayed();
        self.replay_commit_hint = self.replay_commit_hint.max(entry.commit);
        if self.config.cluster_size == 1 {
            // Alone, durable is committed; keep no copy in memory.
            self.replay_commit_hint = entry.index;
        }
        self.commit_index = self.replay_commit_hint.min(self.log.last_index());
        self.apply_committed();
        self.evict_committed();
    }

    /// Drops committed records from memory: all of them alone (nobody asks
    /// again), those beyond the budget in a cluster (read back on demand).
    fn evict_committed(&mut self) {
        let limit = self.commit_index.min(self.applied_index);
        if self.config.cluster_size == 1 {
            self.log.evict_through(limit);
        } else {
            self.log
                .evict_to_budget(self.config.max_log_memory_bytes, limit);
        }
    }

    /// Restores the epoch an earlier run promised (before [`Node::start`]).
    pub fn restore_promised_epoch(&mut self, epoch: u64) {
        self.promised_epoch = self.promised_epoch.max(epoch);
        self.seen_epoch = self.seen_epoch.max(epoch);
    }

    /// Ends replay and starts the node's timers (a one-node cluster elects
    /// itself here).
    pub fn start(&mut self, now_ms: u64) {
        self.log.mark_replayed();
        self.promised_epoch = self.promised_epoch.max(self.log.last_epoch());
        self.seen_epoch = self.seen_epoch.max(self.promised_epoch);
        if self.config.cluster_size == 1 {
            self.note_election(ElectionReason::StartUp);
            self.become_candidate(now_ms);
        } else {
            self.last_heard_ms = now_ms;
            self.arm_election_timer(now_ms);
        }
    }

    /// Executes one client request, pushing its reply onto `replies`.
    pub fn handle_request(&mut self, request: Request<'_>, replies: &mut ReplyQueue) -> Flow {
        match request {
            Request::Get { key } => self.read(key, replies),
            Request::Put { key, value } => self.write(Op::Put { key, value }, replies),
            Request::Del { key } => self.delete(key, replies),
            Request::Ping => replies.push(Reply::Pong, Gate::OPEN, self.released()),
            Request::Role => {
                replies.push(Reply::Role(self.role_reply()), Gate::OPEN, self.released())
            }
            Request::Snapshot => return self.request_snapshot(replies),
            Request::Quit => return Flow::Close,
            Request::Auth { .. } | Request::Info => {
                // The connection answers AUTH (the password is not the
                // core's business) and INFO (with the driver's figures,
                // through `info_line`); reaching here is a driver's bug.
                debug_assert!(false, "AUTH or INFO reached the core");
                let name = crate::protocol::CommandName::new(b"AUTH");
                let reply = Reply::Error(ErrorReply::Parse(ParseError::UnknownCommand(name)));
                replies.push(reply, Gate::OPEN, self.released());
            }
        }
        Flow::Continue
    }

    fn read(&mut self, key: &[u8], replies: &mut ReplyQueue) {
        if self.is_serving_leader() {
            let round = self.read_round();
            let (reply, depends_on) = match self.store.lookup(key) {
                Some(pair) => (Reply::Value(pair.value()), pair.write_index()),
                None => (Reply::NotFound, self.last_delete_index),
            };
            let gate = Gate {
                index: depends_on,
                round,
            };
            replies.push(reply, gate, self.released());
        } else if self.config.follower_reads == FollowerReads::Local {
            // The local copy holds committed records only; it may lag.
            let reply = self.store.get(key).map_or(Reply::NotFound, Reply::Value);
            replies.push(reply, Gate::OPEN, self.released());
        } else {
            replies.push(
                Reply::NotLeader(self.leader_hint()),
                Gate::OPEN,
                self.released(),
            );
        }
    }

    /// The read round a leader's read waits for: in a cluster, one sent
    /// after the read, which proves the node still led when it read
    /// (ReadIndex); alone, none.
    ///
    /// Its log index part is the write the read observed: the one that set
    /// the value, or for a missing key the latest DEL (any key's: deletions
    /// leave nothing behind to remember their index by). A value whose write
    /// is durable cannot be taken back, whatever else is still in flight.
    fn read_round(&mut self) -> u64 {
        if self.config.cluster_size == 1 {
            return 0;
        }
        self.round_wanted = true;
        self.sent_round + 1
    }

    fn write(&mut self, op: Op<'_>, replies: &mut ReplyQueue) {
        if let Some(refusal) = oversized(&op) {
            // Before the role: the answer is the same on every node, and
            // nothing reaches the log, the store or a peer.
            replies.push(Reply::Error(refusal), Gate::OPEN, self.released());
            return;
        }
        if !self.is_serving_leader() {
            replies.push(
                Reply::NotLeader(self.leader_hint()),
                Gate::OPEN,
                self.released(),
            );
            return;
        }
        if self.would_exceed_memory(&op) {
            let reply = Reply::Error(ErrorReply::OutOfMemory);
            return replies.push(reply, Gate::OPEN, self.released());
        }
        let index = self.append_as_leader(op);
        let gate = Gate { index, round: 0 };
        replies.push(Reply::Ok, gate, self.released());
    }

    /// Whether `op` would take the store past `--max-memory-bytes` (Redis's
    /// `noeviction`): only a PUT, or a batch of them, that grows the store
    /// can (a batch is judged by an upper bound on its growth). The leader
    /// alone decides; followers apply what is committed, so replicas agree.
    fn would_exceed_memory(&self, op: &Op<'_>) -> bool {
        let Some(max_bytes) = self.config.max_memory_bytes else {
            return false;
        };
        let growth = match op {
            Op::Put { key, value } => self.store.growth_if_put(key, value.len()),
            Op::Batch(batch) => self.store.growth_if_batch(batch),
            Op::Noop | Op::Del { .. } => return false,
        };
        growth > 0 && self.store.used_bytes() + growth as usize > max_bytes
    }

    fn delete(&mut self, key: &[u8], replies: &mut ReplyQueue) {
        if self.is_serving_leader() && self.store.get(key).is_none() {
            // Deleting nothing changes nothing: it is a read of a missing key.
            let gate = Gate {
                index: self.last_delete_index,
                round: self.read_round(),
            };
            replies.push(Reply::NotFound, gate, self.released());
        } else {
            self.write(Op::Del { key }, replies);
        }
    }

    /// Appends a record of the leader's epoch and applies it at once.
    fn append_as_leader(&mut self, op: Op<'_>) -> u64 {
        let index = self.log.last_index() + 1;
        self.log.append(&Entry {
            epoch: self.promised_epoch,
            index,
            commit: self.commit_index,
            op,
        });
        self.apply_speculatively(index, &op);
        if deletes(&op) {
            self.last_delete_index = index;
        }
        index
    }

    /// The leader applies its records before they commit, so that reads see
    /// them (their replies are held until commit); in a cluster it keeps
    /// what each replaced, to take it back if it is deposed.
    fn apply_speculatively(&mut self, index: u64, op: &Op<'_>) {
        debug_assert_eq!(index, self.applied_index + 1);
        if self.config.cluster_size == 1 {
            self.store.apply(index, op);
        } else {
            let undo = &mut self.undo;
            let mut keep = |key: &[u8], previous| {
                undo.push_back(Undo {
                    index,
                    key: key.into(),
                    previous,
                });
            };
            match *op {
                // One undo per operation, in order: undo_uncommitted takes
                // them back from the last, so a key the batch wrote twice
                // ends as it was before the batch.
                Op::Batch(batch) => self
                    .store
                    .apply_batch_returning_previous(index, batch, keep),
                Op::Put { key, .. } | Op::Del { key } => {
                    keep(key, self.store.apply_returning_previous(index, op));
                }
                Op::Noop => {}
            }
        }
        self.applied_index = index;
    }

    /// Applies committed records not yet in the store (followers, replay),
    /// [`PREFETCH_BATCH`] at a time: the keys of a batch are fetched into
    /// the cache first ([`Store::prefetch`]), as the leader does for a
    /// pipelined read. A follower applying one key after another paid two
    /// cache misses each: a fifth of a 3-node cluster's CPU at pipeline 32.
    fn apply_committed(&mut self) {
        let last = self.commit_index.min(self.log.last_index());
        while self.applied_index < last {
            let first = self.applied_index + 1;
            let batch_last = last.min(first + PREFETCH_BATCH as u64 - 1);
            self.prefetch_records(first, batch_last);
            for index in first..=batch_last {
                match self.log.verified_entry(index) {
                    Some(Ok(entry)) => self.store.apply(index, &entry.op),
                    _ => unreachable!("record {index} is in memory and was checked on arrival"),
                }
                self.applied_index = index;
            }
        }
    }

    /// Warms the cache for the keys records `first..=last` write.
    fn prefetch_records(&self, first: u64, last: u64) {
        let mut keys: [&[u8]; PREFETCH_BATCH] = [&[]; PREFETCH_BATCH];
        let mut found = 0;
        for index in first..=last {
            if let Some(Ok(entry)) = self.log.verified_entry(index)
                && let Op::Put { key, .. } | Op::Del { key } = entry.op
                && found < PREFETCH_BATCH
            {
                keys[found] = key;
                found += 1;
            }
        }
        self.store.prefetch(&keys[..found]);
    }

    /// Takes back every write applied beyond the commit index.
    fn undo_uncommitted(&mut self) {
        while let Some(undo) = self.undo.pop_back() {
            self.store.restore(&undo.key, undo.previous);
        }
        self.applied_index = self.applied_index.min(self.commit_index);
    }

    fn advance_commit(&mut self, commit_index: u64) {
        if commit_index <= self.commit_index {
            return;
        }
        self.commit_index = commit_index;
        while self
            .undo
            .front()
            .is_some_and(|undo| undo.index <= commit_index)
        {
            self.undo.pop_front();
        }
        self.apply_committed();
        self.evict_committed();
    }

    fn role_reply(&self) -> RoleReply {
        let role = match self.role {
            Role::Follower { .. } => "follower",
            Role::Electing { .. } => "electing",
            Role::Candidate { .. } => "candidate",
            Role::Adopting { .. } => "adopting",
            Role::Leader { .. } => "leader",
        };
        RoleReply {
            role,
            leader: self.known_leader(),
            epoch: self.promised_epoch,
            commit_index: self.commit_index,
            snapshot_index: self.snapshots.newest.index,
            used_memory_bytes: self.store.used_bytes(),
            max_memory_bytes: self.config.max_memory_bytes.unwrap_or(0),
        }
    }

    fn is_serving_leader(&self) -> bool {
        matches!(self.role, Role::Leader { .. })
    }

    fn leader_hint(&self) -> Option<(NodeId, SocketAddr)> {
        match self.role {
            Role::Follower {
                leader: Some(leader),
            } => self
                .peers
                .get(&leader)
                .map(|peer| (leader, peer.client_address)),
            _ => None,
        }
    }

    /// What replies may leave: records released (committed under sync
    /// replication, durable on the leader under async) and the read round
    /// a majority confirmed.
    pub fn released(&self) -> Gate {
        let index = match self.config.replication {
            Replication::Sync => self.commit_index,
            Replication::Async => self.log.durable_index().max(self.commit_index),
        };
        Gate {
            index,
            round: self.confirmed_round,
        }
    }

    /// What the log write of [`Step::WriteLog`] must do.
    pub fn pending_log_write(&self) -> Option<LogWrite<'_>> {
        self.log.pending_write()
    }

    /// The log is durable (or written, under a weaker fsync policy) up to
    /// `index`: the last index of the writes handed off before the sync
    /// began. A driver whose sync completes after later turns may pass that
    /// write's `last_index` even if the log was cut meanwhile; records cut
    /// since their write are not counted as durable.
    pub fn on_log_released(&mut self, index: u64) {
        self.log.mark_durable(index);
        if self.is_serving_leader() {
            self.update_commit();
        } else {
            self.send_pending_ack();
        }
    }

    /// The peer messages queued so far this turn (for checks that watch
    /// what a node is about to say).
    pub fn queued_messages(&self) -> &[(NodeId, Envelope)] {
        &self.outbox.messages
    }

    /// Changes whenever this node stops leading; the driver then drops
    /// every held reply (its outcome is unknown) and closes those clients.
    pub fn leadership_losses(&self) -> u64 {
        self.leadership_losses
    }

    fn promise(&mut self, epoch: u64) {
        debug_assert!(epoch > self.promised_epoch);
        // An acknowledgement still waiting for the disk answers the leader
        // of the older epoch. Sent now, it would carry the new epoch (the
        // envelope's) and vouch for a log the new epoch's leader never sent,
        // even if that leader is the same node, restarted.
        self.pending_ack = None;
        self.promised_epoch = epoch;
        self.seen_epoch = self.seen_epoch.max(epoch);
        self.outbox.persist_epoch = Some(epoch);
    }

    fn send(&mut self, to: NodeId, message: Message) {
        let envelope = Envelope {
            from: self.config.id,
            epoch: self.promised_epoch,
            message,
        };
        self.outbox.messages.push((to, envelope));
    }

    fn arm(&mut self, kind: TimerKind, deadline_ms: u64) {
        self.outbox.timers.push((kind, deadline_ms));
    }

    /// Records a decision for the log (and counts it): handed to the
    /// driver as [`Step::Event`] at the start of the turn's steps.
    fn emit(&mut self, event: Event) {
        self.stats.count(&event);
        if self.outbox.events.len() < MAX_EVENTS_PER_TURN {
            self.outbox.events.push_back(event);
        } else {
            self.outbox.dropped_events += 1;
        }
    }

    /// The next event to hand out, if any (then a count of dropped ones).
    fn next_event(&mut self) -> Option<Event> {
        if let Some(event) = self.outbox.events.pop_front() {
            return Some(event);
        }
        let count = std::mem::take(&mut self.outbox.dropped_events);
        (count > 0).then_some(Event::EventsDropped { count })
    }

    /// Counts of the decisions this node made since it started.
    pub fn stats(&self) -> &NodeStats {
        &self.stats
    }

    /// A deterministic xorshift draw in `0..bound`, for timer jitter.
    fn random_below(&mut self, bound: u64) -> u64 {
        let mut state = self.random_state;
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        self.random_state = state;
        if bound == 0 { 0 } else { state % bound }
    }

    pub fn id(&self) -> NodeId {
        self.config.id
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn commit_index(&self) -> u64 {
        self.commit_index
    }

    pub fn last_index(&self) -> u64 {
        self.log.last_index()
    }

    pub fn promised_epoch(&self) -> u64 {
        self.promised_epoch
    }

    /// The epoch this node leads, if it is a serving leader.
    pub fn leading_epoch(&self) -> Option<u64> {
        match self.role {
            Role::Leader { epoch, .. } => Some(epoch),
            _ => None,
        }
    }

    /// The leader this node follows, or itself when it leads.
    pub fn known_leader(&self) -> Option<NodeId> {
        match self.role {
            Role::Leader { .. } => Some(self.config.id),
            Role::Follower { leader } => leader,
            _ => None,
        }
    }

    /// The last ReadIndex round sent (with [`Node::released`]'s round, the
    /// last confirmed: the driver times the rounds between).
    pub fn sent_read_round(&self) -> u64 {
        self.sent_round
    }

    /// Bytes of log records held in memory.
    pub fn log_memory_bytes(&self) -> usize {
        self.log.memory_bytes()
    }

    /// The record at `index`, if it is still in memory (for tests).
    pub fn record(&self, index: u64) -> Option<&[u8]> {
        self.log.record(index)
    }
}

/// The refusal of a `PUT` or a batch whose record the log could not hold,
/// if it is one. With request lines bounded by `config::MAX_MAX_LINE_BYTES`
/// no `PUT` is; the check keeps a driver that allows longer ones from
/// reaching the panic in `log::encode`. A `DEL` needs none: its record is
/// smaller than the one that stored its key, and a key never stored is not
/// written. For a batch the limit is what its values could hold together
/// beside its keys and operation headers.
fn oversized(op: &Op<'_>) -> Option<ErrorReply> {
    if crate::log::fits(op) {
        return None;
    }
    let beside_values = match *op {
        Op::Put { key, .. } => key.len(),
        Op::Batch(batch) => batch.body().len() - batch_value_bytes(&batch),
        Op::Noop | Op::Del { .. } => return None,
    };
    Some(ErrorReply::ValueTooLarge {
        max_value_bytes: crate::log::MAX_KEY_AND_VALUE_BYTES.saturating_sub(beside_values),
    })
}

/// The value bytes of a batch's puts, together.
fn batch_value_bytes(batch: &crate::log::Batch<'_>) -> usize {
    batch
        .iter()
        .map(|op| match op {
            Op::Put { value, .. } => value.len(),
            _ => 0,
        })
        .sum()
}

/// Whether `op` deletes a key (a DEL, or a batch holding one): a read of a
/// missing key may then have observed it.
fn deletes(op: &Op<'_>) -> bool {
    match op {
        Op::Del { .. } => true,
        Op::Batch(batch) => batch.iter().any(|op| matches!(op, Op::Del { .. })),
        Op::Noop | Op::Put { .. } => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::parse;

    fn single_node() -> Node {
        let mut node = Node::new(NodeConfig::single(1));
        node.start(0);
        write_log(&mut node);
        node
    }

    /// What a turn handed out, as a driver whose disk releases every write
    /// at once carried it out.
    #[derive(Debug, Default)]
    pub(super) struct TurnOutput {
        pub events: Vec<Event>,
        pub log_bytes: Vec<u8>,
        pub messages: Vec<(NodeId, Envelope)>,
        pub persisted_epoch: Option<u64>,
        pub voided: bool,
        pub snapshot_bytes: Vec<u8>,
        pub snapshot_finished: Option<SnapshotSummary>,
        pub compacted_through: Option<u64>,
    }

    /// Ends the turn through the turn contract (no log reads expected).
    pub(super) fn finish_turn(node: &mut Node) -> TurnOutput {
        let mut output = TurnOutput::default();
        while let Some(step) = node.next_step() {
            match step {
                Step::Event(event) => output.events.push(event),
                Step::PersistEpoch(epoch) => output.persisted_epoch = Some(epoch),
                Step::ReadLog(read) => panic!("unexpected log read {read:?}"),
                Step::ReadSnapshot(read) => panic!("unexpected snapshot read {read:?}"),
                Step::AbortSnapshot => output.snapshot_bytes.clear(),
                Step::ArmTimers(_) => {}
                Step::Send(messages) => output.messages.extend(messages),
                Step::WriteLog => {
                    let write = node.pending_log_write().expect("a write is pending");
                    output.log_bytes.extend_from_slice(write.bytes);
                    node.log_write_done(LogWriteOutcome::Released);
                }
                Step::VoidHeldReplies => output.voided = true,
                Step::Release(_) => {}
                Step::BeginSnapshot { .. } => output.snapshot_bytes.clear(),
                Step::WriteSnapshot(bytes) => output.snapshot_bytes.extend(bytes),
                Step::FinishSnapshot(summary) => output.snapshot_finished = Some(summary),
                Step::CompactLog(through) => output.compacted_through = Some(through),
            }
        }
        output
    }

    /// Ends the turn and returns the log bytes it wrote.
    pub(super) fn write_log(node: &mut Node) -> Vec<u8> {
        finish_turn(node).log_bytes
    }

    pub(super) fn run(node: &mut Node, queue: &mut ReplyQueue, line: &[u8]) -> Flow {
        node.handle_request(parse(line).unwrap(), queue)
    }

    /// A message from `from` in `epoch`.
    pub(super) fn from_peer(from: NodeId, epoch: u64, message: Message) -> Envelope {
        Envelope {
            from,
            epoch,
            message,
        }
    }

    /// Takes the messages the node has queued.
    pub(super) fn sent(node: &mut Node) -> Vec<(NodeId, Envelope)> {
        std::mem::take(&mut node.outbox.messages)
    }

    /// Node 1 of a three-node cluster, started, with no leader yet.
    pub(super) fn follower_of_three() -> Node {
        let mut config = NodeConfig::single(1);
        config.cluster_size = 3;
        let mut node = Node::new(config);
        node.start(0);
        node
    }

    /// Node 3 of a three-node cluster, leading epoch 1 on node 1's promise,
    /// its Noop durable on itself and both followers, and its outbox empty.
    pub(super) fn leader_of_three() -> Node {
        let mut config = NodeConfig::single(3);
        config.cluster_size = 3;
        let mut node = Node::new(config);
        node.start(0);
        for peer in [1, 2] {
            let address = SocketAddr::from(([127, 0, 0, 1], 7000 + peer as u16));
            node.peer_up(peer, address);
        }
        node.on_timer(TimerKind::Election, 1000);
        let promise = Message::Promise {
            last_epoch: 0,
            last_index: 0,
            commit_index: 0,
        };
        node.handle_message(from_peer(1, 1, promise), 1000)
            .expect("a valid frame");
        assert_eq!(node.leading_epoch(), Some(1));
        write_log(&mut node);
        for peer in [1, 2] {
            let ack = Message::Ack {
                success: true,
                match_index: 1,
                round: 0,
            };
            node.handle_message(from_peer(peer, 1, ack), 1000)
                .expect("a valid frame");
        }
        assert_eq!(node.commit_index(), 1);
        finish_turn(&mut node);
        node
    }

    #[test]
    fn a_single_node_elects_itself_and_commits_a_noop() {
        let mut node = Node::new(NodeConfig::single(1));
        node.start(0);
        assert_eq!(node.leading_epoch(), Some(1));
        let turn = finish_turn(&mut node);
        assert_eq!(turn.persisted_epoch, Some(1));
        let bytes = turn.log_bytes;
        let (entry, _) = crate::log::decode(&bytes).unwrap();
        assert_eq!((entry.epoch, entry.index, entry.op), (1, 1, Op::Noop));
        assert_eq!(node.commit_index(), 1);
    }

    #[test]
    fn a_write_is_acknowledged_only_once_its_record_is_durable() {
        let mut node = single_node();
        let mut queue = ReplyQueue::new();
        run(&mut node, &mut queue, b"PUT k v");
        run(&mut node, &mut queue, b"PING");
        assert_eq!(queue.sendable(node.released()), b"");
        let bytes = write_log(&mut node);
        let (entry, _) = crate::log::decode(&bytes).unwrap();
        assert_eq!(
            entry.op,
            Op::Put {
                key: b"k",
                value: b"v"
            }
        );
        assert_eq!(queue.sendable(node.released()), b"OK\nPONG\n");
    }

    /// Issue #10: a write whose record the log could not hold gets a plain
    /// error and changes nothing: no record, no message, no step-down.
    #[test]
    fn a_write_too_large_for_one_record_is_refused_without_side_effects() {
        let mut node = leader_of_three();
        let max_bytes = crate::log::MAX_KEY_AND_VALUE_BYTES;
        let epoch = node.leading_epoch();
        let (last_index, commit_index) = (node.log.last_index(), node.commit_index());
        let mut queue = ReplyQueue::new();
        let value = vec![b'v'; max_bytes];
        let put = Request::Put {
            key: b"k",
            value: &value,
        };
        assert_eq!(node.handle_request(put, &mut queue), Flow::Continue);
        let expected = format!("ERR value too large (limit {} bytes)\n", max_bytes - 1);
        assert_eq!(queue.sendable(node.released()), expected.as_bytes());
        let turn = finish_turn(&mut node);
        assert!(turn.log_bytes.is_empty(), "a record was written");
        assert!(turn.messages.is_empty(), "sent {:?}", turn.messages);
        assert!(!turn.voided);
        assert_eq!(node.leading_epoch(), epoch);
        assert_eq!(node.log.last_index(), last_index);
        assert_eq!(node.commit_index(), commit_index);
        assert!(node.store.get(b"k").is_none());
    }

    #[test]
    fn a_follower_refuses_a_write_too_large_the_same_way() {
        let mut node = follower_of_three();
        let mut queue = ReplyQueue::new();
        let value = vec![b'v'; crate::log::MAX_KEY_AND_VALUE_BYTES];
        let put = Request::Put {
            key: b"key",
            value: &value,
        };
        node.handle_request(put, &mut queue);
        let limit = crate::log::MAX_KEY_AND_VALUE_BYTES - 3;
        // Not NOT_LEADER, as a write that fits gets: a client would retry
        // it elsewhere to no avail.
        run(&mut node, &mut queue, b"PUT key small");
        let expected = format!("ERR value too large (limit {limit} bytes)\nNOT_LEADER -1\n");
        assert_eq!(queue.sendable(node.released()), expected.as_bytes());
    }

    #[test]
    fn the_largest_record_is_accepted() {
        let mut node = single_node();
        let mut queue = ReplyQueue::new();
        let value = vec![b'v'; crate::log::MAX_KEY_AND_VALUE_BYTES - 1];
        let put = Request::Put {
            key: b"k",
            value: &value,
        };
        node.handle_request(put, &mut queue);
        let bytes = write_log(&mut node);
        assert_eq!(bytes.len(), crate::log::MAX_RECORD_BYTES);
        assert_eq!(queue.sendable(node.released()), b"OK\n");
        assert_eq!(node.store.get(b"k"), Some(&value[..]));
    }

    #[test]
    fn a_read_of_an_undurable_write_waits_for_it() {
        let mut node = single_node();
        let mut writer = ReplyQueue::new();
        let mut reader = ReplyQueue::new();
        run(&mut node, &mut writer, b"PUT k v");
        run(&mut node, &mut reader, b"GET k");
        assert_eq!(reader.sendable(node.released()), b"");
        write_log(&mut node);
        assert_eq!(reader.sendable(node.released()), b"v\n");
    }

    #[test]
    fn a_read_waits_only_for_the_write_it_observed() {
        let mut node = single_node();
        let mut writer = ReplyQueue::new();
        run(&mut node, &mut writer, b"PUT durable 1");
        write_log(&mut node);
        run(&mut node, &mut writer, b"PUT pending 2");
        let mut reader = ReplyQueue::new();
        run(&mut node, &mut reader, b"GET durable");
        run(&mut node, &mut reader, b"GET never-written");
        assert_eq!(reader.sendable(node.released()), b"1\nNOT_FOUND\n");
        run(&mut node, &mut reader, b"GET pending");
        assert_eq!(reader.sendable(node.released()), b"1\nNOT_FOUND\n");
        write_log(&mut node);
        assert_eq!(reader.sendable(node.released()), b"1\nNOT_FOUND\n2\n");
    }

    #[test]
    fn a_miss_waits_for_the_latest_delete() {
        let mut node = single_node();
        let mut queue = ReplyQueue::new();
        run(&mut node, &mut queue, b"PUT k v");
        write_log(&mut node);
        run(&mut node, &mut queue, b"DEL k");
        let mut reader = ReplyQueue::new();
        run(&mut node, &mut reader, b"GET k");
        run(&mut node, &mut reader, b"DEL k");
        assert_eq!(
            reader.sendable(node.released()),
            b"",
            "the DEL is not durable"
        );
        write_log(&mut node);
        assert_eq!(reader.sendable(node.released()), b"NOT_FOUND\nNOT_FOUND\n");
    }

    #[test]
    fn replayed_records_are_served_without_waiting() {
        let mut node = Node::new(NodeConfig::single(1));
        node.replay(&Entry {
            epoch: 3,
            index: 1,
            commit: 0,
            op: Op::Put {
                key: b"k",
                value: b"old",
            },
        });
        node.start(0);
        write_log(&mut node);
        assert_eq!(node.leading_epoch(), Some(4));
        let mut queue = ReplyQueue::new();
        run(&mut node, &mut queue, b"GET k");
        run(&mut node, &mut queue, b"GET missing");
        assert_eq!(queue.sendable(node.released()), b"old\nNOT_FOUND\n");
        assert_eq!(
            node.log_memory_bytes(),
            0,
            "a single node keeps no log in memory"
        );
    }

    /// A batch of puts (a value) and dels (none), in its builder.
    fn batch_of(ops: &[(&[u8], Option<&[u8]>)]) -> crate::log::BatchBuilder {
        let mut builder = crate::log::BatchBuilder::new();
        for (key, value) in ops {
            match value {
                Some(value) => builder.push_put(key, value),
                None => builder.push_del(key),
            }
        }
        builder
    }

    #[test]
    fn reads_wait_for_the_batch_they_observed() {
        let mut node = single_node();
        let mut queue = ReplyQueue::new();
        run(&mut node, &mut queue, b"PUT k v");
        run(&mut node, &mut queue, b"PUT durable 1");
        write_log(&mut node);
        let batch = batch_of(&[(b"new", Some(b"n")), (b"k", None)]);
        let index = node.append_as_leader(batch.op());
        let mut reader = ReplyQueue::new();
        run(&mut node, &mut reader, b"GET durable");
        run(&mut node, &mut reader, b"GET k");
        run(&mut node, &mut reader, b"GET new");
        // A miss may have observed the batch's delete.
        assert_eq!(node.last_delete_index, index);
        assert_eq!(reader.sendable(node.released()), b"1\n");
        let bytes = write_log(&mut node);
        let (entry, _) = crate::log::decode(&bytes).unwrap();
        assert_eq!((entry.index, entry.op), (index, batch.op()));
        assert_eq!(reader.sendable(node.released()), b"1\nNOT_FOUND\nn\n");
    }

    #[test]
    fn a_batch_of_puts_only_leaves_the_latest_delete_alone() {
        let mut node = single_node();
        let before = node.last_delete_index;
        node.append_as_leader(batch_of(&[(b"a", Some(b"1"))]).op());
        assert_eq!(node.last_delete_index, before);
    }

    #[test]
    fn the_memory_limit_judges_a_batch_by_its_puts() {
        let mut config = NodeConfig::single(1);
        // Room for `k` = `v` and two more pairs of a 1-byte key and a
        // 10-byte value, not three.
        let small_pair = crate::store::Store::pair_cost(1, 10);
        config.max_memory_bytes = Some(crate::store::Store::pair_cost(1, 1) + 2 * small_pair);
        let mut node = Node::new(config);
        node.start(0);
        write_log(&mut node);
        let mut queue = ReplyQueue::new();
        run(&mut node, &mut queue, b"PUT k v");
        let ten = [b'x'; 10];
        let two = batch_of(&[(b"a", Some(&ten)), (b"b", Some(&ten))]);
        assert!(!node.would_exceed_memory(&two.op()));
        let three = batch_of(&[(b"a", Some(&ten)), (b"b", Some(&ten)), (b"c", Some(&ten))]);
        assert!(node.would_exceed_memory(&three.op()));
        // An upper bound: the delete that would make room is not counted.
        let freeing = batch_of(&[
            (b"k", None),
            (b"a", Some(&ten)),
            (b"b", Some(&ten)),
            (b"c", Some(&ten)),
        ]);
        assert!(node.would_exceed_memory(&freeing.op()));
        let only_deletes = batch_of(&[(b"k", None)]);
        assert!(!node.would_exceed_memory(&only_deletes.op()));
    }

    #[test]
    fn a_batch_too_large_for_one_record_is_refused() {
        let fitting = batch_of(&[(b"a", Some(b"1")), (b"b", None)]);
        assert_eq!(oversized(&fitting.op()), None);
        let value = vec![b'v'; crate::log::MAX_KEY_AND_VALUE_BYTES];
        let too_large = batch_of(&[(b"a", Some(&value)), (b"bc", None)]);
        // What the values could hold beside two operation headers and
        // three key bytes.
        let beside_values = 2 * crate::log::BATCH_OP_HEADER_BYTES + 3;
        let expected = ErrorReply::ValueTooLarge {
            max_value_bytes: crate::log::MAX_KEY_AND_VALUE_BYTES - beside_values,
        };
        assert_eq!(oversized(&too_large.op()), Some(expected));
    }

    #[test]
    fn a_replayed_batch_is_applied_whole() {
        let mut node = Node::new(NodeConfig::single(1));
        let batch = batch_of(&[
            (b"a", Some(b"1")),
            (b"b", Some(b"\r\n\x00")),
            (b"a", None),
            (b"c", Some(b"3")),
        ]);
        for (index, op) in [
            (
                1,
                Op::Put {
                    key: b"a",
                    value: b"0",
                },
            ),
            (2, batch.op()),
        ] {
            node.replay(&Entry {
                epoch: 1,
                index,
                commit: 0,
                op,
            });
        }
        node.start(0);
        write_log(&mut node);
        let mut queue = ReplyQueue::new();
        for line in [&b"GET a"[..], b"GET b", b"GET c"] {
            run(&mut node, &mut queue, line);
        }
        assert_eq!(queue.sendable(node.released()), b"NOT_FOUND\n\r\n\x00\n3\n");
        let written = node.store.lookup(b"c").map(|pair| pair.write_index());
        assert_eq!(written, Some(2));
    }

    #[test]
    fn delete_of_a_missing_key_is_not_logged() {
        let mut node = single_node();
        let mut queue = ReplyQueue::new();
        let before = node.last_index();
        run(&mut node, &mut queue, b"DEL nothing");
        assert_eq!(node.last_index(), before);
        run(&mut node, &mut queue, b"PUT a 1");
        run(&mut node, &mut queue, b"DEL a");
        assert_eq!(node.last_index(), before + 2);
        write_log(&mut node);
        assert_eq!(queue.sendable(node.released()), b"NOT_FOUND\nOK\nOK\n");
    }

    #[test]
    fn quit_closes_without_a_reply() {
        let mut node = single_node();
        let mut queue = ReplyQueue::new();
        assert_eq!(run(&mut node, &mut queue, b"quit"), Flow::Close);
        assert!(queue.is_empty());
    }

    #[test]
    fn a_follower_redirects_writes_and_reads_locally() {
        let mut node = follower_of_three();
        let mut queue = ReplyQueue::new();
        run(&mut node, &mut queue, b"PUT k v");
        run(&mut node, &mut queue, b"GET k");
        assert_eq!(
            queue.sendable(node.released()),
            b"NOT_LEADER -1\nNOT_FOUND\n"
        );
    }
}
