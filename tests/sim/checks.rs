//! What every run is judged by, besides linearizability: the violations a
//! run can end in, and the cluster-wide record of committed log entries
//! that every node's committed prefix (and applied store) must agree with.

use std::collections::BTreeMap;
use std::fmt;

use kvstore::log::{self, Op};
use kvstore::node::NodeId;

/// Why a run failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViolationKind {
    /// Two nodes led the same epoch.
    TwoLeadersInOneEpoch,
    /// A node's committed prefix disagrees with another's.
    CommittedLogDiverged,
    /// A node's store is not what its log says it should be.
    StoreDiverged,
    /// A follower acknowledged a record its disk does not hold durably.
    AcknowledgedNotDurable,
    /// A record counted as committed is not durable on a majority's disks.
    CommittedNotDurable,
    /// A client got OK for a write that is not in the committed log.
    AcknowledgedWriteNotCommitted,
    /// The client history has no linearization.
    NotLinearizable,
    /// The checker gave up (counts as a failure).
    Inconclusive,
    /// After healing, the cluster did not settle on one leader with equal
    /// logs and stores.
    NoConvergence,
    /// A reply no correct server gives (or a reply to nothing).
    BadReply,
    /// The log on a simulated disk could not be re-opened, or the core asked
    /// for an impossible disk operation.
    BadDisk,
    /// A promised epoch went backwards, or a peer frame did not round-trip.
    Protocol,
    /// A published snapshot is not the committed store as of its index,
    /// or does not load.
    BadSnapshot,
    /// The core panicked (an assertion inside it caught the damage).
    CorePanicked,
}

#[derive(Debug, Clone)]
pub struct Violation {
    pub seed: u64,
    /// The environment that replays this run (see `Options::replay_env`).
    pub replay_env: String,
    pub kind: ViolationKind,
    pub detail: String,
    pub at_ms: u64,
    pub trace_tail: Vec<String>,
}

impl fmt::Display for Violation {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            formatter,
            "simulation seed {} failed at t={}ms: {:?}: {}",
            self.seed, self.at_ms, self.kind, self.detail
        )?;
        writeln!(
            formatter,
            "replay with: {} cargo test --release --test simulation replay -- --nocapture",
            self.replay_env
        )?;
        writeln!(formatter, "last {} trace events:", self.trace_tail.len())?;
        for line in &self.trace_tail {
            writeln!(formatter, "  {line}")?;
        }
        Ok(())
    }
}

/// A failure found by a check, before the world adds seed and trace.
#[derive(Debug, Clone)]
pub struct Failure {
    pub kind: ViolationKind,
    pub detail: String,
}

pub fn fail<T>(kind: ViolationKind, detail: impl Into<String>) -> Result<T, Failure> {
    Err(Failure {
        kind,
        detail: detail.into(),
    })
}

/// The one committed log of the cluster, as learned from every node's
/// commit index: record `i` is the bytes some node committed at `i`, and
/// every other node that commits `i` must hold the same bytes.
#[derive(Debug, Default)]
pub struct CommittedLog {
    records: Vec<Vec<u8>>,
    /// Per key, the committed values in index order.
    changes: BTreeMap<Vec<u8>, Vec<Change>>,
    /// Where each committed (key, value) was put.
    puts: BTreeMap<(Vec<u8>, Vec<u8>), u64>,
}

pub type StoreImage = BTreeMap<Vec<u8>, Vec<u8>>;

/// A key's value from a committed index on (`None`: deleted).
type Change = (u64, Option<Vec<u8>>);

impl CommittedLog {
    pub fn len(&self) -> u64 {
        self.records.len() as u64
    }

