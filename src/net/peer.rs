//! Peer connections. Each node dials every configured peer and sends its own
//! messages on the connection it dialed (an *outbound link*); it receives a
//! peer's messages on the connection that peer dialed (an *inbound peer*).
//!
//! Before any frame, the two prove to each other that they hold the
//! cluster's secret (`security::handshake`): the dialer sends its `KVPEER`
//! line with a nonce, the acceptor answers with its own line, nonce and
//! proof, and the dialer, once that proof checks out, sends its `KVPROOF`.
//! An accepted connection is a [`PendingPeer`] until the dialer's proof
//! checks out; only then does it become an [`InboundPeer`] whose frames
//! reach the core. After that only the dialer sends, in binary frames. Only
//! these bytes move here: what the messages mean is the core's business.

use std::io::{self, Read, Write};
use std::net::SocketAddr;

use super::Transport;
use crate::node::message::{self, Envelope, FrameError, NodeId};
use crate::security::handshake::{
    self, Accepting, ClusterKey, Dialing, HANDSHAKE_TIMEOUT_MS, HandshakeError, Hello,
    MAX_HANDSHAKE_LINE_BYTES,
};

/// A peer that cannot keep up is cut off past this many unsent bytes; it
/// reconnects and the leader resends from what it acknowledged. Room for
/// the largest frame being written and as much again queued behind it: a
/// link is never cut for carrying one record of the largest size.
pub const MAX_UNSENT_PEER_BYTES: usize = 2 * message::MAX_FRAME_BYTES;
const READ_CHUNK_BYTES: usize = 64 * 1024;
/// A peer buffer emptied of a frame larger than the largest batch target is
/// released rather than kept: one large record does not pin its memory on
/// every link for the rest of the process.
const RETAINED_PEER_BUFFER_BYTES: usize = message::FETCH_REPLY_TARGET_RECORDS_BYTES;

/// Why a peer connection is dropped.
#[derive(Debug)]
pub enum PeerError {
    Io(io::Error),
    Closed,
    Handshake(HandshakeError),
    /// The acceptor sent something after its handshake line.
    UnexpectedBytes,
    Frame(FrameError),
    /// A frame claimed to come from another node than the handshake named.
    Impersonation {
        claimed: NodeId,
        handshake: NodeId,
    },
    TooSlow,
}

impl From<io::Error> for PeerError {
    fn from(error: io::Error) -> Self {
        PeerError::Io(error)
    }
}

impl From<HandshakeError> for PeerError {
    fn from(error: HandshakeError) -> Self {
        PeerError::Handshake(error)
    }
}

impl std::fmt::Display for PeerError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PeerError::Io(error) => write!(formatter, "{error}"),
            PeerError::Closed => write!(formatter, "connection closed"),
            PeerError::Handshake(error) => write!(formatter, "handshake failed: {error}"),
            PeerError::UnexpectedBytes => {
                write!(
                    formatter,
                    "bytes after the handshake on a link that only sends"
                )
            }
            PeerError::Frame(error) => write!(formatter, "bad frame: {error}"),
            PeerError::Impersonation { claimed, handshake } => write!(
                formatter,
                "frame from node {claimed} on the connection of node {handshake}"
            ),
            PeerError::TooSlow => write!(formatter, "peer is not reading; its buffer is full"),
        }
    }
}

/// Bytes waiting to be written to a socket.
#[derive(Debug, Default)]
pub struct Output {
    bytes: Vec<u8>,
    written: usize,
}

impl Output {
    pub fn buffer(&mut self) -> &mut Vec<u8> {
        &mut self.bytes
    }

    pub fn is_empty(&self) -> bool {
        self.written == self.bytes.len()
    }

    fn unsent_bytes(&self) -> usize {
        self.bytes.len() - self.written
    }

    /// Writes what it can (until the socket would block), after what the
    /// transport itself has queued (TLS handshake records).
    pub fn flush(&mut self, transport: &mut Transport) -> Result<(), PeerError> {
        if self.unsent_bytes() > MAX_UNSENT_PEER_BYTES {
            return Err(PeerError::TooSlow);
        }
        if !transport.flush_pending()? {
            return Ok(());
        }
        while !self.is_empty() {
            match transport.write(&self.bytes[self.written..]) {
                Ok(0) => return Err(PeerError::Closed),
                Ok(count) => self.written += count,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(error) => return Err(error.into()),
            }
        }
        self.bytes.clear();
        self.written = 0;
        release_if_large(&mut self.bytes);
        Ok(())
    }
}

/// Gives back an empty buffer's memory if it grew past what ordinary
/// traffic needs.
fn release_if_large(buffer: &mut Vec<u8>) {
    debug_assert!(buffer.is_empty());
    if buffer.capacity() > RETAINED_PEER_BUFFER_BYTES {
        *buffer = Vec::new();
    }
}

