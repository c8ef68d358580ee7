//! The simulated clients: what they ask, and how they read the replies.
//!
//! A client does one request at a time on a connection to one node. A
//! connection speaks the line protocol or RESP (RESP2 or RESP3), drawn
//! from the seed when it opens. Over RESP a request is one of:
//!
//! - `GET`, `SET`, `DEL` on the keys `k0`, `k1`, ... (as over lines);
//! - `INCR` of a counter (`n0`, `n1`, ...: keys nothing else writes, so
//!   they always hold integers);
//! - `MSET` of two or three distinct keys;
//! - a `MULTI`/`EXEC` block of two to four `SET`, `INCR` and `GET`, at
//!   least one of them a write (so that it runs on the leader), sent at
//!   once as a pipeline (possibly split over turns, as reads are).
//!
//! Writes carry values unique to the run (`c{client}-{n}`), so the checker
//! can tell every write apart; an `MSET` or a block puts the same value on
//! every key it sets, which names the request in the committed log (see
//! `checks::GroupWrite`). A request's key operations are recorded one event
//! each, with the request's interval.
//!
//! A definite non-execution (`NOT_LEADER`, `MOVED`, `CLUSTERDOWN`, an
//! `EXECABORT` after one of those, a connection refused) makes the client
//! retry the same request elsewhere and record nothing. A reply it never
//! gets (timeout, connection reset, `ERR` after a lost leadership) is
//! recorded with an unknown outcome. An `OOM` refusal records nothing (in
//! an `EXEC`, for that command only: the others ran).
//!
//! With `FollowerReads::Local` a follower answers a GET from its own copy,
//! which may lag: such reads are not linearizable by design and stay out of
//! the history. What they return is still checked, since after every turn
//! the simulator requires a follower's store to be exactly the committed
//! log applied up to its commit index.

use std::collections::VecDeque;
use std::net::SocketAddr;

use kvstore::node::NodeId;
use kvstore::protocol::keyslot::keyslot;
use kvstore::protocol::resp_reply::Version;

use super::linearizability::{Operation, Outcome};
use super::resp::{self, Value};
use super::rng::Rng;

pub type ConnId = u64;

/// How many counter keys (`n0`, ...) the RESP clients increment.
pub const COUNTERS: usize = 2;

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

/// The protocol a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    Line,
    Resp(Version),
}

/// What a client asks in one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// One key operation: a line request, or over RESP `GET`, `SET`,
    /// `DEL` or `INCR`.
    Single(Operation),
    /// `MSET k1 value k2 value ...` (distinct keys).
    MultiSet { keys: Vec<Vec<u8>>, value: Vec<u8> },
    /// `MULTI`, one command per operation (`SET`, `INCR`, `GET`), `EXEC`.
    Transaction(Vec<Operation>),
}

impl Request {
    /// Its key operations, in the order they run.
    pub fn operations(&self) -> Vec<Operation> {
        match self {
            Request::Single(operation) => vec![operation.clone()],
            Request::MultiSet { keys, value } => keys
                .iter()
                .map(|key| Operation::Put {
                    key: key.clone(),
                    value: value.clone(),
                })
                .collect(),
            Request::Transaction(operations) => operations.clone(),
        }
    }

    /// `MSET` or `EXEC` for a multi-key request; `None` for one operation.
    pub fn multi_key_name(&self) -> Option<&'static str> {
        match self {
            Request::Single(_) => None,
            Request::MultiSet { .. } => Some("MSET"),
            Request::Transaction(_) => Some("EXEC"),
        }
    }

    /// Whether only RESP can carry it.
    pub fn needs_resp(&self) -> bool {
        !matches!(
            self,
            Request::Single(Operation::Get { .. } | Operation::Put { .. } | Operation::Del { .. })
        )
    }

    fn keys(&self) -> Vec<Vec<u8>> {
        self.operations()
            .iter()
            .map(|operation| operation.key().to_vec())
            .collect()
    }

    /// What is sent for it on `wire`, one element per line or RESP command.
    /// `split_multi_sets`: a broken client that sends an `MSET` as one
    /// `SET` per key (see `Options::unsafe_split_multi_sets`).
    pub fn encode(&self, wire: Wire, split_multi_sets: bool) -> Vec<Vec<u8>> {
        match (self, wire) {
            (Request::Single(operation), Wire::Line) => vec![request_line(operation)],
            (_, Wire::Line) => panic!("{self:?} needs RESP"),
            (Request::Single(operation), Wire::Resp(_)) => vec![resp_command(operation)],
            (Request::MultiSet { keys, value }, Wire::Resp(_)) if !split_multi_sets => {
                let mut args: Vec<&[u8]> = vec![b"MSET"];
                for key in keys {
                    args.push(key);
                    args.push(value);
                }
                vec![resp::encode_command(&args)]
            }
            (Request::MultiSet { .. }, Wire::Resp(_)) => {
                self.operations().iter().map(resp_command).collect()
            }
            (Request::Transaction(operations), Wire::Resp(_)) => {
                let mut commands = vec![resp::encode_command(&[b"MULTI"])];
                commands.extend(operations.iter().map(resp_command));
                commands.push(resp::encode_command(&[b"EXEC"]));
                commands
            }
        }
    }
}

