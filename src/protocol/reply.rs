//! Encoding replies onto a connection's outgoing bytes.

use std::fmt;
use std::io::Write;
use std::net::SocketAddr;

use super::ParseError;
use super::resp_reply::{self, Version};

/// What a RESP client is told while no leader is known (Redis Cluster's
/// text: cluster clients retry after refreshing their view).
pub const CLUSTER_DOWN: &str = "CLUSTERDOWN The cluster is down (no leader is known yet)";

/// One reply line. A value borrows from the store, so a GET's reply is copied
/// once: from the store's bytes into the connection's outgoing buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply<'a> {
    Ok,
    Value(&'a [u8]),
    NotFound,
    Pong,
    /// This node does not take the request; `None` while no leader is known.
    NotLeader(Option<(u64, SocketAddr)>),
    Error(ErrorReply),
    Role(RoleReply),
    /// A snapshot is durable: `OK <index>`.
    Snapshot(u64),
    /// `ERR snapshot failed: <reason>`.
    SnapshotFailed(&'a str),
}

/// What a reply tells of its request, for counting requests by result:
/// answered, refused with an error, or sent to the leader (or told no
/// leader is known).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Outcome {
    #[default]
    Ok,
    Error,
    Redirect,
}

impl Outcome {
    /// Every outcome, in the order of [`Outcome::index`].
    pub const ALL: [Outcome; 3] = [Outcome::Ok, Outcome::Error, Outcome::Redirect];

    /// The outcome's position in [`Outcome::ALL`] (counters are arrays).
    pub fn index(self) -> usize {
        self as usize
    }

    /// Its name as a metric label.
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Error => "error",
            Outcome::Redirect => "redirect",
        }
    }

    /// The outcome of a RESP reply from its encoded bytes: an error is
    /// `-`, and of errors `MOVED` and `CLUSTERDOWN` send the client
    /// elsewhere (or to wait for a leader). Anything else, an array of
    /// `EXEC` results included, answered the request.
    pub fn of_resp(encoded: &[u8]) -> Outcome {
        match encoded {
            [b'-', rest @ ..]
                if rest.starts_with(b"MOVED ") || rest.starts_with(b"CLUSTERDOWN ") =>
            {
                Outcome::Redirect
            }
            [b'-', ..] => Outcome::Error,
            _ => Outcome::Ok,
        }
    }
}

/// The answer to `ROLE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoleReply {
    pub role: &'static str,
    pub leader: Option<u64>,
    pub epoch: u64,
    pub commit_index: u64,
    /// The newest durable snapshot's index (0: none).
    pub snapshot_index: u64,
    /// What the store accounts for (`store::Store::used_bytes`).
    pub used_memory_bytes: usize,
    /// `--max-memory-bytes` (0: no limit).
    pub max_memory_bytes: usize,
}

/// The reasons behind `ERR <reason>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorReply {
    Parse(ParseError),
    LineTooLong {
        max_line_bytes: usize,
    },
    /// A `PUT` whose log record would exceed the log's bound on one record
    /// (`log::MAX_RECORD_BODY_BYTES`): at most `max_value_bytes` of value
    /// fit beside its key. Refused before anything is written.
    ValueTooLarge {
        max_value_bytes: usize,
    },
    TooManyClients,
    /// The log could not be written; the write's record is certainly not
    /// in it; the server is stopping.
    LogFailed,
    /// The log could not be written or synced, and the write's record may
    /// already be in the file (a restart may or may not find it).
    LogFailedOutcomeUnknown,
    ShuttingDown,
    /// A malformed peer handshake, or one that was not the first line.
    BadHandshake,
    /// The held replies of this connection lost their leader; their
    /// outcome is unknown.
    LeadershipLost,
    /// No whole request line within `--request-timeout-ms`: the connection
    /// is closed.
    RequestTimeout {
        timeout_ms: u64,
    },
    /// A write that would take the store past `--max-memory-bytes` (Redis's
    /// `maxmemory` with `noeviction`; its text).
    OutOfMemory,
    /// `--requirepass-file` is set and this connection has not sent the
    /// password yet (Redis's text).
    NoAuth,
    /// `AUTH` with a wrong password (Redis's text).
    WrongPassword,
    /// `AUTH` on a server without `--requirepass-file` (Redis's text).
    AuthNotConfigured,
}

