//! Sending and installing snapshots (Raft's InstallSnapshot, §7 of the Raft
//! paper).
//!
//! A leader keeps the log that lagging followers need only back to its
//! previous snapshot (see `snapshot::compaction_target`); a follower that
//! needs records its disk no longer holds is sent the newest snapshot
//! instead, then the log after it. The same transfer serves a new leader
//! that adopts the log of a promiser which compacted past the new leader's
//! commit index, and a node started with an empty data directory.
//!
//! Sender: the file is read a chunk at a time (a `ReadSnapshot` step) and
//! sent in `InstallSnapshot` messages, at most [`SNAPSHOT_WINDOW_BYTES`]
//! beyond what the receiver acknowledged and at most one chunk per receiver
//! per turn, so heartbeats and the other followers' appends are never
//! starved. `SnapshotAck` names the offset the receiver wants next, which
//! also resumes a transfer whose link dropped. Meanwhile a leader sends the
//! follower heartbeats that check no log position (`prev_index` 0).
//!
//! Receiver: chunks are taken in order; each is checked by the snapshot
//! format's decoder as it arrives and its pairs go into a new store, while
//! the driver writes the same bytes to a temporary file. Once every byte is
//! in and the file is durable, the node installs it: the new store replaces
//! the old, the log restarts after the snapshot, the commit index jumps to
//! its index, and the sender is told (an `Ack` of that index, or the next
//! `Fetch` when adopting). A transfer whose sender is no longer this node's
//! leader (or adoption source) in the same epoch is abandoned.
//!
//! Why installing never drops an acknowledged write: a snapshot holds only
//! committed state. A node installs one only if its log does not already
//! hold the snapshot's last record with its epoch; then every record it
//! discards at or after that index follows a record that is not the
//! committed one, so by log matching none of them is committed. Records
//! before it are covered by the snapshot.

use super::message::{Message, NodeId};
use super::snapshot::{Install, Receiving, Task};
use super::{Node, Role, Step};
use crate::snapshot::Decoder;
use crate::store::{Store, StoredPair};

/// Bytes of snapshot per `InstallSnapshot` message.
pub const SNAPSHOT_CHUNK_BYTES: usize = 512 * 1024;
const _: () = assert!(SNAPSHOT_CHUNK_BYTES <= super::message::MAX_FRAME_RECORDS_BYTES);
/// Bytes a sender may have sent beyond what the receiver acknowledged.
pub const SNAPSHOT_WINDOW_BYTES: u64 = 4 * SNAPSHOT_CHUNK_BYTES as u64;
/// A leader's heartbeats to a follower whose transfer made no progress
/// before it resends from what was acknowledged (or, when everything was
/// and the follower never installed it, from the start).
const STALLED_TRANSFER_HEARTBEATS: u32 = 4;

/// A read of a snapshot file the core asks for: `max_bytes` from `offset`
/// of the snapshot of `index`, for the transfer to `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotRead {
    pub to: NodeId,
    pub index: u64,
    pub offset: u64,
    pub max_bytes: usize,
}

/// A snapshot this node is sending.
#[derive(Debug, Clone, Copy)]
pub(super) struct Outgoing {
    index: u64,
    epoch: u64,
    total_bytes: u64,
    acked_bytes: u64,
    sent_bytes: u64,
    /// A read of the file for the next chunk is under way.
    reading: bool,
    /// The epoch it belongs to: a new promise ends it.
    in_epoch: u64,
    /// Heartbeats since the receiver last acknowledged anything.
    heartbeats_without_progress: u32,
}

/// The fields of an `InstallSnapshot`.
#[derive(Debug)]
pub(super) struct Chunk {
    pub(super) index: u64,
    pub(super) epoch: u64,
    pub(super) total_bytes: u64,
    pub(super) offset: u64,
    pub(super) bytes: Vec<u8>,
}

impl Node {
    /// Starts sending `to` the newest snapshot, unless one is on its way.
    pub(super) fn send_snapshot_to(&mut self, to: NodeId) {
        let newest = self.snapshots.newest;
        if newest.index == 0 || self.outgoing.contains_key(&to) {
            return;
        }
        let outgoing = Outgoing {
            index: newest.index,
            epoch: newest.epoch,
            total_bytes: newest.file_bytes,
            acked_bytes: 0,
            sent_bytes: 0,
            reading: false,
            in_epoch: self.promised_epoch,
            heartbeats_without_progress: 0,
        };
        self.outgoing.insert(to, outgoing);
    }

