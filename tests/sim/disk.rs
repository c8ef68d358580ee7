//! A simulated data directory: the log file, what of it is durable and what
//! was written but not yet synced (lost, or partly kept as a torn tail, when
//! the node crashes), and the snapshot files.
//!
//! The log is modelled as one file whose first record may have any index
//! (the real log's segments covered by a snapshot are gone); compaction
//! removes whole segments of [`SEGMENT_RECORDS`] records, never the one the
//! log is appended to, and only durable ones. A snapshot is a temporary file
//! until it is published (fsynced and renamed), which is atomic: a crash
//! before loses it, a crash after keeps it.

use std::ops::Range;

use kvstore::log::{self, DecodeError, LOG_MAGIC};

/// Records per simulated log segment: compaction removes whole ones.
pub const SEGMENT_RECORDS: u64 = 8;

#[derive(Debug, Clone)]
pub struct Disk {
    /// The index of the first record in the file (the next one to be
    /// written when the file holds none).
    first_index: u64,
    durable: Vec<u8>,
    written_not_synced: Vec<u8>,
    /// Bytes of records removed from the front of the file (compaction,
    /// reset) so far: a sync in flight counts its position from the start
    /// of the log's history, which removals do not move.
    removed_bytes: usize,
    /// Where each durable record lies: record `first_index + i` at
    /// `durable_records[i]`.
    durable_records: Vec<Range<usize>>,
    /// The published snapshot, durable.
    snapshot: Option<SnapshotFile>,
    /// A snapshot being written: not durable, gone at a crash.
    temporary: Option<SnapshotFile>,
}

/// A snapshot file's bytes and what its header says.
#[derive(Debug, Clone)]
pub struct SnapshotFile {
    pub index: u64,
    pub epoch: u64,
    pub bytes: Vec<u8>,
}

/// What a re-opened data directory holds: the snapshot, the log records
/// after it, in order, and how many bytes of torn tail were cut off.
#[derive(Debug)]
pub struct Reopened {
    pub snapshot: Option<SnapshotFile>,
    /// The index of the first record in the log (of the next one, when it
    /// holds none).
    pub first_index: u64,
    pub records: Vec<Vec<u8>>,
    pub torn_bytes: usize,
}

impl Disk {
    pub fn new() -> Disk {
        Disk {
            first_index: 1,
            durable: LOG_MAGIC.to_vec(),
            written_not_synced: Vec::new(),
            removed_bytes: 0,
            durable_records: Vec::new(),
            snapshot: None,
            temporary: None,
        }
    }

    /// The file's length as the running process sees it.
    pub fn len(&self) -> u64 {
        (self.durable.len() + self.written_not_synced.len()) as u64
    }

    /// Where the end of the log is, counted from the start of its history
    /// (what a sync that begins now will cover: see [`Disk::sync_to`]).
    pub fn position(&self) -> usize {
        self.removed_bytes + self.len() as usize
    }

    /// Where record `index` starts in the file (durable or written), if
    /// the file holds it.
    fn offset_of(&self, index: u64) -> Option<usize> {
        let position = usize::try_from(index.checked_sub(self.first_index)?).ok()?;
        if let Some(range) = self.durable_records.get(position) {
            return Some(range.start);
        }
        let mut offset = self.durable.len();
        let mut at = self.durable_records.len();
        let mut rest = &self.written_not_synced[..];
        while let Ok((_, used)) = log::decode(rest) {
            if at == position {
                return Some(offset);
            }
            at += 1;
            offset += used;
            rest = &rest[used..];
        }
        None
    }

    /// The index the next appended record must have.
    pub fn next_index(&self) -> u64 {
        let mut next = self.first_index + self.durable_records.len() as u64;
        let mut rest = &self.written_not_synced[..];
        while let Ok((_, used)) = log::decode(rest) {
            next += 1;
            rest = &rest[used..];
        }
        next
    }

    /// Whole records from `from_index` on, up to `max_bytes` but at least
    /// one, as the running process reads them (durable and written alike).
    /// Like `Log::read`, a read stops at the end of a segment.
    pub fn read_records(&self, from_index: u64, max_bytes: usize) -> Vec<u8> {
        let Some(start) = self.offset_of(from_index) else {
            return Vec::new();
        };
        let segment_end = segment_start(from_index) + SEGMENT_RECORDS;
        let records = (segment_end - from_index) as usize;
        let whole: Vec<u8> = self
            .durable
            .iter()
            .chain(&self.written_not_synced)
            .skip(start)
            .copied()
            .collect();
        let mut end = 0;
        let mut taken = 0;
        while let Ok((_, used)) = log::decode(&whole[end..]) {
            if taken == records || (end > 0 && end + used > max_bytes) {
                break;
            }
            end += used;
            taken += 1;
        }
        whole[..end].to_vec()
    }

