//! Choosing a leader: the Bully algorithm, made safe.
//!
//! Bully decides *who* leads: the live node with the highest id. A node that
//! finds no leader sends `Election` to the higher ids; a live higher node
//! answers `Alive` and runs its own election; a node that hears no `Alive`
//! in time declares itself with `Coordinator`.
//!
//! What makes the change of leader safe (see `docs/CLUSTER.md`):
//! - `Coordinator` asks for a *promise* of a new epoch, larger than any the
//!   candidate has seen. A node promises an epoch at most once, persists the
//!   promise before answering, and from then on refuses anything older. So
//!   two leaders can never share an epoch.
//! - The candidate leads only with promises from a majority (itself
//!   included), so every later majority overlaps it.
//! - Each promise carries the promiser's log position. Before serving, the
//!   new leader adopts the most up-to-date log among its promisers (Viewstamped
//!   Replication's view change): that log holds every committed record.
//! - A follower that hears from a live leader refuses a candidate of lower
//!   id (stickiness); a higher node that is refused by nobody bullies its way
//!   in, but only once its log has caught up with the leader's commit index.

use super::events::{ElectionReason, Event, StepDownReason};
use super::message::{Message, NodeId};
use super::replication::Progress;
use super::{LogPosition, Node, Role, TimerKind};
use crate::log::{MAX_EPOCH, Op};
use std::collections::BTreeMap;

impl Node {
    /// Arms the election timer for the current role, with jitter.
    pub(super) fn arm_election_timer(&mut self, now_ms: u64) {
        let timeout_ms = self.config.election_timeout_ms;
        let deadline_ms = match self.role {
            Role::Follower { .. } => {
                let jitter_ms = self.random_below(timeout_ms / 2 + 1);
                self.last_heard_ms.max(now_ms.saturating_sub(timeout_ms)) + timeout_ms + jitter_ms
            }
            // Waiting for Alive: a live node answers within a round trip.
            Role::Electing { alive_heard: false } => now_ms + timeout_ms / 2,
            _ => now_ms + timeout_ms + self.random_below(timeout_ms / 2 + 1),
        };
        self.arm(TimerKind::Election, deadline_ms);
    }

    /// The election timer fired: the current phase is over.
    pub(super) fn on_election_timer(&mut self, now_ms: u64) {
        let reason = match self.role {
            Role::Follower { leader } => {
                if now_ms < self.last_heard_ms + self.config.election_timeout_ms {
                    return self.arm_election_timer(now_ms);
                }
                let silent_ms = now_ms.saturating_sub(self.last_heard_ms);
                match leader {
                    Some(leader) => ElectionReason::LeaderSilent { leader, silent_ms },
                    None if self.last_known_leader.is_none() && self.election_attempt == 0 => {
                        ElectionReason::StartUp
                    }
                    None => ElectionReason::NoLeader { silent_ms },
                }
            }
            Role::Electing { alive_heard: false } => return self.become_candidate(now_ms),
            // A higher node said it would see to it and did not, or the
            // candidacy or the adoption stalled: start over.
            Role::Electing { alive_heard: true } => ElectionReason::HigherNodeSilent,
            Role::Candidate { epoch, .. } => ElectionReason::NoMajority { epoch },
            Role::Adopting { epoch, source, .. } => {
                ElectionReason::AdoptionStalled { epoch, source }
            }
            Role::Leader { .. } => return,
        };
        self.start_election(now_ms, reason);
    }

    /// Records that an election starts, and why (once per election).
    pub(super) fn note_election(&mut self, reason: ElectionReason) {
        self.election_attempt += 1;
        self.emit(Event::ElectionStarted {
            reason,
            attempt: self.election_attempt,
            promised_epoch: self.promised_epoch,
        });
    }

