//! The peer handshake (protocol version 3): before either node of a peer
//! connection takes the other's frames, each proves that it holds the
//! cluster secret, in a mutual challenge-response.
//!
//! ```text
//! dialer   -> acceptor: "KVPEER 3 <dialer-id> <dialer-ip:port> <dialer-nonce>\n"
//! acceptor -> dialer:   "KVPEER 3 <acceptor-id> <acceptor-ip:port> <acceptor-nonce> <acceptor-proof>\n"
//! dialer   -> acceptor: "KVPROOF <dialer-proof>\n"
//! ```
//!
//! A nonce is [`NONCE_BYTES`] bytes from the OS's CSPRNG ([`fresh_nonce`]);
//! a proof is an HMAC-SHA256. Both travel as 64 hex digits, written in
//! lowercase and read in either case. A proof is the HMAC, keyed with the
//! cluster secret ([`ClusterKey`]; the empty key when the cluster runs
//! without one), of this transcript:
//!
//! ```text
//! "kvstore-peer-handshake\0"
//! "acceptor\0" or "dialer\0"        whose proof it is
//! u32 LE     protocol version
//! u64 LE     dialer id
//! u64 LE     acceptor id
//! u16 LE     length, then the dialer's address text (SocketAddr's Display)
//! u16 LE     length, then the acceptor's address text
//! 32 bytes   dialer nonce
//! 32 bytes   acceptor nonce
//! ```
//!
//! Both nonces are fresh, so a proof recorded in another session does not
//! verify (no replay); the direction label keeps the acceptor's proof from
//! passing as the dialer's (no reflection); both ids and addresses are
//! inside, so a proof does not move to another identity. The dialer checks
//! the acceptor's proof before it sends its own, so a node without the
//! secret never gets a dialer proof out of a node that has it.
//!
//! [`Dialing`] and [`Accepting`] are the two sides' states. They take whole
//! lines ([`take_line`] cuts them out of a buffer), the key and the time as
//! `now_ms`, and append what to send to an output buffer. This module owns
//! the wire form and the checks; it never touches a socket and never reads a
//! clock, and it draws randomness only in [`fresh_nonce`]: the reactor
//! (`crate::net`) moves the bytes and reads the clock.
//!
//! Until the reactor switches to [`Dialing`] and [`Accepting`], it speaks
//! the unauthenticated one-line-each-way form of [`encode_hello`] and
//! [`parse_hello`]: `KVPEER 3 <node-id> <ip:port>`, with neither nonce nor
//! proof (section "Unauthenticated lines" below).

use std::fmt;
use std::io::{self, Write as _};
use std::net::SocketAddr;

use hmac::Mac as _;

use super::{HmacSha256, fill_random, keyed_mac};
use crate::node::message::NodeId;

/// Bumped whenever the handshake or the frame layout changes, so that nodes of
/// different builds refuse each other instead of misreading each other.
/// Version 3 brought the challenge-response.
pub const PEER_PROTOCOL_VERSION: u32 = 3;

/// What a peer's first line starts with; no client command does, so the
/// reactor can tell a peer from a client by its first bytes. The acceptor's
/// reply starts with it too.
pub const HANDSHAKE_PREFIX: &[u8] = b"KVPEER ";

/// What the dialer's last handshake line, its proof, starts with.
pub const PROOF_PREFIX: &[u8] = b"KVPROOF ";

/// A side whose handshake has not finished this long after it started gives
/// up ([`HandshakeError::TooSlow`]), so a connection that stalls mid-way
/// cannot hold a slot forever.
pub const HANDSHAKE_TIMEOUT_MS: u64 = 1000;

/// A handshake line, its `\n` included, is at most this long. The longest a
/// node sends is 219 bytes: the acceptor's reply with a 20-digit id and a
/// bracketed IPv6 address with a scope id.
pub const MAX_HANDSHAKE_LINE_BYTES: usize = 256;

/// Bytes of randomness each side contributes to a handshake.
pub const NONCE_BYTES: usize = 32;

/// One side's challenge: fresh random bytes, never used twice.
pub type Nonce = [u8; NONCE_BYTES];

/// Bytes of a proof: HMAC-SHA256's output.
const PROOF_BYTES: usize = 32;

/// One side's answer to both challenges: the HMAC of the transcript.
type Proof = [u8; PROOF_BYTES];

/// Keeps these proofs apart from any other HMAC made with the same secret.
const TRANSCRIPT_DOMAIN: &[u8] = b"kvstore-peer-handshake\0";
const ACCEPTOR_LABEL: &[u8] = b"acceptor\0";
const DIALER_LABEL: &[u8] = b"dialer\0";

/// Digits of the hex written on the wire (reading takes either case).
const LOWERCASE_HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// A node's identity in a handshake: who it is and where it listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello {
    pub id: NodeId,
    pub address: SocketAddr,
}

/// The secret every node of a cluster holds: the key of every proof.
///
/// While a secret is being rotated a node holds two: it proves with the
/// first and accepts proofs made with either (`docs/SECURITY.md`).
///
/// Its `Debug` says only whether there is a secret, never its bytes.
pub struct ClusterKey {
    /// The first proves; every one verifies. Never empty.
    secrets: Vec<Vec<u8>>,
}

impl ClusterKey {
    /// A key of `secret`'s bytes, as read by
    /// `security::secret_file::read_secret_file` (which refuses one shorter
    /// than `MIN_CLUSTER_SECRET_BYTES`). An empty `secret` is the same as
    /// [`ClusterKey::unauthenticated`].
    pub fn new(secret: Vec<u8>) -> ClusterKey {
        ClusterKey {
            secrets: vec![secret],
        }
    }

    /// During a rotation: proves with `current`, and accepts proofs made
    /// with `current` or `previous`.
    pub fn rotating(current: Vec<u8>, previous: Vec<u8>) -> ClusterKey {
        ClusterKey {
            secrets: vec![current, previous],
        }
    }

    /// The empty key of a cluster run without a secret: proofs still bind a
    /// handshake to its nonces and identities, but anyone can make them.
    pub fn unauthenticated() -> ClusterKey {
        ClusterKey::new(Vec::new())
    }

    /// Whether proofs made with this key show that a peer holds a secret.
    pub fn is_authenticated(&self) -> bool {
        !self.secrets[0].is_empty()
    }

    /// The secret proofs are made with.
    fn proving(&self) -> &[u8] {
        &self.secrets[0]
    }
}

impl fmt::Debug for ClusterKey {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("ClusterKey")
            .field("authenticated", &self.is_authenticated())
            .finish_non_exhaustive()
    }
}

