//! Counting replies, the latency histogram, the progress line on stderr,
//! and the final report: a table for people and one `RESULT` line for
//! scripts.

use std::fmt::Write as _;
use std::io::{self, IsTerminal, Write};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::wire::{Protocol, Reply};
use super::workload::Operation;

/// Significant figures the latency histogram keeps.
const LATENCY_SIGNIFICANT_FIGURES: u8 = 3;
/// Latencies above this (one minute, in microseconds) are recorded as this.
const MAX_RECORDED_LATENCY_US: u64 = 60_000_000;
/// How often the progress line is printed.
pub const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);

/// What the replies of one phase said.
#[derive(Debug)]
pub struct Tally {
    /// Replies received, errors included.
    pub completed: u64,
    /// GETs answered `NOT_FOUND` / `$-1`.
    pub misses: u64,
    /// `ERR ...` / `-...` replies.
    pub error_replies: u64,
    /// `NOT_LEADER` replies: the run is pointed at a follower.
    pub not_leader_replies: u64,
    /// Replies that do not answer the request (e.g. a value to a PUT).
    pub unexpected_replies: u64,
    /// The first error, not-leader or unexpected reply, for the report.
    pub first_error_reply: Option<String>,
    /// Microseconds from queueing a request to parsing its reply; only
    /// kept for the measured phase.
    latencies: Option<Histogram<u64>>,
    /// The longest the run waited, with requests outstanding, between one
    /// reply and the next (from any connection): a server that stalls
    /// shows here, however few requests it delays.
    pub max_reply_gap: Duration,
}

impl Tally {
    pub fn new(measure_latency: bool) -> Tally {
        let latencies = measure_latency.then(|| {
            Histogram::new_with_bounds(1, MAX_RECORDED_LATENCY_US, LATENCY_SIGNIFICANT_FIGURES)
                .expect("constant histogram bounds are valid")
        });
        Tally {
            completed: 0,
            misses: 0,
            error_replies: 0,
            not_leader_replies: 0,
            unexpected_replies: 0,
            first_error_reply: None,
            latencies,
            max_reply_gap: Duration::ZERO,
        }
    }

    /// Replies arrived `gap` after the previous ones.
    pub fn note_reply_gap(&mut self, gap: Duration) {
        self.max_reply_gap = self.max_reply_gap.max(gap);
    }

    /// Counts one reply to `operation`.
    pub fn record(&mut self, operation: Operation, reply: Reply<'_>, latency: Duration) {
        self.completed += 1;
        match (operation, reply) {
            (Operation::Put, Reply::Ok) | (Operation::Get, Reply::Value | Reply::Ok) => {}
            (Operation::Get, Reply::Missing) => self.misses += 1,
            (_, Reply::Error(text)) => {
                self.error_replies += 1;
                self.note_first_error(text);
            }
            (_, Reply::NotLeader(text)) => {
                self.not_leader_replies += 1;
                self.note_first_error(text);
            }
            (_, Reply::Other(text)) => {
                self.unexpected_replies += 1;
                self.note_first_error(text);
            }
            (Operation::Put, Reply::Value | Reply::Missing) => {
                self.unexpected_replies += 1;
                self.note_first_error(b"a value or NOT_FOUND in reply to a PUT");
            }
        }
        if let Some(latencies) = &mut self.latencies {
            let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
            latencies.saturating_record(micros);
        }
    }

    fn note_first_error(&mut self, text: &[u8]) {
        if self.first_error_reply.is_none() {
            self.first_error_reply = Some(text.escape_ascii().to_string());
        }
    }

    /// Replies that count as errors.
    pub fn errors(&self) -> u64 {
        self.error_replies + self.not_leader_replies + self.unexpected_replies
    }

    /// The latency at `quantile` in microseconds (0 without samples).
    fn latency_at(&self, quantile: f64) -> u64 {
        self.latencies
            .as_ref()
            .map_or(0, |latencies| latencies.value_at_quantile(quantile))
    }

    fn max_latency(&self) -> u64 {
        self.latencies.as_ref().map_or(0, Histogram::max)
    }
}

/// The outcome of a completed run.
#[derive(Debug)]
pub struct Report {
    /// Where the load went (the leader, after discovery).
    pub address: String,
    pub protocol: Protocol,
    pub clients: usize,
    pub pipeline: usize,
    pub get_ratio: f64,
    pub keyspace: u64,
    pub value_size: usize,
    /// The measured phase's length, from its first request to its last reply.
    pub seconds: f64,
    /// The measured phase's replies.
    pub tally: Tally,
    /// Connections refused, reset or closed, in any phase.
    pub connection_failures: u64,
    pub first_connection_error: Option<String>,
}

/// The percentiles the report shows.
struct Latencies {
    p50: u64,
    p99: u64,
    p999: u64,
    max: u64,
}