    /// Bully: ask the higher live nodes; with none, declare at once.
    ///
    /// The leader whose silence this node has timed out on is not asked:
    /// a stopped or partitioned process keeps its connections open, and
    /// waiting for its `Alive` added half an election timeout to every
    /// failover (150 ms of a 500 ms one at default flags). If it was only
    /// slow, it is still the highest live id and takes over again (see
    /// `maybe_take_over`); safety never rested on this round (epochs and
    /// majorities do).
    pub(super) fn start_election(&mut self, now_ms: u64, reason: ElectionReason) {
        self.note_election(reason);
        let own_id = self.config.id;
        let silent_leader = self
            .last_known_leader
            .filter(|_| now_ms >= self.last_heard_ms + self.config.election_timeout_ms);
        let higher: Vec<NodeId> = self
            .peers
            .iter()
            .filter(|(id, peer)| **id > own_id && peer.up && Some(**id) != silent_leader)
            .map(|(id, _)| *id)
            .collect();
        if higher.is_empty() {
            return self.become_candidate(now_ms);
        }
        for id in higher {
            self.send(id, Message::Election);
        }
        self.role = Role::Electing { alive_heard: false };
        self.arm_election_timer(now_ms);
    }

    pub(super) fn become_candidate(&mut self, now_ms: u64) {
        // A leader that runs again (to bully a lower candidate) leaves its
        // epoch first (see `bully`).
        debug_assert!(
            !self.is_serving_leader(),
            "a leader steps down to run again"
        );
        // Frames at or beyond MAX_EPOCH are refused, so this cannot fail
        // short of 2^62 elections; if it ever did, standing would need an
        // epoch out of range (or a wrapped, smaller one): stay a follower.
        let newest = self.promised_epoch.max(self.seen_epoch);
        let Some(epoch) = newest.checked_add(1).filter(|epoch| *epoch <= MAX_EPOCH) else {
            self.role = Role::Follower { leader: None };
            return self.arm_election_timer(now_ms);
        };
        self.promise(epoch);
        let mut promises = BTreeMap::new();
        promises.insert(self.config.id, self.log_position());
        self.role = Role::Candidate { epoch, promises };
        let commit_index = self.commit_index;
        let peers: Vec<NodeId> = self.peers.keys().copied().collect();
        for id in peers {
            self.send(id, Message::Coordinator { commit_index });
        }
        self.arm_election_timer(now_ms);
        self.count_promises(now_ms);
    }

    pub(super) fn log_position(&self) -> LogPosition {
        LogPosition {
            last_epoch: self.log.last_epoch(),
            last_index: self.log.last_index(),
        }
    }

    /// The leader this node heard from within the election timeout.
    pub(super) fn live_leader(&self, now_ms: u64) -> Option<NodeId> {
        match self.role {
            Role::Leader { .. } => Some(self.config.id),
            Role::Follower {
                leader: Some(leader),
            } if now_ms < self.last_heard_ms + self.config.election_timeout_ms => Some(leader),
            _ => None,
        }
    }

    pub(super) fn on_election(&mut self, from: NodeId, now_ms: u64) {
        if from > self.config.id {
            return;
        }
        let leader = self.live_leader(now_ms);
        self.send(from, Message::Alive { leader });
        match self.role {
            Role::Leader { .. } => self.send_heartbeat_to(from),
            Role::Follower { .. } if leader.is_none() => {
                self.start_election(now_ms, ElectionReason::LowerNodeAsked { from });
            }
            _ => {}
        }
    }

    pub(super) fn on_alive(&mut self, from: NodeId, now_ms: u64) {
        if from > self.config.id && matches!(self.role, Role::Electing { .. }) {
            self.role = Role::Electing { alive_heard: true };
            self.arm_election_timer(now_ms);
        }
    }

    /// A candidate asks for a promise of `epoch`.
    pub(super) fn on_coordinator(&mut self, from: NodeId, epoch: u64, now_ms: u64) {
        if let Some(reason) = self.refusal(from, epoch, now_ms) {
            let leader = self.live_leader(now_ms);
            self.send(from, Message::Reject { leader });
            if reason == Refusal::Bully {
                self.bully(from, epoch, now_ms);
            }
            return;
        }
        if self.is_serving_leader() || !matches!(self.role, Role::Follower { .. }) {
            let reason = StepDownReason::PromisedCandidate {
                candidate: from,
                epoch,
            };
            self.step_down(now_ms, reason);
        }
        self.promise(epoch);
        self.role = Role::Follower { leader: None };
        // Give the candidate a full timeout to finish.
        self.last_heard_ms = now_ms;
        self.arm_election_timer(now_ms);
        let position = self.log_position();
        let commit_index = self.commit_index;
        self.send(
            from,
            Message::Promise {
                last_epoch: position.last_epoch,
                last_index: position.last_index,
                commit_index,
            },
        );
    }

