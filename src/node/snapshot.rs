//! Snapshots in the core: when one starts, the image of the store taken a
//! slice per turn and handed to the driver as the bytes of a snapshot file,
//! and what a durable snapshot lets go of: the log it covers.
//!
//! A snapshot holds only committed state. It is the store as of index `S`:
//! on a cluster's leader `S` is the commit index (its store runs ahead,
//! undoably, and the image takes the committed pairs: see
//! `Store::begin_capture`); elsewhere `S` is the applied index, which never
//! passes the commit index, except on a single node, which applies a write at
//! once and counts it committed when durable. There the file is published
//! only once the log is durable through `S`.
//!
//! Crash safety rests on one order: the image goes to a temporary file that
//! the driver makes durable and renames ([`Step::FinishSnapshot`]); only once
//! the driver reports it published may the log up to `S` go
//! ([`Step::CompactLog`]). A crash before leaves the whole log; after, the
//! snapshot covers what was dropped.
//!
//! A snapshot starts when the log written since the newest one exceeds both
//! `snapshot_log_bytes` and the newest one's size (Redis's
//! `auto-aof-rewrite-min-size` with `auto-aof-rewrite-percentage 100`), or
//! when a client sends `SNAPSHOT`.

use std::collections::VecDeque;

use super::events::Event;
use super::message::NodeId;
use super::{Flow, Gate, Node, ReplyQueue, Role, Step};
use crate::protocol::Reply;
use crate::snapshot::{Decoder, Encoder, Header, Summary};
use crate::store::Store;

/// Bytes of the image encoded per turn, at most (about one chunk), so the
/// loop's work per turn stays bounded.
const CAPTURE_BYTES_PER_TURN: usize = 256 * 1024;
/// Snapshot bytes handed to the driver and not yet written, at most; the
/// capture waits for the disk beyond this.
const MAX_UNWRITTEN_SNAPSHOT_BYTES: usize = 4 * 1024 * 1024;
/// Outcomes of finished attempts remembered for waiting `SNAPSHOT`s.
const REMEMBERED_OUTCOMES: usize = 16;
/// Pairs of a store replaced by an installed snapshot freed per turn.
const RETIRED_PAIRS_FREED_PER_TURN: usize = 16 * 1024;

/// A durable snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SnapshotPoint {
    /// The last log index the image includes (0 with no snapshot).
    pub index: u64,
    /// The epoch of the record at `index`.
    pub epoch: u64,
    /// The size of its file.
    pub file_bytes: u64,
}

/// How the driver published a snapshot file (see [`Node::on_snapshot_done`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotWritten {
    /// The size of the file.
    pub file_bytes: u64,
    /// How long writing it took, from `BeginSnapshot` to durable (for the
    /// log line: the core has no clock).
    pub elapsed_ms: u64,
}

/// A snapshot file being made: the store's image taken here, or one
/// arriving from another node; one at a time.
#[derive(Debug)]
pub(super) enum Task {
    /// The store's image is being handed out, a slice per turn.
    Capturing {
        attempt: u64,
        index: u64,
        epoch: u64,
        encoder: Encoder,
        /// Every pair has been handed to the encoder.
        captured: bool,
        log_bytes_at_start: u64,
    },
    /// Another node's snapshot is arriving (see `transfer`).
    Receiving(Box<Receiving>),
    /// Every byte went to the driver; waiting for the file to be durable.
    Publishing {
        attempt: u64,
        index: u64,
        epoch: u64,
        /// Pairs in the file (for the log line).
        pairs: u64,
        log_bytes_at_start: u64,
        /// A received snapshot, installed once durable.
        install: Option<Box<Install>>,
    },
}

/// A snapshot arriving from `from`, checked and loaded into a new store as
/// its chunks come in.
#[derive(Debug)]
pub(super) struct Receiving {
    pub(super) attempt: u64,
    pub(super) from: NodeId,
    /// The epoch this node had promised when it began (the transfer is
    /// abandoned if that changes).
    pub(super) in_epoch: u64,
    pub(super) index: u64,
    pub(super) epoch: u64,
    pub(super) total_bytes: u64,
    pub(super) received_bytes: u64,
    pub(super) decoder: Decoder,
    pub(super) store: Store,
}

/// A received snapshot's store, to install once its file is durable.
#[derive(Debug)]
pub(super) struct Install {
    pub(super) from: NodeId,
    pub(super) store: Store,
}

impl Task {
    fn attempt(&self) -> u64 {
        match self {
            Task::Capturing { attempt, .. } | Task::Publishing { attempt, .. } => *attempt,
            Task::Receiving(receiving) => receiving.attempt,
        }
    }

