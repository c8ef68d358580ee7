//! kvstore-server: parse flags, recover the log, run the reactor.
//!
//! Exit codes: 0 after a clean shutdown (SIGINT/SIGTERM), 1 when the server
//! cannot start or must stop (data dir, corrupt log, bind, log write
//! failure), 2 for invalid flags.

use std::process::ExitCode;

use clap::Parser;
use kvstore::config::{Config, ServerArgs};
use kvstore::log::LogFile;
use kvstore::net::Server;
use kvstore::node::Node;

fn main() -> ExitCode {
    let config = match ServerArgs::parse().into_config() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("kvstore: {error}");
            return ExitCode::from(2);
        }
    };
    match run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("kvstore: {message}");
            ExitCode::from(1)
        }
    }
}

fn run(config: Config) -> Result<(), String> {
    let mut node = Node::new();
    let (log, replay) = LogFile::open(&config.data_dir, |_, entry| node.replay(entry))
        .map_err(|e| e.to_string())?;
    let mut server = Server::bind(config.clone(), node, log).map_err(|e| e.to_string())?;
    let address = server.local_addr().map_err(|e| e.to_string())?;
    eprintln!(
        "kvstore: node {} listening on {address} (data dir {}, fsync {}, {} records replayed, last index {})",
        config.id,
        config.data_dir.display(),
        config.fsync,
        replay.records,
        replay.last_index,
    );
    server.run().map_err(|e| e.to_string())
}
