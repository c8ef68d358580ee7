//! Keeping client connections within their bounds: the request and idle
//! deadlines, and the budget for all client buffers together.
//!
//! - A request line must arrive whole within `--request-timeout-ms` of its
//!   first byte, and a connection's first line within that long of its
//!   accept (slow clients, "slowloris", hold buffers and slots): the client
//!   is told and closed.
//! - A connection that executed no whole request for `--idle-timeout-ms`
//!   (dripping bytes does not count) and has nothing in flight is closed.
//! - A connection quiet for [`BUFFER_RELEASE_MS`] gives its buffers back,
//!   so idle connections cost a socket and a few hundred bytes.
//! - The input and output buffers of all clients together stay within
//!   `--max-client-buffer-bytes` (Redis's `maxmemory-clients`): past it the
//!   connections holding the most are closed first, with a log line.
//!
//! One sweep timer checks the deadlines of every connection; the budget is
//! added up as connections read and write, and enforced once per turn.

use super::throttle;
use super::{Endpoint, Server, TimerEvent};
use crate::logger::{self, Level, Value};
use crate::protocol::ErrorReply;

/// The sweep runs at most this far apart.
const MAX_SWEEP_INTERVAL_MS: u64 = 1000;
/// The sweep runs at least this far apart.
const MIN_SWEEP_INTERVAL_MS: u64 = 10;
/// A connection quiet this long gives its buffers back.
pub(super) const BUFFER_RELEASE_MS: u64 = 1000;
/// Past the budget, connections are closed until the buffers are back
/// under this share of it (in percent), so that the next arrival does not
/// trigger another eviction at once.
const BUDGET_LOW_WATER_PERCENT: usize = 90;
/// Only connections holding more than this are candidates for eviction:
/// idle ones hold nothing, and sorting ten thousand of them every turn of
/// an attack would cost more than the attack.
const EVICTION_CANDIDATE_MIN_BYTES: usize = 16 * 1024;

/// What the sweep does to one client connection.
enum Verdict {
    Keep,
    TimedOut,
    Idle,
    ReleaseBuffers,
}

impl Server {
    /// How often the sweep runs: a quarter of the shortest deadline, within
    /// bounds, so a deadline is enforced at most a quarter late.
    pub(super) fn sweep_interval_ms(&self) -> u64 {
        let shortest = [self.config.request_timeout_ms, self.config.idle_timeout_ms]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(MAX_SWEEP_INTERVAL_MS * 4);
        (shortest / 4).clamp(MIN_SWEEP_INTERVAL_MS, MAX_SWEEP_INTERVAL_MS)
    }

    /// Checks every client connection's deadlines, then arms the next sweep.
    pub(super) fn sweep(&mut self, now_ms: u64) {
        let keys: Vec<usize> = self
            .endpoints
            .iter()
            .filter(|(_, endpoint)| matches!(endpoint, Endpoint::Client(_)))
            .map(|(key, _)| key)
            .collect();
        for key in keys {
            match self.verdict(key, now_ms) {
                Verdict::Keep => {}
                Verdict::TimedOut => self.refuse_slow_request(key, now_ms),
                Verdict::Idle => self.close(key),
                Verdict::ReleaseBuffers => {
                    if let Some(connection) = self.client(key) {
                        connection.release_idle_buffers();
                    }
                    self.account_client(key);
                }
            }
        }
        self.tick_link_health(now_ms);
        let next_ms = now_ms + self.sweep_interval_ms();
        self.timers.insert(next_ms, TimerEvent::Sweep);
    }

