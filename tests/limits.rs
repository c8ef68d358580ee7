//! Bounded resources, against real processes: the memory limit, the client
//! buffer budget, the request deadline (slow and silent clients) and the
//! idle timeout (a client dripping bytes). Memory figures come from the
//! server's own accounting (ROLE) and from /proc/<pid>/status.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::cluster::Cluster;
use common::{Connection, DEADLINE, ServerProcess, wait_until};

const OOM: &[u8] = b"ERR OOM command not allowed when used memory > max-memory-bytes";
const MIB: u64 = 1024 * 1024;

/// `ROLE`'s used and max memory bytes.
fn memory(connection: &mut Connection) -> (u64, u64) {
    let reply = String::from_utf8(connection.request(b"ROLE")).unwrap();
    let fields: Vec<u64> = reply
        .split(' ')
        .skip(5)
        .map(|field| field.parse().unwrap())
        .collect();
    (fields[0], fields[1])
}

/// PUTs of distinct keys with `value_bytes`-byte values until one is
/// refused; returns how many were stored.
fn fill_until_refused(connection: &mut Connection, value_bytes: usize) -> usize {
    let value = "m".repeat(value_bytes);
    for i in 0.. {
        let reply = connection.request(format!("PUT key{i} {value}").as_bytes());
        if reply != b"OK" {
            assert_eq!(reply, OOM);
            return i;
        }
    }
    unreachable!()
}

/// Under --max-memory-bytes a PUT that grows the store past it is refused;
/// reads, DEL and overwrites that do not grow it still work; the figure is
/// the same after a restart; and hammering writes does not grow the RSS.
#[test]
fn a_memory_limit_refuses_growth_but_not_reads_deletes_or_shrinking() {
    let dir = tempfile::tempdir().unwrap();
    let limit = 64 * 1024;
    let args = ["--max-memory-bytes", "64kb", "--fsync", "never"];
    let mut server = ServerProcess::start(dir.path(), &args);
    let mut client = server.connect();
    let stored = fill_until_refused(&mut client, 1000);
    assert!(
        (50..64).contains(&stored),
        "{stored} pairs of ~1 KB in 64 KiB"
    );
    let (used, max) = memory(&mut client);
    assert_eq!(max, limit);
    assert!(used <= limit && used > limit - 1100, "used {used}");
    let value = "m".repeat(1000);
    assert_eq!(client.request(b"GET key0"), value.as_bytes());
    assert_eq!(client.request(b"PUT key0 small"), b"OK");
    assert_eq!(
        client.request(format!("PUT key0 {value}").as_bytes()),
        b"OK"
    );
    // Growing one pair by more than a pair's worth of slack is refused.
    let bigger = "m".repeat(2100);
    assert_eq!(client.request(format!("PUT key0 {bigger}").as_bytes()), OOM);
    assert_eq!(client.request(b"DEL key1"), b"OK");
    assert_eq!(
        client.request(format!("PUT fresh {value}").as_bytes()),
        b"OK"
    );
    let before = memory(&mut client);
    let rss_before = server.rss_bytes();
    for i in 0..5000 {
        let reply = client.request(format!("PUT more{i} {value}").as_bytes());
        assert_eq!(reply, OOM);
    }
    assert_eq!(memory(&mut client), before);
    let rss_after = server.rss_bytes();
    assert!(
        rss_after < rss_before + 2 * MIB,
        "RSS grew from {rss_before} to {rss_after} while every write was refused"
    );
    server.stop();
    let restarted = ServerProcess::start(dir.path(), &args);
    assert_eq!(memory(&mut restarted.connect()), before);
}

/// In a cluster the leader alone decides: it refuses, and every replica
/// ends up accounting the same bytes.
#[test]
fn a_cluster_agrees_on_the_memory_it_holds() {
    let mut cluster = Cluster::start(3, &["--max-memory-bytes", "16kb"]);
    let leader = cluster.wait_for_leader(&[0, 1, 2]);
    let mut client = cluster.connect(leader);
    let stored = fill_until_refused(&mut client, 500);
    assert!(stored > 10, "{stored}");
    let last = format!("key{}", stored - 1);
    let value = "m".repeat(500);
    for node in 0..3 {
        cluster.wait_for_value(node, &last, value.as_bytes());
    }
    let used: Vec<(u64, u64)> = (0..3)
        .map(|node| memory(&mut cluster.connect(node)))
        .collect();
    assert!(used.iter().all(|figures| *figures == used[0]), "{used:?}");
    assert!(used[0].0 <= 16 * 1024);
}