impl fmt::Display for ErrorReply {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorReply::Parse(error) => error.fmt(formatter),
            ErrorReply::LineTooLong { max_line_bytes } => {
                write!(formatter, "line too long (limit {max_line_bytes} bytes)")
            }
            ErrorReply::ValueTooLarge { max_value_bytes } => {
                write!(formatter, "value too large (limit {max_value_bytes} bytes)")
            }
            ErrorReply::TooManyClients => write!(formatter, "max number of clients reached"),
            ErrorReply::LogFailed => write!(
                formatter,
                "log write failed, write not applied; server is stopping"
            ),
            ErrorReply::LogFailedOutcomeUnknown => write!(
                formatter,
                "log write failed; the write may or may not have been applied"
            ),
            ErrorReply::ShuttingDown => write!(formatter, "server is shutting down"),
            ErrorReply::BadHandshake => write!(
                formatter,
                "bad peer handshake (it must be the first line: KVPEER <version> <id> <host:port> <nonce>)"
            ),
            ErrorReply::LeadershipLost => write!(
                formatter,
                "leadership lost; earlier requests on this connection may or may not have been applied"
            ),
            ErrorReply::NoAuth => write!(formatter, "NOAUTH Authentication required."),
            ErrorReply::RequestTimeout { timeout_ms } => write!(
                formatter,
                "request timeout: no whole request line within {timeout_ms} ms; closing"
            ),
            ErrorReply::OutOfMemory => write!(
                formatter,
                "OOM command not allowed when used memory > max-memory-bytes"
            ),
            ErrorReply::WrongPassword => write!(
                formatter,
                "WRONGPASS invalid username-password pair or user is disabled."
            ),
            ErrorReply::AuthNotConfigured => write!(
                formatter,
                "AUTH <password> called without any password configured for the default \
                 user. Are you sure your configuration is correct?"
            ),
        }
    }
}

/// The wire format of a connection's replies, fixed by its first byte
/// (`*`: RESP) and, over RESP, by `HELLO`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// One reply line per request (`nc`, `kvstore-client`).
    #[default]
    Line,
    Resp(Version),
}

impl ErrorReply {
    /// The text of a RESP error (after the `-`): Redis's error codes where
    /// Redis has one (clients parse `OOM`, `NOAUTH`, `WRONGPASS`), `ERR`
    /// otherwise.
    pub fn resp_text(&self) -> String {
        match self {
            ErrorReply::NoAuth | ErrorReply::WrongPassword => self.to_string(),
            ErrorReply::OutOfMemory => {
                "OOM command not allowed when used memory > max-memory-bytes".to_string()
            }
            other => format!("ERR {other}"),
        }
    }
}