/// Why a handshake failed. Every one ends the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeError {
    /// Not the line this step expects: a missing or extra field, a number
    /// that is not decimal, an address that does not parse, a nonce or proof
    /// that is not exactly 64 hex digits.
    Malformed,
    /// A `KVPEER` line whose version is not ours, whatever the rest of it.
    VersionMismatch { ours: u32, theirs: u32 },
    /// The other side's proof does not verify: it does not hold our secret,
    /// or the line it answers was altered or replayed.
    WrongProof,
    /// No `\n` within [`MAX_HANDSHAKE_LINE_BYTES`].
    TooLong,
    /// The line came [`HANDSHAKE_TIMEOUT_MS`] or more after the handshake
    /// started.
    TooSlow,
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandshakeError::Malformed => formatter.write_str(
                "malformed peer handshake line: expected KVPEER <version> <node-id> <ip:port> \
                 <nonce> [<proof>] or KVPROOF <proof>, each nonce and proof 64 hex digits",
            ),
            HandshakeError::VersionMismatch { ours, theirs } => write!(
                formatter,
                "peer protocol version mismatch: ours is {ours}, theirs is {theirs} \
                 (every node of a cluster must run a release of the same protocol version)"
            ),
            HandshakeError::WrongProof => formatter.write_str(
                "the peer's proof does not match: it does not hold this cluster's secret \
                 (check --cluster-secret-file on both nodes)",
            ),
            HandshakeError::TooLong => write!(
                formatter,
                "peer handshake line longer than {MAX_HANDSHAKE_LINE_BYTES} bytes: \
                 the other end does not speak this peer protocol"
            ),
            HandshakeError::TooSlow => write!(
                formatter,
                "the peer did not finish its handshake within {HANDSHAKE_TIMEOUT_MS} ms"
            ),
        }
    }
}

impl std::error::Error for HandshakeError {}

/// A fresh nonce from the operating system's CSPRNG.
pub fn fresh_nonce() -> io::Result<Nonce> {
    let mut nonce = [0; NONCE_BYTES];
    fill_random(&mut nonce)?;
    Ok(nonce)
}

/// Cuts the first `\n`-terminated line out of `buffer`: the line without its
/// `\n` (and without one `\r` before it), and the bytes it consumed.
/// `Ok(None)` while the line is incomplete; [`HandshakeError::TooLong`] when
/// no `\n` is among the first [`MAX_HANDSHAKE_LINE_BYTES`] bytes, whether or
/// not more have arrived.
pub fn take_line(buffer: &[u8]) -> Result<Option<(&[u8], usize)>, HandshakeError> {
    let window = &buffer[..buffer.len().min(MAX_HANDSHAKE_LINE_BYTES)];
    match memchr::memchr(b'\n', window) {
        Some(newline) => {
            let line = &buffer[..newline];
            Ok(Some((
                line.strip_suffix(b"\r").unwrap_or(line),
                newline + 1,
            )))
        }
        None if buffer.len() >= MAX_HANDSHAKE_LINE_BYTES => Err(HandshakeError::TooLong),
        None => Ok(None),
    }
}

// ---------------------------------------------------------------------------
// The two sides
// ---------------------------------------------------------------------------

/// The dialing node's side, from its first line until the acceptor's reply.
#[derive(Debug)]
pub struct Dialing {
    own: Hello,
    nonce: Nonce,
    started_ms: u64,
}

impl Dialing {
    /// Starts a handshake as `own` with `nonce` (from [`fresh_nonce`]):
    /// appends the first line to `out`.
    pub fn start(own: Hello, nonce: Nonce, now_ms: u64, out: &mut Vec<u8>) -> Dialing {
        encode_peer_line(&own, &nonce, None, out);
        Dialing {
            own,
            nonce,
            started_ms: now_ms,
        }
    }

    /// Takes the acceptor's reply line (without its `\n`), verifies the
    /// acceptor's proof and only then appends our `KVPROOF` line to `out`.
    /// Returns the acceptor's identity, now verified. On an error nothing is
    /// appended.
    pub fn on_reply(
        self,
        line: &[u8],
        key: &ClusterKey,
        now_ms: u64,
        out: &mut Vec<u8>,
    ) -> Result<Hello, HandshakeError> {
        if self.expired(now_ms) {
            return Err(HandshakeError::TooSlow);
        }
        let reply = parse_acceptor_line(line)?;
        let transcript = Transcript {
            dialer: self.own,
            acceptor: reply.hello,
            dialer_nonce: self.nonce,
            acceptor_nonce: reply.nonce,
        };
        transcript.verify(key, Direction::Acceptor, &reply.proof)?;
        encode_proof_line(&transcript.prove(key, Direction::Dialer), out);
        Ok(reply.hello)
    }

    /// Whether [`HANDSHAKE_TIMEOUT_MS`] have passed since [`Dialing::start`].
    pub fn expired(&self, now_ms: u64) -> bool {
        has_expired(self.started_ms, now_ms)
    }
}

/// The accepting node's side, from the dialer's first line until its proof.
#[derive(Debug)]
pub struct Accepting {
    transcript: Transcript,
    started_ms: u64,
}

impl Accepting {
    /// Takes the dialer's first line (without its `\n`) and appends our
    /// reply, with our identity `own`, `nonce` (from [`fresh_nonce`]) and
    /// proof, to `out`. On an error nothing is appended.
    pub fn on_hello(
        line: &[u8],
        own: Hello,
        nonce: Nonce,
        key: &ClusterKey,
        now_ms: u64,
        out: &mut Vec<u8>,
    ) -> Result<Accepting, HandshakeError> {
        let (claimed, dialer_nonce) = parse_dialer_line(line)?;
        let transcript = Transcript {
            dialer: claimed,
            acceptor: own,
            dialer_nonce,
            acceptor_nonce: nonce,
        };
        let proof = transcript.prove(key, Direction::Acceptor);
        encode_peer_line(&own, &nonce, Some(&proof), out);
        Ok(Accepting {
            transcript,
            started_ms: now_ms,
        })
    }

    /// Who the dialer says it is. NOT verified until [`Accepting::on_proof`]
    /// succeeds: use it only to refuse early (say, an address that is not a
    /// configured peer), never to trust.
    pub fn claimed(&self) -> Hello {
        self.transcript.dialer
    }

    /// Takes the dialer's `KVPROOF` line (without its `\n`) and returns the
    /// dialer's identity, now verified.
    pub fn on_proof(
        self,
        line: &[u8],
        key: &ClusterKey,
        now_ms: u64,
    ) -> Result<Hello, HandshakeError> {
        if self.expired(now_ms) {
            return Err(HandshakeError::TooSlow);
        }
        let proof = parse_proof_line(line)?;
        self.transcript.verify(key, Direction::Dialer, &proof)?;
        Ok(self.transcript.dialer)
    }

    /// Whether [`HANDSHAKE_TIMEOUT_MS`] have passed since
    /// [`Accepting::on_hello`].
    pub fn expired(&self, now_ms: u64) -> bool {
        has_expired(self.started_ms, now_ms)
    }
}

/// A clock that went backwards counts as no time passed.
fn has_expired(started_ms: u64, now_ms: u64) -> bool {
    now_ms.saturating_sub(started_ms) >= HANDSHAKE_TIMEOUT_MS
}

