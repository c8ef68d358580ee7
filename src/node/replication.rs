//! Replication: the leader ships its records, followers append them, and a
//! record commits once a majority holds it durably in the leader's epoch.
//!
//! - `Append` carries records after (`prev_index`, `prev_epoch`); a follower
//!   takes them only if its log holds that previous record (log matching),
//!   and cuts off a diverging uncommitted suffix. The same bytes go to its
//!   disk; it acknowledges only what is durable.
//! - The leader counts a record committed when a majority's durable match
//!   reaches it *and* it is of the leader's own epoch (Raft §5.4.2: counting
//!   replicas of an older epoch's record is not enough).
//! - ReadIndex: appends carry a round number that followers echo; a read
//!   waits for a round sent after it to be echoed by a majority, which proves
//!   no newer leader had a majority when the value was read.

use std::net::SocketAddr;

use super::events::{ElectionReason, Event, StepDownReason};
use super::message::{
    APPEND_TARGET_RECORDS_BYTES, Envelope, FETCH_REPLY_TARGET_RECORDS_BYTES, Message, NodeId,
};
use super::transfer::Chunk;
use super::validate::{InvalidFrame, check_frame};
use super::{
    LOG_READ_BYTES, LogPosition, LogRead, Node, Peer, PendingAck, ReadPurpose, Role, TimerKind,
};
use crate::log::{self, DecodeError};

/// A leader stops sending a follower new records while this many are unacknowledged.
const MAX_UNACKNOWLEDGED_RECORDS: u64 = 100_000;

/// The leader's view of one follower.
#[derive(Debug, Clone, Copy)]
pub(super) struct Progress {
    /// The next record to send.
    next_index: u64,
    /// The follower's log matches ours, durably, up to here.
    match_index: u64,
    /// The last read round sent to it (retransmitted by heartbeats).
    sent_round: u64,
    acked_round: u64,
    last_ack_ms: Option<u64>,
    /// A read of the log file for this follower is under way.
    reading: bool,
}

impl Progress {
    /// The follower's log matches the leader's, durably, up to here.
    pub(super) fn match_index(&self) -> u64 {
        self.match_index
    }

    pub(super) fn new(next_index: u64) -> Self {
        Progress {
            next_index,
            match_index: 0,
            sent_round: 0,
            acked_round: 0,
            last_ack_ms: None,
            reading: false,
        }
    }
}

/// A follower got records it cannot use.
#[derive(Debug)]
pub(super) struct BadRecords;

/// What merging records into the log did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Merged {
    /// The last index merged.
    pub(super) through: u64,
    /// Records appended (not already held).
    pub(super) appended: u64,
    /// Records of this log cut because they differed, after `cut_after`.
    pub(super) cut: u64,
    pub(super) cut_after: u64,
}

impl Node {
    /// Takes one peer message. A frame that breaks the protocol's
    /// invariants (`validate`) is refused whole, before any of it is
    /// applied; the driver logs the refusal and drops the connection. One
    /// from a node this node has no link with is ignored.
    pub fn handle_message(&mut self, envelope: Envelope, now_ms: u64) -> Result<(), InvalidFrame> {
        if !self.config.unsafe_skip_frame_checks {
            check_frame(&envelope)?;
        }
        let Envelope {
            from,
            epoch,
            message,
        } = envelope;
        if from == self.config.id || !self.peers.contains_key(&from) {
            return Ok(());
        }
        self.seen_epoch = self.seen_epoch.max(epoch);
        match message {
            Message::Election => self.on_election(from, now_ms),
            Message::Alive { .. } => self.on_alive(from, now_ms),
            Message::Coordinator { .. } => self.on_coordinator(from, epoch, now_ms),
            Message::Promise {
                last_epoch,
                last_index,
                ..
            } => {
                let position = LogPosition {
                    last_epoch,
                    last_index,
                };
                self.on_promise(from, epoch, position, now_ms)
            }
            Message::Reject { .. } => self.on_reject(from, epoch, now_ms),
            Message::Fetch { from_index } => self.on_fetch(from, epoch, from_index),
            Message::FetchReply {
                from_index,
                records,
            } => self.on_fetch_reply(from, epoch, from_index, &records, now_ms),
            Message::Append {
                prev_index,
                prev_epoch,
                commit_index,
                round,
                records,
            } => {
                let append = Append {
                    prev_index,
                    prev_epoch,
                    commit_index,
                    round,
                };
                self.on_append(from, epoch, append, &records, now_ms)
            }
            Message::Ack {
                success,
                match_index,
                round,
            } => return self.on_ack(from, epoch, success, match_index, round, now_ms),
            Message::InstallSnapshot {
                index,
                epoch: snapshot_epoch,
                total_bytes,
                offset,
                bytes,
            } => {
                let chunk = Chunk {
                    index,
                    epoch: snapshot_epoch,
                    total_bytes,
                    offset,
                    bytes,
                };
                self.on_install_snapshot(from, epoch, chunk, now_ms)
            }
            Message::SnapshotAck {
                index,
                received_bytes,
            } => self.on_snapshot_ack(from, epoch, index, received_bytes),
        }
        Ok(())
    }

