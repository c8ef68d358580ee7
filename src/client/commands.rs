//! The commands `kvstore-client` knows by name: those of the line protocol
//! (`crate::protocol::parse`) and its own local ones (`HELP`, `QUIT`,
//! `EXIT`), with their usage, for `help`, completion and hints.
//!
//! The table only describes; it decides nothing about what is sent
//! ([`super::request`] does). A unit test checks that every command said to
//! go to the server is one the server's parser knows.

/// One command's name, arguments and what it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandHelp {
    /// Upper case, as the README spells it; typed in any case.
    pub name: &'static str,
    /// Its arguments, e.g. `<key> <value>`; empty when it takes none.
    pub arguments: &'static str,
    pub summary: &'static str,
    /// False for the client's own commands, which are never sent.
    pub sent: bool,
}

/// Every command, in the order `help` lists them.
pub const COMMANDS: [CommandHelp; 11] = [
    CommandHelp {
        name: "PUT",
        arguments: "<key> <value>",
        summary: "Sets key to value: OK. The value may hold spaces (quote them to keep \
                  several in a row) or be empty (\"\"); the key may not hold a space.",
        sent: true,
    },
    CommandHelp {
        name: "GET",
        arguments: "<key>",
        summary: "The value of key, or NOT_FOUND.",
        sent: true,
    },
    CommandHelp {
        name: "DEL",
        arguments: "<key>",
        summary: "Deletes key: OK, or NOT_FOUND if it was not there.",
        sent: true,
    },
    CommandHelp {
        name: "PING",
        arguments: "",
        summary: "PONG.",
        sent: true,
    },
    CommandHelp {
        name: "ROLE",
        arguments: "",
        summary: "This node's role, leader id, epoch, commit index, snapshot index, used and \
                  max memory.",
        sent: true,
    },
    CommandHelp {
        name: "INFO",
        arguments: "",
        summary: "One line of name=value fields: server, clients, memory, log, stats, \
                  replication (the numbers /metrics exports).",
        sent: true,
    },
    CommandHelp {
        name: "SNAPSHOT",
        arguments: "",
        summary: "Takes a snapshot now: OK <index> once it is durable.",
        sent: true,
    },
    CommandHelp {
        name: "AUTH",
        arguments: "<password>",
        summary: "Authenticates this connection (--password-file does it on every \
                  connection). Never saved in the history file.",
        sent: true,
    },
    CommandHelp {
        name: "HELP",
        arguments: "[command]",
        summary: "Lists the commands, or shows one (local: nothing is sent).",
        sent: false,
    },
    CommandHelp {
        name: "QUIT",
        arguments: "",
        summary: "Leaves the client (local: nothing is sent).",
        sent: false,
    },
    CommandHelp {
        name: "EXIT",
        arguments: "",
        summary: "Leaves the client, as QUIT.",
        sent: false,
    },
];

/// The command named `name`, in any case.
pub fn find(name: &[u8]) -> Option<&'static CommandHelp> {
    COMMANDS
        .iter()
        .find(|command| command.name.as_bytes().eq_ignore_ascii_case(name))
}

/// `PUT <key> <value>`: the name and its arguments.
pub fn usage(command: &CommandHelp) -> String {
    if command.arguments.is_empty() {
        command.name.to_owned()
    } else {
        format!("{} {}", command.name, command.arguments)
    }
}

/// What `help` prints: every command, or the one asked about.
pub fn help_text(topic: Option<&[u8]>) -> String {
    match topic {
        None => overview(),
        Some(name) => match find(name) {
            Some(command) => format!("\n  {}\n  summary: {}\n\n", usage(command), command.summary),
            None => format!(
                "no command {}; type `help` for the list\n",
                String::from_utf8_lossy(name)
            ),
        },
    }
}

fn overview() -> String {
    let mut text = String::from("kvstore-client speaks kvstore's line protocol. Commands:\n\n");
    for command in &COMMANDS {
        text.push_str(&format!("  {:<26}{}\n", usage(command), command.summary));
    }
    text.push_str(
        "\nArguments are split as redis-cli splits them: \"a b\" and 'a b' are one \
         argument;\ninside double quotes \\n \\r \\t \\b \\a \\\\ \\\" \\' and \\xHH are \
         escapes.\nTab completes command names; Up and Down walk the history.\n\n",
    );
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{ParseError, parse};

    #[test]
    fn every_sent_command_is_known_to_the_server() {
        for command in COMMANDS.iter().filter(|command| command.sent) {
            let example = command
                .arguments
                .split(' ')
                .filter(|argument| !argument.is_empty())
                .fold(command.name.to_owned(), |line, _| line + " x");
            assert!(parse(example.as_bytes()).is_ok(), "{example}");
        }
    }

    /// `QUIT` is the server's too (it closes the connection); the client
    /// keeps it local so that leaving never looks like a lost connection.
    #[test]
    fn other_local_commands_are_unknown_to_the_server() {
        let local = COMMANDS.iter().filter(|command| !command.sent);
        for command in local.filter(|command| command.name != "QUIT") {
            assert_eq!(
                parse(command.name.as_bytes()),
                Err(ParseError::UnknownCommand(
                    crate::protocol::CommandName::new(command.name.as_bytes())
                )),
                "{}",
                command.name
            );
        }
    }

    #[test]
    fn commands_are_found_in_any_case() {
        assert_eq!(find(b"put").map(|command| command.name), Some("PUT"));
        assert_eq!(
            find(b"SnapShot").map(|command| command.name),
            Some("SNAPSHOT")
        );
        assert_eq!(find(b"FROB"), None);
    }

    #[test]
    fn help_shows_one_command_or_all() {
        assert_eq!(
            help_text(Some(b"get")),
            "\n  GET <key>\n  summary: The value of key, or NOT_FOUND.\n\n"
        );
        let all = help_text(None);
        for command in &COMMANDS {
            assert!(all.contains(&usage(command)), "{}", command.name);
        }
        assert!(help_text(Some(b"frob")).starts_with("no command frob"));
    }
}
