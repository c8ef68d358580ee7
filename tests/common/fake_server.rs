//! Tiny fake servers on 127.0.0.1 that speak the line protocol with canned
//! behaviour and report every request line they receive, for the client's
//! tests.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread;
use std::time::Duration;

/// Long enough never to fire on a healthy run, short enough to end a hung one.
pub const PATIENCE: Duration = Duration::from_secs(10);
/// How long to watch for a request that must not come.
pub const QUIET_PERIOD: Duration = Duration::from_millis(300);

/// What a fake does with one request line.
pub enum Answer {
    Line(Vec<u8>),
    /// Close the connection without replying.
    Close,
    /// Keep the connection open and never reply.
    Silence,
}

pub fn line(text: impl AsRef<[u8]>) -> Answer {
    Answer::Line(text.as_ref().to_vec())
}

/// A listener bound before its behaviour is known, so that fakes can name
/// each other in redirects.
pub struct FakeListener {
    listener: TcpListener,
    pub address: String,
}

/// A running fake: its address and the request lines it received, in order.
pub struct FakeServer {
    pub address: String,
    received: Receiver<Vec<u8>>,
}

impl FakeListener {
    pub fn bind() -> FakeListener {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a fake server");
        let address = listener.local_addr().expect("local address").to_string();
        FakeListener { listener, address }
    }

    /// Serves connections one after another on a thread that lives as long
    /// as the test process.
    pub fn serve(self, answer: impl FnMut(&[u8]) -> Answer + Send + 'static) -> FakeServer {
        let (sender, received) = mpsc::channel();
        let listener = self.listener;
        thread::spawn(move || serve_connections(listener, answer, sender));
        FakeServer {
            address: self.address,
            received,
        }
    }
}

fn serve_connections(
    listener: TcpListener,
    mut answer: impl FnMut(&[u8]) -> Answer,
    sender: Sender<Vec<u8>>,
) {
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        serve_one_connection(stream, &mut answer, &sender);
    }
}

fn serve_one_connection(
    stream: TcpStream,
    answer: &mut impl FnMut(&[u8]) -> Answer,
    sender: &Sender<Vec<u8>>,
) {
    let mut writer = stream.try_clone().expect("clone the fake's stream");
    let mut reader = BufReader::new(stream);
    let mut request = Vec::new();
    loop {
        request.clear();
        match reader.read_until(b'\n', &mut request) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let request = request.strip_suffix(b"\n").unwrap_or(&request);
        let _ = sender.send(request.to_vec());
        match answer(request) {
            Answer::Line(mut reply) => {
                reply.push(b'\n');
                if writer.write_all(&reply).is_err() {
                    return;
                }
            }
            Answer::Close => return,
            Answer::Silence => {}
        }
    }
}

impl FakeServer {
    pub fn start(answer: impl FnMut(&[u8]) -> Answer + Send + 'static) -> FakeServer {
        FakeListener::bind().serve(answer)
    }

    /// A fake that behaves like a single-node store.
    pub fn store() -> FakeServer {
        let mut map: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
        FakeServer::start(move |request| answer_as_store(&mut map, request))
    }

    /// Every request already received. Call after the client's call returned:
    /// a fake reports a request before answering it, so nothing is missing.
    pub fn received_so_far(&self) -> Vec<Vec<u8>> {
        self.received.try_iter().collect()
    }

    /// Waits for the next request, failing the test after [`PATIENCE`].
    pub fn next_request(&self) -> Vec<u8> {
        self.received
            .recv_timeout(PATIENCE)
            .expect("the fake server received no request")
    }

    /// Asserts that no request arrives during [`QUIET_PERIOD`].
    pub fn assert_no_more_requests(&self) {
        match self.received.recv_timeout(QUIET_PERIOD) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(request) => panic!("unexpected request {}", request.escape_ascii()),
            Err(RecvTimeoutError::Disconnected) => panic!("the fake server stopped"),
        }
    }
}

pub fn answer_as_store(map: &mut HashMap<Vec<u8>, Vec<u8>>, request: &[u8]) -> Answer {
    let mut words = request.splitn(3, |&byte| byte == b' ');
    match (words.next(), words.next(), words.next()) {
        (Some(b"PUT"), Some(key), Some(value)) => {
            map.insert(key.to_vec(), value.to_vec());
            line("OK")
        }
        (Some(b"GET"), Some(key), None) => match map.get(key) {
            Some(value) => line(value),
            None => line("NOT_FOUND"),
        },
        (Some(b"DEL"), Some(key), None) => match map.remove(key) {
            Some(_) => line("OK"),
            None => line("NOT_FOUND"),
        },
        (Some(b"PING"), None, None) => line("PONG"),
        (Some(b"QUIT"), None, None) => Answer::Close,
        _ => line("ERR unknown command"),
    }
}

/// An address where nothing listens: a port just released by the OS.
pub fn dead_address() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("local address").to_string()
}
