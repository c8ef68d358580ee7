//! The world: N cores of `kvstore::node::Node`, their disks, the network
//! between them, clients, a virtual clock and one event queue, all driven
//! from one seed.
//!
//! # How a node is driven
//!
//! Exactly as the reactor in `src/net` drives it. Inputs (a peer frame, a
//! timer, a client request, a sync completion, a peer going up or down)
//! that reach a node at the same virtual millisecond (now and then, within
//! the next two) share one turn, as the events of one poll do in the
//! reactor; a crash between an input and the end of its turn loses the
//! turn's outputs. The turn then ends exactly as the reactor ends it: by
//! carrying out the steps `Node::next_step` hands out (`node::turn` fixes
//! their order), with the simulator's disk, network and clock:
//! - `Event`: traced, and checked at the turn's end against what the node
//!   does (`events`: a leader that logged winning leads, a follower follows
//!   who won, counters match);
//! - `PersistEpoch`: synchronously, before any message leaves;
//! - `ArmTimers`: a new deadline replaces the previous one of its kind;
//! - `Send`: onto the network;
//! - `WriteLog`: cut the log after the index asked, append the bytes, and
//!   start a sync that completes 0-5 ms later (5-300 ms on a slow disk) as
//!   an event of its own; only then does the node hear `on_log_released`.
//!   At most one sync is in flight per node. The disk works in one of two
//!   ways, drawn per run from the seed:
//!    - waiting: while a sync is in flight the turn writes nothing (the
//!      write is `Deferred`) and the records wait for the first turn after
//!      it completes (its own turn, in fact);
//!    - the reactor's (`write_log` and the syncer): every turn writes; a
//!      sync covers the bytes written before it began and reports the index
//!      requested then (and takes 5-100 ms two times in five, so that
//!      writes and cuts meet it); requests made meanwhile are coalesced into
//!      one that starts when the node hears of the completion. Before
//!      cutting the log the node waits out every sync in flight or queued
//!      (each makes durable what was written before it began) and drops
//!      their results; then it truncates, appends and requests a sync of the
//!      new last index;
//! - `VoidHeldReplies`: every held reply of the node is voided (the client
//!   reads `ERR`, an unknown outcome) and that connection closes, as
//!   `refuse_held_replies` does;
//! - `Release`: the replies it lets out go to the clients.
//!
//! The simulator's own checks run just before `Release`, so that a reply
//! released in a turn is judged against what that turn committed: one
//! leader per epoch, one committed log (every node's committed prefix
//! agrees, and each committed record is durable on a majority of disks),
//! commit indexes that never go back, promises that are persisted, stores
//! equal to what the log says (committed prefix; a leader's whole log), and
//! every acknowledged write (an OK to a PUT, SET or MSET, an INCR's sum)
//! names a committed record, all of a multi-key write the same one. Acks
//! are checked as they are queued: durable on the sender's disk, and equal
//! to the leader's log.
//!
//! # Clients
//!
//! A client's connection speaks lines or RESP (see `workload`). A RESP
//! connection is driven as the reactor drives one: each command is framed
//! by `protocol::resp::next_command` and handed to `Node::handle_command`
//! with the connection's `Session`; the commands of a pipeline (a `MULTI`
//! block) arrive in order, some in the same turn and some in later ones,
//! so that leadership may change between `MULTI` and `EXEC`.
//!
//! # Faults
//!
//! Crashes (the un-synced tail of the log is lost, or partly kept as a torn
//! tail; restart replays the file and the persisted epoch; some crashes are
//! aimed right after a promise, a log write or an election), pauses
//! (SIGSTOP: the node's events wait until it resumes), partitions (silent or
//! refusing connections, symmetric or one-way), broken connections, slow
//! disks and network weather (loss, duplication, long delays). After the
//! chaos phase every fault heals, the cluster must converge on the highest
//! id with equal logs and stores, and each client reads every key through
//! the leader; the whole client history must then be linearizable.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::panic::{self, AssertUnwindSafe};

use kvstore::config::{FollowerReads, Replication};
use kvstore::log;
use kvstore::node::message::{decode_frame, encode_frame};
use kvstore::node::{
    Envelope, Flow, Gate, LogRead, LogWriteOutcome, Message, Node, NodeConfig, NodeId, ReplyQueue,
    ServerFacts, Session, SnapshotPoint, SnapshotWritten, Step, TimerKind,
};
use kvstore::protocol::resp::{self as resp_framing, Args};
use kvstore::protocol::resp_reply::Version;
use kvstore::protocol::{self, ErrorReply, Protocol, Reply, Request as LineRequest};
use kvstore::snapshot::{Decoder, Summary};
use kvstore::store::{Store, StoredPair};

use super::adversary::{self, Expect};
use super::checks::{
    CommittedLog, Failure, GroupWrite, StoreImage, Violation, ViolationKind, apply_record,
    describe_image, describe_record, fail,
};
use super::disk::Disk;
use super::events::EventLog;

/// The memory budget for log records in the runs that test reading them back.
const TINY_LOG_MEMORY_BYTES: usize = 512;
use super::linearizability::{self, Event as HistoryEvent, History, Operation, Outcome, Verdict};
use super::network::{FIRST_RETRY_DELAY_MS, MAX_RETRY_DELAY_MS, Network, Weather};
use super::resp;
use super::rng::{Rng, TraceHasher, mix};
use super::workload::{
    Answer, COUNTERS, Client, ConnId, InFlight, Phase, Request, Wire, counter_name, key_name,
    leaves_outcome_unknown, read_line_reply, read_resp_replies,
};

/// A request with no reply after this long has an unknown outcome.
const REQUEST_TIMEOUT_MS: u64 = 1000;
/// After healing, how long the cluster may take to converge.
const CONVERGENCE_DEADLINE_MS: u64 = 20_000;
/// How often (per mille of delivered frames, during the chaos phase) the
/// adversarial peer sends a forgery just before a real frame.
const ADVERSARY_PER_MILLE: u64 = 20;
/// The memory limit of the runs that have one: about two of the workload's
/// pairs (`k0` = `c1-23` costs 57 bytes) besides its counters (`n0` =
/// `123` costs 55), which are never deleted.
const SIM_MEMORY_LIMIT_BYTES: usize = 130 + COUNTERS * 55;
/// Per thousand connections, how many speak RESP, and of those how many
/// RESP3.
const RESP_CONNECTIONS_PER_MILLE: u64 = 500;
const RESP3_CONNECTIONS_PER_MILLE: u64 = 300;
/// The longest RESP request the simulated nodes accept.
const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// How many trace lines a failure report shows.
const TRACE_TAIL: usize = 50;

/// What a run simulates.
#[derive(Debug, Clone)]
pub struct Options {
    pub nodes: usize,
    pub clients: usize,
    pub keys: usize,
    pub follower_reads: FollowerReads,
    pub unsafe_skip_log_adoption: bool,
    pub unsafe_compact_before_snapshot_is_durable: bool,
    /// The cores take the adversary's forgeries unchecked; the run's own
    /// safety checks must then find the damage.
    pub unsafe_skip_frame_checks: bool,
    /// A broken client: it sends each `MSET` as one `SET` per key yet
    /// counts it as one atomic write; the atomicity check must notice.
    pub unsafe_split_multi_sets: bool,
    /// How long faults are injected (virtual ms) before everything heals.
    pub chaos_ms: u64,
    /// Print every trace line as it happens.
    pub print_trace: bool,
}

impl Options {
    pub fn new(nodes: usize) -> Options {
        Options {
            nodes,
            clients: if nodes >= 5 { 5 } else { 4 },
            keys: 4,
            follower_reads: FollowerReads::Local,
            unsafe_skip_log_adoption: false,
            unsafe_compact_before_snapshot_is_durable: false,
            unsafe_skip_frame_checks: false,
            unsafe_split_multi_sets: false,
            chaos_ms: 5000,
            print_trace: false,
        }
    }

    /// The environment variables that make the `replay` test run this.
    pub fn replay_env(&self, seed: u64) -> String {
        let mut env = format!("KVSTORE_SIM_SEED={seed} KVSTORE_SIM_NODES={}", self.nodes);
        if self.follower_reads == FollowerReads::Redirect {
            env.push_str(" KVSTORE_SIM_FOLLOWER_READS=redirect");
        }
        if self.unsafe_skip_log_adoption {
            env.push_str(" KVSTORE_SIM_UNSAFE_SKIP_LOG_ADOPTION=1");
        }
        if self.unsafe_compact_before_snapshot_is_durable {
            env.push_str(" KVSTORE_SIM_UNSAFE_EARLY_COMPACTION=1");
        }
        if self.unsafe_skip_frame_checks {
            env.push_str(" KVSTORE_SIM_UNSAFE_SKIP_FRAME_CHECKS=1");
        }
        if self.unsafe_split_multi_sets {
            env.push_str(" KVSTORE_SIM_UNSAFE_SPLIT_MSET=1");
        }
        if self.clients != Options::new(self.nodes).clients {
            let _ = write!(env, " KVSTORE_SIM_CLIENTS={}", self.clients);
        }
        if self.chaos_ms != Options::new(self.nodes).chaos_ms {
            let _ = write!(env, " KVSTORE_SIM_CHAOS_MS={}", self.chaos_ms);
        }
        env
    }
}

/// What a run did, for the tests that check the simulator is not vacuous.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub trace_hash: u64,
    pub events: u64,
    pub end_ms: u64,
    /// Writes that got OK (PUT, SET, DEL, each key of an MSET) or a sum
    /// (INCR), also inside EXEC.
    pub acknowledged_writes: u64,
    /// Requests over RESP with a definite outcome.
    pub resp_completed: u64,
    /// MSETs acknowledged.
    pub multi_sets: u64,
    /// INCRs that returned their sum (also inside EXEC).
    pub increments: u64,
    /// EXEC blocks that ran.
    pub transactions: u64,
    /// Requests with a definite outcome (and, `unknown`, without).
    pub completed: u64,
    pub unknown: u64,
    /// Follower reads answered locally (not linearizable by design).
    pub local_reads: u64,
    /// Distinct epochs that had a serving leader.
    pub leaders_elected: u64,
    pub crashes: u64,
    pub pauses: u64,
    pub partitions: u64,
    pub link_breaks: u64,
    pub torn_tails: u64,
    /// Log writes handed off while a sync was in flight (reactor's disk).
    pub writes_during_sync: u64,
    /// Syncs waited out and dropped before a truncation (reactor's disk).
    pub syncs_dropped: u64,
    /// Log truncations (reactor's disk).
    pub reactor_cuts: u64,
    pub messages: u64,
    pub committed: u64,
    pub snapshots_started: u64,
    pub snapshots_published: u64,
    /// Logs reset by a node installing a snapshot it was sent.
    pub log_resets: u64,
    /// `InstallSnapshot` messages sent.
    pub snapshot_chunks: u64,
    /// Nodes restarted with an empty disk (a replaced machine).
    pub disks_replaced: u64,
    /// Forged frames the cores refused or ignored (`adversary`).
    pub forgeries_refused: u64,
    /// Writes refused by `--max-memory-bytes`.
    pub out_of_memory: u64,
}

/// Runs one seed to its end; a failed check comes back as a `Violation`
/// (also when the core panics).
pub fn run(seed: u64, options: &Options) -> Result<Stats, Violation> {
    let mut world = World::new(seed, options.clone());
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| world.simulate()));
    let failure = match outcome {
        Ok(Ok(())) => {
            world.stats.trace_hash = world.hasher.finish();
            world.stats.end_ms = world.now;
            world.stats.committed = world.committed.len();
            return Ok(world.stats);
        }
        Ok(Err(failure)) => failure,
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|text| (*text).to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".to_string());
            Failure {
                kind: ViolationKind::CorePanicked,
                detail: message,
            }
        }
    };
    Err(Violation {
        seed,
        replay_env: options.replay_env(seed),
        kind: failure.kind,
        detail: failure.detail,
        at_ms: world.now,
        trace_tail: world.trace.iter().cloned().collect(),
    })
}