    /// Keeps the records up to `index`, as `Log::truncate_after` does.
    pub fn truncate_after(&mut self, index: u64) -> Result<(), String> {
        if index + 1 < self.first_index {
            return Err(format!(
                "cannot cut after index {index}: the log starts at {}",
                self.first_index
            ));
        }
        match self.offset_of(index + 1) {
            Some(offset) => self.truncate(offset as u64),
            None if index + 1 >= self.next_index() => Ok(()),
            None => Err(format!("cannot cut after index {index}: no such record")),
        }
    }

    pub fn unsynced_len(&self) -> usize {
        self.written_not_synced.len()
    }

    /// Cuts the file (durable and written bytes alike) to `length` bytes.
    /// The cut is taken as durable at once: a crash before the next sync
    /// may keep it or not, and keeping it is the harder case (the cut
    /// records were durable and may have been acknowledged).
    fn truncate(&mut self, length: u64) -> Result<(), String> {
        let length = usize::try_from(length).map_err(|_| "truncate length overflows")?;
        if length < LOG_MAGIC.len() {
            return Err(format!("truncate to {length} cuts into the log header"));
        }
        if length as u64 > self.len() {
            return Err(format!(
                "truncate to {length} is past the end of the file ({} bytes)",
                self.len()
            ));
        }
        if length <= self.durable.len() {
            self.durable.truncate(length);
            self.written_not_synced.clear();
            let kept = self
                .durable_records
                .partition_point(|record| record.end <= length);
            self.durable_records.truncate(kept);
        } else {
            self.written_not_synced
                .truncate(length - self.durable.len());
        }
        Ok(())
    }

    /// Appends whole records whose first has index `first_index`.
    pub fn append(&mut self, first_index: u64, bytes: &[u8]) -> Result<(), String> {
        if !bytes.is_empty() && first_index != self.next_index() {
            return Err(format!(
                "appending records from index {first_index} to a log whose next index is {}",
                self.next_index()
            ));
        }
        self.written_not_synced.extend_from_slice(bytes);
        Ok(())
    }

    /// fdatasync completed: everything written so far is durable.
    pub fn sync(&mut self) {
        self.sync_to(self.position());
    }

    /// An fdatasync that began when the log ended at `position` (see
    /// [`Disk::position`]) completed: the bytes written before it began are
    /// durable, those written since are not (yet). A `position` past the end
    /// would mean the file was cut since the sync began; only what is still
    /// there counts.
    pub fn sync_to(&mut self, position: usize) {
        let length = position.saturating_sub(self.removed_bytes);
        let Some(covered) = length.checked_sub(self.durable.len()) else {
            return;
        };
        let covered = covered.min(self.written_not_synced.len());
        let mut offset = self.durable.len();
        self.durable
            .extend(self.written_not_synced.drain(..covered));
        while offset < self.durable.len() {
            let (_, used) =
                log::decode(&self.durable[offset..]).expect("the core writes whole records");
            self.durable_records.push(offset..offset + used);
            offset += used;
        }
    }

    /// The epoch of the last durable record, or of the snapshot when the
    /// log holds none (0 for neither).
    pub fn last_durable_epoch(&self) -> Result<u64, String> {
        let Some(range) = self.durable_records.last() else {
            return Ok(self.snapshot.as_ref().map_or(0, |snapshot| snapshot.epoch));
        };
        log::decode(&self.durable[range.clone()])
            .map(|(entry, _)| entry.epoch)
            .map_err(|error| format!("a durable record no longer decodes: {error}"))
    }

    /// The durable bytes of record `index`, if the file holds it durably.
    pub fn durable_record(&self, index: u64) -> Option<&[u8]> {
        let position = usize::try_from(index.checked_sub(self.first_index)?).ok()?;
        let range = self.durable_records.get(position)?.clone();
        Some(&self.durable[range])
    }

    /// The index the published snapshot covers (0 without one).
    pub fn snapshot_index(&self) -> u64 {
        self.snapshot.as_ref().map_or(0, |snapshot| snapshot.index)
    }

    pub fn snapshot(&self) -> Option<&SnapshotFile> {
        self.snapshot.as_ref()
    }

