//! The syncer: a thread that owns nothing but shared descriptors of the log's
//! files (a [`SyncJob`]) and runs fdatasync on request, so the event loop
//! keeps reading, executing and writing the next batch while the previous
//! batch's sync is in flight. Group commit then sizes itself: whatever was
//! written while a sync ran is covered by the next one.
//!
//! Up to [`MAX_SYNCS_IN_FLIGHT`] syncs run at once, each on its own thread;
//! a sync that starts while another runs covers that one's files too.
//! Requests made while none can start are
//! merged into one (the highest index, every file and the directory any of
//! them covers) and sent when a sync returns.
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
    /// The worker that ran it.
    slot: usize,
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

/// Syncs run at once. A second fdatasync started while one runs returns
/// sooner than one queued behind it: on this project's disk two threads
/// complete 1.5x the syncs of one (8,200 vs 5,600 per second, 4 KiB
/// each), so a batch written while a sync is in flight need not wait for
/// it to end before its own begins.
pub const MAX_SYNCS_IN_FLIGHT: usize = 2;

/// A sync to run: the job, and the log index it makes durable.
struct Request {
    index: u64,
    job: SyncJob,
}

/// A sync being run by one of the threads: what it covers.
struct InFlight {
    job: SyncJob,
}

/// One thread that runs the syncs sent to it, one at a time.
struct Worker {
    requests: Option<Sender<Request>>,
    thread: Option<JoinHandle<()>>,
    in_flight: Option<InFlight>,
}

pub struct Syncer {
    workers: Vec<Worker>,
    completions: Receiver<Completed>,
    queued: Option<Request>,
}

impl Syncer {
    pub fn spawn(waker: Arc<Waker>) -> io::Result<Syncer> {
        let (done, completions) = mpsc::channel();
        let workers = (0..MAX_SYNCS_IN_FLIGHT)
            .map(|slot| Worker::spawn(slot, done.clone(), Arc::clone(&waker)))
            .collect::<io::Result<_>>()?;
        Ok(Syncer {
            workers,
            completions,
            queued: None,
        })
    }

    /// Asks for everything written up to `index` to be made durable by
    /// running `job`: at once if a thread is free, else merged into the
    /// next sync to start.
    ///
    /// Syncs may finish in any order, and the core is told each one's
    /// index as it finishes (it keeps the highest). That is safe because a
    /// sync that starts while others run also covers their files and
    /// directory: an fdatasync that returns has made durable all the file's
    /// data written before it began, whatever else runs, so whichever
    /// finishes first covers every record before its index, even those of
    /// a segment an earlier, still running sync was taken for.
    pub fn request(&mut self, index: u64, job: SyncJob) {
        let request = match self.queued.take() {
            Some(mut queued) => {
                queued.index = queued.index.max(index);
                queued.job.merge(job);
                queued
            }
            None => Request { index, job },
        };
        self.start_or_queue(request);
    }

    fn start_or_queue(&mut self, mut request: Request) {
        if self.in_flight() == self.workers.len() {
            self.queued = Some(request);
            return;
        }
        for worker in &self.workers {
            if let Some(running) = &worker.in_flight {
                request.job.merge(running.job.clone());
            }
        }
        if let Some(worker) = self
            .workers
            .iter_mut()
            .find(|worker| worker.in_flight.is_none())
        {
            worker.send(request);
        }
    }

    /// Whether no sync is in flight or queued.
    pub fn is_idle(&self) -> bool {
        self.in_flight() == 0
    }

    /// How many syncs run now.
    pub fn in_flight(&self) -> usize {
        self.workers
            .iter()
            .filter(|worker| worker.in_flight.is_some())
            .count()
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
        let mut durable: Option<u64> = None;
        while !self.is_idle() {
            let completed = self
                .completions
                .recv()
                .map_err(|_| io::Error::other("the syncer thread died"))?;
            let synced = self.finish(completed)?;
            on_sync(synced);
            durable = Some(durable.map_or(synced.index, |index| index.max(synced.index)));
        }
        Ok(durable)
    }

