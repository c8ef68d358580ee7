//! Hostile and broken input: malformed lines, oversized lines, binary bytes,
//! clients that leave mid-line, swarms of connections, clients that never
//! read, and the flags, data directories and ports a server cannot start with.

mod common;

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::{DEADLINE, ServerProcess, raise_open_file_limit, run_to_exit, wait_until};
use kvstore::log::{self, Entry, Op};

const MIB: u64 = 1024 * 1024;

fn start(flags: &[&str]) -> (tempfile::TempDir, ServerProcess) {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), flags);
    (dir, server)
}

/// Sends each request on one connection and checks its exact reply; the
/// connection must stay usable after all of them.
fn assert_replies(server: &ServerProcess, table: &[(&[u8], &str)]) {
    let mut client = server.connect();
    for (request, reply) in table {
        client.send(request);
        let got = client.read_line();
        assert_eq!(
            String::from_utf8_lossy(&got),
            format!("{reply}\n"),
            "reply to {:?}",
            String::from_utf8_lossy(request)
        );
    }
    assert_eq!(client.request(b"PING"), b"PONG");
}

#[test]
fn unknown_commands_are_refused() {
    let (_dir, server) = start(&[]);
    assert_replies(
        &server,
        &[
            (b"FROB x\n", "ERR unknown command 'FROB'"),
            (b"GETX a\n", "ERR unknown command 'GETX'"),
            (b"PUTa b c\n", "ERR unknown command 'PUTa'"),
            (b" GET a\n", "ERR unknown command ''"),
            (b"\x00\xff\n", "ERR unknown command '\\x00\\xff'"),
            (b"\x1b[A\n", "ERR unknown command '\\x1b[A'"),
        ],
    );
    assert_eq!(server.connect().request(b"GET a"), b"NOT_FOUND");
}

#[test]
fn wrong_numbers_of_arguments_are_refused_with_the_usage() {
    let (_dir, server) = start(&[]);
    let put = "ERR wrong number of arguments, usage: PUT <key> <value>";
    let get = "ERR wrong number of arguments, usage: GET <key>";
    let del = "ERR wrong number of arguments, usage: DEL <key>";
    assert_replies(
        &server,
        &[
            (b"PUT\n", put),
            (b"PUT k\n", put),
            (b"GET\n", get),
            (b"GET a b\n", get),
            (b"get a \n", get),
            (b"DEL\n", del),
            (b"DEL a b\n", del),
            (b"PING x\n", "ERR wrong number of arguments, usage: PING"),
            (b"QUIT now\n", "ERR wrong number of arguments, usage: QUIT"),
        ],
    );
    assert_eq!(server.connect().request(b"GET k"), b"NOT_FOUND");
}

#[test]
fn empty_lines_are_refused() {
    let (_dir, server) = start(&[]);
    assert_replies(
        &server,
        &[(b"\n", "ERR empty line"), (b"\r\n", "ERR empty line")],
    );
}

#[test]
fn put_with_a_key_but_no_value_separator_is_refused() {
    let (_dir, server) = start(&[]);
    let put = "ERR wrong number of arguments, usage: PUT <key> <value>";
    assert_replies(&server, &[(b"PUT key\n", put), (b"PUT key\r\n", put)]);
    assert_eq!(server.connect().request(b"GET key"), b"NOT_FOUND");
}

#[test]
fn empty_keys_are_refused() {
    let (_dir, server) = start(&[]);
    assert_replies(
        &server,
        &[
            (b"PUT  value\n", "ERR empty key"),
            (b"GET \n", "ERR empty key"),
            (b"DEL \n", "ERR empty key"),
        ],
    );
}

