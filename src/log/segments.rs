//! The log as a sequence of segment files in the data directory, found by
//! log index: appending a turn's records, reading records from an index,
//! cutting the log after an index, dropping a prefix a snapshot covers, and
//! handing out what the next fdatasync must cover.
//!
//! A segment is `log-<first index, 20 digits>.log` ([`segment_file_name`]):
//! the log header and whole records (see [`super::segment`]). The newest
//! segment is the active one; appends go there, and once it has reached the
//! segment size the next append first creates a new one (a roll). Dropping a
//! prefix is unlinking whole segments, never rewriting live data.
//!
//! Invariants of an open [`Log`]:
//! - there is at least one segment; segments are ordered by first index and
//!   contiguous (each starts one past the previous one's last record), epochs
//!   never decrease across them; only the active segment may be empty;
//! - `first_index() - 1 <= base.index <= last_index()`, where `base` is the
//!   snapshot the log continues (or the last record a removed segment held):
//!   the log never cuts below it;
//! - the in-memory index of every segment matches its file.
//!
//! Durability: appends and rolls are durable only once a [`SyncJob`] taken
//! after them has run. Truncation and reset are durable when they return, and
//! remove segments newest first, syncing the directory after each removal, so
//! a crash midway leaves a log that still opens. The recovery rules of
//! [`Log::open`] are in [`recovery`]. This module never interprets records:
//! it reads only their lengths, indices and epochs.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::data_dir::DataDir;
use super::error::LogError;
use super::record::Entry;
use super::segment::{LOG_HEADER_BYTES, Segment, SegmentFile, SegmentIndex};
use super::sync_job::SyncJob;

pub mod recovery;

/// Segment file names: this prefix, the first index in decimal padded to
/// [`SEGMENT_NAME_DIGITS`], then [`SEGMENT_NAME_SUFFIX`].
const SEGMENT_NAME_PREFIX: &str = "log-";

const SEGMENT_NAME_SUFFIX: &str = ".log";

/// Enough for every u64, so names sort as their indices do.
const SEGMENT_NAME_DIGITS: usize = 20;

/// `log-{first_index:020}.log`: a segment is named by the index its first
/// record has (or will have, while it is empty).
pub fn segment_file_name(first_index: u64) -> String {
    format!("{SEGMENT_NAME_PREFIX}{first_index:0SEGMENT_NAME_DIGITS$}{SEGMENT_NAME_SUFFIX}")
}

/// The first index a segment file name stands for; `None` for any other name
/// (including index 0, which no record has).
pub(crate) fn parse_segment_file_name(name: &str) -> Option<u64> {
    let digits = name
        .strip_prefix(SEGMENT_NAME_PREFIX)?
        .strip_suffix(SEGMENT_NAME_SUFFIX)?;
    if digits.len() != SEGMENT_NAME_DIGITS || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|&index| index >= 1)
}

/// Where the log must continue: the last record a snapshot covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Base {
    /// The snapshot's last index; the log continues at `index + 1`.
    pub index: u64,
    /// The epoch of record `index`.
    pub epoch: u64,
}

/// What [`Log::open`] found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Replay {
    /// Records passed to `on_entry`: those after the base.
    pub records: u64,
    /// The first record the log retains (`last_index + 1` when it holds none).
    pub first_index: u64,
    /// The last record's index (the base's when the log holds none after it).
    pub last_index: u64,
    /// The last record's epoch (the base's when the log holds none after it).
    pub last_epoch: u64,
    /// Bytes of every segment file after recovery.
    pub bytes: u64,
    /// Bytes dropped as torn writes: cut tails and the record-less segments
    /// after a torn one.
    pub truncated_bytes: u64,
    /// Bytes dropped because the base covers them or replaced their history.
    pub discarded_bytes: u64,
    /// Segment files after recovery.
    pub segments: usize,
}

/// The open, replayed log. Nothing else writes to its segment files while it
/// exists (it holds a clone of the locked [`DataDir`]).
#[derive(Debug)]
pub struct Log {
    data_dir: DataDir,
    segment_bytes: u64,
    /// Never empty; the last one is the active segment.
    segments: Vec<Segment>,
    base: Base,
    /// A segment was created or removed since the last sync job was taken.
    directory_dirty: bool,
}