    /// A connection to peer `id` (listening for clients at
    /// `client_address`) completed its handshake.
    pub fn peer_up(&mut self, id: NodeId, client_address: SocketAddr) {
        self.peers.insert(
            id,
            Peer {
                client_address,
                up: true,
            },
        );
        let last_index = self.log.last_index();
        if let Role::Leader { followers, .. } = &mut self.role {
            let progress = followers
                .entry(id)
                .or_insert_with(|| Progress::new(last_index + 1));
            // What was in flight on the old connection is gone.
            progress.next_index = progress.match_index + 1;
            self.send_heartbeat_to(id);
        }
        self.resend_unacknowledged(id);
    }

    /// The connection to peer `id` is gone.
    pub fn peer_down(&mut self, id: NodeId, now_ms: u64) {
        if let Some(peer) = self.peers.get_mut(&id) {
            peer.up = false;
        }
        // A crashed leader closes its sockets: look for a new one now
        // rather than after a full election timeout.
        if matches!(self.role, Role::Follower { leader: Some(leader) } if leader == id) {
            self.last_heard_ms = 0;
            self.start_election(now_ms, ElectionReason::LeaderLost { leader: id });
        }
    }

    /// A timer armed through the outbox fired.
    pub fn on_timer(&mut self, kind: TimerKind, now_ms: u64) {
        match kind {
            TimerKind::Election => self.on_election_timer(now_ms),
            TimerKind::Heartbeat => self.on_heartbeat_timer(now_ms),
        }
    }

    /// The end of a loop turn: ship what the turn appended, and start a read
    /// round if a read waits for one. One message per follower per turn.
    pub(super) fn end_turn(&mut self) {
        if self.is_serving_leader() {
            if self.round_wanted {
                self.round_wanted = false;
                self.sent_round += 1;
                self.stats.read_rounds_started += 1;
            }
            self.broadcast_append();
            if self.config.cluster_size == 1 {
                self.confirmed_round = self.sent_round;
            }
        }
        self.pump_transfers();
    }

    fn on_heartbeat_timer(&mut self, now_ms: u64) {
        let Role::Leader { since_ms, .. } = self.role else {
            return;
        };
        let timeout_ms = self.config.election_timeout_ms;
        let heard_from = self.heard_from_majority(now_ms);
        let majority = self.config.majority();
        if now_ms >= since_ms + timeout_ms && heard_from < majority {
            // Cut off from a majority: another leader may already exist.
            let reason = StepDownReason::NoMajority {
                heard_from,
                majority,
                within_ms: timeout_ms,
            };
            return self.step_down(now_ms, reason);
        }
        self.broadcast_heartbeat();
        self.arm(TimerKind::Heartbeat, now_ms + self.config.heartbeat_ms);
    }

    /// How many nodes, this one included, a leader heard from within an
    /// election timeout of `now_ms`.
    pub(super) fn heard_from_majority(&self, now_ms: u64) -> usize {
        let Role::Leader { followers, .. } = &self.role else {
            return 0;
        };
        let timeout_ms = self.config.election_timeout_ms;
        let recent = followers
            .values()
            .filter(|progress| {
                progress
                    .last_ack_ms
                    .is_some_and(|at| now_ms < at + timeout_ms)
            })
            .count();
        recent + 1
    }

    /// Sends every follower what it lacks (or nothing, if it lacks nothing).
    pub(super) fn broadcast_append(&mut self) {
        let ids = self.follower_ids();
        for id in ids {
            self.send_append(id, false);
        }
    }

    fn broadcast_heartbeat(&mut self) {
        let ids = self.follower_ids();
        for id in ids {
            self.send_append(id, true);
        }
    }

    pub(super) fn send_heartbeat_to(&mut self, id: NodeId) {
        self.send_append(id, true);
    }

    fn follower_ids(&self) -> Vec<NodeId> {
        match &self.role {
            Role::Leader { followers, .. } => followers.keys().copied().collect(),
            _ => Vec::new(),
        }
    }

