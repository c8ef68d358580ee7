//! `kvstore-bench` flags to validated [`Options`]; every default and bound.
//!
//! Out-of-range values are refused by clap itself, so a bad flag always
//! exits with status 2 and a usage message. The TLS and password flags are
//! the client tools' shared [`CredentialArgs`]; the files they name are read
//! by [`BenchArgs::into_options`], whose error also means status 2.

use std::time::Duration;

use clap::Parser;
use clap::builder::RangedU64ValueParser;

use super::wire::Protocol;
use super::workload::MAX_KEYSPACE;
use crate::client::credentials::{CredentialArgs, Credentials, CredentialsError};

pub const DEFAULT_ADDRESS: &str = "127.0.0.1:7001";
pub const DEFAULT_CLIENTS: usize = 50;
pub const MAX_CLIENTS: u64 = 10_000;
pub const MAX_PIPELINE: u64 = 4096;
pub const DEFAULT_DURATION: Duration = Duration::from_secs(10);
/// The longest phase accepted (a day), in seconds.
pub const MAX_SECONDS: f64 = 86_400.0;
pub const DEFAULT_KEYSPACE: u64 = 100_000;
pub const DEFAULT_VALUE_SIZE: usize = 100;
/// Below the server's default `--max-line-bytes` (1 MiB) with the command
/// and key, and below Redis's limits.
pub const MAX_VALUE_SIZE: u64 = 1_000_000;

/// kvstore-bench: drives a kvstore server (or Redis, with --proto resp)
/// with pipelined GETs and PUTs from one event loop and reports throughput
/// and latency percentiles.
///
/// Against kvstore it first finds the leader (following NOT_LEADER), then
/// optionally preloads every key, warms up, and measures. Prints a table
/// and one `RESULT key=value ...` line on stdout; progress goes to stderr.
/// Exit status: 0 after a completed run (errors, if any, are reported),
/// 1 when the run could not be made (no connection, all lost, server
/// stalled, TLS or password refused), 2 for invalid flags (a file a flag
/// names included).
#[derive(Debug, Parser)]
#[command(
    name = "kvstore-bench",
    version,
    after_help = "Environment:\n  KVSTORE_AUTH  the password, when --password-file is not given"
)]
pub struct BenchArgs {
    /// Any node of the server, as host:port.
    #[arg(long, value_name = "HOST:PORT", default_value = DEFAULT_ADDRESS)]
    pub addr: String,
    /// Connections, all driven by one thread.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_CLIENTS,
          value_parser = RangedU64ValueParser::<usize>::new().range(1..=MAX_CLIENTS))]
    pub clients: usize,
    /// Requests in flight per connection.
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = RangedU64ValueParser::<usize>::new().range(1..=MAX_PIPELINE))]
    pub pipeline: usize,
    /// Length of the measured run in seconds (fractions allowed) [default: 10].
    #[arg(long, value_name = "SECS", value_parser = parse_positive_seconds)]
    pub duration: Option<Duration>,
    /// Measure exactly this many requests instead of a duration; wins over
    /// --duration if both are given.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub requests: Option<u64>,
    /// Fraction of requests that are GETs (the rest are PUTs), 0 to 1.
    #[arg(long, value_name = "F", default_value_t = 0.5, value_parser = parse_ratio)]
    pub get_ratio: f64,
    /// Number of distinct keys (`key:00000000` ...), chosen uniformly.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_KEYSPACE,
          value_parser = clap::value_parser!(u64).range(1..=MAX_KEYSPACE))]
    pub keyspace: u64,
    /// Bytes per PUT value.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_VALUE_SIZE,
          value_parser = RangedU64ValueParser::<usize>::new().range(0..=MAX_VALUE_SIZE))]
    pub value_size: usize,
    /// Before measuring, PUT every key once (pipelined), so GETs hit.
    #[arg(long)]
    pub preload: bool,
    /// Wire protocol: kvstore's line protocol, or RESP2 (Redis SET/GET).
    #[arg(long, value_enum, default_value_t = Protocol::Line)]
    pub proto: Protocol,
    /// Seed of the key and operation choice; each connection derives its own stream.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub seed: u64,
    /// Seconds of load before measuring (not counted); 0 skips it.
    #[arg(long, value_name = "SECS", default_value = "1", value_parser = parse_seconds)]
    pub warmup: Duration,
    #[command(flatten)]
    pub credentials: CredentialArgs,
}

/// How long the measured run lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunLimit {
    Requests(u64),
    Duration(Duration),
}