impl Log {
    /// Opens the log in a locked data directory and replays it, calling
    /// `on_entry` for every record after `base`, in order. `segment_bytes`: a
    /// segment is rolled once it reaches this size. `base`: the snapshot the
    /// store was loaded from (`None`: the log must start at index 1). A legacy
    /// single-file log is migrated first. See [`recovery`] for every rule.
    ///
    /// # Panics
    /// If `segment_bytes` does not exceed the header (no record would fit),
    /// or the base is the last possible index (no record could follow it).
    pub fn open(
        data_dir: &DataDir,
        segment_bytes: u64,
        base: Option<Base>,
        on_entry: impl FnMut(&Entry<'_>),
    ) -> Result<(Log, Replay), LogError> {
        assert!(
            segment_bytes > LOG_HEADER_BYTES,
            "segment_bytes {segment_bytes} leaves no room for records"
        );
        assert!(
            base.is_none_or(|base| base.index < u64::MAX),
            "no record can follow a base at index {}",
            u64::MAX
        );
        let recovered = recovery::recover(data_dir, base, on_entry)?;
        let log = Log {
            data_dir: data_dir.clone(),
            segment_bytes,
            segments: recovered.segments,
            base: recovered.base,
            directory_dirty: false,
        };
        log.assert_invariants();
        let replay = Replay {
            first_index: log.first_index(),
            last_index: log.last_index(),
            last_epoch: log.last_epoch(),
            bytes: log.disk_bytes(),
            segments: log.segment_count(),
            ..recovered.replay
        };
        Ok((log, replay))
    }

    /// Appends whole encoded records `first_index..` (one turn's group commit)
    /// to the active segment with one write, first rolling to a new segment
    /// if the active one has reached the segment size. Records must continue
    /// the log (`first_index == last_index() + 1`, consecutive indices, epochs
    /// not decreasing); otherwise `InvalidInput` and nothing is written. Not
    /// durable until a [`SyncJob`] taken afterwards has run. Any other error
    /// is the disk's: the records are not in the log (a partial write is cut
    /// back, best effort), and the caller must stop, as after a failed sync.
    pub fn append(&mut self, first_index: u64, bytes: &[u8]) -> io::Result<()> {
        if first_index != self.last_index() + 1 {
            let message = format!(
                "refusing to append index {first_index} to a log that ends at index {}",
                self.last_index()
            );
            return Err(io::Error::new(io::ErrorKind::InvalidInput, message));
        }
        if bytes.is_empty() {
            return Ok(());
        }
        if self.active().len() >= self.segment_bytes {
            self.roll()?;
        }
        self.active_mut().append(first_index, bytes)
    }

    /// Creates the next segment (header only) and makes it the active one.
    fn roll(&mut self) -> io::Result<()> {
        let active = self.active();
        debug_assert!(!active.is_empty(), "a full segment holds records");
        let first_index = active.last_index() + 1;
        let index = SegmentIndex::new(first_index, active.last_epoch());
        let path = self.data_dir.path().join(segment_file_name(first_index));
        let mut segment = Segment::new(SegmentFile::create(&path)?, index);
        // The header and the directory entry become durable with the records.
        segment.mark_dirty();
        self.directory_dirty = true;
        self.segments.push(segment);
        Ok(())
    }

    /// Whole records starting exactly at `from_index`, as many as fit in
    /// `max_bytes` but at least one; `out` is replaced. Empty when
    /// `from_index > last_index()`; `InvalidInput` when
    /// `from_index < first_index()`. Stops at a segment's end: the caller asks
    /// again from the next index. `InvalidData` when the file no longer holds
    /// what replay found.
    pub fn read(&self, from_index: u64, max_bytes: usize, out: &mut Vec<u8>) -> io::Result<()> {
        if from_index < self.first_index() {
            let message = format!(
                "cannot read log index {from_index}: the log starts at index {}",
                self.first_index()
            );
            return Err(io::Error::new(io::ErrorKind::InvalidInput, message));
        }
        if from_index > self.last_index() {
            out.clear();
            return Ok(());
        }
        self.segments[self.position_holding(from_index)].read(from_index, max_bytes, out)
    }

    /// Keeps the records up to `index`, durably: later segments are removed
    /// (newest first, the directory synced after each), then the segment
    /// holding `index + 1` is cut and synced. Nothing to do when
    /// `index >= last_index()`. `InvalidInput` below the base (records a
    /// snapshot covers are committed, so cutting them is a caller's bug).
    pub fn truncate_after(&mut self, index: u64) -> io::Result<()> {
        if index < self.base.index {
            let message = format!(
                "refusing to cut the log after index {index}: index {} is covered by a snapshot",
                self.base.index
            );
            return Err(io::Error::new(io::ErrorKind::InvalidInput, message));
        }
        if index >= self.last_index() {
            return Ok(());
        }
        let position = self.position_holding(index + 1);
        self.remove_segments_after(position)?;
        let previous_epoch = match position.checked_sub(1) {
            Some(previous) => self.segments[previous].last_epoch(),
            None => self.base.epoch,
        };
        self.segments[position].truncate_after(index, previous_epoch)?;
        self.assert_invariants();
        Ok(())
    }

    /// Discards every record, durably, so the log continues at
    /// `base.index + 1`: a follower that installed a snapshot at `base`,
    /// which must already be durable (recovering from a crash midway relies
    /// on it). Segments starting past `base.index + 1` are removed first,
    /// newest first; then `log-<base.index + 1>` is made empty (cut, or
    /// created); then the older segments are removed. `InvalidInput` when
    /// `base` is older than the log's current base.
    pub fn reset(&mut self, base: Base) -> io::Result<()> {
        if base.index < self.base.index || base.index == u64::MAX {
            let message = format!(
                "refusing to reset the log to index {}: its base is already index {}",
                base.index, self.base.index
            );
            return Err(io::Error::new(io::ErrorKind::InvalidInput, message));
        }
        let next_index = base.index + 1;
        // At least the first segment starts at or below next_index, because
        // first_index() - 1 <= self.base.index <= base.index.
        let starting_at_or_below = self
            .segments
            .partition_point(|segment| segment.first_index() <= next_index);
        self.remove_segments_after(starting_at_or_below - 1)?;
        let last = self.segments.len() - 1;
        let fresh = if self.segments[last].first_index() == next_index {
            self.segments[last].truncate_after(base.index, base.epoch)?;
            self.segments.pop().expect("checked above")
        } else {
            self.create_durably(next_index, base.epoch)?
        };
        let older = std::mem::replace(&mut self.segments, vec![fresh]);
        self.base = base;
        for segment in older.iter().rev() {
            self.remove_file_durably(segment.path())?;
        }
        self.assert_invariants();
        Ok(())
    }

    /// Takes out of the log, oldest first, every segment all of whose
    /// records are at or below `index`, never the active segment, and
    /// returns their paths: the caller deletes the files, on a thread where
    /// freeing their blocks cannot stall anything (this only closes them,
    /// which is cheap while they are still linked). Until they are deleted
    /// and the directory synced, a crash may bring some back, which
    /// [`Log::open`] removes again given a base at or past `index`. The
    /// caller must only pass an index a durable snapshot covers.
    pub fn detach_through(&mut self, index: u64) -> Vec<PathBuf> {
        let mut detached = Vec::new();
        while self.segments.len() > 1 && self.segments[0].last_index() <= index {
            let removed = self.segments.remove(0);
            self.directory_dirty = true;
            if removed.last_index() > self.base.index {
                self.base = Base {
                    index: removed.last_index(),
                    epoch: removed.last_epoch(),
                };
            }
            detached.push(removed.path().to_path_buf());
        }
        self.assert_invariants();
        detached
    }

    /// What the next fdatasync must cover: every segment written since the
    /// last job, and the directory if a segment was created or removed since.
    /// `None` when nothing is dirty. Taking the job marks those clean, so the
    /// caller must run it (or merge it into one that will run).
    pub fn take_sync_job(&mut self) -> Option<SyncJob> {
        let files = self
            .segments
            .iter_mut()
            .filter_map(Segment::take_dirty)
            .collect();
        let directory =
            std::mem::take(&mut self.directory_dirty).then(|| self.data_dir.directory_handle());
        SyncJob::new(files, directory)
    }

    /// The first record retained (`last_index() + 1` when there is none).
    pub fn first_index(&self) -> u64 {
        self.segments[0].first_index()
    }

    /// The last record's index (`first_index() - 1` when there is none).
    pub fn last_index(&self) -> u64 {
        self.active().last_index()
    }

    /// The last record's epoch; the base's when the log holds no record.
    pub fn last_epoch(&self) -> u64 {
        self.active().last_epoch()
    }

    /// The sum of the segment files' lengths.
    pub fn disk_bytes(&self) -> u64 {
        self.segments.iter().map(Segment::len).sum()
    }

    /// Whether the next append starts a new segment. A driver that must
    /// not let records reach a new segment before the old one is durable
    /// (so that a crash can only tear the last segment) syncs first.
    pub fn rolls_next(&self) -> bool {
        self.active().len() >= self.segment_bytes
    }

    /// Whether every byte appended so far has been handed to a sync job.
    pub fn is_clean(&self) -> bool {
        !self.directory_dirty && self.segments.iter().all(|segment| !segment.is_dirty())
    }

    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    fn active(&self) -> &Segment {
        self.segments.last().expect("the log always has a segment")
    }

    fn active_mut(&mut self) -> &mut Segment {
        self.segments
            .last_mut()
            .expect("the log always has a segment")
    }

    /// The position of the segment holding `index`, which the log must hold.
    fn position_holding(&self, index: u64) -> usize {
        debug_assert!((self.first_index()..=self.last_index()).contains(&index));
        self.segments
            .partition_point(|segment| segment.first_index() <= index)
            - 1
    }

    /// Removes the segments after `position`, newest first, syncing the
    /// directory after each so that what survives a crash is a prefix.
    fn remove_segments_after(&mut self, position: usize) -> io::Result<()> {
        while self.segments.len() > position + 1 {
            let newest = self.segments.len() - 1;
            remove_segment_durably(&self.data_dir, self.segments[newest].path())?;
            self.directory_dirty = false;
            self.segments.pop();
        }
        Ok(())
    }

    fn remove_file_durably(&mut self, path: &Path) -> io::Result<()> {
        remove_segment_durably(&self.data_dir, path)?;
        // Every earlier change to the directory is durable now too.
        self.directory_dirty = false;
        Ok(())
    }

    fn create_durably(&mut self, first_index: u64, previous_epoch: u64) -> io::Result<Segment> {
        let segment = create_segment_durably(&self.data_dir, first_index, previous_epoch)?;
        self.directory_dirty = false;
        Ok(segment)
    }

    /// The invariants in the module header, checked in debug builds.
    fn assert_invariants(&self) {
        assert!(!self.segments.is_empty(), "the log always has a segment");
        debug_assert!(self.first_index() - 1 <= self.base.index);
        debug_assert!(self.base.index <= self.last_index());
        for pair in self.segments.windows(2) {
            debug_assert!(!pair[0].is_empty(), "only the active segment may be empty");
            debug_assert_eq!(pair[0].last_index() + 1, pair[1].first_index());
            debug_assert!(pair[0].last_epoch() <= pair[1].last_epoch());
        }
    }
}

/// Creates an empty segment starting at `first_index`, after a record of
/// `previous_epoch`: its header and its directory entry durable.
fn create_segment_durably(
    data_dir: &DataDir,
    first_index: u64,
    previous_epoch: u64,
) -> io::Result<Segment> {
    let path = data_dir.path().join(segment_file_name(first_index));
    let file = SegmentFile::create(&path)?;
    file.sync_all()?;
    data_dir.sync()?;
    Ok(Segment::new(
        file,
        SegmentIndex::new(first_index, previous_epoch),
    ))
}

/// Unlinks a segment file and syncs the directory.
fn remove_segment_durably(data_dir: &DataDir, path: &Path) -> io::Result<()> {
    fs::remove_file(path)?;
    data_dir.sync()
}

/// Builders shared by the tests of this module and of [`recovery`].
#[cfg(test)]
mod testing {
    use std::collections::BTreeMap;
    use std::ops::RangeInclusive;
    use std::path::PathBuf;