#[derive(Debug)]
enum Event {
    /// A peer frame arrives on the link `from -> to` of `generation`.
    Deliver {
        from: NodeId,
        to: NodeId,
        generation: u64,
        frame: Vec<u8>,
    },
    Timer {
        node: NodeId,
        incarnation: u64,
        kind: TimerKind,
        generation: u64,
    },
    /// The node's turn ends (see `input_taken`).
    EndTurn {
        node: NodeId,
        incarnation: u64,
    },
    /// The disk finished an fdatasync (`sync` numbers it on its node; 0
    /// when the disk waits for syncs).
    SyncDone {
        node: NodeId,
        incarnation: u64,
        last_index: u64,
        sync: u64,
    },
    /// The node's fdatasync returned (later than `SyncDone` if paused).
    Released {
        node: NodeId,
        incarnation: u64,
        last_index: u64,
        sync: u64,
    },
    /// The snapshot writer wrote `bytes` of the node's snapshot file.
    SnapshotWritten {
        node: NodeId,
        incarnation: u64,
        attempt: u64,
        bytes: usize,
    },
    /// The snapshot writer published (fsync, rename) or gave up on the
    /// node's snapshot file.
    SnapshotDone {
        node: NodeId,
        incarnation: u64,
        attempt: u64,
        index: u64,
        published: bool,
    },
    /// `node`'s connection to `peer` broke.
    PeerDown {
        node: NodeId,
        incarnation: u64,
        peer: NodeId,
    },
    /// `node` dials `peer`.
    Dial {
        node: NodeId,
        incarnation: u64,
        peer: NodeId,
    },
    /// The next of the commands sent on `conn` (see `Conn::pipeline`)
    /// reaches its node, with some that follow it.
    Request {
        conn: ConnId,
        request_id: u64,
    },
    Reply {
        conn: ConnId,
        bytes: Vec<u8>,
    },
    /// The client learns its connection is gone (the node crashed).
    ConnReset {
        conn: ConnId,
    },
    ClientWake {
        client: usize,
    },
    ClientTimeout {
        client: usize,
        request_id: u64,
    },
    /// Time to inject the next fault.
    Fault,
    /// A crash aimed at a moment of interest (see `maybe_crash_soon`).
    CrashSoon {
        node: NodeId,
        incarnation: u64,
    },
    Restart {
        node: NodeId,
    },
    Resume {
        node: NodeId,
    },
    Heal {
        fault: u64,
    },
    WeatherEnds {
        fault: u64,
    },
    EndChaos,
    Probe,
}

impl Event {
    /// The node an event is an input to (it waits while that node is paused).
    fn target(&self, conns: &BTreeMap<ConnId, Conn>) -> Option<NodeId> {
        match self {
            Event::Deliver { to, .. } => Some(*to),
            Event::Timer { node, .. }
            | Event::EndTurn { node, .. }
            | Event::Released { node, .. }
            | Event::SnapshotWritten { node, .. }
            | Event::SnapshotDone { node, .. }
            | Event::PeerDown { node, .. }
            | Event::Dial { node, .. } => Some(*node),
            Event::Request { conn, .. } => conns.get(conn).map(|conn| conn.node),
            _ => None,
        }
    }
}

struct Scheduled {
    time: u64,
    sequence: u64,
    event: Event,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.time, self.sequence) == (other.time, other.sequence)
    }
}

impl Eq for Scheduled {}

impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Scheduled {
    /// Reversed: the heap pops the earliest (time, sequence) first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.time, other.sequence).cmp(&(self.time, self.sequence))
    }
}

impl SimNode {
    /// Record `index` as the node knows it: from memory, or from its disk
    /// once the core has dropped it (only committed, durable records are).
    fn record(&self, index: u64) -> Option<&[u8]> {
        let core = self.core.as_ref()?;
        core.record(index)
            .or_else(|| self.disk.durable_record(index))
    }
}

struct SimNode {
    id: NodeId,
    core: Option<Node>,
    incarnation: u64,
    paused: bool,
    /// Inputs that arrived while paused, in order.
    backlog: Vec<Event>,
    disk: Disk,
    persisted_epoch: u64,
    timer_generation: [u64; 2],
    /// Waiting disk: a sync is in flight.
    syncing: bool,
    /// The disk works as the reactor drives it (see the module doc).
    reactor_syncs: bool,
    /// Reactor's disk: the sync in flight, and the highest index requested
    /// since it began.
    sync_in_flight: Option<SyncInFlight>,
    sync_queued: Option<u64>,
    /// Numbers the reactor's syncs of this node.
    syncs_started: u64,
    /// An input was taken and the turn has not ended yet.
    turn_pending: bool,
    /// Outbox messages already checked by `check_new_acks`.
    acks_checked: usize,
    /// Until then, syncs take 5-300 ms instead of 0-5 ms.
    slow_disk_until: u64,
    /// Committed records of this incarnation already checked.
    checked_commit: u64,
    /// Numbers the snapshot files this node's writer started.
    snapshot_attempt: u64,
    /// The current snapshot file will fail after this many more writes
    /// (a full disk); `None`: it will not.
    snapshot_fails_after: Option<u64>,
    /// The current snapshot file failed; its outcome is on its way.
    snapshot_failed: bool,
    /// The events this incarnation handed out (what the server logs).
    events: EventLog,
}

/// A sync the reactor's disk runs: it covers the log up to `position`
/// (what was written when it began, see `Disk::position`) and reports
/// `index`.
#[derive(Debug, Clone, Copy)]
struct SyncInFlight {
    sync: u64,
    index: u64,
    position: usize,
}

/// A client's connection to a node, with its reply queue.
struct Conn {
    client: usize,
    node: NodeId,
    incarnation: u64,
    wire: Wire,
    /// What the core keeps of a RESP connection (an open `MULTI`).
    session: Session,
    /// RESP reply bytes the client has read but not yet parsed.
    inbox: Vec<u8>,
    /// Lines or RESP commands sent that the node has not read yet, in
    /// order. One `Event::Request` at a time stands for them, so that they
    /// arrive in order even past a pause.
    pipeline: VecDeque<Vec<u8>>,
    queue: ReplyQueue,
    open: bool,
    /// After `ERR`: send what is queued, take nothing more, then close.
    closing: bool,
    /// Requests executed on this connection whose replies are not yet sent.
    requests: VecDeque<u64>,
    /// When the last bytes sent on it arrive (the connection is FIFO).
    last_arrival: u64,
}

struct World {
    seed: u64,
    options: Options,
    now: u64,
    queue: BinaryHeap<Scheduled>,
    sequence: u64,
    nodes: Vec<SimNode>,
    network: Network,
    conns: BTreeMap<ConnId, Conn>,
    next_conn: ConnId,
    clients: Vec<Client>,
    next_request: u64,
    /// Requests a follower answered from its local copy.
    local_reads: BTreeSet<u64>,
    history: History,
    /// Every multi-key write whose outcome is unknown, for the atomicity
    /// check at the end (acknowledged ones are checked when acknowledged).
    unknown_group_writes: Vec<GroupWrite>,
    committed: CommittedLog,
    /// Which node led each epoch.
    leaders: BTreeMap<u64, NodeId>,
    /// Which node logged winning each epoch (`events`).
    winners: BTreeMap<u64, NodeId>,
    rng_network: Rng,
    rng_disk: Rng,
    rng_faults: Rng,
    rng_clients: Rng,
    rng_turns: Rng,
    /// The adversarial peer's choices (forked last: the other streams are
    /// the same as before it existed).
    rng_adversary: Rng,
    next_fault: u64,
    weather_fault: u64,
    chaos_over: bool,
    /// A disk replacement was drawn and waits for a moment that allows one
    /// (see `replace_disk`): such moments are rare, so a draw that found
    /// none would leave the fault almost never exercised.
    replacement_wanted: bool,
    chaos_ended_at: u64,
    finished: bool,
    trace: VecDeque<String>,
    hasher: TraceHasher,
    stats: Stats,
}

fn client_address(id: NodeId) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, id as u8)), 7000)
}

impl World {
    fn new(seed: u64, options: Options) -> World {
        let mut root = Rng::new(seed);
        // Its own stream, so that the other streams stay as they were.
        let reactor_syncs = Rng::new(mix(seed ^ 0xd15c_5e1e_c7ed)).chance(500);
        let ids: Vec<NodeId> = (1..=options.nodes as NodeId).collect();
        let nodes = ids
            .iter()
            .map(|&id| SimNode {
                id,
                core: None,
                incarnation: 0,
                paused: false,
                backlog: Vec::new(),
                disk: Disk::new(),
                persisted_epoch: 0,
                timer_generation: [0; 2],
                syncing: false,
                reactor_syncs,
                sync_in_flight: None,
                sync_queued: None,
                syncs_started: 0,
                turn_pending: false,
                acks_checked: 0,
                slow_disk_until: 0,
                checked_commit: 0,
                snapshot_attempt: 0,
                snapshot_fails_after: None,
                snapshot_failed: false,
                events: EventLog::default(),
            })
            .collect();
        let clients = (0..options.clients)
            .map(|index| Client::new(index as u64 + 1))
            .collect();
        World {
            seed,
            now: 0,
            queue: BinaryHeap::new(),
            sequence: 0,
            nodes,
            network: Network::new(&ids),
            conns: BTreeMap::new(),
            next_conn: 1,
            clients,
            next_request: 1,
            local_reads: BTreeSet::new(),
            history: History::default(),
            unknown_group_writes: Vec::new(),
            committed: CommittedLog::default(),
            leaders: BTreeMap::new(),
            winners: BTreeMap::new(),
            rng_network: root.fork(1),
            rng_disk: root.fork(2),
            rng_faults: root.fork(3),
            rng_clients: root.fork(4),
            rng_turns: root.fork(5),
            rng_adversary: root.fork(6),
            next_fault: 1,
            weather_fault: 0,
            chaos_over: false,
            replacement_wanted: false,
            chaos_ended_at: 0,
            finished: false,
            trace: VecDeque::with_capacity(TRACE_TAIL + 1),
            hasher: TraceHasher::default(),
            stats: Stats::default(),
            options,
        }
    }

    fn schedule(&mut self, time: u64, event: Event) {
        self.sequence += 1;
        self.queue.push(Scheduled {
            time: time.max(self.now),
            sequence: self.sequence,
            event,
        });
    }

    fn trace(&mut self, line: impl FnOnce() -> String) {
        let line = format!("t={} {}", self.now, line());
        self.hasher.write(line.as_bytes());
        self.hasher.write(b"\n");
        if self.options.print_trace {
            println!("{line}");
        }
        if self.trace.len() == TRACE_TAIL {
            self.trace.pop_front();
        }
        self.trace.push_back(line);
    }

    fn node(&self, id: NodeId) -> &SimNode {
        &self.nodes[(id - 1) as usize]
    }

    fn node_mut(&mut self, id: NodeId) -> &mut SimNode {
        &mut self.nodes[(id - 1) as usize]
    }

    fn core_mut(&mut self, id: NodeId) -> &mut Node {
        self.node_mut(id).core.as_mut().expect("a live node")
    }

    /// A quarter of the runs limit each store to a couple of the workload's
    /// pairs, so that PUTs are refused with OOM while DELs make room.
    fn memory_limit_bytes(&self) -> Option<usize> {
        (self.seed % 4 == 3).then_some(SIM_MEMORY_LIMIT_BYTES)
    }

    fn ids(&self) -> Vec<NodeId> {
        self.nodes.iter().map(|node| node.id).collect()
    }

    fn is_up(&self, id: NodeId) -> bool {
        self.node(id).core.is_some()
    }

    // -----------------------------------------------------------------------
    // The run

    fn simulate(&mut self) -> Result<(), Failure> {
        for id in self.ids() {
            self.boot(id)?;
        }
        for client in 0..self.clients.len() {
            let at = self.rng_clients.range(0, 50);
            self.schedule(at, Event::ClientWake { client });
        }
        let first_fault = self.rng_faults.range(200, 1000);
        self.schedule(first_fault, Event::Fault);
        self.schedule(self.options.chaos_ms, Event::EndChaos);
        while let Some(scheduled) = self.queue.pop() {
            self.now = scheduled.time;
            self.stats.events += 1;
            self.dispatch(scheduled.event)?;
            if self.finished {
                break;
            }
            if self.chaos_over && self.now > self.chaos_ended_at + CONVERGENCE_DEADLINE_MS {
                let state = self.describe_cluster();
                return fail(
                    ViolationKind::NoConvergence,
                    format!(
                        "no convergence {CONVERGENCE_DEADLINE_MS} ms after healing: {}; {state}",
                        self.convergence().err().unwrap_or_default()
                    ),
                );
            }
        }
        if !self.finished {
            return fail(ViolationKind::NoConvergence, "the event queue ran dry");
        }
        self.final_checks()
    }

