//! The core's view of the log: positions, the records it still holds in
//! memory, and what has yet to reach the disk.
//!
//! The file on disk is the truth after a crash; this is the truth while the
//! process runs. Records are kept as their exact encoded bytes, so the same
//! bytes are written to disk, shipped to followers and decoded to apply.
//!
//! Invariants:
//! - `records` holds every record with index in `first_index..=last_index`,
//!   contiguous, and `starts[i]` is where record `first_index + i` begins;
//! - `records[..handed_off]` has been handed to the disk (written or being
//!   written); the rest is what the next log write must append, after
//!   cutting the log after `truncate_after` if set;
//! - `durable_index <= handed_off_index <= last_index`: nothing counts as
//!   durable that was not handed to the disk, and a truncation of handed-off
//!   records takes them out of what a sync still in flight will cover.
//!
//! A durability report must name an index handed off before its sync began.
//! A driver may hand off more while a sync runs (the reactor's syncer does),
//! but before cutting the log it must wait out the syncs in flight and drop
//! their results: they covered records that are being replaced.
//!
//! The core speaks log indices only: where a record sits in which file is the
//! driver's business (`crate::log`), so this knows no file offsets.

use std::collections::VecDeque;

use crate::log::{self, Base, DecodeError, Entry};

/// Where one record sits.
#[derive(Debug, Clone, Copy)]
struct Slot {
    epoch: u64,
    /// Offset of the record in `records`.
    start: usize,
}

/// What the next log write must do: reset or cut the log, then append.
#[derive(Debug)]
pub struct LogWrite<'a> {
    /// Before anything else, discard every record: the log continues after
    /// this snapshot, which is durable (a follower installed it).
    pub reset: Option<Base>,
    /// Before appending, drop every record after this index (a diverged
    /// suffix that was already handed to the disk).
    pub truncate_after: Option<u64>,
    /// The index of the first record in `bytes` (one past the log's end
    /// after the cut).
    pub first_index: u64,
    /// Whole encoded records `first_index..=last_index`; may be empty when
    /// only a cut is pending.
    pub bytes: &'a [u8],
    pub last_index: u64,
}

#[derive(Debug)]
pub struct LogTail {
    records: Vec<u8>,
    slots: VecDeque<Slot>,
    first_index: u64,
    /// Epoch of record `first_index - 1` (0 when there is none).
    epoch_before_first: u64,
    last_index: u64,
    last_epoch: u64,
    handed_off: usize,
    /// The last record in `records[..handed_off]`.
    handed_off_index: u64,
    /// The lowest index a pending cut keeps (records after it go).
    truncate_after: Option<u64>,
    /// A pending reset of the whole log (see [`LogWrite::reset`]).
    reset: Option<Base>,
    durable_index: u64,
}

impl Default for LogTail {
    fn default() -> Self {
        Self::new()
    }
}

impl LogTail {
    /// An empty log.
    pub fn new() -> Self {
        LogTail {
            records: Vec::new(),
            slots: VecDeque::new(),
            first_index: 1,
            epoch_before_first: 0,
            last_index: 0,
            last_epoch: 0,
            handed_off: 0,
            handed_off_index: 0,
            truncate_after: None,
            reset: None,
            durable_index: 0,
        }
    }

    /// Discards every record: the log continues after `base`, a durable
    /// snapshot, once the driver has reset its files (the next write).
    pub fn reset_after(&mut self, base: Base) {
        *self = LogTail {
            reset: Some(base),
            ..LogTail::after(base.index, base.epoch)
        };
    }

    /// An empty log that continues after record `index` of `epoch` (the
    /// snapshot a node started from).
    pub fn after(index: u64, epoch: u64) -> Self {
        LogTail {
            first_index: index + 1,
            epoch_before_first: epoch,
            last_index: index,
            last_epoch: epoch,
            handed_off_index: index,
            durable_index: index,
            ..LogTail::new()
        }
    }

    pub fn last_index(&self) -> u64 {
        self.last_index
    }

    pub fn last_epoch(&self) -> u64 {
        self.last_epoch
    }

    pub fn durable_index(&self) -> u64 {
        self.durable_index
    }

    /// The epoch of record `index`, if it is known (0 for index 0).
    pub fn epoch_at(&self, index: u64) -> Option<u64> {
        if index == self.first_index - 1 {
            return Some(self.epoch_before_first);
        }
        self.slot(index).map(|slot| slot.epoch)
    }

    fn slot(&self, index: u64) -> Option<&Slot> {
        let offset = index.checked_sub(self.first_index)?;
        self.slots.get(usize::try_from(offset).ok()?)
    }

