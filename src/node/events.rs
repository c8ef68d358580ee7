//! What the core decided that an operator should be able to read: elections
//! and why they started, leadership won and lost, a new leader seen by a
//! follower, snapshots taken and installed. And the counters behind them.
//!
//! The core performs no I/O and reads no clock, so it does not log: it
//! records an [`Event`] where it decides, and hands it to its driver as
//! [`Step::Event`](super::Step::Event) at the start of the turn's steps
//! (`turn.rs`). The reactor writes it as one log line (`Display` for the
//! text, [`Event::fields`] for JSON); the simulator checks that the events
//! agree with what the node does. Each decision is recorded once, where it
//! is made; an event carries only what the core knows (the driver adds the
//! time and the node id). At most [`MAX_EVENTS_PER_TURN`] wait for a turn;
//! beyond that they are counted and reported as one
//! [`Event::EventsDropped`].
//!
//! [`NodeStats`] counts the same decisions (and the read rounds, which are
//! too frequent to log) for metrics.

use std::fmt;

use super::message::NodeId;
use crate::logger::{Field, Level, Value};

/// Events waiting for a driver, at most; more in one turn are counted.
pub const MAX_EVENTS_PER_TURN: usize = 256;

/// One decision of the core, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// This node began looking for a leader (Bully: asking the higher ids,
    /// or standing itself when none is up). `attempt` counts the elections
    /// since this node last had a leader (1: the first).
    ElectionStarted {
        reason: ElectionReason,
        attempt: u64,
        /// The epoch promised when it began (a candidacy takes a larger one).
        promised_epoch: u64,
    },
    /// This node leads `epoch`: a majority promised it, and it holds the
    /// most up-to-date log among them (its own, or one it adopted).
    LeadershipWon {
        epoch: u64,
        /// The promiser whose log was adopted; `None`: its own was the best.
        adopted_from: Option<NodeId>,
        /// Records fetched from that promiser and appended.
        records_adopted: u64,
        /// Records of its own log cut because they diverged or went past
        /// the adopted log's end (never committed ones).
        records_cut: u64,
        /// Where its log ended on taking office, before its first record.
        last_index: u64,
        commit_index: u64,
    },
    /// A follower follows a new leader (or the same node in a new epoch).
    LeaderChanged {
        /// The leader it knew last (itself, if it led); `None` since start.
        from: Option<NodeId>,
        to: NodeId,
        epoch: u64,
    },
    /// This node stopped leading `epoch`; the replies it held are void.
    SteppedDown { epoch: u64, reason: StepDownReason },
    /// A follower cut uncommitted records that differ from its leader's log
    /// (written under an earlier leader; never committed).
    RecordsCut {
        leader: NodeId,
        after_index: u64,
        records: u64,
    },
    /// A snapshot of this node's store is durable.
    SnapshotTaken {
        index: u64,
        epoch: u64,
        pairs: u64,
        file_bytes: u64,
        /// How long the driver took to write it (the core has no clock).
        elapsed_ms: u64,
    },
    /// A snapshot another node sent is durable and is now this node's.
    SnapshotInstalled {
        index: u64,
        epoch: u64,
        from: NodeId,
        pairs: u64,
        file_bytes: u64,
        elapsed_ms: u64,
        /// Whether it replaced the store and log; `false` when the log had
        /// reached its index meanwhile (the file is kept all the same).
        replaced_store: bool,
    },
    /// A snapshot being made or received was dropped; its file removed.
    SnapshotAbandoned { index: u64, reason: String },
    /// The driver's read of the log did not hold the record the core asked
    /// for (a bug, or a file changed under the server).
    LogReadMissing { from_index: u64, wanted_index: u64 },
    /// This many events of the turn were not kept.
    EventsDropped { count: u64 },
}

/// Why an election started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElectionReason {
    /// No leader has been heard since this process started.
    StartUp,
    /// The connection to the leader closed (a crashed process closes its
    /// sockets): no need to wait for a timeout.
    LeaderLost { leader: NodeId },
    /// The leader sent nothing for an election timeout.
    LeaderSilent { leader: NodeId, silent_ms: u64 },
    /// No leader appeared for an election timeout (after a promise, or
    /// after stepping down).
    NoLeader { silent_ms: u64 },
    /// A higher node answered `Alive` but no leader took office in time.
    HigherNodeSilent,
    /// The candidacy for `epoch` did not get a majority's promises in time.
    NoMajority { epoch: u64 },
    /// Fetching the log to adopt for `epoch` from `source` stalled.
    AdoptionStalled { epoch: u64, source: NodeId },
    /// The log `source` sent for adoption did not fit this node's.
    AdoptionFailed { epoch: u64, source: NodeId },
    /// A lower node asked (`Election`) and no live leader is known.
    LowerNodeAsked { from: NodeId },
    /// A lower node asked for promises; the highest live id leads (Bully).
    LowerCandidate { candidate: NodeId },
    /// This follower caught up with a leader of lower id (Bully).
    TakeOver { leader: NodeId },
}

