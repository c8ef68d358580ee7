//! A sync job: what one round of fdatasync must cover so that everything
//! appended to the log before it was taken is durable, for a syncer thread to
//! run while the event loop keeps appending.
//!
//! A job holds shared descriptors ([`Arc<File>`]) of the segment files written
//! since the previous job and, when a segment was created or removed, of the
//! data directory. Invariant of [`SyncJob::run`]: the directory is synced
//! last, so a new segment's entry is durable before the records in it are
//! reported durable. A job never writes; syncing a file that was removed
//! meanwhile is harmless.

use std::fs::File;
use std::io;
use std::sync::Arc;

/// The files, and maybe the directory, that one sync must cover. A clone
/// covers the same (shared descriptors).
#[derive(Debug, Clone)]
pub struct SyncJob {
    files: Vec<Arc<File>>,
    directory: Option<Arc<File>>,
}

impl SyncJob {
    /// A job for `files` and `directory`; `None` when there is nothing to sync.
    pub(crate) fn new(files: Vec<Arc<File>>, directory: Option<Arc<File>>) -> Option<SyncJob> {
        if files.is_empty() && directory.is_none() {
            return None;
        }
        Some(SyncJob { files, directory })
    }

    /// fdatasyncs every file, then fsyncs the directory if the job covers it.
    /// An error means the data may be lost: nothing the job covers may be
    /// reported durable, and retrying does not make it so.
    pub fn run(&self) -> io::Result<()> {
        for file in &self.files {
            file.sync_data()?;
        }
        if let Some(directory) = &self.directory {
            directory.sync_all()?;
        }
        Ok(())
    }

    /// Adds what `other` covers: a syncer coalesces the jobs requested while
    /// one runs into the next.
    pub fn merge(&mut self, other: SyncJob) {
        for file in other.files {
            if !self.files.iter().any(|known| Arc::ptr_eq(known, &file)) {
                self.files.push(file);
            }
        }
        if self.directory.is_none() {
            self.directory = other.directory;
        }
    }

    /// How many files the job fdatasyncs.
    pub fn file_count(&self) -> usize {
        self.files.len()
    }

    /// Whether the job fsyncs the directory.
    pub fn syncs_directory(&self) -> bool {
        self.directory.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_job_is_none() {
        assert!(SyncJob::new(Vec::new(), None).is_none());
    }

    #[test]
    fn merge_covers_both_jobs_and_syncs_each_file_once() {
        let directory = tempfile::tempdir().expect("tempdir");
        let first = Arc::new(File::create(directory.path().join("a")).expect("create"));
        let second = Arc::new(File::create(directory.path().join("b")).expect("create"));
        let handle = Arc::new(File::open(directory.path()).expect("open directory"));
        let mut job = SyncJob::new(vec![Arc::clone(&first)], None).expect("job");
        let other = SyncJob::new(vec![Arc::clone(&first), second], Some(handle)).expect("job");
        job.merge(other);
        assert_eq!(job.file_count(), 2);
        assert!(job.syncs_directory());
        job.run().expect("run");
    }
}