/// One operation as a RESP command.
fn resp_command(operation: &Operation) -> Vec<u8> {
    match operation {
        Operation::Get { key } => resp::encode_command(&[b"GET", key]),
        Operation::Put { key, value } => resp::encode_command(&[b"SET", key, value]),
        Operation::Del { key } => resp::encode_command(&[b"DEL", key]),
        Operation::Incr { key } => resp::encode_command(&[b"INCR", key]),
    }
}

/// A request on the wire, waiting for its replies.
#[derive(Debug, Clone)]
pub struct InFlight {
    pub request_id: u64,
    pub request: Request,
    pub invoked_at: u64,
    pub conn: ConnId,
    /// How many replies it gets: one per command sent.
    pub commands: usize,
    /// RESP replies read so far.
    pub replies: Vec<Value>,
}

#[derive(Debug)]
pub struct Client {
    pub id: u64,
    pub phase: Phase,
    /// The node to send the next request to (`None`: any).
    pub target: Option<NodeId>,
    pub conn: Option<ConnId>,
    pub in_flight: Option<InFlight>,
    /// The request to send next (one to retry elsewhere); `None`: a new one.
    pub next: Option<Request>,
    /// Redirects followed for the current request.
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

    /// A value no other write of the run carries.
    fn unique_value(&mut self) -> Vec<u8> {
        self.writes += 1;
        format!("c{}-{}", self.id, self.writes).into_bytes()
    }

    /// A random request on `keys` keys (and, over RESP, the counters) that
    /// `wire` can carry.
    pub fn invent(&mut self, rng: &mut Rng, keys: usize, wire: Wire) -> Request {
        let roll = match wire {
            Wire::Line => 0,
            Wire::Resp(_) => rng.below(100),
        };
        match roll {
            0..60 => Request::Single(self.invent_single(rng, keys)),
            60..72 => Request::Single(Operation::Incr { key: counter(rng) }),
            72..86 => {
                let count = (rng.range(2, 3) as usize).min(keys);
                let mut keys: Vec<Vec<u8>> = (0..keys).map(key_name).collect();
                // A partial Fisher-Yates shuffle: `count` distinct keys.
                for chosen in 0..count {
                    let swap = rng.range(chosen as u64, keys.len() as u64 - 1) as usize;
                    keys.swap(chosen, swap);
                }
                keys.truncate(count);
                let value = self.unique_value();
                Request::MultiSet { keys, value }
            }
            _ => Request::Transaction(self.invent_block(rng, keys)),
        }
    }

    /// One GET, PUT or DEL: 40, 45 and 15 in a hundred.
    fn invent_single(&mut self, rng: &mut Rng, keys: usize) -> Operation {
        let key = key_name(rng.below(keys as u64) as usize);
        match rng.below(100) {
            0..40 => Operation::Get { key },
            40..85 => Operation::Put {
                key,
                value: self.unique_value(),
            },
            _ => Operation::Del { key },
        }
    }

    /// A `MULTI` block's commands: `SET`s (all of one value), `INCR`s and
    /// `GET`s, at least one a write.
    fn invent_block(&mut self, rng: &mut Rng, keys: usize) -> Vec<Operation> {
        let value = self.unique_value();
        let mut operations: Vec<Operation> = (0..rng.range(2, 4))
            .map(|_| {
                let key = key_name(rng.below(keys as u64) as usize);
                match rng.below(10) {
                    0..4 => Operation::Put {
                        key,
                        value: value.clone(),
                    },
                    4..7 => Operation::Incr { key: counter(rng) },
                    _ => Operation::Get { key },
                }
            })
            .collect();
        if !operations.iter().any(Operation::writes) {
            let key = operations[0].key().to_vec();
            operations[0] = Operation::Put { key, value };
        }
        operations
    }
}

