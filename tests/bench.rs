//! `kvstore-bench` against the real server, a real 3-node cluster, a fake
//! server that redirects every request, and nothing at all.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;

use common::cluster::Cluster;
use common::{ServerProcess, free_port};

fn bench_binary() -> &'static str {
    env!("CARGO_BIN_EXE_kvstore-bench")
}

fn run_bench(arguments: &[&str]) -> Output {
    run_bench_with_password(arguments, None)
}

/// `kvstore-bench` with `KVSTORE_AUTH` set to `password` (or unset).
fn run_bench_with_password(arguments: &[&str], password: Option<&str>) -> Output {
    let mut bench = Command::new(bench_binary());
    match password {
        Some(password) => bench.env("KVSTORE_AUTH", password),
        None => bench.env_remove("KVSTORE_AUTH"),
    };
    bench
        .args(arguments)
        .stdin(Stdio::null())
        .output()
        .expect("run kvstore-bench")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The `RESULT key=value ...` line of a successful run, as a map.
fn result_of(output: &Output) -> HashMap<String, String> {
    let stdout = text(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "stdout: {stdout}\nstderr: {}",
        text(&output.stderr)
    );
    let lines: Vec<&str> = stdout
        .lines()
        .filter(|line| line.starts_with("RESULT "))
        .collect();
    let [line] = lines[..] else {
        panic!("expected one RESULT line in: {stdout}");
    };
    line["RESULT ".len()..]
        .split(' ')
        .map(|pair| {
            let (key, value) = pair.split_once('=').expect("key=value");
            (key.to_owned(), value.to_owned())
        })
        .collect()
}

fn number(result: &HashMap<String, String>, key: &str) -> u64 {
    result[key]
        .parse()
        .unwrap_or_else(|_| panic!("{key}={} is not a number", result[key]))
}

#[test]
fn a_preloaded_run_completes_every_request_without_errors() {
    let data_dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(data_dir.path(), &["--fsync", "never"]);
    let address = server.address.to_string();
    let output = run_bench(&[
        "--addr",
        &address,
        "--requests",
        "20000",
        "--clients",
        "4",
        "--pipeline",
        "8",
        "--preload",
        "--keyspace",
        "1000",
    ]);
    let result = result_of(&output);
    assert_eq!(number(&result, "ops"), 20000);
    assert_eq!(number(&result, "errors"), 0);
    assert_eq!(number(&result, "clients"), 4);
    assert_eq!(number(&result, "pipeline"), 8);
    assert_eq!(result["proto"], "line");
    assert!(number(&result, "ops_per_sec") > 0);
    assert!(number(&result, "p50_us") <= number(&result, "p99_us"));
    assert!(number(&result, "p99_us") <= number(&result, "p999_us"));
    let stdout = text(&output.stdout);
    assert!(stdout.contains("GET misses  0"), "{stdout}");

    let mut connection = server.connect();
    for key in ["key:00000000", "key:00000500", "key:00000999"] {
        let value = connection.request(format!("GET {key}").as_bytes());
        assert_eq!(value, vec![b'x'; 100], "{key}");
    }
}

#[test]
fn a_timed_run_reports_what_it_did() {
    let data_dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(data_dir.path(), &["--fsync", "never"]);
    let output = run_bench(&[
        "--addr",
        &server.address.to_string(),
        "--duration",
        "0.3",
        "--warmup",
        "0",
        "--clients",
        "3",
        "--get-ratio",
        "0",
        "--value-size",
        "7",
        "--keyspace",
        "10",
    ]);
    let result = result_of(&output);
    assert!(number(&result, "ops") > 0);
    assert_eq!(number(&result, "errors"), 0);
    assert_eq!(result["get_ratio"], "0");
    let seconds: f64 = result["seconds"].parse().unwrap();
    assert!((0.3..5.0).contains(&seconds), "seconds={seconds}");
    let value = server.connect().request(b"GET key:00000003");
    assert_eq!(value, b"xxxxxxx");
}

#[test]
fn pointed_at_a_follower_it_finds_the_leader() {
    let cluster = Cluster::start(3, &["--fsync", "never", "--follower-reads", "redirect"]);
    let leader = cluster.wait_for_leader(&[0, 1, 2]);
    let follower = (leader + 1) % 3;
    let follower_address = cluster.address(follower).to_string();
    let leader_address = cluster.address(leader).to_string();
    // A PUT probe for a mixed load, a GET probe for a read-only one: both
    // are redirected (reads too, under --follower-reads redirect).
    for get_ratio in ["0.5", "1"] {
        let output = run_bench(&[
            "--addr",
            &follower_address,
            "--requests",
            "3000",
            "--clients",
            "4",
            "--pipeline",
            "8",
            "--warmup",
            "0",
            "--get-ratio",
            get_ratio,
        ]);
        let result = result_of(&output);
        assert_eq!(number(&result, "ops"), 3000);
        assert_eq!(number(&result, "errors"), 0, "{}", text(&output.stdout));
        let stderr = text(&output.stderr);
        assert!(
            stderr.contains(&format!(
                "{follower_address} is not the leader; sending to the leader at {leader_address}"
            )),
            "{stderr}"
        );
        assert!(text(&output.stdout).contains(&leader_address));
    }
}

#[test]
fn bad_flags_exit_2() {
    for arguments in [
        &["--clients", "0"][..],
        &["--pipeline", "x"],
        &["--get-ratio", "2"],
        &["--proto", "http"],
        &["--duration", "0"],
        &["--no-such-flag"],
    ] {
        let output = run_bench(arguments);
        assert_eq!(output.status.code(), Some(2), "{arguments:?}");
        assert!(!output.stderr.is_empty(), "{arguments:?}");
    }
}

#[test]
fn nothing_listening_exits_1_with_a_clear_message() {
    let address = format!("127.0.0.1:{}", free_port());
    let output = run_bench(&["--addr", &address, "--requests", "10"]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains(&format!("could not connect to {address}")),
        "{stderr}"
    );
    assert!(!text(&output.stdout).contains("RESULT"));

    // RESP skips the leader probe; the event loop's own connects fail.
    let output = run_bench(&[
        "--addr",
        &address,
        "--requests",
        "10",
        "--proto",
        "resp",
        "--clients",
        "3",
    ]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains(&format!("none of 3 connections to {address} could be made")),
        "{stderr}"
    );
}

/// A fake node: the first connection (the leader probe) gets `OK`; every
/// later connection gets `NOT_LEADER` for each line. Counts the lines of
/// the later connections.
fn serve_redirecting_fake(listener: TcpListener, lines_after_probe: Arc<AtomicU64>) {
    for (index, stream) in listener.incoming().enumerate() {
        let Ok(stream) = stream else { continue };
        let counter = Arc::clone(&lines_after_probe);
        thread::spawn(move || answer_lines(stream, index == 0, &counter));
    }
}

fn answer_lines(stream: TcpStream, is_probe: bool, counter: &AtomicU64) {
    let mut writer = stream.try_clone().unwrap();
    for line in BufReader::new(stream).split(b'\n') {
        let Ok(_) = line else { return };
        let reply: &[u8] = if is_probe {
            b"OK\n"
        } else {
            counter.fetch_add(1, Ordering::SeqCst);
            b"NOT_LEADER 9 127.0.0.1:1\n"
        };
        if writer.write_all(reply).is_err() {
            return;
        }
    }
}

#[test]
fn not_leader_during_the_run_is_an_error_and_never_resent() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let lines_after_probe = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&lines_after_probe);
    thread::spawn(move || serve_redirecting_fake(listener, counter));

    let output = run_bench(&[
        "--addr",
        &address,
        "--requests",
        "100",
        "--clients",
        "2",
        "--pipeline",
        "4",
        "--warmup",
        "0",
    ]);
    let result = result_of(&output);
    assert_eq!(number(&result, "ops"), 100);
    assert_eq!(number(&result, "errors"), 100);
    assert_eq!(lines_after_probe.load(Ordering::SeqCst), 100);
    let stdout = text(&output.stdout);
    assert!(
        stdout.contains("100 NOT_LEADER") && stdout.contains("first reply: NOT_LEADER 9"),
        "{stdout}"
    );
}