impl Reply<'_> {
    /// What the reply tells of its request.
    pub fn outcome(&self) -> Outcome {
        match self {
            Reply::NotLeader(_) => Outcome::Redirect,
            Reply::Error(_) | Reply::SnapshotFailed(_) => Outcome::Error,
            Reply::Ok
            | Reply::Value(_)
            | Reply::NotFound
            | Reply::Pong
            | Reply::Role(_)
            | Reply::Snapshot(_) => Outcome::Ok,
        }
    }

    /// Appends the reply in `protocol`'s format to `out`.
    pub fn encode_for(&self, protocol: Protocol, out: &mut Vec<u8>) {
        match protocol {
            Protocol::Line => self.encode(out),
            Protocol::Resp(version) => self.encode_resp(version, out),
        }
    }

    /// The RESP form of a reply the connection (not a command) makes:
    /// refusals, timeouts, AUTH's answers.
    fn encode_resp(&self, version: Version, out: &mut Vec<u8>) {
        match self {
            Reply::Ok => resp_reply::simple(out, "OK"),
            Reply::Value(value) => resp_reply::bulk(out, value),
            Reply::NotFound => resp_reply::null(out, version),
            Reply::Pong => resp_reply::simple(out, "PONG"),
            Reply::NotLeader(None) => resp_reply::error(out, CLUSTER_DOWN),
            Reply::NotLeader(Some((_, address))) => {
                resp_reply::error(out, &format!("MOVED 0 {address}"))
            }
            Reply::Error(reason) => resp_reply::error(out, &reason.resp_text()),
            Reply::Role(_) => resp_reply::error(out, "ERR ROLE is answered by the command layer"),
            Reply::Snapshot(index) => resp_reply::simple(out, &format!("OK {index}")),
            Reply::SnapshotFailed(reason) => {
                resp_reply::error(out, &format!("ERR snapshot failed: {reason}"))
            }
        }
    }

    /// Appends the reply and its `\n` to `out` (the line protocol).
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Reply::Ok => out.extend_from_slice(b"OK\n"),
            Reply::Value(value) => {
                out.reserve(value.len() + 1);
                out.extend_from_slice(value);
                out.push(b'\n');
            }
            Reply::NotFound => out.extend_from_slice(b"NOT_FOUND\n"),
            Reply::Pong => out.extend_from_slice(b"PONG\n"),
            Reply::NotLeader(None) => out.extend_from_slice(b"NOT_LEADER -1\n"),
            Reply::NotLeader(Some((id, address))) => {
                // Writing into a Vec cannot fail.
                let _ = writeln!(out, "NOT_LEADER {id} {address}");
            }
            Reply::Error(reason) => {
                let _ = writeln!(out, "ERR {reason}");
            }
            Reply::Role(role) => {
                let leader = role.leader.map_or(-1, |id| id as i128);
                let _ = writeln!(
                    out,
                    "{} {leader} {} {} {} {} {}",
                    role.role,
                    role.epoch,
                    role.commit_index,
                    role.snapshot_index,
                    role.used_memory_bytes,
                    role.max_memory_bytes
                );
            }
            Reply::Snapshot(index) => {
                let _ = writeln!(out, "OK {index}");
            }
            Reply::SnapshotFailed(reason) => {
                let _ = writeln!(out, "ERR snapshot failed: {reason}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(reply: Reply<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        reply.encode(&mut out);
        out
    }

    #[test]
    fn outcomes_follow_the_reply_and_not_the_value() {
        assert_eq!(Reply::Value(b"ERR not an error").outcome(), Outcome::Ok);
        assert_eq!(Reply::NotFound.outcome(), Outcome::Ok);
        assert_eq!(Reply::NotLeader(None).outcome(), Outcome::Redirect);
        let refusal = Reply::Error(ErrorReply::OutOfMemory);
        assert_eq!(refusal.outcome(), Outcome::Error);
        assert_eq!(Outcome::of_resp(b"$3\r\n-ok\r\n"), Outcome::Ok);
        assert_eq!(Outcome::of_resp(b"*2\r\n-ERR x\r\n"), Outcome::Ok);
        assert_eq!(Outcome::of_resp(b"-ERR syntax error\r\n"), Outcome::Error);
        assert_eq!(
            Outcome::of_resp(b"-MOVED 1 127.0.0.1:7001\r\n"),
            Outcome::Redirect
        );
        let down = format!("-{CLUSTER_DOWN}\r\n");
        assert_eq!(Outcome::of_resp(down.as_bytes()), Outcome::Redirect);
        assert_eq!(Outcome::of_resp(b""), Outcome::Ok);
        for outcome in Outcome::ALL {
            assert_eq!(Outcome::ALL[outcome.index()], outcome);
        }
    }

    #[test]
    fn encodes_every_reply_exactly() {
        assert_eq!(encoded(Reply::Ok), b"OK\n");
        assert_eq!(encoded(Reply::Value(b"a b\xff")), b"a b\xff\n");
        assert_eq!(encoded(Reply::Value(b"")), b"\n");
        assert_eq!(encoded(Reply::NotFound), b"NOT_FOUND\n");
        assert_eq!(encoded(Reply::Pong), b"PONG\n");
        assert_eq!(encoded(Reply::NotLeader(None)), b"NOT_LEADER -1\n");
        let leader = (12347, "127.0.0.1:12347".parse().unwrap());
        assert_eq!(
            encoded(Reply::NotLeader(Some(leader))),
            b"NOT_LEADER 12347 127.0.0.1:12347\n"
        );
        assert_eq!(
            encoded(Reply::Error(ErrorReply::Parse(ParseError::EmptyKey))),
            b"ERR empty key\n"
        );
        let role = RoleReply {
            role: "follower",
            leader: None,
            epoch: 4,
            commit_index: 9,
            snapshot_index: 7,
            used_memory_bytes: 1234,
            max_memory_bytes: 0,
        };
        assert_eq!(encoded(Reply::Role(role)), b"follower -1 4 9 7 1234 0\n");
        assert_eq!(
            encoded(Reply::Error(ErrorReply::OutOfMemory)),
            b"ERR OOM command not allowed when used memory > max-memory-bytes\n"
        );
        assert_eq!(encoded(Reply::Snapshot(12)), b"OK 12\n");
        assert_eq!(
            encoded(Reply::SnapshotFailed("No space left on device")),
            b"ERR snapshot failed: No space left on device\n"
        );
        assert_eq!(
            encoded(Reply::Error(ErrorReply::LineTooLong { max_line_bytes: 8 })),
            b"ERR line too long (limit 8 bytes)\n"
        );
        assert_eq!(
            encoded(Reply::Error(ErrorReply::ValueTooLarge {
                max_value_bytes: 9
            })),
            b"ERR value too large (limit 9 bytes)\n"
        );
    }
}
