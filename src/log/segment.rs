//! One log file: the 8-byte [`LOG_MAGIC`] header followed by whole records
//! (see [`super::record`]). Both the segments of the log ([`super::segments`])
//! and the single-file log of the previous version ([`super::file`]) are such
//! files.
//!
//! `SegmentFile` owns the bytes: creating a file with its header,
//! accepting a header torn at creation, replaying it ([`super::scan`]),
//! cutting a torn tail, appending (cut back on a partial write so the file
//! stays whole records), reading, truncating durably. `Segment` adds which
//! indices the file holds and, every `RECORDS_PER_SPARSE_OFFSET` records,
//! where one starts, so a record is found by index with a short forward walk.
//!
//! Invariants, once replayed: the file is the header and whole, valid records
//! with consecutive indices and non-decreasing epochs; `len()` is its length.
//! A `Segment` only ever appends records that continue its own (checked
//! before writing). Neither type decides what a damaged tail means for the
//! log as a whole, nor creates, renames or deletes a directory entry other
//! than creating its own file.

use std::fs::{File, OpenOptions};
use std::io;
use std::ops::ControlFlow;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::error::{LogError, io_error};
use super::record::{self, DecodeError, Entry, PEEK_BYTES, RecordPeek};
use super::scan::{Progress, ScanEnd, scan_records};

/// The first bytes of every log file; the last byte is the format version.
pub const LOG_MAGIC: [u8; 8] = *b"KVLOG\x00\x00\x01";

/// Length of [`LOG_MAGIC`]: the offset of the first record.
pub const LOG_HEADER_BYTES: u64 = LOG_MAGIC.len() as u64;

/// A `Segment` remembers the byte offset of one record in every this many,
/// so finding a record reads at most this many record headers.
pub(crate) const RECORDS_PER_SPARSE_OFFSET: u64 = 64;

/// A failed append whose partial bytes could not be cut from the file:
/// some of its records may be there after a restart.
#[derive(Debug)]
pub struct PartialWriteLeft {
    pub error: io::Error,
    pub cut_error: io::Error,
}

impl std::fmt::Display for PartialWriteLeft {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            formatter,
            "{}; and what was written could not be cut off again: {}",
            self.error, self.cut_error
        )
    }
}

impl std::error::Error for PartialWriteLeft {}

/// An open log file and its length. Writes go through [`SegmentFile::append`]
/// and [`SegmentFile::truncate`] only, so the length is always known.
#[derive(Debug)]
pub(crate) struct SegmentFile {
    /// Shared with sync jobs, which fdatasync it on another thread.
    file: Arc<File>,
    path: PathBuf,
    len_bytes: u64,
}