/// Reads one RESP array of bulk strings (a command); `None` at the end.
fn read_resp_command(reader: &mut impl BufRead) -> Option<Vec<Vec<u8>>> {
    let count = read_resp_header(reader, b'*')?;
    (0..count)
        .map(|_| {
            let length = read_resp_header(reader, b'$')?;
            let mut argument = vec![0; length + 2];
            reader.read_exact(&mut argument).ok()?;
            assert_eq!(argument.split_off(length), b"\r\n");
            Some(argument)
        })
        .collect()
}

/// `<kind><number>\r\n`.
fn read_resp_header(reader: &mut impl BufRead, kind: u8) -> Option<usize> {
    let mut line = Vec::new();
    reader.read_until(b'\n', &mut line).ok()?;
    let number = line.strip_prefix(&[kind])?.strip_suffix(b"\r\n")?;
    std::str::from_utf8(number).ok()?.parse().ok()
}

/// A fake Redis: SET gets `+OK`; GET alternately gets a bulk string that
/// holds `\r\n` and a nil; `AUTH secret` gets `+OK` (and is counted),
/// another password an error. Each reply is written in two pieces so the
/// client sees bulk strings split across reads.
fn serve_fake_redis(listener: TcpListener, authentications: Arc<AtomicU64>) {
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let authentications = Arc::clone(&authentications);
        thread::spawn(move || {
            let mut writer = stream.try_clone().unwrap();
            let _ = writer.set_nodelay(true);
            let mut reader = BufReader::new(stream);
            let mut gets = 0_u64;
            while let Some(command) = read_resp_command(&mut reader) {
                let reply: &[u8] = match command[0].as_slice() {
                    b"AUTH" if command[1] == b"secret" => {
                        authentications.fetch_add(1, Ordering::SeqCst);
                        b"+OK\r\n"
                    }
                    b"AUTH" => b"-ERR invalid password\r\n",
                    b"SET" => b"+OK\r\n",
                    b"GET" => {
                        gets += 1;
                        if gets.is_multiple_of(2) {
                            b"$-1\r\n"
                        } else {
                            b"$6\r\nab\r\ncd\r\n"
                        }
                    }
                    _ => b"-ERR unknown command\r\n",
                };
                let (first, second) = reply.split_at(reply.len() / 2);
                if writer.write_all(first).is_err() || writer.write_all(second).is_err() {
                    return;
                }
            }
        });
    }
}