    fn dispatch(&mut self, event: Event) -> Result<(), Failure> {
        if let Some(target) = event.target(&self.conns)
            && self.node(target).paused
        {
            self.node_mut(target).backlog.push(event);
            return Ok(());
        }
        match event {
            Event::Deliver {
                from,
                to,
                generation,
                frame,
            } => self.deliver(from, to, generation, &frame),
            Event::Timer {
                node,
                incarnation,
                kind,
                generation,
            } => {
                let sim = self.node(node);
                if sim.incarnation != incarnation
                    || sim.core.is_none()
                    || sim.timer_generation[kind as usize] != generation
                {
                    return Ok(());
                }
                self.trace(|| format!("n{node} timer {kind:?}"));
                let now = self.now;
                self.core_mut(node).on_timer(kind, now);
                self.input_taken(node)
            }
            Event::EndTurn { node, incarnation } => {
                let sim = self.node_mut(node);
                if sim.incarnation != incarnation || sim.core.is_none() {
                    return Ok(());
                }
                sim.turn_pending = false;
                self.end_turn(node)
            }
            Event::SyncDone {
                node,
                incarnation,
                last_index,
                sync,
            } => {
                let sim = self.node_mut(node);
                if sim.incarnation != incarnation {
                    return Ok(());
                }
                if sim.reactor_syncs {
                    match sim.sync_in_flight {
                        Some(in_flight) if in_flight.sync == sync => {
                            sim.disk.sync_to(in_flight.position);
                        }
                        // Waited out before a truncation: already done.
                        _ => return Ok(()),
                    }
                } else {
                    sim.disk.sync();
                }
                self.dispatch(Event::Released {
                    node,
                    incarnation,
                    last_index,
                    sync,
                })
            }
            Event::Released {
                node,
                incarnation,
                last_index,
                sync,
            } => {
                let sim = self.node_mut(node);
                if sim.incarnation != incarnation {
                    return Ok(());
                }
                if sim.reactor_syncs {
                    // A sync waited out before a truncation (while the node
                    // was paused, say) is not reported: `wait_idle` took it.
                    if sim
                        .sync_in_flight
                        .is_none_or(|in_flight| in_flight.sync != sync)
                    {
                        return Ok(());
                    }
                    sim.sync_in_flight = None;
                    self.trace(|| format!("n{node} synced through {last_index} (sync #{sync})"));
                    self.core_mut(node).on_log_released(last_index);
                    if let Some(queued) = self.node_mut(node).sync_queued.take() {
                        self.start_sync(node, queued);
                    }
                } else {
                    self.trace(|| format!("n{node} synced through {last_index}"));
                    self.node_mut(node).syncing = false;
                    self.core_mut(node).on_log_released(last_index);
                }
                self.input_taken(node)
            }
            Event::SnapshotWritten {
                node,
                incarnation,
                attempt,
                bytes,
            } => {
                let sim = self.node(node);
                if sim.incarnation != incarnation || sim.snapshot_attempt != attempt {
                    return Ok(());
                }
                self.core_mut(node).on_snapshot_written(bytes);
                self.input_taken(node)
            }
            Event::SnapshotDone {
                node,
                incarnation,
                attempt,
                index,
                published,
            } => self.snapshot_done(node, incarnation, attempt, index, published),
            Event::PeerDown {
                node,
                incarnation,
                peer,
            } => {
                if self.node(node).incarnation != incarnation || !self.is_up(node) {
                    return Ok(());
                }
                self.trace(|| format!("n{node} peer_down n{peer}"));
                let now = self.now;
                self.core_mut(node).peer_down(peer, now);
                self.input_taken(node)?;
                let delay = self.network.link(node, peer).retry_delay_ms;
                self.schedule(
                    now + delay,
                    Event::Dial {
                        node,
                        incarnation,
                        peer,
                    },
                );
                Ok(())
            }
            Event::Dial {
                node,
                incarnation,
                peer,
            } => self.dial(node, incarnation, peer),
            Event::Request { conn, request_id } => self.execute_request(conn, request_id),
            Event::Reply { conn, bytes } => self.receive_reply(conn, &bytes),
            Event::ConnReset { conn } => {
                self.connection_reset(conn);
                Ok(())
            }
            Event::ClientWake { client } => {
                self.client_wake(client);
                Ok(())
            }
            Event::ClientTimeout { client, request_id } => {
                self.client_timeout(client, request_id);
                Ok(())
            }
            Event::Fault => self.inject_fault(),
            Event::CrashSoon { node, incarnation } => {
                if self.chaos_over || self.node(node).incarnation != incarnation {
                    return Ok(());
                }
                self.trace(|| format!("n{node}: crash aimed at a moment of interest"));
                self.crash(node)
            }
            Event::Restart { node } => self.restart(node),
            Event::Resume { node } => {
                self.resume(node);
                Ok(())
            }
            Event::Heal { fault } => {
                if self.network.heal(fault) {
                    self.trace(|| format!("partition #{fault} heals"));
                }
                Ok(())
            }
            Event::WeatherEnds { fault } => {
                if self.weather_fault == fault {
                    self.trace(|| format!("weather #{fault} ends"));
                    self.network.weather = Weather::CALM;
                }
                Ok(())
            }
            Event::EndChaos => self.end_chaos(),
            Event::Probe => self.probe(),
        }
    }

    // -----------------------------------------------------------------------
    // Driving a node

    fn boot(&mut self, id: NodeId) -> Result<(), Failure> {
        let incarnation = self.node(id).incarnation;
        let reopened = self
            .node_mut(id)
            .disk
            .reopen()
            .or_else(|error| fail(ViolationKind::BadDisk, format!("node {id}: {error}")))?;
        let config = NodeConfig {
            id,
            cluster_size: self.options.nodes,
            replication: Replication::Sync,
            follower_reads: self.options.follower_reads,
            heartbeat_ms: 50,
            election_timeout_ms: 300,
            seed: mix(self.seed ^ (id << 48) ^ incarnation.wrapping_mul(0x9e37_79b9)),
            // Half the runs keep almost no records in memory, so followers
            // that lag and fetches are served from the log file.
            max_log_memory_bytes: if self.seed.is_multiple_of(2) {
                TINY_LOG_MEMORY_BYTES
            } else {
                kvstore::config::DEFAULT_LOG_MEMORY_BYTES
            },
            // A third of the runs take no snapshots; the others take them
            // often, so they meet crashes, failovers and lagging followers.
            snapshot_log_bytes: match self.seed % 3 {
                0 => 0,
                1 => 512,
                _ => 4 * 1024,
            },
            unsafe_skip_log_adoption: self.options.unsafe_skip_log_adoption,
            unsafe_compact_before_snapshot_is_durable: self
                .options
                .unsafe_compact_before_snapshot_is_durable,
            unsafe_skip_frame_checks: self.options.unsafe_skip_frame_checks,
            max_memory_bytes: self.memory_limit_bytes(),
        };
        let mut core = Node::new(config);
        let log_start = reopened.first_index;
        let covered = reopened
            .snapshot
            .as_ref()
            .map_or(0, |snapshot| snapshot.index);
        if log_start > covered + 1 {
            return fail(
                ViolationKind::BadDisk,
                format!(
                    "node {id} restarts with a log from index {log_start} but a snapshot only \
                     through {covered}: records are lost"
                ),
            );
        }
        if let Some(snapshot) = &reopened.snapshot {
            let (store, summary) = load_snapshot(&snapshot.bytes)
                .or_else(|error| fail(ViolationKind::BadSnapshot, format!("node {id}: {error}")))?;
            let point = SnapshotPoint {
                index: summary.index,
                epoch: summary.epoch,
                file_bytes: summary.file_bytes,
            };
            core.restore_snapshot(point, store);
        }
        for record in &reopened.records {
            let (entry, _) = log::decode(record).expect("reopen checked every record");
            core.replay(&entry);
        }
        let persisted = self.node(id).persisted_epoch;
        core.restore_promised_epoch(persisted);
        core.start(self.now);
        let records = reopened.records.len();
        let torn = reopened.torn_bytes;
        let snapshot_index = reopened
            .snapshot
            .as_ref()
            .map_or(0, |snapshot| snapshot.index);
        let reactor_syncs = self.node(id).reactor_syncs;
        self.trace(|| {
            format!(
                "n{id} starts (incarnation {incarnation}): snapshot {snapshot_index}, {records} \
                 records replayed, {torn} torn bytes cut, epoch {persisted}, {} disk",
                if reactor_syncs {
                    "reactor's"
                } else {
                    "waiting"
                }
            )
        });
        let sim = self.node_mut(id);
        sim.core = Some(core);
        // What the snapshot covers was checked when it was published.
        sim.checked_commit = snapshot_index;
        sim.syncing = false;
        sim.sync_in_flight = None;
        sim.sync_queued = None;
        sim.turn_pending = false;
        sim.acks_checked = 0;
        sim.events.restart();
        for peer in self.ids() {
            if peer != id {
                let at = self.now + self.rng_network.range(1, 5);
                self.network.link_mut(id, peer).retry_delay_ms = FIRST_RETRY_DELAY_MS;
                self.schedule(
                    at,
                    Event::Dial {
                        node: id,
                        incarnation,
                        peer,
                    },
                );
            }
        }
        self.input_taken(id)
    }

    /// An input was handed to node `id`: its turn ends soon, together with
    /// whatever other inputs reach it first. The reactor handles every event
    /// one poll returns before it ends the turn; here inputs at the same
    /// virtual millisecond (or, now and then, the next two) share a turn.
    fn input_taken(&mut self, id: NodeId) -> Result<(), Failure> {
        self.check_new_acks(id)?;
        let sim = self.node_mut(id);
        if sim.turn_pending {
            return Ok(());
        }
        sim.turn_pending = true;
        let incarnation = sim.incarnation;
        let at = if self.rng_turns.chance(200) {
            self.now + self.rng_turns.range(1, 2)
        } else {
            self.now
        };
        self.schedule(
            at,
            Event::EndTurn {
                node: id,
                incarnation,
            },
        );
        Ok(())
    }

    /// A follower acknowledges only records its disk holds durably. Checked
    /// right after the input that queued the Ack: later inputs of the same
    /// turn may cut the log before the Ack leaves, and it then speaks of the
    /// log as it was (its envelope carries the epoch of that moment).
    fn check_new_acks(&mut self, id: NodeId) -> Result<(), Failure> {
        let sim = &mut self.nodes[(id - 1) as usize];
        let core = sim.core.as_ref().expect("a live node");
        let messages = core.queued_messages().to_vec();
        let new = sim.acks_checked..messages.len();
        sim.acks_checked = messages.len();
        self.check_ack_messages(id, &messages[new])
    }

    /// A batch the turn sends: the Acks in it not checked yet (queued after
    /// the last input) are checked now.
    fn check_acks(&mut self, id: NodeId, messages: &[(NodeId, Envelope)]) -> Result<(), Failure> {
        let checked = std::mem::take(&mut self.node_mut(id).acks_checked);
        self.check_ack_messages(id, &messages[checked.min(messages.len())..])
    }

    fn check_ack_messages(
        &mut self,
        id: NodeId,
        messages: &[(NodeId, Envelope)],
    ) -> Result<(), Failure> {
        let acks: Vec<(NodeId, u64, u64)> = messages
            .iter()
            .filter_map(|(to, envelope)| match envelope.message {
                Message::Ack {
                    success: true,
                    match_index,
                    ..
                } if match_index > 0 => Some((*to, envelope.epoch, match_index)),
                _ => None,
            })
            .collect();
        let sim = &self.nodes[(id - 1) as usize];
        for (to, epoch, match_index) in acks {
            if let Some(snapshot) = sim.disk.snapshot()
                && match_index <= snapshot.index
            {
                // A durable snapshot holds the committed state through it.
                self.check_ack_of_snapshot(id, to, epoch, match_index)?;
                continue;
            }
            let durable = sim.disk.durable_record(match_index);
            let record = sim.record(match_index);
            if durable != record {
                return fail(
                    ViolationKind::AcknowledgedNotDurable,
                    format!(
                        "node {id} acknowledges index {match_index} ({}) but its disk holds {} \
                         durably",
                        record.map_or("-".into(), describe_record),
                        durable.map_or("nothing".into(), describe_record)
                    ),
                );
            }
            // Log matching: an Ack in epoch E to E's leader says this log
            // equals the leader's up to the index.
            let leader_record = (self.leaders.get(&epoch) == Some(&to))
                .then(|| self.node(to).core.as_ref())
                .flatten()
                .filter(|leader| leader.leading_epoch() == Some(epoch))
                .and_then(|leader| leader.record(match_index));
            if let Some(leader_record) = leader_record
                && Some(leader_record) != record
            {
                return fail(
                    ViolationKind::Protocol,
                    format!(
                        "node {id} tells node {to}, leader of epoch {epoch}, that it holds its log \
                         through {match_index}, but holds {} where the leader has {}",
                        record.map_or("nothing".into(), describe_record),
                        describe_record(leader_record)
                    ),
                );
            }
        }
        Ok(())
    }

    /// An Ack of an index a durable snapshot covers: at the snapshot's own
    /// index, the leader's record there must have the snapshot's epoch.
    fn check_ack_of_snapshot(
        &self,
        id: NodeId,
        to: NodeId,
        epoch: u64,
        match_index: u64,
    ) -> Result<(), Failure> {
        let snapshot = self
            .node(id)
            .disk
            .snapshot()
            .expect("checked by the caller");
        if match_index != snapshot.index {
            return Ok(());
        }
        let leader_record = (self.leaders.get(&epoch) == Some(&to))
            .then(|| self.node(to).core.as_ref())
            .flatten()
            .filter(|leader| leader.leading_epoch() == Some(epoch))
            .and_then(|leader| leader.record(match_index));
        let Some(leader_record) = leader_record else {
            return Ok(());
        };
        let (entry, _) = log::decode(leader_record).expect("records in memory decode");
        if entry.epoch != snapshot.epoch {
            return fail(
                ViolationKind::Protocol,
                format!(
                    "node {id} tells node {to}, leader of epoch {epoch}, that it holds its log \
                     through {match_index} by a snapshot of epoch {}, but the leader has {}",
                    snapshot.epoch,
                    describe_record(leader_record)
                ),
            );
        }
        Ok(())
    }

