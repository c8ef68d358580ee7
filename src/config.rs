//! Command-line flags to a validated [`Config`]. Every default and bound lives here.

use std::fmt;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use clap::{Parser, ValueEnum};

use crate::logger;

pub const DEFAULT_HOST: &str = "127.0.0.1";
pub const DEFAULT_DATA_ROOT: &str = "./kvstore-data";
pub const DEFAULT_FSYNC_INTERVAL_MS: u64 = 1000;
pub const DEFAULT_MAX_LINE_BYTES: usize = 1024 * 1024;
pub const DEFAULT_MAX_CLIENTS: usize = 10_000;
/// A line must at least hold a short command.
pub const MIN_MAX_LINE_BYTES: usize = 64;
/// The longest line any record can be made of. A line holds at least the
/// key and value its record carries (a `PUT` adds its command and two
/// spaces), so the record of every accepted line fits the log's bound.
pub const MAX_MAX_LINE_BYTES: usize = crate::log::MAX_KEY_AND_VALUE_BYTES;
pub const MAX_MAX_CLIENTS: usize = 1_000_000;
/// A client connection that sent no whole request for this long is closed.
pub const DEFAULT_IDLE_TIMEOUT_MS: u64 = 300_000;
/// A request line must arrive whole within this long of its first byte
/// (and a connection's first line within this long of its accept).
pub const DEFAULT_REQUEST_TIMEOUT_MS: u64 = 30_000;
/// What all client connections may hold in input and output buffers
/// together before the largest are closed.
pub const DEFAULT_MAX_CLIENT_BUFFER_BYTES: usize = 256 * 1024 * 1024;
/// The smallest client buffer budget accepted: a few maximal lines.
pub const MIN_MAX_CLIENT_BUFFER_BYTES: usize = 4 * 1024 * 1024;
pub const DEFAULT_HEARTBEAT_MS: u64 = 50;
pub const DEFAULT_ELECTION_TIMEOUT_MS: u64 = 300;
pub const DEFAULT_LOG_MEMORY_BYTES: usize = 64 * 1024 * 1024;
/// A snapshot starts once the log written since the last one exceeds this
/// (and the last snapshot's size).
pub const DEFAULT_SNAPSHOT_LOG_BYTES: u64 = 64 * 1024 * 1024;
/// The smallest threshold accepted (other than 0, which turns them off):
/// small enough for tests to compact often.
pub const MIN_SNAPSHOT_LOG_BYTES: u64 = 64 * 1024;
/// A log segment is closed and a new one started at about this size: a
/// quarter of the snapshot threshold, within these bounds, so that dropping
/// a covered prefix frees most of it.
pub const MIN_LOG_SEGMENT_BYTES: u64 = 16 * 1024;
pub const MAX_LOG_SEGMENT_BYTES: u64 = 64 * 1024 * 1024;

/// When the log is flushed to stable storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FsyncPolicy {
    /// fdatasync before every reply that depends on a write (group commit).
    Always,
    /// fdatasync every `--fsync-interval-ms`; an OK may be lost in a crash.
    Interval,
    /// Never fdatasync; the OS writes back when it likes.
    Never,
}

impl fmt::Display for FsyncPolicy {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            FsyncPolicy::Always => "always",
            FsyncPolicy::Interval => "interval",
            FsyncPolicy::Never => "never",
        };
        formatter.write_str(name)
    }
}

/// When a leader acknowledges a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Replication {
    /// Once a majority, the leader included, has it durably in its log.
    Sync,
    /// Once the leader has it in its own log (a failover can lose it).
    Async,
}

/// What a follower does with a GET.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FollowerReads {
    /// Answer from the local copy, which may lag the leader.
    Local,
    /// Answer NOT_LEADER, so every value a client reads is linearizable.
    Redirect,
}

