//! The interactive `kvstore-client` in a real (pseudo-)terminal, against a
//! real server, typed at as a person would: arrow keys, history across
//! restarts, Tab, quoted values, a server that dies and comes back. What
//! reached the server is checked over a separate raw TCP connection.

mod common;

use std::path::Path;

use common::terminal::{CTRL_D, ENTER, LEFT, RIGHT, TAB, Terminal, UP};
use common::{ServerProcess, free_port};

/// The client in a terminal, connected to `port`, keeping its history in
/// `home` (also its HOME, so nothing touches the real one).
fn client(port: u16, home: &Path) -> Terminal {
    let history = home.join("history");
    Terminal::spawn(
        env!("CARGO_BIN_EXE_kvstore-client"),
        &["-p", &port.to_string()],
        &[
            ("HOME", home.as_os_str()),
            ("KVSTORE_CLIENT_HISTFILE", history.as_os_str()),
        ],
    )
}

/// Types `line`, presses Enter, and waits for `reply` on a line of its own
/// and the next prompt.
fn run(terminal: &mut Terminal, line: &str, reply: &str, prompt: &str) {
    terminal.type_keys(line);
    terminal.type_keys(ENTER);
    terminal.expect(&format!("\n{reply}\n"));
    terminal.expect(prompt);
}

fn get(server: &ServerProcess, key: &str) -> Vec<u8> {
    server.connect().request(format!("GET {key}").as_bytes())
}

#[test]
fn arrow_keys_edit_and_recall_and_history_survives_a_restart() {
    let data = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(data.path(), &[]);
    let port = server.address.port();
    let prompt = format!("127.0.0.1:{port}> ");
    let mut terminal = client(port, home.path());
    terminal.expect(&prompt);

    run(&mut terminal, "PUT k1 hello", "OK", &prompt);
    // Left moves into the middle of the line, typing inserts there, Right
    // moves back to the end.
    let edited = format!("PUT k2 wrld{LEFT}{LEFT}{LEFT}o{RIGHT}{RIGHT}{RIGHT}!");
    run(&mut terminal, &edited, "OK", &prompt);
    // Up twice recalls the first line; it is edited at its end.
    run(&mut terminal, &format!("{UP}{UP} again"), "OK", &prompt);
    run(&mut terminal, "PUT k3 \"v  w\"", "OK", &prompt);
    run(
        &mut terminal,
        "PUT k4 'it''s'",
        "Invalid argument(s): a closing quote must be followed by a space or the end of the line",
        &prompt,
    );
    run(&mut terminal, "PUT k4 \"a\\x00b\\\"\"", "OK", &prompt);
    run(&mut terminal, "GET k4", "\"a\\x00b\\\"\"", &prompt);
    run(
        &mut terminal,
        "AUTH secret",
        "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?",
        &prompt,
    );
    terminal.type_keys(&format!("quit{ENTER}"));
    assert_eq!(terminal.wait_exit(), 0);

    assert_eq!(get(&server, "k1"), b"hello again");
    assert_eq!(get(&server, "k2"), b"world!");
    assert_eq!(get(&server, "k3"), b"v  w");
    assert_eq!(get(&server, "k4"), b"a\x00b\"");
    let history = std::fs::read_to_string(home.path().join("history")).unwrap();
    assert!(history.contains("PUT k1 hello again"), "{history}");
    assert!(
        !history.contains("AUTH"),
        "a password reached the history: {history}"
    );

    // A new session recalls the last session's lines: Up goes back past
    // `quit` to `GET k4`, then to the PUT that set k4, which runs again.
    assert_eq!(
        server.connect().request(b"DEL k4"),
        b"OK",
        "deleted so that the recalled PUT must set it again"
    );
    let mut terminal = client(port, home.path());
    terminal.expect(&prompt);
    run(&mut terminal, &format!("{UP}{UP}{UP}"), "OK", &prompt);
    terminal.type_keys(CTRL_D);
    assert_eq!(terminal.wait_exit(), 0);
    assert_eq!(get(&server, "k4"), b"a\x00b\"");
}

#[test]
fn tab_completes_commands_and_errors_keep_the_session() {
    let data = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(data.path(), &[]);
    let port = server.address.port();
    let prompt = format!("127.0.0.1:{port}> ");
    let mut terminal = client(port, home.path());
    terminal.expect(&prompt);

    run(&mut terminal, &format!("pi{TAB}"), "PONG", &prompt);
    run(&mut terminal, "frob", "ERR unknown command 'frob'", &prompt);
    run(
        &mut terminal,
        "PUT \"a key\" v",
        "keys cannot contain spaces over the line protocol (key \"a key\"); nothing was sent. redis-cli speaks RESP, binary-safe, to the same port and takes any key, e.g. redis-cli -p <port> SET \"a key\" value",
        &prompt,
    );
    run(
        &mut terminal,
        "PUT k \"a\\nb\"",
        "a newline cannot be sent over the line protocol (it ends the request); nothing was sent. redis-cli speaks RESP, binary-safe, to the same port and takes any value",
        &prompt,
    );
    terminal.type_keys(&format!("help put{ENTER}"));
    terminal.expect("PUT <key> <value>");
    terminal.expect(&prompt);
    run(&mut terminal, "GET k", "NOT_FOUND", &prompt);
    terminal.type_keys(&format!("EXIT{ENTER}"));
    assert_eq!(terminal.wait_exit(), 0);
    assert_eq!(get(&server, "a"), b"NOT_FOUND");
}

#[test]
fn a_lost_server_shows_not_connected_and_the_next_command_reconnects() {
    let data = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut server = ServerProcess::start_on_port(port, data.path(), &[]);
    let prompt = format!("127.0.0.1:{port}> ");
    let mut terminal = client(port, home.path());
    terminal.expect(&prompt);
    run(&mut terminal, "PUT k 1", "OK", &prompt);

    server.kill9();
    terminal.type_keys(&format!("PUT k 2{ENTER}"));
    terminal.expect(&format!("could not connect to 127.0.0.1:{port}"));
    terminal.expect("not connected> ");

    let server = ServerProcess::start_on_port(port, data.path(), &[]);
    run(&mut terminal, "PUT k 3", "OK", &prompt);
    run(&mut terminal, "GET k", "3", &prompt);
    terminal.type_keys(&format!("quit{ENTER}"));
    assert_eq!(terminal.wait_exit(), 0);
    assert_eq!(get(&server, "k"), b"3");
}
