//! The turn contract: the one order in which every driver carries out what
//! the core decided during a loop turn.
//!
//! A driver (the reactor in `net`, or the simulator in the tests) feeds the
//! core its inputs for a turn, then asks [`Node::next_step`] for steps until
//! it returns `None`, carrying out each one and reporting back where the
//! step says so. The order lives here, once, so the simulator exercises the
//! same sequence the server runs (in the spirit of raft-rs's
//! `Ready`/`advance`):
//!
//! 0. what the core decided that an operator should read (`Event`s: an
//!    election and why, leadership won or lost, a new leader, a snapshot),
//!    in the order decided, first, whenever any are waiting: the driver
//!    logs them (it adds the time); they change nothing, so their place
//!    matters only to the order of the log's lines;
//! 1. the turn's batching (`Append`s per follower, a read round);
//! 2. persist the promised epoch, read the log where the core asked, arm
//!    timers, send messages, in that order: nothing leaves before the
//!    promise it relies on is durable, and a leader's records go to its
//!    followers before its own fdatasync, so the disks work in parallel;
//! 3. the log write: cut, append, start the fdatasync;
//! 4. step 2 again, for what durability produced (a follower's Acks);
//! 5. if the node stopped leading, its held replies are void;
//! 6. release the replies the core lets out;
//! 7. snapshot work: the next slice of the store's image for the snapshot
//!    file, finishing it, and removing the log a durable snapshot covers.
//!
//! Invariants the core asserts: a driver reports a log write before asking
//! for the next step, and hands over the records of a log read before asking
//! for the next one.

use super::message::{Envelope, NodeId};
use super::{Event, Gate, LogRead, Node, SnapshotRead, SnapshotSummary, TimerKind};

/// One thing the driver must do now.
#[derive(Debug)]
pub enum Step {
    /// Log this decision (one line; see `events.rs`). Nothing to report.
    Event(Event),
    /// Durably record this promised epoch (before anything else leaves).
    PersistEpoch(u64),
    /// Read whole log records from `from_index` on and hand them to
    /// [`Node::on_log_read`].
    ReadLog(LogRead),
    /// Read part of a snapshot file and hand it to [`Node::on_snapshot_read`]
    /// (`None` if that snapshot no longer exists).
    ReadSnapshot(SnapshotRead),
    /// Arm these timers; each replaces the previous deadline of its kind.
    ArmTimers(Vec<(TimerKind, u64)>),
    /// Send these peer messages, in order.
    Send(Vec<(NodeId, Envelope)>),
    /// Carry out [`Node::pending_log_write`] and report how with
    /// [`Node::log_write_done`].
    WriteLog,
    /// The node stopped leading: every reply it holds is void (its outcome
    /// is unknown); answer those clients with an error and close them.
    VoidHeldReplies,
    /// Write every held reply whose gate is within this one.
    Release(Gate),
    /// Start writing the snapshot file of the store as of `index` (a
    /// temporary file until it is finished): this node's own, or one that
    /// node `from` is sending.
    BeginSnapshot {
        index: u64,
        epoch: u64,
        from: Option<NodeId>,
    },
    /// Append these bytes to the snapshot file being written; report them
    /// with [`Node::on_snapshot_written`] once written.
    WriteSnapshot(Vec<u8>),
    /// Every byte of the snapshot was handed out: make the file durable
    /// (fsync, rename to its final name, fsync the directory) and report
    /// with [`Node::on_snapshot_done`]. A failure at any point after
    /// `BeginSnapshot` is reported there too, after removing the file.
    FinishSnapshot(SnapshotSummary),
    /// Abandon the snapshot file being written: remove it. (No
    /// `on_snapshot_done` follows.)
    AbortSnapshot,
    /// The log up to this index is covered by a durable snapshot: remove it.
    CompactLog(u64),
}

/// How the driver carried out [`Step::WriteLog`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogWriteOutcome {
    /// Not taken this turn (a disk that waits for its sync in flight); the
    /// core offers the same write, grown, next turn.
    Deferred,
    /// Handed to the disk; a sync reports it through
    /// [`Node::on_log_released`] later.
    Syncing,
    /// Handed to the disk and released at once (a weaker fsync policy).
    Released,
}

/// Where a turn is.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// Between turns: the next step starts one.
    #[default]
    Idle,
    BeforeWrite,
    Write,
    /// [`Step::WriteLog`] was handed out and not yet reported.
    AwaitingWrite,
    AfterWrite,
    Void,
    Release,
    /// Snapshot work: after the replies, so encoding never delays them.
    Snapshot,
    Done,
}