/// kvstore-server: a durable, replicated key-value server speaking a line
/// protocol (nc, kvstore-client) and RESP (redis-cli, Redis clients) on one port.
#[derive(Debug, Parser)]
#[command(
    name = "kvstore-server",
    version,
    after_help = "Exit status:\n  0  stopped by SIGINT or SIGTERM, every acknowledged write durable\n  \
                  1  stopped by a failure: the port could not be bound, the data directory \
                  is locked or damaged, a log write or fdatasync failed (disk full, I/O \
                  error); the message says which\n  2  invalid flags or configuration"
)]
pub struct ServerArgs {
    /// TCP port for clients and peers (0: any free port, printed at start).
    pub port: u16,
    /// Comma-separated peer addresses, e.g. 127.0.0.1:7002,127.0.0.1:7003.
    /// An entry equal to this node's own address is ignored.
    pub peers: Option<String>,
    /// Address to bind.
    #[arg(long, default_value = DEFAULT_HOST)]
    pub host: IpAddr,
    /// Node id, unique in the cluster [default: PORT].
    #[arg(long)]
    pub id: Option<u64>,
    /// Where the log and snapshots live (default: ./kvstore-data/ID, ID being this node's id).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// When the log is flushed to disk.
    #[arg(long, value_enum, default_value_t = FsyncPolicy::Always)]
    pub fsync: FsyncPolicy,
    /// With --fsync interval: milliseconds between fdatasyncs (at least 1).
    #[arg(long, default_value_t = DEFAULT_FSYNC_INTERVAL_MS)]
    pub fsync_interval_ms: u64,
    /// Longest request line (or RESP request) accepted; a longer one gets ERR
    /// and the connection is closed. Range: 64 to 67174371 (64 MiB + 64 KiB
    /// less a record's fixed fields: what one log record carries).
    #[arg(long, default_value_t = DEFAULT_MAX_LINE_BYTES)]
    pub max_line_bytes: usize,
    /// Connections beyond this get ERR and are closed. Range: 1 to 1000000;
    /// lowered at start, with a warning, if the open-file limit cannot hold it.
    #[arg(long, default_value_t = DEFAULT_MAX_CLIENTS)]
    pub max_clients: usize,
    /// Close a client connection that sent no whole request for this long
    /// (a connection dripping bytes without finishing a line is idle too);
    /// 0 never does.
    #[arg(long, default_value_t = DEFAULT_IDLE_TIMEOUT_MS)]
    pub idle_timeout_ms: u64,
    /// A request line must arrive whole within this long of its first byte,
    /// and a connection's first line within this long of connecting; else
    /// ERR and the connection is closed (slow clients hold buffers). 0 = never.
    #[arg(long, default_value_t = DEFAULT_REQUEST_TIMEOUT_MS)]
    pub request_timeout_ms: u64,
    /// Limit on the store's memory (keys, values and their overhead, as the
    /// server counts them; ROLE shows the figure): a write that would go over
    /// it gets ERR OOM, reads, DEL and shrinking overwrites still work.
    /// Accepts 1073741824, 1024mb, 1gb. Default: no limit (set one).
    #[arg(long, value_parser = parse_byte_size)]
    pub max_memory_bytes: Option<u64>,
    /// What all client connections may hold in input and output buffers
    /// together; past it the connections holding the most are closed. At
    /// least 4mb; accepts 268435456, 256mb, 1gb.
    #[arg(long, value_parser = parse_byte_size, default_value_t = DEFAULT_MAX_CLIENT_BUFFER_BYTES as u64)]
    pub max_client_buffer_bytes: u64,
    /// When a write is acknowledged in a cluster.
    #[arg(long, value_enum, default_value_t = Replication::Sync)]
    pub replication: Replication,
    /// What a follower does with a GET.
    #[arg(long, value_enum, default_value_t = FollowerReads::Local)]
    pub follower_reads: FollowerReads,
    /// Leader heartbeat interval, in milliseconds: at least 1 and at most a
    /// third of --election-timeout-ms.
    #[arg(long, default_value_t = DEFAULT_HEARTBEAT_MS)]
    pub heartbeat_ms: u64,
    /// A follower that hears no leader for this long (plus jitter), in
    /// milliseconds, looks for a new one. At least 3 times --heartbeat-ms.
    #[arg(long, default_value_t = DEFAULT_ELECTION_TIMEOUT_MS)]
    pub election_timeout_ms: u64,
    /// Log records a cluster node keeps in memory; older committed ones are
    /// read back from the log file when a lagging follower needs them.
    #[arg(long, default_value_t = DEFAULT_LOG_MEMORY_BYTES)]
    pub log_memory_bytes: usize,
    /// Take a snapshot (and drop the log it covers) once the log written since
    /// the last one exceeds this many bytes and the last snapshot's size;
    /// 0 turns automatic snapshots off (the log then grows until SNAPSHOT);
    /// otherwise at least 65536.
    #[arg(long, default_value_t = DEFAULT_SNAPSHOT_LOG_BYTES)]
    pub snapshot_log_bytes: u64,
    /// File holding the cluster's shared secret (one line of at least 32
    /// bytes, mode 600, the same file on every node; two lines while
    /// rotating). Peers prove they hold it before any frame is read.
    /// Required when the cluster is not all on loopback.
    #[arg(long, value_name = "PATH")]
    pub cluster_secret_file: Option<PathBuf>,
    /// File holding the password clients must send with AUTH before any
    /// other command but PING and QUIT (Redis's requirepass; mode 600).
    #[arg(long, value_name = "PATH")]
    pub requirepass_file: Option<PathBuf>,
    /// PEM certificate chain: with --tls-key-file, every connection to the
    /// port (clients and peers) must speak TLS. Peers dial each other's IP
    /// address, so a node's certificate needs an IP SAN for it.
    #[arg(long, value_name = "PATH", requires = "tls_key_file")]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of --tls-cert-file.
    #[arg(long, value_name = "PATH", requires = "tls_cert_file")]
    pub tls_key_file: Option<PathBuf>,
    /// PEM certificate(s) of the CA that signs the cluster's certificates:
    /// peers (and, with --tls-client-auth, clients) must present one it
    /// signed. Required for a cluster with TLS.
    #[arg(long, value_name = "PATH", requires = "tls_cert_file")]
    pub tls_ca_file: Option<PathBuf>,
    /// Clients too must present a certificate signed by --tls-ca-file.
    #[arg(long, requires = "tls_ca_file")]
    pub tls_client_auth: bool,
    /// Serve Prometheus metrics (GET /metrics) and a health check for load
    /// balancers (GET /health: 200 while a leader is known and, on the
    /// leader, a majority is heard; 503 and the reason otherwise) over
    /// plain HTTP on this HOST:PORT (port 0: any free port, printed at
    /// start). Off by default. No password: bind it to loopback or a
    /// network only monitoring reaches.
    #[arg(long, value_name = "HOST:PORT", value_parser = parse_socket_address)]
    pub metrics_addr: Option<SocketAddr>,
    /// How each stderr line is written: text (`<time> <LEVEL> node=<id>
    /// <message>`) or json (one object per line: ts, level, node, msg, and
    /// an event's fields).
    #[arg(long, value_enum, default_value_t = logger::Format::Text)]
    pub log_format: logger::Format,
    /// The least important stderr lines written: error, warn, info (the
    /// node's life: elections, leadership, snapshots, peers) or debug (each
    /// reconnect and election attempt too).
    #[arg(long, value_enum, default_value_t = logger::Level::Info)]
    pub log_level: logger::Level,
}