// ---------------------------------------------------------------------------
// Proofs
// ---------------------------------------------------------------------------

/// Whose proof: the label that keeps one side's proof from passing as the
/// other's.
#[derive(Debug, Clone, Copy)]
enum Direction {
    Acceptor,
    Dialer,
}

impl Direction {
    fn label(self) -> &'static [u8] {
        match self {
            Direction::Acceptor => ACCEPTOR_LABEL,
            Direction::Dialer => DIALER_LABEL,
        }
    }
}

/// What both proofs of one handshake cover: both ends and both nonces.
#[derive(Debug, Clone, Copy)]
struct Transcript {
    dialer: Hello,
    acceptor: Hello,
    dialer_nonce: Nonce,
    acceptor_nonce: Nonce,
}

impl Transcript {
    /// The MAC over this transcript in `direction`, as laid out in the
    /// module documentation.
    fn mac(&self, secret: &[u8], direction: Direction) -> HmacSha256 {
        let mut mac = keyed_mac(secret);
        mac.update(TRANSCRIPT_DOMAIN);
        mac.update(direction.label());
        mac.update(&PEER_PROTOCOL_VERSION.to_le_bytes());
        mac.update(&self.dialer.id.to_le_bytes());
        mac.update(&self.acceptor.id.to_le_bytes());
        update_with_address(&mut mac, self.dialer.address);
        update_with_address(&mut mac, self.acceptor.address);
        mac.update(&self.dialer_nonce);
        mac.update(&self.acceptor_nonce);
        mac
    }

    fn prove(&self, key: &ClusterKey, direction: Direction) -> Proof {
        self.mac(key.proving(), direction)
            .finalize()
            .into_bytes()
            .into()
    }

    /// Compares in constant time (`verify_slice`), so the time a refusal
    /// takes says nothing about how much of `proof` was right. Every secret
    /// of `key` is tried (at most two: which one matched is no secret).
    fn verify(
        &self,
        key: &ClusterKey,
        direction: Direction,
        proof: &Proof,
    ) -> Result<(), HandshakeError> {
        let matched = key
            .secrets
            .iter()
            .any(|secret| self.mac(secret, direction).verify_slice(proof).is_ok());
        matched.then_some(()).ok_or(HandshakeError::WrongProof)
    }
}

/// The address as its text, prefixed with the text's length, so that no
/// two (dialer, acceptor) pairs of addresses give the same bytes.
fn update_with_address(mac: &mut HmacSha256, address: SocketAddr) {
    let text = address.to_string();
    let length = u16::try_from(text.len()).expect("a socket address's text is under 64 bytes");
    mac.update(&length.to_le_bytes());
    mac.update(text.as_bytes());
}

// ---------------------------------------------------------------------------
// Lines
// ---------------------------------------------------------------------------

/// Appends a `KVPEER` line: a dialer's with `proof` None, an acceptor's with
/// its proof.
fn encode_peer_line(hello: &Hello, nonce: &Nonce, proof: Option<&Proof>, out: &mut Vec<u8>) {
    let line_start = out.len();
    put_hello(hello, out);
    out.push(b' ');
    put_hex(nonce, out);
    if let Some(proof) = proof {
        out.push(b' ');
        put_hex(proof, out);
    }
    out.push(b'\n');
    debug_assert!(out.len() - line_start <= MAX_HANDSHAKE_LINE_BYTES);
}

fn encode_proof_line(proof: &Proof, out: &mut Vec<u8>) {
    out.extend_from_slice(PROOF_PREFIX);
    put_hex(proof, out);
    out.push(b'\n');
}

/// Appends `KVPEER <version> <id> <ip:port>`, without a terminator.
fn put_hello(hello: &Hello, out: &mut Vec<u8>) {
    out.extend_from_slice(HANDSHAKE_PREFIX);
    // `SocketAddr`'s Display brackets IPv6 hosts, which is what parsing expects.
    write!(
        out,
        "{PEER_PROTOCOL_VERSION} {} {}",
        hello.id, hello.address
    )
    .expect("writing to a Vec cannot fail");
}

fn put_hex(bytes: &[u8], out: &mut Vec<u8>) {
    for byte in bytes {
        out.push(LOWERCASE_HEX_DIGITS[usize::from(byte >> 4)]);
        out.push(LOWERCASE_HEX_DIGITS[usize::from(byte & 0x0f)]);
    }
}

/// The acceptor's reply, parsed but not verified.
struct AcceptorLine {
    hello: Hello,
    nonce: Nonce,
    proof: Proof,
}

/// `KVPEER <version> <id> <ip:port> <nonce>`.
fn parse_dialer_line(line: &[u8]) -> Result<(Hello, Nonce), HandshakeError> {
    let [id, address, nonce] = peer_line_fields(line)?;
    Ok((parse_hello_fields(id, address)?, parse_hex(nonce)?))
}

/// `KVPEER <version> <id> <ip:port> <nonce> <proof>`.
fn parse_acceptor_line(line: &[u8]) -> Result<AcceptorLine, HandshakeError> {
    let [id, address, nonce, proof] = peer_line_fields(line)?;
    Ok(AcceptorLine {
        hello: parse_hello_fields(id, address)?,
        nonce: parse_hex(nonce)?,
        proof: parse_hex(proof)?,
    })
}

/// `KVPROOF <proof>`.
fn parse_proof_line(line: &[u8]) -> Result<Proof, HandshakeError> {
    let proof = line
        .strip_prefix(PROOF_PREFIX)
        .ok_or(HandshakeError::Malformed)?;
    parse_hex(proof)
}

/// The `FIELDS` fields after `KVPEER <version> `: each non-empty, one space
/// between them, none after. The version is checked first, so a peer of
/// another version is reported as such whatever the shape of the rest.
fn peer_line_fields<const FIELDS: usize>(line: &[u8]) -> Result<[&[u8]; FIELDS], HandshakeError> {
    let after_prefix = line
        .strip_prefix(HANDSHAKE_PREFIX)
        .ok_or(HandshakeError::Malformed)?;
    let (version, rest) = split_field(after_prefix).unwrap_or((after_prefix, b""));
    check_version(version)?;
    let mut parts = rest.split(|&byte| byte == b' ');
    let mut fields: [&[u8]; FIELDS] = [b""; FIELDS];
    for field in &mut fields {
        *field = parts
            .next()
            .filter(|part| !part.is_empty())
            .ok_or(HandshakeError::Malformed)?;
    }
    match parts.next() {
        None => Ok(fields),
        Some(_) => Err(HandshakeError::Malformed),
    }
}

fn check_version(field: &[u8]) -> Result<(), HandshakeError> {
    let theirs: u32 = parse_decimal(field).ok_or(HandshakeError::Malformed)?;
    if theirs != PEER_PROTOCOL_VERSION {
        return Err(HandshakeError::VersionMismatch {
            ours: PEER_PROTOCOL_VERSION,
            theirs,
        });
    }
    Ok(())
}

