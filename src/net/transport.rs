//! One byte transport per connection: plain TCP, or TLS over it.
//!
//! A [`Transport`] owns a non-blocking `mio::net::TcpStream` and, for TLS,
//! the rustls session over it. It reads and writes like the plain socket,
//! so the code above it (the reactor's connections and peers, the load
//! generator) has no `if tls`:
//!
//! - [`Read`] returns plaintext, and returns fewer bytes than asked only
//!   when the socket would block or at end of stream. Readiness is
//!   edge-triggered: a short read must mean "nothing more until the next
//!   event", so no byte is ever left in the socket, or decrypted and held
//!   back, behind a short read. `Ok(0)` is the end of the stream, whether
//!   the peer sent a `close_notify` or just closed TCP (neither protocol
//!   here depends on the difference: every message is framed).
//! - [`Write`] accepts plaintext and pushes TLS records to the socket until
//!   it would block; it returns the plaintext accepted, and
//!   `Err(WouldBlock)` only when none could be.
//!
//! TLS also has bytes of its own to send (the handshake, alerts, session
//! tickets): callers call [`Transport::flush_pending`] on every writable
//! event. A read tries to send what it made rustls queue, too, since a
//! handshake advances on reads.
//!
//! It never interprets the bytes it carries, never blocks, and never
//! decides whether a peer may connect: it only reports what the TLS
//! session knows ([`Transport::presented_verified_certificate`]).

use std::io::{self, Read, Write};
use std::sync::Arc;

use mio::net::TcpStream;
use rustls::{ClientConfig, ClientConnection, Connection, ServerConfig, ServerConnection};
use rustls_pki_types::ServerName;

/// Bound on what a TLS session buffers to send (plaintext written during
/// the handshake, and encrypted records the socket has not taken yet).
pub const TLS_OUTGOING_LIMIT_BYTES: usize = 256 * 1024;

/// The content type of a TLS handshake record, the first byte a TLS client
/// sends (a ClientHello).
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// A connection's byte stream: plain, or TLS over the same socket.
pub enum Transport {
    Plain(TcpStream),
    Tls {
        stream: TcpStream,
        tls: Box<Connection>,
    },
}

impl Transport {
    /// True when a connection's first byte starts a TLS handshake rather
    /// than a line (`0x16` is not a byte any command or peer hello starts
    /// with), so one port can take both.
    pub fn looks_like_tls(first_byte: u8) -> bool {
        first_byte == TLS_HANDSHAKE_RECORD
    }

    /// A plain TCP transport.
    pub fn plain(stream: TcpStream) -> Transport {
        Transport::Plain(stream)
    }

    /// The server side of a TLS session over `stream`.
    pub fn tls_server(stream: TcpStream, config: Arc<ServerConfig>) -> io::Result<Transport> {
        let session = ServerConnection::new(config).map_err(io::Error::other)?;
        Ok(Transport::with_session(stream, Connection::Server(session)))
    }

    /// The client side of a TLS session over `stream`, verifying that the
    /// server's certificate names `server_name`.
    pub fn tls_client(
        stream: TcpStream,
        config: Arc<ClientConfig>,
        server_name: ServerName<'static>,
    ) -> io::Result<Transport> {
        let session = ClientConnection::new(config, server_name).map_err(io::Error::other)?;
        Ok(Transport::with_session(stream, Connection::Client(session)))
    }

    fn with_session(stream: TcpStream, mut session: Connection) -> Transport {
        session.set_buffer_limit(Some(TLS_OUTGOING_LIMIT_BYTES));
        Transport::Tls {
            stream,
            tls: Box::new(session),
        }
    }

    /// The socket, to register with mio, ask its addresses, set options.
    /// Reading or writing it directly would corrupt a TLS session.
    pub fn socket(&mut self) -> &mut TcpStream {
        match self {
            Transport::Plain(stream) | Transport::Tls { stream, .. } => stream,
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, Transport::Tls { .. })
    }

    /// True until the TLS handshake is done; never for plain TCP.
    pub fn is_handshaking(&self) -> bool {
        match self {
            Transport::Plain(_) => false,
            Transport::Tls { tls, .. } => tls.is_handshaking(),
        }
    }

    /// True when TLS holds bytes the socket has not taken yet.
    pub fn has_pending_output(&self) -> bool {
        match self {
            Transport::Plain(_) => false,
            Transport::Tls { tls, .. } => tls.wants_write(),
        }
    }