/// A validated server configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub id: u64,
    pub peers: Vec<SocketAddr>,
    pub data_dir: PathBuf,
    pub fsync: FsyncPolicy,
    pub fsync_interval_ms: u64,
    pub max_line_bytes: usize,
    pub max_clients: usize,
    /// `None`: idle connections are never closed.
    pub idle_timeout_ms: Option<u64>,
    /// `None`: a request may take as long as it likes to arrive.
    pub request_timeout_ms: Option<u64>,
    /// `None`: no limit on the store's accounted memory.
    pub max_memory_bytes: Option<usize>,
    pub max_client_buffer_bytes: usize,
    pub replication: Replication,
    pub follower_reads: FollowerReads,
    pub heartbeat_ms: u64,
    pub election_timeout_ms: u64,
    pub log_memory_bytes: usize,
    /// 0: no automatic snapshots.
    pub snapshot_log_bytes: u64,
    /// The size at which a log segment is closed.
    pub log_segment_bytes: u64,
    /// `None`: peers are not authenticated (only allowed on loopback).
    pub cluster_secret_file: Option<PathBuf>,
    /// `None`: clients need no password.
    pub requirepass_file: Option<PathBuf>,
    /// `None`: no TLS; every connection is plain TCP.
    pub tls: Option<TlsFlags>,
    /// Where `/metrics` and `/health` are served; `None`: nowhere.
    pub metrics_addr: Option<SocketAddr>,
    pub log_format: logger::Format,
    pub log_level: logger::Level,
}