    /// One `Append` to `id`: new records if it lacks any and may take more,
    /// else an empty one when a heartbeat or a read round is due.
    fn send_append(&mut self, id: NodeId, heartbeat: bool) {
        let last_index = self.log.last_index();
        let round = self.sent_round;
        let Role::Leader { followers, .. } = &mut self.role else {
            return;
        };
        let Some(progress) = followers.get_mut(&id) else {
            return;
        };
        let unacknowledged = progress.next_index.saturating_sub(progress.match_index + 1);
        let has_new =
            progress.next_index <= last_index && unacknowledged < MAX_UNACKNOWLEDGED_RECORDS;
        // A round goes out once per follower; heartbeats carry it again if
        // it was lost. Resending it on every turn until it is acknowledged
        // would answer each Ack with more Appends: a message storm that
        // grows with the number of followers.
        let round_due = progress.sent_round < round;
        if !has_new && !heartbeat && !round_due {
            return;
        }
        let prev_index = progress.next_index - 1;
        if progress.next_index <= self.snapshots.compacted_through
            && progress.next_index < self.log.first_index()
        {
            // Neither memory nor the disk holds what it lacks: it gets the
            // snapshot, and meanwhile heartbeats that check no position.
            let heartbeat_due = heartbeat || round_due;
            if heartbeat_due {
                progress.sent_round = round;
            }
            let commit_index = self.commit_index;
            self.send_snapshot_to(id);
            if heartbeat {
                self.transfer_heartbeat(id);
            }
            if heartbeat_due {
                let message = Message::Append {
                    prev_index: 0,
                    prev_epoch: 0,
                    commit_index,
                    round,
                    records: Vec::new(),
                };
                self.send(id, message);
            }
            return;
        }
        if progress.next_index < self.log.first_index() {
            // Memory no longer holds what this follower lacks: read it back,
            // from the record before when the disk has it (for its epoch).
            if !progress.reading {
                progress.reading = true;
                let compacted = self.snapshots.compacted_through;
                let (from_index, epoch_before) = if prev_index > compacted || prev_index == 0 {
                    (prev_index.max(1), (prev_index == 0).then_some(0))
                } else {
                    (progress.next_index, Some(self.snapshots.compacted_epoch))
                };
                let purpose = ReadPurpose::Append {
                    to: id,
                    next_index: progress.next_index,
                    epoch_before,
                };
                self.outbox.log_reads.push_back(LogRead {
                    from_index,
                    max_bytes: LOG_READ_BYTES,
                    purpose,
                });
            }
            return;
        }
        let target = APPEND_TARGET_RECORDS_BYTES;
        let (records, sent_through) = if has_new {
            match self.log.records_from(progress.next_index, target) {
                Some((bytes, last)) => (bytes.to_vec(), last),
                None => (Vec::new(), prev_index),
            }
        } else {
            (Vec::new(), prev_index)
        };
        progress.next_index = sent_through + 1;
        let Some(prev_epoch) = self.log.epoch_at(prev_index) else {
            return;
        };
        progress.sent_round = round;
        let message = Message::Append {
            prev_index,
            prev_epoch,
            commit_index: self.commit_index,
            round,
            records,
        };
        self.send(id, message);
    }

    /// The driver read what a [`Step::ReadLog`](super::Step::ReadLog)
    /// asked for: whole records from `read.from_index` on.
    pub fn on_log_read(&mut self, read: LogRead, bytes: &[u8]) {
        assert!(self.read_in_flight, "a log read answers a Step::ReadLog");
        self.read_in_flight = false;
        let (from_index, budget, epoch_before) = match read.purpose {
            ReadPurpose::Append {
                next_index,
                epoch_before,
                ..
            } => (next_index, APPEND_TARGET_RECORDS_BYTES, epoch_before),
            ReadPurpose::Fetch { from_index, .. } => {
                (from_index, FETCH_REPLY_TARGET_RECORDS_BYTES, None)
            }
        };
        // Only evicted records come from the disk: from the first record in
        // memory on, the disk may still hold records memory has replaced.
        let wanted = RecordsWanted {
            first_index: read.from_index,
            from_index,
            stop_index: self.log.first_index(),
            budget,
            epoch_before: epoch_before.unwrap_or(0),
        };
        let Some(found) = records_in(bytes, wanted) else {
            // The read stopped at the end of a segment right after the
            // record before the one wanted: read on from there, knowing the
            // epoch before it.
            if let ReadPurpose::Append { to, next_index, .. } = read.purpose
                && read.from_index + 1 == next_index
                && let Some(epoch) = epoch_of_first(bytes, read.from_index)
            {
                let purpose = ReadPurpose::Append {
                    to,
                    next_index,
                    epoch_before: Some(epoch),
                };
                let from_index = next_index;
                let max_bytes = read.max_bytes;
                self.outbox.log_reads.push_back(LogRead {
                    from_index,
                    max_bytes,
                    purpose,
                });
                return;
            }
            self.emit(Event::LogReadMissing {
                from_index: read.from_index,
                wanted_index: from_index,
            });
            return self.release_read(read);
        };
        match read.purpose {
            ReadPurpose::Append { to, next_index, .. } => self.append_read(to, next_index, found),
            ReadPurpose::Fetch { to, from_index } => {
                let records = found.records;
                self.send(
                    to,
                    Message::FetchReply {
                        from_index,
                        records,
                    },
                );
            }
        }
    }

    fn release_read(&mut self, read: LogRead) {
        if let (ReadPurpose::Append { to, .. }, Role::Leader { followers, .. }) =
            (read.purpose, &mut self.role)
            && let Some(progress) = followers.get_mut(&to)
        {
            progress.reading = false;
        }
    }

    /// Sends `to` the records read back for it, unless things moved on.
    fn append_read(&mut self, to: NodeId, next_index: u64, found: FoundRecords) {
        let round = self.sent_round;
        let commit_index = self.commit_index;
        let Role::Leader { followers, .. } = &mut self.role else {
            return;
        };
        let Some(progress) = followers.get_mut(&to) else {
            return;
        };
        progress.reading = false;
        if progress.next_index != next_index {
            return self.send_append(to, true);
        }
        progress.next_index = found.last_index + 1;
        progress.sent_round = round;
        let message = Message::Append {
            prev_index: next_index - 1,
            prev_epoch: found.epoch_before,
            commit_index,
            round,
            records: found.records,
        };
        self.send(to, message);
    }

