//! The single-file log `<data_dir>/kvstore.log`: opening and locking it,
//! replaying it at startup, recovering from a torn tail, appending, syncing,
//! truncating. Kept while the reactor moves to the segmented log
//! ([`super::segments`]), which migrates such a file on its first start.
//!
//! The file is the 8-byte [`LOG_MAGIC`] followed by records (see
//! [`super::record`]); its bytes are handled by `SegmentFile` and the
//! directory by [`DataDir`], exactly as for a segment. Invariants after
//! [`LogFile::open`] returns:
//! - the file holds exactly the magic and whole, valid records, each index
//!   one more than the previous, epochs never decreasing;
//! - this process holds an exclusive advisory lock on `<data_dir>/LOCK`, so no
//!   other server appends to the same file.
//!
//! Recovery rules: a torn tail (see [`super::scan`]) is truncated with a
//! warning. Any other bad record is corruption: [`LogError::Corrupt`], and the
//! file is left untouched, because acknowledged writes may follow it.

use std::fs::File;
use std::io;
use std::ops::ControlFlow;
use std::path::Path;

use super::data_dir::DataDir;
pub use super::data_dir::LOCK_FILE_NAME;
use super::error::{LogError, io_error};
use super::record::Entry;
use super::scan::Progress;
use super::segment::SegmentFile;
pub use super::segment::{LOG_HEADER_BYTES, LOG_MAGIC};

/// The log's file name inside the data directory.
pub const LOG_FILE_NAME: &str = "kvstore.log";

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

/// The open, locked, replayed log. Appends go to the end; nothing else
/// writes to the file while this exists.
#[derive(Debug)]
pub struct LogFile {
    segment: SegmentFile,
    /// The directory lock lasts as long as this value.
    _data_dir: DataDir,
}

impl LogFile {
    /// Creates the data dir and the log if missing, locks the dir, replays
    /// every record in order calling `on_entry(byte_offset_of_record, &entry)`,
    /// and truncates a torn tail.
    pub fn open(
        data_dir: &Path,
        on_entry: impl FnMut(u64, &Entry<'_>),
    ) -> Result<(LogFile, Replay), LogError> {
        let data_dir = DataDir::lock(data_dir)?;
        let path = data_dir.path().join(LOG_FILE_NAME);
        let mut segment = open_log(&path, &data_dir)?;
        let replay = replay_file(&mut segment, on_entry)?;
        let log = LogFile {
            segment,
            _data_dir: data_dir,
        };
        Ok((log, replay))
    }

    /// Writes `bytes` (whole encoded records) at the end of the file. Not
    /// durable until [`LogFile::sync_data`] returns.
    pub fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.segment.append(bytes)
    }

    /// Makes every appended byte durable (fdatasync). An error here means the
    /// data may be lost: the caller must not acknowledge it, nor retry and
    /// assume success.
    pub fn sync_data(&self) -> io::Result<()> {
        self.segment.sync_data()
    }

    /// Drops every byte from `len_bytes` on (a follower's divergent suffix),
    /// durably. `len_bytes` must be a record boundary, at least the header and
    /// at most [`LogFile::len`].
    pub fn truncate(&mut self, len_bytes: u64) -> io::Result<()> {
        self.segment.truncate(len_bytes)
    }

    /// Bytes in the file: the header and every appended record.
    pub fn len(&self) -> u64 {
        self.segment.len()
    }

    /// Reads up to `max_bytes` from byte `offset` into `out` (replacing its
    /// contents); fewer at the end of the file. For records a follower needs
    /// that the core no longer keeps in memory.
    pub fn read_at(&self, offset: u64, max_bytes: usize, out: &mut Vec<u8>) -> io::Result<()> {
        let available = usize::try_from(self.len().saturating_sub(offset)).unwrap_or(usize::MAX);
        out.clear();
        out.resize(max_bytes.min(available), 0);
        self.segment.read_exact_at(out, offset)
    }

    /// True when the log holds no records, only the header.
    pub fn is_empty(&self) -> bool {
        self.len() == LOG_HEADER_BYTES
    }

    pub fn path(&self) -> &Path {
        self.segment.path()
    }

    /// A second descriptor for the same file, for a syncer thread to call
    /// `sync_data` on while the reactor keeps appending.
    pub fn try_clone_file(&self) -> io::Result<File> {
        self.segment.file().try_clone()
    }
}

/// Opens the log, creating it with its header (durably, entry included) when
/// missing.
fn open_log(path: &Path, data_dir: &DataDir) -> Result<SegmentFile, LogError> {
    match SegmentFile::create(path) {
        Ok(segment) => {
            segment
                .sync_all()
                .and_then(|()| data_dir.sync())
                .map_err(|source| io_error(path, source))?;
            Ok(segment)
        }
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => SegmentFile::open(path),
        Err(source) => Err(io_error(path, source)),
    }
}

/// Replays every record, then truncates a torn tail or rejects corruption.
fn replay_file(
    segment: &mut SegmentFile,
    mut on_entry: impl FnMut(u64, &Entry<'_>),
) -> Result<Replay, LogError> {
    let mut replay = Replay {
        valid_bytes: LOG_HEADER_BYTES,
        ..Replay::default()
    };
    let path = segment.path().to_path_buf();
    let mut progress = Progress::new(segment.len());
    let end = segment.scan(&mut progress, |offset, entry| {
        check_order(&replay, entry, &path, offset)?;
        on_entry(offset, entry);
        replay.records += 1;
        replay.last_epoch = entry.epoch;
        replay.last_index = entry.index;
        Ok(ControlFlow::Continue(()))
    })?;
    replay.valid_bytes = end.valid_bytes;
    match &end.damage {
        None => Ok(replay),
        Some(damage) if damage.torn => {
            segment.cut_torn_tail(&end)?;
            replay.truncated_bytes = end.damaged_bytes();
            Ok(replay)
        }
        Some(damage) => Err(LogError::Corrupt {
            path,
            offset: end.valid_bytes,
            reason: damage.reason.clone(),
        }),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::record::{DecodeError, Op, encode, encoded_len};
    use crate::log::scan::REPLAY_BUFFER_BYTES;
    use std::fs;
    use std::path::PathBuf;

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
