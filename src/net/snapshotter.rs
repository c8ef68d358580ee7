//! The snapshotter: a thread that writes snapshot files, so the event loop
//! never waits on a large write or an fsync. It owns nothing but the file it
//! is writing: the core encodes the store's image a slice per turn, and the
//! loop hands each slice over as bytes.
//!
//! For one snapshot the loop sends `Begin`, then `Write`s, then `Finish`;
//! the thread writes to a temporary file, and on `Finish` makes it durable
//! and gives it its final name (`snapshot::publish`: fsync, rename, fsync
//! the directory), then removes older snapshots. It reports every write and
//! the outcome through a channel and wakes the loop (`mio::Waker`).
//!
//! A failure (a full disk, say) is reported once, the temporary file is
//! removed, and the rest of that snapshot's bytes are dropped: the server
//! goes on serving from its log, which is whole.
//!
//! It also deletes the files a snapshot made obsolete (log segments it
//! covers) and closes old snapshot files: freeing a large file's blocks
//! takes milliseconds, which the event loop must not spend.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::thread::{self, JoinHandle};
use std::time::Instant;

use mio::Waker;

use crate::snapshot;

/// What the loop asks of the thread.
enum Job {
    Begin { index: u64 },
    Write(Vec<u8>),
    Finish,
    Abort,
    Remove(PathBuf),
    Close(File),
}

/// What the thread reports.
#[derive(Debug)]
pub enum Report {
    /// Bytes of the current snapshot written (not yet durable).
    Written(usize),
    /// The snapshot of `index` is durable under its final name.
    Published {
        index: u64,
        file_bytes: u64,
        elapsed_ms: u64,
    },
    /// The snapshot of `index` was abandoned and its file removed.
    Failed { index: u64, error: io::Error },
}

/// The loop's handle on the thread.
pub struct Snapshotter {
    jobs: Option<Sender<Job>>,
    reports: Receiver<Report>,
    thread: Option<JoinHandle<()>>,
}

/// The thread's side: the file being written, if any.
struct Writing {
    index: u64,
    file: File,
    written_bytes: u64,
    started: Instant,
}

impl Snapshotter {
    /// Starts the thread for snapshots in `dir`.
    pub fn spawn(dir: PathBuf, waker: Arc<Waker>) -> io::Result<Snapshotter> {
        let (jobs, incoming) = mpsc::channel::<Job>();
        let (reports_sender, reports) = mpsc::channel();
        let thread = thread::Builder::new()
            .name("kvstore-snapshotter".to_string())
            .spawn(move || {
                let report = |report| {
                    let sent = reports_sender.send(report).is_ok();
                    // If the loop is gone there is nobody left to wake.
                    let _ = waker.wake();
                    sent
                };
                run(&dir, &incoming, report);
            })?;
        Ok(Snapshotter {
            jobs: Some(jobs),
            reports,
            thread: Some(thread),
        })
    }

    /// Starts the snapshot of `index` (a temporary file).
    pub fn begin(&self, index: u64) {
        self.send(Job::Begin { index });
    }

    /// Appends bytes to the snapshot being written.
    pub fn write(&self, bytes: Vec<u8>) {
        self.send(Job::Write(bytes));
    }

    /// The snapshot is complete: make it durable and publish it.
    pub fn finish(&self) {
        self.send(Job::Finish);
    }

    /// The snapshot is abandoned: remove its temporary file (no report).
    pub fn abort(&self) {
        self.send(Job::Abort);
    }

    /// Deletes a file no longer needed (a log segment a snapshot covers).
    pub fn remove(&self, path: PathBuf) {
        self.send(Job::Remove(path));
    }

    /// Closes a file (perhaps the last descriptor of a deleted snapshot).
    pub fn close(&self, file: File) {
        self.send(Job::Close(file));
    }

    fn send(&self, job: Job) {
        if let Some(jobs) = &self.jobs {
            // The thread only exits once this sender is dropped.
            let _ = jobs.send(job);
        }
    }