    use super::*;
    use crate::log::record::{Op, encode};
    use crate::log::segment::LOG_MAGIC;

    /// Four test records fill a segment of this size (8 + 4 × 58 >= 200 > 8 + 3 × 58).
    pub const TEST_SEGMENT_BYTES: u64 = 200;

    /// Bytes of every test record.
    pub const TEST_RECORD_BYTES: u64 = 58;

    /// The epoch the test logs give record `index`: 1 up to 5, then 2.
    pub fn epoch_of(index: u64) -> u64 {
        if index <= 5 { 1 } else { 2 }
    }

    /// A Put record of [`TEST_RECORD_BYTES`].
    pub fn record(epoch: u64, index: u64) -> Vec<u8> {
        let value = [index as u8; 20];
        let entry = Entry {
            epoch,
            index,
            commit: index - 1,
            op: Op::Put {
                key: b"k",
                value: &value,
            },
        };
        let mut out = Vec::new();
        encode(&entry, &mut out);
        assert_eq!(out.len() as u64, TEST_RECORD_BYTES);
        out
    }

    /// Records `indices`, each with the epoch [`epoch_of`] gives it.
    pub fn records(indices: RangeInclusive<u64>) -> Vec<u8> {
        indices
            .flat_map(|index| record(epoch_of(index), index))
            .collect()
    }