fn parse_hello_fields(id: &[u8], address: &[u8]) -> Result<Hello, HandshakeError> {
    let id: NodeId = parse_decimal(id).ok_or(HandshakeError::Malformed)?;
    let address = std::str::from_utf8(address)
        .ok()
        .and_then(|address| address.parse::<SocketAddr>().ok())
        .ok_or(HandshakeError::Malformed)?;
    Ok(Hello { id, address })
}

/// Exactly two hex digits (either case) per byte, nothing else.
fn parse_hex<const BYTES: usize>(field: &[u8]) -> Result<[u8; BYTES], HandshakeError> {
    if field.len() != 2 * BYTES {
        return Err(HandshakeError::Malformed);
    }
    let mut bytes = [0; BYTES];
    for (byte, digits) in bytes.iter_mut().zip(field.chunks_exact(2)) {
        *byte = hex_digit_value(digits[0])? << 4 | hex_digit_value(digits[1])?;
    }
    Ok(bytes)
}

fn hex_digit_value(digit: u8) -> Result<u8, HandshakeError> {
    let value = char::from(digit)
        .to_digit(16)
        .ok_or(HandshakeError::Malformed)?;
    Ok(u8::try_from(value).expect("a hex digit is below 16"))
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

// ---------------------------------------------------------------------------
// Unauthenticated lines, until the reactor switches to `Dialing`/`Accepting`
// ---------------------------------------------------------------------------

/// Appends `KVPEER <version> <id> <ip:port>\n`: the one line each side sends
/// in the reactor's handshake today, with neither nonce nor proof. Goes once
/// the reactor runs [`Dialing`] and [`Accepting`].
pub fn encode_hello(hello: &Hello, out: &mut Vec<u8>) {
    put_hello(hello, out);
    out.push(b'\n');
}

/// Parses the line [`encode_hello`] writes, without its `\n` (one trailing
/// `\r` is tolerated). The version is checked before the rest of the line.
pub fn parse_hello(line: &[u8]) -> Result<Hello, HandshakeError> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let [id, address] = peer_line_fields(line)?;
    parse_hello_fields(id, address)
}

#[cfg(test)]
mod tests {
    use super::*;

    // -- Fixtures -----------------------------------------------------------

    /// 00 01 02 .. 1f
    const DIALER_NONCE: Nonce = counting_from(0x00);
    /// a0 a1 a2 .. bf
    const ACCEPTOR_NONCE: Nonce = counting_from(0xa0);
    /// Another session's acceptor nonce: 40 41 .. 5f
    const LATER_ACCEPTOR_NONCE: Nonce = counting_from(0x40);

    const DIALER_NONCE_HEX: &str =
        "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    const ACCEPTOR_NONCE_HEX: &str =
        "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf";

    const fn counting_from(first: u8) -> Nonce {
        let mut nonce = [0; NONCE_BYTES];
        let mut index = 0;
        while index < NONCE_BYTES {
            nonce[index] = first.wrapping_add(index as u8);
            index += 1;
        }
        nonce
    }

    fn hello(id: NodeId, address: &str) -> Hello {
        Hello {
            id,
            address: address.parse().expect("test address"),
        }
    }

    fn dialer() -> Hello {
        hello(7001, "127.0.0.1:7001")
    }

    fn acceptor() -> Hello {
        hello(7002, "127.0.0.1:7002")
    }

    fn key(secret: &str) -> ClusterKey {
        ClusterKey::new(secret.as_bytes().to_vec())
    }

    fn secret() -> ClusterKey {
        key("the tests' cluster secret, more than 32 bytes long")
    }

    /// The one line in `out`, without its `\n`; asserts there is exactly one.
    fn only_line(out: &[u8]) -> &[u8] {
        let (line, consumed) = take_line(out).expect("a short line").expect("a whole line");
        assert_eq!(consumed, out.len(), "{:?}", String::from_utf8_lossy(out));
        line
    }

    /// The dialer's first line as `who` with [`DIALER_NONCE`], `\n` included.
    fn first_line(who: Hello) -> Vec<u8> {
        let mut out = Vec::new();
        Dialing::start(who, DIALER_NONCE, 0, &mut out);
        out
    }

    /// An acceptor holding `key` that took `first` and replied with `nonce`.
    fn accepting(first: &[u8], nonce: Nonce, key: &ClusterKey) -> (Accepting, Vec<u8>) {
        let mut reply = Vec::new();
        let accepting =
            Accepting::on_hello(only_line(first), acceptor(), nonce, key, 0, &mut reply)
                .expect("a well-formed first line");
        (accepting, reply)
    }

    /// The `KVPROOF` line a dialer `who` holding `key` sends to an acceptor
    /// holding the same key and replying with `acceptor_nonce`.
    fn proof_line(who: Hello, acceptor_nonce: Nonce, key: &ClusterKey) -> Vec<u8> {
        let mut first = Vec::new();
        let dialing = Dialing::start(who, DIALER_NONCE, 0, &mut first);
        let (_, reply) = accepting(&first, acceptor_nonce, key);
        let mut proof = Vec::new();
        dialing
            .on_reply(only_line(&reply), key, 0, &mut proof)
            .expect("same key, so the acceptor's proof verifies");
        proof
    }

    /// One end of a handshake in a test.
    struct Party {
        hello: Hello,
        nonce: Nonce,
        key: ClusterKey,
    }

    /// What one handshake at time 0 came to.
    struct Outcome {
        /// The dialer's view of the acceptor.
        dialer_view: Result<Hello, HandshakeError>,
        /// The acceptor's view of the dialer; None when the dialer refused
        /// and sent no proof.
        acceptor_view: Option<Result<Hello, HandshakeError>>,
        /// The acceptor's reply line, `\n` included.
        reply: Vec<u8>,
    }

    fn exchange(dialer: Party, acceptor: Party) -> Outcome {
        let mut first = Vec::new();
        let dialing = Dialing::start(dialer.hello, dialer.nonce, 0, &mut first);
        let mut reply = Vec::new();
        let line = only_line(&first);
        let accepting = Accepting::on_hello(
            line,
            acceptor.hello,
            acceptor.nonce,
            &acceptor.key,
            0,
            &mut reply,
        )
        .expect("a well-formed first line");
        assert_eq!(accepting.claimed(), dialer.hello);
        let mut proof = Vec::new();
        let dialer_view = dialing.on_reply(only_line(&reply), &dialer.key, 0, &mut proof);
        let acceptor_view =
            (!proof.is_empty()).then(|| accepting.on_proof(only_line(&proof), &acceptor.key, 0));
        Outcome {
            dialer_view,
            acceptor_view,
            reply,
        }
    }