    fn refusal(&self, candidate: NodeId, epoch: u64, now_ms: u64) -> Option<Refusal> {
        if epoch <= self.promised_epoch {
            return Some(Refusal::Stale);
        }
        match self.live_leader(now_ms) {
            // A live leader of higher id than the candidate stays.
            Some(leader) if leader > candidate && leader != self.config.id => {
                return Some(Refusal::Sticky);
            }
            // This node leads and outranks the candidate: it reasserts.
            Some(leader) if leader == self.config.id && self.config.id > candidate => {
                return Some(Refusal::Bully);
            }
            Some(_) => return None,
            None => {}
        }
        (self.config.id > candidate).then_some(Refusal::Bully)
    }

    /// A lower node tried to lead: take over, as Bully does.
    fn bully(&mut self, candidate: NodeId, epoch: u64, now_ms: u64) {
        self.seen_epoch = self.seen_epoch.max(epoch);
        let reason = ElectionReason::LowerCandidate { candidate };
        match self.role {
            Role::Candidate { .. } | Role::Adopting { .. } | Role::Electing { .. } => {}
            Role::Leader { .. } => {
                // The new epoch may adopt another log, so its uncommitted
                // writes are taken back and its held replies voided.
                self.step_down(now_ms, StepDownReason::RunAgain { candidate });
                self.note_election(reason);
                self.become_candidate(now_ms);
            }
            Role::Follower { .. } => self.start_election(now_ms, reason),
        }
    }

    pub(super) fn on_promise(
        &mut self,
        from: NodeId,
        epoch: u64,
        position: LogPosition,
        now_ms: u64,
    ) {
        if let Role::Candidate {
            epoch: candidate_epoch,
            promises,
        } = &mut self.role
            && *candidate_epoch == epoch
        {
            promises.insert(from, position);
            self.count_promises(now_ms);
        }
    }

    pub(super) fn on_reject(&mut self, from: NodeId, epoch: u64, now_ms: u64) {
        self.seen_epoch = self.seen_epoch.max(epoch);
        match self.role {
            Role::Leader { epoch: leading, .. } if epoch > leading => {
                self.step_down(now_ms, StepDownReason::NewerEpoch { from, epoch });
            }
            // A higher node will take over: wait for it.
            Role::Candidate { .. } if from > self.config.id => {
                self.role = Role::Electing { alive_heard: true };
                self.arm_election_timer(now_ms);
            }
            _ => {}
        }
    }

    /// With a majority of promises, adopt the best log, then lead.
    fn count_promises(&mut self, now_ms: u64) {
        let Role::Candidate { epoch, promises } = &self.role else {
            return;
        };
        if promises.len() < self.config.majority() {
            return;
        }
        let epoch = *epoch;
        let own = self.log_position();
        // Ties go to this node: adopting an equal log is pointless.
        let (best_id, best) = promises
            .iter()
            .map(|(id, position)| (*id, *position))
            .max_by_key(|(id, position)| (*position, *id == self.config.id))
            .unwrap_or((self.config.id, own));
        if best_id == self.config.id || best == own || self.config.unsafe_skip_log_adoption {
            return self.become_leader(epoch, now_ms, Adoption::default());
        }
        self.role = Role::Adopting {
            epoch,
            source: best_id,
            source_last_index: best.last_index,
            records_adopted: 0,
            records_cut: 0,
        };
        self.send(
            best_id,
            Message::Fetch {
                from_index: self.commit_index + 1,
            },
        );
        self.arm_election_timer(now_ms);
    }

    /// A promiser answers the new leader's fetch with its records.
    pub(super) fn on_fetch(&mut self, from: NodeId, epoch: u64, from_index: u64) {
        if epoch != self.promised_epoch || self.is_serving_leader() {
            return;
        }
        if from_index < self.log.first_index() && from_index <= self.snapshots.compacted_through {
            // Nor does the disk: the new leader gets the snapshot first.
            return self.send_snapshot_to(from);
        }
        if from_index < self.log.first_index() {
            // Memory no longer holds them: read them back first.
            let purpose = super::ReadPurpose::Fetch {
                to: from,
                from_index,
            };
            self.outbox.log_reads.push_back(super::LogRead {
                from_index,
                max_bytes: super::LOG_READ_BYTES,
                purpose,
            });
            return;
        }
        let records = self
            .log
            .records_from(from_index, super::message::FETCH_REPLY_TARGET_RECORDS_BYTES)
            .map(|(bytes, _)| bytes.to_vec())
            .unwrap_or_default();
        self.send(
            from,
            Message::FetchReply {
                from_index,
                records,
            },
        );
    }