/// Why a leader stepped down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepDownReason {
    /// A message of a newer epoch: another leader may exist.
    NewerEpoch { from: NodeId, epoch: u64 },
    /// Fewer than a majority (itself included) heard within the timeout.
    NoMajority {
        heard_from: usize,
        majority: usize,
        within_ms: u64,
    },
    /// It promised a higher node's candidacy (Bully).
    PromisedCandidate { candidate: NodeId, epoch: u64 },
    /// It runs for a new epoch to outrank a lower node that tried to lead.
    RunAgain { candidate: NodeId },
}

/// Counts of the core's decisions since start, for metrics; names are part
/// of the interface (they become metric names).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct NodeStats {
    pub elections_started: u64,
    pub elections_won: u64,
    /// Leaders a follower started following.
    pub leader_changes: u64,
    pub stepped_down: u64,
    pub snapshots_taken: u64,
    pub snapshots_installed: u64,
    /// ReadIndex rounds a leader sent.
    pub read_rounds_started: u64,
    /// Rounds a majority echoed (a later round confirms the earlier ones).
    pub read_rounds_confirmed: u64,
}

impl NodeStats {
    /// Counts `event` (called where each event is recorded).
    pub(super) fn count(&mut self, event: &Event) {
        let counter = match event {
            Event::ElectionStarted { .. } => &mut self.elections_started,
            Event::LeadershipWon { .. } => &mut self.elections_won,
            Event::LeaderChanged { .. } => &mut self.leader_changes,
            Event::SteppedDown { .. } => &mut self.stepped_down,
            Event::SnapshotTaken { .. } => &mut self.snapshots_taken,
            Event::SnapshotInstalled { .. } => &mut self.snapshots_installed,
            Event::RecordsCut { .. }
            | Event::SnapshotAbandoned { .. }
            | Event::LogReadMissing { .. }
            | Event::EventsDropped { .. } => return,
        };
        *counter += 1;
    }
}

