//! The recovery rules of [`Log::open`](super::Log::open): from the files in
//! the data directory and the snapshot the store was loaded from (the base,
//! `S` with epoch `E`; none is `S = 0`) to a log that continues it.
//!
//! 1. Segments are the files named `log-<20 digits>.log`, sorted by first
//!    index; other files are not the log's. The previous version's
//!    `kvstore.log` is renamed to `log-<its first record's index, or 1>.log`
//!    (directory synced, status line); it beside segments is
//!    [`LogError::LegacyAndSegments`].
//! 2. Segments whose successor starts at or below `S` hold only records
//!    below `S`: a snapshot covers them (their removal was interrupted), so
//!    they are removed unread. The first remaining segment must start at or
//!    below `S + 1` ([`LogError::SnapshotGap`]); with no base, at 1
//!    ([`LogError::MissingStart`]).
//! 3. The remaining segments are replayed in order. Each record must continue
//!    the previous one (index + 1, epoch not lower, across segments too:
//!    [`LogError::OutOfOrder`]); a segment's first record must carry the
//!    index its name gives ([`LogError::NameMismatch`]); a segment must start
//!    one past the previous one's last record ([`LogError::SegmentGap`], or
//!    `SnapshotGap` when that record is below `S`), unless it and every
//!    later segment hold no record: those are removed (empty segments are
//!    fine at the end). Records after `S` are passed to `on_entry`.
//! 4. A bad record ends the log only if it is a torn tail (see
//!    [`crate::log::scan`]) and no later segment holds a record (those later
//!    segments are removed and the tail cut). Otherwise it is
//!    [`LogError::Corrupt`]: valid data after damage.
//! 5. If record `S` has an epoch other than `E`, it and everything after it
//!    belong to a history the snapshot replaced: every segment is removed. If
//!    the log ends before `S`, every segment is too. Either way, and in an
//!    empty directory, the log continues empty at `S + 1` in a new
//!    `log-<S + 1>.log`. Segments before the last whose records are all at
//!    or below `S` are removed.
//!
//! Nothing is changed before every check has passed, except rewriting a
//! header torn at creation and migrating the legacy file. Removals go newest
//! first with the directory synced after each, then the torn tail is cut,
//! then a new segment is created, so a crash during recovery leaves files
//! that recover to the same log.

use std::fs;
use std::io;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use super::{
    Base, Replay, create_segment_durably, parse_segment_file_name, remove_segment_durably,
    segment_file_name,
};
use crate::log::data_dir::DataDir;
use crate::log::error::{LogError, io_error};
use crate::log::file::LOG_FILE_NAME;
use crate::log::record::Entry;
use crate::log::scan::{Progress, ScanEnd};
use crate::log::segment::{Segment, SegmentFile, SegmentIndex};

/// The log [`recover`] found, ready to use.
pub(super) struct Recovered {
    pub segments: Vec<Segment>,
    pub base: Base,
    pub replay: Replay,
}

/// A segment file found in the directory, known by name only.
#[derive(Debug, Clone)]
struct Listed {
    first_index: u64,
    path: PathBuf,
}

/// What replaying the segments from the base on found. Nothing is changed yet.
#[derive(Default)]
struct Chain {
    /// Segments that hold the log, in order.
    kept: Vec<Segment>,
    /// The last kept segment's torn tail, to cut.
    torn_tail: Option<ScanEnd>,
    /// Segments after the kept ones, to remove, and why.
    dropped: Vec<Listed>,
    drop_reason: &'static str,
    /// Record `S` with an epoch other than the base's.
    divergence: Option<Divergence>,
}

struct Divergence {
    path: PathBuf,
    offset: u64,
    epoch: u64,
}

