//! The client's redirect and retry rules, and the `kvstore-client` binary,
//! against tiny fake servers (`common::fake_server`).

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::fake_server::{
    Answer, FakeListener, FakeServer, PATIENCE, answer_as_store, dead_address, line,
};
use kvstore::client::{Client, ClientError, ClientOptions};

fn options() -> ClientOptions {
    ClientOptions {
        timeout: PATIENCE,
        ..ClientOptions::default()
    }
}

#[test]
fn follower_redirect_is_followed_to_the_leader() {
    let leader = FakeServer::start(|_| line("OK"));
    let redirect = format!("NOT_LEADER 2 {}", leader.address);
    let follower = FakeServer::start(move |_| line(&redirect));

    let mut client = Client::connect(&follower.address, options()).expect("connect");
    let reply = client.execute(b"PUT k v").expect("execute");

    assert_eq!(reply, b"OK");
    assert_eq!(follower.received_so_far(), vec![b"PUT k v".to_vec()]);
    assert_eq!(leader.received_so_far(), vec![b"PUT k v".to_vec()]);
    assert_eq!(client.addr(), leader.address);
    assert_eq!(
        client.known_addresses(),
        [follower.address.clone(), leader.address.clone()]
    );

    // The client stays with the leader for the next request.
    assert_eq!(client.execute(b"GET k").expect("execute"), b"OK");
    assert_eq!(leader.received_so_far(), vec![b"GET k".to_vec()]);
    assert!(follower.received_so_far().is_empty());
}

#[test]
fn no_leader_is_retried_on_the_same_node_after_backing_off() {
    let mut requests_seen = 0;
    let node = FakeServer::start(move |_| {
        requests_seen += 1;
        if requests_seen <= 2 {
            line("NOT_LEADER -1")
        } else {
            line("OK")
        }
    });
    let options = options();
    let minimum_wait = options.backoff_initial + options.backoff_initial * 2;

    let mut client = Client::connect(&node.address, options).expect("connect");
    let started = Instant::now();
    let reply = client.execute(b"PUT k v").expect("execute");

    assert_eq!(reply, b"OK");
    assert!(
        started.elapsed() >= minimum_wait,
        "no backoff: {:?}",
        started.elapsed()
    );
    assert_eq!(node.received_so_far(), vec![b"PUT k v".to_vec(); 3]);
}

#[test]
fn no_reply_after_sending_is_outcome_unknown_and_never_resent() {
    let node = FakeServer::start(|_| Answer::Close);
    let mut client = Client::connect(&node.address, options()).expect("connect");

    let error = client
        .execute(b"PUT k v")
        .expect_err("no reply must be an error");

    match &error {
        ClientError::OutcomeUnknown { addr, .. } => assert_eq!(addr, &node.address),
        other => panic!("expected OutcomeUnknown, got {other:?}"),
    }
    assert!(
        error
            .to_string()
            .contains("may or may not have been applied")
    );
    assert_eq!(node.next_request(), b"PUT k v");
    node.assert_no_more_requests();
}

#[test]
fn reply_timeout_is_outcome_unknown_and_never_resent() {
    let node = FakeServer::start(|_| Answer::Silence);
    let options = ClientOptions {
        timeout: Duration::from_millis(200),
        ..ClientOptions::default()
    };
    let mut client = Client::connect(&node.address, options).expect("connect");

    let error = client
        .execute(b"DEL k")
        .expect_err("no reply must be an error");

    assert!(
        matches!(error, ClientError::OutcomeUnknown { .. }),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        format!(
            "no reply from {} after the request was sent (timed out): \
             the write may or may not have been applied",
            node.address
        )
    );
    assert_eq!(node.next_request(), b"DEL k");
    node.assert_no_more_requests();
}

