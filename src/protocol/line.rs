//! Framing and parsing of request lines, in place.

use std::fmt;

/// The result of looking for one whole line at the front of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Framed<'buf> {
    /// A whole line (terminator stripped) and the bytes it consumed.
    Line { line: &'buf [u8], consumed: usize },
    /// No terminator yet, and the buffered bytes are still within the limit.
    Incomplete,
    /// No terminator within `max_line_bytes`: the client must be cut off.
    TooLong,
}

/// Finds the first whole line in `buffer`. A line longer than
/// `max_line_bytes` (terminator excluded) is [`Framed::TooLong`] whether or
/// not its end has arrived, so a client cannot grow the buffer past the limit.
pub fn next_line(buffer: &[u8], max_line_bytes: usize) -> Framed<'_> {
    match memchr::memchr(b'\n', buffer) {
        Some(newline) => {
            let line = strip_carriage_return(&buffer[..newline]);
            if line.len() > max_line_bytes {
                return Framed::TooLong;
            }
            Framed::Line {
                line,
                consumed: newline + 1,
            }
        }
        None if buffer.len() > max_line_bytes => Framed::TooLong,
        None => Framed::Incomplete,
    }
}

fn strip_carriage_return(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// A parsed request; keys and values borrow from the connection's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request<'buf> {
    Put {
        key: &'buf [u8],
        value: &'buf [u8],
    },
    Get {
        key: &'buf [u8],
    },
    Del {
        key: &'buf [u8],
    },
    Ping,
    /// This node's role, the leader it knows, its epoch, commit index and
    /// newest snapshot's index.
    Role,
    /// Take a snapshot now (or join the one running); answered once durable.
    Snapshot,
    Quit,
    /// `AUTH <password>` (`--requirepass-file`): the password is the rest
    /// of the line, spaces included. Answered by the connection, never by
    /// the core.
    Auth {
        password: &'buf [u8],
    },
}

impl Request<'_> {
    /// Whether the request changes the store (and so goes through the log).
    pub fn is_write(&self) -> bool {
        matches!(self, Request::Put { .. } | Request::Del { .. })
    }
}

/// Why a line is not a request. Each becomes `ERR <reason>` on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    EmptyLine,
    UnknownCommand,
    /// A cluster-internal command (the seed's `REPL_PUT`, `ELECTION`, ...)
    /// sent on a client connection: peers speak only after a handshake.
    PeerCommand,
    /// The command and the arity it wants, e.g. `("GET", "GET <key>")`.
    WrongArity {
        usage: &'static str,
    },
    EmptyKey,
}

impl fmt::Display for ParseError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::EmptyLine => write!(formatter, "empty line"),
            ParseError::UnknownCommand => write!(formatter, "unknown command"),
            ParseError::PeerCommand => {
                write!(formatter, "peer command refused on a client connection")
            }
            ParseError::WrongArity { usage } => {
                write!(formatter, "wrong number of arguments, usage: {usage}")
            }
            ParseError::EmptyKey => write!(formatter, "empty key"),
        }
    }
}

const PUT_USAGE: &str = "PUT <key> <value>";
const GET_USAGE: &str = "GET <key>";
const DEL_USAGE: &str = "DEL <key>";

/// Parses one line (without its terminator). Arguments are separated by
/// exactly one space; a PUT's value is everything after the space that
/// follows the key.
pub fn parse(line: &[u8]) -> Result<Request<'_>, ParseError> {
    if line.is_empty() {
        return Err(ParseError::EmptyLine);
    }
    let (command, arguments) = split_word(line);
    if command.eq_ignore_ascii_case(b"GET") {
        single_key(arguments, GET_USAGE).map(|key| Request::Get { key })
    } else if command.eq_ignore_ascii_case(b"PUT") {
        parse_put(arguments)
    } else if command.eq_ignore_ascii_case(b"DEL") {
        single_key(arguments, DEL_USAGE).map(|key| Request::Del { key })
    } else if command.eq_ignore_ascii_case(b"PING") {
        no_arguments(arguments, "PING").map(|()| Request::Ping)
    } else if command.eq_ignore_ascii_case(b"ROLE") {
        no_arguments(arguments, "ROLE").map(|()| Request::Role)
    } else if command.eq_ignore_ascii_case(b"SNAPSHOT") {
        no_arguments(arguments, "SNAPSHOT").map(|()| Request::Snapshot)
    } else if command.eq_ignore_ascii_case(b"QUIT") {
        no_arguments(arguments, "QUIT").map(|()| Request::Quit)
    } else if command.eq_ignore_ascii_case(b"AUTH") {
        match arguments {
            Some(password) if !password.is_empty() => Ok(Request::Auth { password }),
            _ => Err(ParseError::WrongArity {
                usage: "AUTH <password>",
            }),
        }
    } else if PEER_COMMANDS
        .iter()
        .any(|peer_command| command.eq_ignore_ascii_case(peer_command))
    {
        Err(ParseError::PeerCommand)
    } else {
        Err(ParseError::UnknownCommand)
    }
}

/// Names of internal commands a client must not be able to forge; saying
/// so beats a bare "unknown command" for someone replaying the seed's
/// protocol by hand.
const PEER_COMMANDS: [&[u8]; 8] = [
    b"REPL_PUT",
    b"REPL_DEL",
    b"ELECTION",
    b"COORDINATOR",
    b"HEARTBEAT",
    b"ALIVE",
    b"PROMISE",
    b"APPEND",
];

/// Splits at the first space: `(word, Some(rest))`, or `(line, None)`.
fn split_word(line: &[u8]) -> (&[u8], Option<&[u8]>) {
    match memchr::memchr(b' ', line) {
        Some(space) => (&line[..space], Some(&line[space + 1..])),
        None => (line, None),
    }
}

