//! `kvstore-client <HOST> <PORT> [COMMAND...]`: send one command, or read
//! commands from stdin, following leader redirects; over TLS with `--tls*`,
//! and with a password from `--password-file` or `KVSTORE_AUTH` (see
//! `kvstore::client::credentials`).
//!
//! Exit status: 0 on a reply, 1 when a one-shot reply is `ERR ...`, 2 when no
//! reply could be obtained (connect failure, TLS or password refused,
//! unknown outcome, too many redirects, ...) or a flag is invalid (a file it
//! names included).

use std::ffi::OsString;
use std::io::{self, BufRead, IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use kvstore::client::credentials::CredentialArgs;
use kvstore::client::{Client, ClientError, ClientOptions};

/// Sends commands to a kvstore node, following NOT_LEADER redirects.
#[derive(Parser, Debug)]
#[command(
    name = "kvstore-client",
    version,
    after_help = "Environment:\n  KVSTORE_AUTH  the password, when --password-file is not given"
)]
struct Arguments {
    /// Host name or IP address of any node.
    host: String,
    /// Client port of that node.
    port: u16,
    /// Bound on connecting, and on waiting for each reply, in milliseconds.
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..))]
    timeout_ms: u64,
    #[command(flatten)]
    credentials: CredentialArgs,
    /// One command, e.g. `PUT key some value`; its words are joined by single
    /// spaces. Without it, commands are read from stdin, one per line.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<OsString>,
}

const EXIT_SERVER_ERROR: u8 = 1;
const EXIT_NO_REPLY: u8 = 2;
/// As clap exits on a malformed flag.
const EXIT_INVALID_FLAGS: u8 = 2;

fn main() -> ExitCode {
    let arguments = Arguments::parse();
    let address = host_and_port(&arguments.host, arguments.port);
    let credentials = match arguments.credentials.load() {
        Ok(credentials) => credentials,
        Err(error) => {
            eprintln!("kvstore-client: {error}");
            return ExitCode::from(EXIT_INVALID_FLAGS);
        }
    };
    let options = ClientOptions {
        timeout: Duration::from_millis(arguments.timeout_ms),
        tls: credentials.tls,
        password: credentials.password,
        ..ClientOptions::default()
    };
    let client = match Client::connect(&address, options) {
        Ok(client) => client,
        Err(error) => return fail(&error),
    };
    if arguments.command.is_empty() {
        interactive(client)
    } else {
        one_shot(client, &join_words(arguments.command))
    }
}

/// `host:port`, with brackets around an IPv6 literal.
fn host_and_port(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The command words as raw bytes (not necessarily UTF-8), space-separated.
fn join_words(words: Vec<OsString>) -> Vec<u8> {
    let mut line = Vec::new();
    for word in words {
        if !line.is_empty() {
            line.push(b' ');
        }
        line.extend_from_slice(&word.into_encoded_bytes());
    }
    line
}

fn is_quit(line: &[u8]) -> bool {
    line == b"QUIT"
}

fn is_server_error(reply: &[u8]) -> bool {
    reply == b"ERR" || reply.starts_with(b"ERR ")
}

fn fail(error: &ClientError) -> ExitCode {
    eprintln!("kvstore-client: {error}");
    ExitCode::from(EXIT_NO_REPLY)
}

fn one_shot(mut client: Client, line: &[u8]) -> ExitCode {
    if is_quit(line) {
        client.quit();
        return ExitCode::SUCCESS;
    }
    let reply = match client.execute(line) {
        Ok(reply) => reply,
        Err(error) => return fail(&error),
    };
    if let Err(error) = print_reply(&mut io::stdout().lock(), &reply) {
        return fail(&ClientError::Io(error));
    }
    if is_server_error(&reply) {
        ExitCode::from(EXIT_SERVER_ERROR)
    } else {
        ExitCode::SUCCESS
    }
}

fn print_reply(output: &mut impl Write, reply: &[u8]) -> io::Result<()> {
    output.write_all(reply)?;
    output.write_all(b"\n")?;
    output.flush()
}

/// Reads commands from stdin until `QUIT` or end of input. Errors about a
/// request are reported and the loop goes on; losing the server ends it.
fn interactive(mut client: Client) -> ExitCode {
    let prompt = io::stdin().is_terminal();
    let mut input = io::stdin().lock();
    let mut output = io::stdout().lock();
    let mut line = Vec::new();
    loop {
        if prompt && write_prompt(&mut output).is_err() {
            return ExitCode::from(EXIT_NO_REPLY);
        }
        line.clear();
        match input.read_until(b'\n', &mut line) {
            Ok(0) => return ExitCode::SUCCESS,
            Ok(_) => {}
            Err(error) => return fail(&ClientError::Io(error)),
        }
        let command = strip_line_ending(&line);
        if command.is_empty() {
            continue;
        }
        if is_quit(command) {
            client.quit();
            return ExitCode::SUCCESS;
        }
        match client.execute(command) {
            Ok(reply) => {
                if let Err(error) = print_reply(&mut output, &reply) {
                    return fail(&ClientError::Io(error));
                }
            }
            Err(error) if error.is_connection_failure() => return fail(&error),
            Err(error) => eprintln!("kvstore-client: {error}"),
        }
    }
}

fn write_prompt(output: &mut impl Write) -> io::Result<()> {
    output.write_all(b"> ")?;
    output.flush()
}

fn strip_line_ending(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}
