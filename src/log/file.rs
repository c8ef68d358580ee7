//! The log file `<data_dir>/kvstore.log`: opening and locking it, replaying it
//! at startup, recovering from a torn tail, appending, syncing, truncating.
//!
//! The file is the 8-byte [`LOG_MAGIC`] followed by records (see
//! [`super::record`]). Invariants after [`LogFile::open`] returns:
//! - the file holds exactly the magic and whole, valid records, each index
//!   one more than the previous, epochs never decreasing;
//! - this process holds an exclusive advisory lock on `<data_dir>/LOCK`, so no
//!   other server appends to the same file.
//!
//! Recovery rules. A crash during a write may leave a torn tail, which is
//! truncated with a warning: (a) a record whose declared length runs past the
//! end of the file; (b) a whole record that fails its checksum and ends
//! exactly at the end of the file; (c) bytes that are all zero from the record
//! start to the end of the file (the filesystem extended the file but the data
//! never landed). Any other bad record is corruption: [`LogError::Corrupt`],
//! and the file is left untouched, because acknowledged writes may follow it.

use std::fmt;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::record::{self, DecodeError, Entry, MAX_RECORD_BODY_BYTES, RECORD_HEADER_BYTES};

/// The log's file name inside the data directory.
pub const LOG_FILE_NAME: &str = "kvstore.log";

/// The lock file's name inside the data directory. Locking the directory
/// rather than the log keeps the lock valid if the log is ever replaced.
pub const LOCK_FILE_NAME: &str = "LOCK";

/// The first bytes of every log; the last byte is the format version.
pub const LOG_MAGIC: [u8; 8] = *b"KVLOG\x00\x00\x01";

/// Length of [`LOG_MAGIC`]: the offset of the first record.
pub const LOG_HEADER_BYTES: u64 = LOG_MAGIC.len() as u64;

const MEBIBYTE: u64 = 1024 * 1024;

/// Replay reads the file through a buffer of this size.
const REPLAY_BUFFER_BYTES: usize = 1024 * 1024;

/// The buffer grows past [`REPLAY_BUFFER_BYTES`] only to hold one large
/// record, and never past the largest record that can exist.
const MAX_REPLAY_BUFFER_BYTES: usize = RECORD_HEADER_BYTES + MAX_RECORD_BODY_BYTES;

/// Logs at least this large report replay progress on stderr.
const PROGRESS_MIN_LOG_BYTES: u64 = 64 * MEBIBYTE;

/// Replay progress is reported about once per this many bytes.
const PROGRESS_INTERVAL_BYTES: u64 = 256 * MEBIBYTE;

/// Chunk size for checking that a tail is all zero bytes.
const ZERO_SCAN_CHUNK_BYTES: usize = 64 * 1024;

/// Candidate records examined inside a torn tail before giving up and
/// treating it as corrupt; bounds the work a hostile value can cause.
const MAX_TORN_TAIL_PROBES: usize = 64;

/// What [`LogFile::open`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Replay {
    /// Records replayed.
    pub records: u64,
    /// Epoch of the last record, 0 when there is none.
    pub last_epoch: u64,
    /// Index of the last record, 0 when there is none.
    pub last_index: u64,
    /// Bytes of the file after recovery: the magic and every valid record.
    pub valid_bytes: u64,
    /// Bytes of torn tail that were cut off.
    pub truncated_bytes: u64,
}

/// Why the log cannot be opened.
#[derive(Debug)]
pub enum LogError {
    /// An operating-system error on `path`: the data directory cannot be
    /// created, permission is denied, the disk failed.
    Io { path: PathBuf, source: io::Error },
    /// Another process holds the lock on the data directory.
    Locked { path: PathBuf },
    /// The file does not start with [`LOG_MAGIC`].
    BadMagic { path: PathBuf },
    /// A bad record at `offset` with data after it that is not a torn write.
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: DecodeError,
    },
    /// A valid record at `offset` that does not continue the log: its index is
    /// not the previous one plus 1, or its epoch is below the previous one.
    OutOfOrder {
        path: PathBuf,
        offset: u64,
        expected_index: u64,
        found_index: u64,
        previous_epoch: u64,
        found_epoch: u64,
    },
}