/// A client sends one 2 MiB line (the limit is 1 MiB): it gets the ERR and
/// is cut off; the line is never executed; returns once it is closed.
fn send_a_2_mib_line(server: &ServerProcess) {
    let mut long = server.connect();
    let mut line = b"PUT k ".to_vec();
    line.resize(2 * MIB as usize, b'x');
    line.push(b'\n');
    let mut writer = long.stream.try_clone().unwrap();
    // The server stops reading half way: the rest of the write fails or
    // blocks until the server closes, so it runs on its own thread.
    let sender = thread::spawn(move || {
        let _ = writer.write_all(&line);
    });
    assert_eq!(
        String::from_utf8_lossy(&long.read_line()),
        "ERR line too long (limit 1048576 bytes)\n"
    );
    assert_eq!(long.read_until_closed(), b"");
    sender.join().unwrap();
}

#[test]
fn a_2_mib_line_is_refused_and_its_memory_released() {
    let (_dir, server) = start(&[]);
    let mut before = server.connect();
    assert_eq!(before.request(b"PING"), b"PONG");
    let baseline = server.rss_bytes();

    send_a_2_mib_line(&server);
    assert_eq!(before.request(b"PING"), b"PONG");
    let mut after = server.connect();
    assert_eq!(after.request(b"GET k"), b"NOT_FOUND");

    // Each long line grows an input buffer to the 1 MiB limit. The
    // allocator may keep one such buffer's pages for reuse, but a buffer
    // kept per connection would add a MiB each time.
    for _ in 0..5 {
        send_a_2_mib_line(&server);
    }
    assert_eq!(after.request(b"PING"), b"PONG");
    wait_until("the server's memory to return to its level before", || {
        server.rss_bytes() < baseline + 3 * MIB
    });
}

/// `--max-line-bytes` counts the line without its terminator: a line of
/// exactly the limit is served, with `\n` or `\r\n`; one byte more is not.
#[test]
fn the_line_limit_is_exact() {
    let (_dir, server) = start(&["--max-line-bytes", "64"]);
    let at_limit = format!("PUT k {}", "x".repeat(58));
    assert_eq!(at_limit.len(), 64);
    let mut client = server.connect();
    assert_eq!(client.request(at_limit.as_bytes()), b"OK");
    client.send(format!("{at_limit}\r\n").as_bytes());
    assert_eq!(client.read_line(), b"OK\n");

    let mut over = server.connect();
    over.send(format!("{at_limit}y\n").as_bytes());
    assert_eq!(
        String::from_utf8_lossy(&over.read_until_closed()),
        "ERR line too long (limit 64 bytes)\n"
    );
    assert_eq!(client.request(b"GET k"), "x".repeat(58).as_bytes());
}

#[test]
fn binary_keys_and_values_are_stored_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(dir.path(), &[]);
    let pairs: &[(&[u8], &[u8])] = &[
        (b"k\x00\xff\x80", b"v\x00\xff\x80"),
        (b"a\rb", b"x\ry z"),
        (b"\xc3\x28", b"\xe2\x82 \xf0\x28\x8c\x28"),
        (b"\x80", b"\r\x00\rz"),
        (b"\xff", b""),
    ];
    let mut client = server.connect();
    for (key, value) in pairs {
        let request = [b"PUT ", *key, b" ", *value].concat();
        assert_eq!(client.request(&request), b"OK", "PUT {request:?}");
        assert_eq!(client.request(&[b"GET ", *key].concat()), *value);
    }
    // \r\n still ends the line when the key holds a \r.
    client.send(b"GET a\rb\r\n");
    assert_eq!(client.read_line(), b"x\ry z\n");
    assert_eq!(client.request(b"DEL \xff"), b"OK");
    assert_eq!(client.request(b"GET \xff"), b"NOT_FOUND");
    assert_eq!(client.request(b"PING"), b"PONG");
    server.stop();

    let restarted = ServerProcess::start(dir.path(), &[]);
    let mut client = restarted.connect();
    for (key, value) in &pairs[..4] {
        assert_eq!(client.request(&[b"GET ", *key].concat()), *value);
    }
    assert_eq!(client.request(b"GET \xff"), b"NOT_FOUND");
}