impl Event {
    /// The event's name in JSON lines (`"event"`).
    pub fn name(&self) -> &'static str {
        match self {
            Event::ElectionStarted { .. } => "election_started",
            Event::LeadershipWon { .. } => "leadership_won",
            Event::LeaderChanged { .. } => "leader_changed",
            Event::SteppedDown { .. } => "stepped_down",
            Event::RecordsCut { .. } => "records_cut",
            Event::SnapshotTaken { .. } => "snapshot_taken",
            Event::SnapshotInstalled { .. } => "snapshot_installed",
            Event::SnapshotAbandoned { .. } => "snapshot_abandoned",
            Event::LogReadMissing { .. } => "log_read_missing",
            Event::EventsDropped { .. } => "events_dropped",
        }
    }

    /// How much it matters. An election that keeps failing (a node cut off
    /// from a majority retries every timeout) is `INFO` on attempts 1, 2,
    /// 4, 8, ... and `DEBUG` in between: its first line and the outcome say
    /// what happened, and a partition that lasts hours logs a few dozen
    /// lines, not tens of thousands.
    pub fn level(&self) -> Level {
        match self {
            Event::ElectionStarted { attempt, .. } if !attempt.is_power_of_two() => Level::Debug,
            Event::SteppedDown {
                reason: StepDownReason::NewerEpoch { .. } | StepDownReason::NoMajority { .. },
                ..
            }
            | Event::LogReadMissing { .. }
            | Event::EventsDropped { .. } => Level::Warn,
            _ => Level::Info,
        }
    }

    /// The event's fields beside the message, for JSON lines.
    pub fn fields(&self) -> Vec<Field<'_>> {
        match self {
            Event::ElectionStarted {
                reason,
                attempt,
                promised_epoch,
            } => {
                let mut fields = vec![
                    ("reason", Value::Str(reason.name())),
                    ("attempt", Value::U64(*attempt)),
                    ("promised_epoch", Value::U64(*promised_epoch)),
                ];
                reason.push_fields(&mut fields);
                fields
            }
            Event::LeadershipWon {
                epoch,
                adopted_from,
                records_adopted,
                records_cut,
                last_index,
                commit_index,
            } => vec![
                ("epoch", Value::U64(*epoch)),
                ("adopted_from", Value::from(*adopted_from)),
                ("records_adopted", Value::U64(*records_adopted)),
                ("records_cut", Value::U64(*records_cut)),
                ("last_index", Value::U64(*last_index)),
                ("commit_index", Value::U64(*commit_index)),
            ],
            Event::LeaderChanged { from, to, epoch } => vec![
                ("from", Value::from(*from)),
                ("to", Value::U64(*to)),
                ("epoch", Value::U64(*epoch)),
            ],
            Event::SteppedDown { epoch, reason } => {
                let mut fields = vec![
                    ("epoch", Value::U64(*epoch)),
                    ("reason", Value::Str(reason.name())),
                ];
                reason.push_fields(&mut fields);
                fields
            }
            Event::RecordsCut {
                leader,
                after_index,
                records,
            } => vec![
                ("leader", Value::U64(*leader)),
                ("after_index", Value::U64(*after_index)),
                ("records", Value::U64(*records)),
            ],
            Event::SnapshotTaken {
                index,
                epoch,
                pairs,
                file_bytes,
                elapsed_ms,
            } => vec![
                ("index", Value::U64(*index)),
                ("epoch", Value::U64(*epoch)),
                ("pairs", Value::U64(*pairs)),
                ("file_bytes", Value::U64(*file_bytes)),
                ("elapsed_ms", Value::U64(*elapsed_ms)),
            ],
            Event::SnapshotInstalled {
                index,
                epoch,
                from,
                pairs,
                file_bytes,
                elapsed_ms,
                replaced_store,
            } => vec![
                ("index", Value::U64(*index)),
                ("epoch", Value::U64(*epoch)),
                ("from", Value::U64(*from)),
                ("pairs", Value::U64(*pairs)),
                ("file_bytes", Value::U64(*file_bytes)),
                ("elapsed_ms", Value::U64(*elapsed_ms)),
                ("replaced_store", Value::Bool(*replaced_store)),
            ],
            Event::SnapshotAbandoned { index, reason } => vec![
                ("index", Value::U64(*index)),
                ("reason", Value::Str(reason)),
            ],
            Event::LogReadMissing {
                from_index,
                wanted_index,
            } => vec![
                ("from_index", Value::U64(*from_index)),
                ("wanted_index", Value::U64(*wanted_index)),
            ],
            Event::EventsDropped { count } => vec![("count", Value::U64(*count))],
        }
    }
}

impl fmt::Display for Event {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::ElectionStarted {
                reason, attempt, ..
            } => {
                write!(formatter, "election started: {reason}")?;
                if *attempt > 1 {
                    write!(formatter, " (attempt {attempt} without a leader)")?;
                }
                Ok(())
            }
            Event::LeadershipWon {
                epoch,
                adopted_from,
                records_adopted,
                records_cut,
                last_index,
                commit_index,
            } => {
                write!(formatter, "leadership won: epoch {epoch}, ")?;
                match adopted_from {
                    Some(source) => write!(
                        formatter,
                        "adopted node {source}'s log ({records_adopted} records fetched, \
                         {records_cut} of its own cut)"
                    )?,
                    None if *records_cut > 0 => write!(
                        formatter,
                        "kept its own log ({records_cut} records past the best one cut)"
                    )?,
                    None => formatter.write_str("its own log was the most up to date")?,
                }
                write!(
                    formatter,
                    "; log ends at index {last_index}, commit index {commit_index}"
                )
            }
            Event::LeaderChanged { from, to, epoch } => {
                write!(formatter, "leader changed to node {to} in epoch {epoch}")?;
                match from {
                    Some(from) => write!(formatter, " (was node {from})"),
                    None => formatter.write_str(" (none known before)"),
                }
            }
            Event::SteppedDown { epoch, reason } => write!(
                formatter,
                "stepped down as leader of epoch {epoch}: {reason}; replies it held are void"
            ),
            Event::RecordsCut {
                leader,
                after_index,
                records,
            } => write!(
                formatter,
                "cut {records} uncommitted records after index {after_index}: they differ from \
                 leader {leader}'s log (written under an earlier leader, never committed)"
            ),
            Event::SnapshotTaken {
                index,
                pairs,
                file_bytes,
                elapsed_ms,
                ..
            } => write!(
                formatter,
                "snapshot at index {index} is durable: {pairs} pairs, {file_bytes} bytes, \
                 written in {elapsed_ms} ms"
            ),
            Event::SnapshotInstalled {
                index,
                from,
                pairs,
                file_bytes,
                elapsed_ms,
                replaced_store,
                ..
            } => {
                write!(
                    formatter,
                    "snapshot at index {index} is durable (sent by node {from}): {pairs} pairs, \
                     {file_bytes} bytes, written in {elapsed_ms} ms; "
                )?;
                formatter.write_str(if *replaced_store {
                    "installed: the store and the log start from it"
                } else {
                    "kept as this node's snapshot: the log had reached its index meanwhile"
                })
            }
            Event::SnapshotAbandoned { index, reason } => {
                write!(formatter, "snapshot at index {index} abandoned: {reason}")
            }
            Event::LogReadMissing {
                from_index,
                wanted_index,
            } => write!(
                formatter,
                "a read of the log from index {from_index} found no record {wanted_index}"
            ),
            Event::EventsDropped { count } => write!(
                formatter,
                "{count} more events of one turn were not logged (at most \
                 {MAX_EVENTS_PER_TURN} per turn)"
            ),
        }
    }
}