    fn on_append(&mut self, from: NodeId, epoch: u64, append: Append, records: &[u8], now_ms: u64) {
        if epoch < self.promised_epoch {
            // The envelope carries our newer epoch: the sender steps down.
            let reply = Message::Ack {
                success: false,
                match_index: 0,
                round: append.round,
            };
            return self.send(from, reply);
        }
        self.follow(from, epoch, now_ms);
        let Some(merged) = self.accept_append(&append, records) else {
            let hint = self.commit_index.min(self.log.last_index());
            let reply = Message::Ack {
                success: false,
                match_index: hint,
                round: append.round,
            };
            return self.send(from, reply);
        };
        if merged.cut > 0 {
            self.emit(Event::RecordsCut {
                leader: from,
                after_index: merged.cut_after,
                records: merged.cut,
            });
        }
        let matched_index = merged.through;
        self.advance_commit(append.commit_index.min(matched_index));
        self.queue_ack(from, matched_index, append.round);
        self.maybe_take_over(append.commit_index, now_ms);
    }

    /// A message of `epoch` (at least the promised one) from the leader
    /// `from`: promise its epoch if it is newer, and follow it.
    pub(super) fn follow(&mut self, from: NodeId, epoch: u64, now_ms: u64) {
        if epoch > self.promised_epoch {
            self.promise(epoch);
        }
        if !matches!(self.role, Role::Follower { leader: Some(leader) } if leader == from) {
            if !matches!(self.role, Role::Follower { .. }) {
                self.step_down(now_ms, StepDownReason::NewerEpoch { from, epoch });
            }
            self.role = Role::Follower { leader: Some(from) };
            self.emit(Event::LeaderChanged {
                from: self.last_known_leader,
                to: from,
                epoch,
            });
            self.last_known_leader = Some(from);
        }
        // A follower sends snapshots only as a promiser to the candidate
        // adopting its log; the leader it now hears from adopted already
        // (a leader appends only after adopting), so that transfer is over.
        self.outgoing.clear();
        self.election_attempt = 0;
        self.last_heard_ms = now_ms;
    }

    /// Checks log matching and appends; returns what the merge did (up to
    /// which index this log now matches the leader's).
    fn accept_append(&mut self, append: &Append, records: &[u8]) -> Option<Merged> {
        let prev_index = append.prev_index;
        if prev_index > self.log.last_index() {
            return None;
        }
        // At or below the commit index every log agrees.
        if prev_index > self.commit_index
            && self.log.epoch_at(prev_index) != Some(append.prev_epoch)
        {
            return None;
        }
        self.merge_records(prev_index + 1, records).ok()
    }

    /// Appends `records` (starting at `from_index`) where they are new,
    /// skips the ones this log already has, and cuts this log where it
    /// diverges. Returns the last index merged and what changed.
    pub(super) fn merge_records(
        &mut self,
        from_index: u64,
        records: &[u8],
    ) -> Result<Merged, BadRecords> {
        let mut index = from_index;
        let mut rest = records;
        let (mut appended, mut cut, mut cut_after) = (0, 0, 0);
        while !rest.is_empty() {
            let (entry, used) = log::decode(rest).map_err(|_: DecodeError| BadRecords)?;
            if entry.index != index {
                return Err(BadRecords);
            }
            match self.log.epoch_at(index) {
                // Committed records are the same in every log (this one may
                // no longer keep them in memory).
                _ if index <= self.commit_index => {}
                Some(existing) if existing == entry.epoch && index <= self.log.last_index() => {}
                _ => {
                    if index <= self.log.last_index() {
                        assert!(index > self.commit_index, "a committed record diverged");
                        // Once cut, the rest is appended: one cut per merge.
                        debug_assert_eq!(cut, 0);
                        (cut, cut_after) = (self.log.last_index() - (index - 1), index - 1);
                        self.log.truncate_after(index - 1);
                    }
                    self.log.push_encoded(entry.epoch, index, &rest[..used]);
                    appended += 1;
                }
            }
            rest = &rest[used..];
            index += 1;
        }
        Ok(Merged {
            through: index - 1,
            appended,
            cut,
            cut_after,
        })
    }

    /// Acknowledges `matched_index` to the leader once it is durable.
    pub(super) fn queue_ack(&mut self, leader: NodeId, matched_index: u64, round: u64) {
        self.pending_ack = Some(PendingAck {
            leader,
            matched_index,
            round,
        });
        self.send_pending_ack();
    }

    pub(super) fn send_pending_ack(&mut self) {
        let Some(pending) = self.pending_ack else {
            return;
        };
        let durable = self.log.durable_index().min(pending.matched_index);
        if durable < pending.matched_index && durable == 0 {
            return;
        }
        let reply = Message::Ack {
            success: true,
            match_index: durable,
            round: pending.round,
        };
        self.send(pending.leader, reply);
        if durable >= pending.matched_index {
            self.pending_ack = None;
        }
    }

    /// A caught-up follower of higher id than its leader takes over (Bully).
    fn maybe_take_over(&mut self, leader_commit: u64, now_ms: u64) {
        let Role::Follower {
            leader: Some(leader),
        } = self.role
        else {
            return;
        };
        if self.config.id > leader && self.log.durable_index() >= leader_commit.max(1) {
            self.start_election(now_ms, ElectionReason::TakeOver { leader });
        }
    }