    /// The end of a turn: the core's steps, in the order it hands them out
    /// (`node::turn`), carried out as the reactor does (see the module doc).
    fn end_turn(&mut self, id: NodeId) -> Result<(), Failure> {
        while let Some(step) = self.core_mut(id).next_step() {
            match step {
                Step::Event(event) => {
                    self.trace(|| format!("n{id} logs: {event}"));
                    self.node_mut(id).events.record(event);
                }
                Step::PersistEpoch(epoch) => self.persist_epoch(id, epoch)?,
                Step::ReadLog(read) => self.read_log(id, read),
                Step::ReadSnapshot(read) => {
                    let bytes =
                        self.node(id)
                            .disk
                            .read_snapshot(read.index, read.offset, read.max_bytes);
                    self.core_mut(id).on_snapshot_read(read, bytes.as_deref());
                }
                Step::ArmTimers(timers) => self.arm_timers(id, timers),
                Step::Send(messages) => {
                    self.check_acks(id, &messages)?;
                    for (to, envelope) in messages {
                        self.send(id, to, &envelope)?;
                    }
                }
                Step::WriteLog => {
                    let outcome = self.write_log(id)?;
                    self.core_mut(id).log_write_done(outcome);
                }
                Step::VoidHeldReplies => self.void_held_replies(id),
                Step::Release(released) => {
                    // Checked before the replies leave, so that a reply
                    // released in a turn is judged against what that turn
                    // committed.
                    self.check_events(id)?;
                    self.observe(id)?;
                    self.release_replies(id, released);
                }
                Step::BeginSnapshot { index, epoch, .. } => self.begin_snapshot(id, index, epoch),
                Step::WriteSnapshot(bytes) => self.write_snapshot(id, &bytes)?,
                Step::FinishSnapshot(summary) => self.finish_snapshot(id, summary.index),
                Step::AbortSnapshot => {
                    let sim = self.node_mut(id);
                    sim.disk.abandon_snapshot();
                    // Its outcome will not be reported.
                    sim.snapshot_attempt += 1;
                    self.trace(|| format!("n{id} abandons its snapshot file"));
                }
                Step::CompactLog(through) => {
                    self.node_mut(id).disk.compact_through(through);
                    self.trace(|| format!("n{id} compacts its log through {through}"));
                    self.maybe_crash_soon(id, 30);
                }
            }
        }
        Ok(())
    }

    fn persist_epoch(&mut self, id: NodeId, epoch: u64) -> Result<(), Failure> {
        let persisted = self.node(id).persisted_epoch;
        if epoch < persisted {
            return fail(
                ViolationKind::Protocol,
                format!("node {id} persisted epoch {epoch} after {persisted}"),
            );
        }
        self.node_mut(id).persisted_epoch = epoch;
        self.trace(|| format!("n{id} persists epoch {epoch}"));
        self.maybe_crash_soon(id, 30);
        Ok(())
    }

    fn arm_timers(&mut self, id: NodeId, timers: Vec<(TimerKind, u64)>) {
        let incarnation = self.node(id).incarnation;
        for (kind, deadline_ms) in timers {
            let sim = self.node_mut(id);
            sim.timer_generation[kind as usize] += 1;
            let generation = sim.timer_generation[kind as usize];
            self.schedule(
                deadline_ms,
                Event::Timer {
                    node: id,
                    incarnation,
                    kind,
                    generation,
                },
            );
        }
    }

    /// What the reactor's `read_log_for_core` does: read whole records from
    /// the file (durable and written bytes alike) and hand them over.
    fn read_log(&mut self, id: NodeId, read: LogRead) {
        let bytes = self
            .node(id)
            .disk
            .read_records(read.from_index, read.max_bytes);
        self.trace(|| {
            format!(
                "n{id} reads {} bytes of its log from index {}",
                bytes.len(),
                read.from_index
            )
        });
        self.core_mut(id).on_log_read(read, &bytes);
    }

    fn send(&mut self, from: NodeId, to: NodeId, envelope: &Envelope) -> Result<(), Failure> {
        if envelope.from != from || to == from || to == 0 || to > self.options.nodes as NodeId {
            return fail(
                ViolationKind::Protocol,
                format!("node {from} sent {envelope:?} to {to}"),
            );
        }
        let link = self.network.link(from, to);
        if !link.up {
            self.trace(|| format!("n{from} -> n{to} dropped (no link): {}", describe(envelope)));
            return Ok(());
        }
        self.stats.messages += 1;
        if let Message::InstallSnapshot { .. } = envelope.message {
            self.stats.snapshot_chunks += 1;
        }
        let mut frame = Vec::new();
        encode_frame(envelope, &mut frame);
        let now = self.now;
        let arrivals = self.network.arrivals(&mut self.rng_network, now);
        self.trace(|| {
            format!(
                "n{from} -> n{to} {} (arrives {arrivals:?})",
                describe(envelope)
            )
        });
        for at in arrivals {
            self.schedule(
                at,
                Event::Deliver {
                    from,
                    to,
                    generation: link.generation,
                    frame: frame.clone(),
                },
            );
        }
        Ok(())
    }

    fn deliver(
        &mut self,
        from: NodeId,
        to: NodeId,
        generation: u64,
        frame: &[u8],
    ) -> Result<(), Failure> {
        if self.network.link(from, to).generation != generation || !self.is_up(to) {
            return Ok(());
        }
        if self.network.is_silenced(from, to) {
            self.trace(|| format!("n{from} -> n{to} frame lost in a partition"));
            return Ok(());
        }
        let envelope = match decode_frame(frame) {
            Ok(Some((envelope, used))) if used == frame.len() => envelope,
            other => {
                return fail(
                    ViolationKind::Protocol,
                    format!("a frame from {from} did not decode: {other:?}"),
                );
            }
        };
        let mut again = Vec::new();
        encode_frame(&envelope, &mut again);
        if again != frame {
            return fail(
                ViolationKind::Protocol,
                format!("a frame from {from} does not re-encode to itself: {envelope:?}"),
            );
        }
        if !self.chaos_over && self.rng_adversary.chance(ADVERSARY_PER_MILLE) {
            self.deliver_forgery(to, &envelope)?;
        }
        self.trace(|| format!("n{to} <- n{from} {}", describe(&envelope)));
        let now = self.now;
        if let Err(refused) = self.core_mut(to).handle_message(envelope, now) {
            return fail(
                ViolationKind::Protocol,
                format!("n{to} refused a frame n{from} sent by the protocol: {refused}"),
            );
        }
        self.input_taken(to)
    }

    /// The adversarial peer (`adversary`): a forgery of the frame about to
    /// arrive, which the core must refuse (or ignore) without a trace.
    fn deliver_forgery(&mut self, to: NodeId, real: &Envelope) -> Result<(), Failure> {
        let forgery = adversary::forge(real, &mut self.rng_adversary);
        self.trace(|| {
            format!(
                "n{to} <- forged: {}: {}",
                forgery.what,
                describe(&forgery.envelope)
            )
        });
        let before = adversary::fingerprint(self.core_mut(to));
        let now = self.now;
        let outcome = self
            .core_mut(to)
            .handle_message(forgery.envelope.clone(), now);
        let after = adversary::fingerprint(self.core_mut(to));
        let kept = match forgery.expect {
            Expect::Refused => outcome.is_err(),
            Expect::Ignored => outcome.is_ok(),
        };
        let unchecked = self.options.unsafe_skip_frame_checks;
        if !unchecked && (!kept || before != after) {
            return fail(
                ViolationKind::Protocol,
                format!(
                    "n{to} took {} ({:?}): {outcome:?}, state {before:?} -> {after:?}",
                    forgery.what, forgery.expect
                ),
            );
        }
        self.stats.forgeries_refused += 1;
        Ok(())
    }

    fn write_log(&mut self, id: NodeId) -> Result<LogWriteOutcome, Failure> {
        if self.node(id).reactor_syncs {
            return self.write_log_as_the_reactor(id);
        }
        if self.node(id).syncing {
            return Ok(LogWriteOutcome::Deferred);
        }
        let sim = &mut self.nodes[(id - 1) as usize];
        let core = sim.core.as_ref().expect("a live node");
        let write = core
            .pending_log_write()
            .expect("Step::WriteLog has a write");
        let truncate = write.truncate_after;
        let last_index = write.last_index;
        let bytes = write.bytes.len();
        if let Some(base) = write.reset {
            self.stats.log_resets += 1;
            sim.disk.reset_after(base.index);
        }
        if let Some(index) = truncate {
            sim.disk
                .truncate_after(index)
                .or_else(|error| fail(ViolationKind::BadDisk, format!("node {id}: {error}")))?;
        }
        sim.disk
            .append(write.first_index, write.bytes)
            .or_else(|error| fail(ViolationKind::BadDisk, format!("node {id}: {error}")))?;
        sim.syncing = true;
        let incarnation = sim.incarnation;
        let at = if self.now < sim.slow_disk_until {
            self.now + self.rng_disk.range(5, 300)
        } else {
            self.now + self.rng_disk.range(0, 5)
        };
        self.trace(|| {
            format!(
                "n{id} writes {bytes} log bytes through {last_index} (truncate after {truncate:?})"
            )
        });
        self.maybe_crash_soon(id, 10);
        self.schedule(
            at,
            Event::SyncDone {
                node: id,
                incarnation,
                last_index,
                sync: 0,
            },
        );
        Ok(LogWriteOutcome::Syncing)
    }

    /// `write_log` under `--fsync always`: the write is handed off whatever
    /// sync is in flight; a cut first waits out the syncs in flight or
    /// queued and drops their results (`Syncer::wait_idle`).
    fn write_log_as_the_reactor(&mut self, id: NodeId) -> Result<LogWriteOutcome, Failure> {
        let sim = &mut self.nodes[(id - 1) as usize];
        let core = sim.core.as_ref().expect("a live node");
        let write = core
            .pending_log_write()
            .expect("Step::WriteLog has a write");
        let truncate = write.truncate_after;
        let last_index = write.last_index;
        let bytes = write.bytes.len();
        let mut dropped = Vec::new();
        if write.reset.is_some() || truncate.is_some() {
            if let Some(in_flight) = sim.sync_in_flight.take() {
                sim.disk.sync_to(in_flight.position);
                dropped.push(in_flight.index);
            }
            if let Some(queued) = sim.sync_queued.take() {
                // It starts once the one in flight returns: it covers all
                // that is written.
                sim.disk.sync();
                dropped.push(queued);
            }
        }
        if let Some(base) = write.reset {
            self.stats.log_resets += 1;
            sim.disk.reset_after(base.index);
        }
        if let Some(index) = truncate {
            self.stats.reactor_cuts += 1;
            sim.disk
                .truncate_after(index)
                .or_else(|error| fail(ViolationKind::BadDisk, format!("node {id}: {error}")))?;
        }
        let during_sync = sim.sync_in_flight.is_some();
        sim.disk
            .append(write.first_index, write.bytes)
            .or_else(|error| fail(ViolationKind::BadDisk, format!("node {id}: {error}")))?;
        self.stats.syncs_dropped += dropped.len() as u64;
        if !dropped.is_empty() {
            self.trace(|| format!("n{id} waits out syncs through {dropped:?}, not reported"));
        }
        self.trace(|| {
            format!(
                "n{id} writes {bytes} log bytes through {last_index} (truncate after {truncate:?}{})",
                if during_sync {
                    ", a sync in flight"
                } else {
                    ""
                }
            )
        });
        if during_sync {
            self.stats.writes_during_sync += 1;
            let sim = self.node_mut(id);
            sim.sync_queued = Some(sim.sync_queued.map_or(last_index, |at| at.max(last_index)));
        } else {
            self.start_sync(id, last_index);
        }
        self.maybe_crash_soon(id, 10);
        Ok(LogWriteOutcome::Syncing)
    }

    /// The reactor's disk begins a sync of what is written so far, to be
    /// reported as `index`.
    fn start_sync(&mut self, id: NodeId, index: u64) {
        let sim = &mut self.nodes[(id - 1) as usize];
        sim.syncs_started += 1;
        let sync = sim.syncs_started;
        let position = sim.disk.position();
        sim.sync_in_flight = Some(SyncInFlight {
            sync,
            index,
            position,
        });
        let incarnation = sim.incarnation;
        // Now and then a slower sync, so that writes and cuts meet it.
        let at = if self.now < sim.slow_disk_until {
            self.now + self.rng_disk.range(5, 300)
        } else if self.rng_disk.chance(400) {
            self.now + self.rng_disk.range(5, 100)
        } else {
            self.now + self.rng_disk.range(0, 5)
        };
        self.trace(|| format!("n{id} sync #{sync} up to byte {position} for index {index} begins"));
        self.schedule(
            at,
            Event::SyncDone {
                node: id,
                incarnation,
                last_index: index,
                sync,
            },
        );
    }

    /// The snapshotter starts a temporary file; now and then it is one
    /// that a full disk will make fail part way.
    fn begin_snapshot(&mut self, id: NodeId, index: u64, epoch: u64) {
        let fails_after = self.rng_disk.chance(60).then(|| self.rng_disk.range(0, 4));
        let sim = self.node_mut(id);
        sim.snapshot_attempt += 1;
        sim.snapshot_fails_after = fails_after;
        sim.snapshot_failed = false;
        sim.disk.begin_snapshot(index, epoch);
        self.stats.snapshots_started += 1;
        self.trace(|| {
            format!("n{id} begins a snapshot of index {index} (fails after {fails_after:?} writes)")
        });
        self.maybe_crash_soon(id, 10);
    }