    /// The end of a turn: each transfer with room in its window asks for its
    /// next chunk (one per receiver per turn).
    pub(super) fn pump_transfers(&mut self) {
        let epoch = self.promised_epoch;
        self.outgoing
            .retain(|_, outgoing| outgoing.in_epoch == epoch);
        for (to, outgoing) in &mut self.outgoing {
            let unacknowledged = outgoing.sent_bytes - outgoing.acked_bytes;
            if outgoing.reading
                || outgoing.sent_bytes >= outgoing.total_bytes
                || unacknowledged >= SNAPSHOT_WINDOW_BYTES
            {
                continue;
            }
            outgoing.reading = true;
            let left = outgoing.total_bytes - outgoing.sent_bytes;
            self.outbox.snapshot_reads.push_back(SnapshotRead {
                to: *to,
                index: outgoing.index,
                offset: outgoing.sent_bytes,
                max_bytes: SNAPSHOT_CHUNK_BYTES.min(usize::try_from(left).unwrap_or(usize::MAX)),
            });
        }
    }

    /// The driver read what a [`Step::ReadSnapshot`] asked for; `None` when
    /// the file is gone (a newer snapshot replaced it).
    pub fn on_snapshot_read(&mut self, read: SnapshotRead, bytes: Option<&[u8]>) {
        assert!(
            self.read_in_flight,
            "a snapshot read answers a Step::ReadSnapshot"
        );
        self.read_in_flight = false;
        let Some(outgoing) = self.outgoing.get_mut(&read.to) else {
            return;
        };
        if outgoing.index != read.index {
            return;
        }
        outgoing.reading = false;
        let Some(bytes) = bytes.filter(|bytes| !bytes.is_empty()) else {
            // Start over with the newest, if that is another one.
            self.outgoing.remove(&read.to);
            if self.snapshots.newest.index != read.index {
                self.send_snapshot_to(read.to);
            }
            return;
        };
        if read.offset != outgoing.sent_bytes {
            return; // The receiver asked for another offset meanwhile.
        }
        outgoing.sent_bytes += bytes.len() as u64;
        let message = Message::InstallSnapshot {
            index: outgoing.index,
            epoch: outgoing.epoch,
            total_bytes: outgoing.total_bytes,
            offset: read.offset,
            bytes: bytes.to_vec(),
        };
        self.send(read.to, message);
    }

    /// The receiver holds `received_bytes` of the snapshot of `index`.
    pub(super) fn on_snapshot_ack(&mut self, from: NodeId, epoch: u64, index: u64, received: u64) {
        if epoch != self.promised_epoch {
            return;
        }
        let Some(outgoing) = self.outgoing.get_mut(&from) else {
            return;
        };
        if outgoing.index != index {
            return;
        }
        outgoing.heartbeats_without_progress = 0;
        if received < outgoing.acked_bytes || received > outgoing.sent_bytes {
            // It lost what it had (a restart), or kept more than this
            // transfer sent (an earlier one): go on from what it holds.
            outgoing.sent_bytes = received.min(outgoing.total_bytes);
        }
        outgoing.acked_bytes = received.min(outgoing.sent_bytes);
    }

    /// A leader's heartbeat to a follower that is being sent a snapshot: a
    /// transfer that stalled (a chunk lost with a connection, an install
    /// that failed) goes on from what the follower acknowledged, or starts
    /// over if it acknowledged everything and never installed it.
    pub(super) fn transfer_heartbeat(&mut self, to: NodeId) {
        let Some(outgoing) = self.outgoing.get_mut(&to) else {
            return;
        };
        outgoing.heartbeats_without_progress += 1;
        if outgoing.heartbeats_without_progress < STALLED_TRANSFER_HEARTBEATS {
            return;
        }
        outgoing.heartbeats_without_progress = 0;
        if outgoing.acked_bytes == outgoing.total_bytes {
            outgoing.acked_bytes = 0;
        }
        outgoing.sent_bytes = outgoing.acked_bytes;
    }

    /// A link came back: what was in flight on the old one is gone.
    pub(super) fn resend_unacknowledged(&mut self, to: NodeId) {
        if let Some(outgoing) = self.outgoing.get_mut(&to) {
            outgoing.sent_bytes = outgoing.acked_bytes;
        }
    }

    /// The follower now holds the log through `match_index`: a snapshot
    /// it needed no longer is.
    pub(super) fn snapshot_delivered(&mut self, to: NodeId, match_index: u64) {
        if self
            .outgoing
            .get(&to)
            .is_some_and(|outgoing| match_index >= outgoing.index)
        {
            self.outgoing.remove(&to);
        }
    }

