//! The interactive client: a prompt that says where it is connected, line
//! editing, history and completion (rustyline), arguments quoted as in
//! `redis-cli`, and a session that outlives errors and lost connections.
//!
//! - The prompt is `host:port> ` for the node requests go to (the leader,
//!   once a redirect named it), or `not connected> ` after a connection
//!   failed. Each request first makes sure of a connection
//!   ([`Client::reconnect`]), so a server that comes back is used again on
//!   the next command, as `redis-cli` does.
//! - `quit`, `exit` (any case), Ctrl-D: leave; nothing is sent. Ctrl-C
//!   abandons the line being typed.
//! - History is kept in [`history_path`], appended after every line, except
//!   lines that start with `AUTH` or a space.
//!
//! Nothing here decides what may be sent ([`super::request`] does) or how a
//! reply looks ([`super::output`]).

use std::ffi::OsString;
use std::io::{self, Write};
use std::path::PathBuf;

use rustyline::Editor;
use rustyline::config::Config;
use rustyline::error::ReadlineError;
use rustyline::history::FileHistory;

use super::Client;
use super::commands::help_text;
use super::completion::CommandHelper;
use super::output::{OutputMode, write_reply};
use super::quoting::split_arguments;
use super::request::{Input, interpret};

/// The environment variable naming the history file; empty or `/dev/null`
/// keeps no history file (as `REDISCLI_HISTFILE`).
pub const HISTORY_FILE_VARIABLE: &str = "KVSTORE_CLIENT_HISTFILE";
/// The history file in the home directory, without the variable.
pub const HISTORY_FILE_NAME: &str = ".kvstore_client_history";
/// Lines kept in the history, and in its file.
pub const MAX_HISTORY_LINES: usize = 1000;

/// Where history is kept: `$KVSTORE_CLIENT_HISTFILE`, else
/// `~/.kvstore_client_history`; `None` for no file.
pub fn history_path(variable: Option<OsString>, home: Option<OsString>) -> Option<PathBuf> {
    match variable {
        Some(path) if path.is_empty() || path == "/dev/null" => None,
        Some(path) => Some(PathBuf::from(path)),
        None => home
            .filter(|home| !home.is_empty())
            .map(|home| PathBuf::from(home).join(HISTORY_FILE_NAME)),
    }
}

type LineEditor = Editor<CommandHelper, FileHistory>;

/// Runs the session until `quit`, `exit` or the end of input.
pub fn run(client: &mut Client, mode: OutputMode, history: Option<PathBuf>) -> io::Result<()> {
    let mut session = Session {
        editor: new_editor().map_err(io::Error::other)?,
        history,
        history_failed: false,
        mode,
    };
    session.load_history();
    if let Err(error) = client.reconnect() {
        eprintln!("{error}");
    }
    loop {
        let line = match session.editor.readline(&prompt(client)) {
            Ok(line) => line,
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => return Ok(()),
            Err(error) => return Err(io::Error::other(error)),
        };
        session.remember(&line);
        if session.execute(client, &line)? == Continue::Quit {
            return Ok(());
        }
    }
}

fn new_editor() -> rustyline::Result<LineEditor> {
    let config = Config::builder()
        .max_history_size(MAX_HISTORY_LINES)?
        .history_ignore_dups(true)?
        .history_ignore_space(true)
        .auto_add_history(false)
        .build();
    let mut editor = LineEditor::with_config(config)?;
    editor.set_helper(Some(CommandHelper));
    Ok(editor)
}

/// `127.0.0.1:7001> `, or `not connected> `.
fn prompt(client: &Client) -> String {
    if client.is_connected() {
        format!("{}> ", client.addr())
    } else {
        "not connected> ".to_owned()
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Continue {
    Yes,
    Quit,
}

struct Session {
    editor: LineEditor,
    history: Option<PathBuf>,
    /// A history file error was reported; the next ones are not.
    history_failed: bool,
    mode: OutputMode,
}

impl Session {
    fn load_history(&mut self) {
        let Some(path) = &self.history else { return };
        match self.editor.load_history(path) {
            Ok(()) => {}
            Err(ReadlineError::Io(error)) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => self.history_failed(&error),
        }
    }

    /// Adds `line` to the history and its file, unless it is blank, starts
    /// with a space, or sends a password.
    fn remember(&mut self, line: &str) {
        let first_word = line.split_whitespace().next().unwrap_or("");
        if line.trim().is_empty() || first_word.eq_ignore_ascii_case("AUTH") {
            return;
        }
        if let Err(error) = self.editor.add_history_entry(line) {
            return self.history_failed(&error);
        }
        let Some(path) = &self.history else { return };
        if let Err(error) = self.editor.append_history(path) {
            self.history_failed(&error);
        }
    }

    fn history_failed(&mut self, error: &ReadlineError) {
        if !self.history_failed {
            let path = self.history.as_ref().map(|path| path.display().to_string());
            let path = path.unwrap_or_default();
            eprintln!("history file {path}: {error} (set {HISTORY_FILE_VARIABLE} to change it)");
            self.history_failed = true;
        }
    }

    /// Does what `line` asks: a request, help, or leaving.
    fn execute(&mut self, client: &mut Client, line: &str) -> io::Result<Continue> {
        let input = split_arguments(line.as_bytes())
            .map_err(|error| error.to_string())
            .and_then(|arguments| interpret(&arguments).map_err(|error| error.to_string()));
        match input {
            Err(message) => eprintln!("{message}"),
            Ok(Input::Nothing) => {}
            Ok(Input::Quit) => return Ok(Continue::Quit),
            Ok(Input::Help(topic)) => print!("{}", help_text(topic.as_deref())),
            Ok(Input::Send(request)) => self.send(client, &request)?,
        }
        io::stdout().flush()?;
        Ok(Continue::Yes)
    }

    fn send(&mut self, client: &mut Client, request: &[u8]) -> io::Result<()> {
        if let Err(error) = client.reconnect() {
            eprintln!("{error}");
            return Ok(());
        }
        match client.execute(request) {
            Ok(reply) => write_reply(&mut io::stdout().lock(), &reply, self.mode),
            Err(error) => {
                eprintln!("{error}");
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_variable_names_the_history_file_or_turns_it_off() {
        let home = Some(OsString::from("/home/u"));
        assert_eq!(
            history_path(None, home.clone()),
            Some(PathBuf::from("/home/u/.kvstore_client_history"))
        );
        assert_eq!(
            history_path(Some("/tmp/h".into()), home.clone()),
            Some(PathBuf::from("/tmp/h"))
        );
        assert_eq!(history_path(Some("".into()), home.clone()), None);
        assert_eq!(history_path(Some("/dev/null".into()), home), None);
        assert_eq!(history_path(None, None), None);
        assert_eq!(history_path(None, Some("".into())), None);
    }
}