pub fn key_name(index: usize) -> Vec<u8> {
    format!("k{index}").into_bytes()
}

pub fn counter_name(index: usize) -> Vec<u8> {
    format!("n{index}").into_bytes()
}

fn counter(rng: &mut Rng) -> Vec<u8> {
    counter_name(rng.below(COUNTERS as u64) as usize)
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
        Operation::Incr { .. } => panic!("the line protocol has no INCR"),
    }
    line
}

/// What a request's replies say happened to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Certainly not executed: retry elsewhere (`NOT_LEADER`, `MOVED`,
    /// `CLUSTERDOWN`, `EXECABORT` after one). `Some`: the leader's id.
    Refused(Option<NodeId>),
    /// Refused by the memory limit before it was logged: not executed.
    OutOfMemory,
    /// It may or may not have taken effect.
    Unknown,
    /// Each operation's outcome, in order; `None` for a command of an
    /// `EXEC` refused on its own (`OOM`), which did nothing.
    Done(Vec<Option<Outcome>>),
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

/// What the reply line to `operation` says, or why no correct server
/// sends it.
pub fn read_line_reply(operation: &Operation, line: &[u8]) -> Result<Answer, String> {
    match parse_reply(line) {
        ReplyLine::NotLeader(hint) => Ok(Answer::Refused(hint)),
        // Only a PUT may grow the store.
        ReplyLine::OutOfMemory if matches!(operation, Operation::Put { .. }) => {
            Ok(Answer::OutOfMemory)
        }
        ReplyLine::OutOfMemory => Err(format!("OOM for {operation:?}")),
        ReplyLine::Error(_) => Ok(Answer::Unknown),
        ReplyLine::Outcome(outcome) if fits(operation, &outcome) => {
            Ok(Answer::Done(vec![Some(outcome)]))
        }
        ReplyLine::Outcome(outcome) => Err(format!("{outcome:?} for {operation:?}")),
    }
}

/// Whether `outcome` is one a correct server can give to `operation`.
pub fn fits(operation: &Operation, outcome: &Outcome) -> bool {
    matches!(
        (operation, outcome),
        (Operation::Put { .. }, Outcome::Ok)
            | (Operation::Get { .. }, Outcome::Value(_) | Outcome::NotFound)
            | (Operation::Del { .. }, Outcome::Ok | Outcome::NotFound)
            | (Operation::Incr { .. }, Outcome::Integer(_))
    )
}

/// Whether `reply` leaves the request's outcome unknown: the server
/// closes the connection after it, so no further reply comes.
pub fn leaves_outcome_unknown(reply: &Value) -> bool {
    match reply {
        Value::Error(text) => {
            text.starts_with("ERR leadership lost") || text.starts_with("ERR log write failed")
        }
        _ => false,
    }
}

/// A redirect (`MOVED <slot> <host:port>`, `CLUSTERDOWN ...`): `Some` with
/// the leader's id if it names one. `MOVED`'s slot must be that of one of
/// `keys` (the command's; in a block, the first that was refused).
fn redirect(reply: &Value, keys: &[Vec<u8>]) -> Result<Option<Option<NodeId>>, String> {
    let Value::Error(text) = reply else {
        return Ok(None);
    };
    if text.starts_with("CLUSTERDOWN ") {
        return Ok(Some(None));
    }
    let Some(rest) = text.strip_prefix("MOVED ") else {
        return Ok(None);
    };
    let (slot, address) = rest
        .split_once(' ')
        .ok_or_else(|| format!("a MOVED without an address: {text:?}"))?;
    let slot: u16 = slot
        .parse()
        .map_err(|_| format!("a MOVED without a slot: {text:?}"))?;
    if !keys.iter().any(|key| keyslot(key) == slot) {
        return Err(format!("{text:?} names the slot of none of the keys"));
    }
    let address: SocketAddr = address
        .parse()
        .map_err(|_| format!("a MOVED to no address: {text:?}"))?;
    // The simulator's nodes listen on 10.0.0.<id>:7000.
    let SocketAddr::V4(address) = address else {
        return Err(format!("a MOVED to {address}"));
    };
    Ok(Some(Some(NodeId::from(address.ip().octets()[3]))))
}