    /// Part of a snapshot from `from`, a leader or the source this node
    /// adopts from.
    pub(super) fn on_install_snapshot(
        &mut self,
        from: NodeId,
        epoch: u64,
        chunk: Chunk,
        now_ms: u64,
    ) {
        if epoch < self.promised_epoch {
            // The envelope carries our newer epoch: the sender steps down.
            let reply = Message::Ack {
                success: false,
                match_index: 0,
                round: 0,
            };
            return self.send(from, reply);
        }
        let adopting = matches!(self.role, Role::Adopting { source, epoch: adopting, .. }
            if source == from && adopting == epoch);
        // In a newer epoch than promised the sender leads it (a promiser
        // sends only to the candidate it promised, which promised that epoch
        // too). In the promised epoch it may be a promiser of an adoption
        // that is over (this node may have taken office meanwhile, or
        // restarted and forgotten it), which never leads that epoch: only
        // the leader's `Append` tells it is the leader. Until one came the
        // chunk is dropped; heartbeats come every `--heartbeat-ms`, and the
        // leader resumes a stalled transfer (`transfer_heartbeat`).
        let from_leader = epoch > self.promised_epoch
            || matches!(self.role, Role::Follower { leader: Some(leader) } if leader == from);
        if !adopting && !from_leader {
            return;
        }
        if adopting {
            // Progress: the adoption is not stalled.
            self.arm_election_timer(now_ms);
        } else {
            self.follow(from, epoch, now_ms);
        }
        if self.holds_through(chunk.index, chunk.epoch) {
            return self.already_holds(from, &chunk);
        }
        if self.is_publishing(from, &chunk) {
            // All of it is here; the install follows once it is durable.
            return self.ask_for_offset(from, chunk.index, chunk.total_bytes);
        }
        if !self.is_receiving(from, &chunk) {
            if chunk.offset != 0 || matches!(self.snapshots.task, Some(Task::Publishing { .. })) {
                return self.ask_for_offset(from, chunk.index, 0);
            }
            self.begin_receiving(from, &chunk);
        }
        self.receive(from, chunk);
    }

    /// Whether this node's log already holds everything up to record
    /// `index` of `epoch` (committed there, or the record itself).
    fn holds_through(&self, index: u64, epoch: u64) -> bool {
        self.commit_index >= index
            || (index <= self.log.last_index() && self.log.epoch_at(index) == Some(epoch))
    }

    /// The log got there without the snapshot: what it holds up to the
    /// snapshot's index is committed; tell the sender where it stands.
    fn already_holds(&mut self, from: NodeId, chunk: &Chunk) {
        if self.is_receiving(from, chunk) {
            self.abandon_snapshot("the log already holds it");
        }
        if self.commit_index < chunk.index {
            self.advance_commit(chunk.index);
        }
        self.ask_for_offset(from, chunk.index, chunk.total_bytes);
        self.answer_sender(from, chunk.index);
    }

    fn ask_for_offset(&mut self, from: NodeId, index: u64, received_bytes: u64) {
        let reply = Message::SnapshotAck {
            index,
            received_bytes,
        };
        self.send(from, reply);
    }

    /// Tells the sender of a snapshot of `index` that this node now holds
    /// the log through it: an `Ack` to a leader (once durable), the next
    /// `Fetch` to the source of an adoption.
    fn answer_sender(&mut self, from: NodeId, index: u64) {
        match self.role {
            Role::Adopting { source, .. } if source == from => {
                let from_index = self.commit_index + 1;
                self.send(source, Message::Fetch { from_index });
            }
            Role::Follower {
                leader: Some(leader),
            } if leader == from => self.queue_ack(from, index, 0),
            _ => {}
        }
    }

    fn is_receiving(&self, from: NodeId, chunk: &Chunk) -> bool {
        matches!(&self.snapshots.task, Some(Task::Receiving(receiving))
            if receiving.from == from
                && receiving.index == chunk.index
                && receiving.total_bytes == chunk.total_bytes)
    }

    fn is_publishing(&self, from: NodeId, chunk: &Chunk) -> bool {
        matches!(&self.snapshots.task, Some(Task::Publishing { index, install: Some(install), .. })
            if install.from == from && *index == chunk.index)
    }

    /// A new transfer replaces whatever snapshot this node was making.
    fn begin_receiving(&mut self, from: NodeId, chunk: &Chunk) {
        self.abandon_snapshot(&format!("replaced by a snapshot from node {from}"));
        let snapshots = &mut self.snapshots;
        snapshots.attempts += 1;
        snapshots.steps.push_back(Step::BeginSnapshot {
            index: chunk.index,
            epoch: chunk.epoch,
            from: Some(from),
        });
        let receiving = Receiving {
            attempt: snapshots.attempts,
            from,
            in_epoch: self.promised_epoch,
            index: chunk.index,
            epoch: chunk.epoch,
            total_bytes: chunk.total_bytes,
            received_bytes: 0,
            decoder: Decoder::new(),
            store: Store::new(),
        };
        snapshots.task = Some(Task::Receiving(Box::new(receiving)));
    }