impl Node {
    /// The next thing the driver must do to end this turn; `None` once the
    /// turn is over (the next call starts the next turn).
    pub fn next_step(&mut self) -> Option<Step> {
        assert!(
            !self.read_in_flight,
            "a driver hands over a log read's records before asking for the next step"
        );
        loop {
            if self.phase != Phase::AwaitingWrite
                && let Some(event) = self.next_event()
            {
                return Some(Step::Event(event));
            }
            match self.phase {
                Phase::Idle => {
                    self.end_turn();
                    self.phase = Phase::BeforeWrite;
                }
                Phase::BeforeWrite | Phase::AfterWrite => {
                    if let Some(step) = self.outbox_step() {
                        return Some(step);
                    }
                    self.phase = match self.phase {
                        Phase::BeforeWrite => Phase::Write,
                        _ => Phase::Void,
                    };
                }
                Phase::Write => {
                    if self.log.pending_write().is_some() {
                        self.phase = Phase::AwaitingWrite;
                        return Some(Step::WriteLog);
                    }
                    self.phase = Phase::AfterWrite;
                }
                Phase::AwaitingWrite => panic!(
                    "a driver reports the log write with Node::log_write_done before asking \
                     for the next step"
                ),
                Phase::Void => {
                    self.phase = Phase::Release;
                    if self.leadership_losses != self.voided_leadership_losses {
                        self.voided_leadership_losses = self.leadership_losses;
                        return Some(Step::VoidHeldReplies);
                    }
                }
                Phase::Release => {
                    self.phase = Phase::Snapshot;
                    self.plan_snapshot_work();
                    return Some(Step::Release(self.released()));
                }
                Phase::Snapshot => match self.snapshots.steps.pop_front() {
                    Some(step) => return Some(step),
                    None => self.phase = Phase::Done,
                },
                Phase::Done => {
                    self.phase = Phase::Idle;
                    return None;
                }
            }
        }
    }

    /// The outbox in the order it must leave: the promise first, then the
    /// reads (which may produce messages), the timers, the messages.
    fn outbox_step(&mut self) -> Option<Step> {
        if let Some(epoch) = self.outbox.persist_epoch.take() {
            return Some(Step::PersistEpoch(epoch));
        }
        if let Some(read) = self.outbox.log_reads.pop_front() {
            self.read_in_flight = true;
            return Some(Step::ReadLog(read));
        }
        if let Some(read) = self.outbox.snapshot_reads.pop_front() {
            self.read_in_flight = true;
            return Some(Step::ReadSnapshot(read));
        }
        if !self.outbox.timers.is_empty() {
            return Some(Step::ArmTimers(std::mem::take(&mut self.outbox.timers)));
        }
        if !self.outbox.messages.is_empty() {
            return Some(Step::Send(std::mem::take(&mut self.outbox.messages)));
        }
        None
    }