/// The TLS flags, when TLS is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFlags {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub ca_file: Option<PathBuf>,
    pub client_auth: bool,
}

impl Config {
    /// Whether peers prove a shared secret; without one, every address of
    /// the cluster is on loopback and only loopback may say it is a peer.
    pub fn peers_authenticated(&self) -> bool {
        self.cluster_secret_file.is_some()
    }
}

/// The log segment size for a snapshot threshold (see
/// [`MIN_LOG_SEGMENT_BYTES`]).
pub fn log_segment_bytes(snapshot_log_bytes: u64) -> u64 {
    if snapshot_log_bytes == 0 {
        return MAX_LOG_SEGMENT_BYTES;
    }
    (snapshot_log_bytes / 4).clamp(MIN_LOG_SEGMENT_BYTES, MAX_LOG_SEGMENT_BYTES)
}

/// Why the flags do not make a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    InvalidPeer {
        entry: String,
        reason: String,
    },
    DuplicatePeer {
        entry: String,
    },
    ZeroFsyncInterval,
    MaxLineBytesOutOfRange {
        value: usize,
    },
    MaxClientsOutOfRange {
        value: usize,
    },
    /// Heartbeats must come several times per election timeout.
    TimingOutOfRange {
        heartbeat_ms: u64,
        election_timeout_ms: u64,
    },
    SnapshotLogBytesTooSmall {
        value: u64,
    },
    /// A cluster reachable from other machines needs a secret.
    PeersNeedSecret {
        address: SocketAddr,
    },
    /// Peers verify each other's certificates against the CA.
    TlsClusterNeedsCa,
    ClientBufferBudgetTooSmall {
        value: u64,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::InvalidPeer { entry, reason } => {
                write!(
                    formatter,
                    "invalid peer '{entry}' in PEERS: {reason} (expected host:port)"
                )
            }
            ConfigError::DuplicatePeer { entry } => {
                write!(formatter, "peer '{entry}' is listed twice in PEERS")
            }
            ConfigError::ZeroFsyncInterval => {
                write!(formatter, "--fsync-interval-ms must be at least 1")
            }
            ConfigError::MaxLineBytesOutOfRange { value } => write!(
                formatter,
                "--max-line-bytes {value} is out of range ({MIN_MAX_LINE_BYTES}..={MAX_MAX_LINE_BYTES})"
            ),
            ConfigError::MaxClientsOutOfRange { value } => write!(
                formatter,
                "--max-clients {value} is out of range (1..={MAX_MAX_CLIENTS})"
            ),
            ConfigError::TimingOutOfRange {
                heartbeat_ms,
                election_timeout_ms,
            } => write!(
                formatter,
                "--heartbeat-ms {heartbeat_ms} must be at least 1 and at most a third of --election-timeout-ms {election_timeout_ms}"
            ),
            ConfigError::SnapshotLogBytesTooSmall { value } => write!(
                formatter,
                "--snapshot-log-bytes {value} is too small: 0 (off) or at least {MIN_SNAPSHOT_LOG_BYTES}"
            ),
            ConfigError::PeersNeedSecret { address } => write!(
                formatter,
                "{address} is not a loopback address, and without --cluster-secret-file any \
                 machine that reaches the port could pose as a peer: pass \
                 --cluster-secret-file FILE (the same file on every node, made with \
                 `(umask 077; openssl rand -hex 32 > FILE)`), or keep --host and every peer \
                 on loopback"
            ),
            ConfigError::ClientBufferBudgetTooSmall { value } => write!(
                formatter,
                "--max-client-buffer-bytes {value} is too small: at least \
                 {MIN_MAX_CLIENT_BUFFER_BYTES}"
            ),
            ConfigError::TlsClusterNeedsCa => write!(
                formatter,
                "a cluster with TLS needs --tls-ca-file: peers verify each other's \
                 certificates against it"
            ),
        }
    }
}

