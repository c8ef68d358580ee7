//! The echo ceiling: the least any single-threaded line server here must do.
//!
//! One thread, one mio `Poll`, edge-triggered. It accepts every connection;
//! for each readable one it reads until `WouldBlock` into one reusable
//! buffer, counts the complete `\n`-terminated lines, appends `OK\n` per line
//! to that connection's output and writes it out, keeping unsent bytes (and
//! asking for WRITABLE until they are gone) and the partial trailing line.
//! Nothing is parsed: every line, GET or PUT, is answered `OK`, which
//! kvstore-bench counts as a hit for a GET, an acknowledgement for a PUT
//! (`--preload`) and an answer for its leader probe (src/bench/report.rs).
//!
//! `perf/compare.py --only echo` runs kvstore against it:
//!
//!     echo-ceiling PORT
//!
//! It listens on 127.0.0.1:PORT until killed.

use std::io::{self, Read, Write};
use std::net::SocketAddr;

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

const LISTENER: Token = Token(usize::MAX);
const READ_BUFFER: usize = 64 * 1024;
/// A longer line closes the connection (kvstore's own limit is 64 MiB).
const MAX_LINE: usize = 64 << 20;

struct Connection {
    stream: TcpStream,
    /// The start of a line whose `\n` has not arrived yet, kept as a line
    /// server must keep it (it is never looked at).
    partial: Vec<u8>,
    output: Vec<u8>,
    /// Whether WRITABLE interest is registered (output is waiting).
    writable: bool,
}

fn main() -> io::Result<()> {
    let port: u16 = match std::env::args().nth(1).map(|text| text.parse()) {
        Some(Ok(port)) => port,
        _ => {
            eprintln!("usage: echo-ceiling PORT");
            std::process::exit(2);
        }
    };
    let mut listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port)))?;
    let mut poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let mut connections: Vec<Option<Connection>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut events = Events::with_capacity(1024);
    let mut buffer = vec![0u8; READ_BUFFER];
    loop {
        if let Err(error) = poll.poll(&mut events, None) {
            if error.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(error);
        }
        for event in events.iter() {
            if event.token() == LISTENER {
                accept_all(&listener, &poll, &mut connections, &mut free)?;
                continue;
            }
            let index = event.token().0;
            let Some(connection) = connections.get_mut(index).and_then(Option::as_mut) else {
                continue;
            };
            let open = serve(
                connection,
                &poll,
                Token(index),
                &mut buffer,
                event.is_readable(),
            );
            if !open {
                if let Some(mut connection) = connections[index].take() {
                    let _ = poll.registry().deregister(&mut connection.stream);
                }
                free.push(index);
            }
        }
    }
}

fn accept_all(
    listener: &TcpListener,
    poll: &Poll,
    connections: &mut Vec<Option<Connection>>,
    free: &mut Vec<usize>,
) -> io::Result<()> {
    loop {
        match listener.accept() {
            Ok((mut stream, _)) => {
                let _ = stream.set_nodelay(true);
                let index = free.pop().unwrap_or_else(|| {
                    connections.push(None);
                    connections.len() - 1
                });
                poll.registry()
                    .register(&mut stream, Token(index), Interest::READABLE)?;
                connections[index] = Some(Connection {
                    stream,
                    partial: Vec::new(),
                    output: Vec::new(),
                    writable: false,
                });
            }
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            // Out of descriptors, a connection reset before accept: try on the next event.
            Err(_) => return Ok(()),
        }
    }
}

/// Reads (when readable) and writes; false when the connection is done.
fn serve(
    connection: &mut Connection,
    poll: &Poll,
    token: Token,
    buffer: &mut [u8],
    readable: bool,
) -> bool {
    if readable {
        loop {
            match connection.stream.read(buffer) {
                Ok(0) => return false,
                Ok(read) => {
                    let chunk = &buffer[..read];
                    let lines = chunk.iter().filter(|&&byte| byte == b'\n').count();
                    for _ in 0..lines {
                        connection.output.extend_from_slice(b"OK\n");
                    }
                    if lines > 0 {
                        connection.partial.clear();
                    }
                    let tail = chunk
                        .iter()
                        .rposition(|&byte| byte == b'\n')
                        .map_or(0, |at| at + 1);
                    connection.partial.extend_from_slice(&chunk[tail..]);
                    if connection.partial.len() > MAX_LINE {
                        return false;
                    }
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
    }
    let mut sent = 0;
    while sent < connection.output.len() {
        match connection.stream.write(&connection.output[sent..]) {
            Ok(0) => return false,
            Ok(written) => sent += written,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    connection.output.drain(..sent);
    let waiting = !connection.output.is_empty();
    if waiting != connection.writable {
        let interest = if waiting {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        if poll
            .registry()
            .reregister(&mut connection.stream, token, interest)
            .is_err()
        {
            return false;
        }
        connection.writable = waiting;
    }
    true
}
