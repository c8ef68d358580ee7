//! Running out of file descriptors without leaving clients hanging: a spare
//! descriptor, and refusing the connections the listener cannot accept.
//!
//! The open-file budget (`descriptor_budget`) keeps clients, peers and the
//! server's own files under `RLIMIT_NOFILE`, but what it does not count
//! (descriptors inherited from the parent, a log grown to many segments, a
//! limit lowered from outside with prlimit, or the system-wide table:
//! `ENFILE`) can still make `accept` fail with `EMFILE` or `ENFILE`. The
//! connection then stays in the listen backlog: its client connected and
//! hears nothing, ever, and edge-triggered readiness does not report the
//! listener again until another connection arrives.
//!
//! So one descriptor (of `/dev/null`) is held from the start. When accept
//! runs out of descriptors, the spare is closed, the connection accepted
//! with the descriptor that freed, told `ERR max number of clients
//! reached` and closed, and the spare reopened; accepting goes on until the
//! backlog is empty, so every waiting client is told. If even that fails
//! (the spare is gone, or accept still fails), the reactor stops accepting
//! for this turn and tries again after [`ACCEPT_RETRY_MS`] on a timer, never
//! in a busy loop. Refusals and failures are each logged at most once a
//! second.
//!
//! This module only ever refuses: it never keeps a connection it accepted,
//! and never closes a descriptor it did not open.

use std::fs::File;
use std::io::{self, Write};

use mio::net::{TcpListener, TcpStream};

use super::throttle::{self, Throttle};
use super::{Server, TimerEvent};
use crate::protocol::{ErrorReply, Reply};

/// After an accept failure that the spare could not get around, accepting
/// is tried again this much later.
pub(super) const ACCEPT_RETRY_MS: u64 = 100;

/// The file held open as the spare descriptor.
const SPARE_PATH: &str = "/dev/null";

/// `errno` values of a process (`EMFILE`) or the system (`ENFILE`) out of
/// descriptors; the same on every Unix since V7. std has no `ErrorKind`
/// for them.
const EMFILE: i32 = 24;
const ENFILE: i32 = 23;

/// What an accept error means for the accept loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AcceptError {
    /// That connection is gone (reset while in the backlog); the next one
    /// may be fine.
    NextConnection,
    /// No descriptor for the connection: the spare may help.
    OutOfDescriptors,
    /// Anything else (no memory for socket buffers, ...): wait a while.
    Other,
}

fn classify(error: &io::Error) -> AcceptError {
    if let Some(EMFILE | ENFILE) = error.raw_os_error() {
        return AcceptError::OutOfDescriptors;
    }
    match error.kind() {
        io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset => {
            AcceptError::NextConnection
        }
        _ => AcceptError::Other,
    }
}

/// What using the spare achieved.
#[derive(Debug)]
pub(super) enum Refusal {
    /// A connection was told it is one too many, and closed.
    Refused,
    /// The backlog is empty (out of descriptors, accept reports that
    /// before looking at it).
    Drained,
    /// There is no spare, and no descriptor to reopen it with.
    NoSpare,
    /// Accept failed even with the spare's descriptor free.
    Failed(io::Error),
}

/// The spare descriptor and what the reactor needs around it.
pub(super) struct Descriptors {
    /// `/dev/null`, held so that one descriptor can be freed when all are
    /// taken; `None` while it could not be reopened.
    spare: Option<File>,
    /// Connections refused for want of a descriptor.
    refused: u64,
    /// Refusals, logged at most once a second.
    refusal_log: Throttle,
    /// Accept failures, likewise.
    failure_log: Throttle,
    /// An [`TimerEvent::AcceptRetry`] is armed.
    retry_armed: bool,
}

impl Descriptors {
    /// Opens the spare; without one (said on stderr) accept failures are
    /// only retried on a timer.
    pub(super) fn open() -> Descriptors {
        let spare = match File::open(SPARE_PATH) {
            Ok(file) => Some(file),
            Err(error) => {
                crate::log_warn!(
                    "cannot open {SPARE_PATH} as a spare descriptor: {error}; clients that \
                     come when descriptors run out will wait until some are free"
                );
                None
            }
        };
        Descriptors {
            spare,
            refused: 0,
            refusal_log: Throttle::default(),
            failure_log: Throttle::default(),
            retry_armed: false,
        }
    }

    /// Whether the spare is held.
    pub(super) fn has_spare(&self) -> bool {
        self.spare.is_some()
    }

    /// Reopens the spare if it is missing and a descriptor is free.
    fn restore_spare(&mut self) {
        if self.spare.is_none() {
            self.spare = File::open(SPARE_PATH).ok();
        }
    }

    /// Frees the spare's descriptor, accepts one connection with it and
    /// refuses that connection, then takes the spare back.
    pub(super) fn refuse_one(&mut self, listener: &TcpListener) -> Refusal {
        self.restore_spare();
        let Some(spare) = self.spare.take() else {
            return Refusal::NoSpare;
        };
        drop(spare);
        let refusal = match listener.accept() {
            Ok((mut stream, _)) => {
                refuse(&mut stream);
                self.refused += 1;
                Refusal::Refused
            }
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => Refusal::Drained,
            Err(error) => Refusal::Failed(error),
        };
        // The descriptor just closed (the connection's, or the spare's own
        // when accept failed) is free again: the spare takes it back.
        self.restore_spare();
        refusal
    }
}