    /// Appends one record that is already encoded (replay, replication).
    /// The caller has checked it decodes and that its index is next.
    pub fn push_encoded(&mut self, epoch: u64, index: u64, record: &[u8]) {
        debug_assert_eq!(index, self.last_index + 1);
        let start = self.records.len();
        self.records.extend_from_slice(record);
        self.slots.push_back(Slot { epoch, start });
        self.last_index = index;
        self.last_epoch = epoch;
    }

    /// Encodes and appends a new record at the next index.
    pub fn append(&mut self, entry: &Entry<'_>) {
        debug_assert_eq!(entry.index, self.last_index + 1);
        let start = self.records.len();
        log::encode(entry, &mut self.records);
        self.slots.push_back(Slot {
            epoch: entry.epoch,
            start,
        });
        self.last_index = entry.index;
        self.last_epoch = entry.epoch;
    }

    /// Records read back from the disk at start-up are written and durable.
    pub fn mark_replayed(&mut self) {
        self.handed_off = self.records.len();
        self.handed_off_index = self.last_index;
        self.durable_index = self.last_index;
    }

    /// The record bytes of `index`.
    pub fn record(&self, index: u64) -> Option<&[u8]> {
        let offset = usize::try_from(index.checked_sub(self.first_index)?).ok()?;
        let start = self.slots.get(offset)?.start;
        let end = self
            .slots
            .get(offset + 1)
            .map_or(self.records.len(), |next| next.start);
        Some(&self.records[start..end])
    }

