//! The open-file budget: how many file descriptors the server needs for
//! `--max-clients`, its peers and its own files, and fitting that under the
//! process's `RLIMIT_NOFILE` at start.
//!
//! Every connection and every open file takes a descriptor, and a process
//! may hold only as many as its soft limit (often 1,024). At start the soft
//! limit is raised to what the server needs, at most to the hard limit, as
//! Redis does. If even the hard limit is too low, `--max-clients` is lowered
//! to what fits, with a warning that gives the numbers; if not even one
//! client fits, the server does not start. Without this, a server past its
//! limit accepts no more connections, and clients that connected hear
//! nothing at all (see `descriptors` for what happens if the budget is
//! wrong anyway).
//!
//! The arithmetic ([`plan`], [`plan_after_refusal`]) is pure;
//! [`fit_open_file_limit`] makes the two system calls. This module never
//! lowers a limit, never touches the hard one, and never changes the
//! configuration itself: the caller applies the [`Plan`].

use std::fmt;
use std::io;

use rlimit::Resource;

use super::peering::PEER_ONLY_SLOTS_PER_PEER;

/// Descriptors kept for the server's own files, whatever the flags: stdio
/// (3), the listener, epoll, the signal pipe (2), two wakers, the data
/// directory and its lock (2), the spare descriptor (`descriptors`), two
/// open snapshot files and one more while the oldest waits to be closed,
/// the snapshot being written and its directory (2), the promised-epoch
/// file and its directory while it is written (2), and a connection
/// accepted only to be refused: about 21, with room to spare (Redis keeps
/// 32).
pub const RESERVED_DESCRIPTORS: u64 = 32;

/// Log segments the log may grow by between two snapshots, beyond those open
/// at start (every segment stays open). A log that grows more (snapshots
/// off, or a store far larger than `--snapshot-log-bytes`) eats into
/// [`RESERVED_DESCRIPTORS`].
pub const LOG_SEGMENT_HEADROOM: u64 = 16;

/// With `--metrics-addr`: its listener and its connections at most.
pub const METRICS_DESCRIPTORS: u64 = 1 + super::http::MAX_CONNECTIONS as u64;

/// Per configured peer: our outbound link to it, its inbound connection, a
/// second inbound one while it replaces the first, and its peer-only slots
/// beyond `--max-clients` (see `peering`).
pub const DESCRIPTORS_PER_PEER: u64 = 3 + PEER_ONLY_SLOTS_PER_PEER as u64;

/// What the server will hold open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DescriptorNeeds {
    /// `--max-clients`, as asked.
    pub max_clients: usize,
    /// Configured peers.
    pub peers: usize,
    /// Log segment files open at start.
    pub log_segments: usize,
    /// Whether `--metrics-addr` is served: its listener and connections.
    pub metrics: bool,
}

impl DescriptorNeeds {
    /// Descriptors the server needs besides its clients.
    pub fn own_descriptors(&self) -> u64 {
        RESERVED_DESCRIPTORS
            + LOG_SEGMENT_HEADROOM
            + self.log_segments as u64
            + self.peers as u64 * DESCRIPTORS_PER_PEER
            + if self.metrics { METRICS_DESCRIPTORS } else { 0 }
    }

    /// Descriptors the server needs with `max_clients` clients connected.
    pub fn wanted_descriptors(&self) -> u64 {
        self.own_descriptors() + self.max_clients as u64
    }
}

/// The process's `RLIMIT_NOFILE`: its soft limit, which is enforced, and
/// its hard limit, up to which an unprivileged process may raise the soft
/// one. (`rlimit::INFINITY` is `u64::MAX`.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFileLimits {
    pub soft: u64,
    pub hard: u64,
}

/// What to do at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The soft limit found at start.
    pub soft_limit_before: u64,
    /// The soft limit to run with (equal to the one before: leave it).
    pub soft_limit: u64,
    /// The clients that fit: `--max-clients`, or fewer.
    pub max_clients: usize,
    /// Why `max_clients` is lower than asked, for stderr.
    pub warning: Option<String>,
}

/// Why the server cannot start with the open-file limit it has.
#[derive(Debug)]
pub enum BudgetError {
    /// Not even one client fits.
    NoRoomForClients {
        limit: u64,
        own_descriptors: u64,
        reason: String,
    },
    /// getrlimit failed.
    Read(io::Error),
}

