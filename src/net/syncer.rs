//! The syncer: a thread that owns nothing but shared descriptors of the log's
//! files (a [`SyncJob`]) and runs fdatasync on request, so the event loop
//! keeps reading, executing and writing the next batch while the previous
//! batch's sync is in flight. Group commit then sizes itself: whatever was
//! written while a sync ran is covered by the next one.
//!
//! At most one sync is in flight. Requests made meanwhile are merged into one
//! (the highest index, every file and the directory any of them covers) and
//! sent when the current one returns.
//! Completion wakes the loop through a `mio::Waker`; the loop then tells the
//! core which index is durable. Replies stay held until then, so nothing is
//! acknowledged early.
//!
//! The thread times each sync and hands the duration back with its
//! completion (it keeps no counters: the loop owns every number); the loop
//! warns about one over [`SLOW_SYNC_MS`] (Redis's "Asynchronous AOF fsync
//! is taking too long", etcd's slow fdatasync): every write acknowledged
//! under `--fsync always` waited that long.

use std::io;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use mio::Waker;

use crate::log::SyncJob;
use crate::logger::{self, Level, Value};

/// A sync of the log that takes longer than this is logged (`WARN`).
pub const SLOW_SYNC_MS: u64 = 1000;

struct Completed {
    index: u64,
    outcome: io::Result<()>,
    duration: Duration,
}

/// A sync that finished: the log is durable up to `index`; it took
/// `duration`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Synced {
    pub index: u64,
    pub duration: Duration,
}

/// Runs a sync job, returning its outcome and how long it took.
pub fn run_timed(job: SyncJob) -> (io::Result<()>, Duration) {
    let started = Instant::now();
    let outcome = job.run();
    (outcome, started.elapsed())
}

/// Warns if a sync of the log through `index` took `duration`, over
/// [`SLOW_SYNC_MS`]; returns whether it did.
pub fn warn_if_slow(duration: Duration, index: u64) -> bool {
    let duration_ms = duration.as_millis() as u64;
    if duration_ms <= SLOW_SYNC_MS {
        return false;
    }
    let fields = [
        ("duration_ms", Value::U64(duration_ms)),
        ("index", Value::U64(index)),
    ];
    logger::log_event(
        Level::Warn,
        Some("slow_fsync"),
        &format_args!(
            "fdatasync of the log through index {index} took {duration_ms} ms (over \
             {SLOW_SYNC_MS} ms): the disk is slow, and writes waiting to be durable waited as \
             long"
        ),
        &fields,
    );
    true
}

/// A sync to run: the job, and the log index it makes durable.
struct Request {
    index: u64,
    job: SyncJob,
}

pub struct Syncer {
    requests: Option<Sender<Request>>,
    completions: Receiver<Completed>,
    in_flight: Option<u64>,
    queued: Option<Request>,
    thread: Option<JoinHandle<()>>,
}

impl Syncer {
    pub fn spawn(waker: Arc<Waker>) -> io::Result<Syncer> {
        let (requests, incoming) = mpsc::channel::<Request>();
        let (done, completions) = mpsc::channel();
        let thread = thread::Builder::new()
            .name("kvstore-syncer".to_string())
            .spawn(move || {
                while let Ok(Request { index, job }) = incoming.recv() {
                    let (outcome, duration) = run_timed(job);
                    let completed = Completed {
                        index,
                        outcome,
                        duration,
                    };
                    if done.send(completed).is_err() {
                        return;
                    }
                    // If the loop is gone there is nobody left to wake.
                    let _ = waker.wake();
                }
            })?;
        Ok(Syncer {
            requests: Some(requests),
            completions,
            in_flight: None,
            queued: None,
            thread: Some(thread),
        })
    }

    /// Asks for everything written up to `index` to be made durable by
    /// running `job`.
    pub fn request(&mut self, index: u64, job: SyncJob) {
        if self.in_flight.is_none() {
            return self.send(Request { index, job });
        }
        match &mut self.queued {
            Some(queued) => {
                queued.index = queued.index.max(index);
                queued.job.merge(job);
            }
            None => self.queued = Some(Request { index, job }),
        }
    }