impl std::error::Error for ConfigError {}

impl ServerArgs {
    pub fn into_config(self) -> Result<Config, ConfigError> {
        let listen = SocketAddr::new(self.host, self.port);
        let id = self.id.unwrap_or(u64::from(self.port));
        if self.fsync_interval_ms == 0 {
            return Err(ConfigError::ZeroFsyncInterval);
        }
        if !(MIN_MAX_LINE_BYTES..=MAX_MAX_LINE_BYTES).contains(&self.max_line_bytes) {
            return Err(ConfigError::MaxLineBytesOutOfRange {
                value: self.max_line_bytes,
            });
        }
        if !(1..=MAX_MAX_CLIENTS).contains(&self.max_clients) {
            return Err(ConfigError::MaxClientsOutOfRange {
                value: self.max_clients,
            });
        }
        if self.heartbeat_ms == 0 || self.heartbeat_ms * 3 > self.election_timeout_ms {
            return Err(ConfigError::TimingOutOfRange {
                heartbeat_ms: self.heartbeat_ms,
                election_timeout_ms: self.election_timeout_ms,
            });
        }
        if self.snapshot_log_bytes != 0 && self.snapshot_log_bytes < MIN_SNAPSHOT_LOG_BYTES {
            return Err(ConfigError::SnapshotLogBytesTooSmall {
                value: self.snapshot_log_bytes,
            });
        }
        if self.max_client_buffer_bytes < MIN_MAX_CLIENT_BUFFER_BYTES as u64 {
            return Err(ConfigError::ClientBufferBudgetTooSmall {
                value: self.max_client_buffer_bytes,
            });
        }
        let peers = parse_peers(self.peers.as_deref().unwrap_or(""), listen)?;
        if !peers.is_empty() && self.cluster_secret_file.is_none() {
            let mut addresses = std::iter::once(&listen).chain(&peers);
            if let Some(address) = addresses.find(|address| !address.ip().is_loopback()) {
                return Err(ConfigError::PeersNeedSecret { address: *address });
            }
        }
        let tls = match (self.tls_cert_file, self.tls_key_file) {
            (Some(cert_file), Some(key_file)) => Some(TlsFlags {
                cert_file,
                key_file,
                ca_file: self.tls_ca_file,
                client_auth: self.tls_client_auth,
            }),
            _ => None,
        };
        if !peers.is_empty() && tls.as_ref().is_some_and(|tls| tls.ca_file.is_none()) {
            return Err(ConfigError::TlsClusterNeedsCa);
        }
        Ok(Config {
            listen,
            id,
            peers,
            data_dir: self
                .data_dir
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_ROOT).join(id.to_string())),
            fsync: self.fsync,
            fsync_interval_ms: self.fsync_interval_ms,
            max_line_bytes: self.max_line_bytes,
            max_clients: self.max_clients,
            idle_timeout_ms: (self.idle_timeout_ms > 0).then_some(self.idle_timeout_ms),
            request_timeout_ms: (self.request_timeout_ms > 0).then_some(self.request_timeout_ms),
            max_memory_bytes: self.max_memory_bytes.map(|bytes| bytes as usize),
            max_client_buffer_bytes: self.max_client_buffer_bytes as usize,
            replication: self.replication,
            follower_reads: self.follower_reads,
            heartbeat_ms: self.heartbeat_ms,
            election_timeout_ms: self.election_timeout_ms,
            log_memory_bytes: self.log_memory_bytes,
            snapshot_log_bytes: self.snapshot_log_bytes,
            log_segment_bytes: log_segment_bytes(self.snapshot_log_bytes),
            cluster_secret_file: self.cluster_secret_file,
            requirepass_file: self.requirepass_file,
            tls,
            metrics_addr: self.metrics_addr,
            log_format: self.log_format,
            log_level: self.log_level,
        })
    }
}