    fn on_ack(
        &mut self,
        from: NodeId,
        epoch: u64,
        success: bool,
        match_index: u64,
        round: u64,
        now_ms: u64,
    ) -> Result<(), InvalidFrame> {
        let last_index = self.log.last_index();
        let Role::Leader {
            epoch: leading,
            followers,
            ..
        } = &mut self.role
        else {
            return Ok(());
        };
        if epoch > *leading {
            self.step_down(now_ms, StepDownReason::NewerEpoch { from, epoch });
            return Ok(());
        }
        if epoch < *leading {
            return Ok(());
        }
        // In its own epoch a leader's log only grows, and a follower
        // matches (or hints at) no more than it was sent.
        if match_index > last_index && !self.config.unsafe_skip_frame_checks {
            return Err(InvalidFrame::AckBeyondLog {
                match_index,
                last_index,
            });
        }
        let Some(progress) = followers.get_mut(&from) else {
            return Ok(());
        };
        progress.last_ack_ms = Some(now_ms);
        if success {
            progress.match_index = progress.match_index.max(match_index);
            progress.next_index = progress.next_index.max(progress.match_index + 1);
            progress.acked_round = progress.acked_round.max(round);
            let matched = progress.match_index;
            self.snapshot_delivered(from, matched);
        } else {
            // Resend from where the follower's log is known to match.
            progress.next_index = match_index + 1;
            progress.match_index = progress.match_index.min(match_index);
            self.send_append(from, true);
        }
        self.update_commit();
        Ok(())
    }

    /// Moves the commit index to the highest record of this epoch that a
    /// majority (this node by its durable index) holds; likewise the
    /// confirmed read round.
    pub(super) fn update_commit(&mut self) {
        let Role::Leader {
            epoch, followers, ..
        } = &self.role
        else {
            return;
        };
        let majority = self.config.majority();
        let mut matches: Vec<u64> = followers.values().map(|p| p.match_index).collect();
        matches.push(self.log.durable_index());
        let mut rounds: Vec<u64> = followers.values().map(|p| p.acked_round).collect();
        rounds.push(self.sent_round);
        let candidate = kth_largest(&mut matches, majority);
        let round = kth_largest(&mut rounds, majority);
        let epoch = *epoch;
        if round > self.confirmed_round {
            // A round echoed confirms every earlier one too.
            self.stats.read_rounds_confirmed += round - self.confirmed_round;
            self.confirmed_round = round;
        }
        if self.log.epoch_at(candidate) == Some(epoch) {
            self.advance_commit(candidate);
        }
    }
}

/// Records found in bytes read back from the log file.
#[derive(Debug)]
struct FoundRecords {
    records: Vec<u8>,
    last_index: u64,
    /// The epoch of the record before the first one returned (0 for none).
    epoch_before: u64,
}

/// The epoch of the first record in `bytes`, if it is record `index`.
fn epoch_of_first(bytes: &[u8], index: u64) -> Option<u64> {
    let (entry, _) = log::decode(bytes).ok()?;
    (entry.index == index).then_some(entry.epoch)
}

/// Which records of a read to use.
#[derive(Debug, Clone, Copy)]
struct RecordsWanted {
    /// The index of the first record in the bytes.
    first_index: u64,
    /// The first record wanted; the one before it, if read, gives its epoch.
    from_index: u64,
    /// Stop before this index.
    stop_index: u64,
    /// The batch's target: records while they fit, but at least one
    /// (`message::MAX_FRAME_RECORDS_BYTES` states the rule).
    budget: usize,
    /// The epoch of record `first_index - 1`, when the read starts at the
    /// first record wanted.
    epoch_before: u64,
}

/// Decodes the records in `bytes` and returns those wanted. `None` when
/// `bytes` ends before record `from_index` does, or does not start at
/// `first_index`.
fn records_in(bytes: &[u8], wanted: RecordsWanted) -> Option<FoundRecords> {
    let mut rest = bytes;
    let mut index = wanted.first_index;
    let mut epoch_before = wanted.epoch_before;
    let mut found: Option<FoundRecords> = None;
    while index < wanted.stop_index
        && let Ok((entry, used)) = log::decode(rest)
    {
        if entry.index != index {
            return None;
        }
        if index < wanted.from_index {
            epoch_before = entry.epoch;
        } else {
            let records = found.get_or_insert_with(|| FoundRecords {
                records: Vec::new(),
                last_index: index,
                epoch_before,
            });
            if !records.records.is_empty() && records.records.len() + used > wanted.budget {
                break;
            }
            records.records.extend_from_slice(&rest[..used]);
            records.last_index = index;
        }
        rest = &rest[used..];
        index += 1;
    }
    found
}

/// The fields of an `Append` besides its records.
#[derive(Debug, Clone, Copy)]
struct Append {
    prev_index: u64,
    prev_epoch: u64,
    commit_index: u64,
    round: u64,
}

/// The `k`-th largest value (1-based); 0 when there are fewer than `k`.
fn kth_largest(values: &mut [u64], k: usize) -> u64 {
    if k == 0 || values.len() < k {
        return 0;
    }
    values.sort_unstable_by(|a, b| b.cmp(a));
    values[k - 1]
}

