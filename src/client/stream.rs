//! The byte stream under a [`Client`](super::Client): plain TCP, or TLS
//! over it, both blocking with the client's timeouts.
//!
//! It owns connecting (with the connect timeout), the TLS handshake (done
//! before the stream is handed out, so a certificate problem is a connect
//! failure, not a failed request), and telling whether an open connection
//! is still usable. It never reads or writes a request; the client does,
//! through `Read` and `Write`, the same way for both kinds.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use rustls::{ClientConfig, ClientConnection, Connection, StreamOwned};

use super::{ClientError, OpenError, normalize_timeout};
use crate::net::Transport;
use crate::security::tls;

/// A connected stream, plain or TLS with the handshake done.
#[derive(Debug)]
pub(super) enum Stream {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Stream {
    /// Connects to `address` (`host:port`), then, with `tls`, completes a
    /// handshake that verifies the server's certificate names that host.
    pub fn open(
        address: &str,
        timeout: Duration,
        tls: Option<&Arc<ClientConfig>>,
    ) -> Result<Stream, OpenError> {
        let socket = connect(address, timeout).map_err(OpenError::Unreachable)?;
        match tls {
            None => Ok(Stream::Plain(socket)),
            Some(config) => handshake(address, socket, config).map(Stream::Tls),
        }
    }

    /// True when nothing is waiting to be read and the server has not
    /// closed. For TLS, records that carry no data (TLS 1.3 session
    /// tickets, sent after the handshake) are processed, not counted.
    pub fn is_idle_and_open(&mut self) -> bool {
        if self.socket().set_nonblocking(true).is_err() {
            return false;
        }
        let idle = match self {
            Stream::Plain(socket) => plain_is_idle(socket),
            Stream::Tls(stream) => tls_is_idle(stream),
        };
        let restored = self.socket().set_nonblocking(false).is_ok();
        idle && restored
    }

    /// The same connection, non-blocking, as the transport the pipelining
    /// loop drives (see [`crate::net::Transport`]).
    pub fn into_transport(self) -> io::Result<Transport> {
        match self {
            Stream::Plain(socket) => {
                socket.set_nonblocking(true)?;
                Ok(Transport::plain(mio::net::TcpStream::from_std(socket)))
            }
            Stream::Tls(stream) => {
                let (session, socket) = stream.into_parts();
                socket.set_nonblocking(true)?;
                Ok(Transport::Tls {
                    stream: mio::net::TcpStream::from_std(socket),
                    tls: Box::new(Connection::Client(session)),
                })
            }
        }
    }

    /// Back from [`Stream::into_transport`]: blocking again, with the
    /// timeouts it had.
    pub fn from_transport(transport: Transport) -> io::Result<Stream> {
        match transport {
            Transport::Plain(socket) => {
                let socket = TcpStream::from(socket);
                socket.set_nonblocking(false)?;
                Ok(Stream::Plain(socket))
            }
            Transport::Tls { stream, tls } => {
                let Connection::Client(session) = *tls else {
                    return Err(io::Error::other("not a client TLS session"));
                };
                let socket = TcpStream::from(stream);
                socket.set_nonblocking(false)?;
                Ok(Stream::Tls(Box::new(StreamOwned::new(session, socket))))
            }
        }
    }

    fn socket(&self) -> &TcpStream {
        match self {
            Stream::Plain(socket) => socket,
            Stream::Tls(stream) => &stream.sock,
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(socket) => socket.read(buffer),
            Stream::Tls(stream) => stream.read(buffer),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(socket) => socket.write(bytes),
            Stream::Tls(stream) => stream.write(bytes),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(socket) => socket.flush(),
            Stream::Tls(stream) => stream.flush(),
        }
    }
}

/// Resolves `address` and connects to the first resolved address that
/// accepts, with the read, write and connect timeouts set.
fn connect(address: &str, timeout: Duration) -> io::Result<TcpStream> {
    let mut last_error = None;
    for socket_address in address.to_socket_addrs()? {
        match TcpStream::connect_timeout(&socket_address, timeout) {
            Ok(stream) => {
                stream.set_read_timeout(Some(timeout))?;
                stream.set_write_timeout(Some(timeout))?;
                stream.set_nodelay(true)?;
                return Ok(stream);
            }
            Err(error) => last_error = Some(error),
        }
    }
    Err(last_error.unwrap_or_else(|| {
        io::Error::new(ErrorKind::InvalidInput, "the address resolved to nothing")
    }))
}

/// The whole TLS handshake, bounded by the socket's timeouts. A refusal
/// (a certificate that does not verify, an alert) will not change on a
/// retry; a timeout or a reset may.
fn handshake(
    address: &str,
    socket: TcpStream,
    config: &Arc<ClientConfig>,
) -> Result<Box<StreamOwned<ClientConnection, TcpStream>>, OpenError> {
    let refused = |source: io::Error| {
        OpenError::Refused(ClientError::Tls {
            addr: address.to_owned(),
            source,
        })
    };
    let server_name = tls::server_name_from_host_and_port(address)
        .map_err(|error| refused(io::Error::new(ErrorKind::InvalidInput, error)))?;
    let session = ClientConnection::new(Arc::clone(config), server_name)
        .map_err(|error| refused(io::Error::new(ErrorKind::InvalidInput, error)))?;
    let mut stream = Box::new(StreamOwned::new(session, socket));
    while stream.conn.is_handshaking() {
        if let Err(error) = stream.conn.complete_io(&mut stream.sock) {
            return Err(classify_failure(address, error));
        }
    }
    Ok(stream)
}

/// A TLS refusal (`InvalidData`: a bad certificate, a fatal alert) is
/// final; anything else is a connection that might work next time.
pub(super) fn classify_failure(address: &str, error: io::Error) -> OpenError {
    if error.kind() == ErrorKind::InvalidData {
        OpenError::Refused(ClientError::Tls {
            addr: address.to_owned(),
            source: error,
        })
    } else {
        OpenError::Unreachable(normalize_timeout(error))
    }
}

/// A non-blocking peek must find the socket empty.
fn plain_is_idle(socket: &TcpStream) -> bool {
    let mut byte = [0_u8; 1];
    matches!(socket.peek(&mut byte), Err(error) if error.kind() == ErrorKind::WouldBlock)
}

/// Takes in whatever records arrived (on a non-blocking socket), then
/// there must be no plaintext, no end of stream and no error.
fn tls_is_idle(stream: &mut StreamOwned<ClientConnection, TcpStream>) -> bool {
    loop {
        match stream.conn.read_tls(&mut stream.sock) {
            Ok(0) => return false,
            Ok(_) => {
                if stream.conn.process_new_packets().is_err() {
                    return false;
                }
            }
            Err(error) if error.kind() == ErrorKind::Interrupted => {}
            Err(error) if error.kind() == ErrorKind::WouldBlock => break,
            Err(_) => return false,
        }
    }
    let mut byte = [0_u8; 1];
    matches!(stream.conn.reader().read(&mut byte), Err(error) if error.kind() == ErrorKind::WouldBlock)
}