fn single_key<'buf>(
    arguments: Option<&'buf [u8]>,
    usage: &'static str,
) -> Result<&'buf [u8], ParseError> {
    let key = arguments.ok_or(ParseError::WrongArity { usage })?;
    if memchr::memchr(b' ', key).is_some() {
        return Err(ParseError::WrongArity { usage });
    }
    non_empty_key(key)
}

fn parse_put(arguments: Option<&[u8]>) -> Result<Request<'_>, ParseError> {
    let wrong_arity = ParseError::WrongArity { usage: PUT_USAGE };
    let (key, value) = split_word(arguments.ok_or(wrong_arity)?);
    let value = value.ok_or(wrong_arity)?;
    Ok(Request::Put {
        key: non_empty_key(key)?,
        value,
    })
}

fn non_empty_key(key: &[u8]) -> Result<&[u8], ParseError> {
    if key.is_empty() {
        Err(ParseError::EmptyKey)
    } else {
        Ok(key)
    }
}

fn no_arguments(arguments: Option<&[u8]>, usage: &'static str) -> Result<(), ParseError> {
    match arguments {
        None => Ok(()),
        Some(_) => Err(ParseError::WrongArity { usage }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_lines_with_either_terminator() {
        assert_eq!(
            next_line(b"GET a\r\nPING\n", 64),
            Framed::Line {
                line: b"GET a",
                consumed: 7
            }
        );
        assert_eq!(
            next_line(b"PING\nrest", 64),
            Framed::Line {
                line: b"PING",
                consumed: 5
            }
        );
        assert_eq!(next_line(b"PIN", 64), Framed::Incomplete);
    }

    #[test]
    fn a_line_over_the_limit_is_too_long_before_and_after_its_end_arrives() {
        assert_eq!(next_line(b"123456789", 8), Framed::TooLong);
        assert_eq!(next_line(b"123456789\n", 8), Framed::TooLong);
        assert!(matches!(next_line(b"12345678\n", 8), Framed::Line { .. }));
        assert_eq!(next_line(b"12345678", 8), Framed::Incomplete);
    }

    #[test]
    fn parses_each_command_case_insensitively() {
        assert_eq!(
            parse(b"put k some value"),
            Ok(Request::Put {
                key: b"k",
                value: b"some value"
            })
        );
        assert_eq!(parse(b"Get k"), Ok(Request::Get { key: b"k" }));
        assert_eq!(parse(b"DEL k"), Ok(Request::Del { key: b"k" }));
        assert_eq!(parse(b"ping"), Ok(Request::Ping));
        assert_eq!(parse(b"QUIT"), Ok(Request::Quit));
        assert_eq!(parse(b"role"), Ok(Request::Role));
        assert_eq!(
            parse(b"auth s3cret"),
            Ok(Request::Auth {
                password: b"s3cret"
            })
        );
    }

    #[test]
    fn a_password_is_the_rest_of_the_line() {
        assert_eq!(
            parse(b"AUTH two words "),
            Ok(Request::Auth {
                password: b"two words "
            })
        );
        let arity = Err(ParseError::WrongArity {
            usage: "AUTH <password>",
        });
        assert_eq!(parse(b"AUTH"), arity);
        assert_eq!(parse(b"AUTH "), arity);
    }

    #[test]
    fn put_value_may_be_empty_or_hold_spaces() {
        assert_eq!(
            parse(b"PUT k "),
            Ok(Request::Put {
                key: b"k",
                value: b""
            })
        );
        assert_eq!(
            parse(b"PUT k  two  spaces "),
            Ok(Request::Put {
                key: b"k",
                value: b" two  spaces "
            })
        );
    }

    #[test]
    fn binary_keys_and_values_are_kept_exactly() {
        let line = b"PUT \xff\x00\xfe \x00\x01\xc3\x28";
        assert_eq!(
            parse(line),
            Ok(Request::Put {
                key: b"\xff\x00\xfe",
                value: b"\x00\x01\xc3\x28"
            })
        );
    }

    #[test]
    fn malformed_lines_are_errors() {
        let put_arity = Err(ParseError::WrongArity { usage: PUT_USAGE });
        assert_eq!(parse(b""), Err(ParseError::EmptyLine));
        assert_eq!(parse(b"FROB x"), Err(ParseError::UnknownCommand));
        assert_eq!(parse(b"REPL_PUT k v"), Err(ParseError::PeerCommand));
        assert_eq!(parse(b"coordinator 7"), Err(ParseError::PeerCommand));
        assert_eq!(parse(b"PUT"), put_arity);
        assert_eq!(parse(b"PUT key"), put_arity);
        assert_eq!(parse(b"PUT  value"), Err(ParseError::EmptyKey));
        assert_eq!(
            parse(b"GET"),
            Err(ParseError::WrongArity { usage: GET_USAGE })
        );
        assert_eq!(
            parse(b"GET a b"),
            Err(ParseError::WrongArity { usage: GET_USAGE })
        );
        assert_eq!(parse(b"GET "), Err(ParseError::EmptyKey));
        assert_eq!(
            parse(b"DEL"),
            Err(ParseError::WrongArity { usage: DEL_USAGE })
        );
        assert_eq!(
            parse(b"PING x"),
            Err(ParseError::WrongArity { usage: "PING" })
        );
    }

    #[test]
    fn errors_read_well_on_the_wire() {
        assert_eq!(ParseError::UnknownCommand.to_string(), "unknown command");
        assert_eq!(
            ParseError::WrongArity { usage: GET_USAGE }.to_string(),
            "wrong number of arguments, usage: GET <key>"
        );
    }
}
