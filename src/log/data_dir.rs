//! The data directory: creating it, locking it, and syncing its entries.
//!
//! [`DataDir::lock`] creates the directory when missing (and makes its entry
//! in the parent durable), then takes an exclusive advisory lock on
//! `<data_dir>/LOCK`. Invariant: while any clone of a [`DataDir`] lives, this
//! process holds that lock, so no other server reads or writes the files
//! inside. Whatever writes there (the log, snapshots, the promised epoch)
//! keeps a clone, so the lock cannot be released under it.
//!
//! This module never reads or writes the files in the directory; it only
//! makes their names durable ([`DataDir::sync`]).

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::error::{LogError, io_error};

/// The lock file's name inside the data directory. Locking the directory
/// rather than the log keeps the lock valid while log files come and go.
pub const LOCK_FILE_NAME: &str = "LOCK";

/// The locked data directory. Clones share the lock, which is released when
/// the last clone is dropped.
#[derive(Debug, Clone)]
pub struct DataDir {
    path: PathBuf,
    /// The directory itself, opened once, for fsyncing its entries.
    directory: Arc<File>,
    /// The lock lasts as long as this descriptor stays open.
    _lock: Arc<File>,
}

impl DataDir {
    /// Creates the directory at `path` if missing (fsyncing its parent) and
    /// locks it. [`LogError::Locked`] when another process holds the lock.
    pub fn lock(path: &Path) -> Result<DataDir, LogError> {
        create_data_dir(path)?;
        let lock = lock_data_dir(path)?;
        let directory = File::open(path).map_err(|source| io_error(path, source))?;
        Ok(DataDir {
            path: path.to_path_buf(),
            directory: Arc::new(directory),
            _lock: Arc::new(lock),
        })
    }

    /// The directory's path, as given to [`DataDir::lock`].
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Makes every entry created, renamed or removed in the directory so far
    /// durable (fsync of the directory).
    pub fn sync(&self) -> io::Result<()> {
        self.directory.sync_all()
    }

    /// A descriptor of the directory, for a syncer thread to fsync.
    pub(crate) fn directory_handle(&self) -> Arc<File> {
        Arc::clone(&self.directory)
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
    File::open(parent)
        .and_then(|handle| handle.sync_all())
        .map_err(|source| io_error(parent, source))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_directories_are_created_and_locked() {
        let parent = tempfile::tempdir().expect("tempdir");
        let path = parent.path().join("nested/data");
        let data_dir = DataDir::lock(&path).expect("lock");
        assert!(path.is_dir());
        assert!(path.join(LOCK_FILE_NAME).exists());
        assert_eq!(data_dir.path(), path);
        data_dir.sync().expect("sync");
    }

    #[test]
    fn the_lock_lasts_until_the_last_clone_is_dropped() {
        let directory = tempfile::tempdir().expect("tempdir");
        let first = DataDir::lock(directory.path()).expect("first lock");
        let clone = first.clone();
        drop(first);
        match DataDir::lock(directory.path()) {
            Err(LogError::Locked { path }) => {
                assert_eq!(path, directory.path().join(LOCK_FILE_NAME))
            }
            other => panic!("expected Locked, got {other:?}"),
        }
        drop(clone);
        DataDir::lock(directory.path()).expect("lock after every clone is gone");
    }

    #[test]
    fn a_directory_under_a_regular_file_is_an_io_error_naming_it() {
        let directory = tempfile::tempdir().expect("tempdir");
        let regular_file = directory.path().join("plain");
        fs::write(&regular_file, b"x").expect("write");
        let path = regular_file.join("data");
        match DataDir::lock(&path) {
            Err(LogError::Io { path: at_fault, .. }) => assert_eq!(at_fault, path),
            other => panic!("expected Io, got {other:?}"),
        }
    }
}
