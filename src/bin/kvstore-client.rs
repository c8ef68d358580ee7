//! `kvstore-client [OPTIONS] [HOST PORT] [COMMAND...]`: one command
//! (`-r`/`-i` to repeat it), an interactive session when stdin is a
//! terminal (`kvstore::client::repl`), or pipe mode when it is not
//! (`kvstore::client::pipe`); following leader redirects, over TLS with
//! `--tls*`, with a password from `--password-file` or `KVSTORE_AUTH`.
//!
//! Exit status: see [`AFTER_HELP`].

use std::env;
use std::ffi::OsString;
use std::io::{self, IsTerminal, Write};
use std::process::ExitCode;
use std::thread;
use std::time::Duration;

use clap::{ArgAction, Parser};
use kvstore::client::commands::{find, help_text};
use kvstore::client::credentials::CredentialArgs;
use kvstore::client::output::{OutputMode, write_reply};
use kvstore::client::request::{Input, interpret};
use kvstore::client::{Client, ClientError, ClientOptions, is_server_error, pipe, repl};

const DEFAULT_HOST: &str = "127.0.0.1";
const DEFAULT_PORT: u16 = 7001;
/// The longest pause `-i` takes, in seconds (a day).
const MAX_INTERVAL_SECONDS: f64 = 86_400.0;

const AFTER_HELP: &str = "\
Modes:
  with a COMMAND      send it (-r N times), print the reply
  stdin a terminal    interactive: line editing, history, Tab completion, `help`
  stdin not one       pipe mode: each line is sent as is, pipelined; one reply per line

Flags go before the command: words after it are part of it.

Exit status:
  0  every reply arrived and none was ERR (interactive: after quit, exit or Ctrl-D)
  1  a reply was ERR (one-shot, -r, pipe mode)
  2  no reply: could not connect, TLS or the password was refused, a request's outcome
     is unknown (pipe mode says how many), pipe mode stopped at a NOT_LEADER; or an
     invalid flag, file or command (a key with a space, a newline)

Environment:
  KVSTORE_AUTH             the password, when --password-file is not given
  KVSTORE_CLIENT_HISTFILE  the history file [default: ~/.kvstore_client_history];
                           empty or /dev/null: none";

/// Sends commands to a kvstore node, following NOT_LEADER redirects.
#[derive(Parser, Debug)]
#[command(
    name = "kvstore-client",
    version,
    disable_help_flag = true,
    override_usage = "kvstore-client [OPTIONS] [HOST PORT] [COMMAND...]\n       \
                      kvstore-client [OPTIONS] -h HOST -p PORT [COMMAND...]",
    after_help = AFTER_HELP
)]
struct Arguments {
    /// Host name or IP address of any node [default: 127.0.0.1].
    #[arg(short = 'h', long, value_name = "HOST")]
    host: Option<String>,
    /// Client port of that node [default: 7001].
    #[arg(short = 'p', long, value_name = "PORT")]
    port: Option<u16>,
    /// Bound on connecting, and on waiting for each reply, in milliseconds.
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..))]
    timeout_ms: u64,
    /// Print replies byte for byte (the default when stdout is not a terminal).
    #[arg(long, conflicts_with = "no_raw")]
    raw: bool,
    /// Print a reply that is not plain text quoted and escaped, as redis-cli
    /// does (the default on a terminal): "a\x00b", "" for an empty value.
    #[arg(long)]
    no_raw: bool,
    /// Send the command N times.
    #[arg(short = 'r', long = "repeat", value_name = "N", requires = "words",
          value_parser = clap::value_parser!(u64).range(1..))]
    repeat: Option<u64>,
    /// Pause between repetitions, in seconds (0.1 allowed).
    #[arg(short = 'i', long = "interval", value_name = "SECS", value_parser = parse_interval)]
    interval: Option<Duration>,
    #[command(flatten)]
    credentials: CredentialArgs,
    /// Print help.
    #[arg(long, action = ArgAction::Help)]
    help: Option<bool>,
    /// HOST PORT (unless -h or -p is given, or the first word is a command),
    /// then one command, e.g. `PUT key some value`. Without a command,
    /// commands are read from stdin.
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "[HOST PORT] COMMAND"
    )]
    words: Vec<OsString>,
}

const EXIT_SERVER_ERROR: u8 = 1;
const EXIT_NO_REPLY: u8 = 2;
/// As clap exits on a malformed flag.
const EXIT_INVALID_FLAGS: u8 = 2;

fn parse_interval(text: &str) -> Result<Duration, String> {
    let seconds: f64 = text
        .parse()
        .map_err(|_| format!("not a number of seconds: {text}"))?;
    if !(0.0..=MAX_INTERVAL_SECONDS).contains(&seconds) {
        return Err(format!(
            "must be between 0 and {MAX_INTERVAL_SECONDS} seconds"
        ));
    }
    Ok(Duration::from_secs_f64(seconds))
}

fn main() -> ExitCode {
    let arguments = Arguments::parse();
    let (address, command) = match target(&arguments) {
        Ok(target) => target,
        Err(message) => return invalid(&message),
    };
    let mode = output_mode(&arguments);
    let credentials = match arguments.credentials.load() {
        Ok(credentials) => credentials,
        Err(error) => return invalid(&error.to_string()),
    };
    let options = ClientOptions {
        timeout: Duration::from_millis(arguments.timeout_ms),
        tls: credentials.tls,
        password: credentials.password,
        ..ClientOptions::default()
    };
    if !command.is_empty() {
        let repetition = Repetition {
            times: arguments.repeat.unwrap_or(1),
            interval: arguments.interval.unwrap_or_default(),
        };
        return one_shot(&address, options, command, repetition, mode);
    }
    if io::stdin().is_terminal() {
        interactive(&address, options, mode)
    } else {
        piped(&address, options, mode)
    }
}