    /// True once the handshake is done if the other end presented a
    /// certificate the verifier accepted. On a server with optional client
    /// certificates this is what tells a verified peer from a plain client;
    /// on a client it is always true after the handshake.
    pub fn presented_verified_certificate(&self) -> bool {
        match self {
            Transport::Plain(_) => false,
            Transport::Tls { tls, .. } => {
                !tls.is_handshaking()
                    && tls
                        .peer_certificates()
                        .is_some_and(|chain| !chain.is_empty())
            }
        }
    }

    /// Sends what TLS has queued until the socket would block. `Ok(true)`
    /// when nothing is left to send (always, for plain TCP).
    pub fn flush_pending(&mut self) -> io::Result<bool> {
        match self {
            Transport::Plain(_) => Ok(true),
            Transport::Tls { stream, tls } => send_records(stream, tls),
        }
    }

    /// Ends the TLS session cleanly: queues a `close_notify` and sends what
    /// it can, as [`Transport::flush_pending`]. Nothing to do for plain TCP.
    pub fn send_close_notify(&mut self) -> io::Result<bool> {
        match self {
            Transport::Plain(_) => Ok(true),
            Transport::Tls { stream, tls } => {
                tls.send_close_notify();
                send_records(stream, tls)
            }
        }
    }
}

impl Read for Transport {
    #[inline]
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(stream) => stream.read(buffer),
            Transport::Tls { stream, tls } => read_plaintext(stream, tls, buffer),
        }
    }
}

impl Write for Transport {
    #[inline]
    fn write(&mut self, plaintext: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(stream) => stream.write(plaintext),
            Transport::Tls { stream, tls } => write_plaintext(stream, tls, plaintext),
        }
    }

    /// Sends what is pending; `Err(WouldBlock)` if the socket did not take
    /// all of it.
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Transport::Plain(stream) => stream.flush(),
            Transport::Tls { stream, tls } => match send_records(stream, tls)? {
                true => Ok(()),
                false => Err(io::ErrorKind::WouldBlock.into()),
            },
        }
    }
}

/// Fills `buffer` with plaintext until it is full, the socket would block,
/// or the stream ended. See the module documentation for what each result
/// means.
fn read_plaintext(
    stream: &mut TcpStream,
    tls: &mut Connection,
    buffer: &mut [u8],
) -> io::Result<usize> {
    if buffer.is_empty() {
        return Ok(0);
    }
    let mut filled = 0;
    let ended = loop {
        let taken = take_plaintext(tls, &mut buffer[filled..])?;
        filled += taken.count;
        if taken.ended {
            break true;
        }
        // Unless the buffer is full, rustls holds no plaintext now, so it
        // takes more records.
        if filled == buffer.len() || !receive_records(stream, tls)? {
            break false;
        }
    };
    // A read can make rustls queue bytes (handshake messages, alerts); send
    // them now. A failure here shows again on the next write.
    let _ = send_records(stream, tls);
    if filled > 0 || ended {
        Ok(filled)
    } else {
        Err(io::ErrorKind::WouldBlock.into())
    }
}

/// Plaintext rustls has decrypted, and whether the stream ended behind it.
struct Taken {
    count: usize,
    ended: bool,
}

/// Moves decrypted plaintext into `buffer` until it is full or none is left.
fn take_plaintext(tls: &mut Connection, buffer: &mut [u8]) -> io::Result<Taken> {
    let mut count = 0;
    while count < buffer.len() {
        match tls.reader().read(&mut buffer[count..]) {
            // A close_notify after the last plaintext.
            Ok(0) => return Ok(Taken { count, ended: true }),
            Ok(read) => count += read,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
            // A TCP close without close_notify: the end, all the same.
            Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => {
                return Ok(Taken { count, ended: true });
            }
            Err(error) => return Err(error),
        }
    }
    Ok(Taken {
        count,
        ended: false,
    })
}

/// One read of TLS records from the socket, then their processing.
/// `Ok(false)` when the socket would block; `Ok(true)` after progress or
/// at the end of the stream (which the next [`take_plaintext`] reports).
fn receive_records(stream: &mut TcpStream, tls: &mut Connection) -> io::Result<bool> {
    loop {
        match tls.read_tls(stream) {
            Ok(_) => break,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(error) => return Err(error),
        }
    }
    if let Err(error) = tls.process_new_packets() {
        // rustls queued an alert telling the peer why; try to deliver it.
        let _ = send_records(stream, tls);
        return Err(io::Error::new(io::ErrorKind::InvalidData, error));
    }
    Ok(true)
}

