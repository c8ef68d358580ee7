//! The reactor's counters: the one source of the numbers `INFO` (RESP and
//! the line protocol, through [`crate::node::ServerFacts`]) and `/metrics`
//! report, so the two can never disagree.
//!
//! Counting is on the hot path (every request), so it is a few array
//! increments: requests are counted by a command slot fixed when the
//! counters are made (the RESP command table, then the line protocol's
//! own commands, then `unknown`) and an [`Outcome`] index. Nothing here
//! allocates after [`Metrics::new`], reads a clock or performs I/O: the
//! reactor measures durations and hands them in.

use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::protocol::command_table::{self, COMMANDS};
use crate::protocol::{COMMAND_NAMES, Outcome, Request, command_index_of};

/// Upper bounds (seconds) of the log sync latency buckets: 100 µs (a
/// write-back cache) to 2.5 s (a disk in trouble).
pub const LOG_SYNC_SECONDS_BOUNDS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// Upper bounds of the records-per-log-write buckets (group commit sizes).
pub const LOG_BATCH_RECORDS_BOUNDS: [f64; 14] = [
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0, 16384.0, 65536.0,
];

/// The label of requests whose command is none the server knows.
pub const UNKNOWN_COMMAND: &str = "unknown";

/// Everything the reactor counts.
#[derive(Debug)]
pub struct Metrics {
    /// Connections accepted on the client port (peers' included: they
    /// arrive as clients), refused ones too.
    pub connections_accepted: u64,
    /// Connections refused at once: over `--max-clients`.
    pub connections_rejected: u64,
    pub requests: RequestCounters,
    /// How long each sync of the log took (fdatasync of every segment
    /// written, and the directory when it changed): on the syncer thread
    /// under `--fsync always`, on the loop under `interval`.
    pub log_sync_seconds: Histogram,
    /// Records per log write (one turn's group commit).
    pub log_batch_records: Histogram,
    /// From a ReadIndex round sent to a majority confirming it (the wait a
    /// linearizable read on a cluster leader adds), seen at turn ends.
    pub read_round_seconds: Histogram,
    /// Rounds sent and not yet confirmed, with when they were first seen.
    pending_rounds: VecDeque<(u64, Instant)>,
    last_sent_round: u64,
    /// When the process started, in seconds since the Unix epoch.
    pub start_time_s: f64,
}

/// Rounds remembered while waiting for their confirmation: a leader that
/// lost its majority never confirms them, and they must not pile up.
const MAX_PENDING_ROUNDS: usize = 1024;