    /// [`exchange`] between [`dialer`] and [`acceptor`] with the fixed nonces.
    fn run_handshake(
        dialer_key: ClusterKey,
        acceptor_key: ClusterKey,
    ) -> (
        Result<Hello, HandshakeError>,
        Option<Result<Hello, HandshakeError>>,
    ) {
        let outcome = exchange(
            Party {
                hello: dialer(),
                nonce: DIALER_NONCE,
                key: dialer_key,
            },
            Party {
                hello: acceptor(),
                nonce: ACCEPTOR_NONCE,
                key: acceptor_key,
            },
        );
        (outcome.dialer_view, outcome.acceptor_view)
    }

    /// What an acceptor holding [`secret`], which took [`dialer`]'s first
    /// line and replied with `nonce`, makes of the proof line `line`.
    fn acceptor_verdict(line: &[u8], nonce: Nonce) -> Result<Hello, HandshakeError> {
        let (accepting, _) = accepting(&first_line(dialer()), nonce, &secret());
        accepting.on_proof(line, &secret(), 0)
    }

    /// The proof, in hex, that the module documentation's transcript gives
    /// for [`dialer`], [`acceptor`] and the two fixed nonces; built here byte
    /// by byte, independently of `Transcript`.
    fn documented_proof_hex(label: &[u8], key: &[u8]) -> String {
        let mut transcript = b"kvstore-peer-handshake\0".to_vec();
        transcript.extend_from_slice(label);
        transcript.extend_from_slice(&[3, 0, 0, 0]);
        transcript.extend_from_slice(&7001u64.to_le_bytes());
        transcript.extend_from_slice(&7002u64.to_le_bytes());
        transcript.extend_from_slice(&[14, 0]);
        transcript.extend_from_slice(b"127.0.0.1:7001");
        transcript.extend_from_slice(&[14, 0]);
        transcript.extend_from_slice(b"127.0.0.1:7002");
        transcript.extend_from_slice(&DIALER_NONCE);
        transcript.extend_from_slice(&ACCEPTOR_NONCE);
        let mut mac = <hmac::Hmac<sha2::Sha256> as hmac::KeyInit>::new_from_slice(key).unwrap();
        mac.update(&transcript);
        let proof = mac.finalize().into_bytes();
        proof.iter().map(|byte| format!("{byte:02x}")).collect()
    }

    // -- Rotation -------------------------------------------------------------

    fn old_secret() -> ClusterKey {
        key("the old cluster secret, being rotated out, 32+ bytes")
    }

    fn new_and_old() -> ClusterKey {
        let new = b"the tests' cluster secret, more than 32 bytes long".to_vec();
        let old = b"the old cluster secret, being rotated out, 32+ bytes".to_vec();
        ClusterKey::rotating(new, old)
    }

    fn old_and_new() -> ClusterKey {
        ClusterKey::rotating(old_secret().proving().to_vec(), secret().proving().to_vec())
    }

    fn both_accept(dialer_key: ClusterKey, acceptor_key: ClusterKey) {
        let (dialer_view, acceptor_view) = run_handshake(dialer_key, acceptor_key);
        assert_eq!(dialer_view, Ok(acceptor()));
        assert_eq!(acceptor_view, Some(Ok(dialer())));
    }

    /// The rolling rotation of docs/SECURITY.md: every node restarts with
    /// (old, new), then each with (new, old), then each with (new); at
    /// every moment any two nodes accept each other.
    #[test]
    fn each_step_of_a_rolling_rotation_keeps_nodes_talking() {
        // Step 1, part way: (old, new) beside old.
        both_accept(old_and_new(), old_secret());
        both_accept(old_secret(), old_and_new());
        // Step 2, part way: (new, old) beside (old, new).
        both_accept(new_and_old(), old_and_new());
        both_accept(old_and_new(), new_and_old());
        // Step 3, part way: new beside (new, old).
        both_accept(secret(), new_and_old());
        both_accept(new_and_old(), secret());
    }

    /// Skipping step 1: a node proving with the new secret is refused by
    /// one that holds only the old.
    #[test]
    fn a_node_that_only_knows_the_old_secret_refuses_the_new_one() {
        let (dialer_view, acceptor_view) = run_handshake(new_and_old(), old_secret());
        assert_eq!(dialer_view, Ok(acceptor()));
        assert_eq!(acceptor_view, Some(Err(HandshakeError::WrongProof)));
        let (dialer_view, acceptor_view) = run_handshake(old_secret(), new_and_old());
        assert_eq!(dialer_view, Err(HandshakeError::WrongProof));
        assert_eq!(acceptor_view, None);
    }

    // -- Line layout --------------------------------------------------------

    #[test]
    fn dialer_line_layout_is_exact() {
        let mut out = b"before".to_vec();
        Dialing::start(dialer(), DIALER_NONCE, 0, &mut out);
        let expected = format!("beforeKVPEER 3 7001 127.0.0.1:7001 {DIALER_NONCE_HEX}\n");
        assert_eq!(String::from_utf8(out).unwrap(), expected);
    }

    #[test]
    fn acceptor_line_layout_and_proof_are_exact() {
        let (_, reply) = accepting(&first_line(dialer()), ACCEPTOR_NONCE, &secret());
        let proof = documented_proof_hex(b"acceptor\0", &secret().secrets[0]);
        let expected = format!("KVPEER 3 7002 127.0.0.1:7002 {ACCEPTOR_NONCE_HEX} {proof}\n");
        assert_eq!(String::from_utf8(reply).unwrap(), expected);
    }

    #[test]
    fn proof_line_layout_and_proof_are_exact() {
        for key in [secret(), ClusterKey::unauthenticated()] {
            let line = proof_line(dialer(), ACCEPTOR_NONCE, &key);
            let proof = documented_proof_hex(b"dialer\0", &key.secrets[0]);
            assert_eq!(
                String::from_utf8(line).unwrap(),
                format!("KVPROOF {proof}\n")
            );
        }
    }

    #[test]
    fn a_known_dialer_line_parses() {
        let line = format!("KVPEER 3 7001 127.0.0.1:7001 {DIALER_NONCE_HEX}");
        let mut reply = Vec::new();
        let accepting = Accepting::on_hello(
            line.as_bytes(),
            acceptor(),
            ACCEPTOR_NONCE,
            &secret(),
            0,
            &mut reply,
        )
        .unwrap();
        assert_eq!(accepting.claimed(), dialer());
        assert_eq!(accepting.transcript.dialer_nonce, DIALER_NONCE);
        assert!(reply.starts_with(b"KVPEER 3 7002 127.0.0.1:7002 a0a1"));
    }

    #[test]
    fn hex_is_read_in_either_case() {
        let upper = first_line(dialer()).to_ascii_uppercase();
        assert!(upper.ends_with(b"1C1D1E1F\n"));
        let (accepting, _) = accepting(&upper, ACCEPTOR_NONCE, &secret());
        assert_eq!(accepting.transcript.dialer_nonce, DIALER_NONCE);
        let proof = proof_line(dialer(), ACCEPTOR_NONCE, &secret());
        let proof = [
            PROOF_PREFIX,
            &only_line(&proof)[PROOF_PREFIX.len()..].to_ascii_uppercase(),
        ]
        .concat();
        assert_eq!(accepting.on_proof(&proof, &secret(), 0), Ok(dialer()));
    }