    pub(super) fn on_fetch_reply(
        &mut self,
        from: NodeId,
        epoch: u64,
        from_index: u64,
        records: &[u8],
        now_ms: u64,
    ) {
        let Role::Adopting {
            epoch: adopting,
            source,
            source_last_index,
            ..
        } = self.role
        else {
            return;
        };
        if adopting != epoch || source != from {
            return;
        }
        let failed = ElectionReason::AdoptionFailed { epoch, source };
        let merged = (from_index <= self.log.last_index() + 1)
            .then(|| self.merge_records(from_index, records));
        let Some(Ok(merged)) = merged else {
            return self.start_election(now_ms, failed);
        };
        if let Role::Adopting {
            records_adopted,
            records_cut,
            ..
        } = &mut self.role
        {
            *records_adopted += merged.appended;
            *records_cut += merged.cut;
        }
        if merged.through < source_last_index {
            if records.is_empty() {
                return self.start_election(now_ms, failed);
            }
            // Continue right after what was received: this node's own
            // records beyond it have not been compared yet and may differ.
            let from_index = merged.through + 1;
            self.send(source, Message::Fetch { from_index });
            return;
        }
        // Anything past the best log is in no majority: not committed.
        let past_best = self.log.last_index().saturating_sub(source_last_index);
        self.log.truncate_after(source_last_index);
        let Role::Adopting {
            records_adopted,
            records_cut,
            ..
        } = self.role
        else {
            unreachable!("adopting, checked above");
        };
        let adoption = Adoption {
            source: Some(source),
            records_adopted,
            records_cut: records_cut + past_best,
        };
        self.become_leader(epoch, now_ms, adoption);
    }

    fn become_leader(&mut self, epoch: u64, now_ms: u64, adoption: Adoption) {
        // The adopted records become this leader's own: apply them, undoably.
        while self.applied_index < self.log.last_index() {
            let index = self.applied_index + 1;
            let record = self.log.record(index).map(<[u8]>::to_vec);
            let Some(Ok((entry, _))) = record.as_deref().map(crate::log::decode) else {
                unreachable!("record {index} is in memory and was checked on arrival");
            };
            self.apply_speculatively(index, &entry.op);
        }
        let next_index = self.log.last_index() + 1;
        let followers = self
            .peers
            .keys()
            .map(|id| (*id, Progress::new(next_index)))
            .collect();
        self.role = Role::Leader {
            epoch,
            followers,
            since_ms: now_ms,
        };
        // Any record before this may be a DEL a missing key's read observes.
        self.last_delete_index = self.log.last_index();
        self.emit(Event::LeadershipWon {
            epoch,
            adopted_from: adoption.source,
            records_adopted: adoption.records_adopted,
            records_cut: adoption.records_cut,
            last_index: self.log.last_index(),
            commit_index: self.commit_index,
        });
        self.election_attempt = 0;
        self.last_known_leader = Some(self.config.id);
        // Records of older epochs commit only through one of this epoch.
        self.append_as_leader(Op::Noop);
        self.broadcast_append();
        self.arm(TimerKind::Heartbeat, now_ms + self.config.heartbeat_ms);
        self.update_commit();
    }

    /// Leaves leadership or candidacy: takes back uncommitted writes, and
    /// tells the driver its held replies are void (and a leader why).
    pub(super) fn step_down(&mut self, now_ms: u64, reason: StepDownReason) {
        if let Some(epoch) = self.leading_epoch() {
            self.emit(Event::SteppedDown { epoch, reason });
            self.undo_uncommitted();
            self.leadership_losses += 1;
            self.round_wanted = false;
            // Its followers' snapshots stop with its leadership.
            self.outgoing.clear();
        }
        self.role = Role::Follower { leader: None };
        self.last_heard_ms = now_ms;
        self.arm_election_timer(now_ms);
    }
}

