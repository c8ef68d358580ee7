//! Replaying one log file: decoding its records in order through a bounded
//! buffer, and classifying the first bad record as a torn write or as
//! corruption.
//!
//! A crash during a write may leave a torn tail: (a) a record whose declared
//! length runs past the end of the file (and whose bytes hold no valid record
//! with the next index); (b) a whole record that fails its checksum and is
//! followed only by zero bytes up to the end of the file; (c) bytes that are
//! all zero from the record start to the end of the file (the filesystem
//! extended the file but the data never landed). Any other bad record is
//! corruption, because acknowledged writes may follow it.
//!
//! This module only reads: it reports where the valid records end and what
//! follows (`ScanEnd`); cutting a torn tail, and deciding whether a torn tail
//! is acceptable where it is, is the caller's job. It never checks the order
//! of records either: the caller's `on_record` does, and may stop the
//! scan.

use std::fs::File;
use std::io;
use std::ops::ControlFlow;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::error::{LogError, io_error};
use super::record::{self, DecodeError, Entry, MAX_RECORD_BYTES, RECORD_HEADER_BYTES};
use super::segment::LOG_HEADER_BYTES;

const MEBIBYTE: u64 = 1024 * 1024;

/// Replay reads a file through a buffer of this size.
pub(crate) const REPLAY_BUFFER_BYTES: usize = 1024 * 1024;

/// The buffer grows past [`REPLAY_BUFFER_BYTES`] only to hold one large
/// record, and never past the largest record that can exist.
const MAX_REPLAY_BUFFER_BYTES: usize = MAX_RECORD_BYTES;

/// Logs at least this large report replay progress on stderr.
const PROGRESS_MIN_LOG_BYTES: u64 = 64 * MEBIBYTE;

/// Replay progress is reported about once per this many bytes.
const PROGRESS_INTERVAL_BYTES: u64 = 256 * MEBIBYTE;

/// Chunk size for checking that a tail is all zero bytes.
const ZERO_SCAN_CHUNK_BYTES: usize = 64 * 1024;

/// Candidate records examined inside a torn tail before giving up and
/// treating it as corrupt; bounds the work a hostile value can cause.
const MAX_TORN_TAIL_PROBES: usize = 64;

/// Where the index field starts inside a record.
const INDEX_FIELD_OFFSET: usize = RECORD_HEADER_BYTES + 8;

/// How a scan of one file ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ScanEnd {
    /// Valid records found.
    pub records: u64,
    /// Offset just past the last valid record (the header's end when none).
    pub valid_bytes: u64,
    /// The file's length when the scan began.
    pub file_bytes: u64,
    /// The bad record at `valid_bytes`, when the valid records do not reach
    /// the end of the file.
    pub damage: Option<Damage>,
}

/// The first bad record of a file.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Damage {
    /// Why it does not decode.
    pub reason: DecodeError,
    /// Whether it and everything after it look like a write that never fully
    /// landed (the torn-tail rules), rather than damage to written data.
    pub torn: bool,
}

impl ScanEnd {
    /// Bytes from the first bad record to the end of the file.
    pub fn damaged_bytes(&self) -> u64 {
        self.file_bytes - self.valid_bytes
    }
}