    /// Opens the log, returning the indices passed to `on_entry`.
    pub fn open(
        data_dir: &DataDir,
        base: Option<Base>,
    ) -> Result<(Log, Replay, Vec<u64>), LogError> {
        let mut seen = Vec::new();
        let (log, replay) = Log::open(data_dir, TEST_SEGMENT_BYTES, base, |entry| {
            seen.push(entry.index)
        })?;
        Ok((log, replay, seen))
    }

    /// A locked directory whose log holds records `1..=last_index`, appended
    /// one at a time and synced: segments 1-4, 5-8, 9-12, ...
    pub fn log_through(last_index: u64) -> (tempfile::TempDir, DataDir) {
        let directory = tempfile::tempdir().expect("tempdir");
        let data_dir = DataDir::lock(directory.path()).expect("lock");
        let (mut log, _, _) = open(&data_dir, None).expect("open");
        for index in 1..=last_index {
            log.append(index, &record(epoch_of(index), index))
                .expect("append");
        }
        if let Some(job) = log.take_sync_job() {
            job.run().expect("sync");
        }
        (directory, data_dir)
    }

    pub fn segment_path(data_dir: &DataDir, first_index: u64) -> PathBuf {
        data_dir.path().join(segment_file_name(first_index))
    }

    /// The first indices of the segment files present.
    pub fn segment_files(data_dir: &DataDir) -> Vec<u64> {
        let mut found: Vec<u64> = fs::read_dir(data_dir.path())
            .expect("read dir")
            .filter_map(|entry| {
                let name = entry.expect("entry").file_name();
                name.to_str().and_then(parse_segment_file_name)
            })
            .collect();
        found.sort();
        found
    }