/// Where a new leader's log came from, for the log line.
#[derive(Debug, Default, Clone, Copy)]
struct Adoption {
    /// The promiser whose log was adopted; `None`: its own.
    source: Option<NodeId>,
    records_adopted: u64,
    records_cut: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// The epoch is not newer than one already promised.
    Stale,
    /// A live leader of higher id than the candidate is followed.
    Sticky,
    /// This node outranks the candidate and takes over instead.
    Bully,
}

#[cfg(test)]
mod tests {
    use super::super::tests::{finish_turn, from_peer, leader_of_three, run, sent, write_log};
    use super::*;
    use crate::log::BatchBuilder;
    use crate::node::{Envelope, ReplyQueue};

    /// The store's pairs with the index of the write that set each.
    fn pairs_of(node: &Node) -> Vec<(Vec<u8>, Vec<u8>, u64)> {
        let mut pairs: Vec<_> = node
            .store()
            .iter()
            .map(|(key, value)| {
                let index = node.store().lookup(key).map(|pair| pair.write_index());
                (key.to_vec(), value.to_vec(), index.expect("a stored key"))
            })
            .collect();
        pairs.sort();
        pairs
    }

    /// Both followers acknowledge everything through `index`.
    fn acknowledge_through(node: &mut Node, index: u64) {
        write_log(node);
        for peer in [1, 2] {
            let ack = Message::Ack {
                success: true,
                match_index: index,
                round: 0,
            };
            node.handle_message(from_peer(peer, 1, ack), 1000)
                .expect("a valid frame");
        }
        assert_eq!(node.commit_index(), index);
        finish_turn(node);
    }

    /// What a store held: its pairs and its accounted bytes.
    type Image = (Vec<(Vec<u8>, Vec<u8>, u64)>, usize);

    /// A leader of three holding `a` = old and `gone` = x, committed, then
    /// a batch of its own that writes `a` twice, deletes `gone` and adds
    /// `b`, applied ahead of commit. Returns the leader, the batch's index
    /// and the store as it was before the batch.
    fn leader_with_a_batch() -> (Node, u64, Image) {
        let mut node = leader_of_three();
        let mut queue = ReplyQueue::new();
        run(&mut node, &mut queue, b"PUT a old");
        run(&mut node, &mut queue, b"PUT gone x");
        acknowledge_through(&mut node, 3);
        let before = (pairs_of(&node), node.store().used_bytes());
        let mut batch = BatchBuilder::new();
        batch.push_put(b"a", b"1");
        batch.push_del(b"gone");
        batch.push_put(b"b", b"2");
        batch.push_put(b"a", b"3");
        let index = node.append_as_leader(batch.op());
        assert_eq!(index, 4);
        assert_eq!(node.last_delete_index, index, "a read of gone saw it");
        let undo: Vec<_> = node.undo.iter().map(|undo| undo.index).collect();
        assert_eq!(undo, [index; 4], "one undo per operation");
        let expected = vec![
            (b"a".to_vec(), b"3".to_vec(), index),
            (b"b".to_vec(), b"2".to_vec(), index),
        ];
        assert_eq!(pairs_of(&node), expected);
        (node, index, before)
    }

    /// Node 2 of three, following node 3 (epoch 1) as of `heard_ms`, with
    /// both peers' connections up and its outbox empty.
    fn middle_follower(heard_ms: u64) -> Node {
        let mut config = crate::node::NodeConfig::single(2);
        config.cluster_size = 3;
        let mut node = Node::new(config);
        node.start(0);
        for peer in [1, 3] {
            let address = std::net::SocketAddr::from(([127, 0, 0, 1], 7000 + peer as u16));
            node.peer_up(peer, address);
        }
        let heartbeat = Message::Append {
            prev_index: 0,
            prev_epoch: 0,
            commit_index: 0,
            round: 0,
            records: Vec::new(),
        };
        node.handle_message(from_peer(3, 1, heartbeat), heard_ms)
            .expect("a valid frame");
        assert!(matches!(node.role, Role::Follower { leader: Some(3) }));
        sent(&mut node);
        node
    }