impl ElectionReason {
    pub fn name(&self) -> &'static str {
        match self {
            ElectionReason::StartUp => "start_up",
            ElectionReason::LeaderLost { .. } => "leader_lost",
            ElectionReason::LeaderSilent { .. } => "leader_silent",
            ElectionReason::NoLeader { .. } => "no_leader",
            ElectionReason::HigherNodeSilent => "higher_node_silent",
            ElectionReason::NoMajority { .. } => "no_majority",
            ElectionReason::AdoptionStalled { .. } => "adoption_stalled",
            ElectionReason::AdoptionFailed { .. } => "adoption_failed",
            ElectionReason::LowerNodeAsked { .. } => "lower_node_asked",
            ElectionReason::LowerCandidate { .. } => "lower_candidate",
            ElectionReason::TakeOver { .. } => "take_over",
        }
    }

    fn push_fields(&self, fields: &mut Vec<Field<'_>>) {
        match *self {
            ElectionReason::StartUp | ElectionReason::HigherNodeSilent => {}
            ElectionReason::LeaderLost { leader } | ElectionReason::TakeOver { leader } => {
                fields.push(("leader", Value::U64(leader)));
            }
            ElectionReason::LeaderSilent { leader, silent_ms } => {
                fields.push(("leader", Value::U64(leader)));
                fields.push(("silent_ms", Value::U64(silent_ms)));
            }
            ElectionReason::NoLeader { silent_ms } => {
                fields.push(("silent_ms", Value::U64(silent_ms)));
            }
            ElectionReason::NoMajority { epoch } => fields.push(("epoch", Value::U64(epoch))),
            ElectionReason::AdoptionStalled { epoch, source }
            | ElectionReason::AdoptionFailed { epoch, source } => {
                fields.push(("epoch", Value::U64(epoch)));
                fields.push(("source", Value::U64(source)));
            }
            ElectionReason::LowerNodeAsked { from } => fields.push(("from", Value::U64(from))),
            ElectionReason::LowerCandidate { candidate } => {
                fields.push(("candidate", Value::U64(candidate)));
            }
        }
    }
}

impl fmt::Display for ElectionReason {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ElectionReason::StartUp => formatter.write_str("no leader known since start-up"),
            ElectionReason::LeaderLost { leader } => {
                write!(formatter, "leader {leader} lost (its connection closed)")
            }
            ElectionReason::LeaderSilent { leader, silent_ms } => write!(
                formatter,
                "leader {leader} silent for {silent_ms} ms (election timeout)"
            ),
            ElectionReason::NoLeader { silent_ms } => {
                write!(formatter, "no leader for {silent_ms} ms (election timeout)")
            }
            ElectionReason::HigherNodeSilent => {
                formatter.write_str("a higher node answered but no leader took office in time")
            }
            ElectionReason::NoMajority { epoch } => write!(
                formatter,
                "the candidacy for epoch {epoch} got no majority of promises in time"
            ),
            ElectionReason::AdoptionStalled { epoch, source } => write!(
                formatter,
                "adopting node {source}'s log for epoch {epoch} stalled"
            ),
            ElectionReason::AdoptionFailed { epoch, source } => write!(
                formatter,
                "node {source}'s log for epoch {epoch} could not be adopted"
            ),
            ElectionReason::LowerNodeAsked { from } => write!(
                formatter,
                "node {from} (a lower id) asked for one and no leader is known"
            ),
            ElectionReason::LowerCandidate { candidate } => write!(
                formatter,
                "node {candidate} (a lower id) tried to lead; the highest live id leads (Bully)"
            ),
            ElectionReason::TakeOver { leader } => write!(
                formatter,
                "caught up with leader {leader}, a lower id; the highest live id leads (Bully)"
            ),
        }
    }
}

