//! `kvstore-client`'s command line against a real server: `-h`/`-p` and
//! the positional HOST PORT, commands refused before anything is sent,
//! `-r`/`-i`, local commands, `--raw`/`--no-raw`, and `--help`.

mod common;

use std::process::{Command, Output, Stdio};

use common::ServerProcess;
use common::fake_server::dead_address;

fn client(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kvstore-client"))
        .args(args)
        .env_remove("KVSTORE_AUTH")
        .stdin(Stdio::null())
        .output()
        .expect("run kvstore-client")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn server() -> (tempfile::TempDir, ServerProcess, String) {
    let data = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(data.path(), &[]);
    let port = server.address.port().to_string();
    (data, server, port)
}

#[test]
fn flags_and_the_positional_form_reach_the_same_server() {
    let (_data, _server, port) = server();

    let put = client(&["-h", "127.0.0.1", "-p", &port, "PUT", "a", "two words"]);
    let positional = client(&["127.0.0.1", &port, "GET", "a"]);
    let default_host = client(&["--port", &port, "get", "a"]);

    assert_eq!(put.stdout, b"OK\n", "{}", stderr(&put));
    assert_eq!(positional.stdout, b"two words\n", "{}", stderr(&positional));
    assert_eq!(
        default_host.stdout,
        b"two words\n",
        "{}",
        stderr(&default_host)
    );
}

#[test]
fn a_key_with_a_space_or_a_newline_is_refused_and_nothing_is_sent() {
    let (_data, server, port) = server();

    let spaced = client(&["-p", &port, "PUT", "a b", "v"]);
    let newline = client(&["-p", &port, "PUT", "a", "v\nPUT b x"]);

    assert_eq!(spaced.status.code(), Some(2));
    assert!(
        stderr(&spaced).contains("keys cannot contain spaces over the line protocol"),
        "{}",
        stderr(&spaced)
    );
    assert!(stderr(&spaced).contains("redis-cli"), "{}", stderr(&spaced));
    assert_eq!(newline.status.code(), Some(2));
    assert!(stderr(&newline).contains("a newline cannot be sent"));
    let mut connection = server.connect();
    for key in ["a", "b"] {
        assert_eq!(
            connection.request(format!("GET {key}").as_bytes()),
            b"NOT_FOUND"
        );
    }
}

#[test]
fn repeat_sends_the_command_n_times_and_an_err_makes_it_exit_one() {
    let (_data, _server, port) = server();

    let pings = client(&["-r", "3", "-i", "0.01", "-p", &port, "PING"]);
    let frobs = client(&["-p", &port, "-r", "2", "FROB"]);

    assert_eq!(pings.status.code(), Some(0), "{}", stderr(&pings));
    assert_eq!(pings.stdout, b"PONG\nPONG\nPONG\n");
    assert_eq!(frobs.status.code(), Some(1), "{}", stderr(&frobs));
    assert_eq!(
        frobs.stdout,
        b"ERR unknown command 'FROB'\nERR unknown command 'FROB'\n"
    );
}

#[test]
fn help_and_quit_are_local_and_need_no_server() {
    let dead = dead_address();
    let (_, port) = dead.rsplit_once(':').unwrap();

    let help = client(&["-p", port, "help", "put"]);
    let quit = client(&["-p", port, "QUIT"]);

    assert_eq!(help.status.code(), Some(0), "{}", stderr(&help));
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(text.contains("PUT <key> <value>"), "{text}");
    assert_eq!(quit.status.code(), Some(0), "{}", stderr(&quit));
    assert!(quit.stdout.is_empty());
}

#[test]
fn no_raw_quotes_a_binary_value_and_raw_prints_its_bytes() {
    let (_data, server, port) = server();
    assert_eq!(server.connect().request(b"PUT bin a\x00b\xff"), b"OK");

    let formatted = client(&["--no-raw", "-p", &port, "GET", "bin"]);
    let raw = client(&["--raw", "-p", &port, "GET", "bin"]);

    assert_eq!(formatted.stdout, b"\"a\\x00b\\xff\"\n");
    assert_eq!(raw.stdout, b"a\x00b\xff\n");
}

#[test]
fn an_unknown_first_word_without_a_port_is_a_usage_error() {
    let output = client(&["FROB"]);

    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("-h HOST -p PORT"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn a_flag_after_the_command_is_sent_and_said_to_be() {
    let (_data, server, port) = server();

    let output = client(&["-p", &port, "PUT", "k", "v", "--timeout-ms", "10"]);

    assert_eq!(output.stdout, b"OK\n");
    assert!(
        stderr(&output).contains("put flags before the command"),
        "{}",
        stderr(&output)
    );
    assert_eq!(server.connect().request(b"GET k"), b"v --timeout-ms 10");
}

#[test]
fn help_documents_the_exit_status_and_the_history_file() {
    let output = client(&["--help"]);

    assert_eq!(output.status.code(), Some(0));
    let text = String::from_utf8_lossy(&output.stdout);
    for needle in [
        "Exit status:",
        "  0  every reply arrived and none was ERR",
        "  1  a reply was ERR",
        "  2  no reply",
        "KVSTORE_CLIENT_HISTFILE",
        "-h, --host <HOST>",
        "-p, --port <PORT>",
        "--raw",
        "-r, --repeat <N>",
    ] {
        assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
    }
}
