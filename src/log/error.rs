//! Why the log cannot be opened: [`LogError`], shared by the data directory,
//! the segment files and their recovery.
//!
//! Every variant names the file at fault, and every variant about the log's
//! content names the byte offset too, so an operator can look at (or cut) the
//! file without reading code. Content errors end with the same advice: the
//! server refuses to start and leaves the files as they are, because
//! acknowledged writes may follow the damage.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use super::record::DecodeError;

/// Why the log cannot be opened.
#[derive(Debug)]
pub enum LogError {
    /// An operating-system error on `path`: the data directory cannot be
    /// created, permission is denied, the disk failed.
    Io { path: PathBuf, source: io::Error },
    /// Another process holds the lock on the data directory.
    Locked { path: PathBuf },
    /// The file does not start with [`super::LOG_MAGIC`].
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
    /// The first record of a segment (at `offset`) does not carry the index
    /// the segment's file name promises.
    NameMismatch {
        path: PathBuf,
        offset: u64,
        named_index: u64,
        found_index: u64,
    },
    /// Records are missing between two segments: `previous` ends at byte
    /// `previous_bytes` with record `previous_last_index`, and the next
    /// segment, `path`, starts at `first_index`, not one past it.
    SegmentGap {
        previous: PathBuf,
        previous_bytes: u64,
        previous_last_index: u64,
        path: PathBuf,
        first_index: u64,
    },
    /// The log does not continue the snapshot the store was loaded from: its
    /// first record after `snapshot_index`, at the start of `path`, has index
    /// `first_index`, not `snapshot_index + 1`.
    SnapshotGap {
        path: PathBuf,
        snapshot_index: u64,
        first_index: u64,
    },
    /// There is no snapshot, yet the log, at the start of `path`, begins at
    /// `first_index` rather than at index 1.
    MissingStart { path: PathBuf, first_index: u64 },
    /// The previous version's single-file log `legacy` sits beside segment
    /// files (`segment` is one of them): which one is the log is unclear.
    LegacyAndSegments { legacy: PathBuf, segment: PathBuf },
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
            other => format_segment_error(other, formatter),
        }
    }
}

/// The variants that only a log of several segment files can have.
fn format_segment_error(error: &LogError, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
    match error {
        LogError::NameMismatch {
            path,
            offset,
            named_index,
            found_index,
        } => write!(
            formatter,
            "log {} is corrupt at byte {offset}: the file name says the segment starts at \
             index {named_index} but its first record has index {found_index}; \
             {CORRUPTION_ADVICE}",
            path.display()
        ),
        LogError::SegmentGap {
            previous,
            previous_bytes,
            previous_last_index,
            path,
            first_index,
        } => write!(
            formatter,
            "log {} ends at byte {previous_bytes} with index {previous_last_index} but the \
             next segment {} starts at index {first_index}: records are missing; \
             refusing to start (a segment file may have been moved or deleted)",
            previous.display(),
            path.display()
        ),
        LogError::SnapshotGap {
            path,
            snapshot_index,
            first_index,
        } => write!(
            formatter,
            "log {} does not continue snapshot {snapshot_index}: at byte {} it starts at \
             index {first_index}, expected {}; refusing to start (is this the newest snapshot?)",
            path.display(),
            super::LOG_HEADER_BYTES,
            snapshot_index.saturating_add(1)
        ),
        LogError::MissingStart { path, first_index } => write!(
            formatter,
            "log {} starts at index {first_index} (at byte {}) but there is no snapshot \
             holding the records before it; refusing to start (was a snapshot moved or \
             deleted?)",
            path.display(),
            super::LOG_HEADER_BYTES
        ),
        LogError::LegacyAndSegments { legacy, segment } => write!(
            formatter,
            "data directory holds both the single-file log {} and the log segment {}; \
             refusing to start (move aside whichever is not the current log)",
            legacy.display(),
            segment.display()
        ),
        _ => unreachable!("format_segment_error called with {error:?}"),
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

/// [`LogError::Io`] on `path`.
pub(crate) fn io_error(path: &Path, source: io::Error) -> LogError {
    LogError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn segment_errors_name_the_files_and_offsets() {
        let mismatch = LogError::NameMismatch {
            path: PathBuf::from("/d/log-00000000000000000011.log"),
            offset: 8,
            named_index: 11,
            found_index: 12,
        };
        assert_eq!(
            mismatch.to_string(),
            "log /d/log-00000000000000000011.log is corrupt at byte 8: the file name says the \
             segment starts at index 11 but its first record has index 12; refusing to start \
             (move the file aside or truncate it at that offset to discard the rest)"
        );
        let gap = LogError::SegmentGap {
            previous: PathBuf::from("/d/a.log"),
            previous_bytes: 500,
            previous_last_index: 10,
            path: PathBuf::from("/d/b.log"),
            first_index: 21,
        };
        assert_eq!(
            gap.to_string(),
            "log /d/a.log ends at byte 500 with index 10 but the next segment /d/b.log starts \
             at index 21: records are missing; refusing to start (a segment file may have \
             been moved or deleted)"
        );
        let snapshot_gap = LogError::SnapshotGap {
            path: PathBuf::from("/d/c.log"),
            snapshot_index: 50,
            first_index: 61,
        };
        assert_eq!(
            snapshot_gap.to_string(),
            "log /d/c.log does not continue snapshot 50: at byte 8 it starts at index 61, \
             expected 51; refusing to start (is this the newest snapshot?)"
        );
        let missing = LogError::MissingStart {
            path: PathBuf::from("/d/e.log"),
            first_index: 5,
        };
        assert!(
            missing
                .to_string()
                .starts_with("log /d/e.log starts at index 5 (at byte 8) but there is no snapshot")
        );
        let both = LogError::LegacyAndSegments {
            legacy: PathBuf::from("/d/kvstore.log"),
            segment: PathBuf::from("/d/f.log"),
        };
        let message = both.to_string();
        assert!(message.contains("/d/kvstore.log") && message.contains("/d/f.log"));
    }
}