impl StepDownReason {
    pub fn name(&self) -> &'static str {
        match self {
            StepDownReason::NewerEpoch { .. } => "newer_epoch",
            StepDownReason::NoMajority { .. } => "no_majority",
            StepDownReason::PromisedCandidate { .. } => "promised_candidate",
            StepDownReason::RunAgain { .. } => "run_again",
        }
    }

    fn push_fields(&self, fields: &mut Vec<Field<'_>>) {
        match *self {
            StepDownReason::NewerEpoch { from, epoch } => {
                fields.push(("from", Value::U64(from)));
                fields.push(("newer_epoch", Value::U64(epoch)));
            }
            StepDownReason::NoMajority {
                heard_from,
                majority,
                within_ms,
            } => {
                fields.push(("heard_from", Value::U64(heard_from as u64)));
                fields.push(("majority", Value::U64(majority as u64)));
                fields.push(("within_ms", Value::U64(within_ms)));
            }
            StepDownReason::PromisedCandidate { candidate, epoch } => {
                fields.push(("candidate", Value::U64(candidate)));
                fields.push(("promised_epoch", Value::U64(epoch)));
            }
            StepDownReason::RunAgain { candidate } => {
                fields.push(("candidate", Value::U64(candidate)));
            }
        }
    }
}

impl fmt::Display for StepDownReason {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StepDownReason::NewerEpoch { from, epoch } => {
                write!(formatter, "node {from} is in a newer epoch, {epoch}")
            }
            StepDownReason::NoMajority {
                heard_from,
                majority,
                within_ms,
            } => write!(
                formatter,
                "heard from {heard_from} nodes (itself included) within {within_ms} ms, fewer \
                 than a majority of {majority}"
            ),
            StepDownReason::PromisedCandidate { candidate, epoch } => write!(
                formatter,
                "promised epoch {epoch} to node {candidate}, a higher id (Bully)"
            ),
            StepDownReason::RunAgain { candidate } => write!(
                formatter,
                "runs for a new epoch to outrank node {candidate}, a lower id that tried to lead"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_election_says_why_and_counts_its_attempts() {
        let first = Event::ElectionStarted {
            reason: ElectionReason::LeaderLost { leader: 12347 },
            attempt: 1,
            promised_epoch: 1,
        };
        assert_eq!(
            first.to_string(),
            "election started: leader 12347 lost (its connection closed)"
        );
        assert_eq!(first.level(), Level::Info);
        let names: Vec<&str> = first.fields().iter().map(|(name, _)| *name).collect();
        assert_eq!(names, ["reason", "attempt", "promised_epoch", "leader"]);
        let retries: Vec<Level> = (2..=9)
            .map(|attempt| {
                Event::ElectionStarted {
                    reason: ElectionReason::NoMajority { epoch: 4 },
                    attempt,
                    promised_epoch: 4,
                }
                .level()
            })
            .collect();
        use Level::{Debug, Info};
        assert_eq!(
            retries,
            [Info, Debug, Info, Debug, Debug, Debug, Info, Debug]
        );
    }

    #[test]
    fn leadership_names_the_log_it_adopted() {
        let won = Event::LeadershipWon {
            epoch: 3,
            adopted_from: Some(2),
            records_adopted: 5,
            records_cut: 1,
            last_index: 9,
            commit_index: 4,
        };
        assert_eq!(
            won.to_string(),
            "leadership won: epoch 3, adopted node 2's log (5 records fetched, 1 of its own \
             cut); log ends at index 9, commit index 4"
        );
        let changed = Event::LeaderChanged {
            from: Some(3),
            to: 2,
            epoch: 3,
        };
        assert_eq!(
            changed.to_string(),
            "leader changed to node 2 in epoch 3 (was node 3)"
        );
    }

    #[test]
    fn counters_follow_the_events() {
        let mut stats = NodeStats::default();
        let events = [
            Event::ElectionStarted {
                reason: ElectionReason::StartUp,
                attempt: 1,
                promised_epoch: 0,
            },
            Event::SteppedDown {
                epoch: 1,
                reason: StepDownReason::RunAgain { candidate: 1 },
            },
            Event::EventsDropped { count: 3 },
        ];
        for event in &events {
            stats.count(event);
        }
        let expected = NodeStats {
            elections_started: 1,
            stepped_down: 1,
            ..NodeStats::default()
        };
        assert_eq!(stats, expected);
    }
}