/// Decodes every record of `file` after the header in order, calling
/// `on_record(byte_offset, &entry)` for each, until the end of the file, the
/// first bad record, or `on_record` breaking (the scan then ends before that
/// record, with no damage) or failing (its error is returned).
pub(crate) fn scan_records(
    file: &File,
    path: &Path,
    progress: &mut Progress,
    mut on_record: impl FnMut(u64, &Entry<'_>) -> Result<ControlFlow<()>, LogError>,
) -> Result<ScanEnd, LogError> {
    let file_bytes = file
        .metadata()
        .map_err(|source| io_error(path, source))?
        .len();
    let mut cursor = ReplayCursor::new(file, file_bytes);
    let mut last_index = None;
    let mut end = ScanEnd {
        records: 0,
        valid_bytes: LOG_HEADER_BYTES,
        file_bytes,
        damage: None,
    };
    loop {
        let offset = cursor.record_offset();
        match record::decode(cursor.unconsumed()) {
            Ok((entry, record_bytes)) => {
                if on_record(offset, &entry)?.is_break() {
                    return Ok(end);
                }
                last_index = Some(entry.index);
                end.records += 1;
                end.valid_bytes = offset + record_bytes as u64;
                cursor.consume(record_bytes);
                progress.advance(record_bytes as u64);
            }
            Err(DecodeError::Incomplete) if !cursor.reached_end_of_file() => {
                let wanted_bytes = record::declared_record_bytes(cursor.unconsumed())
                    .unwrap_or(RECORD_HEADER_BYTES);
                cursor
                    .fill(wanted_bytes)
                    .map_err(|source| io_error(path, source))?;
            }
            Err(DecodeError::Incomplete) if cursor.unconsumed().is_empty() => return Ok(end),
            Err(reason) => {
                let torn = is_torn_tail(&cursor, last_index, &reason)
                    .map_err(|source| io_error(path, source))?;
                end.damage = Some(Damage { reason, torn });
                return Ok(end);
            }
        }
    }
}

/// Whether the bad record at the cursor begins a torn tail. `last_index` is
/// the index of the valid record before it, if the file holds one.
fn is_torn_tail(
    cursor: &ReplayCursor<'_>,
    last_index: Option<u64>,
    reason: &DecodeError,
) -> io::Result<bool> {
    let tail_start = cursor.record_offset();
    match reason {
        // Decode only reports Incomplete once the cursor holds every byte up
        // to the end of the file, so the whole tail is in memory.
        DecodeError::Incomplete => Ok(!holds_next_record(cursor.unconsumed(), last_index)),
        DecodeError::Checksum => {
            let record_bytes = record::declared_record_bytes(cursor.unconsumed()).unwrap_or(0);
            let record_end = tail_start + record_bytes as u64;
            is_zero_filled(cursor.file, record_end, cursor.file_bytes)
        }
        DecodeError::Malformed(_) => is_zero_filled(cursor.file, tail_start, cursor.file_bytes),
    }
}

/// Whether `tail` (a record whose length runs past the end of the file)
/// contains a valid record with the index after it. In a genuinely torn write
/// every byte up to the end of the file belongs to the torn record, so such a
/// record means the torn record's length field is itself corrupt, and
/// truncating would drop acknowledged writes.
fn holds_next_record(tail: &[u8], last_index: Option<u64>) -> bool {
    let claimed_index = tail
        .get(INDEX_FIELD_OFFSET..)
        .and_then(|rest| rest.first_chunk::<8>())
        .map(|bytes| u64::from_le_bytes(*bytes));
    let torn_index = match last_index {
        Some(last_index) => Some(last_index.saturating_add(1)),
        None => claimed_index,
    };
    let Some(next_index) = torn_index.and_then(|index| index.checked_add(1)) else {
        return false;
    };
    let pattern = next_index.to_le_bytes();
    for (probes, hit) in memchr::memmem::find_iter(tail, &pattern).enumerate() {
        if probes == MAX_TORN_TAIL_PROBES {
            // Too many look-alikes to rule corruption out cheaply: refuse to
            // start rather than risk dropping data.
            return true;
        }
        let Some(candidate_start) = hit.checked_sub(INDEX_FIELD_OFFSET) else {
            continue;
        };
        let candidate = tail.get(candidate_start..).unwrap_or_default();
        if candidate_start > 0
            && let Ok((entry, _)) = record::decode(candidate)
            && entry.index == next_index
        {
            return true;
        }
    }
    false
}

/// Whether bytes `from..to` of `file` are all zero (true when empty).
fn is_zero_filled(file: &File, from: u64, to: u64) -> io::Result<bool> {
    let mut chunk = vec![0u8; ZERO_SCAN_CHUNK_BYTES];
    let mut position = from;
    while position < to {
        let chunk_bytes = (to - position).min(ZERO_SCAN_CHUNK_BYTES as u64) as usize;
        let window = &mut chunk[..chunk_bytes];
        file.read_exact_at(window, position)?;
        if window.iter().any(|&byte| byte != 0) {
            return Ok(false);
        }
        position += chunk_bytes as u64;
    }
    Ok(true)
}

/// Streams the file through one reusable buffer. `buffer[consumed..filled]`
/// holds the not yet decoded bytes, starting at file offset
/// `buffer_offset + consumed`.
struct ReplayCursor<'file> {
    file: &'file File,
    file_bytes: u64,
    buffer: Vec<u8>,
    buffer_offset: u64,
    consumed: usize,
    filled: usize,
}

