//! Snapshot files in the data directory: their names, listing them, loading
//! one, and publishing a newly written one atomically.
//!
//! A snapshot of index `i` is `snapshot-<i, 20 digits>.snap`; while it is
//! being written it is `snapshot-<i, 20 digits>.snap.tmp`. Invariants:
//! - a file with the final name is complete and durable: [`publish`] syncs
//!   the temporary file before renaming it, and syncs the directory after;
//! - a temporary file is never loaded; whoever starts the server removes the
//!   temporaries [`list`] reports (an abandoned write is just garbage);
//! - zero-padded indexes make the names sort by index.
//!
//! This module never chooses which snapshot to load or which to delete, and
//! never writes a snapshot's bytes: the caller writes the encoder's chunks
//! into the file [`create_temporary`] returns.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::format::{Decoder, FormatError, HEADER_BYTES, Header, Summary, TRAILER_BYTES};

/// The start of every snapshot file name, final or temporary.
pub const SNAPSHOT_FILE_PREFIX: &str = "snapshot-";

/// The end of a published snapshot's file name.
const SNAPSHOT_FILE_SUFFIX: &str = ".snap";

/// The end of a snapshot being written.
const TEMPORARY_FILE_SUFFIX: &str = ".snap.tmp";

/// Digits of the zero-padded index in a file name: enough for any u64.
const INDEX_DIGITS: usize = 20;

/// [`load`] reads the file in blocks of this size.
const LOAD_BLOCK_BYTES: usize = 4 * 1024 * 1024;

/// The file name of the snapshot of `index`: `snapshot-{index:020}.snap`.
pub fn file_name(index: u64) -> String {
    format!("{SNAPSHOT_FILE_PREFIX}{index:0INDEX_DIGITS$}{SNAPSHOT_FILE_SUFFIX}")
}

/// The file name of the snapshot of `index` while it is being written:
/// `snapshot-{index:020}.snap.tmp`. Never loaded; removed at start-up.
pub fn temporary_file_name(index: u64) -> String {
    format!("{SNAPSHOT_FILE_PREFIX}{index:0INDEX_DIGITS$}{TEMPORARY_FILE_SUFFIX}")
}

/// The snapshot files of a directory.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Listing {
    /// Published snapshots as (index, path), in ascending index order.
    pub snapshots: Vec<(u64, PathBuf)>,
    /// Snapshots whose writing never finished, in name order.
    pub temporaries: Vec<PathBuf>,
}

/// What a file name in the data directory is to this module.
#[derive(Debug, PartialEq, Eq)]
enum NameKind {
    Snapshot(u64),
    Temporary,
}

/// Parses our two name forms; `None` for every other name, including ones
/// that start like ours but do not carry exactly [`INDEX_DIGITS`] digits.
fn parse_file_name(name: &str) -> Option<NameKind> {
    let rest = name.strip_prefix(SNAPSHOT_FILE_PREFIX)?;
    let (digits, suffix) = rest.split_at_checked(INDEX_DIGITS)?;
    if !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    // Twenty digits can exceed u64::MAX; such a name is not ours.
    let index = digits.parse::<u64>().ok()?;
    match suffix {
        SNAPSHOT_FILE_SUFFIX => Some(NameKind::Snapshot(index)),
        TEMPORARY_FILE_SUFFIX => Some(NameKind::Temporary),
        _ => None,
    }
}

/// The snapshot and temporary files in `dir`. Other files, directories, and
/// names that look like ours but do not parse are ignored.
pub fn list(dir: &Path) -> io::Result<Listing> {
    let mut listing = Listing::default();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(kind) = name.to_str().and_then(parse_file_name) else {
            continue;
        };
        if entry.file_type()?.is_dir() {
            continue;
        }
        match kind {
            NameKind::Snapshot(index) => listing.snapshots.push((index, entry.path())),
            NameKind::Temporary => listing.temporaries.push(entry.path()),
        }
    }
    listing.snapshots.sort_unstable();
    listing.temporaries.sort_unstable();
    Ok(listing)
}

/// Why a snapshot cannot be loaded.
#[derive(Debug)]
pub enum SnapshotError {
    /// An operating-system error reading `path`.
    Io { path: PathBuf, source: io::Error },
    /// The bytes of `path` are not a valid snapshot.
    Corrupt { path: PathBuf, error: FormatError },
}

