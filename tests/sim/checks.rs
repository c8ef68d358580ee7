//! What every run is judged by, besides linearizability: the violations a
//! run can end in, the cluster-wide record of committed log entries that
//! every node's committed prefix (and applied store) must agree with, and
//! the atomicity of writes of several keys.
//!
//! # Atomicity of multi-key writes
//!
//! The per-key linearizability checker cannot see whether an `MSET` or an
//! `EXEC` block took effect whole: each key's history only sees its own
//! part. Two checks together see it:
//!
//! - after every turn, each node's store must equal the committed log
//!   applied up to its commit index (a leader: its whole log), with a
//!   batch's operations all at the batch's index ([`CommittedLog::image_at`]):
//!   a node that applied part of a batch record fails there;
//! - every multi-key write a client asked for ([`GroupWrite`]), whatever its
//!   reply, must lie in the committed log in one record or not at all
//!   ([`CommittedLog::check_atomic`]), that record holding all of it. Its
//!   values name it (`c3-17` on every key of client 3's 17th write), so the
//!   record that holds any part is found.
//!
//! Since every store any node shows is the committed log applied record by
//! record, no node's committed store can then show some keys of one
//! multi-key write without the others (unless a later write overwrote
//! them).

use std::collections::{BTreeMap, BTreeSet};
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
    /// A multi-key write (`MSET`, `EXEC`) is in the committed log in
    /// pieces, or only in part.
    NotAtomic,
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

    /// The keys committed record `index` puts or deletes.
    fn keys_written_at(&self, index: u64) -> BTreeSet<Vec<u8>> {
        let record = self.record(index).expect("an observed index");
        let (entry, _) = log::decode(record).expect("records in memory decode");
        single_ops(entry.op)
            .into_iter()
            .filter_map(|op| match op {
                Op::Put { key, .. } | Op::Del { key } => Some(key.to_vec()),
                Op::Noop | Op::Batch(_) => None,
            })
            .collect()
    }

    /// Whether `write` is in the committed log as one record or not at
    /// all; `Ok(Some(index))`: the record that holds it.
    pub fn check_atomic(&self, write: &GroupWrite) -> Result<Option<u64>, Failure> {
        let placed: Vec<Option<u64>> = write
            .puts
            .iter()
            .map(|(key, value)| self.put_index(key, value))
            .collect();
        let indexes: BTreeSet<u64> = placed.iter().flatten().copied().collect();
        let index = match indexes.len() {
            0 => return Ok(None),
            1 => *indexes.first().expect("one index"),
            records => {
                return fail(
                    ViolationKind::NotAtomic,
                    format!(
                        "{} is committed in {records} records: {}",
                        write.name,
                        write.describe_placement(&placed)
                    ),
                );
            }
        };
        if !write.whole {
            return Ok(Some(index));
        }
        let written = self.keys_written_at(index);
        let uncommitted = write
            .puts
            .iter()
            .zip(&placed)
            .filter(|(_, at)| at.is_none())
            .map(|((key, _), _)| key);
        let absent = write
            .other_keys
            .iter()
            .filter(|key| !written.contains(*key));
        let missing: Vec<String> = uncommitted
            .chain(absent)
            .map(|key| String::from_utf8_lossy(key).into_owned())
            .collect();
        if !missing.is_empty() {
            return fail(
                ViolationKind::NotAtomic,
                format!(
                    "{} is committed only in part: record {index} {} lacks its writes of {} ({})",
                    write.name,
                    describe_record(self.record(index).expect("observed")),
                    missing.join(", "),
                    write.describe_placement(&placed)
                ),
            );
        }
        Ok(Some(index))
    }
}

/// A write of several keys a client asked for in one request (`MSET`, or
/// the writes of an `EXEC` block), which must take effect all or nothing.
#[derive(Debug, Clone)]
pub struct GroupWrite {
    /// For reports: `client 3 MSET #17`.
    pub name: String,
    /// Its puts whose values are unique to it in the committed log: the
    /// request's own value (`c3-17`), and the sums its `INCR`s returned.
    pub puts: Vec<(Vec<u8>, Vec<u8>)>,
    /// Keys it also writes, with values it cannot be told by (an `INCR`
    /// whose reply was lost).
    pub other_keys: Vec<Vec<u8>>,
    /// Whether every part of it must be in its record: false when a part
    /// may have been refused on its own (an `EXEC` in a run with a memory
    /// limit, whose reply that would say so was lost).
    pub whole: bool,
}

