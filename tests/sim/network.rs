//! The simulated network between nodes.
//!
//! Each node sends to a peer on the connection it dialed (as the real
//! reactor does), so a link is directed: `(from, to)`. A link is up once
//! `from` completed its handshake with `to` (the core got `peer_up`), and
//! goes down when the connection breaks (the core gets `peer_down`); every
//! break starts a new generation, and frames still in flight on an older
//! generation are lost with their connection (a reset). When the sender
//! crashes, its frames already in flight are still delivered, as a kernel
//! sends what was written before closing the dead process's sockets.
//!
//! On top of connections, two kinds of partition:
//! - silent: frames on a blocked directed link vanish while the connection
//!   stays up (a black hole; may be asymmetric);
//! - refused: the connection between two nodes breaks and cannot be
//!   re-established until the partition heals (symmetric).
//!
//! And weather: per-frame delay (which reorders frames), loss and duplication.

use std::collections::{BTreeMap, BTreeSet};

use kvstore::node::NodeId;

use super::rng::Rng;

#[derive(Debug, Clone, Copy, Default)]
pub struct Link {
    pub up: bool,
    pub generation: u64,
    /// The dialer's next retry delay (the reactor backs off 20 ms to 500 ms).
    pub retry_delay_ms: u64,
}

/// How frames fare, per frame.
#[derive(Debug, Clone, Copy)]
pub struct Weather {
    pub loss_per_mille: u64,
    pub duplicate_per_mille: u64,
    /// Chance of a long delay (a congested path, a retransmission).
    pub slow_per_mille: u64,
    pub max_slow_ms: u64,
}

impl Weather {
    pub const CALM: Weather = Weather {
        loss_per_mille: 0,
        duplicate_per_mille: 0,
        slow_per_mille: 0,
        max_slow_ms: 0,
    };
}

#[derive(Debug)]
pub struct Network {
    links: BTreeMap<(NodeId, NodeId), Link>,
    /// Silent partitions: directed links whose frames vanish, by fault id.
    silent: BTreeMap<u64, BTreeSet<(NodeId, NodeId)>>,
    /// Refusing partitions: unordered pairs (low, high) that cannot connect.
    refused: BTreeMap<u64, BTreeSet<(NodeId, NodeId)>>,
    pub weather: Weather,
}

/// When copies of one frame arrive, if any.
pub type Arrivals = Vec<u64>;

impl Network {
    pub fn new(nodes: &[NodeId]) -> Network {
        let mut links = BTreeMap::new();
        for &from in nodes {
            for &to in nodes {
                if from != to {
                    links.insert(
                        (from, to),
                        Link {
                            up: false,
                            generation: 0,
                            retry_delay_ms: FIRST_RETRY_DELAY_MS,
                        },
                    );
                }
            }
        }
        Network {
            links,
            silent: BTreeMap::new(),
            refused: BTreeMap::new(),
            weather: Weather::CALM,
        }
    }

    pub fn link(&self, from: NodeId, to: NodeId) -> Link {
        self.links[&(from, to)]
    }

    pub fn link_mut(&mut self, from: NodeId, to: NodeId) -> &mut Link {
        self.links
            .get_mut(&(from, to))
            .expect("a link between two nodes")
    }

    /// Breaks the connection `from -> to`; returns whether it was up (then
    /// `from` must be told).
    pub fn break_link(&mut self, from: NodeId, to: NodeId) -> bool {
        let link = self.link_mut(from, to);
        link.generation += 1;
        std::mem::replace(&mut link.up, false)
    }

    /// The process at `from` died: its kernel closes the connection after
    /// sending what was already written, so frames in flight still arrive
    /// (after the crash, maybe after a restart) but nothing new is sent.
    pub fn close_link(&mut self, from: NodeId, to: NodeId) {
        self.link_mut(from, to).up = false;
    }

    /// Whether a frame `from -> to` vanishes in a silent partition.
    pub fn is_silenced(&self, from: NodeId, to: NodeId) -> bool {
        self.silent.values().any(|set| set.contains(&(from, to)))
    }

    /// Whether a connection between the two may be established.
    pub fn is_refused(&self, a: NodeId, b: NodeId) -> bool {
        let pair = (a.min(b), a.max(b));
        self.refused.values().any(|set| set.contains(&pair))
    }

    pub fn add_silent(&mut self, fault: u64, links: BTreeSet<(NodeId, NodeId)>) {
        self.silent.insert(fault, links);
    }

    pub fn add_refused(&mut self, fault: u64, pairs: BTreeSet<(NodeId, NodeId)>) {
        self.refused.insert(fault, pairs);
    }

    /// Ends partition `fault`; returns whether it was still in force.
    pub fn heal(&mut self, fault: u64) -> bool {
        let silent = self.silent.remove(&fault).is_some();
        let refused = self.refused.remove(&fault).is_some();
        silent || refused
    }

    pub fn heal_all(&mut self) {
        self.silent.clear();
        self.refused.clear();
        self.weather = Weather::CALM;
    }

    /// Arrival times of one frame sent now on an up link (none if lost).
    pub fn arrivals(&self, rng: &mut Rng, now_ms: u64) -> Arrivals {
        let weather = self.weather;
        if rng.chance(weather.loss_per_mille) {
            return Vec::new();
        }
        let mut arrivals = vec![now_ms + delay(rng, weather)];
        if rng.chance(weather.duplicate_per_mille) {
            arrivals.push(now_ms + delay(rng, weather));
        }
        arrivals
    }
}

pub const FIRST_RETRY_DELAY_MS: u64 = 20;
pub const MAX_RETRY_DELAY_MS: u64 = 500;

fn delay(rng: &mut Rng, weather: Weather) -> u64 {
    if weather.max_slow_ms > 10 && rng.chance(weather.slow_per_mille) {
        rng.range(10, weather.max_slow_ms)
    } else {
        rng.range(1, 10)
    }
}