    /// A snapshot file of `index` is started (a temporary file).
    pub fn begin_snapshot(&mut self, index: u64, epoch: u64) {
        self.temporary = Some(SnapshotFile {
            index,
            epoch,
            bytes: Vec::new(),
        });
    }

    pub fn write_snapshot(&mut self, bytes: &[u8]) -> Result<(), String> {
        let temporary = self
            .temporary
            .as_mut()
            .ok_or("snapshot bytes without a snapshot file")?;
        temporary.bytes.extend_from_slice(bytes);
        Ok(())
    }

    /// The temporary file is abandoned (removed).
    pub fn abandon_snapshot(&mut self) {
        self.temporary = None;
    }

    /// fsync, rename, fsync the directory: the temporary file of `index`
    /// becomes the snapshot, durably, and older snapshots go. Returns its
    /// size.
    pub fn publish_snapshot(&mut self, index: u64) -> Result<u64, String> {
        let temporary = self
            .temporary
            .take()
            .filter(|temporary| temporary.index == index)
            .ok_or_else(|| format!("publishing snapshot {index}, which is not being written"))?;
        let file_bytes = temporary.bytes.len() as u64;
        self.snapshot = Some(temporary);
        Ok(file_bytes)
    }

    /// Discards every record, durably: the log continues after `index` (a
    /// follower installed a snapshot there), as `Log::reset` does.
    pub fn reset_after(&mut self, index: u64) {
        self.removed_bytes += self.len() as usize - LOG_MAGIC.len();
        self.durable.truncate(LOG_MAGIC.len());
        self.written_not_synced.clear();
        self.durable_records.clear();
        self.first_index = index + 1;
    }

    /// Bytes `offset..offset + max_bytes` of the published snapshot of
    /// `index`, if that is the one on disk.
    pub fn read_snapshot(&self, index: u64, offset: u64, max_bytes: usize) -> Option<Vec<u8>> {
        let snapshot = self
            .snapshot
            .as_ref()
            .filter(|snapshot| snapshot.index == index)?;
        let start = usize::try_from(offset).ok()?.min(snapshot.bytes.len());
        let end = start.saturating_add(max_bytes).min(snapshot.bytes.len());
        Some(snapshot.bytes[start..end].to_vec())
    }

    /// Removes the segments whose records are all at or below `index`,
    /// never the last one, and only durable ones (`Log::remove_through`).
    pub fn compact_through(&mut self, index: u64) {
        let last_written = self.next_index() - 1;
        let active_segment_start = segment_start(last_written.max(self.first_index));
        let durable_end = self.first_index + self.durable_records.len() as u64;
        let mut keep_from = self.first_index;
        while segment_start(keep_from) + SEGMENT_RECORDS - 1 <= index
            && segment_start(keep_from) < active_segment_start
            && segment_start(keep_from) + SEGMENT_RECORDS <= durable_end
        {
            keep_from = segment_start(keep_from) + SEGMENT_RECORDS;
        }
        self.drop_records_before(keep_from);
    }

    /// Forgets the durable records before `keep_from`.
    fn drop_records_before(&mut self, keep_from: u64) {
        let dropped = (keep_from - self.first_index) as usize;
        if dropped == 0 {
            return;
        }
        let cut = self.durable_records[dropped - 1].end;
        let removed = cut - LOG_MAGIC.len();
        self.removed_bytes += removed;
        self.durable.drain(LOG_MAGIC.len()..cut);
        self.durable_records.drain(..dropped);
        for range in &mut self.durable_records {
            *range = range.start - removed..range.end - removed;
        }
        self.first_index = keep_from;
    }

    /// The process died: the unsynced bytes are lost, except the first
    /// `keep` of them (pages the kernel happened to write back: a torn
    /// tail); a snapshot still being written is lost.
    pub fn crash(&mut self, keep: usize) {
        let keep = keep.min(self.written_not_synced.len());
        self.durable
            .extend_from_slice(&self.written_not_synced[..keep]);
        self.written_not_synced.clear();
        self.temporary = None;
    }