/// Reads everything available into `input` (bounded by `limit`).
fn read_available(
    transport: &mut Transport,
    input: &mut Vec<u8>,
    limit: usize,
) -> Result<(), PeerError> {
    let mut chunk = [0u8; READ_CHUNK_BYTES];
    loop {
        if input.len() > limit {
            return Ok(());
        }
        match transport.read(&mut chunk) {
            Ok(0) => return Err(PeerError::Closed),
            Ok(count) => input.extend_from_slice(&chunk[..count]),
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(error) => return Err(error.into()),
        }
    }
}

/// The state of one outbound link's connection.
#[derive(Debug)]
pub enum LinkState {
    /// Non-blocking connect in progress.
    Connecting,
    /// Our first line is sent; waiting for the acceptor's, and its proof.
    AwaitingHandshake(Dialing),
    /// The acceptor proved itself and our proof is queued: frames may go.
    Ready { id: NodeId },
}

/// A connection this node dialed to a configured peer.
pub struct OutboundLink {
    pub transport: Transport,
    pub state: LinkState,
    pub output: Output,
    input: Vec<u8>,
    /// When the dial began: connect and handshake must be done within
    /// [`HANDSHAKE_TIMEOUT_MS`] of it.
    dialed_ms: u64,
}

impl OutboundLink {
    pub fn connecting(transport: Transport, now_ms: u64) -> Self {
        OutboundLink {
            transport,
            state: LinkState::Connecting,
            output: Output::default(),
            input: Vec::new(),
            dialed_ms: now_ms,
        }
    }

    /// On the first writable event: did the connect succeed? If so, queue
    /// our first handshake line.
    pub fn finish_connect(&mut self, own: &Hello, now_ms: u64) -> Result<(), PeerError> {
        let socket = self.transport.socket();
        if let Some(error) = socket.take_error()? {
            return Err(error.into());
        }
        socket.peer_addr()?;
        let _ = socket.set_nodelay(true);
        let nonce = handshake::fresh_nonce()?;
        let dialing = Dialing::start(*own, nonce, now_ms, self.output.buffer());
        self.state = LinkState::AwaitingHandshake(dialing);
        Ok(())
    }

    /// Whether the link is still not ready [`HANDSHAKE_TIMEOUT_MS`] after
    /// its dial began.
    pub fn handshake_expired(&self, now_ms: u64) -> bool {
        !matches!(self.state, LinkState::Ready { .. })
            && now_ms.saturating_sub(self.dialed_ms) >= HANDSHAKE_TIMEOUT_MS
    }

    /// Reads the acceptor's line once it arrives and checks its proof;
    /// then queues ours and returns the acceptor's verified identity.
    /// Anything else the acceptor sends is a protocol error; EOF means the
    /// peer is gone (or refused us).
    pub fn read(&mut self, key: &ClusterKey, now_ms: u64) -> Result<Option<Hello>, PeerError> {
        read_available(
            &mut self.transport,
            &mut self.input,
            MAX_HANDSHAKE_LINE_BYTES,
        )?;
        if !matches!(self.state, LinkState::AwaitingHandshake(_)) {
            self.input.clear();
            return Ok(None);
        }
        let Some((line, consumed)) = handshake::take_line(&self.input)? else {
            return Ok(None);
        };
        if consumed != self.input.len() {
            return Err(PeerError::UnexpectedBytes);
        }
        let LinkState::AwaitingHandshake(dialing) =
            std::mem::replace(&mut self.state, LinkState::Connecting)
        else {
            unreachable!("checked just above");
        };
        let acceptor = dialing.on_reply(line, key, now_ms, self.output.buffer())?;
        self.input.clear();
        Ok(Some(acceptor))
    }
}

/// A connection whose first line was a peer's handshake: our reply (with
/// our proof) is queued, and nothing it sends reaches the core until its
/// own proof checks out.
pub struct PendingPeer {
    pub transport: Transport,
    accepting: Option<Accepting>,
    input: Vec<u8>,
    pub output: Output,
    pub remote: SocketAddr,
    /// When the handshake began.
    started_ms: u64,
    /// Holds a peer-only slot (admitted beyond `--max-clients`) rather
    /// than a client slot, until its proof checks out or it is closed.
    pub peer_only: bool,
}

impl PendingPeer {
    /// `rest` is what arrived after the first line; `reply` is our line.
    pub fn new(
        transport: Transport,
        accepting: Accepting,
        rest: Vec<u8>,
        reply: Vec<u8>,
        remote: SocketAddr,
        now_ms: u64,
    ) -> Self {
        let mut output = Output::default();
        output.buffer().extend_from_slice(&reply);
        PendingPeer {
            transport,
            accepting: Some(accepting),
            input: rest,
            output,
            remote,
            started_ms: now_ms,
            peer_only: false,
        }
    }