impl Report {
    /// Error replies plus failed connections.
    pub fn errors(&self) -> u64 {
        self.tally.errors() + self.connection_failures
    }

    pub fn ops(&self) -> u64 {
        self.tally.completed
    }

    pub fn ops_per_sec(&self) -> f64 {
        if self.seconds > 0.0 {
            self.ops() as f64 / self.seconds
        } else {
            0.0
        }
    }

    fn max_reply_gap_us(&self) -> u64 {
        u64::try_from(self.tally.max_reply_gap.as_micros()).unwrap_or(u64::MAX)
    }

    fn latencies(&self) -> Latencies {
        Latencies {
            p50: self.tally.latency_at(0.50),
            p99: self.tally.latency_at(0.99),
            p999: self.tally.latency_at(0.999),
            max: self.tally.max_latency(),
        }
    }

    /// The table for people, then the `RESULT` line.
    pub fn write_to(&self, out: &mut impl Write) -> io::Result<()> {
        out.write_all(self.table().as_bytes())?;
        writeln!(out, "{}", self.result_line())
    }

    /// A few lines: the setup, then one measure per line.
    pub fn table(&self) -> String {
        let latencies = self.latencies();
        let mut table = String::new();
        // Writing to a String cannot fail.
        let _ = writeln!(
            table,
            "kvstore-bench: {} ({} protocol), {} clients x pipeline {}, get ratio {}, {} keys, {}-byte values",
            self.address,
            self.protocol,
            self.clients,
            self.pipeline,
            self.get_ratio,
            self.keyspace,
            self.value_size
        );
        let rows = [
            ("ops", self.ops().to_string()),
            ("seconds", format!("{:.3}", self.seconds)),
            ("ops/s", format!("{:.0}", self.ops_per_sec())),
            ("p50", format!("{} µs", latencies.p50)),
            ("p99", format!("{} µs", latencies.p99)),
            ("p99.9", format!("{} µs", latencies.p999)),
            ("max", format!("{} µs", latencies.max)),
            ("max gap", format!("{} µs", self.max_reply_gap_us())),
            ("errors", self.describe_errors()),
            ("GET misses", self.tally.misses.to_string()),
        ];
        for (name, value) in rows {
            let _ = writeln!(table, "  {name:<12}{value}");
        }
        table
    }

    fn describe_errors(&self) -> String {
        let errors = self.errors();
        if errors == 0 {
            return "0".to_owned();
        }
        let tally = &self.tally;
        let mut text = format!(
            "{errors} ({} ERR, {} NOT_LEADER, {} unexpected replies, {} failed connections)",
            tally.error_replies,
            tally.not_leader_replies,
            tally.unexpected_replies,
            self.connection_failures
        );
        if let Some(reply) = &tally.first_error_reply {
            let _ = write!(text, "; first reply: {reply}");
        }
        if let Some(error) = &self.first_connection_error {
            let _ = write!(text, "; first connection error: {error}");
        }
        text
    }

    /// `RESULT key=value ...`, one line, for scripts.
    pub fn result_line(&self) -> String {
        let latencies = self.latencies();
        format!(
            "RESULT ops={} seconds={:.3} ops_per_sec={:.0} p50_us={} p99_us={} p999_us={} \
             max_gap_us={} errors={} clients={} pipeline={} proto={} get_ratio={} value_size={}",
            self.ops(),
            self.seconds,
            self.ops_per_sec(),
            latencies.p50,
            latencies.p99,
            latencies.p999,
            self.max_reply_gap_us(),
            self.errors(),
            self.clients,
            self.pipeline,
            self.protocol,
            self.get_ratio,
            self.value_size
        )
    }
}

/// The progress line of one phase on stderr, about once a second:
/// overwritten in place on a terminal, one line per tick otherwise.
pub struct Progress {
    label: &'static str,
    /// The number of requests the phase will send, when known.
    total: Option<u64>,
    terminal: bool,
    started: Instant,
    last_tick: Instant,
    last_completed: u64,
    printed: bool,
}

impl Progress {
    pub fn new(label: &'static str, total: Option<u64>, now: Instant) -> Progress {
        Progress {
            label,
            total,
            terminal: io::stderr().is_terminal(),
            started: now,
            last_tick: now,
            last_completed: 0,
            printed: false,
        }
    }

    /// Time left until the next line is due.
    pub fn until_next(&self, now: Instant) -> Duration {
        (self.last_tick + PROGRESS_INTERVAL).saturating_duration_since(now)
    }