/// Connects and sends PING: the connection if PONG came back, `None` if the
/// server refused it as one too many.
fn admitted_client(address: SocketAddr) -> Option<TcpStream> {
    let mut stream = TcpStream::connect(address).ok()?;
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream.write_all(b"PING\n").ok()?;
    let mut reply = Vec::new();
    let _ = BufReader::new(&stream).read_until(b'\n', &mut reply);
    match &reply[..] {
        b"PONG\n" => Some(stream),
        b"ERR max number of clients reached\n" | b"" => None,
        other => panic!("unexpected reply {:?}", String::from_utf8_lossy(other)),
    }
}

#[test]
fn a_client_that_leaves_mid_line_never_executes_it_nor_keeps_its_slot() {
    let (_dir, server) = start(&["--max-clients", "2"]);
    let mut first = server.connect();
    assert_eq!(first.request(b"PING"), b"PONG");
    first.send(b"PUT a partial");
    drop(first);
    // More of the same: were their slots leaked, nobody could get in below.
    for _ in 0..4 {
        if let Ok(mut stream) = TcpStream::connect(server.address) {
            let _ = stream.write_all(b"PUT a partial");
        }
    }
    wait_until("both slots to be free", || {
        let Some(_one) = admitted_client(server.address) else {
            return false;
        };
        admitted_client(server.address).is_some()
    });
    wait_until("a client to be admitted", || {
        admitted_client(server.address).is_some()
    });
    let mut client = server.connect();
    assert_eq!(client.request(b"GET a"), b"NOT_FOUND");
}

#[test]
fn a_thousand_concurrent_connections_are_all_served() {
    const CLIENTS: usize = 1000;
    const WAVE: usize = 100;
    // Each side holds one descriptor per connection, plus its own.
    raise_open_file_limit(CLIENTS as u64 + 256);
    let (_dir, server) = start(&[]);
    let mut streams = Vec::with_capacity(CLIENTS);
    for wave in 0..CLIENTS / WAVE {
        for _ in 0..WAVE {
            let stream = TcpStream::connect(server.address).unwrap();
            stream.set_read_timeout(Some(DEADLINE)).unwrap();
            streams.push(stream);
        }
        // The listen backlog is 128: a burst of more connects than that,
        // faster than a busy machine schedules the server, would see SYNs
        // dropped and retried a second or more later. Connections are
        // accepted in order, so once the wave's last one answers, the whole
        // wave is in.
        let mut last = &streams[(wave + 1) * WAVE - 1];
        last.write_all(b"PING\n").unwrap();
        let mut reply = Vec::new();
        BufReader::new(last).read_until(b'\n', &mut reply).unwrap();
        assert_eq!(reply, b"PONG\n");
    }
    for (i, mut stream) in streams.iter().enumerate() {
        let requests = format!("PING\nPUT c{i} v{i}\nGET c{i}\n");
        stream.write_all(requests.as_bytes()).unwrap();
    }
    for (i, stream) in streams.iter().enumerate() {
        let mut reader = BufReader::new(stream);
        let mut replies = Vec::new();
        for _ in 0..3 {
            reader.read_until(b'\n', &mut replies).unwrap();
        }
        assert_eq!(
            String::from_utf8_lossy(&replies),
            format!("PONG\nOK\nv{i}\n"),
            "connection {i}"
        );
    }
}

#[test]
fn connections_beyond_max_clients_are_refused_until_a_slot_frees() {
    let (_dir, mut server) = start(&["--max-clients", "5"]);
    let mut admitted: Vec<_> = (0..5)
        .map(|_| {
            let mut client = server.connect();
            assert_eq!(client.request(b"PING"), b"PONG");
            client
        })
        .collect();
    let mut sixth = server.connect();
    assert_eq!(
        String::from_utf8_lossy(&sixth.read_until_closed()),
        "ERR max number of clients reached\n"
    );
    let line = server.wait_for_stderr("--max-clients 5 reached");
    assert!(
        line.contains(" WARN ") && line.contains("refused a connection from 127.0.0.1:"),
        "{line}"
    );
    drop(admitted.pop());
    wait_until("the freed slot to admit a client", || {
        admitted_client(server.address).is_some()
    });
    for client in &mut admitted {
        assert_eq!(client.request(b"PING"), b"PONG");
    }
}