#[test]
fn redirect_loop_gives_up_within_the_bound() {
    let first = FakeListener::bind();
    let second = FakeListener::bind();
    let to_second = format!("NOT_LEADER 2 {}", second.address);
    let to_first = format!("NOT_LEADER 1 {}", first.address);
    let first = first.serve(move |_| line(&to_second));
    let second = second.serve(move |_| line(&to_first));
    let max_redirects = 5;
    let options = ClientOptions {
        max_redirects,
        ..options()
    };

    let mut client = Client::connect(&first.address, options).expect("connect");
    let error = client.execute(b"PUT k v").expect_err("a loop must end");

    match &error {
        ClientError::TooManyRedirects { last_reply } => {
            assert!(last_reply.starts_with(b"NOT_LEADER "), "{error}");
        }
        other => panic!("expected TooManyRedirects, got {other:?}"),
    }
    let requests = first.received_so_far().len() + second.received_so_far().len();
    assert!(requests >= 2, "the redirect was not followed");
    assert!(
        requests <= max_redirects as usize + 1,
        "{requests} requests"
    );
}

#[test]
fn leaderless_for_too_long_gives_up_within_the_bound() {
    let node = FakeServer::start(|_| line("NOT_LEADER -1"));
    let options = ClientOptions {
        max_redirects: 3,
        backoff_initial: Duration::from_millis(1),
        ..options()
    };

    let mut client = Client::connect(&node.address, options).expect("connect");
    let error = client.execute(b"PUT k v").expect_err("must give up");

    assert!(
        matches!(&error, ClientError::TooManyRedirects { last_reply } if last_reply == b"NOT_LEADER -1"),
        "{error:?}"
    );
    assert_eq!(node.received_so_far().len(), 4);
}

#[test]
fn refused_redirect_target_falls_back_to_the_original_address() {
    let dead = dead_address();
    let mut requests_seen = 0;
    let redirect = format!("NOT_LEADER 3 {dead}");
    let node = FakeServer::start(move |_| {
        requests_seen += 1;
        if requests_seen == 1 {
            line(&redirect)
        } else {
            line("OK")
        }
    });

    let mut client = Client::connect(&node.address, options()).expect("connect");
    let reply = client.execute(b"PUT k v").expect("execute");

    assert_eq!(reply, b"OK");
    assert_eq!(node.received_so_far(), vec![b"PUT k v".to_vec(); 2]);
    assert_eq!(client.addr(), node.address);
}

#[test]
fn unparsable_redirect_is_bad_redirect() {
    let node = FakeServer::start(|_| line("NOT_LEADER two nowhere"));
    let mut client = Client::connect(&node.address, options()).expect("connect");

    let error = client.execute(b"GET k").expect_err("must fail");

    assert!(
        matches!(&error, ClientError::BadRedirect { reply } if reply == b"NOT_LEADER two nowhere"),
        "{error:?}"
    );
}

#[test]
fn nothing_listening_is_a_connect_error_naming_the_address() {
    let address = dead_address();

    let error = Client::connect(&address, options()).expect_err("nothing listens");

    match &error {
        ClientError::Connect { addr, .. } => assert_eq!(addr, &address),
        other => panic!("expected Connect, got {other:?}"),
    }
    assert!(error.to_string().contains(&address), "{error}");
}

#[test]
fn invalid_request_is_rejected_before_sending() {
    let node = FakeServer::store();
    let mut client = Client::connect(&node.address, options()).expect("connect");

    let error = client.execute(b"PUT k a\nDEL k").expect_err("two lines");
    assert!(
        matches!(error, ClientError::InvalidRequest { .. }),
        "{error:?}"
    );
    let error = client.put(b"a key", b"v").expect_err("space in key");
    assert!(
        matches!(error, ClientError::InvalidRequest { .. }),
        "{error:?}"
    );

    assert_eq!(client.request_raw(b"PING").expect("ping"), b"PONG");
    assert_eq!(node.received_so_far(), vec![b"PING".to_vec()]);
}

#[test]
fn typed_helpers_map_replies() {
    let node = FakeServer::store();
    let mut client = Client::connect(&node.address, options()).expect("connect");

    assert_eq!(client.put(b"k", b"a value").expect("put"), b"OK");
    assert_eq!(client.get(b"k").expect("get"), Some(b"a value".to_vec()));
    assert!(client.del(b"k").expect("del"));
    assert!(!client.del(b"k").expect("del"));
    assert_eq!(client.get(b"k").expect("get"), None);
    client.ping().expect("ping");
    let error = client.execute(b"FROB").map(|_| ());
    assert!(error.is_ok(), "execute returns ERR as a reply: {error:?}");
}