    #[test]
    fn a_silent_leader_is_not_asked_whether_it_is_alive() {
        // Its connection is still up (a stopped process closes nothing):
        // waiting for its Alive cost half a timeout per failover.
        let mut node = middle_follower(1000);
        let timeout_ms = node.config.election_timeout_ms;
        node.on_timer(TimerKind::Election, 1000 + 2 * timeout_ms);
        assert!(matches!(node.role, Role::Candidate { epoch: 2, .. }));
        let to: Vec<_> = sent(&mut node)
            .into_iter()
            .map(|(to, envelope)| (to, envelope.message))
            .collect();
        assert!(to.contains(&(3, Message::Coordinator { commit_index: 0 })));
        assert!(!to.contains(&(3, Message::Election)), "{to:?}");
    }

    #[test]
    fn a_lower_nodes_election_asks_a_higher_node_not_known_silent() {
        // Node 1 asks before node 2 has timed out on node 3: node 2 still
        // hears a live leader, says so, and starts nothing.
        let mut node = middle_follower(1000);
        node.handle_message(from_peer(1, 1, Message::Election), 1100)
            .expect("a valid frame");
        assert_eq!(
            sent(&mut node)
                .into_iter()
                .map(|(to, envelope)| (to, envelope.message))
                .collect::<Vec<_>>(),
            [(1, Message::Alive { leader: Some(3) })]
        );
        // Once node 3 has been silent a whole timeout, node 1's question
        // makes node 2 run at once, without asking node 3.
        let late_ms = 1000 + node.config.election_timeout_ms;
        node.handle_message(from_peer(1, 1, Message::Election), late_ms)
            .expect("a valid frame");
        assert!(matches!(node.role, Role::Candidate { .. }));
        assert!(
            !sent(&mut node)
                .iter()
                .any(|(to, envelope)| *to == 3 && envelope.message == Message::Election)
        );
    }

    /// Deposes the leader: a Coordinator of a lower id makes it run again.
    fn depose(node: &mut Node) {
        let coordinator = Message::Coordinator { commit_index: 0 };
        node.handle_message(from_peer(2, 2, coordinator), 1100)
            .expect("a valid frame");
        assert_eq!(node.leading_epoch(), None);
        assert_eq!(node.leadership_losses(), 1);
    }

    #[test]
    fn a_deposed_leader_takes_back_an_uncommitted_batch_whole() {
        let (mut node, _, before) = leader_with_a_batch();
        depose(&mut node);
        // Taken back from its last operation: the key the batch wrote twice
        // holds its value from before the batch, with that write's index.
        assert_eq!((pairs_of(&node), node.store().used_bytes()), before);
        assert!(node.undo.is_empty());
        assert_eq!(node.applied_index, 3);
    }

    #[test]
    fn a_committed_batch_survives_its_leaders_deposition() {
        let (mut node, index, _) = leader_with_a_batch();
        acknowledge_through(&mut node, index);
        assert!(node.undo.is_empty(), "a committed batch needs no undo");
        let after = pairs_of(&node);
        depose(&mut node);
        assert_eq!(pairs_of(&node), after);
    }

    #[test]
    fn a_leader_that_bullies_a_lower_candidate_leaves_its_epoch_first() {
        let mut node = leader_of_three();
        let mut queue = ReplyQueue::new();
        run(&mut node, &mut queue, b"PUT k v");
        assert_eq!(node.store().get(b"k"), Some(&b"v"[..]));
        let coordinator = Message::Coordinator { commit_index: 0 };
        node.handle_message(from_peer(2, 2, coordinator), 1100)
            .expect("a valid frame");
        // It runs for a new epoch, which may adopt another log: the PUT is
        // not committed, so it is taken back and its held OK is void.
        assert!(matches!(node.role, Role::Candidate { epoch: 3, .. }));
        assert_eq!(node.leading_epoch(), None);
        assert_eq!(node.leadership_losses(), 1);
        assert_eq!(node.store().get(b"k"), None);
    }