/// Hands plaintext to rustls and its records to the socket, repeating while
/// the socket takes everything, so a short count means the socket is full.
fn write_plaintext(
    stream: &mut TcpStream,
    tls: &mut Connection,
    plaintext: &[u8],
) -> io::Result<usize> {
    let mut accepted = 0;
    loop {
        let count = tls.writer().write(&plaintext[accepted..])?;
        accepted += count;
        let all_sent = send_records(stream, tls)?;
        // `count == 0` with nothing left to send: the handshake is not done
        // and its plaintext buffer is full; a read will move it on.
        if accepted == plaintext.len() || !all_sent || count == 0 {
            break;
        }
    }
    if accepted == 0 && !plaintext.is_empty() {
        Err(io::ErrorKind::WouldBlock.into())
    } else {
        Ok(accepted)
    }
}

/// Writes queued TLS records until none is left (`Ok(true)`) or the socket
/// would block (`Ok(false)`).
fn send_records(stream: &mut TcpStream, tls: &mut Connection) -> io::Result<bool> {
    while tls.wants_write() {
        match tls.write_tls(stream) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(_) => {}
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(error) => return Err(error),
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use mio::{Events, Interest, Poll, Token};

    use super::*;
    use crate::security::testing::{Identity, TestPki};
    use crate::security::tls::{ClientAuth, server_name_for};

    const CLIENT: Token = Token(0);
    const SERVER: Token = Token(1);
    const TEST_DEADLINE: Duration = Duration::from_secs(20);
    const MESSAGE_BYTES: usize = 1024 * 1024;

    /// The two ends of one loopback connection, on one poll, each read or
    /// written only after an event for it, as the reactor does: a transport
    /// that left bytes behind a short read would hang a test.
    struct Pair {
        poll: Poll,
        events: Events,
        client: Transport,
        server: Transport,
        deadline: Instant,
    }

    /// How the side that receives takes its bytes.
    #[derive(Clone, Copy)]
    struct Pace {
        /// Bytes offered per write call.
        write_piece_bytes: usize,
        /// Bytes asked per read call.
        read_chunk_bytes: usize,
        /// Read nothing until the writer met a full socket.
        hold_reads_until_blocked: bool,
    }

    fn sockets() -> (mio::net::TcpStream, mio::net::TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        for socket in [&client, &server] {
            socket.set_nonblocking(true).unwrap();
        }
        (TcpStream::from_std(client), TcpStream::from_std(server))
    }

    impl Pair {
        fn plain() -> Pair {
            let (client, server) = sockets();
            Pair::new(Transport::plain(client), Transport::plain(server))
        }

        fn tls(server_config: Arc<ServerConfig>, client_config: Arc<ClientConfig>) -> Pair {
            let (client, server) = sockets();
            let name = server_name_for(&server.local_addr().unwrap());
            Pair::new(
                Transport::tls_client(client, client_config, name).unwrap(),
                Transport::tls_server(server, server_config).unwrap(),
            )
        }

        /// A TLS pair with the node certificate, handshake done.
        fn tls_connected(
            pki: &TestPki,
            client_auth: ClientAuth,
            identity: Option<&Identity>,
        ) -> Pair {
            let mut pair = Pair::tls(pki.server_config(client_auth), pki.client_config(identity));
            pair.handshake().expect("handshake");
            pair
        }

        fn new(mut client: Transport, mut server: Transport) -> Pair {
            let poll = Poll::new().unwrap();
            let interest = Interest::READABLE | Interest::WRITABLE;
            for (transport, token) in [(&mut client, CLIENT), (&mut server, SERVER)] {
                poll.registry()
                    .register(transport.socket(), token, interest)
                    .unwrap();
            }
            Pair {
                poll,
                events: Events::with_capacity(16),
                client,
                server,
                deadline: Instant::now() + TEST_DEADLINE,
            }
        }

        fn end(&mut self, token: Token) -> &mut Transport {
            if token == CLIENT {
                &mut self.client
            } else {
                &mut self.server
            }
        }

        /// The ends with an event (readable, writable) since the last wait.
        fn wait(&mut self) -> Vec<(Token, bool, bool)> {
            let left = self.deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "the test ran out of time");
            self.poll.poll(&mut self.events, Some(left)).unwrap();
            self.events
                .iter()
                .map(|event| {
                    let readable = event.is_readable() || event.is_read_closed();
                    (event.token(), readable, event.is_writable())
                })
                .collect()
        }

        /// Drives both handshakes to their end. Err: which end failed, how.
        fn handshake(&mut self) -> Result<(), (Token, io::Error)> {
            self.handshake_step(CLIENT)?;
            self.handshake_step(SERVER)?;
            while self.client.is_handshaking() || self.server.is_handshaking() {
                for (token, _, _) in self.wait() {
                    self.handshake_step(token)?;
                }
            }
            Ok(())
        }

        fn handshake_step(&mut self, token: Token) -> Result<(), (Token, io::Error)> {
            let end = self.end(token);
            let mut scratch = [0_u8; 64];
            let result = end
                .flush_pending()
                .and_then(|_| match end.read(&mut scratch) {
                    Ok(0) => Err(io::ErrorKind::UnexpectedEof.into()),
                    Ok(_) => panic!("plaintext during the handshake"),
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => Ok(()),
                    Err(error) => Err(error),
                });
            result.map_err(|error| (token, error))
        }

        /// Sends `message` from `from` to the other end; returns what arrived.
        fn transfer(&mut self, from: Token, message: &[u8], pace: Pace) -> Vec<u8> {
            let to = if from == CLIENT { SERVER } else { CLIENT };
            let mut chunk = vec![0_u8; pace.read_chunk_bytes];
            let mut received = Vec::with_capacity(message.len());
            let mut sent = 0;
            let mut blocked = false;
            let (mut writable, mut readable) = (true, true);
            while received.len() < message.len() {
                if writable {
                    blocked |= write_until_full(self.end(from), message, &mut sent, pace);
                }
                if readable && (blocked || !pace.hold_reads_until_blocked) {
                    assert!(!read_until_drained(self.end(to), &mut chunk, &mut received));
                }
                if received.len() == message.len() {
                    break;
                }
                (writable, readable) = (false, false);
                for (token, is_readable, is_writable) in self.wait() {
                    writable |= token == from && is_writable;
                    readable |= token == to && is_readable;
                }
            }
            if pace.hold_reads_until_blocked {
                assert!(blocked, "the socket never filled; nothing was tested");
            }
            received
        }

        /// Reads `to` on its events until the end of the stream.
        fn read_to_end(&mut self, to: Token) -> Vec<u8> {
            let mut chunk = vec![0_u8; 1000];
            let mut received = Vec::new();
            while !read_until_drained(self.end(to), &mut chunk, &mut received) {
                self.wait();
            }
            received
        }
    }

    /// Writes pieces of `message` from `sent` on until the socket is full or
    /// all is written; true if the socket was found full.
    fn write_until_full(end: &mut Transport, message: &[u8], sent: &mut usize, pace: Pace) -> bool {
        if !end.flush_pending().unwrap() {
            return true;
        }
        while *sent < message.len() {
            let piece_end = message.len().min(*sent + pace.write_piece_bytes);
            match end.write(&message[*sent..piece_end]) {
                Ok(0) => panic!("a write accepted nothing without WouldBlock"),
                Ok(count) => {
                    *sent += count;
                    if *sent < piece_end {
                        return true;
                    }
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return true,
                Err(error) => panic!("write failed: {error}"),
            }
        }
        !end.flush_pending().unwrap()
    }

    /// Reads until a short read (the contract: drained) or the end; true at
    /// the end of the stream.
    fn read_until_drained(end: &mut Transport, chunk: &mut [u8], received: &mut Vec<u8>) -> bool {
        loop {
            match end.read(chunk) {
                Ok(0) => return true,
                Ok(count) => {
                    received.extend_from_slice(&chunk[..count]);
                    if count < chunk.len() {
                        return false;
                    }
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return false,
                Err(error) => panic!("read failed: {error}"),
            }
        }
    }

    fn message(length: usize, seed: u8) -> Vec<u8> {
        (0..length)
            .map(|index| (index as u8).wrapping_mul(31).wrapping_add(seed) ^ (index >> 9) as u8)
            .collect()
    }

    fn round_trip(pair: &mut Pair, pace: Pace) {
        let outbound = message(MESSAGE_BYTES, 1);
        assert!(pair.transfer(CLIENT, &outbound, pace) == outbound);
        let inbound = message(MESSAGE_BYTES, 2);
        assert!(pair.transfer(SERVER, &inbound, pace) == inbound);
    }

    const SMALL_PIECES: Pace = Pace {
        write_piece_bytes: 9_973,
        read_chunk_bytes: 7_001,
        hold_reads_until_blocked: false,
    };

    #[test]
    fn a_handshake_completes() {
        let pki = TestPki::generate();
        let pair = Pair::tls_connected(&pki, ClientAuth::None, None);
        for end in [&pair.client, &pair.server] {
            assert!(end.is_tls());
            assert!(!end.is_handshaking());
        }
        assert!(!pair.server.presented_verified_certificate());
        assert!(pair.client.presented_verified_certificate());
    }

    #[test]
    fn a_mebibyte_round_trips_in_small_pieces() {
        let pki = TestPki::generate();
        round_trip(&mut Pair::plain(), SMALL_PIECES);
        round_trip(
            &mut Pair::tls_connected(&pki, ClientAuth::None, None),
            SMALL_PIECES,
        );
    }

    #[test]
    fn a_writer_that_fills_the_socket_resumes_on_the_writable_event() {
        let pace = Pace {
            write_piece_bytes: 4 * MESSAGE_BYTES,
            read_chunk_bytes: 64 * 1024,
            hold_reads_until_blocked: true,
        };
        let pki = TestPki::generate();
        let big = message(16 * MESSAGE_BYTES, 3);
        for mut pair in [
            Pair::plain(),
            Pair::tls_connected(&pki, ClientAuth::None, None),
        ] {
            assert!(pair.transfer(SERVER, &big, pace) == big);
        }
    }

    #[test]
    fn a_close_notify_reads_as_the_end_after_the_last_bytes() {
        let pki = TestPki::generate();
        let mut pair = Pair::tls_connected(&pki, ClientAuth::None, None);
        assert_eq!(pair.client.write(b"last words").unwrap(), 10);
        assert!(pair.client.send_close_notify().unwrap());
        assert_eq!(pair.read_to_end(SERVER), b"last words");
    }

    #[test]
    fn a_bare_tcp_close_reads_as_the_end_after_the_last_bytes() {
        let pki = TestPki::generate();
        for mut pair in [
            Pair::plain(),
            Pair::tls_connected(&pki, ClientAuth::None, None),
        ] {
            assert_eq!(pair.server.write(b"bye").unwrap(), 3);
            assert!(pair.server.flush_pending().unwrap());
            let server = std::mem::replace(&mut pair.server, Pair::plain().server);
            drop(server);
            assert_eq!(pair.read_to_end(CLIENT), b"bye");
        }
    }

    #[test]
    fn a_client_that_does_not_trust_the_ca_fails_with_invalid_data() {
        let pki = TestPki::generate();
        let distrustful = crate::security::tls::client_config(&pki.untrusted_ca, None).unwrap();
        let mut pair = Pair::tls(pki.server_config(ClientAuth::None), distrustful);
        let (end, error) = pair.handshake().unwrap_err();
        assert_eq!(end, CLIENT);
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        assert!(error.to_string().contains("certificate"), "{error}");
    }

    #[test]
    fn bytes_that_are_not_tls_fail_with_invalid_data() {
        let pki = TestPki::generate();
        let (client, server) = sockets();
        let server = Transport::tls_server(server, pki.server_config(ClientAuth::None)).unwrap();
        let mut pair = Pair::new(Transport::plain(client), server);
        assert_eq!(pair.client.write(b"PING\n").unwrap(), 5);
        let error = loop {
            pair.wait();
            match pair.server.read(&mut [0_u8; 64]) {
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
                other => break other.unwrap_err(),
            }
        };
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn required_client_auth_refuses_a_client_without_a_certificate() {
        let pki = TestPki::generate();
        let mut pair = Pair::tls(
            pki.server_config(ClientAuth::Required),
            pki.client_config(None),
        );
        let (end, error) = pair.handshake().unwrap_err();
        assert_eq!(end, SERVER);
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);

        let pair = Pair::tls_connected(&pki, ClientAuth::Required, Some(&pki.client));
        assert!(pair.server.presented_verified_certificate());
    }

    #[test]
    fn optional_client_auth_lets_both_in_and_tells_them_apart() {
        let pki = TestPki::generate();
        let anonymous = Pair::tls_connected(&pki, ClientAuth::Optional, None);
        assert!(!anonymous.server.presented_verified_certificate());
        for identity in [&pki.client, &pki.node] {
            let pair = Pair::tls_connected(&pki, ClientAuth::Optional, Some(identity));
            assert!(pair.server.presented_verified_certificate());
        }
    }

    #[test]
    fn plain_transports_are_not_tls() {
        let pair = Pair::plain();
        assert!(!pair.client.is_tls());
        assert!(!pair.client.is_handshaking());
        assert!(!pair.client.has_pending_output());
        assert!(!pair.server.presented_verified_certificate());
    }

    #[test]
    fn a_tls_connection_is_told_by_its_first_byte() {
        assert!(Transport::looks_like_tls(0x16));
        for first in [b'P', b'G', b'*', b'\n', 0x00, 0x15, 0x17] {
            assert!(!Transport::looks_like_tls(first));
        }
    }
}