/// Advice printed with every error that stops the server over the log's content.
const CORRUPTION_ADVICE: &str = "refusing to start (move the file aside or truncate it at \
                                 that offset to discard the rest)";

impl fmt::Display for LogError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LogError::Io { path, source } => {
                write!(formatter, "cannot use {}: {source}", path.display())
            }
            LogError::Locked { path } => write!(
                formatter,
                "data directory is locked: {} is held by another process \
                 (is another kvstore server using this directory?)",
                path.display()
            ),
            LogError::BadMagic { path } => write!(
                formatter,
                "{} is not a kvstore log (it does not start with the log header); \
                 refusing to start",
                path.display()
            ),
            LogError::Corrupt {
                path,
                offset,
                reason,
            } => write!(
                formatter,
                "log {} is corrupt at byte {offset}: {reason}; {CORRUPTION_ADVICE}",
                path.display()
            ),
            LogError::OutOfOrder {
                path,
                offset,
                expected_index,
                found_index,
                previous_epoch,
                found_epoch,
            } => write!(
                formatter,
                "log {} is corrupt at byte {offset}: record has index {found_index} and \
                 epoch {found_epoch}, expected index {expected_index} and epoch at least \
                 {previous_epoch}; {CORRUPTION_ADVICE}",
                path.display()
            ),
        }
    }
}

impl std::error::Error for LogError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LogError::Io { source, .. } => Some(source),
            LogError::Corrupt { reason, .. } => Some(reason),
            _ => None,
        }
    }
}

fn io_error(path: &Path, source: io::Error) -> LogError {
    LogError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The open, locked, replayed log. Appends go to the end; nothing else
/// writes to the file while this exists.
#[derive(Debug)]
pub struct LogFile {
    file: File,
    path: PathBuf,
    len_bytes: u64,
    /// The directory lock lasts as long as this descriptor stays open.
    _lock: File,
}

impl LogFile {
    /// Creates the data dir and the log if missing, locks the dir, replays
    /// every record in order calling `on_entry(byte_offset_of_record, &entry)`,
    /// and truncates a torn tail.
    pub fn open(
        data_dir: &Path,
        on_entry: impl FnMut(u64, &Entry<'_>),
    ) -> Result<(LogFile, Replay), LogError> {
        create_data_dir(data_dir)?;
        let lock = lock_data_dir(data_dir)?;
        let path = data_dir.join(LOG_FILE_NAME);
        let file = open_log(&path, data_dir)?;
        let replay = replay_file(&file, &path, on_entry)?;
        let log = LogFile {
            file,
            path,
            len_bytes: replay.valid_bytes,
            _lock: lock,
        };
        Ok((log, replay))
    }

    /// Writes `bytes` (whole encoded records) at the end of the file. Not
    /// durable until [`LogFile::sync_data`] returns.
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

    /// Makes every appended byte durable (fdatasync). An error here means the
    /// data may be lost: the caller must not acknowledge it, nor retry and
    /// assume success.
    pub fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// Drops every byte from `len_bytes` on (a follower's divergent suffix),
    /// durably. `len_bytes` must be a record boundary, at least the header and
    /// at most [`LogFile::len`].
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

    /// Bytes in the file: the header and every appended record.
    pub fn len(&self) -> u64 {
        self.len_bytes
    }

    /// Reads up to `max_bytes` from byte `offset` into `out` (replacing its
    /// contents); fewer at the end of the file. For records a follower needs
    /// that the core no longer keeps in memory.
    pub fn read_at(&self, offset: u64, max_bytes: usize, out: &mut Vec<u8>) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        let available =
            usize::try_from(self.len_bytes.saturating_sub(offset)).unwrap_or(usize::MAX);
        out.clear();
        out.resize(max_bytes.min(available), 0);
        self.file.read_exact_at(out, offset)
    }

    /// True when the log holds no records, only the header.
    pub fn is_empty(&self) -> bool {
        self.len_bytes == LOG_HEADER_BYTES
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A second descriptor for the same file, for a syncer thread to call
    /// `sync_data` on while the reactor keeps appending.
    pub fn try_clone_file(&self) -> io::Result<File> {
        self.file.try_clone()
    }
}

/// Creates the data dir when missing. A new directory's entry in its parent
/// is durable only once the parent is synced; without that, a crash soon after
/// the first start could lose the directory and the log in it.
fn create_data_dir(data_dir: &Path) -> Result<(), LogError> {
    if data_dir.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(data_dir).map_err(|source| io_error(data_dir, source))?;
    let parent = data_dir
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    sync_directory(parent)
}

/// Takes the exclusive advisory lock on `<data_dir>/LOCK`.
fn lock_data_dir(data_dir: &Path) -> Result<File, LogError> {
    let lock_path = data_dir.join(LOCK_FILE_NAME);
    let lock = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .map_err(|source| io_error(&lock_path, source))?;
    match lock.try_lock() {
        Ok(()) => Ok(lock),
        Err(TryLockError::WouldBlock) => Err(LogError::Locked { path: lock_path }),
        Err(TryLockError::Error(source)) => Err(io_error(&lock_path, source)),
    }
}

/// Opens the log, creating it with its header when missing.
fn open_log(path: &Path, data_dir: &Path) -> Result<File, LogError> {
    let created = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path);
    match created {
        Ok(file) => {
            write_header(&file).map_err(|source| io_error(path, source))?;
            // The new directory entry is durable only once the directory is.
            sync_directory(data_dir)?;
            Ok(file)
        }
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
                .map_err(|source| io_error(path, source))?;
            check_header(&file, path)?;
            Ok(file)
        }
        Err(source) => Err(io_error(path, source)),
    }
}