/// A validated run configuration.
#[derive(Debug, Clone)]
pub struct Options {
    /// TLS settings and the password for every connection, probe included.
    pub credentials: Credentials,
    pub address: String,
    pub clients: usize,
    pub pipeline: usize,
    pub limit: RunLimit,
    pub get_ratio: f64,
    pub keyspace: u64,
    pub value_size: usize,
    pub preload: bool,
    pub protocol: Protocol,
    pub seed: u64,
    pub warmup: Duration,
}

impl BenchArgs {
    /// The options, with the files the credential flags name read (and
    /// `KVSTORE_AUTH` without `--password-file`).
    pub fn into_options(self) -> Result<Options, CredentialsError> {
        let credentials = self.credentials.load()?;
        let limit = match (self.requests, self.duration) {
            (Some(requests), _) => RunLimit::Requests(requests),
            (None, Some(duration)) => RunLimit::Duration(duration),
            (None, None) => RunLimit::Duration(DEFAULT_DURATION),
        };
        Ok(Options {
            credentials,
            address: self.addr,
            clients: self.clients,
            pipeline: self.pipeline,
            limit,
            get_ratio: self.get_ratio,
            keyspace: self.keyspace,
            value_size: self.value_size,
            preload: self.preload,
            protocol: self.proto,
            seed: self.seed,
            warmup: self.warmup,
        })
    }
}

/// Seconds, fractions allowed, `0..=MAX_SECONDS`.
fn parse_seconds(text: &str) -> Result<Duration, String> {
    let seconds: f64 = text
        .parse()
        .map_err(|_| format!("'{text}' is not a number of seconds"))?;
    if !(0.0..=MAX_SECONDS).contains(&seconds) {
        return Err(format!(
            "{seconds} is out of range (0..={MAX_SECONDS} seconds)"
        ));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// Like [`parse_seconds`], but zero is refused.
fn parse_positive_seconds(text: &str) -> Result<Duration, String> {
    let duration = parse_seconds(text)?;
    if duration.is_zero() {
        return Err("must be more than 0 seconds".to_owned());
    }
    Ok(duration)
}

/// A fraction in `0..=1`.
fn parse_ratio(text: &str) -> Result<f64, String> {
    let ratio: f64 = text
        .parse()
        .map_err(|_| format!("'{text}' is not a number"))?;
    if !(0.0..=1.0).contains(&ratio) {
        return Err(format!("{ratio} is out of range (0..=1)"));
    }
    Ok(ratio)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(arguments: &[&str]) -> Result<Options, clap::Error> {
        let mut all = vec!["kvstore-bench"];
        all.extend_from_slice(arguments);
        let arguments = BenchArgs::try_parse_from(all)?;
        Ok(arguments.into_options().expect("no credential flags"))
    }

    #[test]
    fn defaults_match_the_documentation() {
        let options = parse(&[]).unwrap();
        assert_eq!(options.address, "127.0.0.1:7001");
        assert_eq!(options.clients, 50);
        assert_eq!(options.pipeline, 1);
        assert_eq!(options.limit, RunLimit::Duration(Duration::from_secs(10)));
        assert_eq!(options.get_ratio, 0.5);
        assert_eq!(options.keyspace, 100_000);
        assert_eq!(options.value_size, 100);
        assert!(!options.preload);
        assert_eq!(options.protocol, Protocol::Line);
        assert_eq!(options.warmup, Duration::from_secs(1));
    }

    #[test]
    fn requests_win_over_duration() {
        let options = parse(&["--duration", "0.5", "--requests", "10"]).unwrap();
        assert_eq!(options.limit, RunLimit::Requests(10));
        let options = parse(&["--duration", "0.5"]).unwrap();
        assert_eq!(
            options.limit,
            RunLimit::Duration(Duration::from_millis(500))
        );
    }

    #[test]
    fn out_of_range_flags_are_refused() {
        for arguments in [
            &["--clients", "0"][..],
            &["--pipeline", "0"],
            &["--get-ratio", "1.5"],
            &["--get-ratio", "-0.1"],
            &["--get-ratio", "NaN"],
            &["--keyspace", "0"],
            &["--keyspace", "100000001"],
            &["--value-size", "1000001"],
            &["--duration", "0"],
            &["--duration", "-1"],
            &["--requests", "0"],
            &["--warmup", "x"],
            &["--proto", "http"],
            &["--frobnicate"],
        ] {
            assert!(parse(arguments).is_err(), "{arguments:?} accepted");
        }
    }
}
