//! kvstore-server: parse flags, recover the log, run the reactor.
//!
//! Exit codes: 0 after a clean shutdown (SIGINT/SIGTERM), 1 when the server
//! cannot start or must stop (data dir, corrupt log, bind, log write
//! failure), 2 for invalid flags.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::process::ExitCode;

use clap::Parser;
use kvstore::config::{Config, ServerArgs};
use kvstore::log::{LOG_HEADER_BYTES, LogFile, encoded_len, load_epoch};
use kvstore::net::{LogIndex, Server};
use kvstore::node::{Node, NodeConfig};

fn main() -> ExitCode {
    let config = match ServerArgs::parse().into_config() {
        Ok(config) => config,
        Err(error) => {
            kvstore::status!("{error}");
            return ExitCode::from(2);
        }
    };
    match run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            kvstore::status!("{message}");
            ExitCode::from(1)
        }
    }
}

fn run(config: Config) -> Result<(), String> {
    // Election jitter must differ between processes; std's hasher seed is random.
    let seed = RandomState::new().hash_one(config.id);
    let node_config = NodeConfig::from_config(&config, seed);
    let mut node = Node::new(node_config);
    let mut log_index = LogIndex::new(1, LOG_HEADER_BYTES);
    // The log first: it creates the data dir and locks it.
    let (log, replay) = LogFile::open(&config.data_dir, |offset, entry| {
        log_index.note(entry.index, offset, encoded_len(entry) as u64);
        node.replay(entry)
    })
    .map_err(|e| e.to_string())?;
    let promised_epoch = load_epoch(&config.data_dir).map_err(|e| e.to_string())?;
    node.restore_promised_epoch(promised_epoch);
    let mut server =
        Server::bind(config.clone(), node, log, log_index).map_err(|e| e.to_string())?;
    kvstore::status!(
        "node {} listening on {} (data dir {}, fsync {}, {} peers, {} records replayed, last index {})",
        config.id,
        server.local_addr(),
        config.data_dir.display(),
        config.fsync,
        config.peers.len(),
        replay.records,
        replay.last_index,
    );
    server.run().map_err(|e| e.to_string())
}
