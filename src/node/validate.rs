//! Checks every peer frame against the protocol's invariants before any of
//! it reaches the core's state.
//!
//! An authenticated peer is a cluster member, and the safety argument
//! (`docs/CLUSTER.md`) trusts members to follow the protocol. What it must
//! not trust is that a member's frames are well formed: a bug, a corrupted
//! frame that passed its checksum, or a member's stolen secret must not be
//! able to make a node wrap its epoch, persist a record it cannot read
//! back, or apply half a frame. So a frame is checked whole, here, against
//! what no correct node ever sends:
//!
//! - an epoch not below [`MAX_EPOCH`], an index beyond [`MAX_INDEX`] (a node bricked
//!   at epoch `u64::MAX` could never win an election again, and `+ 1` would
//!   wrap);
//! - records that do not decode, do not follow each other index by index
//!   from where the frame says they start, carry epoch 0, an epoch above the
//!   frame's, an epoch that goes back, or a commit bound not below their
//!   own index (a restart applies a record's commit bound unasked);
//! - a promise of a log whose last epoch is above the epoch promised, or
//!   whose commit index is beyond its last index;
//! - a snapshot chunk outside its file, or a snapshot newer than its frame.
//!
//! A refused frame is dropped whole (nothing of it is applied or written to
//! the log) and reported to the driver, which logs it with the peer's id and
//! closes the connection. This file is pure: it looks only at the frame.

use std::fmt;

use crate::log::{self, DecodeError, MAX_EPOCH, MAX_INDEX};

use super::message::{Envelope, Message};

/// Why a frame was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InvalidFrame {
    /// The frame's epoch is [`MAX_EPOCH`] or beyond: a node must always be
    /// able to stand for an epoch above every one it has seen.
    EpochOutOfRange { epoch: u64 },
    /// An index, offset or size field is beyond [`MAX_INDEX`].
    FieldOutOfRange { field: &'static str, value: u64 },
    /// The record expected at `index` does not decode.
    BadRecord { index: u64, error: DecodeError },
    /// Records must follow each other from the frame's first index.
    RecordOutOfSequence { expected: u64, found: u64 },
    /// A record's epoch is 0, above the frame's, or below the one before it.
    RecordEpochOutOfRange {
        index: u64,
        epoch: u64,
        lowest: u64,
        highest: u64,
    },
    /// A record's commit bound must lie below its own index.
    RecordCommitNotBelowIndex { index: u64, commit: u64 },
    /// A promise must describe a log no newer than the epoch it promises.
    PromiseAheadOfEpoch { last_epoch: u64, epoch: u64 },
    /// A promiser cannot have committed past its own log.
    PromiseCommitBeyondLog { commit_index: u64, last_index: u64 },
    /// A snapshot chunk must lie inside the file, and the snapshot must be
    /// of a record no newer than the frame's epoch.
    SnapshotChunkOutOfRange {
        index: u64,
        epoch: u64,
        offset: u64,
        bytes: usize,
        total_bytes: u64,
    },
    /// An acknowledgement of records this leader does not have.
    AckBeyondLog { match_index: u64, last_index: u64 },
}

