//! `kvstore-bench`, the load generator: many connections, one thread.
//!
//! A run finds where to send ([`leader`]: follow `NOT_LEADER` from
//! `--addr`), opens every connection on one `mio::Poll` (`driver`), then
//! runs its phases: an optional preload that PUTs every key once, a warmup,
//! and the measured run, each drained before the next begins. Requests come
//! from a seeded [`workload`]; they are encoded and replies are parsed by
//! [`wire`] for kvstore's line protocol or RESP2 (so the same tool drives
//! Redis); each `connection` keeps exactly `--pipeline` requests in
//! flight and times each from the moment its bytes are queued to the moment
//! its reply is parsed. The [`report`] holds the counts, the latency
//! histogram, and the output formats.
//!
//! The generator has to be cheaper per request than the server it
//! measures, on the same small machine: no allocation and no formatting
//! machinery per request, one read and one write per ready connection per
//! loop turn, TCP_NODELAY, and one clock read per connection turn.
//!
//! With `--tls*` every connection (the leader probe included) speaks TLS
//! through [`crate::net::Transport`], verifying the server by the host of
//! the address it sends to; with a password each first sends `AUTH`, whose
//! reply is consumed while connecting and never measured.

mod connection;
mod driver;
pub mod leader;
pub mod options;
pub mod report;
pub mod wire;
pub mod workload;

use std::fmt;
use std::io::{self, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use crate::client::ClientError;
use crate::security::tls::{self, TlsError};
use driver::{Driver, DriverSettings, Phase, TlsTarget};
pub use options::{BenchArgs, Options, RunLimit};
pub use report::Report;
use report::Tally;
pub use wire::Protocol;
use workload::{Mix, Operation, Source};

/// Requests in flight per connection while preloading, when `--pipeline`
/// is shallower: the preload is setup, not measurement, so it goes fast.
pub const PRELOAD_PIPELINE: usize = 64;

/// Why a run could not be made. Each ends the process with status 1.
#[derive(Debug)]
pub enum BenchError {
    /// `--addr` (or the leader's address) does not resolve.
    Resolve {
        address: String,
        source: io::Error,
    },
    /// The probe that finds the leader failed.
    Leader {
        address: String,
        source: ClientError,
    },
    /// The host of the address sent to cannot name a TLS server.
    ServerName {
        address: String,
        source: Box<TlsError>,
    },
    /// The leader answered the probe with `ERR`.
    ProbeRefused {
        address: String,
        reply: String,
    },
    /// Not one of the connections could be made.
    NoConnection {
        address: SocketAddr,
        attempts: usize,
        first_error: String,
    },
    /// Every connection failed during the run.
    AllConnectionsLost {
        first_error: String,
    },
    /// Requests were in flight and no reply came for too long.
    Stalled {
        outstanding: usize,
        waited: Duration,
    },
    Poll(io::Error),
}

impl fmt::Display for BenchError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BenchError::Resolve { address, source } => {
                write!(formatter, "cannot resolve {address}: {source}")
            }
            BenchError::Leader { address, source } => {
                write!(formatter, "cannot find the leader from {address}: {source}")
            }
            BenchError::ServerName { address, source } => {
                write!(formatter, "cannot verify TLS with {address}: {source}")
            }
            BenchError::ProbeRefused { address, reply } => {
                write!(formatter, "{address} refused the probe request: {reply}")
            }
            BenchError::NoConnection {
                address,
                attempts,
                first_error,
            } => write!(
                formatter,
                "none of {attempts} connections to {address} could be made: {first_error}"
            ),
            BenchError::AllConnectionsLost { first_error } => write!(
                formatter,
                "every connection was lost before the run completed; first: {first_error}"
            ),
            BenchError::Stalled {
                outstanding,
                waited,
            } => write!(
                formatter,
                "{outstanding} requests got no reply within {} s; the server stalled",
                waited.as_secs()
            ),
            BenchError::Poll(source) => write!(formatter, "event loop failed: {source}"),
        }
    }
}

impl std::error::Error for BenchError {}

/// Prints `kvstore-bench: <message>` on stderr in one write.
fn note(message: fmt::Arguments<'_>) {
    let line = format!("kvstore-bench: {message}\n");
    let _ = io::stderr().write_all(line.as_bytes());
}

/// Runs the whole benchmark: find the leader, connect, preload, warm up,
/// measure.
pub fn run(options: &Options) -> Result<Report, BenchError> {
    let address = choose_address(options)?;
    let tls = tls_target(options, &address)?;
    let mut driver = Driver::connect(driver_settings(options, resolve(&address)?, tls))?;
    let failures = driver.failures();
    if failures.count > 0 {
        note(format_args!(
            "{} of {} connections failed ({}); running with {}",
            failures.count,
            options.clients,
            failures.first.as_deref().unwrap_or_default(),
            driver.live()
        ));
    }
    let mix = Mix::new(options.get_ratio, options.keyspace);
    if options.preload {
        preload(&mut driver, options)?;
    }
    if !options.warmup.is_zero() {
        warm_up(&mut driver, mix, options)?;
    }
    let (tally, elapsed) = measure(&mut driver, mix, options)?;
    Ok(Report {
        address,
        protocol: options.protocol,
        clients: options.clients,
        pipeline: options.pipeline,
        get_ratio: options.get_ratio,
        keyspace: options.keyspace,
        value_size: options.value_size,
        seconds: elapsed.as_secs_f64(),
        tally,
        connection_failures: driver.failures().count,
        first_connection_error: driver.failures().first.clone(),
    })
}

