//! What the line editor of the interactive client knows about commands:
//! Tab completes a command name (and the command after `help`), in the
//! case it was started in, and a dimmed hint after a command name shows its
//! arguments, as `redis-cli` does. Everything comes from
//! [`super::commands::COMMANDS`].

use std::borrow::Cow;

use rustyline::completion::Completer;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::validate::Validator;
use rustyline::{Context, Helper};

use super::commands::{COMMANDS, find};

/// The rustyline helper: completion and hints, no highlighting but the
/// hint's, no validation (a line is taken as typed).
#[derive(Debug, Default)]
pub struct CommandHelper;

impl Completer for CommandHelper {
    type Candidate = String;

    fn complete(
        &self,
        line: &str,
        position: usize,
        _context: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<String>)> {
        Ok(complete(&line[..position]))
    }
}

impl Hinter for CommandHelper {
    type Hint = String;

    fn hint(&self, line: &str, position: usize, _context: &Context<'_>) -> Option<String> {
        if position < line.len() {
            return None;
        }
        hint(line)
    }
}

impl Highlighter for CommandHelper {
    fn highlight_hint<'hint>(&self, hint: &'hint str) -> Cow<'hint, str> {
        Cow::Owned(format!("\x1b[90m{hint}\x1b[0m"))
    }
}

impl Validator for CommandHelper {}

impl Helper for CommandHelper {}

/// Where the word being completed starts in `before_cursor`, and the
/// command names it may become.
pub fn complete(before_cursor: &str) -> (usize, Vec<String>) {
    let start = before_cursor.rfind(' ').map_or(0, |space| space + 1);
    let earlier: Vec<&str> = before_cursor[..start].split_whitespace().collect();
    let completes_a_command = match earlier.as_slice() {
        [] => true,
        [help] => help.eq_ignore_ascii_case("HELP"),
        _ => false,
    };
    if !completes_a_command {
        return (start, Vec::new());
    }
    let prefix = &before_cursor[start..];
    let lower_case = prefix.chars().next().is_some_and(char::is_lowercase);
    let candidates = COMMANDS
        .iter()
        .filter(|command| starts_with_ignoring_case(command.name, prefix))
        .map(|command| match lower_case {
            true => command.name.to_lowercase(),
            false => command.name.to_owned(),
        })
        .collect();
    (start, candidates)
}

/// The arguments still to type after a whole command name: ` <key> <value>`
/// after `PUT`, `<value>` after `PUT k `, nothing once all are there.
pub fn hint(line: &str) -> Option<String> {
    let mut words = line.split(' ');
    let command = find(words.next()?.as_bytes())?;
    let typed = line.split(' ').count() - 1;
    let wanted: Vec<&str> = command.arguments.split_whitespace().collect();
    let remaining = wanted.get(typed.saturating_sub(1)..)?;
    if remaining.is_empty() || (typed > 0 && !line.ends_with(' ')) {
        return None;
    }
    let separator = if typed == 0 { " " } else { "" };
    Some(format!("{separator}{}", remaining.join(" ")))
}

fn starts_with_ignoring_case(name: &str, prefix: &str) -> bool {
    name.len() >= prefix.len()
        && name.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_word_completes_to_command_names_in_the_case_typed() {
        assert_eq!(
            complete("P"),
            (0, vec!["PUT".to_owned(), "PING".to_owned()])
        );
        assert_eq!(complete("sn"), (0, vec!["snapshot".to_owned()]));
        assert_eq!(complete("  ge"), (2, vec!["get".to_owned()]));
        assert_eq!(complete("frob").1, Vec::<String>::new());
        assert_eq!(complete("").1.len(), COMMANDS.len());
    }

    #[test]
    fn the_word_after_help_completes_too_but_not_keys_or_values() {
        assert_eq!(complete("help de"), (5, vec!["del".to_owned()]));
        assert_eq!(complete("GET P"), (4, Vec::new()));
        assert_eq!(complete("PUT k P"), (6, Vec::new()));
    }

    #[test]
    fn hints_show_the_arguments_still_to_type() {
        assert_eq!(hint("PUT").as_deref(), Some(" <key> <value>"));
        assert_eq!(hint("put ").as_deref(), Some("<key> <value>"));
        assert_eq!(hint("PUT k ").as_deref(), Some("<value>"));
        assert_eq!(hint("PUT k"), None);
        assert_eq!(hint("PUT k v"), None);
        assert_eq!(hint("PING"), None);
        assert_eq!(hint("help").as_deref(), Some(" [command]"));
        assert_eq!(hint("FROB"), None);
    }
}