impl fmt::Display for InvalidFrame {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InvalidFrame::EpochOutOfRange { epoch } => {
                write!(
                    formatter,
                    "epoch {epoch} is not below the epoch limit {MAX_EPOCH}"
                )
            }
            InvalidFrame::FieldOutOfRange { field, value } => {
                write!(formatter, "{field} {value} is beyond {MAX_INDEX}")
            }
            InvalidFrame::BadRecord { index, error } => {
                write!(
                    formatter,
                    "the record for index {index} does not decode: {error:?}"
                )
            }
            InvalidFrame::RecordOutOfSequence { expected, found } => {
                write!(
                    formatter,
                    "record {found} where record {expected} should be"
                )
            }
            InvalidFrame::RecordEpochOutOfRange {
                index,
                epoch,
                lowest,
                highest,
            } => write!(
                formatter,
                "record {index} has epoch {epoch}, outside {lowest}..={highest}"
            ),
            InvalidFrame::RecordCommitNotBelowIndex { index, commit } => {
                write!(formatter, "record {index} claims commit index {commit}")
            }
            InvalidFrame::PromiseAheadOfEpoch { last_epoch, epoch } => write!(
                formatter,
                "a promise of epoch {epoch} for a log that ends in epoch {last_epoch}"
            ),
            InvalidFrame::PromiseCommitBeyondLog {
                commit_index,
                last_index,
            } => write!(
                formatter,
                "a promise with commit index {commit_index} past its last index {last_index}"
            ),
            InvalidFrame::SnapshotChunkOutOfRange {
                index,
                epoch,
                offset,
                bytes,
                total_bytes,
            } => write!(
                formatter,
                "snapshot {index} (epoch {epoch}): {bytes} bytes at offset {offset} \
                 of a {total_bytes}-byte file"
            ),
            InvalidFrame::AckBeyondLog {
                match_index,
                last_index,
            } => write!(
                formatter,
                "an acknowledgement of index {match_index} past this log's last index {last_index}"
            ),
        }
    }
}

impl std::error::Error for InvalidFrame {}

/// Checks `envelope` alone (nothing of the receiver's state); see the
/// module docs for what is refused.
pub fn check_frame(envelope: &Envelope) -> Result<(), InvalidFrame> {
    let epoch = envelope.epoch;
    if epoch >= MAX_EPOCH {
        return Err(InvalidFrame::EpochOutOfRange { epoch });
    }
    for (field, value) in index_fields(&envelope.message) {
        if value > MAX_INDEX {
            return Err(InvalidFrame::FieldOutOfRange { field, value });
        }
    }
    match &envelope.message {
        Message::Append {
            prev_index,
            prev_epoch,
            records,
            ..
        } => {
            let lowest = (*prev_epoch).max(1);
            if *prev_epoch > epoch {
                return Err(InvalidFrame::RecordEpochOutOfRange {
                    index: *prev_index,
                    epoch: *prev_epoch,
                    lowest: 0,
                    highest: epoch,
                });
            }
            check_records(records, prev_index + 1, lowest, epoch)
        }
        Message::FetchReply {
            from_index,
            records,
        } => check_records(records, *from_index, 1, epoch),
        Message::Promise {
            last_epoch,
            last_index,
            commit_index,
        } => check_promise(epoch, *last_epoch, *last_index, *commit_index),
        Message::InstallSnapshot {
            index,
            epoch: snapshot_epoch,
            total_bytes,
            offset,
            bytes,
        } => {
            let end = offset.checked_add(bytes.len() as u64);
            let inside = end.is_some_and(|end| end <= *total_bytes);
            let epoch_fits = (1..=epoch).contains(snapshot_epoch) && *index >= 1;
            if inside && epoch_fits {
                return Ok(());
            }
            Err(InvalidFrame::SnapshotChunkOutOfRange {
                index: *index,
                epoch: *snapshot_epoch,
                offset: *offset,
                bytes: bytes.len(),
                total_bytes: *total_bytes,
            })
        }
        _ => Ok(()),
    }
}