    fn write_snapshot(&mut self, id: NodeId, bytes: &[u8]) -> Result<(), Failure> {
        let sim = self.node_mut(id);
        if sim.snapshot_failed {
            return Ok(());
        }
        match sim.snapshot_fails_after {
            Some(0) => {
                self.fail_snapshot(id);
                return Ok(());
            }
            Some(writes) => sim.snapshot_fails_after = Some(writes - 1),
            None => {}
        }
        sim.disk
            .write_snapshot(bytes)
            .or_else(|error| fail(ViolationKind::BadDisk, format!("node {id}: {error}")))?;
        let attempt = sim.snapshot_attempt;
        let incarnation = sim.incarnation;
        let at = self.now + self.rng_disk.range(0, 3);
        self.schedule(
            at,
            Event::SnapshotWritten {
                node: id,
                incarnation,
                attempt,
                bytes: bytes.len(),
            },
        );
        Ok(())
    }

    /// The disk is full: the file is removed and the failure reported.
    fn fail_snapshot(&mut self, id: NodeId) {
        let sim = self.node_mut(id);
        sim.snapshot_failed = true;
        sim.snapshot_fails_after = None;
        sim.disk.abandon_snapshot();
        let (attempt, incarnation) = (sim.snapshot_attempt, sim.incarnation);
        let at = self.now + self.rng_disk.range(0, 3);
        self.schedule(
            at,
            Event::SnapshotDone {
                node: id,
                incarnation,
                attempt,
                index: 0,
                published: false,
            },
        );
    }

    /// fsync, rename, fsync the directory: a few milliseconds later the
    /// snapshot is published (or the fsync finds the disk full).
    fn finish_snapshot(&mut self, id: NodeId, index: u64) {
        let sim = self.node(id);
        if sim.snapshot_failed {
            return;
        }
        if sim.snapshot_fails_after.is_some() {
            return self.fail_snapshot(id);
        }
        let (attempt, incarnation) = (sim.snapshot_attempt, sim.incarnation);
        let at = self.now + self.rng_disk.range(1, 30);
        self.schedule(
            at,
            Event::SnapshotDone {
                node: id,
                incarnation,
                attempt,
                index,
                published: true,
            },
        );
    }

    /// The snapshot writer's outcome reaches the node. A published
    /// snapshot must be exactly the committed store as of its index.
    fn snapshot_done(
        &mut self,
        id: NodeId,
        incarnation: u64,
        attempt: u64,
        index: u64,
        published: bool,
    ) -> Result<(), Failure> {
        let sim = self.node(id);
        if sim.incarnation != incarnation || sim.snapshot_attempt != attempt {
            return Ok(());
        }
        if !published {
            self.node_mut(id).disk.abandon_snapshot();
            self.trace(|| format!("n{id}'s snapshot failed (a full disk)"));
            self.core_mut(id)
                .on_snapshot_done(Err("simulated full disk".to_string()));
            return self.input_taken(id);
        }
        let file_bytes = self
            .node_mut(id)
            .disk
            .publish_snapshot(index)
            .or_else(|error| fail(ViolationKind::BadDisk, format!("node {id}: {error}")))?;
        self.check_snapshot(id)?;
        self.stats.snapshots_published += 1;
        self.trace(|| {
            format!("n{id} published its snapshot of index {index} ({file_bytes} bytes)")
        });
        // Virtual time does not pass while a file is written.
        let written = SnapshotWritten {
            file_bytes,
            elapsed_ms: 0,
        };
        self.core_mut(id).on_snapshot_done(Ok(written));
        self.maybe_crash_soon(id, 30);
        self.input_taken(id)
    }

    /// The node's published snapshot decodes and holds exactly the
    /// committed store as of its index.
    fn check_snapshot(&self, id: NodeId) -> Result<(), Failure> {
        let snapshot = self.node(id).disk.snapshot().expect("just published");
        let (store, summary) = load_snapshot(&snapshot.bytes)
            .or_else(|error| fail(ViolationKind::BadSnapshot, format!("node {id}: {error}")))?;
        if summary.index != snapshot.index || summary.epoch != snapshot.epoch {
            return fail(
                ViolationKind::BadSnapshot,
                format!(
                    "node {id}'s snapshot file says index {} epoch {}",
                    summary.index, summary.epoch
                ),
            );
        }
        let actual: StoreImage = store
            .iter()
            .map(|(key, value)| (key.to_vec(), value.to_vec()))
            .collect();
        let expected = self.committed.image_at(snapshot.index);
        if snapshot.index > self.committed.len() || actual != expected {
            return fail(
                ViolationKind::BadSnapshot,
                format!(
                    "node {id}'s snapshot of index {} holds {} but the committed log says {}",
                    snapshot.index,
                    describe_image(&actual),
                    describe_image(&expected)
                ),
            );
        }
        Ok(())
    }

    /// `refuse_held_replies`: a deposed leader's held replies are void.
    fn void_held_replies(&mut self, id: NodeId) {
        let incarnation = self.node(id).incarnation;
        let mut voided = Vec::new();
        for (conn_id, conn) in &mut self.conns {
            if conn.node == id
                && conn.incarnation == incarnation
                && conn.open
                && conn.queue.discard_held()
            {
                conn.queue.push(
                    Reply::Error(ErrorReply::LeadershipLost),
                    Gate::OPEN,
                    Gate::OPEN,
                );
                conn.closing = true;
                voided.push(*conn_id);
            }
        }
        self.trace(|| format!("n{id} lost leadership; voided held replies on {voided:?}"));
    }

    fn release_replies(&mut self, id: NodeId, released: Gate) {
        let incarnation = self.node(id).incarnation;
        let mut sends = Vec::new();
        for (conn_id, conn) in &mut self.conns {
            if conn.node != id || conn.incarnation != incarnation || !conn.open {
                continue;
            }
            let bytes = conn.queue.sendable(released).to_vec();
            if !bytes.is_empty() {
                conn.queue.consume(bytes.len());
                let at = (self.now + self.rng_network.range(1, 5)).max(conn.last_arrival);
                conn.last_arrival = at;
                sends.push((at, *conn_id, bytes));
            }
            if conn.closing && conn.queue.is_empty() {
                conn.open = false;
            }
        }
        for (at, conn, bytes) in sends {
            self.schedule(at, Event::Reply { conn, bytes });
        }
    }

    fn dial(&mut self, id: NodeId, incarnation: u64, peer: NodeId) -> Result<(), Failure> {
        if self.node(id).incarnation != incarnation || !self.is_up(id) {
            return Ok(());
        }
        if self.network.link(id, peer).up {
            return Ok(());
        }
        let reachable = self.is_up(peer)
            && !self.node(peer).paused
            && !self.network.is_refused(id, peer)
            && !self.network.is_silenced(id, peer)
            && !self.network.is_silenced(peer, id);
        if !reachable {
            let link = self.network.link_mut(id, peer);
            let delay = link.retry_delay_ms;
            link.retry_delay_ms = (delay * 2).min(MAX_RETRY_DELAY_MS);
            self.schedule(
                self.now + delay,
                Event::Dial {
                    node: id,
                    incarnation,
                    peer,
                },
            );
            return Ok(());
        }
        let link = self.network.link_mut(id, peer);
        link.up = true;
        link.retry_delay_ms = FIRST_RETRY_DELAY_MS;
        self.trace(|| format!("n{id} peer_up n{peer}"));
        self.core_mut(id).peer_up(peer, client_address(peer));
        self.input_taken(id)
    }

    /// Breaks the connection `from -> to`, telling `from` if it is alive.
    fn break_link(&mut self, from: NodeId, to: NodeId) {
        if self.network.break_link(from, to) && self.is_up(from) {
            let incarnation = self.node(from).incarnation;
            let at = self.now + self.rng_network.range(1, 5);
            self.schedule(
                at,
                Event::PeerDown {
                    node: from,
                    incarnation,
                    peer: to,
                },
            );
        }
    }

    // -----------------------------------------------------------------------
    // Checks after every turn

    /// The turn's events tell the truth about the node (`events`).
    fn check_events(&mut self, id: NodeId) -> Result<(), Failure> {
        let sim = &mut self.nodes[(id - 1) as usize];
        let core = sim.core.as_ref().expect("a live node");
        sim.events.check_turn(id, core, &mut self.winners)
    }

    fn observe(&mut self, id: NodeId) -> Result<(), Failure> {
        let sim = &self.nodes[(id - 1) as usize];
        let core = sim.core.as_ref().expect("a live node");
        if let Some(epoch) = core.leading_epoch() {
            match self.leaders.get(&epoch) {
                Some(&other) if other != id => {
                    return fail(
                        ViolationKind::TwoLeadersInOneEpoch,
                        format!("nodes {other} and {id} both led epoch {epoch}"),
                    );
                }
                Some(_) => {}
                None => {
                    self.leaders.insert(epoch, id);
                    self.stats.leaders_elected += 1;
                    self.trace(|| format!("n{id} leads epoch {epoch}"));
                    self.maybe_crash_soon(id, 50);
                }
            }
        }
        let sim = &self.nodes[(id - 1) as usize];
        let core = sim.core.as_ref().expect("a live node");
        let promised = core.promised_epoch();
        let durable_epoch = sim
            .disk
            .last_durable_epoch()
            .or_else(|error| fail(ViolationKind::BadDisk, error))?;
        if promised > sim.persisted_epoch.max(durable_epoch) {
            return fail(
                ViolationKind::Protocol,
                format!(
                    "node {id} promised epoch {promised} but persisted only {} (its durable log \
                     ends in epoch {durable_epoch})",
                    sim.persisted_epoch
                ),
            );
        }
        let commit = core.commit_index();
        if commit < sim.checked_commit {
            return fail(
                ViolationKind::CommittedLogDiverged,
                format!(
                    "node {id}'s commit index went back from {} to {commit}",
                    sim.checked_commit
                ),
            );
        }
        if commit > core.last_index() {
            return fail(
                ViolationKind::CommittedLogDiverged,
                format!(
                    "node {id} has commit index {commit} past its last index {}",
                    core.last_index()
                ),
            );
        }
        // What a durable snapshot covers was checked when it was published.
        let floor = sim.checked_commit.max(sim.disk.snapshot_index());
        for index in floor + 1..=commit {
            let Some(record) = sim.record(index) else {
                return fail(
                    ViolationKind::CommittedLogDiverged,
                    format!("node {id} no longer holds committed record {index}"),
                );
            };
            let first_seen = index > self.committed.len();
            self.committed.observe(id, index, record)?;
            if first_seen {
                self.check_durable_on_majority(id, index)?;
            }
        }
        let limit = self.memory_limit_bytes().unwrap_or(usize::MAX);
        let sim = &mut self.nodes[(id - 1) as usize];
        sim.checked_commit = sim.checked_commit.max(commit);
        let core = sim.core.as_ref().expect("a live node");
        let actual: StoreImage = core
            .store()
            .iter()
            .map(|(key, value)| (key.to_vec(), value.to_vec()))
            .collect();
        let mut expected = self.committed.image_at(commit);
        if core.leading_epoch().is_some() {
            // A leader has applied its whole log, ahead of commit.
            for index in commit + 1..=core.last_index() {
                let record = core.record(index).expect("a leader holds its log");
                apply_record(&mut expected, record);
            }
        }
        let used_bytes = core.store().used_bytes();
        let counted: usize = actual
            .iter()
            .map(|(key, value)| Store::pair_cost(key.len(), value.len()))
            .sum();
        if used_bytes != counted || used_bytes > limit {
            return fail(
                ViolationKind::StoreDiverged,
                format!(
                    "node {id} accounts {used_bytes} bytes for pairs that cost {counted} \
                     (limit {limit})"
                ),
            );
        }
        if actual != expected {
            let leading = core.leading_epoch();
            let last = core.last_index();
            return fail(
                ViolationKind::StoreDiverged,
                format!(
                    "node {id} (leading {leading:?}, commit {commit}, last {last}) has store {} \
                     but its log says {}",
                    describe_image(&actual),
                    describe_image(&expected)
                ),
            );
        }
        Ok(())
    }

