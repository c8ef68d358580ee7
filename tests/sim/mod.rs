//! Deterministic simulation of kvstore clusters, and the checkers that judge
//! what the simulated clients saw.
//!
//! Everything in a run derives from one `u64` seed: the node timers' jitter,
//! network delays and faults, disk sync latencies, the fault schedule and the
//! clients' requests. Maps are iterated in key order, there is no wall clock
//! and no thread, so a seed replays exactly (see `cluster` for the world and
//! `tests/simulation.rs` for how to replay one).

pub mod adversary;
pub mod checks;
pub mod cluster;
pub mod disk;
pub mod events;
pub mod linearizability;
pub mod network;
pub mod resp;
pub mod rng;
pub mod workload;
