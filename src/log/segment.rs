//! One log file: the 8-byte [`LOG_MAGIC`] header followed by whole records
//! (see [`super::record`]). Both the segments of the log ([`super::segments`])
//! and the single-file log of the previous version ([`super::file`]) are such
//! files.
//!
//! [`SegmentFile`] owns the bytes: creating a file with its header,
//! accepting a header torn at creation, replaying it ([`super::scan`]),
//! cutting a torn tail, appending (cut back on a partial write so the file
//! stays whole records), reading, truncating durably. [`Segment`] adds which
//! indices the file holds and, every [`RECORDS_PER_SPARSE_OFFSET`] records,
//! where one starts, so a record is found by index with a short forward walk.
//!
//! Invariants, once replayed: the file is the header and whole, valid records
//! with consecutive indices and non-decreasing epochs; `len()` is its length.
//! A [`Segment`] only ever appends records that continue its own (checked
//! before writing). Neither type decides what a damaged tail means for the
//! log as a whole, nor creates, renames or deletes a directory entry other
//! than creating its own file.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::error::{LogError, io_error};
use super::record::Entry;
use super::scan::{Progress, ScanEnd, scan_records};

/// The first bytes of every log file; the last byte is the format version.
pub const LOG_MAGIC: [u8; 8] = *b"KVLOG\x00\x00\x01";

/// Length of [`LOG_MAGIC`]: the offset of the first record.
pub const LOG_HEADER_BYTES: u64 = LOG_MAGIC.len() as u64;

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
        on_record: impl FnMut(u64, &Entry<'_>) -> Result<(), LogError>,
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
        crate::status!(
            "warning: log {}: torn write at byte {} ({reason}); dropping the last {} bytes",
            self.path.display(),
            end.valid_bytes,
            end.damaged_bytes()
        );
        self.truncate(end.valid_bytes)
            .map_err(|source| io_error(&self.path, source))
    }

    /// Writes `bytes` (whole encoded records) at the end of the file. Not
    /// durable until synced.
    pub fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        if let Err(error) = self.file.write_all_at(bytes, self.len_bytes) {
            // A partial write leaves bytes past the end that a later, shorter
            // append would not overwrite; cut them so the file stays whole
            // records. Best effort: the write error is the one to report.
            let _ = self.file.set_len(self.len_bytes);
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
        crate::status!(
            "warning: log {}: header is incomplete ({file_bytes} of {LOG_HEADER_BYTES} bytes, \
             an interrupted creation); rewriting it",
            path.display()
        );
    }
    write_header(file).map_err(|source| io_error(path, source))
}