impl SegmentFile {
    /// Creates the file at `path`, which must not exist, holding only the
    /// header. Not durable: the caller syncs the file and the directory.
    pub fn create(path: &Path) -> io::Result<SegmentFile> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)?;
        file.write_all_at(&LOG_MAGIC, 0)?;
        Ok(SegmentFile {
            file: Arc::new(file),
            path: path.to_path_buf(),
            len_bytes: LOG_HEADER_BYTES,
        })
    }

    /// Opens an existing file and checks its header, rewriting a header torn
    /// at creation. Its records are not yet read: see [`SegmentFile::scan`].
    pub fn open(path: &Path) -> Result<SegmentFile, LogError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|source| io_error(path, source))?;
        check_header(&file, path)?;
        let len_bytes = file
            .metadata()
            .map_err(|source| io_error(path, source))?
            .len();
        Ok(SegmentFile {
            file: Arc::new(file),
            path: path.to_path_buf(),
            len_bytes,
        })
    }

    /// Decodes every record in order (see [`scan_records`]). Changes nothing.
    pub fn scan(
        &self,
        progress: &mut Progress,
        on_record: impl FnMut(u64, &Entry<'_>) -> Result<ControlFlow<()>, LogError>,
    ) -> Result<ScanEnd, LogError> {
        scan_records(&self.file, &self.path, progress, on_record)
    }

    /// Durably cuts the file after its last valid record, as found by `end`,
    /// with a warning naming what was dropped.
    pub fn cut_torn_tail(&mut self, end: &ScanEnd) -> Result<(), LogError> {
        let reason = end.damage.as_ref().map_or_else(
            || "no damage".to_string(),
            |damage| damage.reason.to_string(),
        );
        crate::log_warn!(
            "log {}: torn write at byte {} ({reason}); dropping the last {} bytes",
            self.path.display(),
            end.valid_bytes,
            end.damaged_bytes()
        );
        self.truncate(end.valid_bytes)
            .map_err(|source| io_error(&self.path, source))
    }

    /// Writes `bytes` (whole encoded records) at the end of the file. Not
    /// durable until synced. On failure the file is cut back to where it
    /// was, so none of `bytes` is in it; if even that fails, the error's
    /// inner error is a [`PartialWriteLeft`]: some of `bytes` may remain.
    pub fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        if let Err(error) = self.file.write_all_at(bytes, self.len_bytes) {
            // A partial write leaves bytes past the end that a later, shorter
            // append would not overwrite, and that a restart could replay;
            // cut them so the file stays whole records.
            if let Err(cut_error) = self.file.set_len(self.len_bytes) {
                let kind = error.kind();
                return Err(io::Error::new(kind, PartialWriteLeft { error, cut_error }));
            }
            return Err(error);
        }
        self.len_bytes += bytes.len() as u64;
        Ok(())
    }

    /// Fills `buffer` from byte `offset`, which with the buffer must lie
    /// within the file.
    pub fn read_exact_at(&self, buffer: &mut [u8], offset: u64) -> io::Result<()> {
        assert!(
            offset + buffer.len() as u64 <= self.len_bytes,
            "read past the end"
        );
        self.file.read_exact_at(buffer, offset)
    }

    /// Drops every byte from `len_bytes` on, durably. `len_bytes` must be a
    /// record boundary, at least the header and at most [`SegmentFile::len`].
    pub fn truncate(&mut self, len_bytes: u64) -> io::Result<()> {
        if len_bytes < LOG_HEADER_BYTES || len_bytes > self.len_bytes {
            let message = format!(
                "cannot truncate log {} to {len_bytes} bytes: outside {LOG_HEADER_BYTES}..={}",
                self.path.display(),
                self.len_bytes
            );
            return Err(io::Error::new(io::ErrorKind::InvalidInput, message));
        }
        self.file.set_len(len_bytes)?;
        self.len_bytes = len_bytes;
        // sync_all: the new size must be durable before records are appended
        // again, or a crash could resurrect the dropped suffix.
        self.file.sync_all()
    }

    /// Makes every appended byte durable (fdatasync).
    pub fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// Makes the file's data and metadata durable (fsync).
    pub fn sync_all(&self) -> io::Result<()> {
        self.file.sync_all()
    }

    /// Bytes in the file: the header and every record.
    pub fn len(&self) -> u64 {
        self.len_bytes
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The descriptor, shared, for a sync job.
    pub fn file(&self) -> &Arc<File> {
        &self.file
    }
}

/// Replaces the whole file with just the header, durably.
fn write_header(file: &File) -> io::Result<()> {
    file.set_len(0)?;
    file.write_all_at(&LOG_MAGIC, 0)?;
    file.sync_all()
}