    fn index(&self) -> u64 {
        match self {
            Task::Capturing { index, .. } | Task::Publishing { index, .. } => *index,
            Task::Receiving(receiving) => receiving.index,
        }
    }
}

/// The node's snapshot state.
#[derive(Debug, Default)]
pub(super) struct Snapshots {
    /// The newest durable snapshot.
    pub(super) newest: SnapshotPoint,
    /// The one before it (a leader keeps the log from there for followers
    /// that lag).
    previous: SnapshotPoint,
    /// The log up to this index may be gone from disk. Always a snapshot's
    /// index, so the epoch of its record is known: `compacted_epoch`.
    pub(super) compacted_through: u64,
    pub(super) compacted_epoch: u64,
    pub(super) task: Option<Task>,
    pub(super) attempts: u64,
    outcomes: VecDeque<(u64, Result<u64, String>)>,
    /// Bytes handed out by `WriteSnapshot` not yet reported written.
    pub(super) unwritten_bytes: usize,
    /// Log bytes handed to the disk (and replayed) since start-up.
    pub(super) log_bytes_written: u64,
    /// `log_bytes_written` when the newest snapshot's capture began.
    log_bytes_at_newest: u64,
    /// After a failed attempt, automatic snapshots wait for this much log.
    retry_at_log_bytes: u64,
    /// Steps planned for this turn's end.
    pub(super) steps: VecDeque<Step>,
    /// A store an installed snapshot replaced, being freed a slice per turn
    /// (from the bucket given).
    pub(super) retired_store: Option<(Store, usize)>,
}

impl Node {
    /// Loads a snapshot read at start-up, before any record is replayed:
    /// the store as of `point.index`, whose records the log need not hold.
    pub fn restore_snapshot(&mut self, point: SnapshotPoint, store: Store) {
        assert_eq!(
            self.log.last_index(),
            0,
            "a snapshot is restored before replay"
        );
        self.store = store;
        self.log = super::log_tail::LogTail::after(point.index, point.epoch);
        self.commit_index = point.index;
        self.applied_index = point.index;
        self.replay_commit_hint = point.index;
        self.snapshots.newest = point;
        // Start-up removed what the snapshot covers (all but the segment
        // that holds its index): the records up to it may be gone.
        self.snapshots.compacted_through = point.index;
        self.snapshots.compacted_epoch = point.epoch;
    }

    /// The newest durable snapshot (index 0: none).
    pub fn snapshot_point(&self) -> SnapshotPoint {
        self.snapshots.newest
    }

    /// The index of the snapshot being made or received, if one is.
    pub fn snapshot_in_progress(&self) -> Option<u64> {
        self.snapshots.task.as_ref().map(Task::index)
    }

    /// `SNAPSHOT`: starts one now, or joins the one running. The reply goes
    /// out once it is durable (see [`Node::snapshot_reply`]); if nothing was
    /// written since the newest, that one's index is the answer at once.
    pub(super) fn request_snapshot(&mut self, replies: &mut ReplyQueue) -> Flow {
        let attempt = match &self.snapshots.task {
            Some(task) => task.attempt(),
            None => match self.start_snapshot() {
                Some(attempt) => attempt,
                None => {
                    let reply = Reply::Snapshot(self.snapshots.newest.index);
                    replies.push(reply, Gate::OPEN, self.released());
                    return Flow::Continue;
                }
            },
        };
        Flow::AwaitSnapshot { attempt }
    }