    /// Every file of the directory and its bytes, to check that a refused
    /// open changed nothing.
    pub fn directory_contents(data_dir: &DataDir) -> BTreeMap<PathBuf, Vec<u8>> {
        fs::read_dir(data_dir.path())
            .expect("read dir")
            .map(|entry| {
                let path = entry.expect("entry").path();
                let bytes = fs::read(&path).expect("read");
                (path, bytes)
            })
            .collect()
    }

    /// Writes a segment file directly: the header, then `records`.
    pub fn write_segment(data_dir: &DataDir, first_index: u64, records: &[u8]) {
        let mut bytes = LOG_MAGIC.to_vec();
        bytes.extend_from_slice(records);
        fs::write(segment_path(data_dir, first_index), bytes).expect("write segment");
    }

    /// Appends raw bytes to a segment file, bypassing the log.
    pub fn append_raw(data_dir: &DataDir, first_index: u64, bytes: &[u8]) {
        let path = segment_path(data_dir, first_index);
        let mut contents = fs::read(&path).expect("read segment");
        contents.extend_from_slice(bytes);
        fs::write(path, contents).expect("write segment");
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;
    use crate::log::segment::RECORDS_PER_SPARSE_OFFSET;

    #[test]
    fn segment_file_names_sort_as_their_indices_and_parse_back() {
        assert_eq!(segment_file_name(1), "log-00000000000000000001.log");
        assert_eq!(segment_file_name(u64::MAX), "log-18446744073709551615.log");
        for index in [1, 9, 10, 12_345, u64::MAX] {
            assert_eq!(
                parse_segment_file_name(&segment_file_name(index)),
                Some(index)
            );
        }
        assert!(segment_file_name(9) < segment_file_name(10));
        for not_a_segment in [
            "log-1.log",
            "log-0000000000000000000a.log",
            "log-00000000000000000000.log",
            "log-+0000000000000000001.log",
            "log-00000000000000000001.log.tmp",
            "kvstore.log",
            "LOCK",
        ] {
            assert_eq!(
                parse_segment_file_name(not_a_segment),
                None,
                "{not_a_segment}"
            );
        }
    }

    #[test]
    fn appends_roll_segments_and_replay_across_them() {
        let (_directory, data_dir) = log_through(10);
        assert_eq!(segment_files(&data_dir), [1, 5, 9]);
        let (mut log, replay, seen) = open(&data_dir, None).expect("reopen");
        assert_eq!(seen, (1..=10).collect::<Vec<_>>());
        let expected = Replay {
            records: 10,
            first_index: 1,
            last_index: 10,
            last_epoch: 2,
            bytes: 3 * LOG_HEADER_BYTES + 10 * TEST_RECORD_BYTES,
            truncated_bytes: 0,
            discarded_bytes: 0,
            segments: 3,
        };
        assert_eq!(replay, expected);
        assert_eq!(log.disk_bytes(), replay.bytes);
        // Segment 9 holds two records: it rolls after two more.
        log.append(11, &records(11..=12)).expect("append");
        assert_eq!(log.segment_count(), 3);
        log.append(13, &records(13..=13)).expect("append");
        assert_eq!(segment_files(&data_dir), [1, 5, 9, 13]);
        assert_eq!(
            (log.first_index(), log.last_index(), log.last_epoch()),
            (1, 13, 2)
        );
    }

    #[test]
    fn one_append_larger_than_a_segment_stays_whole() {
        let directory = tempfile::tempdir().expect("tempdir");
        let data_dir = DataDir::lock(directory.path()).expect("lock");
        let (mut log, _, _) = open(&data_dir, None).expect("open");
        log.append(1, &records(1..=10)).expect("append");
        assert_eq!(log.segment_count(), 1);
        log.append(11, &records(11..=11)).expect("append");
        assert_eq!(segment_files(&data_dir), [1, 11]);
        drop(log);
        let (_, _, seen) = open(&data_dir, None).expect("reopen");
        assert_eq!(seen, (1..=11).collect::<Vec<_>>());
    }

    #[test]
    fn read_returns_whole_records_from_an_index_up_to_a_segment_end() {
        let (_directory, data_dir) = log_through(10);
        let (log, _, _) = open(&data_dir, None).expect("open");
        let mut out = vec![0xee; 3];
        let everything = usize::MAX;
        log.read(1, everything, &mut out).expect("read");
        assert_eq!(out, records(1..=4), "stops at the end of segment 1");
        log.read(4, everything, &mut out).expect("read");
        assert_eq!(out, records(4..=4));
        log.read(5, everything, &mut out).expect("read");
        assert_eq!(out, records(5..=8));
        log.read(10, everything, &mut out).expect("read");
        assert_eq!(out, records(10..=10), "the last index");
        log.read(11, everything, &mut out).expect("read");
        assert!(out.is_empty(), "past the last index");
        let error = log
            .read(0, everything, &mut out)
            .expect_err("before the first index");
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
        // At least one record, even when it does not fit.
        log.read(2, 1, &mut out).expect("read");
        assert_eq!(out, records(2..=2));
        // As many whole records as fit.
        let two_and_a_half = (2 * TEST_RECORD_BYTES + TEST_RECORD_BYTES / 2) as usize;
        log.read(6, two_and_a_half, &mut out).expect("read");
        assert_eq!(out, records(6..=7));
    }

    #[test]
    fn records_deep_in_a_segment_are_found_by_index() {
        let directory = tempfile::tempdir().expect("tempdir");
        let data_dir = DataDir::lock(directory.path()).expect("lock");
        let (mut log, _) = Log::open(&data_dir, 1 << 20, None, |_| {}).expect("open");
        let last_index = 5 * RECORDS_PER_SPARSE_OFFSET + 3;
        let mut next_index = 1;
        while next_index <= last_index {
            let batch_end = (next_index + 6).min(last_index);
            log.append(next_index, &records(next_index..=batch_end))
                .expect("append");
            next_index = batch_end + 1;
        }
        assert_eq!(log.segment_count(), 1);
        let mut out = Vec::new();
        for index in 1..=last_index {
            log.read(index, TEST_RECORD_BYTES as usize, &mut out)
                .expect("read");
            assert_eq!(out, records(index..=index), "index {index}");
        }
        let cut = 2 * RECORDS_PER_SPARSE_OFFSET + 1;
        log.truncate_after(cut).expect("truncate");
        assert_eq!((log.last_index(), log.last_epoch()), (cut, epoch_of(cut)));
        log.read(cut - 1, usize::MAX, &mut out).expect("read");
        assert_eq!(out, records(cut - 1..=cut));
        drop(log);
        let (log, replay) = Log::open(&data_dir, 1 << 20, None, |_| {}).expect("reopen");
        assert_eq!(
            (replay.records, log.disk_bytes()),
            (cut, LOG_HEADER_BYTES + cut * TEST_RECORD_BYTES)
        );
    }

    #[test]
    fn append_refuses_records_that_do_not_continue_the_log() {
        let (_directory, data_dir) = log_through(6);
        let (mut log, _, _) = open(&data_dir, None).expect("open");
        let bytes_before = log.disk_bytes();
        let mut skipping = records(7..=7);
        skipping.extend(record(2, 9));
        let mut torn = records(7..=8);
        torn.truncate(torn.len() - 1);
        let refused = [
            (8, records(8..=8)),
            (7, records(8..=8)),
            (7, skipping),
            (7, record(1, 7)),
            (7, torn),
        ];
        for (first_index, bytes) in refused {
            let error = log.append(first_index, &bytes).expect_err("refused");
            assert_eq!(error.kind(), io::ErrorKind::InvalidInput, "{error}");
        }
        assert_eq!((log.last_index(), log.disk_bytes()), (6, bytes_before));
        log.append(7, &records(7..=8))
            .expect("a batch that continues the log");
    }

    #[test]
    fn truncate_after_in_the_middle_of_a_segment_is_durable() {
        let (_directory, data_dir) = log_through(10);
        let (mut log, _, _) = open(&data_dir, None).expect("open");
        log.truncate_after(6).expect("truncate");
        assert_eq!(segment_files(&data_dir), [1, 5]);
        assert_eq!(
            (log.last_index(), log.last_epoch(), log.segment_count()),
            (6, 2, 2)
        );
        assert!(
            log.take_sync_job().is_none(),
            "truncation syncs what it changes"
        );
        log.append(7, &record(3, 7)).expect("append after the cut");
        log.take_sync_job().expect("job").run().expect("sync");
        drop(log);
        let (log, replay, seen) = open(&data_dir, None).expect("reopen");
        assert_eq!(seen, (1..=7).collect::<Vec<_>>());
        assert_eq!((replay.last_epoch, replay.truncated_bytes), (3, 0));
        assert_eq!(
            log.disk_bytes(),
            2 * LOG_HEADER_BYTES + 7 * TEST_RECORD_BYTES
        );
    }

    #[test]
    fn truncate_after_at_a_segment_boundary_leaves_an_empty_active_segment() {
        let (_directory, data_dir) = log_through(10);
        let (mut log, _, _) = open(&data_dir, None).expect("open");
        log.truncate_after(10).expect("nothing to cut");
        log.truncate_after(4).expect("truncate");
        assert_eq!(segment_files(&data_dir), [1, 5]);
        assert_eq!(
            fs::metadata(segment_path(&data_dir, 5))
                .expect("stat")
                .len(),
            LOG_HEADER_BYTES
        );
        assert_eq!((log.last_index(), log.last_epoch()), (4, 1));
        drop(log);
        let (mut log, replay, seen) = open(&data_dir, None).expect("reopen");
        assert_eq!(seen, [1, 2, 3, 4]);
        assert_eq!((replay.last_index, replay.segments), (4, 2));
        log.append(5, &record(3, 5))
            .expect("append into the empty segment");
        assert_eq!(log.segment_count(), 2);
        log.truncate_after(0).expect("cut everything");
        assert_eq!(segment_files(&data_dir), [1]);
        assert_eq!(
            (log.first_index(), log.last_index(), log.last_epoch()),
            (1, 0, 0)
        );
        assert_eq!(log.disk_bytes(), LOG_HEADER_BYTES);
    }

    #[test]
    fn reset_discards_every_record_and_continues_after_the_snapshot() {
        let cases = [
            // (snapshot index, the one segment left, empty)
            (20, 21),
            (6, 7),
            (8, 9),
            (10, 11),
        ];
        for (snapshot_index, fresh) in cases {
            let (_directory, data_dir) = log_through(10);
            let (mut log, _, _) = open(&data_dir, None).expect("open");
            let base = Base {
                index: snapshot_index,
                epoch: 4,
            };
            log.reset(base).expect("reset");
            assert_eq!(
                segment_files(&data_dir),
                [fresh],
                "snapshot {snapshot_index}"
            );
            assert_eq!(
                (log.first_index(), log.last_index(), log.last_epoch()),
                (fresh, snapshot_index, 4)
            );
            assert_eq!(log.disk_bytes(), LOG_HEADER_BYTES);
            log.append(fresh, &record(4, fresh)).expect("append");
            log.take_sync_job().expect("job").run().expect("sync");
            drop(log);
            let (_, replay, seen) = open(&data_dir, Some(base)).expect("reopen");
            assert_eq!(seen, [fresh]);
            assert_eq!(replay.discarded_bytes, 0);
        }
    }

    #[test]
    fn reset_refuses_a_snapshot_older_than_the_base() {
        let (_directory, data_dir) = log_through(10);
        let base = Some(Base { index: 6, epoch: 2 });
        let (mut log, _, _) = open(&data_dir, base).expect("open");
        let error = log.reset(Base { index: 5, epoch: 1 }).expect_err("older");
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
        assert_eq!(log.last_index(), 10);
    }

    #[test]
    fn detach_through_never_takes_the_active_segment_nor_a_newer_record() {
        let (_directory, data_dir) = log_through(10);
        let (mut log, _, _) = open(&data_dir, None).expect("open");
        let path = |first: u64| data_dir.path().join(segment_file_name(first));
        assert!(log.detach_through(3).is_empty(), "segment 1 holds record 4");
        // Segment 5 holds 7 and 8, newer than 6.
        assert_eq!(log.detach_through(6), [path(1)]);
        assert_eq!(segment_files(&data_dir), [1, 5, 9], "the caller deletes");
        fs::remove_file(path(1)).expect("delete");
        assert_eq!(log.first_index(), 5);
        let job = log.take_sync_job().expect("the directory changed");
        assert!(job.syncs_directory());
        job.run().expect("sync");
        // Everything is at or below 100, but segment 9 is the active one.
        assert_eq!(log.detach_through(100), [path(5)]);
        fs::remove_file(path(5)).expect("delete");
        assert_eq!(segment_files(&data_dir), [9]);
        assert_eq!((log.first_index(), log.last_index()), (9, 10));
        let mut out = Vec::new();
        let error = log.read(8, usize::MAX, &mut out).expect_err("removed");
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
        let error = log
            .truncate_after(7)
            .expect_err("below the removed records");
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
        log.truncate_after(8)
            .expect("cut to the last removed record");
        assert_eq!(
            (log.first_index(), log.last_index(), log.last_epoch()),
            (9, 8, 2)
        );
    }

    #[test]
    fn sync_jobs_cover_what_was_written_and_the_directory_once() {
        let directory = tempfile::tempdir().expect("tempdir");
        let data_dir = DataDir::lock(directory.path()).expect("lock");
        let (mut log, _, _) = open(&data_dir, None).expect("open");
        assert!(
            log.take_sync_job().is_none(),
            "a new log is created durably"
        );
        log.append(1, &records(1..=3)).expect("append");
        log.append(4, &records(4..=4)).expect("append");
        let job = log.take_sync_job().expect("job");
        assert_eq!((job.file_count(), job.syncs_directory()), (1, false));
        assert!(
            log.take_sync_job().is_none(),
            "taking the job marks it clean"
        );
        job.run().expect("sync");
        // Segment 1 is full: the next append rolls, and the job covers the
        // new segment (records and header) and its directory entry.
        log.append(5, &records(5..=5)).expect("append");
        let job = log.take_sync_job().expect("job");
        assert_eq!((job.file_count(), job.syncs_directory()), (1, true));
        // Written on both sides of a roll: both files.
        log.append(6, &records(6..=8)).expect("append");
        log.append(9, &records(9..=9)).expect("append");
        let mut second = log.take_sync_job().expect("job");
        assert_eq!((second.file_count(), second.syncs_directory()), (2, true));
        // Segment 5 is in both jobs; merged, it is synced once.
        second.merge(job);
        assert_eq!((second.file_count(), second.syncs_directory()), (2, true));
        second.run().expect("sync");
        assert!(log.take_sync_job().is_none());
    }
}
