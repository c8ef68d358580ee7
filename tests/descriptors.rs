//! File descriptors, real processes: the server fits `--max-clients` under
//! its open-file limit at start, and when descriptors run out anyway, a
//! client that connects is told `ERR max number of clients reached` and
//! closed instead of waiting forever in the listen backlog.
//!
//! Running out for real needs a limit lower than the server's budget. The
//! budget is computed from the limit at start, so the tests lower the soft
//! limit of the running server from outside (prlimit(2), as an operator's
//! `prlimit --pid` would): accept then fails with EMFILE with fewer clients
//! than `--max-clients` connected, which is what descriptors the budget did
//! not count (inherited ones, a log grown to many segments) would cause.

mod common;

use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};

use common::{Connection, DEADLINE, ServerProcess, raise_open_file_limit, wait_until};
use rlimit::Resource;

const TOO_MANY: &str = "ERR max number of clients reached\n";

/// A client that sent PING: served, or refused as one too many.
enum Outcome {
    Admitted(TcpStream),
    Refused,
}

/// Connects and sends PING; the server must answer PONG, or refuse with
/// exactly [`TOO_MANY`] and close (a reset after that line counts as a
/// close: the PING may have arrived unread).
fn ping_new_client(address: SocketAddr) -> Outcome {
    let mut stream = TcpStream::connect(address).expect("connect");
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream.write_all(b"PING\n").expect("send PING");
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut reply = Vec::new();
    reader.read_until(b'\n', &mut reply).expect("a reply");
    match String::from_utf8_lossy(&reply).as_ref() {
        "PONG\n" => Outcome::Admitted(stream),
        TOO_MANY => {
            let mut rest = Vec::new();
            match io::Read::read_to_end(&mut reader, &mut rest) {
                Ok(_) => assert_eq!(rest, b"", "nothing after the refusal"),
                Err(error) => assert_eq!(error.kind(), io::ErrorKind::ConnectionReset),
            }
            Outcome::Refused
        }
        other => panic!("unexpected reply {other:?}"),
    }
}

/// Waits until the single node leads: it has written its promised epoch,
/// which takes descriptors of its own that must not be the ones a test
/// then takes away.
fn wait_until_leading(server: &ServerProcess) {
    assert_eq!(server.connect().request(b"PUT settled yes"), b"OK");
}

/// Sets the soft open-file limit of the running server; returns the one
/// it had.
fn set_soft_open_file_limit(server: &ServerProcess, soft: u64) -> u64 {
    let pid = server.pid() as rlimit::pid_t;
    let (mut old_soft, mut hard) = (0, 0);
    rlimit::prlimit(
        pid,
        Resource::NOFILE,
        None,
        Some((&mut old_soft, &mut hard)),
    )
    .expect("read the server's limit");
    rlimit::prlimit(pid, Resource::NOFILE, Some((soft, hard)), None)
        .expect("set the server's limit");
    old_soft
}

/// The number after `prefix` in `line`.
fn number_after(line: &str, prefix: &str) -> usize {
    let rest = line
        .split(prefix)
        .nth(1)
        .unwrap_or_else(|| panic!("{prefix:?} in {line}"));
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits
        .parse()
        .unwrap_or_else(|_| panic!("a number after {prefix:?} in {line}"))
}

/// The issue's case, scaled down: with a hard limit of 256 and the default
/// --max-clients of 10,000, the server raises its soft limit (64 here) to
/// 256, lowers max clients to what fits and says why; that many idle
/// clients are served, and the next one is told and closed, not left
/// hanging.
#[test]
fn a_low_hard_limit_lowers_max_clients_and_the_next_client_is_told() {
    // This process holds two descriptors per connection.
    raise_open_file_limit(1024);
    let dir = tempfile::tempdir().unwrap();
    let script = r#"ulimit -Sn 64; ulimit -Hn 256; exec "$0" "$@""#;
    let mut server = ServerProcess::start_in_shell(script, dir.path(), &[]);
    let warning = server.wait_for_stderr("max clients lowered to ");
    assert!(
        warning.contains("--max-clients 10000 needs")
            && warning.contains("the hard limit on open files (ulimit -Hn) is 256"),
        "{warning}"
    );
    let max_clients = number_after(&warning, "max clients lowered to ");
    assert!(
        (64..256).contains(&max_clients),
        "more than the soft limit found at start, less than the hard one: {max_clients}"
    );
    let listening = server.wait_for_stderr("listening on");
    let lowered = format!("max clients {max_clients} (lowered from 10000");
    assert!(listening.contains(&lowered), "{listening}");
    let mut clients: Vec<Connection> = (0..max_clients)
        .map(|_| {
            let mut client = server.connect();
            assert_eq!(client.request(b"PING"), b"PONG");
            client
        })
        .collect();
    let mut one_too_many = server.connect();
    assert_eq!(
        String::from_utf8_lossy(&one_too_many.read_until_closed()),
        TOO_MANY
    );
    for client in &mut clients {
        assert_eq!(client.request(b"PING"), b"PONG");
    }
    let stderr = server.stderr_so_far().join("\n");
    assert!(!stderr.contains("accept failed"), "{stderr}");
    assert!(!stderr.contains("out of file descriptors"), "{stderr}");
}