/// The leader, for kvstore; `--addr` itself for RESP (Redis has no leader).
fn choose_address(options: &Options) -> Result<String, BenchError> {
    if options.protocol == Protocol::Resp {
        note(format_args!("sending to {}", options.address));
        return Ok(options.address.clone());
    }
    let probe = if options.get_ratio < 1.0 {
        Operation::Put
    } else {
        Operation::Get
    };
    let leader = leader::find_leader(
        &options.address,
        probe,
        options.value_size,
        &options.credentials,
    )?;
    if leader.redirected {
        note(format_args!(
            "{} is not the leader; sending to the leader at {}",
            options.address, leader.address
        ));
    } else {
        note(format_args!("sending to {}", leader.address));
    }
    Ok(leader.address)
}

fn resolve(address: &str) -> Result<SocketAddr, BenchError> {
    let resolve_error = |source| BenchError::Resolve {
        address: address.to_owned(),
        source,
    };
    address
        .to_socket_addrs()
        .map_err(resolve_error)?
        .next()
        .ok_or_else(|| resolve_error(io::Error::new(io::ErrorKind::NotFound, "no address found")))
}

/// With TLS, its settings and the name the server at `address` must carry.
fn tls_target(options: &Options, address: &str) -> Result<Option<TlsTarget>, BenchError> {
    let Some(config) = &options.credentials.tls else {
        return Ok(None);
    };
    let server_name =
        tls::server_name_from_host_and_port(address).map_err(|source| BenchError::ServerName {
            address: address.to_owned(),
            source: Box::new(source),
        })?;
    Ok(Some(TlsTarget {
        config: config.clone(),
        server_name,
    }))
}

fn driver_settings(
    options: &Options,
    address: SocketAddr,
    tls: Option<TlsTarget>,
) -> DriverSettings {
    DriverSettings {
        address,
        tls,
        password: options.credentials.password.clone(),
        clients: options.clients,
        deepest_pipeline: options.pipeline.max(preload_pipeline(options)),
        protocol: options.protocol,
        value_size: options.value_size,
        seed: options.seed,
    }
}

/// The preload's pipeline depth (0 without a preload).
fn preload_pipeline(options: &Options) -> usize {
    if options.preload {
        options.pipeline.max(PRELOAD_PIPELINE)
    } else {
        0
    }
}

fn preload(driver: &mut Driver, options: &Options) -> Result<(), BenchError> {
    let keyspace = options.keyspace;
    let mut phase = Phase {
        label: "preload",
        pipeline: preload_pipeline(options),
        source: Source::preload(keyspace),
        deadline: None,
        total: Some(keyspace),
        tally: Tally::new(false),
    };
    let elapsed = driver.run_phase(&mut phase)?;
    note(format_args!(
        "preloaded {} keys in {:.1} s",
        phase.tally.completed,
        elapsed.as_secs_f64()
    ));
    warn_about_errors("preload", &phase.tally);
    Ok(())
}

fn warm_up(driver: &mut Driver, mix: Mix, options: &Options) -> Result<(), BenchError> {
    let mut phase = Phase {
        label: "warmup",
        pipeline: options.pipeline,
        source: Source::mixed(mix, None),
        deadline: Some(Instant::now() + options.warmup),
        total: None,
        tally: Tally::new(false),
    };
    driver.run_phase(&mut phase)?;
    warn_about_errors("warmup", &phase.tally);
    Ok(())
}

/// The measured phase: its replies and its length.
fn measure(
    driver: &mut Driver,
    mix: Mix,
    options: &Options,
) -> Result<(Tally, Duration), BenchError> {
    let (requests, deadline, total) = match options.limit {
        RunLimit::Requests(requests) => (Some(requests), None, Some(requests)),
        RunLimit::Duration(duration) => (None, Some(Instant::now() + duration), None),
    };
    let mut phase = Phase {
        label: "run",
        pipeline: options.pipeline,
        source: Source::mixed(mix, requests),
        deadline,
        total,
        tally: Tally::new(true),
    };
    let elapsed = driver.run_phase(&mut phase)?;
    Ok((phase.tally, elapsed))
}

/// Error replies outside the measured phase are not in the report; say so.
fn warn_about_errors(label: &str, tally: &Tally) {
    if tally.errors() > 0 {
        note(format_args!(
            "{label}: {} error replies; first: {}",
            tally.errors(),
            tally.first_error_reply.as_deref().unwrap_or_default()
        ));
    }
}