    /// The entry of record `index`, decoded without its checksum: every
    /// record held here was verified on arrival or encoded by this node.
    pub fn verified_entry(&self, index: u64) -> Option<Result<Entry<'_>, DecodeError>> {
        self.record(index).map(log::decode_verified)
    }

    /// The encoded records `from..` up to `max_bytes` (at least one record
    /// when any is there, however large: the batch rule of
    /// `message::MAX_FRAME_RECORDS_BYTES`), and the index of the last one
    /// included.
    pub fn records_from(&self, from: u64, max_bytes: usize) -> Option<(&[u8], u64)> {
        let first_offset = usize::try_from(from.checked_sub(self.first_index)?).ok()?;
        let start = self.slots.get(first_offset)?.start;
        let mut last = from;
        let mut end = self.record_end(last);
        while last < self.last_index {
            let next_end = self.record_end(last + 1);
            if next_end - start > max_bytes {
                break;
            }
            last += 1;
            end = next_end;
        }
        Some((&self.records[start..end], last))
    }

    fn record_end(&self, index: u64) -> usize {
        let offset = (index - self.first_index) as usize;
        self.slots
            .get(offset + 1)
            .map_or(self.records.len(), |next| next.start)
    }

    /// Drops every record after `index`. Never below what is in memory.
    pub fn truncate_after(&mut self, index: u64) {
        assert!(index + 1 >= self.first_index, "truncating evicted records");
        if index >= self.last_index {
            return;
        }
        let keep = (index + 1 - self.first_index) as usize;
        let cut = self.slots[keep].start;
        if cut < self.handed_off {
            // Those records are on disk: it must be cut before the next append.
            self.truncate_after = Some(self.truncate_after.map_or(index, |at| at.min(index)));
            self.handed_off = cut;
        }
        self.records.truncate(cut);
        self.slots.truncate(keep);
        self.last_index = index;
        self.last_epoch = self.epoch_at(index).unwrap_or(0);
        self.handed_off_index = self.handed_off_index.min(index);
        self.durable_index = self.durable_index.min(index);
    }

    /// What the next log write must do, if anything.
    pub fn pending_write(&self) -> Option<LogWrite<'_>> {
        let bytes = &self.records[self.handed_off..];
        if bytes.is_empty() && self.truncate_after.is_none() && self.reset.is_none() {
            return None;
        }
        Some(LogWrite {
            reset: self.reset,
            truncate_after: self.truncate_after,
            first_index: self.handed_off_index + 1,
            bytes,
            last_index: self.last_index,
        })
    }

    /// The pending write has been handed to the disk.
    pub fn mark_handed_off(&mut self) {
        self.handed_off = self.records.len();
        self.handed_off_index = self.last_index;
        self.truncate_after = None;
        self.reset = None;
    }

    /// The disk has made everything up to `index` durable: the records of
    /// the writes handed off before the sync began, except those cut since
    /// (a sync still in flight when they were truncated does not cover the
    /// records that replace them, which are not even written yet).
    pub fn mark_durable(&mut self, index: u64) {
        self.durable_index = self.durable_index.max(index.min(self.handed_off_index));
    }

    /// Forgets records up to `index` (they stay on disk). Cheap when it
    /// forgets everything, which is what a single node does every turn.
    pub fn evict_through(&mut self, index: u64) {
        let index = index.min(self.durable_index);
        if index < self.first_index || self.handed_off < self.records.len() {
            return;
        }
        if index == self.last_index {
            self.records.clear();
            self.slots.clear();
            self.handed_off = 0;
            self.epoch_before_first = self.last_epoch;
            self.first_index = index + 1;
        }
    }

    /// Forgets records from the front while more than `budget_bytes` are
    /// held, never past `limit_index` nor past what is durable. To keep the
    /// cost amortized, once over budget it evicts down to half of it.
    pub fn evict_to_budget(&mut self, budget_bytes: usize, limit_index: u64) {
        if self.records.len() <= budget_bytes {
            return;
        }
        let limit_index = limit_index
            .min(self.durable_index)
            .min(self.handed_off_index);
        let target_bytes = budget_bytes / 2;
        let mut evicted = 0u64;
        let mut cut = 0usize;
        while self.records.len() - cut > target_bytes && self.first_index + evicted <= limit_index {
            cut = self
                .slots
                .get(evicted as usize + 1)
                .map_or(self.records.len(), |next| next.start);
            evicted += 1;
        }
        if evicted == 0 {
            return;
        }
        self.epoch_before_first = self.slots[evicted as usize - 1].epoch;
        self.records.drain(..cut);
        self.slots.drain(..evicted as usize);
        for slot in &mut self.slots {
            slot.start -= cut;
        }
        self.handed_off -= cut;
        self.first_index += evicted;
    }

    /// The first record still in memory.
    pub fn first_index(&self) -> u64 {
        self.first_index
    }

    /// Bytes held in memory (for bounds and tests).
    pub fn memory_bytes(&self) -> usize {
        self.records.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::Op;

    fn put(tail: &mut LogTail, epoch: u64) -> u64 {
        let index = tail.last_index() + 1;
        tail.append(&Entry {
            epoch,
            index,
            commit: 0,
            op: Op::Put {
                key: b"k",
                value: b"v",
            },
        });
        index
    }

    #[test]
    fn appends_hand_off_and_become_durable() {
        let mut tail = LogTail::new();
        put(&mut tail, 1);
        put(&mut tail, 1);
        let write = tail.pending_write().unwrap();
        assert_eq!(write.last_index, 2);
        assert_eq!(write.truncate_after, None);
        assert_eq!(write.first_index, 1);
        let written = write.bytes.len();
        assert_eq!(written, tail.memory_bytes());
        tail.mark_handed_off();
        assert!(tail.pending_write().is_none());
        tail.mark_durable(2);
        assert_eq!(tail.durable_index(), 2);
        assert_eq!(tail.verified_entry(2).unwrap().unwrap().index, 2);
    }

    #[test]
    fn truncating_written_records_cuts_the_file_first() {
        let mut tail = LogTail::new();
        put(&mut tail, 1);
        put(&mut tail, 1);
        tail.mark_handed_off();
        tail.mark_durable(2);
        tail.truncate_after(1);
        put(&mut tail, 2);
        let write = tail.pending_write().unwrap();
        assert_eq!(write.truncate_after, Some(1));
        assert_eq!((write.first_index, write.last_index), (2, 2));
        assert_eq!(tail.durable_index(), 1);
        assert_eq!(tail.epoch_at(2), Some(2));
        assert_eq!(tail.last_epoch(), 2);
    }

    #[test]
    fn a_sync_in_flight_across_a_truncation_covers_only_what_is_left() {
        let mut tail = LogTail::new();
        for _ in 0..3 {
            put(&mut tail, 1);
        }
        let written = tail.pending_write().unwrap().last_index;
        tail.mark_handed_off();
        // While that write's sync is in flight, a new leader cuts record 3
        // and sends another in its place; the driver has not written it.
        tail.truncate_after(2);
        put(&mut tail, 2);
        tail.mark_durable(written);
        assert_eq!(tail.durable_index(), 2, "the new record 3 is not on disk");
        assert_eq!(tail.pending_write().unwrap().truncate_after, Some(2));
        tail.mark_handed_off();
        tail.mark_durable(3);
        assert_eq!(tail.durable_index(), 3);
    }

    #[test]
    fn a_sync_from_before_a_truncation_cannot_vouch_for_replacements() {
        let mut tail = LogTail::new();
        put(&mut tail, 1);
        put(&mut tail, 1);
        put(&mut tail, 1);
        tail.mark_handed_off();
        // A sync of index 3 is in flight when records 2 and 3 are replaced.
        tail.truncate_after(1);
        put(&mut tail, 2);
        put(&mut tail, 2);
        tail.mark_durable(3);
        assert_eq!(tail.durable_index(), 1);
        tail.mark_handed_off();
        tail.mark_durable(3);
        assert_eq!(tail.durable_index(), 3);
    }

    #[test]
    fn truncating_unwritten_records_needs_no_file_cut() {
        let mut tail = LogTail::new();
        put(&mut tail, 1);
        tail.mark_handed_off();
        put(&mut tail, 1);
        tail.truncate_after(1);
        assert!(tail.pending_write().is_none());
        assert_eq!(tail.last_index(), 1);
    }

    #[test]
    fn records_from_respects_the_byte_budget_but_sends_at_least_one() {
        let mut tail = LogTail::new();
        for _ in 0..5 {
            put(&mut tail, 1);
        }
        let one = tail.record(1).unwrap().len();
        let (bytes, last) = tail.records_from(2, one * 2).unwrap();
        assert_eq!((bytes.len(), last), (one * 2, 3));
        let (bytes, last) = tail.records_from(4, 1).unwrap();
        assert_eq!((bytes.len(), last), (one, 4));
        assert!(tail.records_from(6, 100).is_none());
    }

    /// The batch rule: records while they fit the target, but always the
    /// first, however large (issue #10: one larger than the target was a
    /// frame the follower refused).
    #[test]
    fn a_record_larger_than_the_target_is_a_batch_of_its_own() {
        let mut tail = LogTail::new();
        let target = 1000;
        let value = vec![b'v'; target];
        put(&mut tail, 1);
        tail.append(&Entry {
            epoch: 1,
            index: 2,
            commit: 0,
            op: Op::Put {
                key: b"big",
                value: &value,
            },
        });
        put(&mut tail, 1);
        put(&mut tail, 1);
        let big = tail.record(2).unwrap();
        assert!(big.len() > target);
        // Before it, the batch stops short of it; from it, it goes alone.
        assert_eq!(tail.records_from(1, target).unwrap().1, 1);
        let (bytes, last) = tail.records_from(2, target).unwrap();
        assert_eq!((bytes, last), (big, 2));
        // After it, the target holds as before.
        let (bytes, last) = tail.records_from(3, target).unwrap();
        assert_eq!((bytes.len(), last), (tail.record(3).unwrap().len() * 2, 4));
    }

    #[test]
    fn eviction_to_a_budget_stops_at_the_limit() {
        let mut tail = LogTail::new();
        for _ in 0..600 {
            put(&mut tail, 1);
        }
        let one = tail.record(1).unwrap().len();
        tail.mark_handed_off();
        tail.mark_durable(600);
        tail.evict_to_budget(one * 100, 550);
        assert_eq!(tail.first_index(), 551, "stops at the limit");
        assert_eq!(tail.memory_bytes(), one * 50);
        assert_eq!(tail.epoch_at(550), Some(1));
        assert_eq!(tail.epoch_at(549), None, "evicted");
        assert_eq!(tail.record(551).unwrap().len(), one);
        // New records still land after the kept ones.
        put(&mut tail, 2);
        let write = tail.pending_write().unwrap();
        assert_eq!((write.first_index, write.bytes.len()), (601, one));
    }

    #[test]
    fn a_reset_discards_every_record_and_continues_after_the_snapshot() {
        let mut tail = LogTail::new();
        put(&mut tail, 1);
        put(&mut tail, 1);
        tail.mark_handed_off();
        tail.reset_after(Base { index: 9, epoch: 3 });
        let write = tail.pending_write().unwrap();
        assert_eq!(write.reset, Some(Base { index: 9, epoch: 3 }));
        assert_eq!((write.first_index, write.bytes.len()), (10, 0));
        assert_eq!(
            (tail.last_index(), tail.last_epoch(), tail.durable_index()),
            (9, 3, 9)
        );
        assert_eq!(tail.epoch_at(9), Some(3));
        put(&mut tail, 4);
        tail.mark_handed_off();
        assert!(tail.pending_write().is_none());
        assert_eq!(tail.last_index(), 10);
    }

    #[test]
    fn eviction_keeps_positions() {
        let mut tail = LogTail::new();
        put(&mut tail, 3);
        tail.mark_handed_off();
        tail.mark_durable(1);
        tail.evict_through(1);
        assert_eq!(tail.memory_bytes(), 0);
        assert_eq!(tail.epoch_at(1), Some(3));
        assert_eq!((tail.last_index(), tail.last_epoch()), (1, 3));
        put(&mut tail, 3);
        put(&mut tail, 3);
        tail.mark_handed_off();
        tail.truncate_after(2);
        let write = tail.pending_write().unwrap();
        assert_eq!(write.truncate_after, Some(2));
        assert_eq!((write.first_index, write.bytes.len()), (3, 0));
    }
}