impl Metrics {
    pub fn new() -> Self {
        let start_time_s = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |since| since.as_secs_f64());
        Metrics {
            connections_accepted: 0,
            connections_rejected: 0,
            requests: RequestCounters::new(),
            log_sync_seconds: Histogram::new(&LOG_SYNC_SECONDS_BOUNDS),
            log_batch_records: Histogram::new(&LOG_BATCH_RECORDS_BOUNDS),
            read_round_seconds: Histogram::new(&LOG_SYNC_SECONDS_BOUNDS),
            pending_rounds: VecDeque::new(),
            last_sent_round: 0,
            start_time_s,
        }
    }

    /// A sync of the log finished after `duration`.
    pub fn log_synced(&mut self, duration: Duration) {
        self.log_sync_seconds.observe(duration.as_secs_f64());
    }

    /// At the end of a turn: the core has sent read rounds up to `sent` and a
    /// majority confirmed those up to `confirmed`; each newly confirmed one
    /// is observed with the time since it was first seen sent.
    pub fn note_read_rounds(&mut self, sent: u64, confirmed: u64, now: Instant) {
        if sent > self.last_sent_round {
            self.last_sent_round = sent;
            if self.pending_rounds.len() == MAX_PENDING_ROUNDS {
                self.pending_rounds.pop_front();
            }
            self.pending_rounds.push_back((sent, now));
        }
        while let Some(&(round, sent_at)) = self.pending_rounds.front() {
            if round > confirmed {
                break;
            }
            self.pending_rounds.pop_front();
            let waited = now.saturating_duration_since(sent_at);
            self.read_round_seconds.observe(waited.as_secs_f64());
        }
    }

    /// Log syncs completed (each one observed in [`Metrics::log_synced`]).
    pub fn log_syncs(&self) -> u64 {
        self.log_sync_seconds.count()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Where a command's counters are (see [`RequestCounters`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandSlot(usize);

/// Requests executed, by command and [`Outcome`].
#[derive(Debug)]
pub struct RequestCounters {
    /// Each slot's label: the RESP table's names, then the line commands
    /// it lacks, then [`UNKNOWN_COMMAND`].
    names: Vec<&'static str>,
    /// Counts by slot, then by [`Outcome::index`].
    counts: Vec<[u64; Outcome::ALL.len()]>,
    /// The slot of each line command, by [`Request::command_index`].
    line_slots: [CommandSlot; COMMAND_NAMES.len()],
    /// Counts by outcome, all commands together.
    totals: [u64; Outcome::ALL.len()],
}

impl RequestCounters {
    pub fn new() -> Self {
        let mut names: Vec<&'static str> = COMMANDS.iter().map(|spec| spec.name).collect();
        let mut line_slots = [CommandSlot(0); COMMAND_NAMES.len()];
        for (index, name) in COMMAND_NAMES.iter().enumerate() {
            let slot = match names.iter().position(|known| known == name) {
                Some(slot) => slot,
                None => {
                    names.push(name);
                    names.len() - 1
                }
            };
            line_slots[index] = CommandSlot(slot);
        }
        names.push(UNKNOWN_COMMAND);
        RequestCounters {
            counts: vec![[0; Outcome::ALL.len()]; names.len()],
            names,
            line_slots,
            totals: [0; Outcome::ALL.len()],
        }
    }

    fn unknown(&self) -> CommandSlot {
        CommandSlot(self.names.len() - 1)
    }

    /// The slot of a parsed line-protocol request.
    pub fn line_request(&self, request: &Request<'_>) -> CommandSlot {
        self.line_slots[request.command_index()]
    }

    /// The slot of a line that did not parse: its command's if it names
    /// one, else `unknown`.
    pub fn line(&self, line: &[u8]) -> CommandSlot {
        command_index_of(line).map_or(self.unknown(), |index| self.line_slots[index])
    }

    /// The slot of a RESP request named `name` (its first argument).
    pub fn resp(&self, name: &[u8]) -> CommandSlot {
        command_table::position(name).map_or(self.unknown(), CommandSlot)
    }

    /// One request in `slot` was answered with `outcome`.
    pub fn count(&mut self, slot: CommandSlot, outcome: Outcome) {
        self.counts[slot.0][outcome.index()] += 1;
        self.totals[outcome.index()] += 1;
    }

    /// Requests answered with `outcome`, all commands together.
    pub fn total(&self, outcome: Outcome) -> u64 {
        self.totals[outcome.index()]
    }

    /// Every request counted.
    pub fn processed(&self) -> u64 {
        self.totals.iter().sum()
    }

    /// `(command, outcome, count)` for every count above zero, by command
    /// slot then outcome.
    pub fn nonzero(&self) -> impl Iterator<Item = (&'static str, Outcome, u64)> + '_ {
        self.names
            .iter()
            .zip(&self.counts)
            .flat_map(|(name, counts)| {
                Outcome::ALL
                    .iter()
                    .map(move |outcome| (*name, *outcome, counts[outcome.index()]))
            })
            .filter(|(_, _, count)| *count > 0)
    }
}

impl Default for RequestCounters {
    fn default() -> Self {
        Self::new()
    }
}

/// A histogram with fixed bucket bounds, as Prometheus exposes one: how
/// many observations were at most each bound, their count and their sum.
#[derive(Debug, Clone)]
pub struct Histogram {
    /// Upper bounds, increasing; a last bucket (+Inf) takes the rest.
    bounds: &'static [f64],
    /// Observations per bucket (not cumulative), `bounds.len() + 1` of them.
    buckets: Vec<u64>,
    sum: f64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        debug_assert!(bounds.windows(2).all(|pair| pair[0] < pair[1]));
        Histogram {
            bounds,
            buckets: vec![0; bounds.len() + 1],
            sum: 0.0,
        }
    }

    pub fn observe(&mut self, value: f64) {
        let bucket = self.bounds.partition_point(|bound| *bound < value);
        self.buckets[bucket] += 1;
        self.sum += value;
    }

    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    pub fn sum(&self) -> f64 {
        self.sum
    }

    /// `(upper bound, observations at most that)` for each bound, then
    /// `(+Inf, count)`: Prometheus's cumulative buckets.
    pub fn cumulative(&self) -> impl Iterator<Item = (f64, u64)> + '_ {
        let bounds = self.bounds.iter().copied().chain([f64::INFINITY]);
        bounds.zip(&self.buckets).scan(0, |total, (bound, count)| {
            *total += count;
            Some((bound, *total))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::parse;

    #[test]
    fn requests_are_counted_by_command_across_both_protocols() {
        let mut counters = RequestCounters::new();
        let get = counters.line_request(&parse(b"GET k").unwrap());
        assert_eq!(get, counters.resp(b"GeT"), "one label for GET in both");
        counters.count(get, Outcome::Ok);
        counters.count(counters.resp(b"get"), Outcome::Redirect);
        let put = counters.line_request(&parse(b"PUT k v").unwrap());
        counters.count(put, Outcome::Error);
        counters.count(counters.line(b"get a b"), Outcome::Error);
        counters.count(counters.line(b"FROB"), Outcome::Error);
        counters.count(counters.resp(b"frob"), Outcome::Error);
        let counted: Vec<_> = counters.nonzero().collect();
        // By slot (the RESP table first, then the line's own, then
        // unknown), then by outcome.
        assert_eq!(
            counted,
            [
                ("get", Outcome::Ok, 1),
                ("get", Outcome::Error, 1),
                ("get", Outcome::Redirect, 1),
                ("put", Outcome::Error, 1),
                ("unknown", Outcome::Error, 2),
            ]
        );
        assert_eq!(counters.processed(), 6);
        assert_eq!(counters.total(Outcome::Error), 4);
    }

    #[test]
    fn every_line_command_has_a_slot_of_its_own_name() {
        let counters = RequestCounters::new();
        for (index, name) in COMMAND_NAMES.iter().enumerate() {
            let slot = counters.line_slots[index];
            assert_eq!(counters.names[slot.0], *name);
        }
        let unique: std::collections::BTreeSet<_> = counters.names.iter().collect();
        assert_eq!(unique.len(), counters.names.len(), "labels are unique");
    }

    #[test]
    fn a_histogram_counts_each_observation_in_the_first_bucket_that_holds_it() {
        static BOUNDS: [f64; 3] = [1.0, 2.0, 4.0];
        let mut histogram = Histogram::new(&BOUNDS);
        for value in [0.5, 1.0, 1.5, 4.0, 9.0] {
            histogram.observe(value);
        }
        let buckets: Vec<_> = histogram.cumulative().collect();
        assert_eq!(buckets, [(1.0, 2), (2.0, 3), (4.0, 4), (f64::INFINITY, 5)]);
        assert_eq!(histogram.count(), 5);
        assert_eq!(histogram.sum(), 16.0);
    }

    #[test]
    fn a_read_round_is_timed_from_sent_to_confirmed_and_unconfirmed_ones_are_bounded() {
        let mut metrics = Metrics::new();
        let start = Instant::now();
        metrics.note_read_rounds(1, 0, start);
        metrics.note_read_rounds(2, 0, start + Duration::from_millis(1));
        assert_eq!(metrics.read_round_seconds.count(), 0);
        metrics.note_read_rounds(2, 2, start + Duration::from_millis(3));
        assert_eq!(metrics.read_round_seconds.count(), 2);
        // A leader that never hears a majority again: rounds stay bounded.
        for round in 3..3 + 2 * MAX_PENDING_ROUNDS as u64 {
            metrics.note_read_rounds(round, 2, start);
        }
        assert_eq!(metrics.pending_rounds.len(), MAX_PENDING_ROUNDS);
    }
}
