//! The promised epoch: the one piece of cluster state besides the log that
//! must survive a crash. A node that promised epoch `e` and forgot it after a
//! restart could promise `e` again to another candidate: two leaders in one
//! epoch.
//!
//! Stored in `<data_dir>/epoch` as 8 bytes of little-endian epoch and a
//! CRC32C of them, replaced atomically: write a temporary file, fdatasync
//! it, rename it over the old one, fsync the directory.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

pub const EPOCH_FILE_NAME: &str = "epoch";
/// The largest epoch a node accepts, promises or stores. Elections add one
/// at a time: at one a millisecond this lasts 146 million years. Far below
/// `u64::MAX`, so that no `+ 1` can wrap, and a frame claiming more is
/// refused (`node::validate`) instead of bricking the cluster.
pub const MAX_EPOCH: u64 = 1 << 62;
const TEMPORARY_FILE_NAME: &str = "epoch.tmp";
const EPOCH_FILE_BYTES: usize = 12;

#[derive(Debug)]
pub enum EpochError {
    Io {
        path: PathBuf,
        source: io::Error,
    },
    Corrupt {
        path: PathBuf,
    },
    /// Beyond [`MAX_EPOCH`]: only a forged frame, accepted by a version
    /// before frames were checked, could have put it there.
    OutOfRange {
        path: PathBuf,
        epoch: u64,
    },
}

impl std::fmt::Display for EpochError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EpochError::Io { path, source } => write!(formatter, "{}: {source}", path.display()),
            EpochError::Corrupt { path } => write!(
                formatter,
                "{} is corrupt; refusing to start (it records the epoch this node promised)",
                path.display()
            ),
            EpochError::OutOfRange { path, epoch } => write!(
                formatter,
                "{} holds epoch {epoch}, beyond the largest valid epoch {MAX_EPOCH}: a forged \
                 peer frame put it there before frames were checked; refusing to start (see \
                 docs/SECURITY.md, 'A node bricked by a forged epoch')",
                path.display()
            ),
        }
    }
}

impl std::error::Error for EpochError {}

/// The promised epoch stored in `data_dir`, or 0 if none was ever stored.
pub fn load_epoch(data_dir: &Path) -> Result<u64, EpochError> {
    let path = data_dir.join(EPOCH_FILE_NAME);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(source) => return Err(EpochError::Io { path, source }),
    };
    let Ok::<[u8; EPOCH_FILE_BYTES], _>(bytes) = bytes.try_into() else {
        return Err(EpochError::Corrupt { path });
    };
    let (epoch, checksum) = bytes.split_at(8);
    if crc32c::crc32c(epoch).to_le_bytes() != checksum {
        return Err(EpochError::Corrupt { path });
    }
    let epoch = u64::from_le_bytes(epoch.try_into().expect("8 bytes"));
    if epoch > MAX_EPOCH {
        return Err(EpochError::OutOfRange { path, epoch });
    }
    Ok(epoch)
}

/// Durably replaces the stored epoch with `epoch`.
pub fn store_epoch(data_dir: &Path, epoch: u64) -> io::Result<()> {
    assert!(epoch <= MAX_EPOCH, "epoch {epoch} is beyond MAX_EPOCH");
    let temporary = data_dir.join(TEMPORARY_FILE_NAME);
    let mut bytes = epoch.to_le_bytes().to_vec();
    bytes.extend_from_slice(&crc32c::crc32c(&bytes).to_le_bytes());
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&temporary)?;
    file.write_all(&bytes)?;
    file.sync_data()?;
    fs::rename(&temporary, data_dir.join(EPOCH_FILE_NAME))?;
    File::open(data_dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_epoch_is_loaded_back() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load_epoch(dir.path()).unwrap(), 0);
        store_epoch(dir.path(), 7).unwrap();
        store_epoch(dir.path(), MAX_EPOCH).unwrap();
        assert_eq!(load_epoch(dir.path()).unwrap(), MAX_EPOCH);
        assert!(!dir.path().join(TEMPORARY_FILE_NAME).exists());
    }

    #[test]
    fn a_damaged_epoch_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        store_epoch(dir.path(), 7).unwrap();
        let path = dir.path().join(EPOCH_FILE_NAME);
        let mut bytes = fs::read(&path).unwrap();
        bytes[0] ^= 1;
        fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            load_epoch(dir.path()),
            Err(EpochError::Corrupt { .. })
        ));
        fs::write(&path, b"short").unwrap();
        assert!(matches!(
            load_epoch(dir.path()),
            Err(EpochError::Corrupt { .. })
        ));
    }

    /// An epoch file an older version let a forged frame set to u64::MAX
    /// (the next election wrapped to 0) is refused, naming the file.
    #[test]
    fn an_epoch_file_beyond_the_limit_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = u64::MAX.to_le_bytes().to_vec();
        bytes.extend_from_slice(&crc32c::crc32c(&bytes).to_le_bytes());
        fs::write(dir.path().join(EPOCH_FILE_NAME), &bytes).unwrap();
        let error = load_epoch(dir.path()).unwrap_err();
        assert!(
            matches!(
                error,
                EpochError::OutOfRange {
                    epoch: u64::MAX,
                    ..
                }
            ),
            "{error:?}"
        );
        let text = error.to_string();
        assert!(text.contains(&dir.path().join(EPOCH_FILE_NAME).display().to_string()));
        assert!(text.contains("refusing to start"), "{text}");
    }

    #[test]
    #[should_panic(expected = "beyond MAX_EPOCH")]
    fn storing_an_epoch_beyond_the_limit_is_a_bug() {
        let dir = tempfile::tempdir().unwrap();
        let _ = store_epoch(dir.path(), MAX_EPOCH + 1);
    }
}