/// Out of descriptors with fewer than --max-clients connected: each new
/// client is refused with the spare descriptor, immediately, one by one,
/// and once some leave, new clients are served again.
#[test]
fn out_of_descriptors_each_new_client_is_told_and_closed_until_some_leave() {
    const MAX_CLIENTS: usize = 100;
    const SOFT_LIMIT: u64 = 40;
    let dir = tempfile::tempdir().unwrap();
    let max_clients = MAX_CLIENTS.to_string();
    let mut server = ServerProcess::start(dir.path(), &["--max-clients", &max_clients]);
    wait_until_leading(&server);
    set_soft_open_file_limit(&server, SOFT_LIMIT);
    let mut admitted = Vec::new();
    while let Outcome::Admitted(stream) = ping_new_client(server.address) {
        admitted.push(stream);
        assert!(admitted.len() < MAX_CLIENTS, "never ran out of descriptors");
    }
    assert!(
        (1..SOFT_LIMIT as usize).contains(&admitted.len()),
        "refused after {} clients, below the limit of {SOFT_LIMIT} descriptors",
        admitted.len()
    );
    server.wait_for_stderr("out of file descriptors (accept: Too many open files");
    // Each later client too is told at once: none waits in the backlog.
    for attempt in 0..20 {
        assert!(
            matches!(ping_new_client(server.address), Outcome::Refused),
            "attempt {attempt}"
        );
    }
    admitted.truncate(admitted.len() - 3);
    let mut newcomers = Vec::new();
    wait_until("a client to be served once three left", || {
        match ping_new_client(server.address) {
            Outcome::Admitted(stream) => newcomers.push(stream),
            Outcome::Refused => {}
        }
        !newcomers.is_empty()
    });
    for stream in admitted.iter().chain(&newcomers) {
        let mut writer = stream;
        writer.write_all(b"PING\n").unwrap();
        let mut reply = Vec::new();
        BufReader::new(stream)
            .read_until(b'\n', &mut reply)
            .unwrap();
        assert_eq!(reply, b"PONG\n");
    }
}

/// With no descriptor to be had at all (the soft limit below every one the
/// server holds, so freeing the spare does not help), accepting is retried
/// on a timer, a few times a second, not in a busy loop, and the failure
/// is logged at most once a second; a client that connected meanwhile is
/// served once descriptors are back, with no new connection to wake the
/// listener.
#[test]
fn with_no_descriptor_at_all_accept_is_retried_on_a_timer_until_there_is_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(dir.path(), &[]);
    wait_until_leading(&server);
    // Below stdio: every number under the limit is taken.
    let old_soft = set_soft_open_file_limit(&server, 3);
    let mut waiting = server.connect();
    waiting.send(b"PING\n");
    let first = server.wait_for_stderr("accept failed: Too many open files");
    assert!(first.contains("no spare descriptor is left"), "{first}");
    // The next line comes a second later and counts the retries between.
    let second = server.wait_for_stderr("more like it not logged");
    let retries = number_after(&second, "retrying every 100 ms (");
    assert!(
        retries < 100,
        "{retries} accept attempts in about a second: a busy loop"
    );
    set_soft_open_file_limit(&server, old_soft);
    assert_eq!(waiting.read_line(), b"PONG\n");
    assert_eq!(waiting.request(b"PING"), b"PONG");
    assert_eq!(server.connect().request(b"PING"), b"PONG");
}