/// Tells a connection it is one too many; it is closed when dropped.
fn refuse(stream: &mut TcpStream) {
    let mut refusal = Vec::new();
    Reply::Error(ErrorReply::TooManyClients).encode(&mut refusal);
    // Best effort: the socket is fresh, so its buffer has room.
    let _ = stream.write(&refusal);
}

impl Server {
    /// Accept failed with `error`: whether to go on accepting this turn.
    pub(super) fn accept_failed(&mut self, error: io::Error) -> bool {
        match classify(&error) {
            AcceptError::NextConnection => true,
            AcceptError::OutOfDescriptors => self.refuse_with_spare(error),
            AcceptError::Other => {
                self.accept_later(&error);
                false
            }
        }
    }

    /// Out of descriptors: refuse the next waiting connection with the
    /// spare's descriptor. Whether to go on accepting.
    fn refuse_with_spare(&mut self, error: io::Error) -> bool {
        let Some(listener) = &self.listener else {
            return false;
        };
        match self.descriptors.refuse_one(listener) {
            Refusal::Refused => {
                let now_ms = self.now_ms();
                if let Some(suppressed) = self.descriptors.refusal_log.admit(now_ms) {
                    crate::log_warn!(
                        "out of file descriptors (accept: {error}): refused a connection with \
                         ERR max number of clients reached, {} so far{}",
                        self.descriptors.refused,
                        throttle::suppressed_note(suppressed)
                    );
                }
                true
            }
            Refusal::Drained => false,
            Refusal::NoSpare => {
                self.accept_later(&error);
                false
            }
            Refusal::Failed(error) => {
                self.accept_later(&error);
                false
            }
        }
    }

    /// Logs (at most once a second) that accepting failed, and arms a
    /// timer to try again: edge-triggered readiness would not say so.
    fn accept_later(&mut self, error: &io::Error) {
        let now_ms = self.now_ms();
        if let Some(suppressed) = self.descriptors.failure_log.admit(now_ms) {
            let spare = if self.descriptors.has_spare() {
                ""
            } else {
                ", and no spare descriptor is left"
            };
            crate::log_error!(
                "accept failed: {error}{spare}; retrying every {ACCEPT_RETRY_MS} ms{}",
                throttle::suppressed_note(suppressed)
            );
        }
        if !self.descriptors.retry_armed {
            self.descriptors.retry_armed = true;
            let deadline_ms = now_ms + ACCEPT_RETRY_MS;
            self.timers.insert(deadline_ms, TimerEvent::AcceptRetry);
        }
    }

    /// The retry timer fired: take the spare back if there is room now,
    /// and accept what waits.
    pub(super) fn retry_accept(&mut self) {
        self.descriptors.retry_armed = false;
        self.descriptors.restore_spare();
        self.accept_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::time::Duration;

    #[test]
    fn accept_errors_are_told_apart() {
        let cases = [
            (
                io::Error::from_raw_os_error(EMFILE),
                AcceptError::OutOfDescriptors,
            ),
            (
                io::Error::from_raw_os_error(ENFILE),
                AcceptError::OutOfDescriptors,
            ),
            (
                io::Error::from(io::ErrorKind::ConnectionAborted),
                AcceptError::NextConnection,
            ),
            (
                io::Error::from(io::ErrorKind::OutOfMemory),
                AcceptError::Other,
            ),
            (io::Error::other("anything else"), AcceptError::Other),
        ];
        for (error, expected) in cases {
            assert_eq!(classify(&error), expected, "{error}");
        }
    }

    fn listener() -> TcpListener {
        TcpListener::bind("127.0.0.1:0".parse().unwrap()).expect("bind")
    }

    /// Without running out of descriptors, what the spare does: the waiting
    /// connection is refused with the exact error line and closed, an empty
    /// backlog is reported as such, and the spare is held again after each.
    #[test]
    fn the_spare_refuses_a_waiting_connection_and_comes_back() {
        let listener = listener();
        let mut descriptors = Descriptors::open();
        assert!(descriptors.has_spare());
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        // The connection is in the backlog once connect returns (loopback),
        // but a non-blocking accept may still race the handshake: retry.
        let started = std::time::Instant::now();
        loop {
            match descriptors.refuse_one(&listener) {
                Refusal::Refused => break,
                Refusal::Drained => {
                    assert!(
                        started.elapsed() < Duration::from_secs(30),
                        "never accepted"
                    );
                    std::thread::sleep(Duration::from_millis(1));
                }
                other => panic!("refusal failed: {other:?}"),
            }
        }
        assert!(descriptors.has_spare());
        assert_eq!(descriptors.refused, 1);
        let mut reply = Vec::new();
        client.read_to_end(&mut reply).expect("read until closed");
        assert_eq!(reply, b"ERR max number of clients reached\n");
        assert!(matches!(
            descriptors.refuse_one(&listener),
            Refusal::Drained
        ));
        assert!(descriptors.has_spare());
        assert_eq!(descriptors.refused, 1);
    }
}