impl<'file> ReplayCursor<'file> {
    fn new(file: &'file File, file_bytes: u64) -> Self {
        ReplayCursor {
            file,
            file_bytes,
            buffer: vec![0; REPLAY_BUFFER_BYTES],
            buffer_offset: LOG_HEADER_BYTES,
            consumed: 0,
            filled: 0,
        }
    }

    fn record_offset(&self) -> u64 {
        self.buffer_offset + self.consumed as u64
    }

    fn unconsumed(&self) -> &[u8] {
        &self.buffer[self.consumed..self.filled]
    }

    fn consume(&mut self, bytes: usize) {
        self.consumed += bytes;
    }

    fn reached_end_of_file(&self) -> bool {
        self.buffer_offset + self.filled as u64 >= self.file_bytes
    }

    /// Reads until the buffer holds at least `wanted_bytes` undecoded bytes
    /// or the rest of the file.
    fn fill(&mut self, wanted_bytes: usize) -> io::Result<()> {
        // Move the partial record to the front: the buffer grows only when a
        // single record is larger than it.
        self.buffer.copy_within(self.consumed..self.filled, 0);
        self.buffer_offset += self.consumed as u64;
        self.filled -= self.consumed;
        self.consumed = 0;
        if wanted_bytes > self.buffer.len() {
            self.buffer
                .resize(wanted_bytes.min(MAX_REPLAY_BUFFER_BYTES), 0);
        }
        while self.filled < self.buffer.len() && !self.reached_end_of_file() {
            let read_offset = self.buffer_offset + self.filled as u64;
            let file_remaining_bytes = self.file_bytes - read_offset;
            let space_bytes = self.buffer.len() - self.filled;
            let read_end = self.filled + file_remaining_bytes.min(space_bytes as u64) as usize;
            match self
                .file
                .read_at(&mut self.buffer[self.filled..read_end], read_offset)
            {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "log file shrank during replay",
                    ));
                }
                Ok(read_bytes) => self.filled += read_bytes,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }
}

/// Prints "replaying log: X MiB of Y MiB" about once per
/// [`PROGRESS_INTERVAL_BYTES`] for logs large enough to take a while. One
/// value spans every file of a log.
pub(crate) struct Progress {
    total_bytes: u64,
    replayed_bytes: u64,
    next_report_bytes: u64,
}

impl Progress {
    /// Progress through a log of `total_bytes` in all its files.
    pub fn new(total_bytes: u64) -> Self {
        let next_report_bytes = if total_bytes >= PROGRESS_MIN_LOG_BYTES {
            PROGRESS_INTERVAL_BYTES
        } else {
            u64::MAX
        };
        Progress {
            total_bytes,
            replayed_bytes: 0,
            next_report_bytes,
        }
    }

    /// Counts `bytes` more as replayed, reporting when an interval is crossed.
    pub fn advance(&mut self, bytes: u64) {
        self.replayed_bytes += bytes;
        if self.replayed_bytes < self.next_report_bytes {
            return;
        }
        crate::log_info!(
            "replaying log: {} MiB of {} MiB",
            self.replayed_bytes / MEBIBYTE,
            self.total_bytes / MEBIBYTE
        );
        self.next_report_bytes = self.replayed_bytes + PROGRESS_INTERVAL_BYTES;
    }
}