/// A client pipelines 100,000 requests, half of them GETs of a 4 KiB value
/// (200 MiB of replies), without reading. The server stops reading it once
/// its replies back up, so its memory stays bounded, other clients are
/// served, and the client gets every reply, in order, once it reads.
#[test]
fn a_client_that_does_not_read_is_held_back_not_buffered() {
    const REQUESTS: usize = 100_000;
    const CHUNK_BYTES: usize = 64 * 1024;
    let (_dir, server) = start(&["--fsync", "never"]);
    let big = "b".repeat(4096);
    let mut setup = server.connect();
    assert_eq!(setup.request(format!("PUT big {big}").as_bytes()), b"OK");
    let baseline = server.rss_bytes();

    let mut requests = Vec::new();
    let mut full_log_bytes = server.log_bytes();
    for i in 0..REQUESTS {
        if i % 2 == 0 {
            let (key, value) = (format!("k{i}"), i.to_string());
            requests.extend_from_slice(format!("PUT {key} {value}\n").as_bytes());
            let op = Op::Put {
                key: key.as_bytes(),
                value: value.as_bytes(),
            };
            let entry = Entry {
                epoch: 1,
                index: 0,
                commit: 0,
                op,
            };
            full_log_bytes += log::encoded_len(&entry) as u64;
        } else {
            requests.extend_from_slice(b"GET big\n");
        }
    }
    let stream = TcpStream::connect(server.address).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let written = Arc::new(AtomicUsize::new(0));
    let sender = {
        let written = Arc::clone(&written);
        thread::spawn(move || {
            for chunk in requests.chunks(CHUNK_BYTES) {
                writer.write_all(chunk).unwrap();
                written.fetch_add(chunk.len(), Ordering::Relaxed);
            }
        })
    };

    // Watch the server while the client does not read, until it has
    // stopped making progress: no more requests taken, no log growth.
    let log_bytes = || server.log_bytes();
    let bound = baseline + 64 * MIB;
    let started = Instant::now();
    let mut last = (written.load(Ordering::Relaxed), log_bytes());
    let mut quiet_since = Instant::now();
    while quiet_since.elapsed() < Duration::from_millis(300) {
        assert!(started.elapsed() < DEADLINE, "the server never settled");
        let rss = server.rss_bytes();
        assert!(
            rss < bound,
            "server RSS {} MiB, baseline {} MiB",
            rss / MIB,
            baseline / MIB
        );
        let now = (written.load(Ordering::Relaxed), log_bytes());
        if now != last {
            last = now;
            quiet_since = Instant::now();
        }
        thread::sleep(Duration::from_millis(10));
    }
    assert!(
        last.1 < full_log_bytes / 2,
        "the server executed most requests of a client that reads nothing"
    );

    // Another client is served meanwhile.
    let mut other = server.connect();
    assert_eq!(other.request(b"PUT other 1"), b"OK");
    assert_eq!(other.request(b"GET other"), b"1");
    assert_eq!(other.request(b"GET big"), big.as_bytes());

    // Now the client reads: every reply, in order.
    let big_reply = format!("{big}\n").into_bytes();
    let mut reader = BufReader::new(stream);
    let mut reply = Vec::new();
    for i in 0..REQUESTS {
        reply.clear();
        reader.read_until(b'\n', &mut reply).unwrap();
        let expected: &[u8] = if i % 2 == 0 { b"OK\n" } else { &big_reply };
        assert!(reply == expected, "reply {i}: {} bytes", reply.len());
    }
    sender.join().unwrap();
    assert_eq!(other.request(b"GET k99998"), b"99998");
}