    fn verdict(&mut self, key: usize, now_ms: u64) -> Verdict {
        let (request_timeout_ms, idle_timeout_ms) =
            (self.config.request_timeout_ms, self.config.idle_timeout_ms);
        let Some(connection) = self.client(key) else {
            return Verdict::Keep;
        };
        if connection.closing || connection.peer_only {
            return Verdict::Keep;
        }
        let waited = |since_ms: u64| now_ms.saturating_sub(since_ms);
        if let (Some(timeout_ms), Some(started_ms)) =
            (request_timeout_ms, connection.line_started_ms)
            && waited(started_ms) >= timeout_ms
        {
            return Verdict::TimedOut;
        }
        if !connection.is_quiet() {
            return Verdict::Keep;
        }
        let quiet_ms = waited(connection.last_request_ms);
        if idle_timeout_ms.is_some_and(|timeout_ms| quiet_ms >= timeout_ms) {
            Verdict::Idle
        } else if quiet_ms >= BUFFER_RELEASE_MS && connection.buffer_bytes() > 0 {
            Verdict::ReleaseBuffers
        } else {
            Verdict::Keep
        }
    }

    /// Tells a client its request took too long, and closes it once told;
    /// logged at most once a second, with how many there were.
    fn refuse_slow_request(&mut self, key: usize, now_ms: u64) {
        let released = self.node.released();
        let Some(timeout_ms) = self.config.request_timeout_ms else {
            return;
        };
        let Some(connection) = self.client(key) else {
            return;
        };
        let remote = connection.transport.socket().peer_addr().ok();
        connection.refuse_with(ErrorReply::RequestTimeout { timeout_ms }, released);
        self.queue_flush(key);
        self.request_timeouts += 1;
        if let Some(suppressed) = self.request_timeout_log.admit(now_ms) {
            let from = remote.map_or("an unknown address".to_string(), |remote| {
                remote.to_string()
            });
            let fields = [
                ("timeout_ms", Value::U64(timeout_ms)),
                ("timed_out", Value::U64(self.request_timeouts)),
            ];
            logger::log_event(
                Level::Warn,
                Some("request_timeout"),
                &format_args!(
                    "closed a client ({from}) that sent no whole request line within {timeout_ms} \
                     ms (--request-timeout-ms; {} so far){}",
                    self.request_timeouts,
                    throttle::suppressed_note(suppressed)
                ),
                &fields,
            );
        }
    }

    /// Adds a client connection's buffers, as they are now, to the budget.
    pub(super) fn account_client(&mut self, key: usize) {
        let Some(connection) = self.client(key) else {
            return;
        };
        let now = connection.buffer_bytes();
        let before = std::mem::replace(&mut connection.accounted_bytes, now);
        self.client_buffer_bytes = self.client_buffer_bytes + now - before;
    }

    /// Closes the client connections holding the most buffer memory until
    /// all of them together are within `--max-client-buffer-bytes`.
    pub(super) fn enforce_client_budget(&mut self) {
        let budget = self.config.max_client_buffer_bytes;
        if self.client_buffer_bytes <= budget {
            return;
        }
        let low_water = budget / 100 * BUDGET_LOW_WATER_PERCENT;
        let mut holders: Vec<(usize, usize)> = self
            .endpoints
            .iter()
            .filter_map(|(key, endpoint)| match endpoint {
                Endpoint::Client(connection)
                    if connection.accounted_bytes > EVICTION_CANDIDATE_MIN_BYTES =>
                {
                    Some((connection.accounted_bytes, key))
                }
                _ => None,
            })
            .collect();
        holders.sort_unstable_by(|a, b| b.cmp(a));
        let before = self.client_buffer_bytes;
        let mut closed = 0;
        for (_, key) in holders {
            if self.client_buffer_bytes <= low_water {
                break;
            }
            self.close(key);
            closed += 1;
        }
        if let Some(suppressed) = self.budget_log.admit(self.now_ms()) {
            let freed = before - self.client_buffer_bytes;
            let fields = [
                ("budget_bytes", Value::U64(budget as u64)),
                ("closed", Value::U64(closed)),
                ("freed_bytes", Value::U64(freed as u64)),
            ];
            logger::log_event(
                Level::Warn,
                Some("client_buffer_budget"),
                &format_args!(
                    "client buffers reached --max-client-buffer-bytes ({budget} bytes): closed \
                     {closed} connections holding the most, {freed} bytes freed{}",
                    throttle::suppressed_note(suppressed)
                ),
                &fields,
            );
        }
    }
}