    /// Node 3 of three, leading epoch 2 with the log it adopted from node
    /// 2 (one Noop of epoch 1); returns it and what its turns logged.
    fn leader_by_adoption() -> (Node, Vec<Event>) {
        let mut config = crate::node::NodeConfig::single(3);
        config.cluster_size = 3;
        let mut node = Node::new(config);
        node.restore_promised_epoch(1);
        node.start(0);
        for peer in [1, 2] {
            let address = std::net::SocketAddr::from(([127, 0, 0, 1], 7000 + peer as u16));
            node.peer_up(peer, address);
        }
        node.on_timer(TimerKind::Election, 1000);
        let promise = Message::Promise {
            last_epoch: 1,
            last_index: 1,
            commit_index: 0,
        };
        node.handle_message(from_peer(2, 2, promise), 1000)
            .expect("a valid frame");
        let mut events = finish_turn(&mut node).events;
        let mut records = Vec::new();
        crate::log::encode(
            &crate::log::Entry {
                epoch: 1,
                index: 1,
                commit: 0,
                op: Op::Noop,
            },
            &mut records,
        );
        let reply = Message::FetchReply {
            from_index: 1,
            records,
        };
        node.handle_message(from_peer(2, 2, reply), 1010)
            .expect("a valid frame");
        events.extend(finish_turn(&mut node).events);
        assert_eq!(node.leading_epoch(), Some(2));
        (node, events)
    }

    #[test]
    fn an_election_and_its_adoption_are_logged_once_each() {
        let (node, events) = leader_by_adoption();
        let expected = [
            Event::ElectionStarted {
                reason: ElectionReason::StartUp,
                attempt: 1,
                promised_epoch: 1,
            },
            Event::LeadershipWon {
                epoch: 2,
                adopted_from: Some(2),
                records_adopted: 1,
                records_cut: 0,
                last_index: 1,
                commit_index: 0,
            },
        ];
        assert_eq!(events, expected);
        assert_eq!(node.stats().elections_started, 1);
        assert_eq!(node.stats().elections_won, 1);
    }

    /// A chunk of node 2's snapshot, in epoch 2.
    fn late_chunk() -> Envelope {
        let chunk = Message::InstallSnapshot {
            index: 1,
            epoch: 1,
            total_bytes: 100,
            offset: 0,
            bytes: vec![0; 10],
        };
        from_peer(2, 2, chunk)
    }

    /// Found by the simulator's event checks (seed 766): a chunk of the
    /// snapshot the promiser sent for the adoption arrived after the
    /// candidate took office, and the leader followed the promiser, which
    /// does not lead (it promised that epoch away), stepping down for it.
    #[test]
    fn a_late_chunk_from_the_adopted_promiser_does_not_depose_the_leader() {
        let (mut node, _) = leader_by_adoption();
        node.handle_message(late_chunk(), 1020)
            .expect("a valid frame");
        assert_eq!(node.leading_epoch(), Some(2));
        assert_eq!(finish_turn(&mut node).events, []);
        assert_eq!(node.stats().stepped_down, 0);
    }

    /// Seed 5986: the new leader crashed and restarted, promised epoch 2
    /// but remembering nothing of its adoption, and followed the promiser,
    /// whose transfer resumed when the link came back.
    #[test]
    fn a_chunk_in_the_promised_epoch_from_a_node_not_followed_is_dropped() {
        let mut config = crate::node::NodeConfig::single(3);
        config.cluster_size = 3;
        let mut node = Node::new(config);
        node.restore_promised_epoch(2);
        node.start(0);
        node.peer_up(2, std::net::SocketAddr::from(([127, 0, 0, 1], 7002)));
        node.handle_message(late_chunk(), 10)
            .expect("a valid frame");
        assert_eq!(node.known_leader(), None);
        let turn = finish_turn(&mut node);
        assert_eq!(turn.events, []);
        assert!(turn.messages.is_empty(), "answered {:?}", turn.messages);
        // Once node 2 shows it leads (an Append of a newer epoch), its
        // chunks are taken.
        let heartbeat = Message::Append {
            prev_index: 0,
            prev_epoch: 0,
            commit_index: 0,
            round: 0,
            records: Vec::new(),
        };
        node.handle_message(from_peer(2, 3, heartbeat), 20)
            .expect("a valid frame");
        assert_eq!(node.known_leader(), Some(2));
        let chunk = Envelope {
            epoch: 3,
            ..late_chunk()
        };
        node.handle_message(chunk, 30).expect("a valid frame");
        let answered = finish_turn(&mut node)
            .messages
            .iter()
            .any(|(to, envelope)| {
                *to == 2 && matches!(envelope.message, Message::SnapshotAck { .. })
            });
        assert!(answered, "the chunk was taken and answered");
    }
}