#[test]
fn resp_drives_a_redis_like_server() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    thread::spawn(move || serve_fake_redis(listener, Arc::default()));
    let output = run_bench(&[
        "--addr",
        &address,
        "--proto",
        "resp",
        "--requests",
        "2000",
        "--clients",
        "2",
        "--pipeline",
        "4",
        "--warmup",
        "0",
    ]);
    let result = result_of(&output);
    assert_eq!(number(&result, "ops"), 2000);
    assert_eq!(number(&result, "errors"), 0, "{}", text(&output.stdout));
    assert_eq!(result["proto"], "resp");
    let stdout = text(&output.stdout);
    let misses = stdout
        .lines()
        .find_map(|line| line.trim().strip_prefix("GET misses"))
        .and_then(|count| count.trim().parse::<u64>().ok())
        .expect("a GET misses row");
    assert!((100..1000).contains(&misses), "{misses} misses: {stdout}");
}

#[test]
fn with_a_password_every_connection_authenticates_first_and_is_not_measured() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let authentications = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&authentications);
    thread::spawn(move || serve_fake_redis(listener, counter));
    let arguments = [
        "--addr",
        &address,
        "--proto",
        "resp",
        "--requests",
        "200",
        "--clients",
        "3",
        "--warmup",
        "0",
    ];

    let output = run_bench_with_password(&arguments, Some("secret"));
    let result = result_of(&output);
    assert_eq!(number(&result, "ops"), 200);
    assert_eq!(number(&result, "errors"), 0, "{}", text(&output.stdout));
    assert_eq!(authentications.load(Ordering::SeqCst), 3);

    let output = run_bench_with_password(&arguments, Some("wrong"));
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("authentication failed; the server replied: -ERR invalid password"),
        "{stderr}"
    );
}

#[test]
fn unusable_credential_flags_exit_2_naming_the_flag() {
    let directory = tempfile::tempdir().unwrap();
    let password = directory.path().join("password");
    std::fs::write(&password, "secret\n").unwrap();
    std::fs::set_permissions(&password, std::fs::Permissions::from_mode(0o644)).unwrap();
    let missing = directory.path().join("missing-ca.pem");
    for (arguments, flag) in [
        (vec!["--tls"], "--tls-ca-file"),
        (
            vec!["--tls-ca-file", missing.to_str().unwrap()],
            "--tls-ca-file",
        ),
        (
            vec!["--password-file", password.to_str().unwrap()],
            "--password-file",
        ),
    ] {
        let output = run_bench(&arguments);
        assert_eq!(output.status.code(), Some(2), "{arguments:?}");
        let stderr = text(&output.stderr);
        assert!(stderr.contains(flag), "{arguments:?}: {stderr}");
    }
}