fn invalid(message: &str) -> ExitCode {
    eprintln!("kvstore-client: {message}");
    ExitCode::from(EXIT_INVALID_FLAGS)
}

/// The address to connect to and the command words: `-h`/`-p` (or their
/// defaults) when either is given or the first word is a command name,
/// else the first two words are HOST PORT.
fn target(arguments: &Arguments) -> Result<(String, Vec<OsString>), String> {
    let words = &arguments.words;
    let first_is_command = words
        .first()
        .is_some_and(|word| find(word.as_encoded_bytes()).is_some());
    if arguments.host.is_some() || arguments.port.is_some() || words.is_empty() || first_is_command
    {
        let host = arguments.host.as_deref().unwrap_or(DEFAULT_HOST);
        let port = arguments.port.unwrap_or(DEFAULT_PORT);
        return Ok((host_and_port(host, port), words.clone()));
    }
    let port = words
        .get(1)
        .and_then(|port| port.to_str()?.parse::<u16>().ok());
    match (words[0].to_str(), port) {
        (Some(host), Some(port)) => Ok((host_and_port(host, port), words[2..].to_vec())),
        _ => Err(format!(
            "expected HOST PORT or a command, got {:?}: give -h HOST -p PORT before \
             a command kvstore-client does not know (`help` lists those it knows)",
            words[0]
        )),
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

fn output_mode(arguments: &Arguments) -> OutputMode {
    if arguments.raw {
        OutputMode::Raw
    } else if arguments.no_raw || io::stdout().is_terminal() {
        OutputMode::Formatted
    } else {
        OutputMode::Raw
    }
}

fn fail(error: &ClientError) -> ExitCode {
    eprintln!("kvstore-client: {error}");
    ExitCode::from(EXIT_NO_REPLY)
}

/// How often, and how far apart, a one-shot command is sent.
struct Repetition {
    times: u64,
    interval: Duration,
}

fn one_shot(
    address: &str,
    options: ClientOptions,
    words: Vec<OsString>,
    repetition: Repetition,
    mode: OutputMode,
) -> ExitCode {
    warn_of_flags_in(&words);
    let arguments: Vec<Vec<u8>> = words
        .into_iter()
        .map(OsString::into_encoded_bytes)
        .collect();
    let line = match interpret(&arguments) {
        Ok(Input::Send(line)) => line,
        Ok(Input::Help(topic)) => {
            print!("{}", help_text(topic.as_deref()));
            return ExitCode::SUCCESS;
        }
        Ok(Input::Quit | Input::Nothing) => return ExitCode::SUCCESS,
        Err(error) => return invalid(&error.to_string()),
    };
    let mut client = match Client::connect(address, options) {
        Ok(client) => client,
        Err(error) => return fail(&error),
    };
    let mut status = ExitCode::SUCCESS;
    for repetition_index in 0..repetition.times {
        if repetition_index > 0 {
            thread::sleep(repetition.interval);
        }
        let reply = match client.execute(&line) {
            Ok(reply) => reply,
            Err(error) => return fail(&error),
        };
        let mut output = io::stdout().lock();
        if let Err(error) = write_reply(&mut output, &reply, mode).and_then(|()| output.flush()) {
            return fail(&ClientError::Io(error));
        }
        if is_server_error(&reply) {
            status = ExitCode::from(EXIT_SERVER_ERROR);
        }
    }
    status
}

/// Flags of this tool after the command are sent as words of it (a PUT
/// stores them in its value); say so, since that is rarely meant.
fn warn_of_flags_in(words: &[OsString]) {
    const FLAGS: [&str; 6] = ["--timeout-ms", "--raw", "--no-raw", "--tls", "-r", "-i"];
    let flag = words
        .iter()
        .skip(1)
        .filter_map(|word| word.to_str())
        .find(|word| {
            FLAGS
                .iter()
                .any(|flag| word == flag || word.starts_with(&format!("{flag}=")))
        });
    if let Some(flag) = flag {
        eprintln!(
            "kvstore-client: note: {flag} comes after the command, so it is sent as part of \
             it; put flags before the command"
        );
    }
}

fn interactive(address: &str, options: ClientOptions, mode: OutputMode) -> ExitCode {
    let mut client = match Client::new(address, options) {
        Ok(client) => client,
        Err(error) => return fail(&error),
    };
    let history = repl::history_path(
        env::var_os(repl::HISTORY_FILE_VARIABLE),
        env::var_os("HOME"),
    );
    match repl::run(&mut client, mode, history) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => fail(&ClientError::Io(error)),
    }
}

fn piped(address: &str, options: ClientOptions, mode: OutputMode) -> ExitCode {
    let timeout = options.timeout;
    let mut client = match Client::connect(address, options) {
        Ok(client) => client,
        Err(error) => return fail(&error),
    };
    let mut output = io::BufWriter::with_capacity(64 * 1024, io::stdout());
    let report = pipe::run(&mut client, io::stdin(), &mut output, mode, timeout);
    if let Some(stop) = &report.stop {
        eprintln!("kvstore-client: {stop}");
        return ExitCode::from(EXIT_NO_REPLY);
    }
    if report.errors > 0 {
        eprintln!(
            "kvstore-client: {} of {} replies were ERR",
            report.errors, report.replies
        );
        return ExitCode::from(EXIT_SERVER_ERROR);
    }
    ExitCode::SUCCESS
}
