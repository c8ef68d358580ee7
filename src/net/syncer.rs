//! The syncer: a thread that owns nothing but a clone of the log's file
//! descriptor and runs fdatasync on request, so the event loop keeps
//! reading, executing and writing the next batch while the previous batch's
//! sync is in flight. Group commit then sizes itself: whatever was written
//! while a sync ran is covered by the next one.
//!
//! At most one sync is in flight. A request made meanwhile is remembered
//! (only the highest index matters) and sent when the current one returns.
//! Completion wakes the loop through a `mio::Waker`; the loop then tells the
//! core which index is durable. Replies stay held until then, so nothing is
//! acknowledged early.

use std::fs::File;
use std::io;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::thread::{self, JoinHandle};

use mio::Waker;

struct Completed {
    index: u64,
    outcome: io::Result<()>,
}

pub struct Syncer {
    requests: Option<Sender<u64>>,
    completions: Receiver<Completed>,
    in_flight: Option<u64>,
    queued: Option<u64>,
    thread: Option<JoinHandle<()>>,
}

impl Syncer {
    pub fn spawn(file: File, waker: Arc<Waker>) -> io::Result<Syncer> {
        let (requests, incoming) = mpsc::channel::<u64>();
        let (done, completions) = mpsc::channel();
        let thread = thread::Builder::new()
            .name("kvstore-syncer".to_string())
            .spawn(move || {
                while let Ok(index) = incoming.recv() {
                    let outcome = file.sync_data();
                    if done.send(Completed { index, outcome }).is_err() {
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

    /// Asks for everything written up to `index` to be made durable.
    pub fn request(&mut self, index: u64) {
        if self.in_flight.is_some() {
            self.queued = Some(self.queued.map_or(index, |queued| queued.max(index)));
        } else {
            self.send(index);
        }
    }

    fn send(&mut self, index: u64) {
        self.in_flight = Some(index);
        if let Some(requests) = &self.requests {
            // The thread only exits once this sender is dropped.
            let _ = requests.send(index);
        }
    }

    /// The index made durable by a sync that finished, if one did.
    pub fn completed(&mut self) -> io::Result<Option<u64>> {
        match self.completions.try_recv() {
            Ok(completed) => self.finish(completed),
            Err(TryRecvError::Empty) => Ok(None),
            Err(TryRecvError::Disconnected) => Err(io::Error::other("the syncer thread died")),
        }
    }

    /// Blocks until no sync is in flight or queued; returns the highest
    /// index made durable meanwhile.
    pub fn wait_idle(&mut self) -> io::Result<Option<u64>> {
        let mut durable = None;
        while self.in_flight.is_some() {
            let completed = self
                .completions
                .recv()
                .map_err(|_| io::Error::other("the syncer thread died"))?;
            durable = self.finish(completed)?.or(durable);
        }
        Ok(durable)
    }

    fn finish(&mut self, completed: Completed) -> io::Result<Option<u64>> {
        self.in_flight = None;
        completed.outcome?;
        if let Some(queued) = self.queued.take() {
            self.send(queued);
        }
        Ok(Some(completed.index))
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
        let file = File::create(dir.path().join("log")).unwrap();
        let poll = Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), Token(0)).unwrap());
        let mut syncer = Syncer::spawn(file, waker).unwrap();
        syncer.request(1);
        syncer.request(2);
        syncer.request(5);
        assert_eq!(syncer.wait_idle().unwrap(), Some(5));
        assert_eq!(syncer.completed().unwrap(), None);
    }
}