    /// The driver carried out [`Step::WriteLog`] as `outcome` says.
    pub fn log_write_done(&mut self, outcome: LogWriteOutcome) {
        assert_eq!(
            self.phase,
            Phase::AwaitingWrite,
            "a log write is reported once, after Step::WriteLog"
        );
        self.phase = Phase::AfterWrite;
        if outcome == LogWriteOutcome::Deferred {
            return;
        }
        let last_index = self.log.last_index();
        let written_bytes = self
            .log
            .pending_write()
            .map_or(0, |write| write.bytes.len());
        self.note_log_bytes(written_bytes);
        self.log.mark_handed_off();
        if outcome == LogWriteOutcome::Released {
            self.on_log_released(last_index);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{finish_turn, from_peer, leader_of_three, run};
    use super::*;
    use crate::node::{Message, NodeConfig, ReplyQueue};
    use std::net::SocketAddr;

    /// The kinds of steps a turn hands out, in order.
    fn step_names(node: &mut Node) -> Vec<&'static str> {
        let mut names = Vec::new();
        while let Some(step) = node.next_step() {
            names.push(match step {
                Step::Event(_) => "event",
                Step::PersistEpoch(_) => "persist",
                Step::ReadLog(_) => "read",
                Step::ReadSnapshot(_) => "read snapshot",
                Step::AbortSnapshot => "abort snapshot",
                Step::ArmTimers(_) => "timers",
                Step::Send(_) => "send",
                Step::WriteLog => {
                    node.log_write_done(LogWriteOutcome::Released);
                    "write"
                }
                Step::VoidHeldReplies => "void",
                Step::Release(_) => "release",
                Step::BeginSnapshot { .. } => "begin snapshot",
                Step::WriteSnapshot(_) => "write snapshot",
                Step::FinishSnapshot(_) => "finish snapshot",
                Step::CompactLog(_) => "compact",
            });
        }
        names
    }

    #[test]
    fn a_new_leader_persists_its_promise_before_anything_leaves() {
        let mut config = NodeConfig::single(3);
        config.cluster_size = 3;
        let mut node = Node::new(config);
        node.start(0);
        for peer in [1, 2] {
            node.peer_up(peer, SocketAddr::from(([127, 0, 0, 1], 7000)));
        }
        finish_turn(&mut node);
        node.on_timer(TimerKind::Election, 1000);
        assert_eq!(
            step_names(&mut node),
            ["event", "persist", "timers", "send", "release"],
            "the election is logged first, then its promise is persisted"
        );
    }

    #[test]
    fn events_beyond_the_bound_are_counted_and_reported_as_one() {
        let mut node = Node::new(NodeConfig::single(1));
        let abandoned = |index| Event::SnapshotAbandoned {
            index,
            reason: "test".to_string(),
        };
        for index in 0..crate::node::MAX_EVENTS_PER_TURN as u64 + 3 {
            node.emit(abandoned(index));
        }
        let mut events = Vec::new();
        while let Some(step) = node.next_step() {
            if let Step::Event(event) = step {
                events.push(event);
            }
        }
        assert_eq!(events.len(), crate::node::MAX_EVENTS_PER_TURN + 1);
        assert_eq!(events[0], abandoned(0));
        assert_eq!(events.last(), Some(&Event::EventsDropped { count: 3 }));
        assert!(!step_names(&mut node).contains(&"event"), "handed out once");
    }

    #[test]
    fn records_go_to_followers_before_the_leaders_own_write() {
        let mut node = leader_of_three();
        let mut queue = ReplyQueue::new();
        run(&mut node, &mut queue, b"PUT k v");
        assert_eq!(step_names(&mut node), ["send", "write", "release"]);
    }

    #[test]
    fn a_followers_ack_leaves_after_its_write() {
        let mut config = NodeConfig::single(1);
        config.cluster_size = 3;
        let mut node = Node::new(config);
        node.start(0);
        node.peer_up(3, SocketAddr::from(([127, 0, 0, 1], 7003)));
        finish_turn(&mut node);
        let mut records = Vec::new();
        crate::log::encode(
            &crate::log::Entry {
                epoch: 1,
                index: 1,
                commit: 0,
                op: crate::log::Op::Noop,
            },
            &mut records,
        );
        let append = Message::Append {
            prev_index: 0,
            prev_epoch: 0,
            commit_index: 0,
            round: 0,
            records,
        };
        node.handle_message(from_peer(3, 1, append), 10)
            .expect("a valid frame");
        assert_eq!(
            step_names(&mut node),
            ["event", "persist", "write", "send", "release"],
            "the Ack waits for the write that makes its record durable"
        );
    }

    #[test]
    fn a_deposed_leader_voids_its_held_replies_before_releasing() {
        let mut node = leader_of_three();
        let mut queue = ReplyQueue::new();
        run(&mut node, &mut queue, b"PUT k v");
        finish_turn(&mut node);
        let newer = Message::Ack {
            success: false,
            match_index: 0,
            round: 0,
        };
        node.handle_message(from_peer(1, 5, newer), 1100)
            .expect("a valid frame");
        let names = step_names(&mut node);
        assert_eq!(names[names.len() - 2..], ["void", "release"]);
        assert!(
            !step_names(&mut node).contains(&"void"),
            "one loss is voided once"
        );
    }

    #[test]
    #[should_panic(expected = "reports the log write")]
    fn a_driver_that_skips_reporting_a_write_is_caught() {
        let mut node = Node::new(NodeConfig::single(1));
        node.start(0);
        while let Some(step) = node.next_step() {
            if matches!(step, Step::WriteLog) {
                // Ask for the next step without reporting the write.
                let _ = node.next_step();
            }
        }
    }

    #[test]
    fn a_deferred_write_is_offered_again_next_turn() {
        let mut node = Node::new(NodeConfig::single(1));
        node.start(0);
        while let Some(step) = node.next_step() {
            if matches!(step, Step::WriteLog) {
                node.log_write_done(LogWriteOutcome::Deferred);
            }
        }
        assert_eq!(node.commit_index(), 0);
        assert!(!finish_turn(&mut node).log_bytes.is_empty());
        assert_eq!(node.commit_index(), 1);
    }
}
