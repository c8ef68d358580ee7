//! An adversarial peer: one that got past the handshake (it holds a
//! member's connection) and sends well-formed frames built to break the
//! protocol's invariants: epochs at or beyond the limit, records of epoch 0
//! or from the future, gaps, self-committed records, impossible promises,
//! snapshot chunks outside their file, indexes near `u64::MAX`, and frames
//! in the name of a node the cluster does not have.
//!
//! Each forgery is a mutation of a real frame in flight, so it reaches the
//! node in the state where the real one would. The world delivers it just
//! before the real frame and checks that the core refused it (or, for an
//! unknown sender, ignored it) and that nothing the core exposes moved;
//! every other check of the run (one leader per epoch, no acknowledged
//! write lost, linearizability) must still hold.
//!
//! What is out of reach here, by design: a member that forges frames valid
//! in every field (a higher epoch with a well-formed log, an acknowledgement
//! it did not earn) is a Byzantine member, which this protocol does not
//! tolerate; authentication keeps non-members out (`docs/SECURITY.md`).

use kvstore::log::{self, MAX_EPOCH, MAX_INDEX};
use kvstore::node::{Envelope, Message, Node, NodeId};

use super::rng::Rng;

/// An id no simulated cluster uses.
pub const STRANGER: NodeId = 1_000;

/// What the core must do with a forged frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    Refused,
    /// From a node the cluster does not have: dropped unread.
    Ignored,
}

/// A forged frame and what must become of it.
#[derive(Debug)]
pub struct Forgery {
    pub envelope: Envelope,
    pub expect: Expect,
    pub what: &'static str,
}

/// What a node exposes that a refused frame must not change.
pub fn fingerprint(node: &Node) -> (u64, u64, u64, usize, Option<u64>) {
    (
        node.promised_epoch(),
        node.last_index(),
        node.commit_index(),
        node.queued_messages().len(),
        node.known_leader(),
    )
}

/// A forgery built from `real`.
pub fn forge(real: &Envelope, rng: &mut Rng) -> Forgery {
    let mut envelope = real.clone();
    let mutations: [fn(&mut Envelope, &mut Rng) -> Option<&'static str>; 4] = [
        forge_epoch,
        forge_records,
        forge_fields,
        forge_index_overflow,
    ];
    if rng.chance(100) {
        envelope.from = STRANGER;
        return Forgery {
            envelope,
            expect: Expect::Ignored,
            what: "a frame from a node not in the cluster",
        };
    }
    let first = rng.below(mutations.len() as u64) as usize;
    for offset in 0..mutations.len() {
        let mutate = mutations[(first + offset) % mutations.len()];
        if let Some(what) = mutate(&mut envelope, rng) {
            return Forgery {
                envelope,
                expect: Expect::Refused,
                what,
            };
        }
    }
    unreachable!("an epoch can always be forged")
}

/// The epoch that bricked clusters: at the limit, past it, or u64::MAX.
fn forge_epoch(envelope: &mut Envelope, rng: &mut Rng) -> Option<&'static str> {
    envelope.epoch = match rng.below(3) {
        0 => MAX_EPOCH,
        1 => MAX_EPOCH + 1 + rng.below(1 << 20),
        _ => u64::MAX,
    };
    Some("an epoch at or beyond the limit")
}

/// Index-like fields near `u64::MAX`, where `+ 1` would wrap.
fn forge_index_overflow(envelope: &mut Envelope, rng: &mut Rng) -> Option<&'static str> {
    let huge = MAX_INDEX + 1 + rng.below(u64::MAX - MAX_INDEX - 1);
    match &mut envelope.message {
        Message::Ack { match_index, .. } => *match_index = huge,
        Message::Append { commit_index, .. } | Message::Coordinator { commit_index } => {
            *commit_index = huge
        }
        Message::Fetch { from_index } => *from_index = huge,
        Message::SnapshotAck { received_bytes, .. } => *received_bytes = huge,
        Message::InstallSnapshot { total_bytes, .. } => *total_bytes = huge,
        _ => return None,
    }
    Some("an index beyond the limit")
}

/// Impossible promises and snapshot chunks.
fn forge_fields(envelope: &mut Envelope, rng: &mut Rng) -> Option<&'static str> {
    let epoch = envelope.epoch;
    match &mut envelope.message {
        Message::Promise {
            last_epoch,
            last_index,
            commit_index,
        } => {
            if rng.chance(500) {
                *last_epoch = epoch + 1 + rng.below(10);
                Some("a promise of a log newer than its epoch")
            } else {
                *commit_index = *last_index + 1 + rng.below(10);
                Some("a promise committed past its log")
            }
        }
        Message::InstallSnapshot {
            epoch: snapshot_epoch,
            total_bytes,
            offset,
            bytes,
            ..
        } => {
            if rng.chance(500) || bytes.is_empty() {
                *snapshot_epoch = epoch + 1;
                Some("a snapshot newer than its frame")
            } else {
                *offset = *total_bytes;
                Some("a snapshot chunk past the end of its file")
            }
        }
        _ => None,
    }
}

/// Records of epoch 0, from the future, out of sequence, or claiming
/// their own commit.
fn forge_records(envelope: &mut Envelope, rng: &mut Rng) -> Option<&'static str> {
    let frame_epoch = envelope.epoch;
    let (first_index, records) = match &mut envelope.message {
        Message::Append {
            prev_index,
            records,
            ..
        } => (*prev_index + 1, records),
        Message::FetchReply {
            from_index,
            records,
        } => (*from_index, records),
        _ => return None,
    };
    if records.is_empty() {
        return None;
    }
    let victim = rng.below(count_records(records)) as usize;
    let kind = rng.below(4);
    let mut forged = Vec::with_capacity(records.len() + 64);
    let mut rest = &records[..];
    let mut position = 0;
    while !rest.is_empty() {
        let (mut entry, used) = log::decode(rest).expect("a real frame's records decode");
        if position == victim {
            match kind {
                0 => entry.epoch = 0,
                1 => entry.epoch = frame_epoch + 1 + rng.below(3),
                2 => entry.index = first_index + position as u64 + 1 + rng.below(3),
                _ => entry.commit = entry.index + rng.below(3),
            }
        }
        log::encode(&entry, &mut forged);
        rest = &rest[used..];
        position += 1;
    }
    *records = forged;
    Some(match kind {
        0 => "a record of epoch 0",
        1 => "a record newer than its frame",
        2 => "records out of sequence",
        _ => "a record claiming its own commit",
    })
}

fn count_records(mut records: &[u8]) -> u64 {
    let mut count = 0;
    while !records.is_empty() {
        let (_, used) = log::decode(records).expect("a real frame's records decode");
        records = &records[used..];
        count += 1;
    }
    count
}