impl fmt::Display for SnapshotError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SnapshotError::Io { path, source } => {
                write!(
                    formatter,
                    "cannot read snapshot {}: {source}",
                    path.display()
                )
            }
            // FormatError reads "corrupt at byte N: why".
            SnapshotError::Corrupt { path, error } => {
                write!(formatter, "snapshot {} is {error}", path.display())
            }
        }
    }
}

impl std::error::Error for SnapshotError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SnapshotError::Io { source, .. } => Some(source),
            SnapshotError::Corrupt { error, .. } => Some(error),
        }
    }
}

/// Loads the snapshot at `path`. First reads the trailer with one positioned
/// read at the end for the pair count, and calls `on_start(header,
/// pairs_hint)` once the header is verified, before any pair (not at all if
/// the header is bad). `pairs_hint` is 0 when the trailer is unreadable or
/// invalid (the full decode then reports the real error), and never more
/// than the file's size could hold, so a table may be sized from it. Then
/// reads the file from the start in 4 MiB blocks (no system call per pair),
/// calling `on_pair` with every pair in file order.
/// On error the caller must discard every pair it was given.
pub fn load(
    path: &Path,
    on_start: impl FnOnce(Header, u64),
    mut on_pair: impl FnMut(&[u8]),
) -> Result<Summary, SnapshotError> {
    let io_error = |source| SnapshotError::Io {
        path: path.to_path_buf(),
        source,
    };
    let corrupt = |error| SnapshotError::Corrupt {
        path: path.to_path_buf(),
        error,
    };
    let file = File::open(path).map_err(io_error)?;
    let file_bytes = file.metadata().map_err(io_error)?.len();
    let pairs_hint = read_pairs_hint(&file, file_bytes).map_err(io_error)?;
    let mut on_start = Some(on_start);
    let mut decoder = Decoder::new();
    let mut block = vec![0u8; LOAD_BLOCK_BYTES];
    let mut offset = 0;
    loop {
        let read_bytes = read_at_retrying(&file, &mut block, offset).map_err(io_error)?;
        if read_bytes == 0 {
            break;
        }
        let mut bytes = &block[..read_bytes];
        if decoder.header().is_none() {
            // The header alone first, so that on_start runs before any pair.
            let missing_bytes = HEADER_BYTES - decoder.consumed_bytes() as usize;
            let (header_bytes, rest) = bytes.split_at(missing_bytes.min(bytes.len()));
            decoder.feed(header_bytes, &mut on_pair).map_err(corrupt)?;
            bytes = rest;
        }
        if let Some(header) = decoder.header()
            && let Some(start) = on_start.take()
        {
            start(header, pairs_hint);
        }
        decoder.feed(bytes, &mut on_pair).map_err(corrupt)?;
        offset += read_bytes as u64;
    }
    decoder.finish().map_err(corrupt)
}

/// The pair count of a file of `file_bytes` from its trailer, bounded by
/// what the file could hold; 0 when the trailer is not valid where it should
/// be.
fn read_pairs_hint(file: &File, file_bytes: u64) -> io::Result<u64> {
    let smallest_file_bytes = (HEADER_BYTES + TRAILER_BYTES) as u64;
    if file_bytes < smallest_file_bytes {
        return Ok(0);
    }
    let trailer_offset = file_bytes - TRAILER_BYTES as u64;
    let mut bytes = [0u8; TRAILER_BYTES];
    file.read_exact_at(&mut bytes, trailer_offset)?;
    Ok(
        match super::format::decode_trailer(&bytes, trailer_offset) {
            Ok(trailer) if trailer.trailer_offset == trailer_offset => trailer.pairs_bound(),
            _ => 0,
        },
    )
}

/// Reads into `buffer` at `offset` until it is full or the file ends;
/// returns the bytes read (0 at the end of the file).
fn read_at_retrying(file: &File, buffer: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match file.read_at(&mut buffer[filled..], offset + filled as u64) {
            Ok(0) => break,
            Ok(read_bytes) => filled += read_bytes,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(filled)
}

/// Creates the temporary file for snapshot `index` in `dir`, truncating any
/// leftover of an earlier attempt. Opened for reading too, so the writer can
/// read back what it wrote.
pub fn create_temporary(dir: &Path, index: u64) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(dir.join(temporary_file_name(index)))
}