#[cfg(test)]
mod tests {
    use super::super::tests::{finish_turn, from_peer, leader_of_three, run, sent, write_log};
    use super::*;
    use crate::node::ReplyQueue;

    #[test]
    fn read_rounds_are_counted_when_sent_and_when_a_majority_echoes_them() {
        let mut node = leader_of_three();
        let before = *node.stats();
        let mut queue = ReplyQueue::new();
        run(&mut node, &mut queue, b"GET k");
        run(&mut node, &mut queue, b"GET other");
        let sent = finish_turn(&mut node).messages;
        assert_eq!(
            rounds_sent_to(&sent, 1),
            [1],
            "one round for the turn's reads"
        );
        assert_eq!(
            node.stats().read_rounds_started,
            before.read_rounds_started + 1
        );
        assert_eq!(
            node.stats().read_rounds_confirmed,
            before.read_rounds_confirmed
        );
        let echo = Message::Ack {
            success: true,
            match_index: 1,
            round: 1,
        };
        node.handle_message(from_peer(1, 1, echo), 1100)
            .expect("a valid frame");
        assert_eq!(
            node.stats().read_rounds_confirmed,
            before.read_rounds_confirmed + 1
        );
        assert_eq!(queue.sendable(node.released()), b"NOT_FOUND\nNOT_FOUND\n");
    }