/// What `operation`'s own RESP reply says: `None` for an `OOM` refusal of
/// a write that may grow the store.
fn resp_outcome(operation: &Operation, reply: &Value) -> Result<Option<Outcome>, String> {
    let outcome = match (operation, reply) {
        (Operation::Put { .. } | Operation::Incr { .. }, Value::Error(text))
            if text.starts_with("OOM ") =>
        {
            return Ok(None);
        }
        (Operation::Get { .. }, Value::Bulk(value)) => Outcome::Value(value.clone()),
        (Operation::Get { .. }, Value::Null) => Outcome::NotFound,
        (Operation::Put { .. }, Value::Simple(text)) if text == "OK" => Outcome::Ok,
        (Operation::Del { .. }, Value::Integer(1)) => Outcome::Ok,
        (Operation::Del { .. }, Value::Integer(0)) => Outcome::NotFound,
        (Operation::Incr { .. }, Value::Integer(sum)) => Outcome::Integer(*sum),
        _ => return Err(format!("{reply:?} for {operation:?}")),
    };
    Ok(Some(outcome))
}

/// What the RESP replies to `request` say: all of them (one per command
/// sent), or those up to one that leaves the outcome unknown.
/// `split_multi_sets`: as in [`Request::encode`].
pub fn read_resp_replies(
    request: &Request,
    replies: &[Value],
    split_multi_sets: bool,
) -> Result<Answer, String> {
    if replies.last().is_some_and(leaves_outcome_unknown) {
        return Ok(Answer::Unknown);
    }
    let keys = request.keys();
    match request {
        Request::Transaction(operations) => read_exec_replies(operations, replies, &keys),
        Request::MultiSet { .. } if split_multi_sets => {
            let answers = replies
                .iter()
                .zip(request.operations())
                .map(|(reply, operation)| read_one(&operation, reply, &keys))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(answers
                .iter()
                .find(|answer| !matches!(answer, Answer::Done(_)))
                .cloned()
                .unwrap_or_else(|| Answer::Done(vec![Some(Outcome::Ok); answers.len()])))
        }
        Request::MultiSet { keys: set, .. } => {
            let [reply] = replies else {
                return Err(format!("{} replies to one MSET", replies.len()));
            };
            match reply {
                Value::Simple(text) if text == "OK" => {
                    Ok(Answer::Done(vec![Some(Outcome::Ok); set.len()]))
                }
                reply => {
                    let first = &request.operations()[0];
                    match read_one(first, reply, &keys)? {
                        Answer::Done(_) => Err(format!("{reply:?} for MSET")),
                        answer => Ok(answer),
                    }
                }
            }
        }
        Request::Single(operation) => {
            let [reply] = replies else {
                return Err(format!("{} replies to one command", replies.len()));
            };
            read_one(operation, reply, &keys)
        }
    }
}

/// The reply to one command outside a block.
fn read_one(operation: &Operation, reply: &Value, keys: &[Vec<u8>]) -> Result<Answer, String> {
    if let Some(leader) = redirect(reply, keys)? {
        return Ok(Answer::Refused(leader));
    }
    match resp_outcome(operation, reply)? {
        None => Ok(Answer::OutOfMemory),
        Some(outcome) => Ok(Answer::Done(vec![Some(outcome)])),
    }
}