impl GroupWrite {
    /// Each put and where it was committed (`placed`, in `puts` order).
    fn describe_placement(&self, placed: &[Option<u64>]) -> String {
        let parts: Vec<String> = self
            .puts
            .iter()
            .zip(placed)
            .map(|((key, value), index)| {
                let at = index.map_or_else(|| "not committed".to_string(), |at| format!("@{at}"));
                format!(
                    "{}={} {at}",
                    String::from_utf8_lossy(key),
                    String::from_utf8_lossy(value)
                )
            })
            .collect();
        parts.join(", ")
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

#[cfg(test)]
mod tests {
    use kvstore::log::{BatchBuilder, Entry};

    use super::*;

    fn record(index: u64, op: Op<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        let entry = Entry {
            epoch: 1,
            index,
            commit: index - 1,
            op,
        };
        log::encode(&entry, &mut out);
        out
    }

    fn batch(index: u64, puts: &[(&str, &str)]) -> Vec<u8> {
        let mut builder = BatchBuilder::new();
        for (key, value) in puts {
            builder.push_put(key.as_bytes(), value.as_bytes());
        }
        record(index, builder.op())
    }

    fn put(index: u64, key: &str, value: &str) -> Vec<u8> {
        record(
            index,
            Op::Put {
                key: key.as_bytes(),
                value: value.as_bytes(),
            },
        )
    }

    fn committed(records: &[Vec<u8>]) -> CommittedLog {
        let mut log = CommittedLog::default();
        for (position, record) in records.iter().enumerate() {
            log.observe(1, position as u64 + 1, record)
                .expect("contiguous");
        }
        log
    }

    fn mset(keys: &[&str], value: &str) -> GroupWrite {
        GroupWrite {
            name: "client 1 MSET #7".to_string(),
            puts: keys
                .iter()
                .map(|key| (key.as_bytes().to_vec(), value.as_bytes().to_vec()))
                .collect(),
            other_keys: Vec::new(),
            whole: true,
        }
    }

    #[test]
    fn a_multi_key_write_in_one_record_or_none_is_atomic() {
        let log = committed(&[
            put(1, "k0", "c2-1"),
            batch(2, &[("k0", "c1-1"), ("k1", "c1-1")]),
        ]);
        assert_eq!(
            log.check_atomic(&mset(&["k0", "k1"], "c1-1")).ok(),
            Some(Some(2))
        );
        assert_eq!(
            log.check_atomic(&mset(&["k0", "k1"], "c1-2")).ok(),
            Some(None)
        );
        // The batch's writes apply together, at its index.
        assert_eq!(log.image_at(1).get(&b"k1"[..]), None);
        assert_eq!(
            log.image_at(2).get(&b"k1"[..]).map(Vec::as_slice),
            Some(&b"c1-1"[..])
        );
    }

    #[test]
    fn a_multi_key_write_split_over_records_is_caught() {
        let log = committed(&[put(1, "k0", "c1-1"), put(2, "k1", "c1-1")]);
        let failure = log.check_atomic(&mset(&["k0", "k1"], "c1-1")).unwrap_err();
        assert_eq!(failure.kind, ViolationKind::NotAtomic);
        assert!(
            failure.detail.contains("in 2 records"),
            "{}",
            failure.detail
        );
    }

    #[test]
    fn a_multi_key_write_committed_in_part_is_caught() {
        let log = committed(&[batch(1, &[("k0", "c1-1"), ("k2", "c9-9")])]);
        let failure = log.check_atomic(&mset(&["k0", "k1"], "c1-1")).unwrap_err();
        assert_eq!(failure.kind, ViolationKind::NotAtomic);
        assert!(
            failure.detail.contains("only in part"),
            "{}",
            failure.detail
        );
        assert!(
            failure.detail.contains("k1=c1-1 not committed"),
            "{}",
            failure.detail
        );
        // Unless a part may have been refused on its own.
        let partial = GroupWrite {
            whole: false,
            ..mset(&["k0", "k1"], "c1-1")
        };
        assert_eq!(log.check_atomic(&partial).ok(), Some(Some(1)));
    }

    #[test]
    fn an_increment_whose_sum_is_unknown_must_share_the_record() {
        let exec = GroupWrite {
            name: "client 1 EXEC #3".to_string(),
            puts: vec![(b"k0".to_vec(), b"c1-3".to_vec())],
            other_keys: vec![b"n0".to_vec()],
            whole: true,
        };
        let together = committed(&[batch(1, &[("k0", "c1-3"), ("n0", "1")])]);
        assert_eq!(together.check_atomic(&exec).ok(), Some(Some(1)));
        let apart = committed(&[put(1, "k0", "c1-3"), put(2, "n0", "1")]);
        let failure = apart.check_atomic(&exec).unwrap_err();
        assert!(
            failure.detail.contains("lacks its writes of n0"),
            "{}",
            failure.detail
        );
    }
}