    /// Prints a line if one is due.
    pub fn tick(&mut self, now: Instant, completed: u64) {
        let since_last = now.saturating_duration_since(self.last_tick);
        if since_last < PROGRESS_INTERVAL {
            return;
        }
        let rate = (completed - self.last_completed) as f64 / since_last.as_secs_f64();
        let elapsed = now.saturating_duration_since(self.started);
        let line = progress_line(self.label, elapsed, completed, self.total, rate);
        let framed = if self.terminal {
            format!("\r{line}\x1b[K")
        } else {
            format!("{line}\n")
        };
        // Progress is a courtesy: a closed stderr must not stop the run.
        let _ = io::stderr().write_all(framed.as_bytes());
        self.printed = true;
        self.last_tick = now;
        self.last_completed = completed;
    }

    /// Ends the overwritten line, so later output starts on its own line.
    pub fn finish(&self) {
        if self.terminal && self.printed {
            let _ = io::stderr().write_all(b"\n");
        }
    }
}

/// `run  3.0 s  123456 ops  41234 ops/s`, with `/total` when known.
fn progress_line(
    label: &str,
    elapsed: Duration,
    completed: u64,
    total: Option<u64>,
    rate: f64,
) -> String {
    let done = match total {
        Some(total) => format!("{completed}/{total}"),
        None => completed.to_string(),
    };
    format!(
        "{label:<8}{:>7.1} s  {done} ops  {rate:.0} ops/s",
        elapsed.as_secs_f64()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const MILLISECOND: Duration = Duration::from_millis(1);

    fn report(tally: Tally, seconds: f64) -> Report {
        Report {
            address: "127.0.0.1:7001".to_owned(),
            protocol: Protocol::Line,
            clients: 4,
            pipeline: 8,
            get_ratio: 0.5,
            keyspace: 1000,
            value_size: 100,
            seconds,
            tally,
            connection_failures: 0,
            first_connection_error: None,
        }
    }

    #[test]
    fn replies_are_classified_by_the_request_they_answer() {
        let mut tally = Tally::new(false);
        tally.record(Operation::Put, Reply::Ok, MILLISECOND);
        tally.record(Operation::Get, Reply::Value, MILLISECOND);
        tally.record(Operation::Get, Reply::Missing, MILLISECOND);
        assert_eq!((tally.completed, tally.misses, tally.errors()), (3, 1, 0));
        tally.record(Operation::Put, Reply::Error(b"ERR x"), MILLISECOND);
        tally.record(
            Operation::Get,
            Reply::NotLeader(b"NOT_LEADER -1"),
            MILLISECOND,
        );
        tally.record(Operation::Put, Reply::Value, MILLISECOND);
        tally.record(Operation::Get, Reply::Other(b":1"), MILLISECOND);
        assert_eq!(tally.completed, 7);
        assert_eq!(tally.error_replies, 1);
        assert_eq!(tally.not_leader_replies, 1);
        assert_eq!(tally.unexpected_replies, 2);
        assert_eq!(tally.first_error_reply.as_deref(), Some("ERR x"));
    }

    #[test]
    fn the_result_line_carries_every_key() {
        let mut tally = Tally::new(true);
        for micros in 1..=1000 {
            tally.record(Operation::Put, Reply::Ok, Duration::from_micros(micros));
        }
        tally.note_reply_gap(Duration::from_micros(1200));
        tally.note_reply_gap(Duration::from_micros(300));
        let line = report(tally, 2.0).result_line();
        assert_eq!(
            line,
            "RESULT ops=1000 seconds=2.000 ops_per_sec=500 p50_us=500 p99_us=990 p999_us=999 \
             max_gap_us=1200 errors=0 clients=4 pipeline=8 proto=line get_ratio=0.5 value_size=100"
        );
    }

    #[test]
    fn the_table_explains_errors() {
        let mut tally = Tally::new(true);
        tally.record(
            Operation::Put,
            Reply::NotLeader(b"NOT_LEADER 3 h:1"),
            MILLISECOND,
        );
        let mut report = report(tally, 1.0);
        report.connection_failures = 1;
        report.first_connection_error = Some("connection reset".to_owned());
        let table = report.table();
        assert!(table.contains("ops         1\n"), "{table}");
        assert!(
            table.contains(
                "errors      2 (0 ERR, 1 NOT_LEADER, 0 unexpected replies, 1 failed connections); \
                 first reply: NOT_LEADER 3 h:1; first connection error: connection reset"
            ),
            "{table}"
        );
        assert!(report.result_line().contains(" errors=2 "));
    }

    #[test]
    fn progress_lines_read_well() {
        assert_eq!(
            progress_line("run", Duration::from_millis(3000), 123_456, None, 41_234.4),
            "run         3.0 s  123456 ops  41234 ops/s"
        );
        assert_eq!(
            progress_line("preload", Duration::from_millis(1500), 50, Some(100), 50.0),
            "preload     1.5 s  50/100 ops  50 ops/s"
        );
    }
}
