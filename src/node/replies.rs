//! A connection's outgoing replies, each held until what it depends on is durable.
//!
//! A reply may depend on a log index: the OK of a write depends on that write's
//! record; a GET's value depends on every write applied before it was read,
//! because a crash could otherwise take back a value a client has already seen.
//! In a cluster a leader's read also depends on a read round: a heartbeat
//! round, sent after the read, that a majority answered (ReadIndex), which
//! proves no newer leader existed when the value was read.
//! Replies leave in request order, so a reply that depends on nothing still
//! waits behind an earlier held one.
//!
//! Invariant: both parts of the holds grow along the queue (the core produces
//! replies in log order and rounds only grow), so the bytes that may be sent
//! are always a prefix: everything before the first unreleased hold.

use std::collections::VecDeque;

use crate::protocol::{Outcome, Protocol, Reply};

/// Above this, an emptied buffer gives its memory back (after a burst).
const RETAINED_CAPACITY_BYTES: usize = 64 * 1024;
/// Sent bytes are moved out of the front only past this much, to amortize.
const COMPACT_THRESHOLD_BYTES: usize = 64 * 1024;

/// What a reply waits for: a log index released (durable, or committed by a
/// majority) and a read round confirmed. The zero gate waits for nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Gate {
    pub index: u64,
    pub round: u64,
}

impl Gate {
    pub const OPEN: Gate = Gate { index: 0, round: 0 };

    /// Whether a reply behind `self` may leave once `released` is reached.
    pub fn is_within(&self, released: Gate) -> bool {
        self.index <= released.index && self.round <= released.round
    }
}

/// The replies from `start` up to the next hold's start (or the end) wait
/// for `gate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Hold {
    start: usize,
    gate: Gate,
}

#[derive(Debug, Default)]
pub struct ReplyQueue {
    bytes: Vec<u8>,
    sent: usize,
    holds: VecDeque<Hold>,
    /// How replies are encoded: the line protocol until the connection's
    /// first byte says RESP, and over RESP the version `HELLO` chose.
    protocol: Protocol,
    /// What the last reply pushed told of its request, until taken.
    last_outcome: Option<Outcome>,
}

impl ReplyQueue {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends `reply`, to be sent once `gate` is within the released gate.
    /// `released` is what is released so far.
    pub fn push(&mut self, reply: Reply<'_>, gate: Gate, released: Gate) {
        let protocol = self.protocol;
        self.append(released, |out, _| {
            reply.encode_for(protocol, out);
            gate
        });
        self.last_outcome = Some(reply.outcome());
    }

    /// Appends one reply that `encode` writes, in this queue's protocol,
    /// returning what it waits for (a RESP command's reply may be built of
    /// several parts, each depending on a different write or read).
    pub fn push_encoded(
        &mut self,
        released: Gate,
        encode: impl FnOnce(&mut Vec<u8>, Protocol) -> Gate,
    ) {
        let protocol = self.protocol;
        let start = self.append(released, encode);
        self.last_outcome = Some(match protocol {
            Protocol::Resp(_) => Outcome::of_resp(&self.bytes[start..]),
            Protocol::Line => Outcome::Ok,
        });
    }

    /// Encodes one reply at the end, held behind the gate `encode` returns;
    /// returns where it starts.
    fn append(
        &mut self,
        released: Gate,
        encode: impl FnOnce(&mut Vec<u8>, Protocol) -> Gate,
    ) -> usize {
        let start = self.bytes.len();
        let gate = encode(&mut self.bytes, self.protocol);
        self.hold_from(start, gate, released);
        start
    }

    /// What the last reply pushed since the previous call told of its
    /// request ([`Outcome::Ok`] if none was: a `QUIT`, a `SNAPSHOT` whose
    /// reply comes later). The connection counts requests by it.
    pub fn take_outcome(&mut self) -> Outcome {
        self.last_outcome.take().unwrap_or_default()
    }

    fn hold_from(&mut self, start: usize, gate: Gate, released: Gate) {
        let gate = match self.holds.back() {
            Some(last) if gate.is_within(last.gate) => return,
            // Keep both parts growing along the queue.
            Some(last) => Gate {
                index: gate.index.max(last.gate.index),
                round: gate.round.max(last.gate.round),
            },
            None if gate.is_within(released) => return,
            None => gate,
        };
        self.holds.push_back(Hold { start, gate });
    }

    /// The wire format of the replies to come.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// Sets the wire format (the first byte of a connection, or `HELLO`).
    pub fn set_protocol(&mut self, protocol: Protocol) {
        self.protocol = protocol;
    }

    /// The bytes that may be written now, given what is released.
    pub fn sendable(&mut self, released: Gate) -> &[u8] {
        while self
            .holds
            .front()
            .is_some_and(|hold| hold.gate.is_within(released))
        {
            self.holds.pop_front();
        }
        let end = self
            .holds
            .front()
            .map_or(self.bytes.len(), |hold| hold.start);
        &self.bytes[self.sent..end]
    }

    /// Marks `count` bytes of [`Self::sendable`] as written to the socket.
    pub fn consume(&mut self, count: usize) {
        self.sent += count;
        debug_assert!(self.sent <= self.bytes.len());
        if self.sent == self.bytes.len() {
            self.bytes.clear();
            self.sent = 0;
            if self.bytes.capacity() > RETAINED_CAPACITY_BYTES {
                self.bytes.shrink_to(RETAINED_CAPACITY_BYTES);
            }
        } else if self.sent >= COMPACT_THRESHOLD_BYTES && self.sent * 2 >= self.bytes.len() {
            self.compact();
        }
    }