fn sync_directory(directory: &Path) -> Result<(), LogError> {
    File::open(directory)
        .and_then(|handle| handle.sync_all())
        .map_err(|source| io_error(directory, source))
}

/// Replaces the whole file with just the header, durably.
fn write_header(file: &File) -> io::Result<()> {
    file.set_len(0)?;
    file.write_all_at(&LOG_MAGIC, 0)?;
    file.sync_all()
}

/// Accepts a file that starts with the magic. A file no longer than the magic
/// whose bytes are a prefix of it, or all zero, is a creation torn by a crash
/// (no record is written before the header is durable), so the header is
/// rewritten. Anything else is not our file.
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

/// Replays every record, then truncates a torn tail or rejects corruption.
fn replay_file(
    file: &File,
    path: &Path,
    on_entry: impl FnMut(u64, &Entry<'_>),
) -> Result<Replay, LogError> {
    let file_bytes = file
        .metadata()
        .map_err(|source| io_error(path, source))?
        .len();
    let mut cursor = ReplayCursor::new(file, file_bytes);
    let mut replay = Replay {
        valid_bytes: LOG_HEADER_BYTES,
        ..Replay::default()
    };
    let Some(reason) = replay_records(&mut cursor, path, &mut replay, on_entry)? else {
        return Ok(replay);
    };
    let tail_start = replay.valid_bytes;
    let torn = is_torn_tail(&cursor, &replay, &reason).map_err(|source| io_error(path, source))?;
    if !torn {
        return Err(LogError::Corrupt {
            path: path.to_path_buf(),
            offset: tail_start,
            reason,
        });
    }
    let truncated_bytes = cursor.file_bytes - tail_start;
    crate::status!(
        "warning: log {}: torn write at byte {tail_start} ({reason}); \
         dropping the last {truncated_bytes} bytes",
        path.display()
    );
    file.set_len(tail_start)
        .map_err(|source| io_error(path, source))?;
    file.sync_all().map_err(|source| io_error(path, source))?;
    replay.truncated_bytes = truncated_bytes;
    Ok(replay)
}

/// Decodes records until the end of the file (`None`) or the first bad one
/// (`Some(reason)`, at `replay.valid_bytes`).
fn replay_records(
    cursor: &mut ReplayCursor<'_>,
    path: &Path,
    replay: &mut Replay,
    mut on_entry: impl FnMut(u64, &Entry<'_>),
) -> Result<Option<DecodeError>, LogError> {
    let mut progress = Progress::new(cursor.file_bytes);
    loop {
        let offset = cursor.record_offset();
        match record::decode(cursor.unconsumed()) {
            Ok((entry, record_bytes)) => {
                check_order(replay, &entry, path, offset)?;
                on_entry(offset, &entry);
                replay.records += 1;
                replay.last_epoch = entry.epoch;
                replay.last_index = entry.index;
                replay.valid_bytes = offset + record_bytes as u64;
                cursor.consume(record_bytes);
                progress.report(replay.valid_bytes);
            }
            Err(DecodeError::Incomplete) if !cursor.reached_end_of_file() => {
                let wanted_bytes = record::declared_record_bytes(cursor.unconsumed())
                    .unwrap_or(RECORD_HEADER_BYTES);
                cursor
                    .fill(wanted_bytes)
                    .map_err(|source| io_error(path, source))?;
            }
            Err(DecodeError::Incomplete) if cursor.unconsumed().is_empty() => return Ok(None),
            Err(reason) => return Ok(Some(reason)),
        }
    }
}

/// The first record may carry any index from 1; each later one must be the
/// previous index plus 1, with an epoch no lower than the previous epoch.
fn check_order(
    replay: &Replay,
    entry: &Entry<'_>,
    path: &Path,
    offset: u64,
) -> Result<(), LogError> {
    let expected_index = if replay.records == 0 {
        entry.index.max(1)
    } else {
        replay.last_index.saturating_add(1)
    };
    let index_continues = entry.index == expected_index && replay.last_index != u64::MAX;
    if index_continues && entry.epoch >= replay.last_epoch {
        return Ok(());
    }
    Err(LogError::OutOfOrder {
        path: path.to_path_buf(),
        offset,
        expected_index,
        found_index: entry.index,
        previous_epoch: replay.last_epoch,
        found_epoch: entry.epoch,
    })
}

/// Whether the bad record at `replay.valid_bytes` begins a torn tail.
fn is_torn_tail(
    cursor: &ReplayCursor<'_>,
    replay: &Replay,
    reason: &DecodeError,
) -> io::Result<bool> {
    let tail_start = replay.valid_bytes;
    match reason {
        // Decode only reports Incomplete once the cursor holds every byte up
        // to the end of the file, so the whole tail is in memory.
        DecodeError::Incomplete => Ok(!holds_next_record(cursor.unconsumed(), replay)),
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
fn holds_next_record(tail: &[u8], replay: &Replay) -> bool {
    const INDEX_FIELD_OFFSET: usize = RECORD_HEADER_BYTES + 8;
    let claimed_index = tail
        .get(INDEX_FIELD_OFFSET..)
        .and_then(|rest| rest.first_chunk::<8>())
        .map(|bytes| u64::from_le_bytes(*bytes));
    let torn_index = if replay.records > 0 {
        Some(replay.last_index.saturating_add(1))
    } else {
        claimed_index
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
/// [`PROGRESS_INTERVAL_BYTES`] for logs large enough to take a while.
struct Progress {
    file_bytes: u64,
    next_report_bytes: u64,
}

impl Progress {
    fn new(file_bytes: u64) -> Self {
        let next_report_bytes = if file_bytes >= PROGRESS_MIN_LOG_BYTES {
            PROGRESS_INTERVAL_BYTES
        } else {
            u64::MAX
        };
        Progress {
            file_bytes,
            next_report_bytes,
        }
    }

    fn report(&mut self, replayed_bytes: u64) {
        if replayed_bytes < self.next_report_bytes {
            return;
        }
        crate::status!(
            "replaying log: {} MiB of {} MiB",
            replayed_bytes / MEBIBYTE,
            self.file_bytes / MEBIBYTE
        );
        self.next_report_bytes = replayed_bytes + PROGRESS_INTERVAL_BYTES;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::record::{Op, encode, encoded_len};

    fn put<'a>(epoch: u64, index: u64, key: &'a [u8], value: &'a [u8]) -> Entry<'a> {
        Entry {
            epoch,
            index,
            commit: index.saturating_sub(1),
            op: Op::Put { key, value },
        }
    }

    fn encoded(entries: &[Entry<'_>]) -> Vec<u8> {
        let mut out = Vec::new();
        for entry in entries {
            encode(entry, &mut out);
        }
        out
    }

    /// Five records of every op, indexes 1..=5.
    fn five_entries() -> Vec<Entry<'static>> {
        vec![
            Entry {
                epoch: 1,
                index: 1,
                commit: 0,
                op: Op::Noop,
            },
            put(1, 2, b"alpha", b"one"),
            put(1, 3, b"\x00\xff binary", b"\xc3\x28\x00"),
            Entry {
                epoch: 2,
                index: 4,
                commit: 0,
                op: Op::Del { key: b"alpha" },
            },
            put(2, 5, b"empty", b""),
        ]
    }

    /// Byte offset of each entry when written in order after the header.
    fn offsets_of(entries: &[Entry<'_>]) -> Vec<u64> {
        let mut offset = LOG_HEADER_BYTES;
        let mut offsets = Vec::new();
        for entry in entries {
            offsets.push(offset);
            offset += encoded_len(entry) as u64;
        }
        offsets
    }

    /// Replayed records as (byte offset, the record's bytes).
    type Seen = Vec<(u64, Vec<u8>)>;

    /// Opens the log, recording each replayed record.
    fn open_recording(data_dir: &Path) -> Result<(LogFile, Replay, Seen), LogError> {
        let mut seen = Vec::new();
        let (log, replay) = LogFile::open(data_dir, |offset, entry| {
            seen.push((offset, encoded(&[*entry])));
        })?;
        Ok((log, replay, seen))
    }

    fn expected_seen(entries: &[Entry<'_>]) -> Seen {
        let offsets = offsets_of(entries);
        offsets
            .into_iter()
            .zip(entries)
            .map(|(offset, entry)| (offset, encoded(&[*entry])))
            .collect()
    }

    /// A log in a fresh directory holding `entries`, synced and closed.
    fn log_with(entries: &[Entry<'_>]) -> tempfile::TempDir {
        let directory = tempfile::tempdir().expect("tempdir");
        let (mut log, _) = LogFile::open(directory.path(), |_, _| {}).expect("open");
        log.append(&encoded(entries)).expect("append");
        log.sync_data().expect("sync");
        directory
    }

    fn log_path(directory: &tempfile::TempDir) -> PathBuf {
        directory.path().join(LOG_FILE_NAME)
    }

    /// Appends raw bytes after whatever the log holds, bypassing LogFile.
    fn append_raw(directory: &tempfile::TempDir, bytes: &[u8]) {
        let mut contents = fs::read(log_path(directory)).expect("read log");
        contents.extend_from_slice(bytes);
        fs::write(log_path(directory), contents).expect("write log");
    }

    #[test]
    fn fresh_data_dir_is_created_with_only_the_header() {
        let parent = tempfile::tempdir().expect("tempdir");
        let data_dir = parent.path().join("nested/data");
        let (log, replay, seen) = open_recording(&data_dir).expect("open");
        assert!(seen.is_empty());
        let expected = Replay {
            valid_bytes: LOG_HEADER_BYTES,
            ..Replay::default()
        };
        assert_eq!(replay, expected);
        assert_eq!(
            fs::read(data_dir.join(LOG_FILE_NAME)).expect("read"),
            LOG_MAGIC
        );
        assert_eq!(log.len(), LOG_HEADER_BYTES);
        assert!(log.is_empty());
        assert_eq!(log.path(), data_dir.join(LOG_FILE_NAME));
        assert!(data_dir.join(LOCK_FILE_NAME).exists());
    }

    #[test]
    fn appended_records_replay_in_order_with_offsets() {
        let entries = five_entries();
        let directory = tempfile::tempdir().expect("tempdir");
        {
            let (mut log, _) = LogFile::open(directory.path(), |_, _| {}).expect("open");
            log.append(&encoded(&entries[..2])).expect("append");
            log.append(&encoded(&entries[2..])).expect("append");
            log.sync_data().expect("sync");
            assert_eq!(log.len(), LOG_HEADER_BYTES + encoded(&entries).len() as u64);
        }
        let (log, replay, seen) = open_recording(directory.path()).expect("reopen");
        assert_eq!(seen, expected_seen(&entries));
        let file_bytes = LOG_HEADER_BYTES + encoded(&entries).len() as u64;
        let expected = Replay {
            records: 5,
            last_epoch: 2,
            last_index: 5,
            valid_bytes: file_bytes,
            truncated_bytes: 0,
        };
        assert_eq!(replay, expected);
        assert_eq!(log.len(), file_bytes);
    }

    /// Three good records, then `tail`: recovery keeps the three, cuts the
    /// file to exactly them, and a later append replays cleanly.
    fn assert_torn_tail_recovers(tail: &[u8]) {
        let entries = five_entries();
        let directory = log_with(&entries[..3]);
        let valid_bytes = fs::metadata(log_path(&directory)).expect("metadata").len();
        append_raw(&directory, tail);
        {
            let (mut log, replay, seen) = open_recording(directory.path()).expect("recover");
            assert_eq!(seen, expected_seen(&entries[..3]));
            let expected = Replay {
                records: 3,
                last_epoch: 1,
                last_index: 3,
                valid_bytes,
                truncated_bytes: tail.len() as u64,
            };
            assert_eq!(replay, expected);
            assert_eq!(
                fs::metadata(log_path(&directory)).expect("metadata").len(),
                valid_bytes
            );
            assert_eq!(log.len(), valid_bytes);
            log.append(&encoded(&entries[3..])).expect("append");
            log.sync_data().expect("sync");
        }
        let (_, replay, seen) = open_recording(directory.path()).expect("reopen");
        assert_eq!(seen, expected_seen(&entries));
        assert_eq!(replay.truncated_bytes, 0);
    }

    #[test]
    fn torn_tail_of_a_record_cut_short_is_truncated() {
        let fourth = encoded(&[five_entries()[3]]);
        assert_torn_tail_recovers(&fourth[..fourth.len() / 2]);
        assert_torn_tail_recovers(&fourth[..5]);
    }

    #[test]
    fn torn_tail_of_a_whole_record_failing_its_checksum_is_truncated() {
        let mut fourth = encoded(&[five_entries()[3]]);
        let last = fourth.len() - 1;
        fourth[last] ^= 0x40;
        assert_torn_tail_recovers(&fourth);
        // Followed by zeros: the data after it never landed either.
        fourth.extend_from_slice(&[0; 100]);
        assert_torn_tail_recovers(&fourth);
    }

    #[test]
    fn torn_tail_of_zero_bytes_is_truncated() {
        assert_torn_tail_recovers(&[0; 4096]);
        assert_torn_tail_recovers(&[0; 3]);
    }

    /// Opens a log whose bytes are expected to be rejected, and checks the file
    /// was not modified.
    fn open_rejected(directory: &tempfile::TempDir) -> LogError {
        let before = fs::read(log_path(directory)).expect("read");
        let error = LogFile::open(directory.path(), |_, _| {}).expect_err("must be rejected");
        assert_eq!(
            fs::read(log_path(directory)).expect("read"),
            before,
            "file must be untouched"
        );
        error
    }

    #[test]
    fn corruption_in_the_middle_is_refused_at_its_offset() {
        let entries = five_entries();
        let offsets = offsets_of(&entries);
        let directory = log_with(&entries);
        let mut contents = fs::read(log_path(&directory)).expect("read");
        contents[offsets[1] as usize + 20] ^= 0x01;
        fs::write(log_path(&directory), contents).expect("write");
        match open_rejected(&directory) {
            LogError::Corrupt {
                path,
                offset,
                reason,
            } => {
                assert_eq!(path, log_path(&directory));
                assert_eq!(offset, offsets[1]);
                assert_eq!(reason, DecodeError::Checksum);
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }

    #[test]
    fn corrupt_message_names_the_file_and_offset() {
        let error = LogError::Corrupt {
            path: PathBuf::from("/x/kvstore.log"),
            offset: 4096,
            reason: DecodeError::Checksum,
        };
        let expected = "log /x/kvstore.log is corrupt at byte 4096: checksum mismatch; refusing to start \
                        (move the file aside or truncate it at that offset to discard the rest)";
        assert_eq!(error.to_string(), expected);
    }

    #[test]
    fn bad_record_at_the_tail_followed_by_data_is_refused() {
        let entries = five_entries();
        let directory = log_with(&entries[..3]);
        let mut fourth = encoded(&[entries[3]]);
        fourth[12] ^= 0x01;
        fourth.extend_from_slice(b"not zeros");
        append_raw(&directory, &fourth);
        let error = open_rejected(&directory);
        assert!(
            matches!(
                error,
                LogError::Corrupt {
                    reason: DecodeError::Checksum,
                    ..
                }
            ),
            "{error:?}"
        );
    }

    #[test]
    fn length_running_past_the_end_over_valid_records_is_refused() {
        // Record 4's length now claims more bytes than the file has, which is
        // what a torn write looks like, but record 5 sits whole inside it.
        let entries = five_entries();
        let offsets = offsets_of(&entries);
        let directory = log_with(&entries);
        let mut contents = fs::read(log_path(&directory)).expect("read");
        let length_field = offsets[3] as usize;
        contents[length_field + 2] ^= 0x01;
        fs::write(log_path(&directory), contents).expect("write");
        match open_rejected(&directory) {
            LogError::Corrupt { offset, reason, .. } => {
                assert_eq!(offset, offsets[3]);
                assert_eq!(reason, DecodeError::Incomplete);
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }

    fn assert_out_of_order(entries: &[Entry<'_>], bad_position: usize, expected_index: u64) {
        let directory = log_with(entries);
        let offsets = offsets_of(entries);
        match open_rejected(&directory) {
            LogError::OutOfOrder {
                offset,
                expected_index: expected,
                found_index,
                found_epoch,
                ..
            } => {
                assert_eq!(offset, offsets[bad_position]);
                assert_eq!(expected, expected_index);
                assert_eq!(found_index, entries[bad_position].index);
                assert_eq!(found_epoch, entries[bad_position].epoch);
            }
            other => panic!("expected OutOfOrder, got {other:?}"),
        }
    }

    #[test]
    fn out_of_order_records_are_refused() {
        let gap = [
            put(1, 1, b"a", b""),
            put(1, 2, b"b", b""),
            put(1, 4, b"c", b""),
        ];
        assert_out_of_order(&gap, 2, 3);
        let repeat = [put(1, 7, b"a", b""), put(1, 7, b"b", b"")];
        assert_out_of_order(&repeat, 1, 8);
        let epoch_decrease = [put(3, 1, b"a", b""), put(2, 2, b"b", b"")];
        assert_out_of_order(&epoch_decrease, 1, 2);
        let index_zero = [put(1, 0, b"a", b"")];
        assert_out_of_order(&index_zero, 0, 1);
    }

    #[test]
    fn first_record_may_start_at_any_index() {
        let entries = [put(4, 100, b"a", b"1"), put(5, 101, b"b", b"2")];
        let directory = log_with(&entries);
        let (_, replay, seen) = open_recording(directory.path()).expect("open");
        assert_eq!(seen, expected_seen(&entries));
        assert_eq!((replay.last_epoch, replay.last_index), (5, 101));
    }

    #[test]
    fn second_open_of_a_locked_dir_is_refused() {
        let directory = tempfile::tempdir().expect("tempdir");
        let (first, _) = LogFile::open(directory.path(), |_, _| {}).expect("first open");
        match LogFile::open(directory.path(), |_, _| {}) {
            Err(LogError::Locked { path }) => {
                assert_eq!(path, directory.path().join(LOCK_FILE_NAME))
            }
            other => panic!("expected Locked, got {other:?}"),
        }
        drop(first);
        LogFile::open(directory.path(), |_, _| {}).expect("open after the first closed");
    }

    #[test]
    fn read_at_returns_the_bytes_written_there() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = LogFile::open(dir.path(), |_, _| {}).unwrap();
        let records = encoded(&[put(1, 1, b"a", b"1"), put(1, 2, b"b", b"2")]);
        log.append(&records).unwrap();
        let mut out = Vec::new();
        log.read_at(LOG_HEADER_BYTES, 1 << 20, &mut out).unwrap();
        assert_eq!(out, records);
        log.read_at(LOG_HEADER_BYTES + 3, 4, &mut out).unwrap();
        assert_eq!(out, records[3..7]);
    }

    #[test]
    fn data_dir_under_a_regular_file_is_an_io_error_naming_it() {
        let directory = tempfile::tempdir().expect("tempdir");
        let regular_file = directory.path().join("plain");
        fs::write(&regular_file, b"x").expect("write");
        let data_dir = regular_file.join("data");
        match LogFile::open(&data_dir, |_, _| {}) {
            Err(error @ LogError::Io { .. }) => {
                let LogError::Io { path, .. } = &error else {
                    unreachable!()
                };
                assert_eq!(path, &data_dir);
                assert!(error.to_string().contains(&data_dir.display().to_string()));
            }
            other => panic!("expected Io, got {other:?}"),
        }
    }

    #[test]
    fn truncate_keeps_only_the_prefix() {
        let entries = five_entries();
        let offsets = offsets_of(&entries);
        let directory = log_with(&entries);
        {
            let (mut log, _) = LogFile::open(directory.path(), |_, _| {}).expect("open");
            assert!(log.truncate(LOG_HEADER_BYTES - 1).is_err());
            assert!(log.truncate(log.len() + 1).is_err());
            log.truncate(offsets[2]).expect("truncate");
            assert_eq!(log.len(), offsets[2]);
        }
        let (_, replay, seen) = open_recording(directory.path()).expect("reopen");
        assert_eq!(seen, expected_seen(&entries[..2]));
        assert_eq!(
            (replay.records, replay.valid_bytes, replay.truncated_bytes),
            (2, offsets[2], 0)
        );
    }

    #[test]
    fn records_larger_than_the_replay_buffer_replay() {
        let large_value = vec![0xa5; 3 * REPLAY_BUFFER_BYTES + 17];
        let entries = [
            put(1, 1, b"small", b"1"),
            put(1, 2, b"large", &large_value),
            put(1, 3, b"after", b"3"),
        ];
        let directory = log_with(&entries);
        let (_, replay, seen) = open_recording(directory.path()).expect("open");
        assert_eq!(seen, expected_seen(&entries));
        assert_eq!(replay.records, 3);
    }

    #[test]
    fn many_records_across_buffer_refills_replay() {
        let value = [7u8; 100];
        let entries: Vec<Entry<'_>> = (1..=25_000)
            .map(|index| put(1, index, b"key", &value))
            .collect();
        let directory = log_with(&entries);
        assert!(
            fs::metadata(log_path(&directory)).expect("metadata").len()
                > 2 * REPLAY_BUFFER_BYTES as u64
        );
        let (_, replay, seen) = open_recording(directory.path()).expect("open");
        assert_eq!(seen, expected_seen(&entries));
        assert_eq!(replay.last_index, 25_000);
    }

    #[test]
    fn header_torn_at_creation_is_rewritten() {
        for torn_header in [
            &LOG_MAGIC[..0],
            &LOG_MAGIC[..3],
            &LOG_MAGIC[..7],
            &[0u8; 8][..],
        ] {
            let directory = tempfile::tempdir().expect("tempdir");
            fs::write(log_path(&directory), torn_header).expect("write");
            let (_, replay, seen) = open_recording(directory.path()).expect("open");
            assert!(seen.is_empty());
            assert_eq!(replay.valid_bytes, LOG_HEADER_BYTES);
            assert_eq!(fs::read(log_path(&directory)).expect("read"), LOG_MAGIC);
        }
    }

    #[test]
    fn foreign_file_is_bad_magic() {
        let mut other_version = LOG_MAGIC;
        other_version[7] = 2;
        for foreign in [
            &b"hello"[..],
            &b"not a kvstore log at all"[..],
            &other_version[..],
        ] {
            let directory = tempfile::tempdir().expect("tempdir");
            fs::write(log_path(&directory), foreign).expect("write");
            let error = open_rejected(&directory);
            assert!(matches!(error, LogError::BadMagic { .. }), "{error:?}");
        }
    }
}
