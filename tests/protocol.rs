//! The line protocol as a client sees it, over raw TCP against the real
//! server: every command and reply byte for byte, pipelining, half-close,
//! and the idle timeout.

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::thread;
use std::time::{Duration, Instant};

use common::ServerProcess;

fn start() -> (tempfile::TempDir, ServerProcess) {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &[]);
    (dir, server)
}

#[test]
fn every_command_and_reply_byte_for_byte() {
    let (_dir, server) = start();
    let mut client = server.connect();
    let table: &[(&[u8], &[u8])] = &[
        (b"PING\n", b"PONG\n"),
        (b"GET a\n", b"NOT_FOUND\n"),
        (b"PUT a 1\n", b"OK\n"),
        (b"GET a\n", b"1\n"),
        (b"PUT a 2\n", b"OK\n"),
        (b"GET a\n", b"2\n"),
        // Command names are case-insensitive; keys are not.
        (b"put B x\n", b"OK\n"),
        (b"gEt B\n", b"x\n"),
        (b"get b\n", b"NOT_FOUND\n"),
        (b"Ping\n", b"PONG\n"),
        // \r\n ends a line as well as \n.
        (b"PUT c 3\r\n", b"OK\n"),
        (b"GET c\r\n", b"3\n"),
        (b"PING\r\n", b"PONG\n"),
        // The value is the rest of the line after the key's space.
        (b"PUT s  two  spaces \n", b"OK\n"),
        (b"GET s\n", b" two  spaces \n"),
        (b"PUT e \n", b"OK\n"),
        (b"GET e\n", b"\n"),
        (b"DEL a\n", b"OK\n"),
        (b"GET a\n", b"NOT_FOUND\n"),
        (b"del a\n", b"NOT_FOUND\n"),
        (b"DEL never-existed\n", b"NOT_FOUND\n"),
    ];
    for (request, reply) in table {
        client.send(request);
        assert_eq!(
            client.read_line(),
            *reply,
            "reply to {:?}",
            String::from_utf8_lossy(request)
        );
    }
    // QUIT: the server closes without a reply.
    client.send(b"QUIT\n");
    assert_eq!(client.read_to_end(), b"");
}

#[test]
fn quit_stops_the_requests_behind_it() {
    let (_dir, server) = start();
    let mut client = server.connect();
    client.send(b"PUT x 1\nquit\nPUT y 2\n");
    assert_eq!(client.read_until_closed(), b"OK\n");
    let mut other = server.connect();
    assert_eq!(other.request(b"GET x"), b"1");
    assert_eq!(other.request(b"GET y"), b"NOT_FOUND");
}

/// 10,000 mixed requests, one write; the replies come back in order.
#[test]
fn ten_thousand_pipelined_requests_are_answered_in_order() {
    let (_dir, server) = start();
    let mut requests = Vec::new();
    let mut expected = Vec::new();
    let mut model: HashMap<String, String> = HashMap::new();
    for i in 0..10_000 {
        let key = format!("k{}", i % 97);
        let (request, reply) = match i % 5 {
            0 | 3 => {
                let value = format!("value {i}");
                model.insert(key.clone(), value.clone());
                (format!("PUT {key} {value}"), "OK".to_string())
            }
            1 => {
                let reply = model.get(&key).cloned().unwrap_or("NOT_FOUND".into());
                (format!("GET {key}"), reply)
            }
            2 => {
                let reply = if model.remove(&key).is_some() {
                    "OK"
                } else {
                    "NOT_FOUND"
                };
                (format!("DEL {key}"), reply.to_string())
            }
            _ => ("PING".to_string(), "PONG".to_string()),
        };
        requests.extend_from_slice(request.as_bytes());
        requests.push(b'\n');
        expected.push(reply);
    }
    let mut client = server.connect();
    let mut writer = client.stream.try_clone().unwrap();
    // The replies are read while the requests are written, so neither side
    // can fill the other's buffers and stall.
    let sender = thread::spawn(move || writer.write_all(&requests).unwrap());
    for (i, reply) in expected.iter().enumerate() {
        let mut line = client.read_line();
        assert_eq!(line.pop(), Some(b'\n'), "reply {i} not terminated");
        assert_eq!(String::from_utf8(line).unwrap(), *reply, "reply {i}");
    }
    sender.join().unwrap();
    assert_eq!(client.request(b"PING"), b"PONG");
}

#[test]
fn half_close_gets_every_reply_then_eof() {
    let (_dir, server) = start();
    let mut client = server.connect();
    client.send(b"PUT a 1\nGET a\n");
    client.shutdown_write();
    assert_eq!(client.read_to_end(), b"OK\n1\n");
}

/// A client that half-closes after a partial line gets the replies to its
/// whole lines; the partial one is never executed.
#[test]
fn half_close_after_a_partial_line_drops_only_that_line() {
    let (_dir, server) = start();
    let mut client = server.connect();
    client.send(b"PUT a 1\nPUT b 2");
    client.shutdown_write();
    assert_eq!(client.read_to_end(), b"OK\n");
    let mut other = server.connect();
    assert_eq!(other.request(b"GET a"), b"1");
    assert_eq!(other.request(b"GET b"), b"NOT_FOUND");
}

#[test]
fn an_idle_client_is_closed_and_an_active_one_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &["--idle-timeout-ms", "200"]);

    let started = Instant::now();
    let mut idle = server.connect();
    let mut active = server.connect();
    assert_eq!(active.request(b"PING"), b"PONG");

    // The active client keeps talking, every 50 ms for a second.
    let activity = thread::spawn(move || {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(1) {
            assert_eq!(active.request(b"PING"), b"PONG");
            thread::sleep(Duration::from_millis(50));
        }
        active
    });

    // The idle one is closed (EOF, no reply), and not before its timeout.
    assert_eq!(idle.read_to_end(), b"");
    let closed_after = started.elapsed();
    assert!(
        closed_after >= Duration::from_millis(190),
        "closed after only {closed_after:?}"
    );

    let mut active = activity.join().unwrap();
    assert_eq!(active.request(b"PING"), b"PONG");
}
