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
//! QUIT\n                -> (connection closed, no reply)
//! anything else         -> ERR <reason>
//! ```
//! A line ends in `\n` or `\r\n`; command names are case-insensitive; keys and
//! values are bytes (anything but `\n`), not necessarily UTF-8.

pub mod keyslot;
mod line;
mod reply;
pub mod resp;
pub mod resp_reply;

pub use line::{Framed, ParseError, Request, next_line, parse};
pub use reply::{ErrorReply, Reply, RoleReply};