    /// A committed record must survive any minority of crashes: a majority
    /// of disks hold it durably (whatever their processes are doing).
    fn check_durable_on_majority(&self, id: NodeId, index: u64) -> Result<(), Failure> {
        let record = self.committed.record(index).expect("just observed");
        let holders: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|sim| {
                sim.disk.durable_record(index) == Some(record) || sim.disk.snapshot_index() >= index
            })
            .map(|sim| sim.id)
            .collect();
        if holders.len() < self.options.nodes / 2 + 1 {
            return fail(
                ViolationKind::CommittedNotDurable,
                format!(
                    "node {id} counts {} committed, but only nodes {holders:?} hold it durably",
                    describe_record(record)
                ),
            );
        }
        Ok(())
    }

    // -----------------------------------------------------------------------
    // Clients

    fn client_wake(&mut self, client: usize) {
        if self.clients[client].in_flight.is_some() {
            return;
        }
        // A request to retry or a final read; in the workload, `None`: one
        // to invent once the connection's protocol is known.
        let state = &mut self.clients[client];
        let pending = match state.next.take() {
            Some(request) if state.phase != Phase::Draining => Some(request),
            _ => match state.phase {
                Phase::Workload => None,
                Phase::FinalReads => match state.final_keys.pop_front() {
                    Some(key) => Some(Request::Single(Operation::Get { key })),
                    None => {
                        state.phase = Phase::Done;
                        return;
                    }
                },
                Phase::Draining | Phase::Done => return,
            },
        };
        let target = match self.clients[client].target {
            Some(target) => target,
            None => self.rng_clients.range(1, self.options.nodes as u64),
        };
        let needs_resp = pending.as_ref().is_some_and(Request::needs_resp);
        let Some(conn) = self.client_conn(client, target, needs_resp) else {
            // Connection refused: certainly not executed.
            let client_id = self.clients[client].id;
            self.trace(|| format!("client {client_id} cannot connect to n{target}"));
            let state = &mut self.clients[client];
            state.next = pending;
            state.target = None;
            let at = self.now + self.rng_clients.range(10, 50);
            self.schedule(at, Event::ClientWake { client });
            return;
        };
        let wire = self.conns[&conn].wire;
        let request = match pending {
            Some(request) => request,
            None => {
                let keys = self.options.keys;
                self.clients[client].invent(&mut self.rng_clients, keys, wire)
            }
        };
        self.send_request(client, target, conn, request);
    }

    /// The client's connection to `target`: the open one if it can carry
    /// the request, else a new one (`None`: refused, the node is down),
    /// speaking RESP or lines as drawn (RESP when `needs_resp`).
    fn client_conn(&mut self, client: usize, target: NodeId, needs_resp: bool) -> Option<ConnId> {
        if let Some(conn) = self.clients[client].conn {
            let open = &self.conns[&conn];
            if open.node == target && open.open && !(needs_resp && open.wire == Wire::Line) {
                return Some(conn);
            }
        }
        self.close_client_conn(client);
        if !self.is_up(target) {
            return None;
        }
        let wire = if needs_resp || self.rng_clients.chance(RESP_CONNECTIONS_PER_MILLE) {
            if self.rng_clients.chance(RESP3_CONNECTIONS_PER_MILLE) {
                Wire::Resp(Version::Resp3)
            } else {
                Wire::Resp(Version::Resp2)
            }
        } else {
            Wire::Line
        };
        let conn = self.next_conn;
        self.next_conn += 1;
        let mut queue = ReplyQueue::new();
        if let Wire::Resp(version) = wire {
            // As the reactor does on a connection's first `*` (and `HELLO
            // 3` after it).
            queue.set_protocol(Protocol::Resp(version));
        }
        let incarnation = self.node(target).incarnation;
        self.conns.insert(
            conn,
            Conn {
                client,
                node: target,
                incarnation,
                wire,
                session: Session::new(conn),
                inbox: Vec::new(),
                pipeline: VecDeque::new(),
                queue,
                open: true,
                closing: false,
                requests: VecDeque::new(),
                last_arrival: 0,
            },
        );
        self.clients[client].conn = Some(conn);
        Some(conn)
    }

    /// Sends `request` on `conn` at once: one line, or its RESP commands
    /// as a pipeline, which the node may read over a few turns.
    fn send_request(&mut self, client: usize, target: NodeId, conn: ConnId, request: Request) {
        let request_id = self.next_request;
        self.next_request += 1;
        let wire = self.conns[&conn].wire;
        let commands = request.encode(wire, self.options.unsafe_split_multi_sets);
        let client_id = self.clients[client].id;
        self.trace(|| {
            let text: Vec<String> = commands
                .iter()
                .map(|command| describe_command(wire, command))
                .collect();
            format!(
                "client {client_id} sends #{request_id} {} to n{target} (conn {conn})",
                text.join(" | ")
            )
        });
        self.clients[client].target = Some(target);
        self.clients[client].in_flight = Some(InFlight {
            request_id,
            request,
            invoked_at: self.now,
            conn,
            commands: commands.len(),
            replies: Vec::new(),
        });
        let pipeline = &mut self.conns.get_mut(&conn).expect("just opened").pipeline;
        debug_assert!(pipeline.is_empty(), "one request at a time");
        pipeline.extend(commands);
        let at = self.now + self.rng_clients.range(1, 5);
        self.schedule(at, Event::Request { conn, request_id });
        self.schedule(
            self.now + REQUEST_TIMEOUT_MS,
            Event::ClientTimeout { client, request_id },
        );
    }

    fn close_client_conn(&mut self, client: usize) {
        if let Some(conn) = self.clients[client].conn.take()
            && let Some(conn) = self.conns.get_mut(&conn)
        {
            conn.open = false;
        }
    }

    /// The node reads the next command of `conn_id`'s pipeline and, as
    /// often as not, those after it in the same turn; the rest arrive later.
    fn execute_request(&mut self, conn_id: ConnId, request_id: u64) -> Result<(), Failure> {
        let Some(conn) = self.conns.get(&conn_id) else {
            return Ok(());
        };
        let id = conn.node;
        if !conn.open || conn.closing || conn.incarnation != self.node(id).incarnation {
            return Ok(());
        }
        // A GET alone, on a follower that answers it from its own copy.
        let local_read = matches!(
            &self.clients[conn.client].in_flight,
            Some(InFlight {
                request: Request::Single(Operation::Get { .. }),
                ..
            })
        ) && self.options.follower_reads == FollowerReads::Local
            && self
                .node(id)
                .core
                .as_ref()
                .expect("a live node")
                .leading_epoch()
                .is_none();
        if local_read {
            self.local_reads.insert(request_id);
        }
        loop {
            let conn = self.conns.get_mut(&conn_id).expect("checked above");
            let Some(bytes) = conn.pipeline.pop_front() else {
                break;
            };
            conn.requests.push_back(request_id);
            match conn.wire {
                Wire::Line => self.execute_line(conn_id, &bytes)?,
                Wire::Resp(_) => self.execute_resp(conn_id, &bytes)?,
            }
            self.trace(|| format!("n{id} executes #{request_id}"));
            if self.conns[&conn_id].pipeline.is_empty() {
                break;
            }
            if self.rng_clients.chance(300) {
                let at = self.now + self.rng_clients.range(0, 2);
                self.schedule(
                    at,
                    Event::Request {
                        conn: conn_id,
                        request_id,
                    },
                );
                break;
            }
        }
        self.input_taken(id)
    }

    fn execute_line(&mut self, conn_id: ConnId, line: &[u8]) -> Result<(), Failure> {
        let request: LineRequest<'_> = match protocol::parse(line) {
            Ok(request) => request,
            Err(error) => {
                return fail(
                    ViolationKind::BadReply,
                    format!("the client sent an unparsable line: {error}"),
                );
            }
        };
        let conn = self.conns.get_mut(&conn_id).expect("a live connection");
        let core = self.nodes[(conn.node - 1) as usize]
            .core
            .as_mut()
            .expect("a live node");
        core.handle_request(request, &mut conn.queue);
        Ok(())
    }

    /// One RESP command, framed as the reactor frames it.
    fn execute_resp(&mut self, conn_id: ConnId, bytes: &[u8]) -> Result<(), Failure> {
        let mut ranges = Vec::new();
        match resp_framing::next_command(bytes, MAX_REQUEST_BYTES, &mut ranges) {
            resp_framing::Framed::Command { consumed } if consumed == bytes.len() => {}
            framed => {
                return fail(
                    ViolationKind::BadReply,
                    format!(
                        "the client's command {} frames as {framed:?}",
                        bytes.escape_ascii()
                    ),
                );
            }
        }
        let args = Args::new(bytes, &ranges);
        let conn = self.conns.get_mut(&conn_id).expect("a live connection");
        let core = self.nodes[(conn.node - 1) as usize]
            .core
            .as_mut()
            .expect("a live node");
        let facts = ServerFacts::default();
        let flow = core.handle_command(args, &mut conn.session, &facts, &mut conn.queue);
        if flow != Flow::Continue {
            return fail(
                ViolationKind::BadReply,
                format!("{} asked the connection to {flow:?}", bytes.escape_ascii()),
            );
        }
        Ok(())
    }

    fn receive_reply(&mut self, conn_id: ConnId, bytes: &[u8]) -> Result<(), Failure> {
        let client = self.conns[&conn_id].client;
        if self.clients[client].conn != Some(conn_id) {
            return Ok(());
        }
        if self.conns[&conn_id].wire != Wire::Line {
            return self.receive_resp(client, conn_id, bytes);
        }
        for line in bytes.split(|byte| *byte == b'\n') {
            if line.is_empty() {
                continue;
            }
            let in_flight = self.take_in_flight(client, conn_id, || {
                format!("{:?}", String::from_utf8_lossy(line))
            })?;
            let client_id = self.clients[client].id;
            let request_id = in_flight.request_id;
            self.trace(|| {
                format!(
                    "client {client_id} gets {:?} for #{request_id}",
                    String::from_utf8_lossy(line)
                )
            });
            let [operation] = &in_flight.request.operations()[..] else {
                unreachable!("a line carries one operation");
            };
            let answer = read_line_reply(operation, line).or_else(|reason| {
                fail(
                    ViolationKind::BadReply,
                    format!("client {client_id} got {reason}"),
                )
            })?;
            self.handle_answer(client, in_flight, answer)?;
        }
        Ok(())
    }

    /// The request in flight on `conn_id`, for its next reply
    /// (`describe_reply` names that reply if there is none).
    fn take_in_flight(
        &mut self,
        client: usize,
        conn_id: ConnId,
        describe_reply: impl FnOnce() -> String,
    ) -> Result<InFlight, Failure> {
        let request_id = self
            .conns
            .get_mut(&conn_id)
            .and_then(|conn| conn.requests.pop_front());
        let in_flight = self.clients[client].in_flight.take();
        match in_flight
            .filter(|flight| Some(flight.request_id) == request_id && flight.conn == conn_id)
        {
            Some(in_flight) => Ok(in_flight),
            None => fail(
                ViolationKind::BadReply,
                format!(
                    "client {} got {} on conn {conn_id} with nothing in flight",
                    self.clients[client].id,
                    describe_reply()
                ),
            ),
        }
    }

    /// RESP replies: each whole one is matched to the command it answers;
    /// the request is judged once all have come, or one that leaves its
    /// outcome unknown.
    fn receive_resp(
        &mut self,
        client: usize,
        conn_id: ConnId,
        bytes: &[u8],
    ) -> Result<(), Failure> {
        self.conns
            .get_mut(&conn_id)
            .expect("a client's connection")
            .inbox
            .extend_from_slice(bytes);
        while self.clients[client].conn == Some(conn_id) {
            let conn = self.conns.get_mut(&conn_id).expect("a client's connection");
            let (reply, used) = match resp::parse_reply(&conn.inbox) {
                Ok(Some(parsed)) => parsed,
                Ok(None) => break,
                Err(reason) => {
                    return fail(
                        ViolationKind::BadReply,
                        format!("conn {conn_id} sent no RESP reply: {reason}"),
                    );
                }
            };
            conn.inbox.drain(..used);
            let mut in_flight = self.take_in_flight(client, conn_id, || format!("{reply:?}"))?;
            let ends = leaves_outcome_unknown(&reply);
            in_flight.replies.push(reply);
            if in_flight.replies.len() < in_flight.commands && !ends {
                self.clients[client].in_flight = Some(in_flight);
                continue;
            }
            let client_id = self.clients[client].id;
            let request_id = in_flight.request_id;
            self.trace(|| {
                format!(
                    "client {client_id} gets {:?} for #{request_id}",
                    in_flight.replies
                )
            });
            let split = self.options.unsafe_split_multi_sets;
            let answer = read_resp_replies(&in_flight.request, &in_flight.replies, split).or_else(
                |reason| {
                    fail(
                        ViolationKind::BadReply,
                        format!("client {client_id} got {reason} for #{request_id}"),
                    )
                },
            )?;
            self.handle_answer(client, in_flight, answer)?;
        }
        Ok(())
    }

    fn handle_answer(
        &mut self,
        client: usize,
        in_flight: InFlight,
        answer: Answer,
    ) -> Result<(), Failure> {
        let request_id = in_flight.request_id;
        match answer {
            Answer::Refused(hint) => {
                // Certainly not executed: retry, record nothing.
                let state = &mut self.clients[client];
                state.next = Some(in_flight.request);
                state.redirects += 1;
                let delay = match hint {
                    Some(leader) if state.redirects <= 5 => {
                        state.target = Some(leader);
                        1
                    }
                    _ => {
                        state.target = None;
                        state.redirects = 0;
                        self.rng_clients.range(20, 100)
                    }
                };
                self.schedule(self.now + delay, Event::ClientWake { client });
            }
            Answer::OutOfMemory => {
                // Refused before it was logged: certainly not executed.
                self.stats.out_of_memory += 1;
                self.local_reads.remove(&request_id);
                self.clients[client].redirects = 0;
                self.schedule(self.now + 1, Event::ClientWake { client });
            }
            Answer::Unknown => {
                self.record_unknown(client, in_flight);
                self.close_client_conn(client);
                self.clients[client].target = None;
                let at = self.now + self.rng_clients.range(0, 30);
                self.schedule(at, Event::ClientWake { client });
            }
            Answer::Done(outcomes) => {
                self.clients[client].redirects = 0;
                if self.local_reads.remove(&request_id) {
                    self.stats.local_reads += 1;
                    if self.clients[client].phase == Phase::FinalReads {
                        let key = in_flight.request.operations()[0].key().to_vec();
                        self.clients[client].final_keys.push_back(key);
                        self.clients[client].target = self.leader();
                    }
                } else {
                    self.record_done(client, &in_flight, outcomes)?;
                }
                let at = self.now + self.rng_clients.range(0, 20);
                self.schedule(at, Event::ClientWake { client });
            }
        }
        Ok(())
    }

    /// Records each operation of a request that completed, after checking
    /// that what was acknowledged is committed, and all of a multi-key
    /// write in one record.
    fn record_done(
        &mut self,
        client: usize,
        in_flight: &InFlight,
        outcomes: Vec<Option<Outcome>>,
    ) -> Result<(), Failure> {
        let client_id = self.clients[client].id;
        let request_id = in_flight.request_id;
        let part_of = in_flight
            .request
            .multi_key_name()
            .map(|name| format!("{name} #{request_id}"));
        let operations = in_flight.request.operations();
        for (operation, outcome) in operations.iter().zip(&outcomes) {
            let Some(outcome) = outcome else {
                self.stats.out_of_memory += 1;
                continue;
            };
            self.check_acknowledged(client_id, request_id, operation, outcome)?;
            self.history.events.push(HistoryEvent {
                client: client_id,
                operation: operation.clone(),
                invoked_at: in_flight.invoked_at,
                completed_at: Some(self.now),
                outcome: outcome.clone(),
                part_of: part_of.clone(),
            });
        }
        self.stats.completed += 1;
        if self.conns[&in_flight.conn].wire != Wire::Line {
            self.stats.resp_completed += 1;
        }
        match &in_flight.request {
            Request::MultiSet { .. } => self.stats.multi_sets += 1,
            Request::Transaction(_) => self.stats.transactions += 1,
            Request::Single(_) => {}
        }
        if let Some(write) = self.group_write(client_id, in_flight, Some(&outcomes)) {
            self.committed.check_atomic(&write)?;
        }
        Ok(())
    }

    /// An acknowledged put (or the put an INCR's sum stands for) must be
    /// in the committed log before the client hears of it.
    fn check_acknowledged(
        &mut self,
        client_id: u64,
        request_id: u64,
        operation: &Operation,
        outcome: &Outcome,
    ) -> Result<(), Failure> {
        let put = match (operation, outcome) {
            (Operation::Put { key, value }, Outcome::Ok) => Some((key.clone(), value.clone())),
            (Operation::Incr { key }, Outcome::Integer(sum)) => {
                self.stats.increments += 1;
                Some((key.clone(), sum.to_string().into_bytes()))
            }
            _ => None,
        };
        if matches!(outcome, Outcome::Ok | Outcome::Integer(_)) && operation.writes() {
            self.stats.acknowledged_writes += 1;
        }
        let Some((key, value)) = put else {
            return Ok(());
        };
        if self.committed.put_index(&key, &value).is_none() {
            return fail(
                ViolationKind::AcknowledgedWriteNotCommitted,
                format!(
                    "client {client_id} got OK for #{request_id} {operation:?} -> {outcome:?} \
                     but no committed record puts {} = {}",
                    String::from_utf8_lossy(&key),
                    String::from_utf8_lossy(&value)
                ),
            );
        }
        Ok(())
    }

    /// The multi-key write a request stands for, if it writes more than
    /// one key: its puts that name it, given `outcomes` if known.
    fn group_write(
        &self,
        client_id: u64,
        in_flight: &InFlight,
        outcomes: Option<&[Option<Outcome>]>,
    ) -> Option<GroupWrite> {
        let name = in_flight.request.multi_key_name()?;
        let mut write = GroupWrite {
            name: format!("client {client_id} {name} #{}", in_flight.request_id),
            puts: Vec::new(),
            other_keys: Vec::new(),
            // A part may be refused alone only by the memory limit, and
            // only in a block (an MSET is refused whole).
            whole: outcomes.is_some()
                || self.memory_limit_bytes().is_none()
                || matches!(in_flight.request, Request::MultiSet { .. }),
        };
        for (position, operation) in in_flight.request.operations().into_iter().enumerate() {
            let outcome = outcomes.map(|outcomes| outcomes[position].as_ref());
            match (operation, outcome) {
                // Refused on its own: not part of what was written.
                (_, Some(None)) | (Operation::Get { .. }, _) => {}
                (Operation::Put { key, value }, _) => write.puts.push((key, value)),
                (Operation::Incr { key }, Some(Some(Outcome::Integer(sum)))) => {
                    write.puts.push((key, sum.to_string().into_bytes()));
                }
                (operation, _) => write.other_keys.push(operation.key().to_vec()),
            }
        }
        (write.puts.len() + write.other_keys.len() > 1).then_some(write)
    }

    fn record_unknown(&mut self, client: usize, in_flight: InFlight) {
        self.stats.unknown += 1;
        self.local_reads.remove(&in_flight.request_id);
        let client_id = self.clients[client].id;
        if let Some(write) = self.group_write(client_id, &in_flight, None) {
            self.unknown_group_writes.push(write);
        }
        let part_of = in_flight
            .request
            .multi_key_name()
            .map(|name| format!("{name} #{}", in_flight.request_id));
        let state = &mut self.clients[client];
        for operation in in_flight.request.operations() {
            if state.phase == Phase::FinalReads {
                // A final read must complete; try that key again.
                state.final_keys.push_back(operation.key().to_vec());
            }
            self.history.events.push(HistoryEvent {
                client: state.id,
                operation,
                invoked_at: in_flight.invoked_at,
                completed_at: None,
                outcome: Outcome::Unknown,
                part_of: part_of.clone(),
            });
        }
    }

    fn client_timeout(&mut self, client: usize, request_id: u64) {
        let Some(in_flight) = self.clients[client].in_flight.take() else {
            return;
        };
        if in_flight.request_id != request_id {
            self.clients[client].in_flight = Some(in_flight);
            return;
        }
        let client_id = self.clients[client].id;
        self.trace(|| format!("client {client_id} times out #{request_id}"));
        self.record_unknown(client, in_flight);
        self.close_client_conn(client);
        self.clients[client].target = None;
        let at = self.now + self.rng_clients.range(0, 50);
        self.schedule(at, Event::ClientWake { client });
    }

    fn connection_reset(&mut self, conn_id: ConnId) {
        let client = self.conns[&conn_id].client;
        if self.clients[client].conn != Some(conn_id) {
            return;
        }
        self.clients[client].conn = None;
        self.clients[client].target = None;
        let client_id = self.clients[client].id;
        self.trace(|| format!("client {client_id}: conn {conn_id} reset"));
        if let Some(in_flight) = self.clients[client].in_flight.take() {
            self.record_unknown(client, in_flight);
            let at = self.now + self.rng_clients.range(10, 50);
            self.schedule(at, Event::ClientWake { client });
        }
    }

    // -----------------------------------------------------------------------
    // Faults

    fn leader(&self) -> Option<NodeId> {
        self.nodes
            .iter()
            .filter_map(|sim| {
                let epoch = sim.core.as_ref()?.leading_epoch()?;
                Some((epoch, sim.id))
            })
            .max()
            .map(|(_, id)| id)
    }

    fn inject_fault(&mut self) -> Result<(), Failure> {
        if self.chaos_over {
            return Ok(());
        }
        let next = self.now + self.rng_faults.range(100, 700);
        self.schedule(next, Event::Fault);
        let fault = self.next_fault;
        self.next_fault += 1;
        let nodes = self.options.nodes as u64;
        let random_node = self.rng_faults.range(1, nodes);
        let leader = self.leader();
        if self.replacement_wanted {
            self.replace_disk_if_allowed()?;
        }
        let roll = self.rng_faults.below(100);
        match roll {
            0..13 => self.crash(random_node),
            13..26 => self.crash(leader.unwrap_or(random_node)),
            26..34 => self.pause(random_node),
            34..41 => self.pause(leader.unwrap_or(random_node)),
            41..54 => {
                let ids = self.ids();
                let side: BTreeSet<NodeId> = ids
                    .iter()
                    .copied()
                    .filter(|_| self.rng_faults.chance(500))
                    .collect();
                self.partition(fault, &side);
                Ok(())
            }
            54..63 => {
                let side = BTreeSet::from([leader.unwrap_or(random_node)]);
                self.partition(fault, &side);
                Ok(())
            }
            63..69 => {
                // One-way black holes on random links.
                let mut links = BTreeSet::new();
                for from in self.ids() {
                    for to in self.ids() {
                        if from != to && self.rng_faults.chance(300) {
                            links.insert((from, to));
                        }
                    }
                }
                self.trace(|| format!("fault #{fault}: one-way silence on {links:?}"));
                self.network.add_silent(fault, links);
                self.stats.partitions += 1;
                let heal = self.now + self.rng_faults.range(100, 2000);
                self.schedule(heal, Event::Heal { fault });
                Ok(())
            }
            69..79 => {
                let until = self.now + self.rng_faults.range(200, 3000);
                self.trace(|| {
                    format!("fault #{fault}: n{random_node}'s disk is slow until {until}")
                });
                self.node_mut(random_node).slow_disk_until = until;
                Ok(())
            }
            79..87 => {
                let other = 1 + (random_node + self.rng_faults.range(0, nodes - 2)) % nodes;
                self.trace(|| format!("fault #{fault}: connections n{random_node}-n{other} break"));
                self.stats.link_breaks += 1;
                self.break_link(random_node, other);
                self.break_link(other, random_node);
                Ok(())
            }
            87..91 => {
                self.replacement_wanted = true;
                self.replace_disk_if_allowed()
            }
            _ => {
                let weather = Weather {
                    loss_per_mille: *self.rng_faults.pick(&[0, 20, 100, 300]),
                    duplicate_per_mille: *self.rng_faults.pick(&[0, 20, 100]),
                    slow_per_mille: *self.rng_faults.pick(&[0, 50, 200]),
                    max_slow_ms: self.rng_faults.range(20, 500),
                };
                self.trace(|| format!("fault #{fault}: weather {weather:?}"));
                self.network.weather = weather;
                self.weather_fault = fault;
                let ends = self.now + self.rng_faults.range(200, 2000);
                self.schedule(ends, Event::WeatherEnds { fault });
                Ok(())
            }
        }
    }

    /// The epoch every node has promised and persisted, with a live leader
    /// of it, if there is such a settled state.
    fn settled_epoch(&self) -> Option<u64> {
        let leader = self.leader()?;
        let epoch = self.node(leader).core.as_ref()?.leading_epoch()?;
        let settled = self.nodes.iter().all(|sim| {
            !sim.paused
                && sim.persisted_epoch == epoch
                && sim
                    .core
                    .as_ref()
                    .is_some_and(|core| core.promised_epoch() == epoch)
        });
        settled.then_some(epoch)
    }

    /// A follower whose disk may be replaced: everything it holds is
    /// durable on a majority of the other nodes' disks too, so what it
    /// acknowledged does not depend on its copy.
    fn replaceable_follower(&mut self) -> Option<NodeId> {
        let leader = self.leader()?;
        let majority = self.options.nodes / 2 + 1;
        let candidates: Vec<NodeId> = self
            .ids()
            .into_iter()
            .filter(|&id| id != leader)
            .filter(|&id| {
                let held = self.node(id).core.as_ref().map_or(0, Node::last_index);
                let record = self.node(id).record(held).map(<[u8]>::to_vec);
                let others = self
                    .nodes
                    .iter()
                    .filter(|other| other.id != id)
                    .filter(|other| {
                        held == 0 || other.disk.durable_record(held) == record.as_deref()
                    })
                    .count();
                others >= majority
            })
            .collect();
        (!candidates.is_empty()).then(|| *self.rng_faults.pick(&candidates))
    }

    /// Replaces a follower's disk if the cluster is settled and one holds
    /// nothing the others lack.
    fn replace_disk_if_allowed(&mut self) -> Result<(), Failure> {
        if self.settled_epoch().is_none() {
            return Ok(());
        }
        match self.replaceable_follower() {
            Some(id) => {
                self.replacement_wanted = false;
                self.replace_disk(id)
            }
            None => Ok(()),
        }
    }

    /// A replaced machine: a follower crashes and comes back with an empty
    /// disk, to rejoin by a snapshot or the log. Its promises are lost with
    /// its disk, so this happens only while every node has promised the
    /// epoch of a live leader (any later candidacy then asks for a newer
    /// epoch than the one it forgot), and only when the others hold what it
    /// held: what an operator must wait for.
    fn replace_disk(&mut self, id: NodeId) -> Result<(), Failure> {
        self.crash(id)?;
        self.trace(|| format!("n{id}'s disk is replaced by an empty one"));
        self.stats.disks_replaced += 1;
        let sim = self.node_mut(id);
        sim.disk = Disk::new();
        sim.persisted_epoch = 0;
        Ok(())
    }

    /// Cuts `side` off from the rest: silently (frames vanish, both ways)
    /// or by refusing connections (which break at once).
    fn partition(&mut self, fault: u64, side: &BTreeSet<NodeId>) {
        let ids = self.ids();
        let mut pairs = BTreeSet::new();
        for &a in side {
            for &b in &ids {
                if !side.contains(&b) {
                    pairs.insert((a, b));
                }
            }
        }
        if pairs.is_empty() {
            return;
        }
        self.stats.partitions += 1;
        let silent = self.rng_faults.chance(500);
        self.trace(|| {
            let how = if silent {
                "silently"
            } else {
                "refusing connections"
            };
            format!("fault #{fault}: partition {side:?} from the rest, {how}")
        });
        if silent {
            let links = pairs.iter().flat_map(|&(a, b)| [(a, b), (b, a)]).collect();
            self.network.add_silent(fault, links);
        } else {
            let unordered = pairs.iter().map(|&(a, b)| (a.min(b), a.max(b))).collect();
            self.network.add_refused(fault, unordered);
            for (a, b) in pairs {
                self.break_link(a, b);
                self.break_link(b, a);
            }
        }
        let heal = self.now + self.rng_faults.range(100, 2500);
        self.schedule(heal, Event::Heal { fault });
    }

    fn crash(&mut self, id: NodeId) -> Result<(), Failure> {
        if !self.is_up(id) {
            return Ok(());
        }
        self.stats.crashes += 1;
        let unsynced = self.node(id).disk.unsynced_len();
        let keep = match self.rng_disk.below(4) {
            0 | 1 => 0,
            2 => unsynced,
            _ => self.rng_disk.range(0, unsynced as u64) as usize,
        };
        if keep > 0 && keep < unsynced {
            self.stats.torn_tails += 1;
        }
        self.trace(|| format!("n{id} crashes, keeping {keep} of {unsynced} unsynced bytes"));
        let sim = self.node_mut(id);
        sim.core = None;
        sim.incarnation += 1;
        sim.paused = false;
        sim.backlog.clear();
        sim.syncing = false;
        sim.sync_in_flight = None;
        sim.sync_queued = None;
        sim.turn_pending = false;
        sim.acks_checked = 0;
        sim.disk.crash(keep);
        for peer in self.ids() {
            if peer != id {
                self.network.close_link(id, peer);
                self.break_link(peer, id);
            }
        }
        let mut resets = Vec::new();
        for (conn_id, conn) in &mut self.conns {
            if conn.node == id && conn.open {
                conn.open = false;
                let at = (self.now + self.rng_network.range(1, 5)).max(conn.last_arrival);
                resets.push((at, *conn_id));
            }
        }
        for (at, conn) in resets {
            self.schedule(at, Event::ConnReset { conn });
        }
        // Often back at once, to find its promises and log as it left them.
        let restart = if self.rng_faults.chance(300) {
            self.now + self.rng_faults.range(1, 50)
        } else {
            self.now + self.rng_faults.range(50, 1500)
        };
        self.schedule(restart, Event::Restart { node: id });
        Ok(())
    }

    /// During the chaos, crashes `id` within a few ms with probability
    /// `per_mille`: right after a promise, a log write or an election is
    /// where lost state hurts most, and random crashes rarely land there.
    fn maybe_crash_soon(&mut self, id: NodeId, per_mille: u64) {
        if self.chaos_over || !self.rng_faults.chance(per_mille) {
            return;
        }
        let incarnation = self.node(id).incarnation;
        let at = self.now + self.rng_faults.range(0, 3);
        self.schedule(
            at,
            Event::CrashSoon {
                node: id,
                incarnation,
            },
        );
    }

    fn restart(&mut self, id: NodeId) -> Result<(), Failure> {
        if self.is_up(id) {
            return Ok(());
        }
        self.boot(id)
    }

    fn pause(&mut self, id: NodeId) -> Result<(), Failure> {
        if !self.is_up(id) || self.node(id).paused {
            return Ok(());
        }
        self.stats.pauses += 1;
        self.trace(|| format!("n{id} paused"));
        self.node_mut(id).paused = true;
        let resume = self.now + self.rng_faults.range(50, 1500);
        self.schedule(resume, Event::Resume { node: id });
        Ok(())
    }

    fn resume(&mut self, id: NodeId) {
        if !self.node(id).paused {
            return;
        }
        let backlog = std::mem::take(&mut self.node_mut(id).backlog);
        let count = backlog.len();
        self.trace(|| format!("n{id} resumed with {count} events waiting"));
        self.node_mut(id).paused = false;
        for event in backlog {
            self.schedule(self.now, event);
        }
    }

    // -----------------------------------------------------------------------
    // Healing, convergence, the final reads

    fn end_chaos(&mut self) -> Result<(), Failure> {
        self.trace(|| "chaos ends: healing everything".to_string());
        self.chaos_over = true;
        self.chaos_ended_at = self.now;
        self.network.heal_all();
        for id in self.ids() {
            self.resume(id);
            self.node_mut(id).slow_disk_until = 0;
            if !self.is_up(id) {
                self.boot(id)?;
            }
        }
        for client in &mut self.clients {
            client.phase = Phase::Draining;
        }
        self.schedule(self.now + 1000, Event::Probe);
        Ok(())
    }

    fn probe(&mut self) -> Result<(), Failure> {
        self.schedule(self.now + 100, Event::Probe);
        let idle = self.clients.iter().all(|client| client.in_flight.is_none());
        if !idle {
            return Ok(());
        }
        let Ok(leader) = self.convergence() else {
            return Ok(());
        };
        let draining = self
            .clients
            .iter()
            .all(|client| client.phase == Phase::Draining);
        if draining {
            self.trace(|| format!("converged on leader n{leader}; final reads"));
            let keys: Vec<Vec<u8>> = (0..self.options.keys)
                .map(key_name)
                .chain((0..COUNTERS).map(counter_name))
                .collect();
            for client in 0..self.clients.len() {
                let state = &mut self.clients[client];
                state.phase = Phase::FinalReads;
                state.final_keys = keys.iter().cloned().collect();
                state.target = Some(leader);
                state.next = None;
                self.schedule(self.now, Event::ClientWake { client });
            }
            return Ok(());
        }
        if self
            .clients
            .iter()
            .all(|client| client.phase == Phase::Done)
        {
            self.trace(|| "final reads done; converged".to_string());
            self.finished = true;
        }
        Ok(())
    }

    /// `Ok(leader)` once the cluster settled: every node up, one leader (the
    /// highest id, as Bully wants) that everyone follows in its epoch, every
    /// commit index at the leader's last index, equal committed logs and
    /// equal stores.
    fn convergence(&self) -> Result<NodeId, String> {
        let mut leaders = Vec::new();
        for sim in &self.nodes {
            let Some(core) = &sim.core else {
                return Err(format!("node {} is down", sim.id));
            };
            if sim.paused {
                return Err(format!("node {} is paused", sim.id));
            }
            if let Some(epoch) = core.leading_epoch() {
                leaders.push((sim.id, epoch));
            }
        }
        let [(leader, epoch)] = leaders[..] else {
            return Err(format!("leaders (id, epoch): {leaders:?}"));
        };
        let highest = self.options.nodes as NodeId;
        if leader != highest {
            return Err(format!("node {leader} leads, not the highest id {highest}"));
        }
        let leader_sim = self.node(leader);
        let leader_core = leader_sim.core.as_ref().expect("up");
        let last = leader_core.last_index();
        let image = |core: &Node| -> StoreImage {
            core.store()
                .iter()
                .map(|(key, value)| (key.to_vec(), value.to_vec()))
                .collect()
        };
        let leader_image = image(leader_core);
        for sim in &self.nodes {
            let core = sim.core.as_ref().expect("up");
            if core.known_leader() != Some(leader) || core.promised_epoch() != epoch {
                return Err(format!(
                    "node {} follows {:?} in epoch {}, not {leader} in {epoch}",
                    sim.id,
                    core.known_leader(),
                    core.promised_epoch()
                ));
            }
            if core.commit_index() != last {
                return Err(format!(
                    "node {} has commit index {}, the leader's last index is {last}",
                    sim.id,
                    core.commit_index()
                ));
            }
            for index in 1..=last {
                // Where either has only a snapshot, its store is compared below.
                let (theirs, leaders) = (sim.record(index), leader_sim.record(index));
                if theirs.is_some() && leaders.is_some() && theirs != leaders {
                    return Err(format!(
                        "node {} and the leader differ at committed index {index}",
                        sim.id
                    ));
                }
            }
            if image(core) != leader_image {
                return Err(format!(
                    "node {} has store {}, the leader {}",
                    sim.id,
                    describe_image(&image(core)),
                    describe_image(&leader_image)
                ));
            }
        }
        Ok(leader)
    }

    fn final_checks(&mut self) -> Result<(), Failure> {
        if let Err(reason) = self.convergence() {
            return fail(
                ViolationKind::NoConvergence,
                format!("the cluster diverged again during the final reads: {reason}"),
            );
        }
        for write in &self.unknown_group_writes {
            self.committed.check_atomic(write)?;
        }
        match linearizability::check(&self.history) {
            Verdict::Linearizable => Ok(()),
            Verdict::NotLinearizable { key, explanation } => fail(
                ViolationKind::NotLinearizable,
                format!("key {}: {explanation}", String::from_utf8_lossy(&key)),
            ),
            Verdict::Inconclusive { key, reason } => fail(
                ViolationKind::Inconclusive,
                format!("key {}: {reason}", String::from_utf8_lossy(&key)),
            ),
        }
    }

    fn describe_cluster(&self) -> String {
        let mut out = String::new();
        for sim in &self.nodes {
            match &sim.core {
                None => {
                    let _ = write!(out, "[n{} down] ", sim.id);
                }
                Some(core) => {
                    let _ = write!(
                        out,
                        "[n{} epoch {} leads {:?} follows {:?} commit {} last {}{}] ",
                        sim.id,
                        core.promised_epoch(),
                        core.leading_epoch(),
                        core.known_leader(),
                        core.commit_index(),
                        core.last_index(),
                        if sim.paused { " paused" } else { "" }
                    );
                }
            }
        }
        out
    }
}

