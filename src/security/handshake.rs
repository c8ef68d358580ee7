//! The peer handshake: the line a node opens a peer connection with, and
//! the line the accepting node answers with.
//!
//! ```text
//! "KVPEER <protocol-version> <node-id> <listen-ip:port>\n"
//! ```
//!
//! This module owns the handshake's wire form and its checks; it never
//! touches a socket: the reactor (`crate::net`) moves the bytes.

use std::fmt;
use std::io::Write as _;
use std::net::SocketAddr;

use crate::node::message::NodeId;

/// Bumped whenever the handshake or the frame layout changes, so that nodes of
/// different builds refuse each other instead of misreading each other.
pub const PEER_PROTOCOL_VERSION: u32 = 2;

/// What a peer's first line starts with; no client command does, so the
/// reactor can tell a peer from a client by its first bytes.
pub const HANDSHAKE_PREFIX: &[u8] = b"KVPEER ";

/// A node's handshake: who it is and where it listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello {
    pub id: NodeId,
    pub address: SocketAddr,
}

/// Why a handshake line was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HelloError {
    /// Not `KVPEER <version> <id> <ip:port>`.
    Malformed,
    /// A well-formed prefix and version, but not ours.
    VersionMismatch { ours: u32, theirs: u32 },
}

impl fmt::Display for HelloError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HelloError::Malformed => formatter.write_str(
                "malformed peer handshake, expected KVPEER <version> <node-id> <ip:port>",
            ),
            HelloError::VersionMismatch { ours, theirs } => write!(
                formatter,
                "peer protocol version mismatch: ours is {ours}, theirs is {theirs}"
            ),
        }
    }
}

impl std::error::Error for HelloError {}

/// Appends the handshake line for `hello`, terminator included.
pub fn encode_hello(hello: &Hello, out: &mut Vec<u8>) {
    out.extend_from_slice(HANDSHAKE_PREFIX);
    // `SocketAddr`'s Display brackets IPv6 hosts, which is what parsing expects.
    writeln!(
        out,
        "{PEER_PROTOCOL_VERSION} {} {}",
        hello.id, hello.address
    )
    .expect("writing to a Vec cannot fail");
}

/// Parses a handshake line without its `\n` (one trailing `\r` is tolerated).
///
/// The version is checked before the rest of the line, so a peer of another
/// version is reported as such even if its line has a different shape.
pub fn parse_hello(line: &[u8]) -> Result<Hello, HelloError> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let fields = line
        .strip_prefix(HANDSHAKE_PREFIX)
        .ok_or(HelloError::Malformed)?;
    let (version, rest) = split_field(fields).ok_or(HelloError::Malformed)?;
    let theirs: u32 = parse_decimal(version).ok_or(HelloError::Malformed)?;
    if theirs != PEER_PROTOCOL_VERSION {
        return Err(HelloError::VersionMismatch {
            ours: PEER_PROTOCOL_VERSION,
            theirs,
        });
    }
    let (id, address) = split_field(rest).ok_or(HelloError::Malformed)?;
    let id: NodeId = parse_decimal(id).ok_or(HelloError::Malformed)?;
    // The address is the last field, so it may not contain a space.
    let address = std::str::from_utf8(address)
        .ok()
        .filter(|address| !address.contains(' '))
        .and_then(|address| address.parse::<SocketAddr>().ok())
        .ok_or(HelloError::Malformed)?;
    Ok(Hello { id, address })
}

/// Splits at the first space: the field before it and the rest after it.
fn split_field(line: &[u8]) -> Option<(&[u8], &[u8])> {
    let space = memchr::memchr(b' ', line)?;
    Some((&line[..space], &line[space + 1..]))
}

/// Digits only: `str::parse` alone would also accept a leading `+`.
fn parse_decimal<Number: std::str::FromStr>(field: &[u8]) -> Option<Number> {
    if field.is_empty() || !field.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(field).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(id: NodeId, address: &str) -> Hello {
        Hello {
            id,
            address: address.parse().expect("test address"),
        }
    }

    #[test]
    fn hello_layout_is_exact() {
        let mut out = b"before".to_vec();
        encode_hello(&hello(7002, "127.0.0.1:7002"), &mut out);
        assert_eq!(out, b"beforeKVPEER 2 7002 127.0.0.1:7002\n");
    }

    #[test]
    fn hello_round_trips() {
        let hellos = [
            hello(7002, "127.0.0.1:7002"),
            hello(0, "0.0.0.0:1"),
            hello(u64::MAX, "[::1]:65535"),
            hello(3, "[2001:db8::7]:7000"),
        ];
        for hello in hellos {
            let mut line = Vec::new();
            encode_hello(&hello, &mut line);
            assert!(line.starts_with(HANDSHAKE_PREFIX));
            let without_newline = line.strip_suffix(b"\n").expect("ends in a newline");
            assert_eq!(parse_hello(without_newline), Ok(hello));
        }
    }

    #[test]
    fn hello_tolerates_one_carriage_return() {
        let expected = Ok(hello(7002, "127.0.0.1:7002"));
        assert_eq!(parse_hello(b"KVPEER 2 7002 127.0.0.1:7002\r"), expected);
        assert_eq!(
            parse_hello(b"KVPEER 2 7002 127.0.0.1:7002\r\r"),
            Err(HelloError::Malformed)
        );
    }

    #[test]
    fn hello_of_another_version_is_a_mismatch() {
        let mismatch = |theirs| Err(HelloError::VersionMismatch { ours: 2, theirs });
        assert_eq!(parse_hello(b"KVPEER 1 7002 127.0.0.1:7002"), mismatch(1));
        assert_eq!(parse_hello(b"KVPEER 0 7002 127.0.0.1:7002"), mismatch(0));
        // A future version may shape the rest of its line differently.
        assert_eq!(parse_hello(b"KVPEER 4294967295 x"), mismatch(u32::MAX));
    }

    #[test]
    fn malformed_hellos_are_refused() {
        let lines: [&[u8]; 19] = [
            b"",
            b"KVPEER",
            b"KVPEER ",
            b"KVPEER 2",
            b"KVPEER 2 ",
            b"KVPEER 2 7002",
            b"KVPEER 2 7002 ",
            b"GET key",
            b"kvpeer 1 7002 127.0.0.1:7002",
            b"KVPEER  1 7002 127.0.0.1:7002",
            b"KVPEER one 7002 127.0.0.1:7002",
            b"KVPEER 2 node 127.0.0.1:7002",
            b"KVPEER 2 +7002 127.0.0.1:7002",
            b"KVPEER 2 18446744073709551616 127.0.0.1:7002",
            b"KVPEER 2 7002 127.0.0.1",
            b"KVPEER 2 7002 localhost:7002",
            b"KVPEER 2 7002 127.0.0.1:70000",
            b"KVPEER 2 7002 127.0.0.1:7002 extra",
            b"KVPEER 2 7002 \xff\xfe:7002",
        ];
        for line in lines {
            assert_eq!(
                parse_hello(line),
                Err(HelloError::Malformed),
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn hello_errors_display_their_cause() {
        let mismatch = HelloError::VersionMismatch { ours: 1, theirs: 2 };
        assert_eq!(
            mismatch.to_string(),
            "peer protocol version mismatch: ours is 1, theirs is 2"
        );
        assert!(HelloError::Malformed.to_string().contains("KVPEER"));
    }
}
