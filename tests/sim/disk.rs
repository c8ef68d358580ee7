//! A simulated log file: what is durable, and what was written but not yet
//! synced (lost, or partly kept as a torn tail, when the node crashes).
//!
//! The file starts with the 8-byte log header, so the offsets the core asks
//! to truncate to are file offsets, exactly as with the real `LogFile`.

use std::ops::Range;

use kvstore::log::{self, DecodeError, LOG_MAGIC};

#[derive(Debug, Clone)]
pub struct Disk {
    durable: Vec<u8>,
    written_not_synced: Vec<u8>,
    /// Where each durable record lies: record `i` (indexes start at 1 and
    /// are contiguous) at `durable_records[i - 1]`.
    durable_records: Vec<Range<usize>>,
}

/// What a re-opened log holds: its records, in order, and how many bytes of
/// torn tail were cut off.
#[derive(Debug)]
pub struct Reopened {
    pub records: Vec<Vec<u8>>,
    pub torn_bytes: usize,
}

impl Disk {
    pub fn new() -> Disk {
        Disk {
            durable: LOG_MAGIC.to_vec(),
            written_not_synced: Vec::new(),
            durable_records: Vec::new(),
        }
    }

    /// The file's length as the running process sees it.
    pub fn len(&self) -> u64 {
        (self.durable.len() + self.written_not_synced.len()) as u64
    }

    /// Where record `index` starts in the file (durable or written), if
    /// the file holds it.
    fn offset_of(&self, index: u64) -> Option<usize> {
        let position = usize::try_from(index.checked_sub(1)?).ok()?;
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
    fn next_index(&self) -> u64 {
        let mut next = self.durable_records.len() as u64 + 1;
        let mut rest = &self.written_not_synced[..];
        while let Ok((_, used)) = log::decode(rest) {
            next += 1;
            rest = &rest[used..];
        }
        next
    }

    /// Whole records from `from_index` on, up to `max_bytes` but at least
    /// one, as the running process reads them (durable and written alike).
    pub fn read_records(&self, from_index: u64, max_bytes: usize) -> Vec<u8> {
        let Some(start) = self.offset_of(from_index) else {
            return Vec::new();
        };
        let whole: Vec<u8> = self
            .durable
            .iter()
            .chain(&self.written_not_synced)
            .skip(start)
            .copied()
            .collect();
        let mut end = 0;
        while let Ok((_, used)) = log::decode(&whole[end..]) {
            if end > 0 && end + used > max_bytes {
                break;
            }
            end += used;
        }
        whole[..end].to_vec()
    }

    /// Keeps the records up to `index`, as `Log::truncate_after` does.
    pub fn truncate_after(&mut self, index: u64) -> Result<(), String> {
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
        self.sync_to(self.len() as usize);
    }

    /// An fdatasync that began when the file was `length` bytes long
    /// completed: the bytes written before it began are durable, those
    /// written since are not (yet). A `length` past the end would mean the
    /// file was cut since the sync began; only what is still there counts.
    pub fn sync_to(&mut self, length: usize) {
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

    /// The epoch of the last durable record (0 for an empty log).
    pub fn last_durable_epoch(&self) -> Result<u64, String> {
        let Some(range) = self.durable_records.last() else {
            return Ok(0);
        };
        log::decode(&self.durable[range.clone()])
            .map(|(entry, _)| entry.epoch)
            .map_err(|error| format!("a durable record no longer decodes: {error}"))
    }

    /// The durable bytes of record `index`, if the file holds it durably.
    pub fn durable_record(&self, index: u64) -> Option<&[u8]> {
        let position = usize::try_from(index.checked_sub(1)?).ok()?;
        let range = self.durable_records.get(position)?.clone();
        Some(&self.durable[range])
    }

    /// The process died: the unsynced bytes are lost, except the first
    /// `keep` of them (pages the kernel happened to write back: a torn tail).
    pub fn crash(&mut self, keep: usize) {
        let keep = keep.min(self.written_not_synced.len());
        self.durable
            .extend_from_slice(&self.written_not_synced[..keep]);
        self.written_not_synced.clear();
    }

    /// Re-opens the log the way `LogFile::open` does: decode records from
    /// the header on, stop at the first incomplete or bad one (a torn tail)
    /// and cut the file there. Records out of order are corruption.
    pub fn reopen(&mut self) -> Result<Reopened, String> {
        assert!(self.written_not_synced.is_empty(), "reopen after a crash");
        let mut offset = LOG_MAGIC.len();
        let mut records = Vec::new();
        self.durable_records.clear();
        let mut previous: Option<(u64, u64)> = None;
        while offset < self.durable.len() {
            match log::decode(&self.durable[offset..]) {
                Ok((entry, used)) => {
                    if let Some((index, epoch)) = previous
                        && (entry.index != index + 1 || entry.epoch < epoch)
                    {
                        return Err(format!(
                            "log record at byte {offset} has index {} epoch {} after index \
                             {index} epoch {epoch}",
                            entry.index, entry.epoch
                        ));
                    }
                    if previous.is_none() && entry.index != 1 {
                        return Err(format!("the first log record has index {}", entry.index));
                    }
                    previous = Some((entry.index, entry.epoch));
                    self.durable_records.push(offset..offset + used);
                    records.push(self.durable[offset..offset + used].to_vec());
                    offset += used;
                }
                Err(
                    DecodeError::Incomplete | DecodeError::Checksum | DecodeError::Malformed(_),
                ) => {
                    break;
                }
            }
        }
        let torn_bytes = self.durable.len() - offset;
        self.durable.truncate(offset);
        Ok(Reopened {
            records,
            torn_bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvstore::log::{Entry, Op, encode};

    fn record(index: u64) -> Vec<u8> {
        let mut out = Vec::new();
        encode(
            &Entry {
                epoch: 1,
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
}
