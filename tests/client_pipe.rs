//! `kvstore-client` in pipe mode (stdin not a terminal): requests are
//! pipelined, replies printed one per request in order, and the exit status
//! says whether any was `ERR` or the run stopped early. Against a real
//! server, and against fakes for what a real one does not do on demand
//! (withhold replies, redirect mid-stream, close mid-stream).

mod common;

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::Instant;

use common::fake_server::FakeListener;
use common::fake_server::{Answer, FakeServer, line};
use common::{DEADLINE, ServerProcess};
use kvstore::client::pipe::MAX_IN_FLIGHT_REQUESTS;

fn start_client(address: &str) -> Child {
    let (host, port) = address.rsplit_once(':').expect("host:port");
    Command::new(env!("CARGO_BIN_EXE_kvstore-client"))
        .args(["--timeout-ms", "20000", "-h", host, "-p", port])
        .env_remove("KVSTORE_AUTH")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start kvstore-client")
}

/// Runs the client with `input` on its stdin (written from a thread, so a
/// client that prints before it reads everything cannot block the test).
fn pipe(address: &str, input: Vec<u8>) -> Output {
    let mut child = start_client(address);
    let mut stdin = child.stdin.take().expect("stdin");
    let writer = thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let output = child.wait_with_output().expect("wait for kvstore-client");
    writer.join().expect("stdin writer");
    output
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn twenty_thousand_puts_are_answered_in_order_and_exit_zero() {
    const PUTS: usize = 20_000;
    const KEYS: usize = 100;
    let data = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(data.path(), &[]);
    let mut input = String::new();
    for index in 0..PUTS {
        writeln!(input, "PUT key{} {index}", index % KEYS).unwrap();
    }

    let started = Instant::now();
    let output = pipe(&server.address.to_string(), input.into_bytes());
    let elapsed = started.elapsed();

    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(output.stdout, "OK\n".repeat(PUTS).into_bytes());
    // Each key's last PUT won: the server applied them in input order.
    let mut connection = server.connect();
    for key in 0..KEYS {
        let last = PUTS - KEYS + key;
        let value = connection.request(format!("GET key{key}").as_bytes());
        assert_eq!(value, last.to_string().as_bytes(), "key{key}");
    }
    eprintln!("{PUTS} PUTs through pipe mode took {elapsed:?}");
}

/// A fake that answers the first request at once, then withholds replies
/// until a whole window of requests has arrived: a client that waited for
/// each reply before sending the next request would never get one.
#[test]
fn requests_go_before_earlier_replies_come_back() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let fake = thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut writer = stream.try_clone().unwrap();
        let mut lines = BufReader::new(stream).lines();
        assert_eq!(lines.next().unwrap().unwrap(), "PUT k 0");
        writer.write_all(b"OK\n").unwrap();
        for index in 1..=MAX_IN_FLIGHT_REQUESTS {
            assert_eq!(lines.next().unwrap().unwrap(), format!("PUT k {index}"));
        }
        writer
            .write_all("OK\n".repeat(MAX_IN_FLIGHT_REQUESTS).as_bytes())
            .unwrap();
    });
    let input: String = (0..=MAX_IN_FLIGHT_REQUESTS)
        .map(|index| format!("PUT k {index}\n"))
        .collect();

    let output = pipe(&address, input.into_bytes());

    fake.join().expect("the fake saw every request");
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(output.stdout.len(), 3 * (MAX_IN_FLIGHT_REQUESTS + 1));
}

#[test]
fn an_err_reply_is_printed_in_its_place_and_the_exit_status_is_one() {
    let data = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(data.path(), &[]);

    let output = pipe(
        &server.address.to_string(),
        b"PUT a 1\nFROB\nPUT b 2\nGET b\n".to_vec(),
    );

    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert_eq!(output.stdout, b"OK\nERR unknown command 'FROB'\nOK\n2\n");
    assert!(stderr(&output).contains("1 of 4 replies were ERR"));
}

/// Replies come as they arrive, not when the input ends: a script that
/// writes a request and waits for its reply before the next one works.
#[test]
fn each_reply_is_printed_while_the_input_is_still_open() {
    let data = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(data.path(), &[]);
    let mut child = start_client(&server.address.to_string());
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let started = Instant::now();
    for (request, reply) in [("PING", "PONG"), ("PUT a 1", "OK"), ("GET a", "1")] {
        writeln!(stdin, "{request}").unwrap();
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        assert_eq!(line, format!("{reply}\n"));
        assert!(started.elapsed() < DEADLINE);
    }
    drop(stdin);
    assert!(child.wait().unwrap().success());
}

/// Lines 1-3 are answered, then `NOT_LEADER` (a failover): the run stops
/// with exit status 2, naming the first refused line; every request sent
/// still gets its reply printed, and nothing is resent.
#[test]
fn a_not_leader_in_the_stream_stops_the_run_with_exit_status_two() {
    let mut seen = 0;
    let node = FakeServer::start(move |_| {
        seen += 1;
        match seen {
            1..=3 => line("OK"),
            _ => line("NOT_LEADER 2 127.0.0.1:1"),
        }
    });
    let input: String = (1..=10).map(|index| format!("PUT k {index}\n")).collect();

    let output = pipe(&node.address, input.into_bytes());

    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let message = stderr(&output);
    assert!(
        message.contains("line 4 was answered NOT_LEADER 2 127.0.0.1:1"),
        "{message}"
    );
    assert!(message.contains("it was not applied"), "{message}");
    let replies = String::from_utf8(output.stdout).unwrap();
    let received = node.received_so_far();
    assert_eq!(replies.lines().count(), received.len(), "{replies}");
    assert!(replies.starts_with("OK\nOK\nOK\nNOT_LEADER 2 127.0.0.1:1\n"));
    let expected: Vec<Vec<u8>> = (1..=received.len())
        .map(|index| format!("PUT k {index}").into_bytes())
        .collect();
    assert_eq!(received, expected, "sent in order, none twice");
}

/// The server closes after three replies with the fourth request in
/// flight: its outcome is unknown, and the message says which line.
#[test]
fn a_lost_connection_names_the_requests_whose_outcome_is_unknown() {
    let mut seen = 0;
    let node = FakeServer::start(move |_| {
        seen += 1;
        if seen <= 3 { line("OK") } else { Answer::Close }
    });

    let output = pipe(
        &node.address,
        b"PUT a 1\nPUT b 2\nPUT c 3\nPUT d 4\n".to_vec(),
    );

    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert_eq!(output.stdout, b"OK\nOK\nOK\n");
    let message = stderr(&output);
    assert!(
        message.contains(
            "with 1 request(s) unanswered (line 4): they may or may not have been applied"
        ),
        "{message}"
    );
}

/// Given a follower, the first request goes alone and follows the
/// redirect; everything after it is pipelined to the leader.
#[test]
fn the_first_request_finds_the_leader_and_the_rest_go_to_it() {
    let leader = FakeServer::store();
    let redirect = format!("NOT_LEADER 3 {}", leader.address);
    let follower = FakeListener::bind().serve(move |_| line(&redirect));
    let input: String = (0..100)
        .map(|index| format!("PUT k{index} {index}\n"))
        .collect();

    let output = pipe(&follower.address, format!("{input}GET k99\n").into_bytes());

    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(
        output.stdout,
        format!("{}99\n", "OK\n".repeat(100)).into_bytes()
    );
    assert_eq!(follower.received_so_far(), vec![b"PUT k0 0".to_vec()]);
    assert_eq!(leader.received_so_far().len(), 101);
}
