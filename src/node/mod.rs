//! The sans-IO core: the only owner of state. It never performs I/O.
//!
//! Inputs: a parsed request from a connection (with that connection's
//! [`ReplyQueue`]), a replayed log entry at start-up, and "the log is durable
//! up to index i". Outputs: replies pushed onto reply queues, each held until
//! the index it depends on is released, and encoded log records that the
//! reactor must append (one write and at most one fdatasync per loop turn:
//! group commit).
//!
//! Invariants:
//! - every write is in the unwritten record buffer, with the next index,
//!   before its effect can be seen by any reply;
//! - a reply never leaves before the record of every write it could have
//!   observed is released (durable under `--fsync always`).

pub mod message;
mod replies;

pub use replies::ReplyQueue;

use crate::log::{self, Entry, Op};
use crate::protocol::{Reply, Request};
use crate::store::Store;

/// What the connection should do after a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// The client asked to close (QUIT): send what is queued, then close.
    Close,
}

/// A batch of encoded records handed to the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogBatch {
    /// Index of the last record in the batch.
    pub last_index: u64,
}

pub struct Node {
    store: Store,
    /// Epoch stamped on new records; the cluster will advance it.
    epoch: u64,
    /// Index of the last record appended (in memory, perhaps not yet written).
    last_index: u64,
    /// Highest index whose replies may leave (durable, or written, per fsync policy).
    released_index: u64,
    /// Records not yet handed to the disk, in index order.
    unwritten: Vec<u8>,
}

impl Default for Node {
    fn default() -> Self {
        Self::new()
    }
}

impl Node {
    pub fn new() -> Self {
        Node {
            store: Store::new(),
            epoch: 1,
            last_index: 0,
            released_index: 0,
            unwritten: Vec::new(),
        }
    }

    /// Applies one record read back from the log at start-up. Replayed
    /// records are durable by definition.
    pub fn replay(&mut self, entry: &Entry<'_>) {
        self.store.apply(&entry.op);
        self.epoch = self.epoch.max(entry.epoch);
        self.last_index = entry.index;
        self.released_index = entry.index;
    }

    /// Executes one request, pushing its reply onto `replies`.
    pub fn handle(&mut self, request: Request<'_>, replies: &mut ReplyQueue) -> Flow {
        match request {
            Request::Get { key } => {
                let reply = self.store.get(key).map_or(Reply::NotFound, Reply::Value);
                // The value may come from a write not yet durable.
                replies.push(reply, self.last_index, self.released_index);
            }
            Request::Put { key, value } => {
                self.append(Op::Put { key, value });
                self.store.put(key, value);
                replies.push(Reply::Ok, self.last_index, self.released_index);
            }
            Request::Del { key } => {
                // A DEL of a missing key changes nothing and is not logged,
                // but its NOT_FOUND may rest on an earlier, undurable DEL.
                let reply = if self.store.get(key).is_some() {
                    self.append(Op::Del { key });
                    self.store.del(key);
                    Reply::Ok
                } else {
                    Reply::NotFound
                };
                replies.push(reply, self.last_index, self.released_index);
            }
            Request::Ping => replies.push(Reply::Pong, 0, self.released_index),
            Request::Quit => return Flow::Close,
        }
        Flow::Continue
    }

    fn append(&mut self, op: Op<'_>) {
        self.last_index += 1;
        let entry = Entry {
            epoch: self.epoch,
            index: self.last_index,
            op,
        };
        log::encode(&entry, &mut self.unwritten);
    }

    /// Swaps the unwritten records into `buffer` (which must be empty) for
    /// the reactor to write; `None` when there is nothing to write.
    pub fn take_unwritten(&mut self, buffer: &mut Vec<u8>) -> Option<LogBatch> {
        debug_assert!(buffer.is_empty());
        if self.unwritten.is_empty() {
            return None;
        }
        std::mem::swap(&mut self.unwritten, buffer);
        Some(LogBatch {
            last_index: self.last_index,
        })
    }

    /// The log is durable (or written, per the fsync policy) up to `index`.
    pub fn on_log_released(&mut self, index: u64) {
        debug_assert!(index <= self.last_index);
        self.released_index = self.released_index.max(index);
    }

    /// Replies held for indices up to this one may leave.
    pub fn released_index(&self) -> u64 {
        self.released_index
    }

    pub fn last_index(&self) -> u64 {
        self.last_index
    }

    pub fn store(&self) -> &Store {
        &self.store
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(node: &mut Node, queue: &mut ReplyQueue, line: &[u8]) -> Flow {
        node.handle(crate::protocol::parse(line).unwrap(), queue)
    }

    #[test]
    fn a_write_is_acknowledged_only_once_its_record_is_released() {
        let mut node = Node::new();
        let mut queue = ReplyQueue::new();
        run(&mut node, &mut queue, b"PUT k v");
        run(&mut node, &mut queue, b"PING");
        assert_eq!(queue.sendable(node.released_index()), b"");
        let mut buffer = Vec::new();
        let batch = node.take_unwritten(&mut buffer).unwrap();
        assert_eq!(batch.last_index, 1);
        assert!(!buffer.is_empty());
        node.on_log_released(batch.last_index);
        assert_eq!(queue.sendable(node.released_index()), b"OK\nPONG\n");
    }

    #[test]
    fn a_read_of_an_undurable_write_waits_for_it() {
        let mut node = Node::new();
        let mut writer = ReplyQueue::new();
        let mut reader = ReplyQueue::new();
        run(&mut node, &mut writer, b"PUT k v");
        run(&mut node, &mut reader, b"GET k");
        assert_eq!(reader.sendable(node.released_index()), b"");
        node.on_log_released(1);
        assert_eq!(reader.sendable(node.released_index()), b"v\n");
    }

    #[test]
    fn reads_of_durable_state_are_not_held() {
        let mut node = Node::new();
        node.replay(&Entry {
            epoch: 3,
            index: 7,
            op: Op::Put {
                key: b"k",
                value: b"old",
            },
        });
        let mut queue = ReplyQueue::new();
        run(&mut node, &mut queue, b"GET k");
        run(&mut node, &mut queue, b"GET missing");
        assert_eq!(queue.sendable(node.released_index()), b"old\nNOT_FOUND\n");
        assert!(node.take_unwritten(&mut Vec::new()).is_none());
    }

    #[test]
    fn delete_of_a_missing_key_is_not_logged() {
        let mut node = Node::new();
        let mut queue = ReplyQueue::new();
        run(&mut node, &mut queue, b"DEL nothing");
        assert_eq!(node.last_index(), 0);
        assert_eq!(queue.sendable(0), b"NOT_FOUND\n");
        run(&mut node, &mut queue, b"PUT a 1");
        run(&mut node, &mut queue, b"DEL a");
        assert_eq!(node.last_index(), 2);
        node.on_log_released(2);
        assert_eq!(queue.sendable(2), b"NOT_FOUND\nOK\nOK\n");
    }

    #[test]
    fn quit_closes_without_a_reply() {
        let mut node = Node::new();
        let mut queue = ReplyQueue::new();
        assert_eq!(run(&mut node, &mut queue, b"quit"), Flow::Close);
        assert!(queue.is_empty());
    }
}
