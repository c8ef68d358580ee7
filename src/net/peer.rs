//! Peer connections. Each node dials every configured peer and sends its own
//! messages on the connection it dialed (an *outbound link*); it receives a
//! peer's messages on the connection that peer dialed (an *inbound peer*).
//!
//! A dialer opens with the handshake line `KVPEER <version> <id> <address>`;
//! the acceptor answers with its own handshake line and from then on only
//! reads binary frames on that connection. Only these bytes move here: what
//! the messages mean is the core's business.

use std::io::{self, Read, Write};
use std::net::SocketAddr;

use mio::net::TcpStream;

use crate::node::message::{self, Envelope, FrameError, NodeId};
use crate::security::handshake::{self, HandshakeError as HelloError, Hello};

/// A peer that cannot keep up is cut off past this many unsent bytes; it
/// reconnects and the leader resends from what it acknowledged.
pub const MAX_UNSENT_PEER_BYTES: usize = 64 * 1024 * 1024;
const READ_CHUNK_BYTES: usize = 64 * 1024;
/// A handshake line longer than this is not a handshake.
const MAX_HANDSHAKE_BYTES: usize = 256;

/// Why a peer connection is dropped.
#[derive(Debug)]
pub enum PeerError {
    Io(io::Error),
    Closed,
    Handshake(HelloError),
    HandshakeTooLong,
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

impl std::fmt::Display for PeerError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PeerError::Io(error) => write!(formatter, "{error}"),
            PeerError::Closed => write!(formatter, "connection closed"),
            PeerError::Handshake(error) => write!(formatter, "bad handshake: {error}"),
            PeerError::HandshakeTooLong => write!(formatter, "handshake line too long"),
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

    /// Writes what it can (until the socket would block).
    pub fn flush(&mut self, stream: &mut TcpStream) -> Result<(), PeerError> {
        if self.unsent_bytes() > MAX_UNSENT_PEER_BYTES {
            return Err(PeerError::TooSlow);
        }
        while !self.is_empty() {
            match stream.write(&self.bytes[self.written..]) {
                Ok(0) => return Err(PeerError::Closed),
                Ok(count) => self.written += count,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(error) => return Err(error.into()),
            }
        }
        self.bytes.clear();
        self.written = 0;
        Ok(())
    }
}

/// Reads everything available into `input` (bounded by `limit`).
fn read_available(
    stream: &mut TcpStream,
    input: &mut Vec<u8>,
    limit: usize,
) -> Result<(), PeerError> {
    let mut chunk = [0u8; READ_CHUNK_BYTES];
    loop {
        if input.len() > limit {
            return Ok(());
        }
        match stream.read(&mut chunk) {
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
    /// Our handshake is sent; waiting for the peer's.
    AwaitingHandshake,
    Ready {
        id: NodeId,
    },
}

/// A connection this node dialed to a configured peer.
pub struct OutboundLink {
    pub stream: TcpStream,
    pub state: LinkState,
    pub output: Output,
    input: Vec<u8>,
}

impl OutboundLink {
    pub fn connecting(stream: TcpStream) -> Self {
        OutboundLink {
            stream,
            state: LinkState::Connecting,
            output: Output::default(),
            input: Vec::new(),
        }
    }

    /// On the first writable event: did the connect succeed? If so, queue
    /// our handshake.
    pub fn finish_connect(&mut self, own: &Hello) -> Result<(), PeerError> {
        if let Some(error) = self.stream.take_error()? {
            return Err(error.into());
        }
        self.stream.peer_addr()?;
        let _ = self.stream.set_nodelay(true);
        handshake::encode_hello(own, self.output.buffer());
        self.state = LinkState::AwaitingHandshake;
        Ok(())
    }

    /// Reads the peer's handshake line once it arrives. Anything else the
    /// acceptor sends is a protocol error; EOF means the peer is gone.
    pub fn read(&mut self) -> Result<Option<Hello>, PeerError> {
        read_available(&mut self.stream, &mut self.input, MAX_HANDSHAKE_BYTES)?;
        if !matches!(self.state, LinkState::AwaitingHandshake) {
            self.input.clear();
            return Ok(None);
        }
        let Some(end) = memchr::memchr(b'\n', &self.input) else {
            if self.input.len() > MAX_HANDSHAKE_BYTES {
                return Err(PeerError::HandshakeTooLong);
            }
            return Ok(None);
        };
        let hello = handshake::parse_hello(&self.input[..end]).map_err(PeerError::Handshake)?;
        self.input.clear();
        Ok(Some(hello))
    }
}

/// A connection a peer dialed to this node, after its handshake.
pub struct InboundPeer {
    pub stream: TcpStream,
    pub id: NodeId,
    input: Vec<u8>,
    pub output: Output,
}

impl InboundPeer {
    /// Takes over a client connection whose first line was a handshake;
    /// `rest` is what arrived after that line.
    pub fn new(stream: TcpStream, hello: Hello, own: &Hello, rest: Vec<u8>) -> Self {
        let mut output = Output::default();
        handshake::encode_hello(own, output.buffer());
        InboundPeer {
            stream,
            id: hello.id,
            input: rest,
            output,
        }
    }

    /// Reads what arrived and returns the whole frames in it.
    pub fn read_frames(&mut self, frames: &mut Vec<Envelope>) -> Result<(), PeerError> {
        let limit = message::MAX_FRAME_BODY_BYTES + message::FRAME_HEADER_BYTES;
        let read = read_available(&mut self.stream, &mut self.input, limit);
        self.decode_buffered(frames)?;
        read
    }

    /// Frames already buffered (e.g. sent right behind the handshake).
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
}

pub const FIRST_RETRY_DELAY_MS: u64 = 20;
pub const MAX_RETRY_DELAY_MS: u64 = 500;