    /// Re-opens the data directory the way start-up does: decode records
    /// from the header on, stop at the first incomplete or bad one (a torn
    /// tail) and cut the file there (records out of order are corruption);
    /// then continue after the snapshot: records it covers are skipped, and
    /// a record at its index of another epoch (and all after it) belong to
    /// a history it replaced and are cut.
    pub fn reopen(&mut self) -> Result<Reopened, String> {
        assert!(self.written_not_synced.is_empty(), "reopen after a crash");
        let torn_bytes = self.scan()?;
        let snapshot = self.snapshot.clone();
        if let Some(snapshot) = &snapshot {
            self.continue_after(snapshot.index, snapshot.epoch)?;
        }
        let records = (0..self.durable_records.len())
            .map(|position| self.durable[self.durable_records[position].clone()].to_vec())
            .collect();
        Ok(Reopened {
            snapshot,
            first_index: self.first_index,
            records,
            torn_bytes,
        })
    }

    /// Rebuilds `durable_records` from the bytes, cutting a torn tail;
    /// returns the bytes cut.
    fn scan(&mut self) -> Result<usize, String> {
        let mut offset = LOG_MAGIC.len();
        self.durable_records.clear();
        let mut previous: Option<(u64, u64)> = None;
        while offset < self.durable.len() {
            match log::decode(&self.durable[offset..]) {
                Ok((entry, used)) => {
                    let expected = previous.map_or(self.first_index, |(index, _)| index + 1);
                    let epoch_before = previous.map_or(0, |(_, epoch)| epoch);
                    if entry.index != expected || entry.epoch < epoch_before {
                        return Err(format!(
                            "log record at byte {offset} has index {} epoch {}, expected index \
                             {expected} and epoch at least {epoch_before}",
                            entry.index, entry.epoch
                        ));
                    }
                    previous = Some((entry.index, entry.epoch));
                    self.durable_records.push(offset..offset + used);
                    offset += used;
                }
                Err(
                    DecodeError::Incomplete | DecodeError::Checksum | DecodeError::Malformed(_),
                ) => break,
            }
        }
        let torn_bytes = self.durable.len() - offset;
        self.durable.truncate(offset);
        Ok(torn_bytes)
    }

    /// Makes the log continue the snapshot of `index` and `epoch`.
    fn continue_after(&mut self, index: u64, epoch: u64) -> Result<(), String> {
        if self.first_index > index + 1 {
            return Err(format!(
                "the log starts at {} after a snapshot of index {index}",
                self.first_index
            ));
        }
        if let Some(record) = self.durable_record(index) {
            let (entry, _) = log::decode(record).map_err(|error| error.to_string())?;
            if entry.epoch != epoch {
                let cut = self.durable_records[(index - self.first_index) as usize].start;
                self.truncate(cut as u64)?;
            }
        }
        let last = self.first_index + self.durable_records.len() as u64 - 1;
        let keep_from = (index + 1).min(last + 1).max(self.first_index);
        self.drop_records_before(keep_from);
        if self.durable_records.is_empty() {
            self.first_index = index + 1;
        }
        Ok(())
    }
}

