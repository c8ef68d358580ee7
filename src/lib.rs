//! kvstore: a single-threaded, durable, replicated key-value server.
//!
//! One mio event loop owns every socket; one sans-IO core owns every piece of
//! state. The reactor moves bytes between sockets, the log file and the core;
//! the core turns inputs (a parsed request, a timer, "durable up to index i")
//! into outputs (replies, log records to append, timers to arm).
//!
//! # Layout
//!
//! - [`config`]: command-line flags to a validated [`config::Config`]; every default and bound.
//! - [`protocol`]: the client wire format: framing lines in a buffer, parsing
//!   them in place into a borrowed [`protocol::Request`], encoding replies.
//! - [`store`]: the in-memory map, bytes to bytes.
//! - [`log`]: the append-only, checksummed log: record format, segment files found
//!   by index, replay and recovery, the data directory and its lock.
//! - [`logger`]: the diagnostic lines on stderr: timestamp, level, node id,
//!   message (or one JSON object); the `log_error!` .. `log_debug!` macros.
//! - [`snapshot`]: the store as of one log index in one checksummed file: the
//!   format, naming, loading and atomic publishing.
//! - [`startup`]: from a data directory to a node: the newest usable snapshot,
//!   then the log after it.
//! - [`security`]: the peer handshake, secrets, passwords and TLS settings.
//! - [`timer`]: a hashed timer wheel that sets the poll timeout.
//! - [`node`]: the sans-IO core; the only owner of state. Never performs I/O.
//! - [`net`]: the mio reactor; the only module that touches sockets and files;
//!   with `--metrics-addr` it also serves `/metrics` and `/health` over HTTP.
//! - [`client`]: a small blocking client that follows `NOT_LEADER` redirects,
//!   and the parts of `kvstore-client` (quoting, line editing, pipe mode).
//! - [`failpoint`]: test-only crash points (`KVSTORE_FAILPOINT=<step>`).
//! - [`mod@bench`]: the load generator behind `kvstore-bench`: one event loop,
//!   many pipelined connections, latency percentiles.
//!
//! See `docs/ARCHITECTURE.md` for the path of one request.

pub mod bench;
pub mod client;
pub mod config;
pub mod failpoint;
pub mod log;
pub mod logger;
pub mod net;
pub mod node;
pub mod protocol;
pub mod security;
pub mod snapshot;
pub mod startup;
pub mod store;
pub mod timer;