/// Thirty connections each holding most of a 1 MiB line: past the 4 MiB
/// budget the ones holding the most are closed (with a log line), the
/// server's RSS stays near its budget, and a well-behaved client is served.
#[test]
fn client_buffers_stay_within_their_budget() {
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "--max-client-buffer-bytes",
        "4mb",
        "--max-line-bytes",
        "1048576",
    ];
    let mut server = ServerProcess::start(dir.path(), &args);
    let rss_before = server.rss_bytes();
    let partial = format!("PUT big {}", "p".repeat(900 * 1024));
    let hogs: Vec<TcpStream> = (0..30)
        .map(|_| {
            let mut stream = TcpStream::connect(server.address).unwrap();
            stream.write_all(partial.as_bytes()).unwrap();
            stream
        })
        .collect();
    let line = server.wait_for_stderr("client buffers reached --max-client-buffer-bytes");
    assert!(line.contains("closed"), "{line}");
    wait_until("most hogs to be closed", || {
        let closed = hogs.iter().filter(|hog| is_closed(hog)).count();
        closed >= 25
    });
    let rss_after = server.rss_bytes();
    assert!(
        rss_after < rss_before + 16 * MIB,
        "RSS grew from {rss_before} to {rss_after} with a 4 MiB client budget"
    );
    let mut client = server.connect();
    assert_eq!(client.request(b"PUT small value"), b"OK");
}

/// Whether the server closed `stream` or has something to say (peeked,
/// so nothing is consumed), without blocking long.
fn is_closed(stream: &TcpStream) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_millis(1)))
        .unwrap();
    let mut byte = [0u8; 1];
    match stream.peek(&mut byte) {
        Ok(_) => true,
        Err(error) => !matches!(
            error.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

/// Sends `bytes` one at a time, `gap` apart, until the server answers or
/// closes the connection; returns what it answered and how long it took.
fn drip_until_closed(stream: &mut TcpStream, bytes: &[u8], gap: Duration) -> (Vec<u8>, Duration) {
    let started = Instant::now();
    for byte in bytes.iter().cycle() {
        if stream.write_all(&[*byte]).is_err() || is_closed(stream) {
            break;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "the dripping client was never cut off"
        );
        std::thread::sleep(gap);
    }
    let mut reply = Vec::new();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let _ = stream.read_to_end(&mut reply);
    (reply, started.elapsed())
}

const TIMEOUT_REPLY: &[u8] = b"ERR request timeout: no whole request line within 300 ms; closing\n";

/// A request dripped a byte at a time (slowloris) is cut off once it has
/// taken --request-timeout-ms, and told why.
#[test]
fn a_request_that_takes_too_long_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &["--request-timeout-ms", "300"]);
    let mut stream = TcpStream::connect(server.address).unwrap();
    stream.write_all(b"PING\n").unwrap();
    let mut pong = [0u8; 5];
    stream.read_exact(&mut pong).unwrap();
    let (reply, took) =
        drip_until_closed(&mut stream, b"PUT slow value", Duration::from_millis(20));
    assert_eq!(reply, TIMEOUT_REPLY, "{}", String::from_utf8_lossy(&reply));
    assert!(took >= Duration::from_millis(300), "cut off after {took:?}");
}

/// A connection that never sends its first line is cut off too, and the
/// operator is told (at most once a second).
#[test]
fn a_silent_connection_is_cut_off_after_the_request_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(dir.path(), &["--request-timeout-ms", "300"]);
    let mut silent = server.connect();
    assert_eq!(silent.read_to_end(), TIMEOUT_REPLY);
    let line = server.wait_for_stderr("(--request-timeout-ms; 1 so far)");
    assert!(
        line.contains(" WARN ") && line.contains("sent no whole request line within 300 ms"),
        "{line}"
    );
}

/// The idle timeout counts from the last whole request: dripping bytes of
/// a line that never ends does not keep a connection open.
#[test]
fn a_dripping_connection_is_idle() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["--idle-timeout-ms", "300", "--request-timeout-ms", "0"];
    let server = ServerProcess::start(dir.path(), &args);
    let mut stream = TcpStream::connect(server.address).unwrap();
    // The idle clock starts when the server reads the PING: time from
    // before it is sent, so the bound below cannot be missed by a hair.
    let before_last_request = Instant::now();
    stream.write_all(b"PING\n").unwrap();
    let mut pong = [0u8; 5];
    stream.read_exact(&mut pong).unwrap();
    let (reply, _) = drip_until_closed(&mut stream, b"GET k", Duration::from_millis(20));
    assert_eq!(reply, b"", "{}", String::from_utf8_lossy(&reply));
    // The server's clock counts whole milliseconds (it truncates), so a
    // close may come up to 1 ms before 300 ms of real time.
    let took = before_last_request.elapsed() + Duration::from_millis(1);
    assert!(took >= Duration::from_millis(300), "closed after {took:?}");
}
