//! What a driver may read about the node from outside the protocol: whether
//! it is fit to take traffic (`/health` behind a load balancer), and the
//! cluster figures the metrics export (role, followers' progress).
//!
//! Read-only: nothing here changes the node. Time is passed in, as
//! everywhere in the core.

use super::{Node, NodeId, Role};

/// Every role name `ROLE` and the metrics may show, in a fixed order (the
/// metrics export one gauge per role, 1 for the node's own).
pub const ROLE_NAMES: [&str; 5] = ["leader", "follower", "electing", "candidate", "adopting"];

/// Why a node should not take traffic now: the text `/health` answers.
pub type Unhealthy = &'static str;

/// One follower's replication progress, as its leader sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FollowerProgress {
    pub id: NodeId,
    /// The follower's log matches the leader's, durably, up to here.
    pub match_index: u64,
    /// Records the leader has that the follower has not acknowledged.
    pub lag_records: u64,
}

impl Node {
    /// Whether the node can serve: it knows a leader, and if it is that
    /// leader, it has heard from a majority (itself included) within an
    /// election timeout, or won its election less than one ago (a leader
    /// cut off from a majority steps down after that long; until then
    /// it is as sure as the step-down rule lets it be). Returns the leader.
    pub fn health(&self, now_ms: u64) -> Result<NodeId, Unhealthy> {
        match &self.role {
            Role::Leader { since_ms, .. } => {
                let in_first_term_timeout = now_ms < since_ms + self.config.election_timeout_ms;
                if in_first_term_timeout
                    || self.heard_from_majority(now_ms) >= self.config.majority()
                {
                    Ok(self.config.id)
                } else {
                    Err("leader cannot hear a majority")
                }
            }
            Role::Follower {
                leader: Some(leader),
            } => Ok(*leader),
            Role::Adopting { .. } => Err("elected, adopting the most up-to-date log first"),
            Role::Follower { leader: None } | Role::Electing { .. } | Role::Candidate { .. } => {
                Err("no leader known")
            }
        }
    }

    /// The role's name (one of [`ROLE_NAMES`]), the leader known, the
    /// epoch promised, the commit index, the newest snapshot's index and the
    /// store's memory: what `ROLE` answers.
    pub fn status(&self) -> crate::protocol::RoleReply {
        let status = self.role_reply();
        debug_assert!(ROLE_NAMES.contains(&status.role));
        status
    }

    /// Each follower's progress, by id; empty unless this node leads.
    pub fn followers(&self) -> Vec<FollowerProgress> {
        let Role::Leader { followers, .. } = &self.role else {
            return Vec::new();
        };
        let last_index = self.log.last_index();
        followers
            .iter()
            .map(|(id, progress)| FollowerProgress {
                id: *id,
                match_index: progress.match_index(),
                lag_records: last_index.saturating_sub(progress.match_index()),
            })
            .collect()
    }

    /// The last index of the log this node knows is durable on its disk.
    pub fn durable_index(&self) -> u64 {
        self.log.durable_index()
    }

    /// `--max-memory-bytes` (`None`: no limit).
    pub fn max_memory_bytes(&self) -> Option<usize> {
        self.config.max_memory_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{follower_of_three, leader_of_three};
    use super::*;

    #[test]
    fn a_single_node_is_healthy_once_it_leads() {
        let mut node = Node::new(super::super::NodeConfig::single(7));
        assert_eq!(node.health(0), Err("no leader known"));
        node.start(0);
        assert_eq!(node.health(0), Ok(7));
        assert_eq!(
            node.health(1_000_000),
            Ok(7),
            "alone it is its own majority"
        );
    }

    #[test]
    fn a_follower_is_healthy_only_while_it_knows_a_leader() {
        let node = follower_of_three();
        assert_eq!(node.health(0), Err("no leader known"));
        assert!(node.followers().is_empty());
    }

    #[test]
    fn a_leader_that_stops_hearing_a_majority_is_unhealthy() {
        let node = leader_of_three();
        // Both followers acknowledged at 1000 ms; the timeout is 300 ms.
        assert_eq!(node.health(1100), Ok(3));
        assert_eq!(node.health(1400), Err("leader cannot hear a majority"));
        let progress = node.followers();
        assert_eq!(progress.len(), 2);
        assert_eq!(
            progress[0],
            FollowerProgress {
                id: 1,
                match_index: 1,
                lag_records: 0
            }
        );
        assert_eq!(node.status().role, "leader");
    }
}