    fn rounds_sent_to(messages: &[(NodeId, Envelope)], to: NodeId) -> Vec<u64> {
        messages
            .iter()
            .filter_map(|(id, envelope)| match envelope.message {
                Message::Append { round, .. } if *id == to => Some(round),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn an_ack_waiting_for_the_disk_is_dropped_when_a_newer_epoch_is_promised() {
        let mut config = crate::node::NodeConfig::single(1);
        config.cluster_size = 3;
        let mut node = Node::new(config);
        node.start(0);
        for peer in [2, 3] {
            node.peer_up(peer, SocketAddr::from(([127, 0, 0, 1], 7000)));
        }
        // Node 3 leads epoch 1 and sends record 1; it is not durable yet.
        let mut records = Vec::new();
        log::encode(
            &log::Entry {
                epoch: 1,
                index: 1,
                commit: 0,
                op: log::Op::Noop,
            },
            &mut records,
        );
        let append = Message::Append {
            prev_index: 0,
            prev_epoch: 0,
            commit_index: 0,
            round: 7,
            records,
        };
        node.handle_message(from_peer(3, 1, append), 10)
            .expect("a valid frame");
        assert!(sent(&mut node).is_empty(), "nothing is durable to ack");
        // Node 3 restarts and runs for epoch 2; node 1 promises it.
        let coordinator = Message::Coordinator { commit_index: 0 };
        node.handle_message(from_peer(3, 2, coordinator), 20)
            .expect("a valid frame");
        assert_eq!(node.promised_epoch(), 2);
        // The turn writes record 1 and the disk makes it durable at once.
        let turn = finish_turn(&mut node);
        assert!(!turn.log_bytes.is_empty());
        // An Ack now would say, in epoch 2, that node 1 holds node 3's
        // epoch-2 log up to index 1: node 3 would count it.
        let acks: Vec<_> = turn
            .messages
            .into_iter()
            .filter(|(_, envelope)| matches!(envelope.message, Message::Ack { .. }))
            .collect();
        assert!(acks.is_empty(), "stale ack sent: {acks:?}");
    }

    fn ack(match_index: u64) -> Message {
        Message::Ack {
            success: true,
            match_index,
            round: 0,
        }
    }

    fn puts(epochs: &[u64]) -> Vec<u8> {
        let mut bytes = Vec::new();
        for (offset, &epoch) in epochs.iter().enumerate() {
            let index = offset as u64 + 1;
            log::encode(
                &log::Entry {
                    epoch,
                    index,
                    commit: 0,
                    op: log::Op::Put {
                        key: b"k",
                        value: b"v",
                    },
                },
                &mut bytes,
            );
        }
        bytes
    }

    fn wanted(first_index: u64, from_index: u64, stop_index: u64, budget: usize) -> RecordsWanted {
        RecordsWanted {
            first_index,
            from_index,
            stop_index,
            budget,
            epoch_before: 0,
        }
    }

    #[test]
    fn records_read_back_start_at_the_one_wanted_and_know_the_epoch_before() {
        let bytes = puts(&[1, 1, 2, 2, 3]);
        let one = bytes.len() / 5;
        let found = records_in(&bytes, wanted(1, 3, u64::MAX, usize::MAX)).unwrap();
        assert_eq!((found.last_index, found.epoch_before), (5, 1));
        assert_eq!(found.records, bytes[2 * one..]);
        let from_start = records_in(&bytes, wanted(1, 1, u64::MAX, usize::MAX)).unwrap();
        assert_eq!(from_start.epoch_before, 0, "there is no record 0");
        // A read that starts at the record wanted takes the epoch it is given
        // (the record before is in a snapshot).
        let after_snapshot = RecordsWanted {
            epoch_before: 7,
            ..wanted(3, 3, u64::MAX, usize::MAX)
        };
        assert_eq!(
            records_in(&bytes[2 * one..], after_snapshot)
                .unwrap()
                .epoch_before,
            7
        );
    }

    #[test]
    fn records_read_back_stop_where_memory_takes_over_and_at_the_budget() {
        let bytes = puts(&[1, 1, 2, 2, 3]);
        let one = bytes.len() / 5;
        // Records 4 and 5 are in memory: the file may hold replaced ones.
        let found = records_in(&bytes, wanted(1, 2, 4, usize::MAX)).unwrap();
        assert_eq!(found.last_index, 3);
        // The budget caps the batch, but one record always goes.
        assert_eq!(
            records_in(&bytes, wanted(1, 2, u64::MAX, one * 2))
                .unwrap()
                .last_index,
            3
        );
        assert_eq!(
            records_in(&bytes, wanted(1, 2, u64::MAX, 1))
                .unwrap()
                .last_index,
            2
        );
    }

    /// Records read back from the disk follow the batch rule too.
    #[test]
    fn records_read_back_send_one_larger_than_the_budget_alone() {
        let big = vec![b'v'; 100];
        let values: [&[u8]; 5] = [b"v", &big, b"v", b"v", b"v"];
        let mut bytes = Vec::new();
        for (offset, value) in values.into_iter().enumerate() {
            let entry = log::Entry {
                epoch: 1,
                index: offset as u64 + 1,
                commit: 0,
                op: log::Op::Put { key: b"k", value },
            };
            log::encode(&entry, &mut bytes);
        }
        let one = log::decode(&bytes).unwrap().1;
        let found = |from_index| records_in(&bytes, wanted(1, from_index, u64::MAX, one * 2));
        assert_eq!(found(1).unwrap().last_index, 1);
        let alone = found(2).unwrap();
        assert_eq!((alone.last_index, alone.records.len()), (2, one + 99));
        assert_eq!(found(3).unwrap().last_index, 4);
    }

    #[test]
    fn the_epoch_of_a_read_that_stopped_at_a_segment_end_is_known() {
        let bytes = puts(&[1, 2, 2]);
        let one = bytes.len() / 3;
        assert_eq!(epoch_of_first(&bytes[one..], 2), Some(2));
        assert_eq!(epoch_of_first(&bytes[one..], 3), None, "not record 3");
        assert_eq!(epoch_of_first(&bytes[..one - 1], 1), None, "cut short");
    }

    #[test]
    fn a_read_that_ends_before_the_wanted_record_finds_nothing() {
        let bytes = puts(&[1, 1, 2]);
        let cut = &bytes[..bytes.len() - 3];
        assert!(records_in(cut, wanted(1, 3, u64::MAX, usize::MAX)).is_none());
        // Bytes that do not start at the record they are said to start at.
        assert!(records_in(&bytes, wanted(5, 5, u64::MAX, usize::MAX)).is_none());
    }

    /// A `PUT` line of `value_bytes` bytes of value.
    fn put_line(key: &str, value_bytes: usize) -> Vec<u8> {
        [format!("PUT {key} ").as_bytes(), &vec![b'v'; value_bytes]].concat()
    }

    /// The record indexes of each `Append` to `to` in `messages`.
    fn appended_to(messages: &[(NodeId, Envelope)], to: NodeId) -> Vec<Vec<u64>> {
        messages
            .iter()
            .filter_map(|(id, envelope)| match &envelope.message {
                Message::Append { records, .. } if *id == to && !records.is_empty() => {
                    Some(indexes_of(records))
                }
                _ => None,
            })
            .collect()
    }

    fn indexes_of(records: &[u8]) -> Vec<u64> {
        let mut indexes = Vec::new();
        let mut rest = records;
        while !rest.is_empty() {
            let (entry, used) = log::decode(rest).expect("whole records");
            indexes.push(entry.index);
            rest = &rest[used..];
        }
        indexes
    }

    /// Every frame in `messages` is one a peer accepts.
    fn assert_frames_decode(messages: &[(NodeId, Envelope)]) {
        for (_, envelope) in messages {
            let mut frame = Vec::new();
            crate::node::message::encode_frame(envelope, &mut frame);
            let decoded = crate::node::message::decode_frame(&frame);
            assert_eq!(decoded, Ok(Some((envelope.clone(), frame.len()))));
        }
    }

    /// Issue #10: a record larger than an `Append`'s target goes to each
    /// follower alone (it once stalled replication and cost the leader its
    /// majority); the records around it keep to the target.
    #[test]
    fn an_append_carries_a_record_larger_than_its_target_alone() {
        let mut node = leader_of_three();
        let mut queue = ReplyQueue::new();
        let small = APPEND_TARGET_RECORDS_BYTES / 4;
        run(&mut node, &mut queue, &put_line("a", small));
        run(
            &mut node,
            &mut queue,
            &put_line("big", APPEND_TARGET_RECORDS_BYTES),
        );
        for key in ["b", "c", "d", "e"] {
            run(&mut node, &mut queue, &put_line(key, small));
        }
        let mut batches = Vec::new();
        for turn in 0..4 {
            let messages = finish_turn(&mut node).messages;
            assert_frames_decode(&messages);
            let to_one = appended_to(&messages, 1);
            assert_eq!(to_one, appended_to(&messages, 2), "turn {turn}");
            let Some(last) = to_one.last().and_then(|batch| batch.last()) else {
                break;
            };
            for peer in [1, 2] {
                let ack = Message::Ack {
                    success: true,
                    match_index: *last,
                    round: 0,
                };
                node.handle_message(from_peer(peer, 1, ack), 1000 + turn)
                    .expect("a valid frame");
            }
            batches.extend(to_one);
        }
        // Record 2 ("a") does not wait for the big one; record 3 goes
        // alone; then four of a quarter of the target would exceed it.
        assert_eq!(batches, [vec![2], vec![3], vec![4, 5, 6], vec![7]]);
        assert_eq!(node.commit_index(), 7);
    }

    /// The same rule for a `FetchReply` from memory: a new leader adopting
    /// this node's log gets a record larger than the target alone.
    #[test]
    fn a_fetch_reply_carries_a_record_larger_than_its_target_alone() {
        let mut config = crate::node::NodeConfig::single(1);
        config.cluster_size = 3;
        let mut node = Node::new(config);
        let big = vec![b'v'; FETCH_REPLY_TARGET_RECORDS_BYTES];
        let values: [&[u8]; 4] = [b"small", &big, b"small", b"small"];
        for (offset, value) in values.into_iter().enumerate() {
            node.replay(&log::Entry {
                epoch: 1,
                index: offset as u64 + 1,
                commit: 0,
                op: log::Op::Put { key: b"k", value },
            });
        }
        node.start(0);
        for peer in [2, 3] {
            node.peer_up(peer, SocketAddr::from(([127, 0, 0, 1], 7000)));
        }
        let coordinator = Message::Coordinator { commit_index: 0 };
        node.handle_message(from_peer(3, 2, coordinator), 10)
            .expect("a valid frame");
        assert_eq!(node.promised_epoch(), 2);
        let mut replies = Vec::new();
        for from_index in 1..=4 {
            let fetch = Message::Fetch { from_index };
            node.handle_message(from_peer(3, 2, fetch), 20)
                .expect("a valid frame");
            let messages = finish_turn(&mut node).messages;
            assert_frames_decode(&messages);
            for (to, envelope) in messages {
                if let Message::FetchReply { records, .. } = envelope.message {
                    assert_eq!(to, 3);
                    replies.push(indexes_of(&records));
                }
            }
        }
        assert_eq!(replies, [vec![1], vec![2], vec![3, 4], vec![4]]);
    }

    /// Raft §5.4.2 (figure 8): a majority holding a record of an older epoch
    /// does not commit it; only a record of the leader's own epoch commits,
    /// and the ones before it with it.
    #[test]
    fn replicas_of_an_older_epoch_record_do_not_commit_it() {
        let mut config = crate::node::NodeConfig::single(3);
        config.cluster_size = 3;
        let mut node = Node::new(config);
        for (index, commit) in [(1, 0), (2, 1)] {
            node.replay(&log::Entry {
                epoch: 1,
                index,
                commit,
                op: log::Op::Put {
                    key: b"k",
                    value: b"old epoch",
                },
            });
        }
        node.start(0);
        for peer in [1, 2] {
            node.peer_up(peer, SocketAddr::from(([127, 0, 0, 1], 7000)));
        }
        node.on_timer(TimerKind::Election, 1000);
        let promise = Message::Promise {
            last_epoch: 1,
            last_index: 2,
            commit_index: 1,
        };
        node.handle_message(from_peer(1, 2, promise), 1000)
            .expect("a valid frame");
        assert_eq!(node.leading_epoch(), Some(2));
        write_log(&mut node);
        assert_eq!(node.commit_index(), 1);
        // Node 1 holds record 2 (epoch 1): with the leader that is a
        // majority, yet record 2 must not commit on that count.
        node.handle_message(from_peer(1, 2, ack(2)), 1001)
            .expect("a valid frame");
        assert_eq!(node.commit_index(), 1);
        // Once the leader's Noop (index 3, epoch 2) is on a majority, both commit.
        node.handle_message(from_peer(1, 2, ack(3)), 1002)
            .expect("a valid frame");
        assert_eq!(node.commit_index(), 3);
    }

    #[test]
    fn a_read_round_goes_to_each_follower_once_until_a_heartbeat() {
        let mut node = leader_of_three();
        let mut queue = ReplyQueue::new();
        run(&mut node, &mut queue, b"GET k");
        node.end_turn();
        let first = sent(&mut node);
        assert_eq!(rounds_sent_to(&first, 1), [1]);
        assert_eq!(rounds_sent_to(&first, 2), [1]);
        // Node 1 answers first. Node 2's answer is on its way: sending it
        // the round again on every Ack would answer each Ack with Appends.
        let ack = Message::Ack {
            success: true,
            match_index: 1,
            round: 1,
        };
        node.handle_message(from_peer(1, 1, ack), 1002)
            .expect("a valid frame");
        node.end_turn();
        assert!(sent(&mut node).is_empty());
        assert_eq!(queue.sendable(node.released()), b"NOT_FOUND\n");
        // A lost round is carried again by the next heartbeat.
        node.on_timer(TimerKind::Heartbeat, 1050);
        assert_eq!(rounds_sent_to(&sent(&mut node), 2), [1]);
    }
}