impl fmt::Display for BudgetError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BudgetError::NoRoomForClients {
                limit,
                own_descriptors,
                reason,
            } => write!(
                formatter,
                "an open-file limit of {limit} leaves no room for clients: the server needs \
                 {own_descriptors} descriptors for its own files and peers, and {reason}; raise \
                 the limit (ulimit -n, or LimitNOFILE= under systemd)"
            ),
            BudgetError::Read(source) => {
                write!(formatter, "cannot read the open-file limit: {source}")
            }
        }
    }
}

impl std::error::Error for BudgetError {}

/// The soft limit to ask for and the clients that fit, assuming the soft
/// limit can be raised up to the hard one.
pub fn plan(limits: OpenFileLimits, needs: DescriptorNeeds) -> Result<Plan, BudgetError> {
    debug_assert!(limits.soft <= limits.hard, "the kernel keeps soft <= hard");
    let wanted = needs.wanted_descriptors();
    if wanted <= limits.soft {
        return Ok(unchanged(limits.soft, limits.soft, needs));
    }
    if wanted <= limits.hard {
        return Ok(unchanged(limits.soft, wanted, needs));
    }
    let reason = format!(
        "the hard limit on open files (ulimit -Hn) is {}",
        limits.hard
    );
    fit(limits.soft, limits.hard, needs, reason)
}

/// The clients that fit when raising the soft limit to `requested` failed
/// with `error`: the soft limit stays as it was.
pub fn plan_after_refusal(
    limits: OpenFileLimits,
    needs: DescriptorNeeds,
    requested: u64,
    error: &io::Error,
) -> Result<Plan, BudgetError> {
    let reason = format!(
        "the soft limit on open files could not be raised to {requested} ({error}) and is {}",
        limits.soft
    );
    fit(limits.soft, limits.soft, needs, reason)
}

/// Reads the limit, raises the soft one as [`plan`] says, and returns
/// the plan that holds (the caller applies `max_clients`).
pub fn fit_open_file_limit(needs: DescriptorNeeds) -> Result<Plan, BudgetError> {
    let (soft, hard) = rlimit::getrlimit(Resource::NOFILE).map_err(BudgetError::Read)?;
    let limits = OpenFileLimits { soft, hard };
    let planned = plan(limits, needs)?;
    if planned.soft_limit == soft {
        return Ok(planned);
    }
    match rlimit::setrlimit(Resource::NOFILE, planned.soft_limit, hard) {
        Ok(()) => Ok(planned),
        Err(error) => plan_after_refusal(limits, needs, planned.soft_limit, &error),
    }
}

fn unchanged(soft_limit_before: u64, soft_limit: u64, needs: DescriptorNeeds) -> Plan {
    Plan {
        soft_limit_before,
        soft_limit,
        max_clients: needs.max_clients,
        warning: None,
    }
}