#[test]
fn server_error_is_an_error_in_typed_helpers() {
    let node = FakeServer::start(|_| line("ERR disk full"));
    let mut client = Client::connect(&node.address, options()).expect("connect");

    let error = client.get(b"k").expect_err("ERR must be an error");

    assert!(
        matches!(&error, ClientError::Server { reply } if reply == b"ERR disk full"),
        "{error:?}"
    );
}

#[test]
fn binary_value_round_trips_exactly() {
    let node = FakeServer::store();
    let mut client = Client::connect(&node.address, options()).expect("connect");
    let value: &[u8] = b"\x00\xff\xfe \r\x80 spaced\x00";
    let mut put = b"PUT bin\xc3\x28 ".to_vec();
    put.extend_from_slice(value);

    assert_eq!(client.request_raw(&put).expect("put"), b"OK");
    let reply = client.request_raw(b"GET bin\xc3\x28").expect("get");

    assert_eq!(reply, value);
    assert_eq!(
        node.received_so_far(),
        vec![put, b"GET bin\xc3\x28".to_vec()]
    );
}

#[test]
fn reconnects_after_an_unknown_outcome_without_resending() {
    let mut requests_seen = 0;
    let node = FakeServer::start(move |_| {
        requests_seen += 1;
        if requests_seen == 1 {
            Answer::Close
        } else {
            line("PONG")
        }
    });
    let mut client = Client::connect(&node.address, options()).expect("connect");

    let error = client.request_raw(b"PUT k v").expect_err("closed");
    assert!(
        matches!(error, ClientError::OutcomeUnknown { .. }),
        "{error:?}"
    );
    assert_eq!(client.request_raw(b"PING").expect("ping"), b"PONG");

    assert_eq!(
        node.received_so_far(),
        vec![b"PUT k v".to_vec(), b"PING".to_vec()]
    );
}

fn run_cli(address: &str, command: &[&str], stdin: &[u8]) -> Output {
    run_cli_with(address, &[], None, command, stdin)
}

/// `kvstore-client` with extra `flags` and `KVSTORE_AUTH` set to
/// `password_variable` (or unset).
fn run_cli_with(
    address: &str,
    flags: &[&str],
    password_variable: Option<&str>,
    command: &[&str],
    stdin: &[u8],
) -> Output {
    let (host, port) = address.rsplit_once(':').expect("host:port");
    let mut cli = Command::new(env!("CARGO_BIN_EXE_kvstore-client"));
    match password_variable {
        Some(password) => cli.env("KVSTORE_AUTH", password),
        None => cli.env_remove("KVSTORE_AUTH"),
    };
    let mut child = cli
        .args(["--timeout-ms", "10000"])
        .args(flags)
        .args([host, port])
        .args(command)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start kvstore-client");
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(stdin).expect("write stdin");
    drop(input);
    child.wait_with_output().expect("wait for kvstore-client")
}

#[test]
fn cli_one_shot_prints_the_reply_and_exits_zero() {
    let node = FakeServer::store();

    let output = run_cli(&node.address, &["PUT", "k", "two", "words"], b"");

    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert_eq!(output.stdout, b"OK\n");
    assert_eq!(node.received_so_far(), vec![b"PUT k two words".to_vec()]);
}

#[test]
fn cli_one_shot_follows_redirects() {
    let leader = FakeServer::start(|_| line("PONG"));
    let redirect = format!("NOT_LEADER 1 {}", leader.address);
    let follower = FakeServer::start(move |_| line(&redirect));

    let output = run_cli(&follower.address, &["PING"], b"");

    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert_eq!(output.stdout, b"PONG\n");
}

#[test]
fn cli_one_shot_server_error_exits_one() {
    let node = FakeServer::start(|_| line("ERR unknown command"));

    let output = run_cli(&node.address, &["FROB"], b"");

    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert_eq!(output.stdout, b"ERR unknown command\n");
}