    /// The answer to a `SNAPSHOT` that waits for `attempt`, once it is known.
    pub fn snapshot_reply(&self, attempt: u64) -> Option<Reply<'_>> {
        if attempt > self.snapshots.attempts - self.snapshots.task.is_some() as u64 {
            return None;
        }
        let outcome = self
            .snapshots
            .outcomes
            .iter()
            .find(|(finished, _)| *finished == attempt)
            .map(|(_, outcome)| outcome);
        Some(match outcome {
            Some(Ok(index)) => Reply::Snapshot(*index),
            Some(Err(reason)) => Reply::SnapshotFailed(reason),
            None => Reply::SnapshotFailed("its outcome is no longer known"),
        })
    }

    /// The driver wrote `bytes` of the snapshot handed out.
    pub fn on_snapshot_written(&mut self, bytes: usize) {
        self.snapshots.unwritten_bytes = self.snapshots.unwritten_bytes.saturating_sub(bytes);
    }

    /// The driver finished with the snapshot file: published (durable
    /// under its final name), or failed, at any point after
    /// [`Step::BeginSnapshot`] (the driver removed what it wrote).
    pub fn on_snapshot_done(&mut self, outcome: Result<SnapshotWritten, String>) {
        let Some(task) = self.snapshots.task.take() else {
            debug_assert!(false, "a snapshot outcome without a snapshot");
            return;
        };
        self.snapshots.unwritten_bytes = 0;
        let attempt = task.attempt();
        let result = match (task, outcome) {
            (
                Task::Publishing {
                    index,
                    epoch,
                    pairs,
                    log_bytes_at_start,
                    install,
                    ..
                },
                Ok(written),
            ) => {
                let point = SnapshotPoint {
                    index,
                    epoch,
                    file_bytes: written.file_bytes,
                };
                self.snapshot_published(point, log_bytes_at_start);
                let (file_bytes, elapsed_ms) = (written.file_bytes, written.elapsed_ms);
                let event = match install {
                    Some(install) => Event::SnapshotInstalled {
                        index,
                        epoch,
                        from: install.from,
                        pairs,
                        file_bytes,
                        elapsed_ms,
                        replaced_store: self.install_snapshot(point, *install),
                    },
                    None => Event::SnapshotTaken {
                        index,
                        epoch,
                        pairs,
                        file_bytes,
                        elapsed_ms,
                    },
                };
                self.emit(event);
                Ok(index)
            }
            (task, Err(reason)) => {
                if let Task::Capturing {
                    captured: false, ..
                } = task
                {
                    self.store.end_capture();
                }
                self.snapshots.retry_at_log_bytes =
                    self.snapshots.log_bytes_written + self.config.snapshot_log_bytes;
                Err(reason)
            }
            (_, Ok(_)) => {
                panic!("a snapshot is published only after Step::FinishSnapshot")
            }
        };
        self.remember_outcome(attempt, result);
    }

    fn snapshot_published(&mut self, point: SnapshotPoint, log_bytes: u64) {
        let snapshots = &mut self.snapshots;
        debug_assert!(
            point.index >= snapshots.newest.index,
            "snapshots only move forward"
        );
        snapshots.previous = snapshots.newest;
        snapshots.newest = point;
        snapshots.log_bytes_at_newest = log_bytes;
    }

    /// A snapshot that has failed or no longer makes sense is dropped; the
    /// driver removes its file. A file being published is left to finish.
    pub(super) fn abandon_snapshot(&mut self, reason: &str) {
        let abandoned = match &self.snapshots.task {
            Some(Task::Capturing { .. } | Task::Receiving(_)) => self.snapshots.task.take(),
            _ => None,
        };
        let Some(task) = abandoned else { return };
        if let Task::Capturing {
            captured: false, ..
        } = task
        {
            self.store.end_capture();
        }
        self.snapshots.unwritten_bytes = 0;
        self.snapshots.steps.push_back(Step::AbortSnapshot);
        self.emit(Event::SnapshotAbandoned {
            index: task.index(),
            reason: reason.to_string(),
        });
        self.remember_outcome(task.attempt(), Err(reason.to_string()));
    }

    fn remember_outcome(&mut self, attempt: u64, result: Result<u64, String>) {
        let outcomes = &mut self.snapshots.outcomes;
        if outcomes.len() == REMEMBERED_OUTCOMES {
            outcomes.pop_front();
        }
        outcomes.push_back((attempt, result));
    }

    /// This turn's snapshot work, queued as steps: start one if the log has
    /// grown enough, hand out the next slice of the image, publish a
    /// complete one, let go of log a durable one covers.
    pub(super) fn plan_snapshot_work(&mut self) {
        self.free_retired_store();
        self.check_receiving();
        self.maybe_start_snapshot();
        self.capture_slice();
        self.maybe_finish_snapshot();
        self.maybe_compact_log();
    }

    fn free_retired_store(&mut self) {
        if let Some((store, cursor)) = &mut self.snapshots.retired_store
            && store.free_some(cursor, RETIRED_PAIRS_FREED_PER_TURN)
        {
            self.snapshots.retired_store = None;
        }
    }

    fn maybe_start_snapshot(&mut self) {
        let threshold = self.config.snapshot_log_bytes;
        let snapshots = &self.snapshots;
        if threshold == 0 || snapshots.task.is_some() {
            return;
        }
        let since_newest = snapshots.log_bytes_written - snapshots.log_bytes_at_newest;
        if since_newest <= threshold.max(snapshots.newest.file_bytes)
            || snapshots.log_bytes_written < snapshots.retry_at_log_bytes
        {
            return;
        }
        self.start_snapshot();
    }

    /// The index a snapshot taken now would have (see the module doc).
    fn snapshot_index_now(&self) -> u64 {
        if self.config.cluster_size > 1 && self.is_serving_leader() {
            self.commit_index
        } else {
            self.applied_index
        }
    }

    /// Starts capturing the store as of now; `None` when the newest
    /// snapshot already is that.
    fn start_snapshot(&mut self) -> Option<u64> {
        let index = self.snapshot_index_now();
        let newest = self.snapshots.newest.index;
        if index < newest || (index == newest && newest > 0) {
            return None;
        }
        let Some(epoch) = self.log.epoch_at(index) else {
            debug_assert!(false, "the epoch of the applied record {index} is known");
            return None;
        };
        self.store.begin_capture(index);
        // A leader's uncommitted writes replaced pairs of the image; it
        // keeps them to undo, and the image takes them from there.
        for undo in &self.undo {
            if let Some(previous) = &undo.previous {
                self.store.add_to_capture(previous);
            }
        }
        let (encoder, header) = Encoder::new(Header { index, epoch });
        let snapshots = &mut self.snapshots;
        snapshots.attempts += 1;
        snapshots.steps.push_back(Step::BeginSnapshot {
            index,
            epoch,
            from: None,
        });
        snapshots.unwritten_bytes += header.len();
        snapshots.steps.push_back(Step::WriteSnapshot(header));
        snapshots.task = Some(Task::Capturing {
            attempt: snapshots.attempts,
            index,
            epoch,
            encoder,
            captured: false,
            log_bytes_at_start: snapshots.log_bytes_written,
        });
        Some(snapshots.attempts)
    }

    /// Hands the next slice of the image to the encoder, and the chunks it
    /// completes to the driver, unless the disk is behind.
    fn capture_slice(&mut self) {
        let snapshots = &mut self.snapshots;
        let Some(Task::Capturing {
            encoder, captured, ..
        }) = &mut snapshots.task
        else {
            return;
        };
        if *captured || snapshots.unwritten_bytes >= MAX_UNWRITTEN_SNAPSHOT_BYTES {
            return;
        }
        let mut chunks = Vec::new();
        let done = self.store.capture_step(CAPTURE_BYTES_PER_TURN, |pair| {
            chunks.extend(encoder.push_pair(pair));
        });
        if done {
            self.store.end_capture();
            *captured = true;
        }
        for chunk in chunks {
            snapshots.unwritten_bytes += chunk.len();
            snapshots.steps.push_back(Step::WriteSnapshot(chunk));
        }
    }

    /// A complete image is published once the log is durable through it
    /// (only a single node's can run ahead of that).
    fn maybe_finish_snapshot(&mut self) {
        let ready = matches!(
            self.snapshots.task,
            Some(Task::Capturing { captured: true, index, .. }) if self.commit_index >= index
        );
        if !ready {
            return;
        }
        let Some(Task::Capturing {
            attempt,
            index,
            epoch,
            encoder,
            log_bytes_at_start,
            ..
        }) = self.snapshots.task.take()
        else {
            unreachable!("checked just above");
        };
        let (last_bytes, summary) = encoder.finish();
        let snapshots = &mut self.snapshots;
        snapshots.unwritten_bytes += last_bytes.len();
        snapshots.steps.push_back(Step::WriteSnapshot(last_bytes));
        let pairs = summary.pairs;
        snapshots.steps.push_back(Step::FinishSnapshot(summary));
        if self.config.unsafe_compact_before_snapshot_is_durable {
            snapshots.compacted_through = index;
            snapshots.compacted_epoch = epoch;
            snapshots.steps.push_back(Step::CompactLog(index));
        }
        snapshots.task = Some(Task::Publishing {
            attempt,
            index,
            epoch,
            pairs,
            log_bytes_at_start,
            install: None,
        });
    }

    /// Lets the driver drop the log that the newest snapshot covers (see
    /// `compaction_target`).
    fn maybe_compact_log(&mut self) {
        let target = self.compaction_target();
        if target.index > self.snapshots.compacted_through {
            self.snapshots.compacted_through = target.index;
            self.snapshots.compacted_epoch = target.epoch;
            self.snapshots
                .steps
                .push_back(Step::CompactLog(target.index));
        }
    }

    /// How far the log may go: through the newest snapshot, except that a
    /// leader with followers that lag behind it keeps the log from the
    /// previous snapshot (a follower further behind is sent the snapshot).
    fn compaction_target(&self) -> SnapshotPoint {
        let newest = self.snapshots.newest;
        match &self.role {
            Role::Leader { followers, .. }
                if followers
                    .values()
                    .any(|progress| progress.match_index() < newest.index) =>
            {
                self.snapshots.previous
            }
            _ => newest,
        }
    }

    /// Counts log bytes handed to the disk (or replayed), which decide when
    /// the next snapshot starts.
    pub(super) fn note_log_bytes(&mut self, bytes: usize) {
        self.snapshots.log_bytes_written += bytes as u64;
    }
}

/// What a published snapshot holds, for the driver's status line.
pub type SnapshotSummary = Summary;
