//! Where records sit in the log file: the reactor's map from log indices
//! (what the core speaks) to byte offsets (what the file needs), for reads
//! of evicted records and for cutting a diverged suffix.
//!
//! Sparse: the offset of one record in [`SAMPLE_INTERVAL`] is kept; finding
//! any other record reads forward from the nearest sample, never scanning
//! more than that many records.

use std::io;

use crate::log::{self, LogFile};

/// One record in this many has its offset remembered.
const SAMPLE_INTERVAL: u64 = 64;

/// A read of the log file that must hold `SAMPLE_INTERVAL` records and the
/// ones wanted starts at this size and doubles while it does not.
const FIRST_READ_BYTES: usize = 1024 * 1024;

/// The sampled (index, offset) pairs of the log file.
#[derive(Debug)]
pub struct LogIndex {
    /// Increasing in both parts; the first is the first record's.
    samples: Vec<(u64, u64)>,
    /// The index the next appended record has, and where it goes.
    next_index: u64,
    end_offset: u64,
}

impl LogIndex {
    /// An empty log whose first record will have `first_index` and start
    /// at `offset`.
    pub fn new(first_index: u64, offset: u64) -> LogIndex {
        LogIndex {
            samples: Vec::new(),
            next_index: first_index,
            end_offset: offset,
        }
    }

    /// Record `index` starts at `offset` (replay and appends, in order; the
    /// first record of a log may have any index).
    pub fn note(&mut self, index: u64, offset: u64, length: u64) {
        debug_assert!(self.samples.is_empty() || index == self.next_index);
        if self.samples.is_empty() || index.is_multiple_of(SAMPLE_INTERVAL) {
            self.samples.push((index, offset));
        }
        self.next_index = index + 1;
        self.end_offset = offset + length;
    }

    /// Notes every record of `bytes` (whole records from `first_index`),
    /// appended at the end of the file.
    pub fn note_appended(&mut self, first_index: u64, bytes: &[u8]) {
        let mut offset = self.end_offset;
        let mut index = first_index;
        let mut rest = bytes;
        while let Some(length) = log::record::declared_record_bytes(rest) {
            self.note(index, offset, length as u64);
            offset += length as u64;
            index += 1;
            rest = &rest[length..];
        }
    }

    /// Where to start reading for record `index`: a sampled record at or
    /// before it.
    fn sample_before(&self, index: u64) -> Option<(u64, u64)> {
        let position = self
            .samples
            .partition_point(|(sampled, _)| *sampled <= index);
        position.checked_sub(1).map(|at| self.samples[at])
    }

    /// Whole records from `from_index` on, up to about `max_bytes` (at
    /// least one), read from `file` into `out`.
    pub fn read(
        &self,
        file: &LogFile,
        from_index: u64,
        max_bytes: usize,
        out: &mut Vec<u8>,
    ) -> io::Result<()> {
        out.clear();
        let Some((sampled, offset)) = self.sample_before(from_index) else {
            return Ok(());
        };
        let mut read_bytes = FIRST_READ_BYTES.max(max_bytes);
        loop {
            let mut buffer = Vec::new();
            file.read_at(offset, read_bytes, &mut buffer)?;
            let complete = buffer.len() < read_bytes;
            if let Some(range) = records_from(&buffer, sampled, from_index, max_bytes, complete) {
                out.extend_from_slice(&buffer[range]);
                return Ok(());
            }
            read_bytes *= 2;
        }
    }

    /// The byte offset where record `index + 1` starts: the file length
    /// that keeps records up to `index`.
    pub fn cut_offset(&self, file: &LogFile, index: u64) -> io::Result<u64> {
        if index + 1 >= self.next_index {
            return Ok(self.end_offset);
        }
        let Some((sampled, mut offset)) = self.sample_before(index + 1) else {
            return Ok(self.end_offset);
        };
        let mut buffer = Vec::new();
        // Cuts drop uncommitted records, which sit near the end.
        file.read_at(offset, self.span_bytes(offset), &mut buffer)?;
        let mut rest = &buffer[..];
        for _ in sampled..=index {
            let length = log::record::declared_record_bytes(rest).unwrap_or(rest.len());
            offset += length as u64;
            rest = &rest[length.min(rest.len())..];
        }
        Ok(offset)
    }

    fn span_bytes(&self, from_offset: u64) -> usize {
        usize::try_from(self.end_offset - from_offset).unwrap_or(usize::MAX)
    }

    /// Forgets records after `index` (the file was cut there).
    pub fn truncate_after(&mut self, index: u64, length: u64) {
        self.samples.retain(|(sampled, _)| *sampled <= index);
        self.next_index = index + 1;
        self.end_offset = length;
    }
}

/// The byte range of `buffer` (whose first record has index `first_index`)
/// holding whole records from `from_index` on, up to `max_bytes` but at
/// least one. `None` when the buffer ends too early and was not the file's
/// end (`complete`).
fn records_from(
    buffer: &[u8],
    first_index: u64,
    from_index: u64,
    max_bytes: usize,
    complete: bool,
) -> Option<std::ops::Range<usize>> {
    let mut offset = 0;
    let mut index = first_index;
    let mut start = None;
    while let Some(length) = log::record::declared_record_bytes(&buffer[offset..]) {
        if offset + length > buffer.len() {
            break;
        }
        if index == from_index {
            start = Some(offset);
        }
        if let Some(start) = start
            && offset + length - start > max_bytes
            && offset > start
        {
            return Some(start..offset);
        }
        offset += length;
        index += 1;
    }
    match start {
        Some(start) if start < offset || complete => Some(start..offset),
        None if complete => Some(offset..offset),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::{Entry, LOG_HEADER_BYTES, Op, encode};

    fn records(first: u64, last: u64) -> Vec<u8> {
        let mut bytes = Vec::new();
        for index in first..=last {
            let value = vec![b'v'; (index % 7) as usize];
            let op = Op::Put {
                key: b"k",
                value: &value,
            };
            encode(
                &Entry {
                    epoch: 1,
                    index,
                    commit: 0,
                    op,
                },
                &mut bytes,
            );
        }
        bytes
    }

    #[test]
    fn finds_any_record_by_index_and_cuts_at_its_start() {
        let directory = tempfile::tempdir().unwrap();
        let (mut file, _) = LogFile::open(directory.path(), |_, _| {}).unwrap();
        let mut index = LogIndex::new(1, LOG_HEADER_BYTES);
        for (first, last) in [(1, 100), (101, 300)] {
            let bytes = records(first, last);
            file.append(&bytes).unwrap();
            index.note_appended(first, &bytes);
        }
        let mut out = Vec::new();
        for from in [1, 63, 64, 65, 200, 300] {
            index.read(&file, from, usize::MAX, &mut out).unwrap();
            assert_eq!(out, records(from, 300), "from {from}");
        }
        index.read(&file, 150, 1, &mut out).unwrap();
        assert_eq!(out, records(150, 150), "at least one record");
        index.read(&file, 301, 1024, &mut out).unwrap();
        assert!(out.is_empty());
        let cut = index.cut_offset(&file, 129).unwrap();
        assert_eq!(cut, LOG_HEADER_BYTES + records(1, 129).len() as u64);
        file.truncate(cut).unwrap();
        index.truncate_after(129, cut);
        let bytes = records(130, 131);
        file.append(&bytes).unwrap();
        index.note_appended(130, &bytes);
        index.read(&file, 128, usize::MAX, &mut out).unwrap();
        assert_eq!(out, records(128, 131));
    }
}
