//! Start-up: from a data directory to a node with its state, ready to serve.
//!
//! Locks the directory, removes snapshot files a crash left unfinished,
//! loads the newest snapshot into the store, opens the log after it and
//! replays it, and restores the promised epoch. Restart time therefore grows
//! with the live data (the snapshot) and the log written since, not with
//! history.
//!
//! A snapshot that cannot be used (a bad checksum, a truncated file, one the
//! log does not continue) stops the start, naming the file and byte offset,
//! unless an older snapshot (or the log from its first record) together with
//! the log still covers every index the unusable one did: then that is used,
//! with a warning. Never silently start with less data.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::log::{self, Base, DataDir, Log, LogError};
use crate::node::{Node, NodeConfig, SnapshotPoint};
use crate::snapshot::{self, SnapshotError};
use crate::store::{Store, StoredPair};

/// What start-up found, for the start-up line.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    /// The snapshot loaded, and its keys, if there was one.
    pub snapshot: Option<(SnapshotPoint, u64)>,
    pub snapshot_load_ms: u64,
    /// Log records replayed after the snapshot.
    pub records_replayed: u64,
    pub last_index: u64,
    pub replay_ms: u64,
}

/// Why the server cannot start from its data directory.
#[derive(Debug)]
pub enum StartupError {
    Log(LogError),
    Snapshot(SnapshotError),
    /// The newest snapshot the log continues is unusable and nothing older
    /// covers what it did.
    UnusableSnapshot {
        error: Box<StartupError>,
        covered_index: u64,
    },
    Epoch(log::EpochError),
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl fmt::Display for StartupError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartupError::Log(error) => error.fmt(formatter),
            StartupError::Snapshot(error) => error.fmt(formatter),
            StartupError::UnusableSnapshot {
                error,
                covered_index,
            } => write!(
                formatter,
                "{error}; no older snapshot with the log after it reaches index \
                 {covered_index}, refusing to start with less data (move the file aside only \
                 if losing what it holds is acceptable)"
            ),
            StartupError::Epoch(error) => error.fmt(formatter),
            StartupError::Io { path, source } => {
                write!(formatter, "cannot use {}: {source}", path.display())
            }
        }
    }
}

impl std::error::Error for StartupError {}

/// Opens `data_dir` and builds the node `config` describes from it.
pub fn open(
    data_dir: &Path,
    config: &NodeConfig,
    segment_bytes: u64,
) -> Result<(Node, Log, Loaded), StartupError> {
    let directory = DataDir::lock(data_dir).map_err(StartupError::Log)?;
    let listing = snapshot::list(data_dir).map_err(|source| StartupError::Io {
        path: data_dir.to_path_buf(),
        source,
    })?;
    for temporary in &listing.temporaries {
        crate::log_info!(
            "removing {}, a snapshot a crash left unfinished",
            temporary.display()
        );
        std::fs::remove_file(temporary).map_err(|source| StartupError::Io {
            path: temporary.clone(),
            source,
        })?;
    }
    let mut unusable: Option<(StartupError, u64)> = None;
    let mut candidates: Vec<Option<(u64, PathBuf)>> =
        listing.snapshots.into_iter().map(Some).collect();
    // The log from its first record is the last resort.
    candidates.insert(0, None);
    for candidate in candidates.into_iter().rev() {
        match open_from(&directory, config, segment_bytes, candidate.as_ref()) {
            Ok((node, log, loaded)) => {
                if let Some((error, covered_index)) = unusable {
                    if loaded.last_index < covered_index {
                        return Err(StartupError::UnusableSnapshot {
                            error: Box::new(error),
                            covered_index,
                        });
                    }
                    crate::log_warn!(
                        "{error}; started from {} and the log after it instead, which \
                         reach index {} (the unusable snapshot covered {covered_index})",
                        describe(candidate.as_ref()),
                        loaded.last_index
                    );
                }
                return finish(node, log, loaded, data_dir);
            }
            Err(
                error @ (StartupError::Snapshot(_)
                | StartupError::Log(LogError::SnapshotGap { .. })),
            ) if candidate.is_some() => {
                let covered_index = candidate.as_ref().map_or(0, |(index, _)| *index);
                if unusable.is_none() {
                    unusable = Some((error, covered_index));
                }
            }
            Err(error) => {
                return Err(match unusable {
                    Some((first, covered_index)) => StartupError::UnusableSnapshot {
                        error: Box::new(first),
                        covered_index,
                    },
                    None => error,
                });
            }
        }
    }
    unreachable!("the log alone is always a candidate, and it ends the loop")
}

fn describe(candidate: Option<&(u64, PathBuf)>) -> String {
    match candidate {
        Some((_, path)) => format!("the older snapshot {}", path.display()),
        None => "the first log record".to_string(),
    }
}

/// Restores the promised epoch.
fn finish(
    mut node: Node,
    log: Log,
    loaded: Loaded,
    data_dir: &Path,
) -> Result<(Node, Log, Loaded), StartupError> {
    let promised_epoch = log::load_epoch(data_dir).map_err(StartupError::Epoch)?;
    node.restore_promised_epoch(promised_epoch);
    Ok((node, log, loaded))
}

/// A node from one snapshot (or none) and the log after it.
fn open_from(
    directory: &DataDir,
    config: &NodeConfig,
    segment_bytes: u64,
    candidate: Option<&(u64, PathBuf)>,
) -> Result<(Node, Log, Loaded), StartupError> {
    let mut node = Node::new(config.clone());
    let mut loaded = Loaded::default();
    let mut base = None;
    if let Some((_, path)) = candidate {
        let started = Instant::now();
        let (point, store, keys) = load_snapshot(path).map_err(StartupError::Snapshot)?;
        loaded.snapshot_load_ms = started.elapsed().as_millis() as u64;
        loaded.snapshot = Some((point, keys));
        base = Some(Base {
            index: point.index,
            epoch: point.epoch,
        });
        node.restore_snapshot(point, store);
    }
    let started = Instant::now();
    let (log, replay) = Log::open(directory, segment_bytes, base, |entry| node.replay(entry))
        .map_err(StartupError::Log)?;
    loaded.replay_ms = started.elapsed().as_millis() as u64;
    loaded.records_replayed = replay.records;
    loaded.last_index = replay.last_index;
    Ok((node, log, loaded))
}

/// Reads a snapshot file into a store, pre-sized from its trailer.
pub fn load_snapshot(path: &Path) -> Result<(SnapshotPoint, Store, u64), SnapshotError> {
    let store = std::cell::RefCell::new(Store::new());
    let summary = snapshot::load(
        path,
        |_, pairs_hint| *store.borrow_mut() = Store::with_capacity(pairs_hint as usize),
        |pair| {
            // The format checked the pair's layout: it is a stored pair.
            let pair = StoredPair::from_encoded(pair).expect("a pair the format accepted");
            store.borrow_mut().insert_loaded(pair);
        },
    )?;
    let store = store.into_inner();
    let point = SnapshotPoint {
        index: summary.index,
        epoch: summary.epoch,
        file_bytes: summary.file_bytes,
    };
    let keys = store.len() as u64;
    Ok((point, store, keys))
}
