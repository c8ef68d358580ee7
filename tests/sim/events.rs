//! The events a node hands out (`Step::Event`, what the server logs) must
//! tell the truth about what it does, so that a failover read from the log
//! alone is the failover that happened. Checked at the end of every turn:
//!
//! - `LeadershipWon { epoch }`: the node leads `epoch` at the end of the
//!   turn (or logged stepping down from it after), and no other node ever
//!   logged winning `epoch`;
//! - `LeaderChanged { to, epoch }`: `to` is the node that logged winning
//!   `epoch`, never the node itself, and a node's epochs in these events
//!   never go back (within one incarnation);
//! - `SteppedDown { epoch }`: the node no longer leads `epoch`;
//! - the node's counters (`Node::stats`, all but the read rounds, which are
//!   not logged) equal the events it handed out in this incarnation.

use std::collections::BTreeMap;

use kvstore::node::{Event, Node, NodeId, NodeStats};

use super::checks::{Failure, ViolationKind, fail};

/// One node's events in its current incarnation.
#[derive(Debug, Default)]
pub struct EventLog {
    /// Handed out this turn, in order.
    turn: Vec<Event>,
    /// What the events so far add up to.
    tally: NodeStats,
    /// The epoch of the last `LeaderChanged`.
    last_leader_epoch: u64,
    /// Events were dropped (over the per-turn bound): counts may differ.
    dropped: bool,
}

impl EventLog {
    /// A new incarnation starts with nothing logged.
    pub fn restart(&mut self) {
        *self = EventLog::default();
    }

    pub fn record(&mut self, event: Event) {
        self.turn.push(event);
    }

    /// Checks the turn's events against the node `id` at the turn's end;
    /// `winners` holds who logged winning each epoch, cluster-wide.
    pub fn check_turn(
        &mut self,
        id: NodeId,
        core: &Node,
        winners: &mut BTreeMap<u64, NodeId>,
    ) -> Result<(), Failure> {
        let turn = std::mem::take(&mut self.turn);
        for (position, event) in turn.iter().enumerate() {
            self.count(event);
            let later = &turn[position + 1..];
            match *event {
                Event::LeadershipWon { epoch, .. } => {
                    check_won(id, epoch, core, later, winners)?;
                }
                Event::LeaderChanged { to, epoch, .. } => {
                    self.check_leader_changed(id, to, epoch, winners)?;
                }
                Event::SteppedDown { epoch, .. } if core.leading_epoch() == Some(epoch) => {
                    return fail(
                        ViolationKind::Protocol,
                        format!("node {id} logged stepping down from epoch {epoch} but leads it"),
                    );
                }
                Event::EventsDropped { .. } => self.dropped = true,
                _ => {}
            }
        }
        // Read rounds have no events; every other counter has one.
        let counted = NodeStats {
            read_rounds_started: 0,
            read_rounds_confirmed: 0,
            ..*core.stats()
        };
        if !self.dropped && self.tally != counted {
            return fail(
                ViolationKind::Protocol,
                format!(
                    "node {id} counts {counted:?} but its events add up to {:?}",
                    self.tally
                ),
            );
        }
        Ok(())
    }

    fn count(&mut self, event: &Event) {
        let tally = &mut self.tally;
        match event {
            Event::ElectionStarted { .. } => tally.elections_started += 1,
            Event::LeadershipWon { .. } => tally.elections_won += 1,
            Event::LeaderChanged { .. } => tally.leader_changes += 1,
            Event::SteppedDown { .. } => tally.stepped_down += 1,
            Event::SnapshotTaken { .. } => tally.snapshots_taken += 1,
            Event::SnapshotInstalled { .. } => tally.snapshots_installed += 1,
            _ => {}
        }
    }

    fn check_leader_changed(
        &mut self,
        id: NodeId,
        to: NodeId,
        epoch: u64,
        winners: &BTreeMap<u64, NodeId>,
    ) -> Result<(), Failure> {
        if epoch < self.last_leader_epoch || to == id {
            return fail(
                ViolationKind::Protocol,
                format!(
                    "node {id} logged following node {to} in epoch {epoch} after epoch {}",
                    self.last_leader_epoch
                ),
            );
        }
        self.last_leader_epoch = epoch;
        if winners.get(&epoch) != Some(&to) {
            return fail(
                ViolationKind::Protocol,
                format!(
                    "node {id} logged following node {to} in epoch {epoch}, which {} logged \
                     winning",
                    winners
                        .get(&epoch)
                        .map_or("no node".to_string(), |winner| format!("node {winner}"))
                ),
            );
        }
        Ok(())
    }
}

/// `id` logged winning `epoch`: it leads it now (unless it logged stepping
/// down from it later in the turn), and nobody else won it.
fn check_won(
    id: NodeId,
    epoch: u64,
    core: &Node,
    later: &[Event],
    winners: &mut BTreeMap<u64, NodeId>,
) -> Result<(), Failure> {
    if let Some(&other) = winners.get(&epoch)
        && other != id
    {
        return fail(
            ViolationKind::TwoLeadersInOneEpoch,
            format!("nodes {other} and {id} both logged winning epoch {epoch}"),
        );
    }
    winners.insert(epoch, id);
    let stepped_down = later
        .iter()
        .any(|event| matches!(event, Event::SteppedDown { epoch: left, .. } if *left == epoch));
    if core.leading_epoch() != Some(epoch) && !stepped_down {
        return fail(
            ViolationKind::Protocol,
            format!(
                "node {id} logged winning epoch {epoch} but leads {:?}",
                core.leading_epoch()
            ),
        );
    }
    Ok(())
}
