//! File descriptors, real processes: the server fits `--max-clients` under
//! its open-file limit at start, so that the one client too many is told
//! `ERR max number of clients reached` instead of waiting forever in the
//! listen backlog.

mod common;

use common::{Connection, ServerProcess, raise_open_file_limit};

const TOO_MANY: &str = "ERR max number of clients reached\n";

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