/// A size in bytes: `1048576`, or with a binary unit, `1024k`, `64mb`,
/// `1GiB` (k, m, g; an optional b or ib; any case).
pub fn parse_byte_size(text: &str) -> Result<u64, String> {
    let lower = text.trim().to_ascii_lowercase();
    let digits_end = lower
        .find(|character: char| !character.is_ascii_digit())
        .unwrap_or(lower.len());
    let (digits, unit) = lower.split_at(digits_end);
    let shift = match unit.trim_end_matches("ib").trim_end_matches('b') {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        _ => return Err(format!("'{text}' is not a size (e.g. 1048576, 512mb, 2gb)")),
    };
    let number: u64 = digits
        .parse()
        .map_err(|_| format!("'{text}' is not a size (e.g. 1048576, 512mb, 2gb)"))?;
    number
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("'{text}' is too large"))
}

/// Parses `host:port,host:port`, dropping the entry that is this node.
pub fn parse_peers(list: &str, own_address: SocketAddr) -> Result<Vec<SocketAddr>, ConfigError> {
    let mut peers = Vec::new();
    for entry in list
        .split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
    {
        let address = resolve_peer(entry)?;
        if is_own_address(address, own_address) {
            continue;
        }
        if peers.contains(&address) {
            return Err(ConfigError::DuplicatePeer {
                entry: entry.to_string(),
            });
        }
        peers.push(address);
    }
    Ok(peers)
}

/// `HOST:PORT` (a name is resolved; its first address is taken).
fn parse_socket_address(text: &str) -> Result<SocketAddr, String> {
    if !text.contains(':') {
        return Err("expected HOST:PORT, e.g. 127.0.0.1:9121".to_string());
    }
    text.to_socket_addrs()
        .map_err(|error| error.to_string())?
        .next()
        .ok_or_else(|| "resolves to no address".to_string())
}

fn resolve_peer(entry: &str) -> Result<SocketAddr, ConfigError> {
    let invalid = |reason: String| ConfigError::InvalidPeer {
        entry: entry.to_string(),
        reason,
    };
    if !entry.contains(':') {
        return Err(invalid("missing ':port'".to_string()));
    }
    let mut addresses = entry
        .to_socket_addrs()
        .map_err(|error| invalid(error.to_string()))?;
    let address = addresses
        .next()
        .ok_or_else(|| invalid("resolves to no address".to_string()))?;
    if address.port() == 0 {
        return Err(invalid("port 0".to_string()));
    }
    Ok(address)
}