/// Makes `file`, the completely written temporary file of snapshot `index`
/// in `dir`, that snapshot: syncs the file, renames it to its final name
/// (replacing a snapshot of the same index), syncs the directory. Returns the
/// final path. Until this returns, a crash leaves no file with the final name
/// (or the one it replaces).
pub fn publish(dir: &Path, index: u64, file: &File) -> io::Result<PathBuf> {
    let temporary = dir.join(temporary_file_name(index));
    let written = file.metadata()?;
    let named = fs::metadata(&temporary)?;
    if (written.dev(), written.ino()) != (named.dev(), named.ino()) {
        let message = format!(
            "cannot publish snapshot {index}: the file given is not {}",
            temporary.display()
        );
        return Err(io::Error::new(io::ErrorKind::InvalidInput, message));
    }
    // The content and size must be durable before the name says "complete".
    file.sync_all()?;
    let path = dir.join(file_name(index));
    fs::rename(&temporary, &path)?;
    // The rename is durable only once the directory is.
    File::open(dir)?.sync_all()?;
    Ok(path)
}

/// Removes the temporary file of snapshot `index` from `dir`, if present
/// (after an abandoned write). Not synced: a temporary that comes back after
/// a crash is removed again at start-up.
pub fn remove_temporary(dir: &Path, index: u64) -> io::Result<()> {
    match fs::remove_file(dir.join(temporary_file_name(index))) {
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        result => result,
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::snapshot::format::tests::pair;
    use crate::snapshot::format::{CHUNK_HEADER_BYTES, Encoder, MalformedReason};

    /// Writes and publishes a snapshot of `pairs` in `dir`, as a server
    /// would; returns its path, its summary and the offset of every chunk.
    fn write_snapshot(
        dir: &Path,
        header: Header,
        pairs: &[Vec<u8>],
    ) -> (PathBuf, Summary, Vec<u64>) {
        let mut file = create_temporary(dir, header.index).expect("create");
        let (mut encoder, header_bytes) = Encoder::new(header);
        file.write_all(&header_bytes).expect("write header");
        let mut written_bytes = header_bytes.len() as u64;
        let mut chunk_offsets = Vec::new();
        for pair in pairs {
            if let Some(chunk) = encoder.push_pair(pair) {
                file.write_all(&chunk).expect("write chunk");
                chunk_offsets.push(written_bytes);
                written_bytes += chunk.len() as u64;
                encoder.recycle(chunk);
            }
        }
        let (end, summary) = encoder.finish();
        if end.len() > TRAILER_BYTES {
            chunk_offsets.push(written_bytes);
        }
        file.write_all(&end).expect("write end");
        let path = publish(dir, header.index, &file).expect("publish");
        (path, summary, chunk_offsets)
    }

    /// What on_start got (if it was called), every pair, and the result.
    type Recorded = (
        Option<(Header, u64)>,
        Vec<Vec<u8>>,
        Result<Summary, SnapshotError>,
    );

    /// Loads `path`, recording what on_start got and every pair.
    fn load_recording(path: &Path) -> Recorded {
        let mut started = None;
        let mut pairs = Vec::new();
        let result = load(
            path,
            |header, pairs_hint| started = Some((header, pairs_hint)),
            |pair| pairs.push(pair.to_vec()),
        );
        (started, pairs, result)
    }

    fn many_pairs(count: u64, value_bytes: usize) -> Vec<Vec<u8>> {
        (1..=count)
            .map(|index| pair(&index.to_le_bytes(), index, &vec![index as u8; value_bytes]))
            .collect()
    }

    const HEADER: Header = Header {
        index: 50_000,
        epoch: 4,
    };

    #[test]
    fn names_are_zero_padded_so_they_sort_by_index() {
        assert_eq!(file_name(42), "snapshot-00000000000000000042.snap");
        assert_eq!(
            temporary_file_name(42),
            "snapshot-00000000000000000042.snap.tmp"
        );
        assert_eq!(file_name(u64::MAX), "snapshot-18446744073709551615.snap");
        assert!(file_name(9) < file_name(10));
        assert_eq!(
            parse_file_name(&file_name(u64::MAX)),
            Some(NameKind::Snapshot(u64::MAX))
        );
        assert_eq!(
            parse_file_name(&temporary_file_name(7)),
            Some(NameKind::Temporary)
        );
    }

    #[test]
    fn list_sorts_snapshots_separates_temporaries_and_ignores_the_rest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let names = [
            file_name(300),
            file_name(7),
            file_name(20),
            temporary_file_name(400),
            temporary_file_name(5),
            "kvstore.log".to_string(),
            "snapshot-12.snap".to_string(),
            "snapshot-0000000000000000000x.snap".to_string(),
            "snapshot-99999999999999999999.snap".to_string(),
            format!("{}.bak", file_name(8)),
        ];
        for name in &names {
            fs::write(dir.path().join(name), b"").expect("write");
        }
        fs::create_dir(dir.path().join(file_name(9))).expect("mkdir");
        let listing = list(dir.path()).expect("list");
        let at = |name: String| dir.path().join(name);
        let snapshots = vec![
            (7, at(file_name(7))),
            (20, at(file_name(20))),
            (300, at(file_name(300))),
        ];
        assert_eq!(listing.snapshots, snapshots);
        let temporaries = vec![at(temporary_file_name(5)), at(temporary_file_name(400))];
        assert_eq!(listing.temporaries, temporaries);
    }

    #[test]
    fn load_reads_a_file_larger_than_one_block() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pairs = many_pairs(HEADER.index, 183);
        let (path, summary, chunk_offsets) = write_snapshot(dir.path(), HEADER, &pairs);
        let file_bytes = fs::metadata(&path).expect("metadata").len();
        assert!(file_bytes > 2 * LOAD_BLOCK_BYTES as u64);
        assert_eq!(summary.file_bytes, file_bytes);
        // Some chunk (header and body) spans the end of the first block.
        let block = LOAD_BLOCK_BYTES as u64;
        let straddles = chunk_offsets
            .windows(2)
            .any(|pair| pair[0] < block && pair[1] > block);
        assert!(straddles);
        let (started, loaded, result) = load_recording(&path);
        assert_eq!(started, Some((HEADER, HEADER.index)));
        assert_eq!(result.expect("valid"), summary);
        assert!(loaded == pairs, "every pair, in order");
    }

    #[test]
    fn load_reports_the_path_and_offset_of_corruption() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pairs = many_pairs(5_000, 100);
        let (path, _, chunk_offsets) = write_snapshot(dir.path(), HEADER, &pairs);
        let mut bytes = fs::read(&path).expect("read");
        let damaged_chunk = chunk_offsets[1];
        let mut pairs_before_damage = 0;
        let mut decoder = crate::snapshot::Decoder::new();
        let before_damage = &bytes[..damaged_chunk as usize];
        decoder
            .feed(before_damage, |_| pairs_before_damage += 1)
            .expect("valid");
        bytes[damaged_chunk as usize + CHUNK_HEADER_BYTES + 40] ^= 0x10;
        fs::write(&path, &bytes).expect("write");
        let (started, loaded, result) = load_recording(&path);
        assert_eq!(started, Some((HEADER, 5_000)), "the trailer is intact");
        assert_eq!(loaded.len(), pairs_before_damage);
        match result {
            Err(SnapshotError::Corrupt { path: at, error }) => {
                assert_eq!(at, path);
                let expected = FormatError::ChunkChecksum {
                    offset: damaged_chunk,
                };
                assert_eq!(error, expected);
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }

    #[test]
    fn a_damaged_trailer_gives_no_hint_and_the_real_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pairs = many_pairs(10, 3);
        let (path, summary, _) = write_snapshot(dir.path(), HEADER, &pairs);
        let mut bytes = fs::read(&path).expect("read");
        let trailer_offset = summary.file_bytes - TRAILER_BYTES as u64;
        bytes[trailer_offset as usize + 9] ^= 1;
        fs::write(&path, &bytes).expect("write");
        let (started, loaded, result) = load_recording(&path);
        assert_eq!(started, Some((HEADER, 0)));
        assert_eq!(loaded, pairs, "the chunks themselves are intact");
        let error = result.expect_err("the trailer is damaged");
        let expected = format!(
            "snapshot {} is corrupt at byte {trailer_offset}: trailer checksum mismatch",
            path.display()
        );
        assert_eq!(error.to_string(), expected);
    }

    #[test]
    fn a_file_too_short_for_a_header_never_starts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(file_name(1));
        fs::write(&path, b"KVSNAP").expect("write");
        let (started, _, result) = load_recording(&path);
        assert_eq!(started, None);
        assert!(matches!(
            result,
            Err(SnapshotError::Corrupt {
                error: FormatError::Truncated { offset: 6 },
                ..
            })
        ));
        fs::write(&path, b"\x00not a snapshot at all, not even close").expect("write");
        let (started, _, result) = load_recording(&path);
        assert_eq!(started, None);
        assert!(matches!(
            result,
            Err(SnapshotError::Corrupt {
                error: FormatError::BadMagic,
                ..
            })
        ));
    }

    #[test]
    fn a_write_index_after_the_snapshot_is_refused_on_load() {
        let dir = tempfile::tempdir().expect("tempdir");
        let header = Header { index: 3, epoch: 1 };
        let (path, _, chunk_offsets) = write_snapshot(dir.path(), header, &many_pairs(3, 5));
        // Rewrite the third pair's write index to 4 and fix the chunk checksum.
        let mut bytes = fs::read(&path).expect("read");
        let body_start = chunk_offsets[0] as usize + CHUNK_HEADER_BYTES;
        let third_pair = body_start + 2 * (4 + 12 + 8 + 5);
        bytes[third_pair + 8..third_pair + 16].copy_from_slice(&4u64.to_le_bytes());
        let body_end = bytes.len() - TRAILER_BYTES;
        let checksum = crc32c::crc32c(&bytes[body_start..body_end]);
        bytes[body_start - 4..body_start].copy_from_slice(&checksum.to_le_bytes());
        fs::write(&path, &bytes).expect("write");
        let (_, loaded, result) = load_recording(&path);
        assert!(loaded.is_empty(), "the whole chunk is refused");
        let reason = MalformedReason::WriteIndexAfterSnapshot {
            write_index: 4,
            snapshot_index: 3,
        };
        assert!(matches!(
            result,
            Err(SnapshotError::Corrupt {
                error: FormatError::Malformed { offset, reason: found },
                ..
            }) if offset == third_pair as u64 && found == reason
        ));
    }

    #[test]
    fn publish_leaves_only_the_final_file_and_it_loads() {
        let dir = tempfile::tempdir().expect("tempdir");
        // A leftover of an abandoned attempt is truncated, not appended to.
        fs::write(
            dir.path().join(temporary_file_name(HEADER.index)),
            b"leftover",
        )
        .expect("write");
        let pairs = many_pairs(100, 10);
        let (path, summary, _) = write_snapshot(dir.path(), HEADER, &pairs);
        assert_eq!(path, dir.path().join(file_name(HEADER.index)));
        let listing = list(dir.path()).expect("list");
        assert_eq!(listing.snapshots, vec![(HEADER.index, path.clone())]);
        assert!(listing.temporaries.is_empty());
        let (started, loaded, result) = load_recording(&path);
        assert_eq!(started, Some((HEADER, 100)));
        assert_eq!(loaded, pairs);
        assert_eq!(result.expect("valid"), summary);
    }

    #[test]
    fn publish_refuses_a_file_that_is_not_the_temporary() {
        let dir = tempfile::tempdir().expect("tempdir");
        let _temporary = create_temporary(dir.path(), 5).expect("create");
        let other = create_temporary(dir.path(), 6).expect("create");
        let error = publish(dir.path(), 5, &other).expect_err("wrong file");
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
        assert!(!dir.path().join(file_name(5)).exists());
    }

    #[test]
    fn remove_temporary_removes_it_and_tolerates_its_absence() {
        let dir = tempfile::tempdir().expect("tempdir");
        create_temporary(dir.path(), 5).expect("create");
        remove_temporary(dir.path(), 5).expect("remove");
        assert!(!dir.path().join(temporary_file_name(5)).exists());
        remove_temporary(dir.path(), 5).expect("already gone");
    }

    #[test]
    fn a_missing_file_is_an_io_error_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(file_name(3));
        let (started, _, result) = load_recording(&path);
        assert_eq!(started, None);
        let error = result.expect_err("missing");
        assert!(matches!(&error, SnapshotError::Io { path: at, .. } if *at == path));
        let prefix = format!("cannot read snapshot {}: ", path.display());
        assert!(error.to_string().starts_with(&prefix), "{error}");
    }
}
