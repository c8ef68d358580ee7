//! Peer messages: what nodes of a cluster say to each other, and their wire form.
//!
//! Every message travels in an [`Envelope`] that names the sender and the
//! sender's epoch. Log entries travel as the exact record bytes of the log
//! (`crate::log::encode`), so a follower checks their checksums and appends
//! them unchanged.

pub type NodeId = u64;

/// A message with its sender and the sender's current epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub from: NodeId,
    pub epoch: u64,
    pub message: Message,
}

/// The peer protocol. Bully's three messages (ELECTION, OK here named
/// `Alive`, COORDINATOR) plus what makes a change of leader safe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Bully: "I see no leader; is a node with a higher id alive?"
    Election,
    /// Bully's OK: "I am alive and of higher id; I will see to a leader."
    /// Names the leader the sender follows, if it has a live one.
    Alive { leader: Option<NodeId> },
    /// Bully's COORDINATOR, made safe: "I would lead `epoch`; promise me."
    Coordinator { commit_index: u64 },
    /// "I promise `epoch`: I will accept nothing from an older one."
    /// Carries the promiser's log position for log adoption.
    Promise { last_epoch: u64, last_index: u64, commit_index: u64 },
    /// "I will not promise that": the sender's own epoch and live leader.
    Reject { leader: Option<NodeId> },
    /// New leader to the most up-to-date promiser: "send me your log from
    /// `from_index` on".
    Fetch { from_index: u64 },
    /// Answer to `Fetch`: records from `from_index` to the sender's last.
    FetchReply { from_index: u64, records: Vec<u8> },
    /// Leader to follower: records after (`prev_index`, `prev_epoch`), the
    /// leader's commit index, and the read round (ReadIndex). Empty records
    /// make a heartbeat.
    Append { prev_index: u64, prev_epoch: u64, commit_index: u64, round: u64, records: Vec<u8> },
    /// Follower to leader. `success`: the follower's log matches the
    /// leader's up to `match_index` and is durable up to there. Otherwise
    /// `match_index` is where the leader should retry from (the follower's
    /// last index, or below the conflict). `round` echoes the read round.
    Ack { success: bool, match_index: u64, round: u64 },
}