    /// Whether no sync is in flight or queued.
    pub fn is_idle(&self) -> bool {
        self.in_flight.is_none()
    }

    fn send(&mut self, request: Request) {
        self.in_flight = Some(request.index);
        if let Some(requests) = &self.requests {
            // The thread only exits once this sender is dropped.
            let _ = requests.send(request);
        }
    }

    /// The sync that finished, if one did.
    pub fn completed(&mut self) -> io::Result<Option<Synced>> {
        match self.completions.try_recv() {
            Ok(completed) => self.finish(completed).map(Some),
            Err(TryRecvError::Empty) => Ok(None),
            Err(TryRecvError::Disconnected) => Err(io::Error::other("the syncer thread died")),
        }
    }

    /// Blocks until no sync is in flight or queued; returns the highest
    /// index made durable meanwhile. `on_sync` hears of each sync that
    /// finished, with how long it took.
    pub fn wait_idle(&mut self, mut on_sync: impl FnMut(Synced)) -> io::Result<Option<u64>> {
        let mut durable = None;
        while self.in_flight.is_some() {
            let completed = self
                .completions
                .recv()
                .map_err(|_| io::Error::other("the syncer thread died"))?;
            let synced = self.finish(completed)?;
            on_sync(synced);
            durable = Some(synced.index);
        }
        Ok(durable)
    }

    fn finish(&mut self, completed: Completed) -> io::Result<Synced> {
        self.in_flight = None;
        completed.outcome?;
        warn_if_slow(completed.duration, completed.index);
        if let Some(queued) = self.queued.take() {
            self.send(queued);
        }
        Ok(Synced {
            index: completed.index,
            duration: completed.duration,
        })
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        self.requests = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mio::{Poll, Token};

    #[test]
    fn requests_made_during_a_sync_are_covered_by_the_next_one() {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = crate::log::DataDir::lock(dir.path()).unwrap();
        let (mut log, _) = crate::log::Log::open(&data_dir, 1 << 20, None, |_| {}).unwrap();
        let poll = Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), Token(0)).unwrap());
        let mut syncer = Syncer::spawn(waker).unwrap();
        for index in 1..=3 {
            let mut record = Vec::new();
            crate::log::encode(
                &crate::log::Entry {
                    epoch: 1,
                    index,
                    commit: 0,
                    op: crate::log::Op::Noop,
                },
                &mut record,
            );
            log.append(index, &record).unwrap();
            syncer.request(index, log.take_sync_job().expect("a write to sync"));
        }
        assert!(!syncer.is_idle());
        let mut syncs = 0;
        assert_eq!(syncer.wait_idle(|_| syncs += 1).unwrap(), Some(3));
        // One for the first request, one for the two merged behind it.
        assert_eq!(syncs, 2);
        assert!(syncer.is_idle());
        assert_eq!(syncer.completed().unwrap(), None);
    }

    #[test]
    fn a_sync_is_timed_and_only_a_slow_one_is_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = crate::log::DataDir::lock(dir.path()).unwrap();
        let (mut log, _) = crate::log::Log::open(&data_dir, 1 << 20, None, |_| {}).unwrap();
        let mut record = Vec::new();
        let entry = crate::log::Entry {
            epoch: 1,
            index: 1,
            commit: 0,
            op: crate::log::Op::Noop,
        };
        crate::log::encode(&entry, &mut record);
        log.append(1, &record).unwrap();
        let (outcome, duration) = run_timed(log.take_sync_job().expect("a write to sync"));
        assert!(outcome.is_ok());
        assert!(duration < Duration::from_secs(60), "{duration:?}");
        let at_threshold = Duration::from_millis(SLOW_SYNC_MS);
        assert!(
            !warn_if_slow(at_threshold, 1),
            "at the threshold is not slow"
        );
        assert!(warn_if_slow(at_threshold + Duration::from_millis(1), 1));
    }
}