/// A peer is this node if it names the same port on the bound address, or
/// on loopback when bound to the unspecified address.
fn is_own_address(peer: SocketAddr, own: SocketAddr) -> bool {
    peer.port() == own.port()
        && (peer.ip() == own.ip() || (own.ip().is_unspecified() && peer.ip().is_loopback()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn own() -> SocketAddr {
        "127.0.0.1:7001".parse().unwrap()
    }

    fn args(list: &[&str]) -> Result<Config, ConfigError> {
        let argv = std::iter::once("kvstore-server").chain(list.iter().copied());
        ServerArgs::try_parse_from(argv).unwrap().into_config()
    }

    #[test]
    fn defaults_follow_the_port() {
        let config = args(&["7001"]).unwrap();
        assert_eq!(config.id, 7001);
        assert_eq!(config.listen, own());
        assert_eq!(config.data_dir, PathBuf::from("./kvstore-data/7001"));
        assert_eq!(config.fsync, FsyncPolicy::Always);
        assert_eq!(config.max_line_bytes, DEFAULT_MAX_LINE_BYTES);
        assert_eq!(config.idle_timeout_ms, Some(DEFAULT_IDLE_TIMEOUT_MS));
        assert_eq!(config.request_timeout_ms, Some(DEFAULT_REQUEST_TIMEOUT_MS));
        assert_eq!(config.max_memory_bytes, None);
        assert_eq!(
            config.max_client_buffer_bytes,
            DEFAULT_MAX_CLIENT_BUFFER_BYTES
        );
        assert!(config.peers.is_empty());
        assert_eq!(config.log_format, logger::Format::Text);
        assert_eq!(config.log_level, logger::Level::Info);
    }

    #[test]
    fn log_flags_take_a_format_and_a_level() {
        let config = args(&["7001", "--log-format", "json", "--log-level", "debug"]).unwrap();
        assert_eq!(config.log_format, logger::Format::Json);
        assert_eq!(config.log_level, logger::Level::Debug);
        let parsed =
            |list: &[&str]| ServerArgs::try_parse_from(["kvstore-server"].iter().chain(list));
        assert!(parsed(&["7001", "--log-format", "xml"]).is_err());
        assert!(parsed(&["7001", "--log-level", "trace"]).is_err());
    }

    #[test]
    fn peers_drop_the_own_address() {
        let peers = parse_peers("127.0.0.1:7001, 127.0.0.1:7002,localhost:7003", own()).unwrap();
        assert_eq!(peers.len(), 2);
        assert_eq!(peers[0], "127.0.0.1:7002".parse().unwrap());
        assert_eq!(peers[1].port(), 7003);
    }

    #[test]
    fn invalid_peers_are_named() {
        for bad in [
            "127.0.0.1",
            "127.0.0.1:notaport",
            "127.0.0.1:99999",
            "127.0.0.1:0",
        ] {
            match parse_peers(bad, own()) {
                Err(ConfigError::InvalidPeer { entry, .. }) => assert_eq!(entry, bad),
                other => panic!("{bad}: {other:?}"),
            }
        }
        assert_eq!(
            parse_peers("127.0.0.1:7002,127.0.0.1:7002", own()),
            Err(ConfigError::DuplicatePeer {
                entry: "127.0.0.1:7002".to_string()
            })
        );
    }

    #[test]
    fn bounds_are_checked() {
        assert!(matches!(
            args(&["7001", "--max-line-bytes", "3"]),
            Err(ConfigError::MaxLineBytesOutOfRange { value: 3 })
        ));
        assert!(matches!(
            args(&["7001", "--max-clients", "0"]),
            Err(ConfigError::MaxClientsOutOfRange { value: 0 })
        ));
        assert_eq!(
            args(&["7001", "--fsync-interval-ms", "0"]).unwrap_err(),
            ConfigError::ZeroFsyncInterval
        );
        assert_eq!(
            args(&["7001", "--snapshot-log-bytes", "65535"]).unwrap_err(),
            ConfigError::SnapshotLogBytesTooSmall { value: 65535 }
        );
    }

    /// Issue #10: a line the flag admits must make a record the log (and
    /// so a peer frame) carries.
    #[test]
    fn the_longest_line_allowed_makes_a_record_the_log_reads_back() {
        let longest = MAX_MAX_LINE_BYTES.to_string();
        let config = args(&["7001", "--max-line-bytes", &longest]).unwrap();
        assert_eq!(config.max_line_bytes, MAX_MAX_LINE_BYTES);
        let over = (MAX_MAX_LINE_BYTES + 1).to_string();
        assert!(matches!(
            args(&["7001", "--max-line-bytes", &over]),
            Err(ConfigError::MaxLineBytesOutOfRange { .. })
        ));
        // `PUT k <value>` of the longest line: all but 6 bytes are value.
        let value = vec![b'v'; MAX_MAX_LINE_BYTES - "PUT k ".len()];
        let entry = crate::log::Entry {
            epoch: 1,
            index: 1,
            commit: 0,
            op: crate::log::Op::Put {
                key: b"k",
                value: &value,
            },
        };
        assert!(crate::log::fits(&entry.op));
        let mut record = Vec::new();
        crate::log::encode(&entry, &mut record);
        assert_eq!(crate::log::decode(&record), Ok((entry, record.len())));
    }

    /// The seed's loopback session runs as before; a cluster any other
    /// machine can reach needs a secret; a single node needs none.
    #[test]
    fn a_cluster_off_loopback_needs_a_secret() {
        let loopback = args(&["7001", "127.0.0.1:7002,[::1]:7003"]).unwrap();
        assert!(!loopback.peers_authenticated());
        let everywhere = args(&["7001", "127.0.0.1:7002", "--host", "0.0.0.0"]);
        assert_eq!(
            everywhere.unwrap_err(),
            ConfigError::PeersNeedSecret {
                address: "0.0.0.0:7001".parse().unwrap()
            }
        );
        let remote_peer = args(&["7001", "10.0.0.2:7002"]);
        let error = remote_peer.unwrap_err();
        assert_eq!(
            error,
            ConfigError::PeersNeedSecret {
                address: "10.0.0.2:7002".parse().unwrap()
            }
        );
        assert!(
            error.to_string().contains("--cluster-secret-file"),
            "{error}"
        );
        let with_secret = ["7001", "10.0.0.2:7002", "--cluster-secret-file", "s"];
        assert!(args(&with_secret).unwrap().peers_authenticated());
        assert!(args(&["7001", "--host", "0.0.0.0"]).is_ok());
    }

    #[test]
    fn sizes_take_binary_units() {
        assert_eq!(parse_byte_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_byte_size("64k"), Ok(64 << 10));
        assert_eq!(parse_byte_size("512mb"), Ok(512 << 20));
        assert_eq!(parse_byte_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_byte_size("3G"), Ok(3 << 30));
        for bad in ["", "mb", "12tb", "1.5gb", "-1", "99999999999999999999g"] {
            assert!(parse_byte_size(bad).is_err(), "{bad}");
        }
        let limited = args(&["7001", "--max-memory-bytes", "100mb"]).unwrap();
        assert_eq!(limited.max_memory_bytes, Some(100 << 20));
        assert_eq!(
            args(&["7001", "--max-client-buffer-bytes", "1mb"]).unwrap_err(),
            ConfigError::ClientBufferBudgetTooSmall { value: 1 << 20 }
        );
    }

    #[test]
    fn tls_flags_go_together() {
        let plain = args(&["7001"]).unwrap();
        assert_eq!(plain.tls, None);
        let single = args(&["7001", "--tls-cert-file", "c", "--tls-key-file", "k"]).unwrap();
        let tls = single.tls.expect("TLS is on");
        assert_eq!((tls.ca_file, tls.client_auth), (None, false));
        let cluster = [
            "7001",
            "127.0.0.1:7002",
            "--tls-cert-file",
            "c",
            "--tls-key-file",
            "k",
        ];
        assert_eq!(args(&cluster).unwrap_err(), ConfigError::TlsClusterNeedsCa);
        let parsed =
            |list: &[&str]| ServerArgs::try_parse_from(["kvstore-server"].iter().chain(list));
        assert!(parsed(&["7001", "--tls-cert-file", "c"]).is_err());
        assert!(
            parsed(&[
                "7001",
                "--tls-client-auth",
                "--tls-cert-file",
                "c",
                "--tls-key-file",
                "k"
            ])
            .is_err()
        );
    }

    #[test]
    fn snapshots_default_on_and_size_the_log_segments() {
        let config = args(&["7001"]).unwrap();
        assert_eq!(config.snapshot_log_bytes, DEFAULT_SNAPSHOT_LOG_BYTES);
        assert_eq!(config.log_segment_bytes, 16 * 1024 * 1024);
        let small = args(&["7001", "--snapshot-log-bytes", "65536"]).unwrap();
        assert_eq!(small.log_segment_bytes, MIN_LOG_SEGMENT_BYTES);
        let off = args(&["7001", "--snapshot-log-bytes", "0"]).unwrap();
        assert_eq!(off.snapshot_log_bytes, 0);
        assert_eq!(off.log_segment_bytes, MAX_LOG_SEGMENT_BYTES);
    }

    #[test]
    fn metrics_are_off_unless_an_address_is_given() {
        assert_eq!(args(&["7001"]).unwrap().metrics_addr, None);
        let on = args(&["7001", "--metrics-addr", "127.0.0.1:0"]).unwrap();
        assert_eq!(on.metrics_addr, Some("127.0.0.1:0".parse().unwrap()));
        let parsed =
            |list: &[&str]| ServerArgs::try_parse_from(["kvstore-server"].iter().chain(list));
        assert!(parsed(&["7001", "--metrics-addr", "9121"]).is_err());
    }
}