/// Accepts a file that starts with the magic. A file no longer than the magic
/// whose bytes are a prefix of it, or all zero, is a creation torn by a crash
/// (no record is written before the header is), so the header is rewritten.
/// Anything else is not our file.
fn check_header(file: &File, path: &Path) -> Result<(), LogError> {
    let file_bytes = file
        .metadata()
        .map_err(|source| io_error(path, source))?
        .len();
    let mut header = [0u8; LOG_MAGIC.len()];
    let present_bytes = file_bytes.min(LOG_HEADER_BYTES) as usize;
    let present = &mut header[..present_bytes];
    file.read_exact_at(present, 0)
        .map_err(|source| io_error(path, source))?;
    if *present == LOG_MAGIC {
        return Ok(());
    }
    let torn_creation = file_bytes <= LOG_HEADER_BYTES
        && (LOG_MAGIC.starts_with(present) || present.iter().all(|&byte| byte == 0));
    if !torn_creation {
        return Err(LogError::BadMagic {
            path: path.to_path_buf(),
        });
    }
    if file_bytes > 0 {
        crate::log_warn!(
            "log {}: header is incomplete ({file_bytes} of {LOG_HEADER_BYTES} bytes, \
             an interrupted creation); rewriting it",
            path.display()
        );
    }
    write_header(file).map_err(|source| io_error(path, source))
}

/// Which records a segment holds, and where one in every
/// `RECORDS_PER_SPARSE_OFFSET` of them starts. Built while replaying or
/// appending, by walking record lengths; never read from disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SegmentIndex {
    first_index: u64,
    /// `first_index - 1` while the segment holds no record.
    last_index: u64,
    /// The epoch of `last_index`: of the record before the segment while it
    /// holds none.
    last_epoch: u64,
    /// `sparse_offsets[k]` is the byte offset of record
    /// `first_index + k * RECORDS_PER_SPARSE_OFFSET`.
    sparse_offsets: Vec<u64>,
}

impl SegmentIndex {
    /// A segment whose first record will have `first_index`, following a
    /// record of `previous_epoch`.
    pub fn new(first_index: u64, previous_epoch: u64) -> SegmentIndex {
        assert!(first_index >= 1, "log indices start at 1");
        SegmentIndex {
            first_index,
            last_index: first_index - 1,
            last_epoch: previous_epoch,
            sparse_offsets: Vec::new(),
        }
    }

    /// Records that the next record, `index` of `epoch`, starts at `offset`.
    pub fn note_record(&mut self, offset: u64, index: u64, epoch: u64) {
        assert_eq!(index, self.last_index + 1, "records are noted in order");
        debug_assert!(epoch >= self.last_epoch, "epochs never decrease");
        let position = index - self.first_index;
        if position.is_multiple_of(RECORDS_PER_SPARSE_OFFSET) {
            debug_assert_eq!(
                self.sparse_offsets.len() as u64,
                position / RECORDS_PER_SPARSE_OFFSET
            );
            self.sparse_offsets.push(offset);
        }
        self.last_index = index;
        self.last_epoch = epoch;
    }

    pub fn first_index(&self) -> u64 {
        self.first_index
    }

    pub fn last_index(&self) -> u64 {
        self.last_index
    }

    pub fn last_epoch(&self) -> u64 {
        self.last_epoch
    }
}

/// One segment of the log: its file and what it holds. Every method that
/// finds a record by index checks the index it finds there.
#[derive(Debug)]
pub(crate) struct Segment {
    file: SegmentFile,
    index: SegmentIndex,
    /// Written since the last sync job was taken.
    dirty: bool,
}

/// Where a record starts, and its header fields.
struct Located {
    offset: u64,
    peek: RecordPeek,
}

impl Segment {
    /// A replayed (or new) file and the records it was found to hold.
    pub fn new(file: SegmentFile, index: SegmentIndex) -> Segment {
        Segment {
            file,
            index,
            dirty: false,
        }
    }