/// Decodes a snapshot file into a store, as start-up loads one.
/// A line or RESP command, briefly, for the trace.
fn describe_command(wire: Wire, bytes: &[u8]) -> String {
    if wire == Wire::Line {
        return String::from_utf8_lossy(bytes).into_owned();
    }
    let mut ranges = Vec::new();
    match resp_framing::next_command(bytes, MAX_REQUEST_BYTES, &mut ranges) {
        resp_framing::Framed::Command { .. } => {
            let args = Args::new(bytes, &ranges);
            let words: Vec<String> = args
                .iter()
                .map(|arg| String::from_utf8_lossy(arg).into_owned())
                .collect();
            words.join(" ")
        }
        _ => bytes.escape_ascii().to_string(),
    }
}

fn load_snapshot(bytes: &[u8]) -> Result<(Store, Summary), String> {
    let mut decoder = Decoder::new();
    let mut store = Store::new();
    let mut bad_pair = false;
    decoder
        .feed(bytes, |pair| match StoredPair::from_encoded(pair) {
            Some(pair) => store.insert_loaded(pair),
            None => bad_pair = true,
        })
        .map_err(|error| error.to_string())?;
    if bad_pair {
        return Err("a pair the format accepted does not make a stored pair".to_string());
    }
    let summary = decoder.finish().map_err(|error| error.to_string())?;
    Ok((store, summary))
}

/// A peer message, briefly, for the trace.
fn describe(envelope: &Envelope) -> String {
    let body = match &envelope.message {
        Message::Append {
            prev_index,
            prev_epoch,
            commit_index,
            round,
            records,
        } => {
            let mut rest: &[u8] = records;
            let mut described = Vec::new();
            while let Ok((_, used)) = log::decode(rest) {
                described.push(describe_record(&rest[..used]));
                rest = &rest[used..];
            }
            format!(
                "Append prev=({prev_index},e{prev_epoch}) commit={commit_index} round={round} {}",
                described.join(" ")
            )
        }
        Message::FetchReply {
            from_index,
            records,
        } => format!("FetchReply from={from_index} {} bytes", records.len()),
        Message::InstallSnapshot {
            index,
            epoch,
            total_bytes,
            offset,
            bytes,
        } => format!(
            "InstallSnapshot index={index} epoch={epoch} bytes {offset}..{} of {total_bytes}",
            offset + bytes.len() as u64
        ),
        other => format!("{other:?}"),
    };
    format!("[e{}] {body}", envelope.epoch)
}
