//! kvstore-server: parse flags, recover the data directory, run the reactor.
//!
//! Exit codes: 0 after a clean shutdown (SIGINT/SIGTERM), 1 when the server
//! cannot start or must stop (data dir, corrupt log or snapshot, bind, log
//! write failure), 2 for invalid flags.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use kvstore::config::{Config, ServerArgs};
use kvstore::logger;
use kvstore::net::Server;
use kvstore::net::descriptor_budget::{self, DescriptorNeeds};
use kvstore::node::NodeConfig;
use kvstore::security::settings::Settings;
use kvstore::startup::{self, Loaded};

fn main() -> ExitCode {
    let config = match ServerArgs::parse().into_config() {
        Ok(config) => config,
        Err(error) => {
            kvstore::log_error!("{error}");
            return ExitCode::from(2);
        }
    };
    let settings = logger::Settings {
        node: Some(config.id),
        level: config.log_level,
        format: config.log_format,
    };
    logger::init(settings).expect("the logger is set up once, here");
    match run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            kvstore::log_error!("{message}");
            ExitCode::from(1)
        }
    }
}

fn run(mut config: Config) -> Result<(), String> {
    let started = Instant::now();
    let settings = Settings::load(
        config.cluster_secret_file.as_deref(),
        config.requirepass_file.as_deref(),
        config.tls.as_ref(),
    )
    .map_err(|e| e.to_string())?;
    warn_about_exposure(&config);
    // Election jitter must differ between processes; std's hasher seed is random.
    let seed = RandomState::new().hash_one(config.id);
    let node_config = NodeConfig::from_config(&config, seed);
    let (node, log, loaded) =
        startup::open(&config.data_dir, &node_config, config.log_segment_bytes)
            .map_err(|e| e.to_string())?;
    let asked_max_clients = config.max_clients;
    config.max_clients = fit_open_file_limit(&config, log.segment_count())?;
    let mut server =
        Server::bind(config.clone(), settings, node, log).map_err(|e| e.to_string())?;
    kvstore::log_info!(
        "node {} listening on {} (data dir {}, fsync {}, {} peers{}, {}{}, {}, snapshots every {}; \
         {}; started in {} ms)",
        config.id,
        server.local_addr(),
        config.data_dir.display(),
        config.fsync,
        config.peers.len(),
        describe_peer_authentication(&config),
        describe_client_authentication(&config),
        describe_lowered_max_clients(asked_max_clients, config.max_clients),
        describe_memory_limit(&config),
        describe_threshold(config.snapshot_log_bytes),
        describe_loaded(&loaded),
        started.elapsed().as_millis(),
    );
    if let Some(address) = server.metrics_addr() {
        kvstore::log_info!(
            "serving metrics on http://{address}/metrics and health on http://{address}/health"
        );
    }
    server.run().map_err(|e| e.to_string())
}

/// Raises the open-file limit for `--max-clients`, the peers, the log's
/// `log_segments` and the server's own files; returns the max clients that
/// fit, saying on stderr why if fewer than asked.
fn fit_open_file_limit(config: &Config, log_segments: usize) -> Result<usize, String> {
    let needs = DescriptorNeeds {
        max_clients: config.max_clients,
        peers: config.peers.len(),
        log_segments,
        metrics: config.metrics_addr.is_some(),
    };
    let plan = descriptor_budget::fit_open_file_limit(needs).map_err(|e| e.to_string())?;
    if let Some(warning) = &plan.warning {
        kvstore::log_warn!("{warning}");
    } else if plan.soft_limit > plan.soft_limit_before {
        kvstore::log_info!(
            "raised the open-file limit (ulimit -n) from {} to {} for --max-clients {}",
            plan.soft_limit_before,
            plan.soft_limit,
            config.max_clients
        );
    }
    Ok(plan.max_clients)
}

fn describe_lowered_max_clients(asked: usize, effective: usize) -> String {
    if effective < asked {
        format!(", max clients {effective} (lowered from {asked} to fit the open-file limit)")
    } else {
        String::new()
    }
}

fn describe_peer_authentication(config: &Config) -> &'static str {
    match (config.peers.is_empty(), config.peers_authenticated()) {
        (true, _) => "",
        (false, true) => " authenticated by the cluster secret",
        (false, false) => " NOT authenticated (no --cluster-secret-file: loopback only)",
    }
}

fn describe_memory_limit(config: &Config) -> String {
    match config.max_memory_bytes {
        Some(bytes) => format!("max memory {bytes} bytes"),
        None => "no memory limit (set --max-memory-bytes)".to_string(),
    }
}

fn describe_client_authentication(config: &Config) -> &'static str {
    match config.requirepass_file {
        Some(_) => "clients must AUTH",
        None => "no client password",
    }
}

/// Redis's protected mode refuses clients of a server that listens beyond
/// loopback without a password; kvstore serves them and says so, once, at
/// start (docs/SECURITY.md).
fn warn_about_exposure(config: &Config) {
    if config.requirepass_file.is_none() && !config.listen.ip().is_loopback() {
        kvstore::log_warn!(
            "listening on {} without --requirepass-file: anyone who can reach this \
             port can read, write and delete every key",
            config.listen
        );
    }
}

fn describe_threshold(snapshot_log_bytes: u64) -> String {
    match snapshot_log_bytes {
        0 => "never (--snapshot-log-bytes 0)".to_string(),
        bytes => format!("{bytes} log bytes"),
    }
}

/// What was loaded: the snapshot, then the log after it.
fn describe_loaded(loaded: &Loaded) -> String {
    let snapshot = match loaded.snapshot {
        Some((point, keys)) => format!(
            "snapshot index {} with {keys} keys loaded in {} ms",
            point.index, loaded.snapshot_load_ms
        ),
        None => "no snapshot".to_string(),
    };
    format!(
        "{snapshot}; {} records replayed, last index {}, in {} ms",
        loaded.records_replayed, loaded.last_index, loaded.replay_ms
    )
}
