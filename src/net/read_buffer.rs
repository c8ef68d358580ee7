//! Received bytes not yet consumed, filled by one read(2) at a time. Shared
//! by the server's client connections and the load generator's.
//!
//! Readiness is edge-triggered, so a read that fills the buffer, or a short
//! read after the peer's FIN was reported, says [`ReadOutcome::MoreMaybe`]:
//! no new event would announce what is left. The buffer starts at one chunk
//! and grows only while one unit (a line, a reply) is longer than it, up to
//! the caller's limit.
//!
//! One read takes at most [`READ_CHUNK_BYTES`], however large the buffer has
//! grown: a turn of the event loop then costs a bounded amount per ready
//! connection, so a client streaming a huge line (or garbage) cannot make
//! every other client wait behind one long copy.

use std::io::{self, Read};

/// Bytes asked of the kernel per read; the buffer starts at this size.
pub const READ_CHUNK_BYTES: usize = 16 * 1024;

/// How a read went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadOutcome {
    /// Read some bytes; the socket may hold more.
    MoreMaybe,
    /// The socket is empty for now.
    Drained,
    /// The peer closed its sending side.
    Closed,
    /// The buffer is at its limit and was not read into: it holds one unit
    /// longer than the limit allows.
    Full,
}

#[derive(Debug, Default)]
pub struct ReadBuffer {
    /// `bytes[start..end]` is received and not yet consumed.
    bytes: Vec<u8>,
    start: usize,
    end: usize,
    /// The peer's FIN was reported: a short read no longer means drained.
    peer_closed: bool,
    /// Bytes consumed (or discarded) since the buffer was made: where
    /// `buffered()` starts in the stream, so a caller can tell whether what
    /// it learned of the buffered bytes still holds.
    consumed_total: u64,
}

impl ReadBuffer {
    pub fn new() -> Self {
        Self::default()
    }

    /// The poller reported the peer's FIN (it may sit behind unread data).
    pub fn note_peer_closed(&mut self) {
        self.peer_closed = true;
    }