#[test]
fn cli_nothing_listening_exits_two() {
    let address = dead_address();

    let output = run_cli(&address, &["PING"], b"");

    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(output.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&address), "{stderr}");
}

#[test]
fn cli_unknown_outcome_exits_two() {
    let node = FakeServer::start(|_| Answer::Close);

    let output = run_cli(&node.address, &["PUT", "k", "v"], b"");

    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("may or may not have been applied"),
        "{stderr}"
    );
    assert_eq!(node.next_request(), b"PUT k v");
    node.assert_no_more_requests();
}

#[test]
fn cli_piped_stdin_prints_one_reply_per_line_without_prompt() {
    let node = FakeServer::store();

    let output = run_cli(&node.address, &[], b"PUT a 1\nGET a\n");

    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert_eq!(output.stdout, b"OK\n1\n");
}

/// `quit` ends the input locally: it is not sent, nor anything after it.
#[test]
fn cli_piped_stdin_skips_empty_lines_and_stops_at_quit() {
    let node = FakeServer::store();

    let output = run_cli(&node.address, &[], b"PUT a 1\r\n\nquit\nGET a\n");

    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert_eq!(output.stdout, b"OK\n");
    assert_eq!(node.next_request(), b"PUT a 1");
    node.assert_no_more_requests();
}

/// A store that wants `AUTH secret` first on every connection.
fn store_with_password() -> FakeServer {
    let mut map: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
    FakeServer::start(move |request| match request.strip_prefix(b"AUTH ") {
        Some(b"secret") => line("OK"),
        Some(_) => line("ERR invalid password"),
        None => answer_as_store(&mut map, request),
    })
}

fn password_file(directory: &std::path::Path, contents: &str, mode: u32) -> String {
    use std::os::unix::fs::PermissionsExt;
    let path = directory.join("password");
    std::fs::write(&path, contents).expect("write the password file");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    path.to_str().expect("a UTF-8 path").to_owned()
}

#[test]
fn cli_sends_the_password_file_first_and_it_wins_over_the_environment() {
    let node = store_with_password();
    let directory = tempfile::tempdir().expect("temporary directory");
    let path = password_file(directory.path(), "secret\n", 0o600);

    let flags = ["--password-file", path.as_str()];
    let output = run_cli_with(&node.address, &flags, Some("wrong"), &["PING"], b"");

    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert_eq!(output.stdout, b"PONG\n");
    assert_eq!(
        node.received_so_far(),
        vec![b"AUTH secret".to_vec(), b"PING".to_vec()]
    );
}

#[test]
fn cli_takes_the_password_from_kvstore_auth() {
    let node = store_with_password();

    let output = run_cli_with(&node.address, &[], Some("secret"), &["PING"], b"");

    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert_eq!(node.next_request(), b"AUTH secret");
}

#[test]
fn cli_refused_password_exits_two_with_the_reply() {
    let node = store_with_password();

    let output = run_cli_with(&node.address, &[], Some("wrong"), &["PUT", "k", "v"], b"");

    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("authentication"), "{stderr}");
    assert!(stderr.contains("ERR invalid password"), "{stderr}");
    assert_eq!(node.next_request(), b"AUTH wrong");
    node.assert_no_more_requests();
}

#[test]
fn cli_refuses_a_password_file_every_user_may_read() {
    let node = store_with_password();
    let directory = tempfile::tempdir().expect("temporary directory");
    let path = password_file(directory.path(), "secret\n", 0o644);

    let flags = ["--password-file", path.as_str()];
    let output = run_cli_with(&node.address, &flags, None, &["PING"], b"");

    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--password-file"), "{stderr}");
    assert!(stderr.contains(&path), "{stderr}");
    node.assert_no_more_requests();
}

#[test]
fn cli_tls_without_a_ca_file_exits_two() {
    let node = FakeServer::store();

    let output = run_cli_with(&node.address, &["--tls"], None, &["PING"], b"");

    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--tls-ca-file"), "{stderr}");
    node.assert_no_more_requests();
}
