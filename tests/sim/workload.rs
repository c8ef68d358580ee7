//! The simulated clients: what they ask, and how they read the replies.
//!
//! A client does one request at a time on a connection to one node. Writes
//! carry values unique to the run (`c{client}-{n}`), so the checker can tell
//! every write apart. A `NOT_LEADER` reply is a definite non-execution: the
//! client retries the same operation elsewhere and records nothing. A reply
//! it never gets (timeout, connection reset, `ERR` after a lost leadership)
//! is recorded with an unknown outcome.
//!
//! With `FollowerReads::Local` a follower answers a GET from its own copy,
//! which may lag: such reads are not linearizable by design and stay out of
//! the history. What they return is still checked, since after every turn
//! the simulator requires a follower's store to be exactly the committed
//! log applied up to its commit index.

use std::collections::VecDeque;

use kvstore::node::NodeId;

use super::linearizability::{Operation, Outcome};
use super::rng::Rng;

pub type ConnId = u64;

/// What a client is doing in the run's current phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Random reads and writes.
    Workload,
    /// Finishing what it started; starts nothing new.
    Draining,
    /// Reading every key through the leader, for the final history.
    FinalReads,
    Done,
}

/// A request on the wire, waiting for its reply.
#[derive(Debug, Clone)]
pub struct InFlight {
    pub request_id: u64,
    pub operation: Operation,
    pub invoked_at: u64,
    pub conn: ConnId,
}

#[derive(Debug)]
pub struct Client {
    pub id: u64,
    pub phase: Phase,
    /// The node to send the next request to (`None`: any).
    pub target: Option<NodeId>,
    pub conn: Option<ConnId>,
    pub in_flight: Option<InFlight>,
    /// The operation to send next (a new one, or one to retry elsewhere).
    pub next: Option<Operation>,
    /// Redirects followed for the current operation.
    pub redirects: u32,
    pub final_keys: VecDeque<Vec<u8>>,
    writes: u64,
}

impl Client {
    pub fn new(id: u64) -> Client {
        Client {
            id,
            phase: Phase::Workload,
            target: None,
            conn: None,
            in_flight: None,
            next: None,
            redirects: 0,
            final_keys: VecDeque::new(),
            writes: 0,
        }
    }

    /// A random operation on one of `keys` keys.
    pub fn invent(&mut self, rng: &mut Rng, keys: usize) -> Operation {
        let key = format!("k{}", rng.below(keys as u64)).into_bytes();
        match rng.below(100) {
            0..40 => Operation::Get { key },
            40..85 => {
                self.writes += 1;
                let value = format!("c{}-{}", self.id, self.writes).into_bytes();
                Operation::Put { key, value }
            }
            _ => Operation::Del { key },
        }
    }
}

/// The request line for `operation`, without its terminator.
pub fn request_line(operation: &Operation) -> Vec<u8> {
    let mut line = Vec::new();
    match operation {
        Operation::Get { key } => {
            line.extend_from_slice(b"GET ");
            line.extend_from_slice(key);
        }
        Operation::Put { key, value } => {
            line.extend_from_slice(b"PUT ");
            line.extend_from_slice(key);
            line.push(b' ');
            line.extend_from_slice(value);
        }
        Operation::Del { key } => {
            line.extend_from_slice(b"DEL ");
            line.extend_from_slice(key);
        }
    }
    line
}

/// One reply line, as a client reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyLine {
    /// `NOT_LEADER <id> <address>`, or `NOT_LEADER -1` (`None`).
    NotLeader(Option<NodeId>),
    /// `ERR OOM ...`: refused by the memory limit before it was logged.
    OutOfMemory,
    /// `ERR ...`: the outcome of the request is unknown.
    Error(String),
    Outcome(Outcome),
}

pub fn parse_reply(line: &[u8]) -> ReplyLine {
    if let Some(rest) = line.strip_prefix(b"NOT_LEADER ") {
        let id = rest.split(|byte| *byte == b' ').next().unwrap_or(b"");
        let hint = std::str::from_utf8(id).ok().and_then(|id| id.parse().ok());
        return ReplyLine::NotLeader(hint);
    }
    if line.starts_with(b"ERR OOM ") {
        return ReplyLine::OutOfMemory;
    }
    if line.starts_with(b"ERR ") {
        return ReplyLine::Error(String::from_utf8_lossy(line).into_owned());
    }
    ReplyLine::Outcome(match line {
        b"OK" => Outcome::Ok,
        b"NOT_FOUND" => Outcome::NotFound,
        value => Outcome::Value(value.to_vec()),
    })
}

/// Whether `outcome` is one a correct server can give to `operation`.
pub fn fits(operation: &Operation, outcome: &Outcome) -> bool {
    matches!(
        (operation, outcome),
        (Operation::Put { .. }, Outcome::Ok)
            | (Operation::Get { .. }, Outcome::Value(_) | Outcome::NotFound)
            | (Operation::Del { .. }, Outcome::Ok | Outcome::NotFound)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_kind_of_reply() {
        assert_eq!(
            parse_reply(b"NOT_LEADER 3 10.0.0.3:7000"),
            ReplyLine::NotLeader(Some(3))
        );
        assert_eq!(parse_reply(b"NOT_LEADER -1"), ReplyLine::NotLeader(None));
        assert!(matches!(
            parse_reply(b"ERR leadership lost"),
            ReplyLine::Error(_)
        ));
        assert_eq!(parse_reply(b"OK"), ReplyLine::Outcome(Outcome::Ok));
        assert_eq!(
            parse_reply(b"c1-2"),
            ReplyLine::Outcome(Outcome::Value(b"c1-2".to_vec()))
        );
        let put = Operation::Put {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
        };
        assert_eq!(request_line(&put), b"PUT k v");
        assert!(fits(&put, &Outcome::Ok));
        assert!(!fits(&put, &Outcome::NotFound));
    }
}
