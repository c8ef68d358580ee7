//! What the core remembers about one RESP connection between its requests:
//! its name, an open `MULTI` and the keys it `WATCH`es.
//!
//! The driver owns one per connection and hands it to
//! [`Node::handle_command`](super::Node::handle_command) with each request;
//! the core never keeps a reference to a connection.

use std::ops::Range;

use crate::protocol::resp::Args;

/// A `MULTI` block's commands queued (copied: the connection's buffer
/// moves on) until `EXEC`.
#[derive(Debug, Default)]
pub(super) struct Transaction {
    /// Every queued command's arguments, one after the other.
    bytes: Vec<u8>,
    /// Each argument's range in `bytes`.
    arguments: Vec<Range<usize>>,
    /// Each command's range in `arguments`.
    commands: Vec<Range<usize>>,
    /// A command was refused while queuing: `EXEC` discards them all
    /// (Redis's `EXECABORT`).
    pub(super) dirty: bool,
}

impl Transaction {
    pub(super) fn queue(&mut self, args: &Args<'_>) {
        let first = self.arguments.len();
        for arg in args.iter() {
            let start = self.bytes.len();
            self.bytes.extend_from_slice(arg);
            self.arguments.push(start..self.bytes.len());
        }
        self.commands.push(first..self.arguments.len());
    }

    pub(super) fn len(&self) -> usize {
        self.commands.len()
    }

    /// The `index`th queued command.
    pub(super) fn command(&self, index: usize) -> Args<'_> {
        let range = self.commands[index].clone();
        Args::new(&self.bytes, &self.arguments[range])
    }

    /// The memory the queued commands hold.
    pub(super) fn memory_bytes(&self) -> usize {
        self.bytes.capacity()
            + (self.arguments.capacity() + self.commands.capacity())
                * std::mem::size_of::<Range<usize>>()
    }
}

/// What a `WATCH`ed key looked like when it was watched: the write that set
/// it, or, missing, the latest delete the node had applied (any key's: a
/// delete leaves nothing behind to compare, so any later one counts as a
/// change, which may abort an `EXEC` that Redis would have let through,
/// never the other way round).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Seen {
    Written(u64),
    Missing { last_delete_index: u64 },
}

#[derive(Debug)]
pub(super) struct Watch {
    pub(super) key: Box<[u8]>,
    pub(super) seen: Seen,
}

/// One RESP connection's state in the core.
#[derive(Debug, Default)]
pub struct Session {
    /// `CLIENT ID`: unique among this process's connections.
    pub id: u64,
    /// `CLIENT SETNAME`.
    pub(super) name: Option<Box<[u8]>>,
    pub(super) transaction: Option<Transaction>,
    pub(super) watched: Vec<Watch>,
}

/// The most a `MULTI` block may queue, in bytes of arguments: a block that
/// large could not be logged as one record anyway.
pub const MAX_QUEUED_BYTES: usize = crate::log::MAX_RECORD_BODY_BYTES;

impl Session {
    pub fn new(id: u64) -> Self {
        Session {
            id,
            ..Session::default()
        }
    }

    /// Memory held for this connection beyond its buffers (a queued
    /// `MULTI` block, watched keys), counted in the client buffer budget.
    pub fn memory_bytes(&self) -> usize {
        let queued = self
            .transaction
            .as_ref()
            .map_or(0, Transaction::memory_bytes);
        let watched: usize = self.watched.iter().map(|watch| watch.key.len() + 32).sum();
        queued + watched
    }

    pub(super) fn queued_bytes(&self) -> usize {
        self.transaction
            .as_ref()
            .map_or(0, |transaction| transaction.bytes.len())
    }
}