/// `MULTI`'s `+OK`, one `+QUEUED` (or a redirect) per command, then
/// `EXEC`'s array of the commands' replies, or its refusal.
fn read_exec_replies(
    operations: &[Operation],
    replies: &[Value],
    keys: &[Vec<u8>],
) -> Result<Answer, String> {
    let [multi, queued @ .., exec] = replies else {
        return Err(format!("{} replies to a MULTI block", replies.len()));
    };
    if queued.len() != operations.len() || *multi != Value::Simple("OK".to_string()) {
        return Err(format!("{replies:?} for a MULTI block of {operations:?}"));
    }
    let mut refused = None;
    for reply in queued {
        match redirect(reply, keys)? {
            Some(leader) => {
                refused.get_or_insert(leader);
            }
            None if *reply == Value::Simple("QUEUED".to_string()) => {}
            None => return Err(format!("{reply:?} while queuing {operations:?}")),
        }
    }
    if let Some(leader) = redirect(exec, keys)? {
        return Ok(Answer::Refused(refused.unwrap_or(leader)));
    }
    match (exec, refused) {
        (Value::Error(text), Some(leader)) if text.starts_with("EXECABORT ") => {
            Ok(Answer::Refused(leader))
        }
        (Value::Array(items), None) if items.len() == operations.len() => operations
            .iter()
            .zip(items)
            .map(|(operation, item)| resp_outcome(operation, item))
            .collect::<Result<Vec<_>, _>>()
            .map(Answer::Done),
        (exec, _) => Err(format!("EXEC answered {exec:?} to {operations:?}")),
    }
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
        assert_eq!(
            read_line_reply(&put, b"OK"),
            Ok(Answer::Done(vec![Some(Outcome::Ok)]))
        );
        assert!(read_line_reply(&Operation::Del { key: b"k".to_vec() }, b"ERR OOM x").is_err());
    }

    fn simple(text: &str) -> Value {
        Value::Simple(text.to_string())
    }

    fn error(text: &str) -> Value {
        Value::Error(text.to_string())
    }

    fn block() -> Request {
        Request::Transaction(vec![
            Operation::Put {
                key: b"k0".to_vec(),
                value: b"c1-1".to_vec(),
            },
            Operation::Incr {
                key: b"n0".to_vec(),
            },
            Operation::Get {
                key: b"k1".to_vec(),
            },
        ])
    }

    #[test]
    fn a_block_is_sent_as_multi_its_commands_and_exec() {
        let commands = block().encode(Wire::Resp(Version::Resp2), false);
        assert_eq!(commands.len(), 5);
        assert_eq!(commands[0], b"*1\r\n$5\r\nMULTI\r\n");
        assert_eq!(commands[2], b"*2\r\n$4\r\nINCR\r\n$2\r\nn0\r\n");
        assert_eq!(commands[4], b"*1\r\n$4\r\nEXEC\r\n");
        let mset = Request::MultiSet {
            keys: vec![b"k0".to_vec(), b"k1".to_vec()],
            value: b"c1-2".to_vec(),
        };
        let wire = Wire::Resp(Version::Resp3);
        assert_eq!(mset.encode(wire, false).len(), 1);
        assert_eq!(mset.encode(wire, true).len(), 2);
        assert!(mset.needs_resp() && block().needs_resp());
    }

    #[test]
    fn reads_what_an_exec_did() {
        let queued = || {
            vec![
                simple("OK"),
                simple("QUEUED"),
                simple("QUEUED"),
                simple("QUEUED"),
            ]
        };
        let mut replies = queued();
        replies.push(Value::Array(vec![
            simple("OK"),
            Value::Integer(4),
            Value::Bulk(b"c1-1".to_vec()),
        ]));
        assert_eq!(
            read_resp_replies(&block(), &replies, false),
            Ok(Answer::Done(vec![
                Some(Outcome::Ok),
                Some(Outcome::Integer(4)),
                Some(Outcome::Value(b"c1-1".to_vec()))
            ]))
        );
        // A SET refused on its own: the INCR and the GET still ran.
        let mut replies = queued();
        replies.push(Value::Array(vec![
            error("OOM command not allowed when used memory > max-memory-bytes"),
            Value::Integer(1),
            Value::Null,
        ]));
        assert_eq!(
            read_resp_replies(&block(), &replies, false),
            Ok(Answer::Done(vec![
                None,
                Some(Outcome::Integer(1)),
                Some(Outcome::NotFound)
            ]))
        );
    }

    #[test]
    fn a_refused_block_is_retried_and_a_voided_one_is_unknown() {
        let moved = format!("MOVED {} 10.0.0.3:7000", keyslot(b"k0"));
        let replies = vec![
            simple("OK"),
            error(&moved),
            simple("QUEUED"),
            simple("QUEUED"),
            error("EXECABORT Transaction discarded because of previous errors."),
        ];
        assert_eq!(
            read_resp_replies(&block(), &replies, false),
            Ok(Answer::Refused(Some(3)))
        );
        let cluster_down = "CLUSTERDOWN The cluster is down (no leader is known yet)";
        let mut replies = vec![
            simple("OK"),
            simple("QUEUED"),
            simple("QUEUED"),
            simple("QUEUED"),
        ];
        replies.push(error(cluster_down));
        assert_eq!(
            read_resp_replies(&block(), &replies, false),
            Ok(Answer::Refused(None))
        );
        replies.pop();
        replies.push(error("ERR leadership lost; earlier requests ..."));
        assert_eq!(
            read_resp_replies(&block(), &replies, false),
            Ok(Answer::Unknown)
        );
        // EXECABORT with nothing refused, or a MOVED to another key's slot:
        // no correct server says that.
        replies.pop();
        replies.push(error(
            "EXECABORT Transaction discarded because of previous errors.",
        ));
        assert!(read_resp_replies(&block(), &replies, false).is_err());
        let wrong_slot = format!("MOVED {} 10.0.0.3:7000", keyslot(b"elsewhere"));
        let get = Request::Single(Operation::Get {
            key: b"k0".to_vec(),
        });
        assert!(read_resp_replies(&get, &[error(&wrong_slot)], false).is_err());
    }
}