    #[test]
    fn the_longest_line_fits_the_limit() {
        let longest = hello(
            u64::MAX,
            "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff%4294967295]:65535",
        );
        let outcome = exchange(
            Party {
                hello: dialer(),
                nonce: DIALER_NONCE,
                key: secret(),
            },
            Party {
                hello: longest,
                nonce: ACCEPTOR_NONCE,
                key: secret(),
            },
        );
        assert_eq!(outcome.reply.len(), 219);
        assert!(outcome.reply.len() <= MAX_HANDSHAKE_LINE_BYTES);
        assert_eq!(outcome.dialer_view, Ok(longest));
        assert_eq!(outcome.acceptor_view, Some(Ok(dialer())));
    }

    // -- Whole exchanges ----------------------------------------------------

    #[test]
    fn a_good_exchange_verifies_both_sides() {
        let (dialer_view, acceptor_view) = run_handshake(secret(), secret());
        assert_eq!(dialer_view, Ok(acceptor()));
        assert_eq!(acceptor_view, Some(Ok(dialer())));
    }

    #[test]
    fn a_good_exchange_over_ipv6_with_fresh_nonces() {
        let near = hello(1, "[::1]:7001");
        let far = hello(u64::MAX, "[2001:db8::7]:7002");
        let outcome = exchange(
            Party {
                hello: near,
                nonce: fresh_nonce().unwrap(),
                key: secret(),
            },
            Party {
                hello: far,
                nonce: fresh_nonce().unwrap(),
                key: secret(),
            },
        );
        assert_eq!(outcome.dialer_view, Ok(far));
        assert_eq!(outcome.acceptor_view, Some(Ok(near)));
    }

    #[test]
    fn a_cluster_without_a_secret_still_completes() {
        assert_eq!(
            run_handshake(ClusterKey::unauthenticated(), ClusterKey::unauthenticated()),
            (Ok(acceptor()), Some(Ok(dialer())))
        );
    }

    #[test]
    fn a_wrong_secret_is_detected_by_the_dialer() {
        let (dialer_view, acceptor_view) =
            run_handshake(key("secret A, 32 bytes or more...."), secret());
        assert_eq!(dialer_view, Err(HandshakeError::WrongProof));
        assert_eq!(acceptor_view, None, "the dialer sends no proof");
    }

    #[test]
    fn a_wrong_secret_is_detected_by_the_acceptor() {
        // A dialer holding another secret, which reached the proof step with
        // an acceptor of its own secret, given the same identities and nonces.
        let other = key("secret A, 32 bytes or more....");
        let proof = proof_line(dialer(), ACCEPTOR_NONCE, &other);
        let verdict = acceptor_verdict(only_line(&proof), ACCEPTOR_NONCE);
        assert_eq!(verdict, Err(HandshakeError::WrongProof));
    }

    #[test]
    fn a_node_without_a_secret_meets_one_with_a_secret() {
        let none = ClusterKey::unauthenticated();
        let refused = (Err(HandshakeError::WrongProof), None);
        assert_eq!(
            run_handshake(ClusterKey::unauthenticated(), secret()),
            refused
        );
        assert_eq!(
            run_handshake(secret(), ClusterKey::unauthenticated()),
            refused
        );
        let unauthenticated_proof = proof_line(dialer(), ACCEPTOR_NONCE, &none);
        let verdict = acceptor_verdict(only_line(&unauthenticated_proof), ACCEPTOR_NONCE);
        assert_eq!(verdict, Err(HandshakeError::WrongProof));
    }

    // -- Attacks ------------------------------------------------------------

    #[test]
    fn a_replayed_proof_fails_against_a_new_nonce() {
        let recorded = proof_line(dialer(), ACCEPTOR_NONCE, &secret());
        // The same session again verifies: the refusal below is the nonce's.
        let same = acceptor_verdict(only_line(&recorded), ACCEPTOR_NONCE);
        assert_eq!(same, Ok(dialer()));
        let later = acceptor_verdict(only_line(&recorded), LATER_ACCEPTOR_NONCE);
        assert_eq!(later, Err(HandshakeError::WrongProof));
    }

    #[test]
    fn a_reflected_acceptor_proof_fails_as_the_dialer_proof() {
        let (accepting, reply) = accepting(&first_line(dialer()), ACCEPTOR_NONCE, &secret());
        let acceptor_proof = only_line(&reply)
            .rsplit(|&byte| byte == b' ')
            .next()
            .unwrap();
        assert_eq!(acceptor_proof.len(), 2 * PROOF_BYTES);
        let reflected = [PROOF_PREFIX, acceptor_proof].concat();
        assert_eq!(
            accepting.on_proof(&reflected, &secret(), 0),
            Err(HandshakeError::WrongProof)
        );
    }

    #[test]
    fn a_proof_for_another_id_or_address_fails() {
        // A key holder proves as another identity than its line claimed
        // (the acceptor took `dialer()`'s line: node 7001 at 127.0.0.1:7001).
        let proven_identities = [
            hello(7009, "127.0.0.1:7001"),
            hello(7001, "127.0.0.1:9999"),
            hello(7001, "[::1]:7001"),
        ];
        for proven in proven_identities {
            let proof = proof_line(proven, ACCEPTOR_NONCE, &secret());
            let verdict = acceptor_verdict(only_line(&proof), ACCEPTOR_NONCE);
            assert_eq!(verdict, Err(HandshakeError::WrongProof), "{proven:?}");
        }
    }

    #[test]
    fn a_tampered_first_line_makes_the_dialer_refuse() {
        let tampered_lines = [
            first_line(hello(7009, "127.0.0.1:7001")),
            first_line(hello(7001, "127.0.0.1:9999")),
        ];
        for tampered in tampered_lines {
            // The genuine dialer sent its own line; a man in the middle
            // passed the acceptor the tampered one.
            let mut first = Vec::new();
            let dialing = Dialing::start(dialer(), DIALER_NONCE, 0, &mut first);
            let (_, reply) = accepting(&tampered, ACCEPTOR_NONCE, &secret());
            let mut proof = Vec::new();
            let outcome = dialing.on_reply(only_line(&reply), &secret(), 0, &mut proof);
            assert_eq!(outcome, Err(HandshakeError::WrongProof));
            assert!(proof.is_empty());
        }
    }