    /// Who the dialer says it is (not yet proven).
    pub fn claimed(&self) -> Option<Hello> {
        self.accepting.as_ref().map(Accepting::claimed)
    }

    pub fn expired(&self, now_ms: u64) -> bool {
        now_ms.saturating_sub(self.started_ms) >= HANDSHAKE_TIMEOUT_MS
    }

    /// Reads the dialer's proof; returns its verified identity once the
    /// proof checks out (the bytes after it are frames, kept for
    /// [`PendingPeer::into_inbound`]).
    pub fn read(&mut self, key: &ClusterKey, now_ms: u64) -> Result<Option<Hello>, PeerError> {
        let read = read_available(
            &mut self.transport,
            &mut self.input,
            MAX_HANDSHAKE_LINE_BYTES,
        );
        let Some((line, consumed)) = handshake::take_line(&self.input)? else {
            return read.map(|()| None);
        };
        let accepting = self.accepting.take().ok_or(PeerError::Closed)?;
        let dialer = accepting.on_proof(line, key, now_ms)?;
        self.input.drain(..consumed);
        Ok(Some(dialer))
    }

    /// The connection of a dialer that proved itself as `dialer`.
    pub fn into_inbound(self, dialer: Hello) -> InboundPeer {
        InboundPeer {
            transport: self.transport,
            id: dialer.id,
            input: self.input,
            output: self.output,
        }
    }
}

/// A connection a peer dialed to this node, after its handshake.
pub struct InboundPeer {
    pub transport: Transport,
    pub id: NodeId,
    input: Vec<u8>,
    pub output: Output,
}

impl InboundPeer {
    /// Reads what arrived and returns the whole frames in it.
    pub fn read_frames(&mut self, frames: &mut Vec<Envelope>) -> Result<(), PeerError> {
        let limit = message::MAX_FRAME_BYTES;
        let read = read_available(&mut self.transport, &mut self.input, limit);
        self.decode_buffered(frames)?;
        read
    }

    /// Frames already buffered (e.g. sent right behind the proof).
    pub fn decode_buffered(&mut self, frames: &mut Vec<Envelope>) -> Result<(), PeerError> {
        let mut consumed = 0;
        while let Some((envelope, used)) =
            message::decode_frame(&self.input[consumed..]).map_err(PeerError::Frame)?
        {
            if envelope.from != self.id {
                return Err(PeerError::Impersonation {
                    claimed: envelope.from,
                    handshake: self.id,
                });
            }
            frames.push(envelope);
            consumed += used;
        }
        self.input.drain(..consumed);
        if self.input.is_empty() {
            release_if_large(&mut self.input);
        }
        Ok(())
    }
}

/// A configured peer: where to dial it and what is known of it.
pub struct Link {
    pub address: SocketAddr,
    /// The slab key of the outbound connection, while there is one.
    pub endpoint: Option<usize>,
    pub id: Option<NodeId>,
    pub retry_delay_ms: u64,
    /// What the log has said about it (`peer_health`).
    pub health: super::peer_health::PeerHealth,
    /// Why its connection or the attempt under way failed, for the line
    /// that reports it once the connection is closed.
    pub failure: Option<LinkFailure>,
}

impl Link {
    pub fn new(address: SocketAddr) -> Link {
        Link {
            address,
            endpoint: None,
            id: None,
            retry_delay_ms: FIRST_RETRY_DELAY_MS,
            health: Default::default(),
            failure: None,
        }
    }
}

/// Why a link failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkFailure {
    pub reason: String,
    /// The peer is up but refused us (a handshake, a duplicate id): a
    /// configuration to fix, not a node to wait for.
    pub refused: bool,
}

impl LinkFailure {
    pub fn unreachable(reason: impl ToString) -> LinkFailure {
        LinkFailure {
            reason: reason.to_string(),
            refused: false,
        }
    }
}

pub const FIRST_RETRY_DELAY_MS: u64 = 20;
pub const MAX_RETRY_DELAY_MS: u64 = 500;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_grown_for_a_large_frame_is_released_once_empty() {
        let mut ordinary = Vec::with_capacity(RETAINED_PEER_BUFFER_BYTES);
        release_if_large(&mut ordinary);
        assert_eq!(ordinary.capacity(), RETAINED_PEER_BUFFER_BYTES);
        let mut grown = Vec::with_capacity(RETAINED_PEER_BUFFER_BYTES + 1);
        release_if_large(&mut grown);
        assert_eq!(grown.capacity(), 0);
    }
}