    /// One read(2) from `source`, growing the buffer to at most `limit_bytes`.
    pub fn read_once(
        &mut self,
        source: &mut impl Read,
        limit_bytes: usize,
    ) -> io::Result<ReadOutcome> {
        if !self.make_room(limit_bytes) {
            return Ok(ReadOutcome::Full);
        }
        let chunk_end = (self.end + READ_CHUNK_BYTES).min(self.bytes.len());
        loop {
            match source.read(&mut self.bytes[self.end..chunk_end]) {
                Ok(0) => return Ok(ReadOutcome::Closed),
                Ok(count) => {
                    self.end += count;
                    let filled = self.end == chunk_end;
                    return Ok(if filled || self.peer_closed {
                        ReadOutcome::MoreMaybe
                    } else {
                        ReadOutcome::Drained
                    });
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    return Ok(ReadOutcome::Drained);
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// Makes room at the end: rewind when all is consumed, move a partial
    /// unit to the front, or grow. False when the limit allows no room.
    fn make_room(&mut self, limit_bytes: usize) -> bool {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        if self.bytes.len() < READ_CHUNK_BYTES {
            self.bytes.resize(READ_CHUNK_BYTES, 0);
        }
        if self.end < self.bytes.len() {
            return true;
        }
        if self.start > 0 {
            self.bytes.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            return true;
        }
        if self.bytes.len() >= limit_bytes {
            return false;
        }
        let grown = (self.bytes.len() * 2).min(limit_bytes);
        self.bytes.resize(grown, 0);
        true
    }

    pub fn buffered(&self) -> &[u8] {
        &self.bytes[self.start..self.end]
    }

    pub fn consume(&mut self, count: usize) {
        debug_assert!(self.start + count <= self.end);
        self.start += count;
        self.consumed_total += count as u64;
    }

    /// Where `buffered()` starts in the stream: bytes consumed or discarded
    /// so far.
    pub fn consumed_total(&self) -> u64 {
        self.consumed_total
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// The memory the buffer holds.
    pub fn capacity_bytes(&self) -> usize {
        self.bytes.capacity()
    }

    /// Gives back memory grown for a long unit once everything is consumed.
    pub fn shrink_if_idle(&mut self) {
        if self.is_empty() && self.bytes.len() > READ_CHUNK_BYTES {
            self.discard();
        }
    }

    /// Drops every byte and the memory holding them.
    pub fn discard(&mut self) {
        self.consumed_total += (self.end - self.start) as u64;
        self.bytes = Vec::new();
        self.start = 0;
        self.end = 0;
    }

    /// What is left, for whoever takes the connection over.
    pub fn into_rest(self) -> Vec<u8> {
        self.bytes[self.start..self.end].to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_consumes_and_rewinds() {
        let mut buffer = ReadBuffer::new();
        let mut source: &[u8] = b"PING\nPI";
        assert_eq!(
            buffer.read_once(&mut source, 64).unwrap(),
            ReadOutcome::Drained
        );
        assert_eq!(buffer.buffered(), b"PING\nPI");
        buffer.consume(5);
        assert_eq!(buffer.buffered(), b"PI");
        assert_eq!(buffer.consumed_total(), 5);
        assert_eq!(
            buffer.read_once(&mut source, 64).unwrap(),
            ReadOutcome::Closed
        );
        // Discarded bytes count too: what was learned of them is void.
        buffer.discard();
        assert_eq!(buffer.consumed_total(), 7);
    }

    #[test]
    fn a_short_read_after_a_reported_fin_asks_to_read_again() {
        let mut buffer = ReadBuffer::new();
        buffer.note_peer_closed();
        let mut source: &[u8] = b"PING\n";
        assert_eq!(
            buffer.read_once(&mut source, 64).unwrap(),
            ReadOutcome::MoreMaybe
        );
        assert_eq!(
            buffer.read_once(&mut source, 64).unwrap(),
            ReadOutcome::Closed
        );
    }

    #[test]
    fn grows_for_one_long_unit_up_to_the_limit_then_is_full() {
        let long = vec![b'x'; READ_CHUNK_BYTES * 3];
        let mut source: &[u8] = &long;
        let mut buffer = ReadBuffer::new();
        let limit = READ_CHUNK_BYTES * 2;
        assert_eq!(
            buffer.read_once(&mut source, limit).unwrap(),
            ReadOutcome::MoreMaybe
        );
        assert_eq!(
            buffer.read_once(&mut source, limit).unwrap(),
            ReadOutcome::MoreMaybe
        );
        assert_eq!(buffer.buffered().len(), limit);
        assert_eq!(
            buffer.read_once(&mut source, limit).unwrap(),
            ReadOutcome::Full
        );
        buffer.consume(limit);
        buffer.shrink_if_idle();
        assert_eq!(
            buffer.read_once(&mut source, limit).unwrap(),
            ReadOutcome::MoreMaybe
        );
        assert_eq!(buffer.buffered().len(), READ_CHUNK_BYTES);
    }

    #[test]
    fn one_read_takes_at_most_one_chunk_however_large_the_buffer() {
        let long = vec![b'x'; READ_CHUNK_BYTES * 8];
        let mut source: &[u8] = &long;
        let mut buffer = ReadBuffer::new();
        let limit = READ_CHUNK_BYTES * 8;
        for reads in 1..=4 {
            assert_eq!(
                buffer.read_once(&mut source, limit).unwrap(),
                ReadOutcome::MoreMaybe
            );
            assert_eq!(buffer.buffered().len(), READ_CHUNK_BYTES * reads);
        }
        // The buffer has grown to hold four chunks; the next read still
        // takes one, not all the room there is.
        buffer.consume(READ_CHUNK_BYTES * 3);
        buffer.read_once(&mut source, limit).unwrap();
        assert_eq!(buffer.buffered().len(), READ_CHUNK_BYTES * 2);
    }
}