    /// Takes the next chunk: checked, loaded, handed to the driver's file.
    fn receive(&mut self, from: NodeId, chunk: Chunk) {
        let Some(Task::Receiving(receiving)) = &mut self.snapshots.task else {
            unreachable!("receiving, checked by the caller");
        };
        if chunk.offset != receiving.received_bytes {
            let wanted = receiving.received_bytes;
            return self.ask_for_offset(from, chunk.index, wanted);
        }
        let end = chunk.offset + chunk.bytes.len() as u64;
        let store = &mut receiving.store;
        let decoded = receiving.decoder.feed(&chunk.bytes, |pair| {
            // The format checked the pair's layout: it is a stored pair.
            if let Some(pair) = StoredPair::from_encoded(pair) {
                store.insert_loaded(pair);
            }
        });
        let header_agrees = receiving.decoder.header().is_none_or(|header| {
            header.index == receiving.index && header.epoch == receiving.epoch
        });
        if decoded.is_err() || !header_agrees || end > receiving.total_bytes {
            // A broken transfer: start over from scratch.
            self.abandon_snapshot(&format!("the snapshot from node {from} did not check out"));
            return self.ask_for_offset(from, chunk.index, 0);
        }
        receiving.received_bytes = end;
        self.snapshots.unwritten_bytes += chunk.bytes.len();
        self.snapshots
            .steps
            .push_back(Step::WriteSnapshot(chunk.bytes));
        self.ask_for_offset(from, chunk.index, end);
        if end == chunk.total_bytes {
            self.finish_receiving(from);
        }
    }

    /// Every byte is in: once the whole file checks out, publish it.
    fn finish_receiving(&mut self, from: NodeId) {
        let Some(Task::Receiving(receiving)) = self.snapshots.task.take() else {
            unreachable!("receiving, checked by the caller");
        };
        let receiving = *receiving;
        let index = receiving.index;
        let Ok(summary) = receiving.decoder.finish() else {
            self.snapshots.task = Some(Task::Receiving(Box::new(receiving)));
            self.abandon_snapshot(&format!("the snapshot from node {from} ended early"));
            return self.ask_for_offset(from, index, 0);
        };
        let pairs = summary.pairs;
        self.snapshots
            .steps
            .push_back(Step::FinishSnapshot(summary));
        self.snapshots.task = Some(Task::Publishing {
            attempt: receiving.attempt,
            index: receiving.index,
            epoch: receiving.epoch,
            pairs,
            log_bytes_at_start: self.snapshots.log_bytes_written,
            install: Some(Box::new(Install {
                from,
                store: receiving.store,
            })),
        });
    }

    /// Abandons a transfer whose sender is no longer this node's leader or
    /// adoption source in the epoch it began in.
    pub(super) fn check_receiving(&mut self) {
        let Some(Task::Receiving(receiving)) = &self.snapshots.task else {
            return;
        };
        let (from, in_epoch) = (receiving.from, receiving.in_epoch);
        let wanted = in_epoch == self.promised_epoch
            && match self.role {
                Role::Follower { leader } => leader == Some(from),
                Role::Adopting { source, .. } => source == from,
                _ => false,
            };
        if !wanted {
            self.abandon_snapshot(&format!("node {from} no longer sends it"));
        }
    }

    /// A received snapshot is durable: it becomes this node's state, unless
    /// the log got there meanwhile (see the module doc for why this is safe).
    /// Returns whether it replaced the store and the log.
    pub(super) fn install_snapshot(
        &mut self,
        point: super::SnapshotPoint,
        install: Install,
    ) -> bool {
        let replaced = !self.holds_through(point.index, point.epoch);
        if !replaced {
            if self.commit_index < point.index {
                self.advance_commit(point.index);
            }
        } else {
            let replaced = std::mem::replace(&mut self.store, install.store);
            self.snapshots.retired_store = Some((replaced, 0));
            self.log.reset_after(crate::log::Base {
                index: point.index,
                epoch: point.epoch,
            });
            self.undo.clear();
            self.pending_ack = None;
            self.commit_index = point.index;
            self.applied_index = point.index;
        }
        if point.index > self.snapshots.compacted_through {
            // Its log no longer holds (or never held) what the snapshot covers.
            self.snapshots.compacted_through = point.index;
            self.snapshots.compacted_epoch = point.epoch;
        }
        self.answer_sender(install.from, point.index);
        replaced
    }
}