    /// Node `node` says record `index` (at or below its commit index) is
    /// `record`. Indexes arrive contiguously per node.
    pub fn observe(&mut self, node: NodeId, index: u64, record: &[u8]) -> Result<(), Failure> {
        let position = (index - 1) as usize;
        if let Some(known) = self.records.get(position) {
            if known != record {
                return fail(
                    ViolationKind::CommittedLogDiverged,
                    format!(
                        "node {node} committed {} at index {index}, but {} was committed there",
                        describe_record(record),
                        describe_record(known)
                    ),
                );
            }
            return Ok(());
        }
        if position != self.records.len() {
            return fail(
                ViolationKind::CommittedLogDiverged,
                format!(
                    "node {node} committed index {index} past the known committed end {}",
                    self.records.len()
                ),
            );
        }
        let Ok((entry, _)) = log::decode(record) else {
            return fail(
                ViolationKind::CommittedLogDiverged,
                format!("node {node} committed an undecodable record at {index}"),
            );
        };
        if entry.index != index {
            return fail(
                ViolationKind::CommittedLogDiverged,
                format!("node {node} holds record {} at index {index}", entry.index),
            );
        }
        // A batch's operations share its index; a key it writes twice
        // ends with the later change, as `image_at` takes the last.
        for op in single_ops(entry.op) {
            match op {
                Op::Put { key, value } => {
                    self.changes
                        .entry(key.to_vec())
                        .or_default()
                        .push((index, Some(value.to_vec())));
                    self.puts.insert((key.to_vec(), value.to_vec()), index);
                }
                Op::Del { key } => {
                    self.changes
                        .entry(key.to_vec())
                        .or_default()
                        .push((index, None));
                }
                Op::Noop | Op::Batch(_) => {}
            }
        }
        self.records.push(record.to_vec());
        Ok(())
    }

    pub fn record(&self, index: u64) -> Option<&[u8]> {
        self.records.get((index - 1) as usize).map(Vec::as_slice)
    }

    /// The store after applying committed records `1..=index`.
    pub fn image_at(&self, index: u64) -> StoreImage {
        let mut image = StoreImage::new();
        for (key, changes) in &self.changes {
            let upto = changes.partition_point(|(at, _)| *at <= index);
            if let Some((_, Some(value))) = upto.checked_sub(1).map(|last| &changes[last]) {
                image.insert(key.clone(), value.clone());
            }
        }
        image
    }

    /// Where `key` = `value` was committed, if it was.
    pub fn put_index(&self, key: &[u8], value: &[u8]) -> Option<u64> {
        self.puts.get(&(key.to_vec(), value.to_vec())).copied()
    }
}

/// Applies one encoded record to a store image.
pub fn apply_record(image: &mut StoreImage, record: &[u8]) {
    let (entry, _) = log::decode(record).expect("records in memory decode");
    for op in single_ops(entry.op) {
        match op {
            Op::Put { key, value } => {
                image.insert(key.to_vec(), value.to_vec());
            }
            Op::Del { key } => {
                image.remove(key);
            }
            Op::Noop | Op::Batch(_) => {}
        }
    }
}

/// The puts and dels an op stands for, in the order they apply: a batch's
/// operations, or the op itself.
fn single_ops(op: Op<'_>) -> Vec<Op<'_>> {
    match op {
        Op::Batch(batch) => batch.iter().collect(),
        op => vec![op],
    }
}

/// An op, briefly.
fn describe_op(op: Op<'_>) -> String {
    match op {
        Op::Noop => "NOOP".to_string(),
        Op::Put { key, value } => format!(
            "PUT {} {}",
            String::from_utf8_lossy(key),
            String::from_utf8_lossy(value)
        ),
        Op::Del { key } => format!("DEL {}", String::from_utf8_lossy(key)),
        Op::Batch(batch) => {
            let ops: Vec<String> = batch.iter().map(describe_op).collect();
            format!("BATCH({})", ops.join(", "))
        }
    }
}

/// A record, briefly: epoch, index and op.
pub fn describe_record(record: &[u8]) -> String {
    match log::decode(record) {
        Ok((entry, _)) => {
            let op = describe_op(entry.op);
            format!("[e{} i{} c{} {op}]", entry.epoch, entry.index, entry.commit)
        }
        Err(error) => format!("[undecodable: {error}]"),
    }
}

/// A store image, briefly.
pub fn describe_image(image: &StoreImage) -> String {
    let pairs: Vec<String> = image
        .iter()
        .map(|(key, value)| {
            format!(
                "{}={}",
                String::from_utf8_lossy(key),
                String::from_utf8_lossy(value)
            )
        })
        .collect();
    format!("{{{}}}", pairs.join(", "))
}