    #[test]
    fn a_tampered_reply_makes_the_dialer_refuse() {
        let (_, reply) = accepting(&first_line(dialer()), ACCEPTOR_NONCE, &secret());
        let reply = String::from_utf8(reply).unwrap();
        let tampered_replies = [
            reply.replacen("KVPEER 3 7002 ", "KVPEER 3 7003 ", 1),
            reply.replacen("127.0.0.1:7002", "127.0.0.1:7003", 1),
            reply.replacen("a0a1", "a0a2", 1),
        ];
        for tampered in tampered_replies {
            assert_ne!(tampered, reply);
            let mut first = Vec::new();
            let dialing = Dialing::start(dialer(), DIALER_NONCE, 0, &mut first);
            let mut proof = Vec::new();
            let outcome =
                dialing.on_reply(only_line(tampered.as_bytes()), &secret(), 0, &mut proof);
            assert_eq!(outcome, Err(HandshakeError::WrongProof), "{tampered}");
            assert!(proof.is_empty());
        }
    }

    // -- Malformed, too long, too slow, other versions ----------------------

    fn on_hello(line: &[u8]) -> Result<Accepting, HandshakeError> {
        let mut reply = Vec::new();
        let outcome =
            Accepting::on_hello(line, acceptor(), ACCEPTOR_NONCE, &secret(), 0, &mut reply);
        assert_eq!(
            outcome.is_err(),
            reply.is_empty(),
            "a reply only on success"
        );
        outcome
    }

    fn on_reply(line: &[u8]) -> Result<Hello, HandshakeError> {
        let mut first = Vec::new();
        let dialing = Dialing::start(dialer(), DIALER_NONCE, 0, &mut first);
        let mut proof = Vec::new();
        let outcome = dialing.on_reply(line, &secret(), 0, &mut proof);
        assert!(proof.is_empty(), "a proof only after a verified reply");
        outcome
    }

    #[test]
    fn malformed_first_lines_are_refused() {
        let nonce = DIALER_NONCE_HEX;
        let short = &nonce[1..];
        let lines = [
            String::new(),
            "KVPEER".into(),
            "KVPEER ".into(),
            "KVPEER 3".into(),
            "KVPEER 3 7001 127.0.0.1:7001".into(),
            "KVPEER 3 7001 127.0.0.1:7001 ".into(),
            format!("KVPEER 3 7001 127.0.0.1:7001 {short}"),
            format!("KVPEER 3 7001 127.0.0.1:7001 {nonce}0"),
            format!(
                "KVPEER 3 7001 127.0.0.1:7001 {}",
                nonce.replacen('0', "g", 1)
            ),
            format!(
                "KVPEER 3 7001 127.0.0.1:7001 {}",
                nonce.replacen("00", "é", 1)
            ),
            format!("KVPEER 3 7001 127.0.0.1:7001 {nonce} "),
            format!("KVPEER 3 7001 127.0.0.1:7001  {nonce}"),
            format!("KVPEER 3 7001 127.0.0.1:7001 {nonce} {nonce}"),
            format!("KVPEER  3 7001 127.0.0.1:7001 {nonce}"),
            format!("kvpeer 3 7001 127.0.0.1:7001 {nonce}"),
            format!("KVPEER three 7001 127.0.0.1:7001 {nonce}"),
            format!("KVPEER 3 node 127.0.0.1:7001 {nonce}"),
            format!("KVPEER 3 +7001 127.0.0.1:7001 {nonce}"),
            format!("KVPEER 3 18446744073709551616 127.0.0.1:7001 {nonce}"),
            format!("KVPEER 3 7001 localhost:7001 {nonce}"),
            format!("KVPEER 3 7001 127.0.0.1:70000 {nonce}"),
            format!("KVPROOF {nonce}"),
        ];
        for line in lines {
            assert_eq!(
                on_hello(line.as_bytes()).err(),
                Some(HandshakeError::Malformed),
                "{line:?}"
            );
        }
        let not_utf8 = [b"KVPEER 3 7001 \xff:7001 ", nonce.as_bytes()].concat();
        assert_eq!(on_hello(&not_utf8).err(), Some(HandshakeError::Malformed));
    }

    #[test]
    fn malformed_replies_are_refused() {
        let nonce = ACCEPTOR_NONCE_HEX;
        let lines = [
            format!("KVPEER 3 7002 127.0.0.1:7002 {nonce}"),
            format!("KVPEER 3 7002 127.0.0.1:7002 {nonce} "),
            format!("KVPEER 3 7002 127.0.0.1:7002 {nonce} {}", &nonce[2..]),
            format!(
                "KVPEER 3 7002 127.0.0.1:7002 {nonce} {}",
                nonce.replacen('a', "x", 1)
            ),
            format!("KVPEER 3 7002 127.0.0.1:7002 {nonce} {nonce} {nonce}"),
            format!("KVPROOF {nonce}"),
        ];
        for line in lines {
            assert_eq!(
                on_reply(line.as_bytes()),
                Err(HandshakeError::Malformed),
                "{line:?}"
            );
        }
    }

    #[test]
    fn malformed_proof_lines_are_refused() {
        let good = proof_line(dialer(), ACCEPTOR_NONCE, &secret());
        let good = String::from_utf8(only_line(&good).to_vec()).unwrap();
        let proof = &good[PROOF_PREFIX.len()..];
        let lines = [
            String::new(),
            "KVPROOF".into(),
            "KVPROOF ".into(),
            format!("KVPROOF {}", &proof[1..]),
            format!("KVPROOF {proof}0"),
            format!("KVPROOF {}z", &proof[1..]),
            format!("KVPROOF  {proof}"),
            format!("KVPROOF {proof} "),
            format!("kvproof {proof}"),
            format!("KVPEER 3 7001 127.0.0.1:7001 {proof}"),
        ];
        for line in lines {
            assert_eq!(
                acceptor_verdict(line.as_bytes(), ACCEPTOR_NONCE),
                Err(HandshakeError::Malformed),
                "{line:?}"
            );
        }
        assert_eq!(
            acceptor_verdict(good.as_bytes(), ACCEPTOR_NONCE),
            Ok(dialer())
        );
    }

    #[test]
    fn another_version_is_a_mismatch_whatever_its_shape() {
        let mismatch = |theirs| Err(HandshakeError::VersionMismatch { ours: 3, theirs });
        // A version-2 node sends its id and address only.
        assert_eq!(
            on_hello(b"KVPEER 2 1 127.0.0.1:7001").err(),
            mismatch(2).err()
        );
        assert_eq!(on_reply(b"KVPEER 2 7002 127.0.0.1:7002"), mismatch(2));
        assert_eq!(on_hello(b"KVPEER 2").err(), mismatch(2).err());
        assert_eq!(on_reply(b"KVPEER 4294967295 x"), mismatch(u32::MAX));
        assert_eq!(parse_hello(b"KVPEER 2 1 127.0.0.1:7001"), mismatch(2));
    }