    fn finish(&mut self, completed: Completed) -> io::Result<Synced> {
        self.workers[completed.slot].in_flight = None;
        completed.outcome?;
        warn_if_slow(completed.duration, completed.index);
        if let Some(queued) = self.queued.take() {
            self.start_or_queue(queued);
        }
        Ok(Synced {
            index: completed.index,
            duration: completed.duration,
        })
    }
}

impl Worker {
    fn spawn(slot: usize, done: Sender<Completed>, waker: Arc<Waker>) -> io::Result<Worker> {
        let (requests, incoming) = mpsc::channel::<Request>();
        let thread = thread::Builder::new()
            .name(format!("kvstore-syncer-{slot}"))
            .spawn(move || {
                while let Ok(Request { index, job }) = incoming.recv() {
                    let (outcome, duration) = run_timed(job);
                    let completed = Completed {
                        slot,
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
        Ok(Worker {
            requests: Some(requests),
            thread: Some(thread),
            in_flight: None,
        })
    }

    fn send(&mut self, request: Request) {
        self.in_flight = Some(InFlight {
            job: request.job.clone(),
        });
        if let Some(requests) = &self.requests {
            // The thread only exits once this sender is dropped.
            let _ = requests.send(request);
        }
    }
}

impl Drop for Worker {
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
        assert_eq!(syncer.in_flight(), MAX_SYNCS_IN_FLIGHT);
        let mut syncs = 0;
        assert_eq!(syncer.wait_idle(|_| syncs += 1).unwrap(), Some(3));
        // The first two at once, the third behind them.
        assert_eq!(syncs, 3);
        assert!(syncer.is_idle());
        assert_eq!(syncer.completed().unwrap(), None);
    }

    #[test]
    fn a_sync_started_while_another_runs_covers_its_files_and_directory() {
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str| Arc::new(std::fs::File::create(dir.path().join(name)).unwrap());
        let directory = Arc::new(std::fs::File::open(dir.path()).unwrap());
        let poll = Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), Token(0)).unwrap());
        let mut syncer = Syncer::spawn(waker).unwrap();
        // An old segment, then a new one with the directory entry, then
        // a write to the new one only: each sync must cover the ones
        // still running, since any of them may finish first.
        let old = SyncJob::new(vec![file("old")], None).unwrap();
        syncer.request(1, old);
        let new = SyncJob::new(vec![file("new")], Some(directory)).unwrap();
        syncer.request(2, new);
        let covered = |syncer: &Syncer, slot: usize| {
            let job = &syncer.workers[slot].in_flight.as_ref().unwrap().job;
            (job.file_count(), job.syncs_directory())
        };
        assert_eq!(covered(&syncer, 0), (1, false));
        assert_eq!(covered(&syncer, 1), (2, true));
        let again = SyncJob::new(vec![file("new")], None).unwrap();
        syncer.request(3, again);
        assert_eq!(syncer.in_flight(), 2, "the third waits for a thread");
        assert_eq!(syncer.wait_idle(|_| {}).unwrap(), Some(3));
    }

    #[test]
    fn a_failed_sync_is_reported_even_when_one_beside_it_succeeds() {
        // fdatasync of /dev/null fails (EINVAL): a disk that refuses.
        let dir = tempfile::tempdir().unwrap();
        let good = Arc::new(std::fs::File::create(dir.path().join("log")).unwrap());
        let refusing = Arc::new(std::fs::File::open("/dev/null").unwrap());
        let poll = Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), Token(0)).unwrap());
        let mut syncer = Syncer::spawn(waker).unwrap();
        syncer.request(1, SyncJob::new(vec![refusing], None).unwrap());
        syncer.request(2, SyncJob::new(vec![good], None).unwrap());
        assert_eq!(syncer.in_flight(), 2);
        // The second covers the first's file too, so it fails as well:
        // nothing reports index 2 durable.
        let mut reported = Vec::new();
        assert!(
            syncer
                .wait_idle(|synced| reported.push(synced.index))
                .is_err()
        );
        assert!(reported.is_empty(), "{reported:?}");
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