#[test]
fn an_unusable_data_dir_stops_the_server_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    fs::write(&file, b"not a directory").unwrap();
    let data_dir = file.join("sub");
    let (status, stderr) = run_to_exit(&["0", "--data-dir", data_dir.to_str().unwrap()]);
    assert_eq!(status.code(), Some(1), "stderr: {stderr}");
    assert!(
        stderr.contains(&format!("cannot use {}", data_dir.display())),
        "stderr: {stderr}"
    );
}

#[test]
fn invalid_peers_are_refused_naming_the_entry() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    for entry in ["127.0.0.1", "nohost:abc", "127.0.0.1:0"] {
        let list = format!("127.0.0.1:7002,{entry}");
        let args = ["0", &list, "--data-dir", data_dir.to_str().unwrap()];
        let (status, stderr) = run_to_exit(&args);
        assert_eq!(status.code(), Some(2), "{entry}: stderr: {stderr}");
        assert!(
            stderr.contains(&format!("invalid peer '{entry}' in PEERS")),
            "{entry}: stderr: {stderr}"
        );
    }
    assert!(
        !data_dir.exists(),
        "flags were refused after touching the disk"
    );
}

#[test]
fn invalid_flags_exit_2_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let data_dir = data_dir.to_str().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["--fsync", "sometimes"], "--fsync"),
        (
            &["--max-line-bytes", "3"],
            "--max-line-bytes 3 is out of range",
        ),
        (&["--max-clients", "0"], "--max-clients 0 is out of range"),
        (
            &["--fsync-interval-ms", "0"],
            "--fsync-interval-ms must be at least 1",
        ),
        (&["--no-such-flag"], "--no-such-flag"),
    ];
    for (flags, message) in cases {
        let mut args = vec!["0", "--data-dir", data_dir];
        args.extend_from_slice(flags);
        let (status, stderr) = run_to_exit(&args);
        assert_eq!(status.code(), Some(2), "{flags:?}: stderr: {stderr}");
        assert!(stderr.contains(message), "{flags:?}: stderr: {stderr}");
    }
    let (status, stderr) = run_to_exit(&["notaport", "--data-dir", data_dir]);
    assert_eq!(status.code(), Some(2), "stderr: {stderr}");
    assert!(
        !Path::new(data_dir).exists(),
        "flags were refused after touching the disk"
    );
}

#[test]
fn a_peer_list_naming_this_node_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let peers = format!("127.0.0.1:{port},127.0.0.1:{}", common::free_port());
    let server = ServerProcess::start_on_port(port, dir.path(), &[&peers]);
    assert_eq!(server.address.port(), port);
    assert_eq!(server.connect().request(b"PING"), b"PONG");
}

#[test]
fn a_second_server_on_the_same_data_dir_is_refused() {
    let (dir, server) = start(&[]);
    let data_dir = dir.path().to_str().unwrap();
    let (status, stderr) = run_to_exit(&["0", "--data-dir", data_dir]);
    assert_eq!(status.code(), Some(1), "stderr: {stderr}");
    assert!(
        stderr.contains("data directory is locked"),
        "stderr: {stderr}"
    );
    let lock = dir.path().join("LOCK");
    assert!(
        stderr.contains(&lock.display().to_string()),
        "stderr: {stderr}"
    );
    assert_eq!(server.connect().request(b"PING"), b"PONG");
}

#[test]
fn a_port_in_use_stops_the_server_naming_the_address() {
    let dir = tempfile::tempdir().unwrap();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap();
    let port = address.port().to_string();
    let (status, stderr) = run_to_exit(&[&port, "--data-dir", dir.path().to_str().unwrap()]);
    assert_eq!(status.code(), Some(1), "stderr: {stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on {address}")),
        "stderr: {stderr}"
    );
}