    fn compact(&mut self) {
        self.bytes.drain(..self.sent);
        for hold in &mut self.holds {
            hold.start -= self.sent;
        }
        self.sent = 0;
    }

    /// What the first held reply waits for, if any reply is held.
    pub fn first_held_gate(&self) -> Option<Gate> {
        self.holds.front().map(|hold| hold.gate)
    }

    /// Drops every reply still held; returns whether there were any. Used
    /// when the writes they acknowledge can no longer become durable.
    pub fn discard_held(&mut self) -> bool {
        match self.holds.front() {
            Some(first) => {
                self.bytes.truncate(first.start);
                self.holds.clear();
                true
            }
            None => false,
        }
    }

    /// The memory the queue holds.
    pub fn capacity_bytes(&self) -> usize {
        self.bytes.capacity()
    }

    /// Gives back the memory of an empty queue.
    pub fn release_if_empty(&mut self) {
        if self.is_empty() && self.holds.is_empty() {
            self.bytes = Vec::new();
            self.sent = 0;
        }
    }

    /// Replies encoded but not yet written, held or not (for backpressure).
    pub fn unsent_bytes(&self) -> usize {
        self.bytes.len() - self.sent
    }

    pub fn is_empty(&self) -> bool {
        self.unsent_bytes() == 0
    }

    pub fn has_holds(&self) -> bool {
        !self.holds.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(index: u64) -> Gate {
        Gate { index, round: 0 }
    }

    #[test]
    fn a_read_waits_for_its_round_as_well_as_its_index() {
        let mut queue = ReplyQueue::new();
        let read = Gate { index: 4, round: 2 };
        queue.push(Reply::Value(b"v"), read, Gate { index: 4, round: 1 });
        queue.push(Reply::Ok, index(3), Gate::OPEN);
        assert_eq!(queue.sendable(Gate { index: 9, round: 1 }), b"");
        assert_eq!(queue.sendable(Gate { index: 3, round: 5 }), b"");
        assert_eq!(queue.sendable(Gate { index: 4, round: 2 }), b"v\nOK\n");
    }

    #[test]
    fn the_outcome_of_the_last_reply_is_taken_once() {
        let mut queue = ReplyQueue::new();
        queue.push(Reply::NotLeader(None), Gate::OPEN, Gate::OPEN);
        assert_eq!(queue.take_outcome(), Outcome::Redirect);
        assert_eq!(queue.take_outcome(), Outcome::Ok, "nothing pushed since");
        queue.set_protocol(Protocol::Resp(crate::protocol::resp_reply::Version::Resp2));
        queue.push_encoded(Gate::OPEN, |out, _| {
            out.extend_from_slice(b"-ERR syntax error\r\n");
            Gate::OPEN
        });
        assert_eq!(queue.take_outcome(), Outcome::Error);
    }

    #[test]
    fn unheld_replies_go_at_once() {
        let mut queue = ReplyQueue::new();
        queue.push(Reply::Pong, index(0), index(0));
        queue.push(Reply::Value(b"v"), index(5), index(5));
        assert_eq!(queue.sendable(index(5)), b"PONG\nv\n");
        assert!(!queue.has_holds());
    }

    #[test]
    fn a_held_reply_blocks_the_replies_behind_it() {
        let mut queue = ReplyQueue::new();
        queue.push(Reply::Pong, index(0), index(0));
        queue.push(Reply::Ok, index(1), index(0));
        queue.push(Reply::Pong, index(0), index(0));
        queue.push(Reply::Ok, index(2), index(0));
        assert_eq!(queue.sendable(index(0)), b"PONG\n");
        queue.consume(5);
        assert_eq!(queue.sendable(index(0)), b"");
        assert_eq!(queue.sendable(index(1)), b"OK\nPONG\n");
        assert_eq!(queue.sendable(index(2)), b"OK\nPONG\nOK\n");
        queue.consume(11);
        assert!(queue.is_empty());
        assert!(!queue.has_holds());
    }

    #[test]
    fn partial_writes_resume_where_they_stopped() {
        let mut queue = ReplyQueue::new();
        queue.push(Reply::Value(b"abcdef"), index(3), index(0));
        assert_eq!(queue.sendable(index(3)), b"abcdef\n");
        queue.consume(2);
        assert_eq!(queue.sendable(index(3)), b"cdef\n");
        assert_eq!(queue.unsent_bytes(), 5);
    }

    #[test]
    fn discarding_drops_only_held_replies() {
        let mut queue = ReplyQueue::new();
        queue.push(Reply::Pong, index(0), index(0));
        queue.push(Reply::Ok, index(7), index(0));
        queue.push(Reply::Pong, index(0), index(0));
        assert!(queue.discard_held());
        assert_eq!(queue.sendable(index(0)), b"PONG\n");
        assert!(!queue.discard_held());
    }

    #[test]
    fn compaction_keeps_holds_aligned() {
        let mut queue = ReplyQueue::new();
        let value = vec![b'x'; 1000];
        for _ in 0..100 {
            queue.push(Reply::Value(&value), index(0), index(0));
        }
        queue.push(Reply::Ok, index(9), index(0));
        let free = queue.sendable(index(0)).len();
        assert_eq!(free, 100 * 1001);
        queue.consume(free);
        assert_eq!(queue.sendable(index(8)), b"");
        assert_eq!(queue.sendable(index(9)), b"OK\n");
    }
}