    #[test]
    fn take_line_cuts_one_line() {
        assert_eq!(take_line(b""), Ok(None));
        assert_eq!(take_line(b"KVPEER 3 7001"), Ok(None));
        assert_eq!(
            take_line(b"KVPROOF ab\nnext"),
            Ok(Some((&b"KVPROOF ab"[..], 11)))
        );
        assert_eq!(
            take_line(b"KVPROOF ab\r\n"),
            Ok(Some((&b"KVPROOF ab"[..], 12)))
        );
        assert_eq!(
            take_line(b"KVPROOF ab\r\r\n"),
            Ok(Some((&b"KVPROOF ab\r"[..], 13)))
        );
        assert_eq!(take_line(b"\n"), Ok(Some((&b""[..], 1))));
    }

    #[test]
    fn take_line_refuses_a_line_past_the_limit() {
        let mut buffer = vec![b'x'; MAX_HANDSHAKE_LINE_BYTES - 1];
        assert_eq!(take_line(&buffer), Ok(None));
        buffer.push(b'\n');
        let longest = take_line(&buffer).unwrap().unwrap();
        assert_eq!(
            longest,
            (
                &buffer[..MAX_HANDSHAKE_LINE_BYTES - 1],
                MAX_HANDSHAKE_LINE_BYTES
            )
        );
        buffer.insert(0, b'x');
        assert_eq!(take_line(&buffer), Err(HandshakeError::TooLong));
        buffer.pop();
        assert_eq!(take_line(&buffer), Err(HandshakeError::TooLong));
    }

    #[test]
    fn a_late_reply_is_too_slow() {
        let started_ms = 5_000;
        let mut first = Vec::new();
        let dialing = Dialing::start(dialer(), DIALER_NONCE, started_ms, &mut first);
        assert!(!dialing.expired(started_ms - 1), "a clock that went back");
        assert!(!dialing.expired(started_ms + HANDSHAKE_TIMEOUT_MS - 1));
        assert!(dialing.expired(started_ms + HANDSHAKE_TIMEOUT_MS));
        let (_, reply) = accepting(&first, ACCEPTOR_NONCE, &secret());
        let mut proof = Vec::new();
        let late = started_ms + HANDSHAKE_TIMEOUT_MS;
        assert_eq!(
            dialing.on_reply(only_line(&reply), &secret(), late, &mut proof),
            Err(HandshakeError::TooSlow)
        );
        assert!(proof.is_empty());
    }

    #[test]
    fn a_late_proof_is_too_slow() {
        let proof = proof_line(dialer(), ACCEPTOR_NONCE, &secret());
        let started_ms = 5_000;
        let on_proof_at = |now_ms| {
            let mut reply = Vec::new();
            let line = only_line(&first_line(dialer())).to_vec();
            let accepting = Accepting::on_hello(
                &line,
                acceptor(),
                ACCEPTOR_NONCE,
                &secret(),
                started_ms,
                &mut reply,
            )
            .unwrap();
            assert_eq!(
                accepting.expired(now_ms),
                now_ms >= started_ms + HANDSHAKE_TIMEOUT_MS
            );
            accepting.on_proof(only_line(&proof), &secret(), now_ms)
        };
        assert_eq!(
            on_proof_at(started_ms + HANDSHAKE_TIMEOUT_MS - 1),
            Ok(dialer())
        );
        assert_eq!(
            on_proof_at(started_ms + HANDSHAKE_TIMEOUT_MS),
            Err(HandshakeError::TooSlow)
        );
        assert_eq!(on_proof_at(u64::MAX), Err(HandshakeError::TooSlow));
    }

    // -- Keys, nonces, messages ---------------------------------------------

    #[test]
    fn a_key_never_shows_its_secret() {
        let shown = format!("{:?}", key("hunter2hunter2hunter2hunter2hunter2"));
        assert_eq!(shown, "ClusterKey { authenticated: true, .. }");
        let none = ClusterKey::unauthenticated();
        assert!(!none.is_authenticated());
        assert!(!ClusterKey::new(Vec::new()).is_authenticated());
        assert_eq!(
            format!("{none:?}"),
            "ClusterKey { authenticated: false, .. }"
        );
    }

    #[test]
    fn fresh_nonces_differ() {
        let first = fresh_nonce().unwrap();
        let second = fresh_nonce().unwrap();
        assert_ne!(first, second);
        assert_ne!(first, [0; NONCE_BYTES]);
    }

    #[test]
    fn errors_tell_the_operator_what_is_wrong() {
        let mismatch = HandshakeError::VersionMismatch { ours: 3, theirs: 2 };
        assert!(
            mismatch
                .to_string()
                .starts_with("peer protocol version mismatch: ours is 3, theirs is 2 ")
        );
        let wrong = HandshakeError::WrongProof.to_string();
        assert!(
            wrong.contains("does not hold this cluster's secret"),
            "{wrong}"
        );
        assert!(wrong.contains("--cluster-secret-file"), "{wrong}");
        let malformed = HandshakeError::Malformed.to_string();
        assert!(malformed.contains("KVPEER") && malformed.contains("KVPROOF"));
        assert!(HandshakeError::TooLong.to_string().contains("256 bytes"));
        assert!(HandshakeError::TooSlow.to_string().contains("1000 ms"));
    }

    // -- Unauthenticated lines ----------------------------------------------

    #[test]
    fn hello_layout_is_exact() {
        let mut out = b"before".to_vec();
        encode_hello(&acceptor(), &mut out);
        assert_eq!(out, b"beforeKVPEER 3 7002 127.0.0.1:7002\n");
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
            assert_eq!(parse_hello(only_line(&line)), Ok(hello));
        }
    }

    #[test]
    fn hello_tolerates_one_carriage_return() {
        assert_eq!(
            parse_hello(b"KVPEER 3 7002 127.0.0.1:7002\r"),
            Ok(acceptor())
        );
        assert_eq!(
            parse_hello(b"KVPEER 3 7002 127.0.0.1:7002\r\r"),
            Err(HandshakeError::Malformed)
        );
    }

    #[test]
    fn malformed_hellos_are_refused() {
        let lines: [&[u8]; 18] = [
            b"",
            b"KVPEER",
            b"KVPEER ",
            b"KVPEER 3",
            b"KVPEER 3 ",
            b"KVPEER 3 7002",
            b"KVPEER 3 7002 ",
            b"GET key",
            b"kvpeer 3 7002 127.0.0.1:7002",
            b"KVPEER  3 7002 127.0.0.1:7002",
            b"KVPEER one 7002 127.0.0.1:7002",
            b"KVPEER 3 node 127.0.0.1:7002",
            b"KVPEER 3 +7002 127.0.0.1:7002",
            b"KVPEER 3 18446744073709551616 127.0.0.1:7002",
            b"KVPEER 3 7002 127.0.0.1",
            b"KVPEER 3 7002 127.0.0.1:7002 extra",
            b"KVPEER 3 7002 127.0.0.1:70000",
            b"KVPEER 3 7002 \xff\xfe:7002",
        ];
        for line in lines {
            assert_eq!(
                parse_hello(line),
                Err(HandshakeError::Malformed),
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
    }
}