    /// Appends whole records `first_index..` with one write, after checking
    /// that they continue this segment: consecutive indices from
    /// `last_index() + 1`, epochs not below `last_epoch()`, nothing but whole
    /// records. A batch that does not is `InvalidInput`, and nothing is written.
    pub fn append(&mut self, first_index: u64, bytes: &[u8]) -> io::Result<()> {
        self.check_batch(first_index, bytes)?;
        let mut offset = self.file.len();
        self.file.append(bytes)?;
        self.dirty = true;
        // Checked just above: every peek succeeds and stays within `bytes`.
        let mut position = 0;
        while let Some(rest) = bytes.get(position..).filter(|rest| !rest.is_empty()) {
            let peek = record::peek(rest).expect("checked batch");
            self.index.note_record(offset, peek.index, peek.epoch);
            offset += peek.record_bytes as u64;
            position += peek.record_bytes;
        }
        debug_assert_eq!(offset, self.file.len());
        Ok(())
    }

    /// Checks that `bytes` is whole records continuing this segment.
    fn check_batch(&self, first_index: u64, bytes: &[u8]) -> io::Result<()> {
        if first_index != self.index.last_index + 1 {
            let message = format!(
                "refusing to append index {first_index} to log {}, which ends at index {}",
                self.file.path().display(),
                self.index.last_index
            );
            return Err(io::Error::new(io::ErrorKind::InvalidInput, message));
        }
        let mut position = 0;
        let mut expected_index = first_index;
        let mut previous_epoch = self.index.last_epoch;
        while position < bytes.len() {
            let rest = &bytes[position..];
            let fault = match record::peek(rest) {
                Err(reason) => Some(reason.to_string()),
                Ok(peek) if peek.record_bytes > rest.len() => {
                    Some("a record runs past the end of the batch".to_string())
                }
                Ok(peek) if peek.index != expected_index || peek.epoch < previous_epoch => {
                    Some(format!(
                        "index {} epoch {} does not follow index {} epoch {previous_epoch}",
                        peek.index,
                        peek.epoch,
                        expected_index - 1
                    ))
                }
                Ok(peek) => {
                    debug_assert!(record::decode(rest).is_ok(), "appending a bad record");
                    position += peek.record_bytes;
                    expected_index += 1;
                    previous_epoch = peek.epoch;
                    None
                }
            };
            if let Some(fault) = fault {
                let message = format!(
                    "refusing to append to log {} after index {}: at byte {position} of the \
                     batch starting at index {first_index}: {fault}",
                    self.file.path().display(),
                    self.index.last_index
                );
                return Err(io::Error::new(io::ErrorKind::InvalidInput, message));
            }
        }
        Ok(())
    }

    /// Whole records from `from_index`, which this segment must hold: as many
    /// as fit in `max_bytes`, but at least one. `out` is replaced.
    pub fn read(&self, from_index: u64, max_bytes: usize, out: &mut Vec<u8>) -> io::Result<()> {
        let first = self.locate(from_index)?;
        let available_bytes = self.file.len() - first.offset;
        let wanted_bytes = max_bytes.max(first.peek.record_bytes) as u64;
        // Bounded by the segment's length, itself bounded by the segment size
        // plus one append.
        let read_bytes = wanted_bytes.min(available_bytes) as usize;
        out.clear();
        out.resize(read_bytes, 0);
        self.file.read_exact_at(out, first.offset)?;
        let mut whole_bytes = 0;
        let mut expected_index = from_index;
        loop {
            let offset = first.offset + whole_bytes as u64;
            let peek = match record::peek(&out[whole_bytes..]) {
                Ok(peek) => peek,
                Err(DecodeError::Incomplete) => break,
                Err(reason) => return Err(self.bad_record(offset, reason)),
            };
            if peek.index != expected_index {
                return Err(self.unexpected_record(offset, expected_index, peek));
            }
            if whole_bytes + peek.record_bytes > out.len() {
                break;
            }
            whole_bytes += peek.record_bytes;
            expected_index += 1;
        }
        assert!(
            whole_bytes > 0,
            "a read returns at least the record asked for"
        );
        out.truncate(whole_bytes);
        Ok(())
    }