/// Applies every rule in the module header.
pub(super) fn recover(
    data_dir: &DataDir,
    snapshot: Option<Base>,
    mut on_entry: impl FnMut(&Entry<'_>),
) -> Result<Recovered, LogError> {
    let base = snapshot.unwrap_or_default();
    let mut listing = list_segments(data_dir.path())?;
    if let Some(migrated) = migrate_legacy(data_dir, &listing)? {
        listing = vec![migrated];
    }
    let covered_count = listing
        .windows(2)
        .take_while(|pair| pair[1].first_index <= base.index)
        .count();
    let (covered, live) = listing.split_at(covered_count);
    if let Some(first) = live.first() {
        check_start(first, snapshot)?;
    }
    let mut replay = Replay::default();
    let chain = replay_chain(live, base, snapshot.is_some(), &mut on_entry, &mut replay)?;
    let segments = settle(data_dir, chain, covered, base, &mut replay)?;
    Ok(Recovered {
        segments,
        base,
        replay,
    })
}

/// The segment files in `directory`, by first index.
fn list_segments(directory: &Path) -> Result<Vec<Listed>, LogError> {
    let mut listing = Vec::new();
    let entries = fs::read_dir(directory).map_err(|source| io_error(directory, source))?;
    for entry in entries {
        let entry = entry.map_err(|source| io_error(directory, source))?;
        let name = entry.file_name();
        if let Some(first_index) = name.to_str().and_then(parse_segment_file_name) {
            listing.push(Listed {
                first_index,
                path: entry.path(),
            });
        }
    }
    listing.sort_by_key(|listed| listed.first_index);
    Ok(listing)
}

/// Renames the previous version's single-file log, if any, to the segment
/// its first record names.
fn migrate_legacy(data_dir: &DataDir, listing: &[Listed]) -> Result<Option<Listed>, LogError> {
    let legacy = data_dir.path().join(LOG_FILE_NAME);
    match fs::symlink_metadata(&legacy) {
        Ok(_) => {}
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(io_error(&legacy, source)),
    }
    if let Some(segment) = listing.first() {
        return Err(LogError::LegacyAndSegments {
            legacy,
            segment: segment.path.clone(),
        });
    }
    let file = SegmentFile::open(&legacy)?;
    let mut first_index = 1;
    file.scan(&mut Progress::new(0), |_, entry| {
        first_index = entry.index.max(1);
        Ok(ControlFlow::Break(()))
    })?;
    let path = data_dir.path().join(segment_file_name(first_index));
    fs::rename(&legacy, &path).map_err(|source| io_error(&legacy, source))?;
    data_dir
        .sync()
        .map_err(|source| io_error(data_dir.path(), source))?;
    crate::log_info!(
        "migrated the single-file log {} to the log segment {}",
        legacy.display(),
        path.display()
    );
    Ok(Some(Listed { first_index, path }))
}

/// The first segment from the base on must be able to continue the base.
fn check_start(first: &Listed, snapshot: Option<Base>) -> Result<(), LogError> {
    match snapshot {
        Some(base) if first.first_index > base.index.saturating_add(1) => {
            Err(LogError::SnapshotGap {
                path: first.path.clone(),
                snapshot_index: base.index,
                first_index: first.first_index,
            })
        }
        None if first.first_index != 1 => Err(LogError::MissingStart {
            path: first.path.clone(),
            first_index: first.first_index,
        }),
        _ => Ok(()),
    }
}

/// Replays `live` in order (rules 3 and 4, and finding rule 5's divergence).
fn replay_chain(
    live: &[Listed],
    base: Base,
    has_snapshot: bool,
    on_entry: &mut impl FnMut(&Entry<'_>),
    replay: &mut Replay,
) -> Result<Chain, LogError> {
    let mut progress = Progress::new(total_bytes(live)?);
    let mut chain = Chain::default();
    for (position, listed) in live.iter().enumerate() {
        let later = &live[position + 1..];
        if let Some(previous) = chain.kept.last()
            && previous.last_index() + 1 != listed.first_index
        {
            if !holds_no_records(&live[position..])? {
                return Err(gap_error(previous, listed, base));
            }
            chain.dropped = live[position..].to_vec();
            chain.drop_reason = "it holds no record and does not continue the log";
            return Ok(chain);
        }
        let previous_epoch = match chain.kept.last() {
            Some(previous) => previous.last_epoch(),
            None if Some(listed.first_index) == base.index.checked_add(1) => base.epoch,
            // Record first_index - 1 is gone; only a truncation to it would
            // need its epoch, and the log is never cut below the base.
            None => 0,
        };
        let context = SegmentReplay {
            base,
            has_snapshot,
            previous_epoch,
        };
        let (segment, end, divergence) = context.replay(listed, &mut progress, on_entry, replay)?;
        chain.kept.push(segment);
        if divergence.is_some() {
            chain.divergence = divergence;
            chain.dropped = later.to_vec();
            chain.drop_reason = "it follows a record the snapshot replaced";
            return Ok(chain);
        }
        if let Some(damage) = &end.damage {
            if !damage.torn || !holds_no_records(later)? {
                return Err(LogError::Corrupt {
                    path: listed.path.clone(),
                    offset: end.valid_bytes,
                    reason: damage.reason.clone(),
                });
            }
            chain.torn_tail = Some(end);
            chain.dropped = later.to_vec();
            chain.drop_reason = "it follows a torn write and holds no record";
            return Ok(chain);
        }
    }
    Ok(chain)
}

/// What replaying one segment needs to know of the log before it.
struct SegmentReplay {
    base: Base,
    has_snapshot: bool,
    /// The epoch of the record before the segment's first, when known
    /// (0 otherwise: no lower bound).
    previous_epoch: u64,
}

impl SegmentReplay {
    /// Replays one segment: its records must continue the log; the ones after
    /// the base go to `on_entry`. Stops at record `S` if its epoch is not the
    /// base's.
    fn replay(
        &self,
        listed: &Listed,
        progress: &mut Progress,
        on_entry: &mut impl FnMut(&Entry<'_>),
        replay: &mut Replay,
    ) -> Result<(Segment, ScanEnd, Option<Divergence>), LogError> {
        let file = SegmentFile::open(&listed.path)?;
        let mut index = SegmentIndex::new(listed.first_index, self.previous_epoch);
        let mut divergence = None;
        let end = file.scan(progress, |offset, entry| {
            check_continues(&index, &listed.path, offset, entry)?;
            if self.has_snapshot && entry.index == self.base.index && entry.epoch != self.base.epoch
            {
                let path = listed.path.clone();
                let epoch = entry.epoch;
                divergence = Some(Divergence {
                    path,
                    offset,
                    epoch,
                });
                return Ok(ControlFlow::Break(()));
            }
            index.note_record(offset, entry.index, entry.epoch);
            if entry.index > self.base.index {
                on_entry(entry);
                replay.records += 1;
            }
            Ok(ControlFlow::Continue(()))
        })?;
        Ok((Segment::new(file, index), end, divergence))
    }
}

/// A record must be the one after the segment's last (the one its name
/// gives, for the first), with an epoch no lower.
fn check_continues(
    index: &SegmentIndex,
    path: &Path,
    offset: u64,
    entry: &Entry<'_>,
) -> Result<(), LogError> {
    let expected_index = index.last_index().checked_add(1);
    let is_first = index.last_index() < index.first_index();
    if is_first && Some(entry.index) != expected_index {
        return Err(LogError::NameMismatch {
            path: path.to_path_buf(),
            offset,
            named_index: index.first_index(),
            found_index: entry.index,
        });
    }
    if Some(entry.index) == expected_index && entry.epoch >= index.last_epoch() {
        return Ok(());
    }
    Err(LogError::OutOfOrder {
        path: path.to_path_buf(),
        offset,
        expected_index: expected_index.unwrap_or(u64::MAX),
        found_index: entry.index,
        previous_epoch: index.last_epoch(),
        found_epoch: entry.epoch,
    })
}

/// Whether no segment of `listed` holds a record: each is empty, or only a
/// torn write (which [`SegmentFile::open`] and the torn-tail rules accept).
fn holds_no_records(listed: &[Listed]) -> Result<bool, LogError> {
    for listed in listed {
        let file = SegmentFile::open(&listed.path)?;
        let mut holds_record = false;
        let end = file.scan(&mut Progress::new(0), |_, _| {
            holds_record = true;
            Ok(ControlFlow::Break(()))
        })?;
        if holds_record || end.damage.is_some_and(|damage| !damage.torn) {
            return Ok(false);
        }
    }
    Ok(true)
}

fn gap_error(previous: &Segment, listed: &Listed, base: Base) -> LogError {
    if previous.last_index() < base.index {
        return LogError::SnapshotGap {
            path: listed.path.clone(),
            snapshot_index: base.index,
            first_index: listed.first_index,
        };
    }
    LogError::SegmentGap {
        previous: previous.path().to_path_buf(),
        previous_bytes: previous.len(),
        previous_last_index: previous.last_index(),
        path: listed.path.clone(),
        first_index: listed.first_index,
    }
}

fn total_bytes(listed: &[Listed]) -> Result<u64, LogError> {
    let mut total_bytes = 0;
    for listed in listed {
        let metadata =
            fs::metadata(&listed.path).map_err(|source| io_error(&listed.path, source))?;
        total_bytes += metadata.len();
    }
    Ok(total_bytes)
}

/// Applies what replay decided (rules 2, 4 and 5), in the crash-safe order of
/// the module header, and returns the segments of the log.
fn settle(
    data_dir: &DataDir,
    chain: Chain,
    covered: &[Listed],
    base: Base,
    replay: &mut Replay,
) -> Result<Vec<Segment>, LogError> {
    let dropped_bytes = remove_dropped(data_dir, &chain.dropped, chain.drop_reason)?;
    if chain.divergence.is_some() {
        replay.discarded_bytes += dropped_bytes;
    } else {
        replay.truncated_bytes += dropped_bytes;
    }
    let mut kept = chain.kept;
    let ends_before_base = kept
        .last()
        .is_some_and(|last| last.last_index() < base.index);
    if let Some(divergence) = &chain.divergence {
        crate::log_warn!(
            "log {}: record {} at byte {} has epoch {}, but the snapshot's has epoch {}; \
             discarding the log from there (a history the snapshot replaced)",
            divergence.path.display(),
            base.index,
            divergence.offset,
            divergence.epoch,
            base.epoch
        );
        replay.discarded_bytes += remove_all_durably(data_dir, &mut kept)?;
    } else if ends_before_base {
        crate::log_info!(
            "log ends at index {}, before snapshot {}; it continues empty after the snapshot",
            kept.last().map_or(0, Segment::last_index),
            base.index
        );
        replay.discarded_bytes += remove_all_durably(data_dir, &mut kept)?;
    } else if let (Some(end), Some(last)) = (&chain.torn_tail, kept.last_mut()) {
        last.cut_torn_tail(end)?;
        replay.truncated_bytes += end.damaged_bytes();
    }
    replay.discarded_bytes += remove_covered(data_dir, covered, &mut kept, base)?;
    if kept.is_empty() {
        let first_index = base.index + 1;
        let segment =
            create_segment_durably(data_dir, first_index, base.epoch).map_err(|source| {
                io_error(
                    &data_dir.path().join(segment_file_name(first_index)),
                    source,
                )
            })?;
        kept.push(segment);
    }
    Ok(kept)
}

/// Removes the segments after the kept ones, newest first, saying why.
fn remove_dropped(data_dir: &DataDir, dropped: &[Listed], reason: &str) -> Result<u64, LogError> {
    let mut removed_bytes = 0;
    for listed in dropped.iter().rev() {
        crate::log_warn!("removing log segment {}: {reason}", listed.path.display());
        removed_bytes += remove_durably(data_dir, &listed.path)?;
    }
    Ok(removed_bytes)
}

/// Removes, newest first, the kept segments before the last whose records
/// are all at or below the base, then the segments covered by name.
fn remove_covered(
    data_dir: &DataDir,
    covered: &[Listed],
    kept: &mut Vec<Segment>,
    base: Base,
) -> Result<u64, LogError> {
    let covered_kept = kept[..kept.len().saturating_sub(1)]
        .iter()
        .take_while(|segment| segment.last_index() <= base.index)
        .count();
    let mut paths: Vec<PathBuf> = covered.iter().map(|listed| listed.path.clone()).collect();
    paths.extend(
        kept.drain(..covered_kept)
            .map(|segment| segment.path().to_path_buf()),
    );
    let mut removed_bytes = 0;
    for path in paths.iter().rev() {
        crate::log_info!(
            "removing log segment {}: snapshot {} covers every record in it \
             (an interrupted compaction)",
            path.display(),
            base.index
        );
        removed_bytes += remove_durably(data_dir, path)?;
    }
    Ok(removed_bytes)
}

/// Removes every segment of `segments`, newest first.
fn remove_all_durably(data_dir: &DataDir, segments: &mut Vec<Segment>) -> Result<u64, LogError> {
    let mut removed_bytes = 0;
    while let Some(segment) = segments.pop() {
        removed_bytes += remove_durably(data_dir, segment.path())?;
    }
    Ok(removed_bytes)
}

/// Unlinks `path` and syncs the directory; returns the bytes it held.
fn remove_durably(data_dir: &DataDir, path: &Path) -> Result<u64, LogError> {
    let removed_bytes = fs::metadata(path)
        .map_err(|source| io_error(path, source))?
        .len();
    remove_segment_durably(data_dir, path).map_err(|source| io_error(path, source))?;
    Ok(removed_bytes)
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::super::{Base, Log, Replay, segment_file_name};
    use crate::log::LogFile;
    use crate::log::data_dir::DataDir;
    use crate::log::error::LogError;
    use crate::log::record::DecodeError;
    use crate::log::segment::LOG_HEADER_BYTES;
    use std::fs;

    /// Opens a log whose files are expected to be refused, and checks that
    /// nothing in the directory changed.
    fn open_refused(data_dir: &DataDir, base: Option<Base>) -> LogError {
        let before = directory_contents(data_dir);
        let error = open(data_dir, base)
            .map(|_| ())
            .expect_err("must be refused");
        assert_eq!(
            directory_contents(data_dir),
            before,
            "files must be untouched"
        );
        error
    }

    fn segment_bytes(record_count: u64) -> u64 {
        LOG_HEADER_BYTES + record_count * TEST_RECORD_BYTES
    }

    #[test]
    fn a_fresh_directory_starts_an_empty_log_at_index_1() {
        let directory = tempfile::tempdir().expect("tempdir");
        let data_dir = DataDir::lock(&directory.path().join("data")).expect("lock");
        let (log, replay, seen) = open(&data_dir, None).expect("open");
        assert!(seen.is_empty());
        let expected = Replay {
            first_index: 1,
            bytes: LOG_HEADER_BYTES,
            segments: 1,
            ..Replay::default()
        };
        assert_eq!(replay, expected);
        assert_eq!(segment_files(&data_dir), [1]);
        assert_eq!(
            (log.first_index(), log.last_index(), log.last_epoch()),
            (1, 0, 0)
        );
    }

    #[test]
    fn a_legacy_log_is_migrated_to_a_segment_named_by_its_first_record() {
        let directory = tempfile::tempdir().expect("tempdir");
        {
            let (mut legacy, _) = LogFile::open(directory.path(), |_, _| {}).expect("legacy");
            legacy.append(&records(7..=9)).expect("append");
            legacy.sync_data().expect("sync");
        }
        let legacy_bytes = fs::read(directory.path().join("kvstore.log")).expect("read");
        let data_dir = DataDir::lock(directory.path()).expect("lock");
        let base = Some(Base { index: 6, epoch: 2 });
        let (log, replay, seen) = open(&data_dir, base).expect("open");
        assert_eq!(seen, [7, 8, 9]);
        assert_eq!(
            (replay.first_index, replay.last_index, replay.segments),
            (7, 9, 1)
        );
        assert!(!directory.path().join("kvstore.log").exists());
        assert_eq!(
            fs::read(segment_path(&data_dir, 7)).expect("read"),
            legacy_bytes
        );
        assert_eq!(log.disk_bytes(), legacy_bytes.len() as u64);
    }

    #[test]
    fn an_empty_legacy_log_becomes_segment_1() {
        let directory = tempfile::tempdir().expect("tempdir");
        drop(LogFile::open(directory.path(), |_, _| {}).expect("legacy"));
        let data_dir = DataDir::lock(directory.path()).expect("lock");
        let (_, replay, _) = open(&data_dir, None).expect("open");
        assert_eq!((replay.first_index, replay.last_index), (1, 0));
        assert_eq!(segment_files(&data_dir), [1]);
        assert!(!directory.path().join("kvstore.log").exists());
    }

    #[test]
    fn a_legacy_log_beside_segments_is_refused_naming_both() {
        let (_directory, data_dir) = log_through(6);
        fs::write(data_dir.path().join("kvstore.log"), crate::log::LOG_MAGIC).expect("write");
        match open_refused(&data_dir, None) {
            LogError::LegacyAndSegments { legacy, segment } => {
                assert_eq!(legacy, data_dir.path().join("kvstore.log"));
                assert_eq!(segment, segment_path(&data_dir, 1));
            }
            other => panic!("expected LegacyAndSegments, got {other:?}"),
        }
    }

    #[test]
    fn a_torn_tail_in_the_last_segment_is_cut() {
        let (_directory, data_dir) = log_through(10);
        let eleventh = records(11..=11);
        let torn = &eleventh[..eleventh.len() / 2];
        append_raw(&data_dir, 9, torn);
        let (mut log, replay, seen) = open(&data_dir, None).expect("recover");
        assert_eq!(seen, (1..=10).collect::<Vec<_>>());
        assert_eq!(
            (replay.last_index, replay.truncated_bytes),
            (10, torn.len() as u64)
        );
        assert_eq!(
            fs::metadata(segment_path(&data_dir, 9))
                .expect("stat")
                .len(),
            segment_bytes(2)
        );
        log.append(11, &eleventh).expect("append");
    }

    #[test]
    fn a_torn_tail_followed_by_record_less_segments_is_cut_and_they_are_removed() {
        let (_directory, data_dir) = log_through(8);
        // Segment 5 is full; the crash tore record 9 in it, yet segments 9
        // (header only) and 10 (a header torn at creation) were created.
        append_raw(&data_dir, 5, &[0; 40]);
        write_segment(&data_dir, 9, &[]);
        fs::write(segment_path(&data_dir, 10), [0u8; 5]).expect("write");
        let (log, replay, seen) = open(&data_dir, None).expect("recover");
        assert_eq!(seen, (1..=8).collect::<Vec<_>>());
        assert_eq!(segment_files(&data_dir), [1, 5]);
        assert_eq!(
            replay.truncated_bytes,
            40 + LOG_HEADER_BYTES + LOG_HEADER_BYTES
        );
        assert_eq!((log.last_index(), log.segment_count()), (8, 2));
        assert_eq!(log.disk_bytes(), segment_bytes(4) + segment_bytes(4));
    }

    #[test]
    fn a_torn_tail_followed_by_a_segment_with_records_is_corruption() {
        let (_directory, data_dir) = log_through(8);
        let ninth = records(9..=9);
        append_raw(&data_dir, 5, &ninth[..ninth.len() - 3]);
        write_segment(&data_dir, 9, &records(9..=10));
        match open_refused(&data_dir, None) {
            LogError::Corrupt {
                path,
                offset,
                reason,
            } => {
                assert_eq!(path, segment_path(&data_dir, 5));
                assert_eq!(offset, segment_bytes(4));
                assert_eq!(reason, DecodeError::Incomplete);
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }

    #[test]
    fn a_damaged_record_inside_a_segment_is_corruption() {
        let (_directory, data_dir) = log_through(10);
        let path = segment_path(&data_dir, 5);
        let mut bytes = fs::read(&path).expect("read");
        let second_record = (LOG_HEADER_BYTES + TEST_RECORD_BYTES) as usize;
        bytes[second_record + 30] ^= 0x01;
        fs::write(&path, bytes).expect("write");
        match open_refused(&data_dir, None) {
            LogError::Corrupt {
                path: at,
                offset,
                reason,
            } => {
                assert_eq!(
                    (at, offset, reason),
                    (path, second_record as u64, DecodeError::Checksum)
                );
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }

    #[test]
    fn a_gap_between_segments_is_refused() {
        let (_directory, data_dir) = log_through(10);
        fs::remove_file(segment_path(&data_dir, 5)).expect("remove");
        match open_refused(&data_dir, None) {
            LogError::SegmentGap {
                previous,
                previous_bytes,
                previous_last_index,
                path,
                first_index,
            } => {
                assert_eq!(previous, segment_path(&data_dir, 1));
                assert_eq!((previous_bytes, previous_last_index), (segment_bytes(4), 4));
                assert_eq!((path, first_index), (segment_path(&data_dir, 9), 9));
            }
            other => panic!("expected SegmentGap, got {other:?}"),
        }
    }

    #[test]
    fn an_empty_segment_in_the_middle_followed_by_records_is_a_gap() {
        let (_directory, data_dir) = log_through(4);
        write_segment(&data_dir, 5, &[]);
        write_segment(&data_dir, 6, &records(6..=7));
        match open_refused(&data_dir, None) {
            LogError::SegmentGap {
                previous,
                previous_last_index,
                first_index,
                ..
            } => {
                assert_eq!(previous, segment_path(&data_dir, 5));
                assert_eq!((previous_last_index, first_index), (4, 6));
            }
            other => panic!("expected SegmentGap, got {other:?}"),
        }
    }

    #[test]
    fn record_less_segments_at_the_end_that_do_not_line_up_are_removed() {
        let (_directory, data_dir) = log_through(4);
        write_segment(&data_dir, 5, &[]);
        write_segment(&data_dir, 7, &[]);
        fs::write(segment_path(&data_dir, 8), &crate::log::LOG_MAGIC[..3]).expect("write");
        let (mut log, replay, _) = open(&data_dir, None).expect("open");
        assert_eq!(segment_files(&data_dir), [1, 5]);
        assert_eq!((replay.last_index, replay.segments), (4, 2));
        // Opening segment 8 to look for records rewrote its torn header.
        assert_eq!(replay.truncated_bytes, 2 * LOG_HEADER_BYTES);
        log.append(5, &records(5..=5))
            .expect("the empty segment 5 continues the log");
        assert_eq!(log.segment_count(), 2);
    }

    #[test]
    fn a_name_that_disagrees_with_the_first_record_is_refused() {
        let (_directory, data_dir) = log_through(8);
        write_segment(&data_dir, 9, &records(10..=11));
        match open_refused(&data_dir, None) {
            LogError::NameMismatch {
                path,
                offset,
                named_index,
                found_index,
            } => {
                assert_eq!(
                    (path, offset),
                    (segment_path(&data_dir, 9), LOG_HEADER_BYTES)
                );
                assert_eq!((named_index, found_index), (9, 10));
            }
            other => panic!("expected NameMismatch, got {other:?}"),
        }
    }

    #[test]
    fn records_out_of_order_within_and_across_segments_are_refused() {
        let (_directory, data_dir) = log_through(8);
        // Epoch 1 after segment 5's epoch 2.
        write_segment(&data_dir, 9, &record(1, 9));
        match open_refused(&data_dir, None) {
            LogError::OutOfOrder {
                path,
                offset,
                expected_index,
                previous_epoch,
                found_epoch,
                ..
            } => {
                assert_eq!(
                    (path, offset),
                    (segment_path(&data_dir, 9), LOG_HEADER_BYTES)
                );
                assert_eq!((expected_index, previous_epoch, found_epoch), (9, 2, 1));
            }
            other => panic!("expected OutOfOrder, got {other:?}"),
        }
        let mut repeated = records(9..=10);
        repeated.extend(records(10..=10));
        write_segment(&data_dir, 9, &repeated);
        match open_refused(&data_dir, None) {
            LogError::OutOfOrder {
                offset,
                expected_index,
                found_index,
                ..
            } => {
                assert_eq!(offset, segment_bytes(2));
                assert_eq!((expected_index, found_index), (11, 10));
            }
            other => panic!("expected OutOfOrder, got {other:?}"),
        }
    }

    #[test]
    fn without_a_base_the_log_must_start_at_index_1() {
        let directory = tempfile::tempdir().expect("tempdir");
        let data_dir = DataDir::lock(directory.path()).expect("lock");
        write_segment(&data_dir, 5, &records(5..=6));
        match open_refused(&data_dir, None) {
            LogError::MissingStart { path, first_index } => {
                assert_eq!((path, first_index), (segment_path(&data_dir, 5), 5));
            }
            other => panic!("expected MissingStart, got {other:?}"),
        }
        fs::remove_file(segment_path(&data_dir, 5)).expect("remove");
        write_segment(&data_dir, 1, &records(5..=6));
        let error = open_refused(&data_dir, None);
        assert!(
            matches!(
                error,
                LogError::NameMismatch {
                    named_index: 1,
                    found_index: 5,
                    ..
                }
            ),
            "{error:?}"
        );
    }

    #[test]
    fn a_base_removes_the_segments_it_covers() {
        let (_directory, data_dir) = log_through(10);
        let base = Some(Base { index: 8, epoch: 2 });
        let (log, replay, seen) = open(&data_dir, base).expect("open");
        assert_eq!(seen, [9, 10]);
        assert_eq!(segment_files(&data_dir), [9]);
        assert_eq!((replay.first_index, replay.records), (9, 2));
        assert_eq!(replay.discarded_bytes, 2 * segment_bytes(4));
        assert_eq!(log.first_index(), 9);
    }

    #[test]
    fn a_base_keeps_the_segment_holding_it_and_the_records_before_it() {
        let (_directory, data_dir) = log_through(10);
        let base = Some(Base { index: 6, epoch: 2 });
        let (log, replay, seen) = open(&data_dir, base).expect("open");
        assert_eq!(seen, [7, 8, 9, 10]);
        assert_eq!(segment_files(&data_dir), [5, 9]);
        assert_eq!(replay.discarded_bytes, segment_bytes(4));
        let mut out = Vec::new();
        log.read(5, usize::MAX, &mut out).expect("read");
        assert_eq!(out, records(5..=8));
    }

    #[test]
    fn a_base_at_the_last_record_keeps_the_segment_that_ends_there() {
        let (_directory, data_dir) = log_through(10);
        let base = Some(Base {
            index: 10,
            epoch: 2,
        });
        let (mut log, replay, seen) = open(&data_dir, base).expect("open");
        assert!(seen.is_empty());
        assert_eq!(segment_files(&data_dir), [9]);
        assert_eq!(
            (replay.first_index, replay.last_index, replay.last_epoch),
            (9, 10, 2)
        );
        log.append(11, &records(11..=11)).expect("append");
    }

    #[test]
    fn a_base_whose_record_has_another_epoch_discards_the_log_from_there() {
        let (_directory, data_dir) = log_through(10);
        let total_bytes = 2 * segment_bytes(4) + segment_bytes(2);
        let base = Base { index: 6, epoch: 3 };
        let (mut log, replay, seen) = open(&data_dir, Some(base)).expect("open");
        assert!(seen.is_empty());
        assert_eq!(segment_files(&data_dir), [7]);
        let expected = Replay {
            first_index: 7,
            last_index: 6,
            last_epoch: 3,
            bytes: LOG_HEADER_BYTES,
            discarded_bytes: total_bytes,
            segments: 1,
            ..Replay::default()
        };
        assert_eq!(replay, expected);
        log.append(7, &record(3, 7)).expect("append");
        let error = log.truncate_after(5).expect_err("below the snapshot");
        assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
    }

    #[test]
    fn a_base_whose_record_ends_a_segment_is_still_checked() {
        // Record 8 ends segment 5. Were segment 5 removed as covered unread,
        // records 9 and 10 (epoch 2, not below the snapshot's 1) would be
        // replayed on top of a snapshot whose history they do not continue.
        let (_directory, data_dir) = log_through(10);
        let base = Base { index: 8, epoch: 1 };
        let (log, replay, seen) = open(&data_dir, Some(base)).expect("open");
        assert!(seen.is_empty());
        assert_eq!(segment_files(&data_dir), [9]);
        assert_eq!(
            (replay.first_index, replay.last_index, replay.last_epoch),
            (9, 8, 1)
        );
        assert_eq!(log.disk_bytes(), LOG_HEADER_BYTES);
    }

    #[test]
    fn a_log_that_does_not_meet_the_base_is_refused() {
        let (_directory, data_dir) = log_through(10);
        fs::remove_file(segment_path(&data_dir, 1)).expect("remove");
        match open_refused(&data_dir, Some(Base { index: 2, epoch: 1 })) {
            LogError::SnapshotGap {
                path,
                snapshot_index,
                first_index,
            } => {
                assert_eq!(path, segment_path(&data_dir, 5));
                assert_eq!((snapshot_index, first_index), (2, 5));
            }
            other => panic!("expected SnapshotGap, got {other:?}"),
        }
        // Records up to 4, then from 9: nothing continues snapshot 6.
        let (_directory, data_dir) = log_through(10);
        fs::remove_file(segment_path(&data_dir, 5)).expect("remove");
        let error = open_refused(&data_dir, Some(Base { index: 6, epoch: 2 }));
        assert!(
            matches!(
                error,
                LogError::SnapshotGap {
                    snapshot_index: 6,
                    first_index: 9,
                    ..
                }
            ),
            "{error:?}"
        );
    }

    #[test]
    fn a_base_past_the_end_of_the_log_continues_it_empty_after_the_base() {
        let (_directory, data_dir) = log_through(10);
        let base = Base {
            index: 20,
            epoch: 5,
        };
        let (mut log, replay, seen) = open(&data_dir, Some(base)).expect("open");
        assert!(seen.is_empty());
        assert_eq!(segment_files(&data_dir), [21]);
        assert_eq!(
            (replay.first_index, replay.last_index, replay.last_epoch),
            (21, 20, 5)
        );
        log.append(21, &record(5, 21)).expect("append");
        log.take_sync_job().expect("job").run().expect("sync");
        drop(log);
        let (_, _, seen) = open(&data_dir, Some(base)).expect("reopen");
        assert_eq!(seen, [21]);
    }

    #[test]
    fn a_base_in_an_empty_directory_starts_the_log_after_it() {
        let directory = tempfile::tempdir().expect("tempdir");
        let data_dir = DataDir::lock(directory.path()).expect("lock");
        let base = Some(Base {
            index: 41,
            epoch: 3,
        });
        let (log, _, _) = open(&data_dir, base).expect("open");
        assert_eq!(segment_files(&data_dir), [42]);
        assert_eq!((log.first_index(), log.last_epoch()), (42, 3));
        drop(log);
        // The same directory without the snapshot is missing records 1..=41.
        let error = open_refused(&data_dir, None);
        assert!(
            matches!(
                error,
                LogError::MissingStart {
                    first_index: 42,
                    ..
                }
            ),
            "{error:?}"
        );
    }

    #[test]
    fn a_foreign_file_named_as_a_segment_is_bad_magic() {
        let (_directory, data_dir) = log_through(4);
        fs::write(
            data_dir.path().join(segment_file_name(5)),
            b"not a kvstore log",
        )
        .expect("write");
        let error = open_refused(&data_dir, None);
        assert!(matches!(error, LogError::BadMagic { .. }), "{error:?}");
    }

    #[test]
    fn the_segment_size_must_leave_room_for_records() {
        let directory = tempfile::tempdir().expect("tempdir");
        let data_dir = DataDir::lock(directory.path()).expect("lock");
        let opened =
            std::panic::catch_unwind(|| Log::open(&data_dir, LOG_HEADER_BYTES, None, |_| {}));
        assert!(opened.is_err());
    }
}