/// The clients that fit under `limit` once the server's own descriptors
/// are counted; `reason` says why the limit is no higher.
fn fit(
    soft_limit_before: u64,
    limit: u64,
    needs: DescriptorNeeds,
    reason: String,
) -> Result<Plan, BudgetError> {
    let own_descriptors = needs.own_descriptors();
    let room = limit.saturating_sub(own_descriptors);
    if room == 0 {
        return Err(BudgetError::NoRoomForClients {
            limit,
            own_descriptors,
            reason,
        });
    }
    let max_clients = needs.max_clients.min(room as usize);
    debug_assert!(max_clients as u64 + own_descriptors <= limit);
    let warning = (max_clients < needs.max_clients).then(|| {
        format!(
            "--max-clients {} needs {} open files ({} for the server itself: \
             {RESERVED_DESCRIPTORS} reserved, {} for log segments, {DESCRIPTORS_PER_PEER} for \
             each of {} peers), but {reason}: max clients lowered to {max_clients} to fit; \
             raise the limit to allow more",
            needs.max_clients,
            needs.wanted_descriptors(),
            own_descriptors,
            needs.log_segments as u64 + LOG_SEGMENT_HEADROOM,
            needs.peers,
        )
    });
    Ok(Plan {
        soft_limit_before,
        soft_limit: limit,
        max_clients,
        warning,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NEEDS: DescriptorNeeds = DescriptorNeeds {
        max_clients: 10_000,
        peers: 0,
        log_segments: 1,
        metrics: false,
    };

    /// 32 reserved + 16 headroom + 1 segment.
    const OWN: u64 = 49;

    fn limits(soft: u64, hard: u64) -> OpenFileLimits {
        OpenFileLimits { soft, hard }
    }

    #[test]
    fn the_server_counts_its_own_files_its_log_and_each_peer() {
        assert_eq!(NEEDS.own_descriptors(), OWN);
        let cluster = DescriptorNeeds {
            peers: 2,
            log_segments: 7,
            ..NEEDS
        };
        assert_eq!(cluster.own_descriptors(), 32 + 16 + 7 + 2 * 5);
        assert_eq!(cluster.wanted_descriptors(), 10_000 + 65);
        let metrics = DescriptorNeeds {
            metrics: true,
            ..NEEDS
        };
        assert_eq!(metrics.own_descriptors(), OWN + 1 + 16);
    }

    #[test]
    fn the_soft_limit_is_raised_to_what_is_needed_when_the_hard_limit_allows() {
        let plan = plan(limits(1024, 1_048_576), NEEDS).unwrap();
        assert_eq!(plan.soft_limit_before, 1024);
        assert_eq!(plan.soft_limit, 10_000 + OWN);
        assert_eq!(plan.max_clients, 10_000);
        assert_eq!(plan.warning, None);
        let unlimited = super::plan(limits(1024, rlimit::INFINITY), NEEDS).unwrap();
        assert_eq!(unlimited.soft_limit, 10_000 + OWN);
    }

    #[test]
    fn a_soft_limit_already_high_enough_is_left_alone() {
        for soft in [10_000 + OWN, 65_536] {
            let plan = plan(limits(soft, 1_048_576), NEEDS).unwrap();
            assert_eq!((plan.soft_limit_before, plan.soft_limit), (soft, soft));
            assert_eq!(plan.max_clients, 10_000);
            assert_eq!(plan.warning, None);
        }
    }

    #[test]
    fn a_hard_limit_too_low_raises_the_soft_one_to_it_and_lowers_max_clients() {
        let plan = plan(limits(64, 256), NEEDS).unwrap();
        assert_eq!(plan.soft_limit_before, 64);
        assert_eq!(plan.soft_limit, 256);
        assert_eq!(plan.max_clients, 256 - OWN as usize);
        let warning = plan.warning.expect("a warning");
        for number in [
            "--max-clients 10000",
            "needs 10049 open files",
            "49 for the server itself",
            "17 for log segments",
            "the hard limit on open files (ulimit -Hn) is 256",
            "max clients lowered to 207",
        ] {
            assert!(warning.contains(number), "{number:?} not in {warning}");
        }
    }

    #[test]
    fn peers_take_their_descriptors_before_clients() {
        let needs = DescriptorNeeds { peers: 2, ..NEEDS };
        let plan = plan(limits(1024, 1024), needs).unwrap();
        assert_eq!(plan.soft_limit, 1024);
        assert_eq!(plan.max_clients, 1024 - 49 - 2 * 5);
        assert!(plan.warning.unwrap().contains("5 for each of 2 peers"));
    }

    #[test]
    fn an_explicit_max_clients_that_fits_is_kept_and_one_that_does_not_is_lowered() {
        let small = DescriptorNeeds {
            max_clients: 100,
            ..NEEDS
        };
        let kept = plan(limits(1024, 1024), small).unwrap();
        assert_eq!((kept.soft_limit, kept.max_clients), (1024, 100));
        assert_eq!(kept.warning, None);
        let lowered = plan(limits(128, 128), small).unwrap();
        assert_eq!(lowered.max_clients, 128 - OWN as usize);
        assert!(
            lowered
                .warning
                .unwrap()
                .contains("--max-clients 100 needs 149")
        );
    }

    #[test]
    fn a_refused_raise_keeps_the_soft_limit_and_names_the_error() {
        let error = io::Error::from(io::ErrorKind::PermissionDenied);
        let plan = plan_after_refusal(limits(1024, 1_048_576), NEEDS, 10_049, &error).unwrap();
        assert_eq!((plan.soft_limit_before, plan.soft_limit), (1024, 1024));
        assert_eq!(plan.max_clients, 1024 - OWN as usize);
        let warning = plan.warning.expect("a warning");
        assert!(
            warning.contains("could not be raised to 10049 (permission denied) and is 1024"),
            "{warning}"
        );
    }

    #[test]
    fn a_limit_that_leaves_no_room_for_a_client_is_an_error_that_says_so() {
        let error = plan(limits(49, 49), NEEDS).unwrap_err();
        assert!(matches!(
            error,
            BudgetError::NoRoomForClients {
                limit: 49,
                own_descriptors: OWN,
                ..
            }
        ));
        assert!(error.to_string().contains("no room for clients"), "{error}");
        let one = plan(limits(50, 50), NEEDS).unwrap();
        assert_eq!(one.max_clients, 1);
    }
}