    /// Durably keeps only the records up to `index`, which must be in
    /// `first_index() - 1..=last_index()`; `previous_epoch` is the epoch of
    /// record `first_index() - 1`, which the segment becomes if it is emptied.
    pub fn truncate_after(&mut self, index: u64, previous_epoch: u64) -> io::Result<()> {
        assert!(
            index + 1 >= self.index.first_index && index <= self.index.last_index,
            "truncate_after({index}) outside the segment's records"
        );
        let (cut_offset, last_epoch) = if index < self.index.first_index {
            (LOG_HEADER_BYTES, previous_epoch)
        } else {
            let last_kept = self.locate(index)?;
            let end = last_kept.offset + last_kept.peek.record_bytes as u64;
            (end, last_kept.peek.epoch)
        };
        self.file.truncate(cut_offset)?;
        // The whole file was just synced.
        self.dirty = false;
        let kept_records = index + 1 - self.index.first_index;
        let kept_offsets = kept_records.div_ceil(RECORDS_PER_SPARSE_OFFSET);
        self.index.sparse_offsets.truncate(kept_offsets as usize);
        self.index.last_index = index;
        self.index.last_epoch = last_epoch;
        Ok(())
    }

    /// Finds record `index` (held by this segment) from the nearest sparse
    /// offset below it, checking each record header on the way.
    fn locate(&self, index: u64) -> io::Result<Located> {
        assert!(
            (self.index.first_index..=self.index.last_index).contains(&index),
            "locating index {index} outside the segment's records"
        );
        let position = index - self.index.first_index;
        let sparse = position / RECORDS_PER_SPARSE_OFFSET;
        let mut offset = self.index.sparse_offsets[sparse as usize];
        let mut current_index = self.index.first_index + sparse * RECORDS_PER_SPARSE_OFFSET;
        let mut fields = [0u8; PEEK_BYTES];
        loop {
            self.file.read_exact_at(&mut fields, offset)?;
            let peek = record::peek(&fields).map_err(|reason| self.bad_record(offset, reason))?;
            if peek.index != current_index {
                return Err(self.unexpected_record(offset, current_index, peek));
            }
            if current_index == index {
                return Ok(Located { offset, peek });
            }
            offset += peek.record_bytes as u64;
            current_index += 1;
        }
    }

    fn unexpected_record(&self, offset: u64, expected_index: u64, peek: RecordPeek) -> io::Error {
        let message = format!(
            "log {} at byte {offset}: expected record {expected_index}, found {}",
            self.file.path().display(),
            peek.index
        );
        io::Error::new(io::ErrorKind::InvalidData, message)
    }

    fn bad_record(&self, offset: u64, reason: DecodeError) -> io::Error {
        let message = format!(
            "log {} at byte {offset}: {reason}",
            self.file.path().display()
        );
        io::Error::new(io::ErrorKind::InvalidData, message)
    }

    /// Durably cuts the torn tail that replay found after the records noted.
    pub fn cut_torn_tail(&mut self, end: &ScanEnd) -> Result<(), LogError> {
        debug_assert!(end.damage.as_ref().is_some_and(|damage| damage.torn));
        self.file.cut_torn_tail(end)
    }

    /// The file to sync, if written since the last call; marks it clean.
    pub fn take_dirty(&mut self) -> Option<Arc<File>> {
        std::mem::take(&mut self.dirty).then(|| Arc::clone(self.file.file()))
    }

    pub fn first_index(&self) -> u64 {
        self.index.first_index
    }

    /// `first_index() - 1` while the segment holds no record.
    pub fn last_index(&self) -> u64 {
        self.index.last_index
    }

    /// The epoch of `last_index()`.
    pub fn last_epoch(&self) -> u64 {
        self.index.last_epoch
    }

    pub fn is_empty(&self) -> bool {
        self.index.last_index < self.index.first_index
    }

    pub fn len(&self) -> u64 {
        self.file.len()
    }

    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// Whether bytes were written since the last sync job took it.
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// Marks the segment as needing a sync (its header, when just created).
    pub fn mark_dirty(&mut self) {
        self.dirty = true;
    }
}
