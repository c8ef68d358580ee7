//! The client wire format: one request per line, one reply line per request.
//!
//! Owns framing (finding whole lines in a connection's buffer), parsing a line
//! in place into a [`Request`] that borrows from that buffer, and encoding
//! replies. Never allocates per request and never performs I/O.
//!
//! ```text
//! PUT <key> <value>\n   -> OK            (value: the rest of the line, may hold spaces, may be empty)
//! GET <key>\n           -> <value> | NOT_FOUND
//! DEL <key>\n           -> OK | NOT_FOUND
//! PING\n                -> PONG
//! ROLE\n                -> <leader|follower|electing|candidate|adopting> <leader-id|-1> <epoch> <commit-index>
//!                          <snapshot-index> <used-memory-bytes> <max-memory-bytes (0: none)>
//! INFO\n                -> <field>=<value> <field>=<value> ... (RESP INFO's fields, one line)
//! QUIT\n                -> (connection closed, no reply)
//! anything else         -> ERR <reason>
//! ```
//! A line ends in `\n` or `\r\n`; command names are case-insensitive; keys and
//! values are bytes (anything but `\n`), not necessarily UTF-8.
//!
//! The pure pieces of the Redis protocol (RESP), for Redis clients, live
//! beside it, with the same rules (in place, no I/O):
//!
//! - [`resp`]: framing one `*<count>` array of bulk strings, in place.
//! - [`resp_reply`]: encoding RESP2 and RESP3 replies.
//! - [`keyslot`]: Redis Cluster's hash slot of a key.
//! - [`command_table`]: the commands answered over RESP, with Redis 7's
//!   metadata for `COMMAND` and arity checks.

pub mod command_table;
pub mod keyslot;
mod line;
mod reply;
pub mod resp;
pub mod resp_reply;

pub use line::{
    COMMAND_NAMES, CommandName, Framed, ParseError, Request, command_index_of, key_hints,
    next_line, next_line_after, parse,
};
pub use reply::{CLUSTER_DOWN, ErrorReply, Outcome, Protocol, Reply, RoleReply};