/// The fields of `message` that count records, bytes or rounds (padded
/// with zeros): each must stay far from `u64::MAX`, so that no `+ 1` on
/// them can wrap. An array, not a `Vec`: this runs for every frame.
fn index_fields(message: &Message) -> [(&'static str, u64); 3] {
    const NONE: (&str, u64) = ("", 0);
    match *message {
        Message::Election | Message::Alive { .. } | Message::Reject { .. } => [NONE; 3],
        Message::Coordinator { commit_index } => [("commit index", commit_index), NONE, NONE],
        Message::Promise {
            last_index,
            commit_index,
            ..
        } => [
            ("last index", last_index),
            ("commit index", commit_index),
            NONE,
        ],
        Message::Fetch { from_index } | Message::FetchReply { from_index, .. } => {
            [("from index", from_index), NONE, NONE]
        }
        Message::Append {
            prev_index,
            commit_index,
            round,
            ..
        } => [
            ("previous index", prev_index),
            ("commit index", commit_index),
            ("round", round),
        ],
        Message::Ack {
            match_index, round, ..
        } => [("match index", match_index), ("round", round), NONE],
        Message::InstallSnapshot {
            index,
            total_bytes,
            offset,
            ..
        } => [
            ("snapshot index", index),
            ("snapshot size", total_bytes),
            ("snapshot offset", offset),
        ],
        Message::SnapshotAck {
            index,
            received_bytes,
        } => [
            ("snapshot index", index),
            ("received bytes", received_bytes),
            NONE,
        ],
    }
}

/// Records must decode, run from `first_index` one by one, and carry
/// epochs that never go back, within `lowest..=highest`.
fn check_records(
    records: &[u8],
    first_index: u64,
    lowest: u64,
    highest: u64,
) -> Result<(), InvalidFrame> {
    let mut expected = first_index;
    let mut lowest = lowest;
    let mut rest = records;
    while !rest.is_empty() {
        let (entry, used) = log::decode(rest).map_err(|error| InvalidFrame::BadRecord {
            index: expected,
            error,
        })?;
        if entry.index != expected {
            return Err(InvalidFrame::RecordOutOfSequence {
                expected,
                found: entry.index,
            });
        }
        if !(lowest..=highest).contains(&entry.epoch) {
            return Err(InvalidFrame::RecordEpochOutOfRange {
                index: entry.index,
                epoch: entry.epoch,
                lowest,
                highest,
            });
        }
        if entry.commit >= entry.index {
            return Err(InvalidFrame::RecordCommitNotBelowIndex {
                index: entry.index,
                commit: entry.commit,
            });
        }
        if entry.index > MAX_INDEX {
            return Err(InvalidFrame::FieldOutOfRange {
                field: "record index",
                value: entry.index,
            });
        }
        lowest = entry.epoch;
        expected += 1;
        rest = &rest[used..];
    }
    Ok(())
}

fn check_promise(
    epoch: u64,
    last_epoch: u64,
    last_index: u64,
    commit_index: u64,
) -> Result<(), InvalidFrame> {
    if last_epoch > epoch {
        return Err(InvalidFrame::PromiseAheadOfEpoch { last_epoch, epoch });
    }
    if commit_index > last_index {
        return Err(InvalidFrame::PromiseCommitBeyondLog {
            commit_index,
            last_index,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::super::tests::{finish_turn, from_peer, leader_of_three, sent};
    use super::*;
    use crate::log::{Entry, Op};
    use crate::node::{Node, NodeConfig, NodeId};

    fn record(epoch: u64, index: u64, commit: u64) -> Vec<u8> {
        let mut bytes = Vec::new();
        let entry = Entry {
            epoch,
            index,
            commit,
            op: Op::Put {
                key: b"k",
                value: b"forged",
            },
        };
        log::encode(&entry, &mut bytes);
        bytes
    }

    fn records(list: &[(u64, u64, u64)]) -> Vec<u8> {
        let mut bytes = Vec::new();
        for &(epoch, index, commit) in list {
            bytes.extend(record(epoch, index, commit));
        }
        bytes
    }

    fn append(prev_index: u64, prev_epoch: u64, records: Vec<u8>) -> Message {
        Message::Append {
            prev_index,
            prev_epoch,
            commit_index: 0,
            round: 0,
            records,
        }
    }

    fn check(epoch: u64, message: Message) -> Result<(), InvalidFrame> {
        check_frame(&from_peer(2, epoch, message))
    }

    #[test]
    fn frames_a_correct_node_sends_pass() {
        let three = records(&[(1, 1, 0), (1, 2, 0), (3, 3, 2)]);
        assert_eq!(check(3, append(0, 0, three.clone())), Ok(()));
        assert_eq!(check(3, append(0, 0, Vec::new())), Ok(()));
        let fetched = Message::FetchReply {
            from_index: 1,
            records: three,
        };
        assert_eq!(check(4, fetched), Ok(()));
        let promise = Message::Promise {
            last_epoch: 3,
            last_index: 9,
            commit_index: 9,
        };
        assert_eq!(check(4, promise), Ok(()));
        let chunk = Message::InstallSnapshot {
            index: 9,
            epoch: 3,
            total_bytes: 100,
            offset: 90,
            bytes: vec![0; 10],
        };
        assert_eq!(check(3, chunk), Ok(()));
        assert_eq!(check(MAX_EPOCH - 1, Message::Election), Ok(()));
    }

    #[test]
    fn epochs_at_or_beyond_the_limit_are_refused() {
        for epoch in [MAX_EPOCH, MAX_EPOCH + 1, u64::MAX] {
            let heartbeat = append(0, 0, Vec::new());
            assert_eq!(
                check(epoch, heartbeat),
                Err(InvalidFrame::EpochOutOfRange { epoch })
            );
        }
    }

    #[test]
    fn indexes_beyond_the_limit_are_refused() {
        let ack = Message::Ack {
            success: false,
            match_index: u64::MAX,
            round: 0,
        };
        assert_eq!(
            check(1, ack),
            Err(InvalidFrame::FieldOutOfRange {
                field: "match index",
                value: u64::MAX
            })
        );
        let coordinator = Message::Coordinator {
            commit_index: MAX_INDEX + 1,
        };
        assert!(matches!(
            check(1, coordinator),
            Err(InvalidFrame::FieldOutOfRange { .. })
        ));
    }

    #[test]
    fn records_of_epoch_zero_or_above_the_frame_are_refused() {
        let zero = append(0, 0, record(0, 1, 0));
        assert!(matches!(
            check(2, zero),
            Err(InvalidFrame::RecordEpochOutOfRange { epoch: 0, .. })
        ));
        let ahead = append(0, 0, record(3, 1, 0));
        assert!(matches!(
            check(2, ahead),
            Err(InvalidFrame::RecordEpochOutOfRange { epoch: 3, .. })
        ));
        let going_back = append(0, 0, records(&[(2, 1, 0), (1, 2, 0)]));
        assert!(matches!(
            check(2, going_back),
            Err(InvalidFrame::RecordEpochOutOfRange { index: 2, .. })
        ));
        let below_previous = append(4, 2, record(1, 5, 0));
        assert!(matches!(
            check(2, below_previous),
            Err(InvalidFrame::RecordEpochOutOfRange { index: 5, .. })
        ));
        let previous_ahead = append(4, 3, Vec::new());
        assert!(matches!(
            check(2, previous_ahead),
            Err(InvalidFrame::RecordEpochOutOfRange { .. })
        ));
    }

    #[test]
    fn records_out_of_sequence_are_refused() {
        let gap = append(0, 0, records(&[(1, 1, 0), (1, 3, 0)]));
        assert_eq!(
            check(1, gap),
            Err(InvalidFrame::RecordOutOfSequence {
                expected: 2,
                found: 3
            })
        );
        let misplaced = append(5, 1, record(1, 1, 0));
        assert!(matches!(
            check(1, misplaced),
            Err(InvalidFrame::RecordOutOfSequence { expected: 6, .. })
        ));
        let fetched_from_zero = Message::FetchReply {
            from_index: 0,
            records: record(1, 0, 0),
        };
        assert!(check(1, fetched_from_zero).is_err());
    }

    #[test]
    fn a_record_claiming_its_own_index_committed_is_refused() {
        let claim = append(0, 0, record(1, 1, 1));
        assert_eq!(
            check(1, claim),
            Err(InvalidFrame::RecordCommitNotBelowIndex {
                index: 1,
                commit: 1
            })
        );
    }

    #[test]
    fn damaged_or_truncated_records_are_refused() {
        let mut damaged = record(1, 1, 0);
        let last = damaged.len() - 1;
        damaged[last] ^= 1;
        assert!(matches!(
            check(1, append(0, 0, damaged)),
            Err(InvalidFrame::BadRecord { index: 1, .. })
        ));
        let mut truncated = records(&[(1, 1, 0), (1, 2, 0)]);
        truncated.pop();
        assert!(matches!(
            check(1, append(0, 0, truncated)),
            Err(InvalidFrame::BadRecord { index: 2, .. })
        ));
    }

    #[test]
    fn impossible_promises_are_refused() {
        let ahead = Message::Promise {
            last_epoch: 5,
            last_index: 3,
            commit_index: 0,
        };
        assert!(matches!(
            check(4, ahead),
            Err(InvalidFrame::PromiseAheadOfEpoch { .. })
        ));
        let beyond = Message::Promise {
            last_epoch: 1,
            last_index: 3,
            commit_index: 4,
        };
        assert!(matches!(
            check(4, beyond),
            Err(InvalidFrame::PromiseCommitBeyondLog { .. })
        ));
    }

    #[test]
    fn snapshot_chunks_outside_their_file_are_refused() {
        let chunk = |index, epoch, total_bytes, offset, length| Message::InstallSnapshot {
            index,
            epoch,
            total_bytes,
            offset,
            bytes: vec![0; length],
        };
        for message in [
            chunk(9, 3, 100, 95, 10),
            chunk(9, 3, 100, MAX_INDEX, 1),
            chunk(9, 4, 100, 0, 10),
            chunk(9, 0, 100, 0, 10),
            chunk(0, 1, 100, 0, 10),
        ] {
            assert!(
                matches!(
                    check(3, message.clone()),
                    Err(InvalidFrame::SnapshotChunkOutOfRange { .. })
                        | Err(InvalidFrame::FieldOutOfRange { .. })
                ),
                "{message:?}"
            );
        }
    }

    /// Node `id` of a three-node cluster (ids 1, 2, 3) that heard nothing yet.
    fn node_of_three(id: NodeId) -> Node {
        let mut config = NodeConfig::single(id);
        config.cluster_size = 3;
        let mut node = Node::new(config);
        node.start(0);
        for peer in (1..=3).filter(|peer| *peer != id) {
            node.peer_up(peer, SocketAddr::from(([127, 0, 0, 1], 7000)));
        }
        node
    }

    /// The attack that bricked a cluster: one heartbeat of epoch u64::MAX.
    /// Refused, the node's epoch does not move, and its next election
    /// stands for epoch 1, not a wrapped 0.
    #[test]
    fn a_heartbeat_of_epoch_u64_max_changes_nothing() {
        let mut node = node_of_three(3);
        let heartbeat = from_peer(2, u64::MAX, append(0, 0, Vec::new()));
        assert!(node.handle_message(heartbeat, 10).is_err());
        assert_eq!(node.promised_epoch(), 0);
        let turn = finish_turn(&mut node);
        assert_eq!(turn.persisted_epoch, None);
        assert!(turn.messages.is_empty());
        node.on_timer(crate::node::TimerKind::Election, 2000);
        let turn = finish_turn(&mut node);
        assert_eq!(turn.persisted_epoch, Some(1));
    }

    /// A frame refused part-way is not applied in part: a valid record
    /// followed by a forged one leaves the log as it was.
    #[test]
    fn a_refused_append_appends_nothing() {
        let mut node = node_of_three(1);
        let forged = append(0, 0, records(&[(1, 1, 0), (0, 2, 0)]));
        assert!(node.handle_message(from_peer(3, 1, forged), 10).is_err());
        assert_eq!(node.last_index(), 0);
        let turn = finish_turn(&mut node);
        assert!(turn.log_bytes.is_empty());
        assert_eq!(turn.persisted_epoch, None);
    }

    #[test]
    fn an_ack_beyond_the_leaders_log_is_refused() {
        let mut node = leader_of_three();
        let last_index = node.last_index();
        let forged = Message::Ack {
            success: true,
            match_index: last_index + 5,
            round: 0,
        };
        let from: NodeId = 1;
        let refused = node.handle_message(from_peer(from, 1, forged), 1100);
        assert_eq!(
            refused,
            Err(InvalidFrame::AckBeyondLog {
                match_index: last_index + 5,
                last_index
            })
        );
        assert!(sent(&mut node).is_empty());
    }
}