/// The first index of the simulated segment holding `index`.
fn segment_start(index: u64) -> u64 {
    (index - 1) / SEGMENT_RECORDS * SEGMENT_RECORDS + 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvstore::log::{Entry, Op, encode};

    fn record(index: u64) -> Vec<u8> {
        record_of(1, index)
    }

    fn record_of(epoch: u64, index: u64) -> Vec<u8> {
        let mut out = Vec::new();
        encode(
            &Entry {
                epoch,
                index,
                commit: 0,
                op: Op::Put {
                    key: b"k",
                    value: b"v",
                },
            },
            &mut out,
        );
        out
    }

    #[test]
    fn a_crash_keeps_durable_records_and_cuts_a_torn_tail() {
        let mut disk = Disk::new();
        disk.append(1, &record(1)).unwrap();
        disk.sync();
        disk.append(2, &record(2)).unwrap();
        disk.append(3, &record(3)).unwrap();
        disk.crash(record(2).len() + 3);
        assert_eq!(disk.durable_record(1), Some(&record(1)[..]));
        let reopened = disk.reopen().unwrap();
        assert_eq!(reopened.records, vec![record(1), record(2)]);
        assert_eq!(disk.durable_record(2), Some(&record(2)[..]));
        assert_eq!(disk.durable_record(3), None);
        assert_eq!(reopened.torn_bytes, 3);
        assert_eq!(disk.len(), 8 + 2 * record(1).len() as u64);
    }

    #[test]
    fn a_sync_covers_only_what_was_written_before_it_began() {
        let mut disk = Disk::new();
        disk.append(1, &record(1)).unwrap();
        let started_at = disk.len() as usize;
        disk.append(2, &record(2)).unwrap();
        disk.sync_to(started_at);
        assert_eq!(disk.durable_record(1), Some(&record(1)[..]));
        assert_eq!(disk.durable_record(2), None);
        assert_eq!(disk.unsynced_len(), record(2).len());
        // An older sync completing late changes nothing.
        disk.sync_to(8);
        assert_eq!(disk.unsynced_len(), record(2).len());
        disk.crash(0);
        assert_eq!(disk.reopen().unwrap().records, vec![record(1)]);
    }

    #[test]
    fn truncation_reaches_into_durable_bytes() {
        let mut disk = Disk::new();
        disk.append(1, &record(1)).unwrap();
        disk.append(2, &record(2)).unwrap();
        disk.sync();
        disk.append(3, &record(3)).unwrap();
        assert_eq!(disk.read_records(2, 1), record(2), "at least one record");
        assert_eq!(
            disk.read_records(2, usize::MAX),
            [record(2), record(3)].concat()
        );
        let mut long = disk_with(1..=20);
        long.append(21, &record(21)).unwrap();
        let to_segment_end: Vec<u8> = (6..=8).flat_map(record).collect();
        assert_eq!(
            long.read_records(6, usize::MAX),
            to_segment_end,
            "stops at 8"
        );
        assert!(disk.append(5, &record(5)).is_err(), "a gap");
        disk.truncate_after(1).unwrap();
        disk.crash(usize::MAX);
        assert_eq!(disk.reopen().unwrap().records, vec![record(1)]);
        disk.truncate_after(3).unwrap();
        assert_eq!(
            disk.reopen().unwrap().records,
            vec![record(1)],
            "nothing to cut"
        );
    }

    fn disk_with(records: std::ops::RangeInclusive<u64>) -> Disk {
        let mut disk = Disk::new();
        for index in records {
            disk.append(index, &record(index)).unwrap();
        }
        disk.sync();
        disk
    }

    #[test]
    fn compaction_removes_whole_durable_segments_but_never_the_last() {
        let mut disk = disk_with(1..=20);
        disk.compact_through(12);
        assert_eq!(disk.durable_record(8), None, "segment 1..=8 removed");
        assert_eq!(
            disk.durable_record(9),
            Some(&record(9)[..]),
            "9..=16 holds 13"
        );
        disk.compact_through(20);
        assert_eq!(disk.durable_record(16), None);
        assert_eq!(
            disk.durable_record(17),
            Some(&record(17)[..]),
            "the last segment stays"
        );
        disk.append(21, &record(21)).unwrap();
        assert_eq!(disk.read_records(17, usize::MAX).len(), 5 * record(1).len());
        let mut unsynced = disk_with(1..=8);
        for index in 9..=20 {
            unsynced.append(index, &record(index)).unwrap();
        }
        unsynced.compact_through(16);
        assert_eq!(
            unsynced.durable_record(1),
            None,
            "1..=8 is durable: removed"
        );
        assert_eq!(
            unsynced.read_records(9, usize::MAX).len(),
            8 * record(1).len(),
            "9..=16 is not durable yet: kept"
        );
    }

    #[test]
    fn a_snapshot_is_lost_before_it_is_published_and_kept_after() {
        let mut disk = disk_with(1..=10);
        disk.begin_snapshot(10, 1);
        disk.write_snapshot(b"image").unwrap();
        disk.crash(0);
        assert!(disk.reopen().unwrap().snapshot.is_none());
        disk.begin_snapshot(10, 1);
        disk.write_snapshot(b"image").unwrap();
        assert_eq!(disk.publish_snapshot(10), Ok(5));
        disk.crash(0);
        let reopened = disk.reopen().unwrap();
        assert_eq!(reopened.snapshot.unwrap().bytes, b"image");
        assert!(reopened.records.is_empty(), "the snapshot covers them");
        disk.append(11, &record(11)).unwrap();
        disk.sync();
        assert_eq!(disk.reopen().unwrap().records, vec![record(11)]);
    }

    #[test]
    fn reopening_cuts_a_history_the_snapshot_replaced() {
        let mut disk = Disk::new();
        for index in 1..=4 {
            disk.append(index, &record_of(1, index)).unwrap();
        }
        disk.sync();
        disk.begin_snapshot(3, 2);
        disk.publish_snapshot(3).unwrap();
        let reopened = disk.reopen().unwrap();
        assert!(reopened.records.is_empty(), "record 3 is of epoch 1, not 2");
        assert_eq!(disk.next_index(), 4);
    }
}