    /// The next report, if one arrived.
    pub fn next_report(&self) -> io::Result<Option<Report>> {
        match self.reports.try_recv() {
            Ok(report) => Ok(Some(report)),
            Err(TryRecvError::Empty) => Ok(None),
            Err(TryRecvError::Disconnected) => Err(io::Error::other("the snapshotter thread died")),
        }
    }
}

impl Drop for Snapshotter {
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The thread's loop: one snapshot at a time, until the loop hangs up.
fn run(dir: &Path, jobs: &Receiver<Job>, report: impl Fn(Report) -> bool) {
    let mut writing: Option<Writing> = None;
    while let Ok(job) = jobs.recv() {
        let outcome = match job {
            Job::Begin { index } => begin(dir, index, &mut writing),
            Job::Write(bytes) => write(dir, &mut writing, &bytes),
            Job::Finish => finish(dir, &mut writing),
            Job::Abort => {
                if let Some(current) = writing.take() {
                    discard(dir, current);
                }
                None
            }
            Job::Remove(path) => {
                if let Err(error) = std::fs::remove_file(&path) {
                    crate::log_warn!("cannot remove {}: {error}", path.display());
                }
                None
            }
            Job::Close(file) => {
                drop(file);
                None
            }
        };
        let Some(outcome) = outcome else { continue };
        if !report(outcome) {
            return;
        }
    }
}

fn begin(dir: &Path, index: u64, writing: &mut Option<Writing>) -> Option<Report> {
    crate::failpoint::reached("snapshot-begin");
    if let Some(previous) = writing.take() {
        discard(dir, previous);
    }
    match snapshot::create_temporary(dir, index) {
        Ok(file) => {
            *writing = Some(Writing {
                index,
                file,
                written_bytes: 0,
                started: Instant::now(),
            });
            None
        }
        Err(error) => Some(Report::Failed { index, error }),
    }
}

fn write(dir: &Path, writing: &mut Option<Writing>, bytes: &[u8]) -> Option<Report> {
    // After a failure, the rest of that snapshot's bytes are dropped.
    let current = writing.as_mut()?;
    match current.file.write_all(bytes) {
        Ok(()) => {
            current.written_bytes += bytes.len() as u64;
            crate::failpoint::reached("snapshot-write");
            Some(Report::Written(bytes.len()))
        }
        Err(error) => abandon(dir, writing, error),
    }
}

fn finish(dir: &Path, writing: &mut Option<Writing>) -> Option<Report> {
    let current = writing.as_ref()?;
    crate::failpoint::reached("snapshot-before-publish");
    if let Err(error) = snapshot::publish(dir, current.index, &current.file) {
        return abandon(dir, writing, error);
    }
    let current = writing.take()?;
    crate::failpoint::reached("snapshot-after-publish");
    remove_older_snapshots(dir, current.index);
    Some(Report::Published {
        index: current.index,
        file_bytes: current.written_bytes,
        elapsed_ms: current.started.elapsed().as_millis() as u64,
    })
}

/// Removes the temporary file of a failed snapshot and reports the failure.
fn abandon(dir: &Path, writing: &mut Option<Writing>, error: io::Error) -> Option<Report> {
    let current = writing.take()?;
    let index = current.index;
    discard(dir, current);
    Some(Report::Failed { index, error })
}

/// Closes and removes an unfinished snapshot file.
fn discard(dir: &Path, writing: Writing) {
    let index = writing.index;
    drop(writing.file);
    if let Err(cleanup) = snapshot::remove_temporary(dir, index) {
        crate::log_warn!("cannot remove the abandoned snapshot file of index {index}: {cleanup}");
    }
}

/// Removes every snapshot older than `index`: the newest covers them.
fn remove_older_snapshots(dir: &Path, index: u64) {
    let listing = match snapshot::list(dir) {
        Ok(listing) => listing,
        Err(error) => {
            crate::log_warn!(
                "cannot list {} to remove old snapshots: {error}",
                dir.display()
            );
            return;
        }
    };
    for (older, path) in listing.snapshots {
        if older < index
            && let Err(error) = std::fs::remove_file(&path)
        {
            crate::log_warn!("cannot remove old snapshot {}: {error}", path.display());
        }
    }
}
