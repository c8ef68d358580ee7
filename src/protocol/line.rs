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
/// `max_line_bytes` (terminator excluded) is [`Framed::TooLong`] as soon as
/// that is certain, whether or not its end has arrived, so a client cannot
/// grow the buffer past `max_line_bytes + 2` (the limit and `\r\n`).
///
/// Certain means: more than `max_line_bytes` bytes without a `\n`, unless
/// the one byte past the limit is a `\r` that may yet be followed by its
/// `\n`. So a line of exactly the limit is framed however its `\r\n` is
/// split across reads.
pub fn next_line(buffer: &[u8], max_line_bytes: usize) -> Framed<'_> {
    next_line_after(buffer, 0, max_line_bytes)
}

/// [`next_line`] when the caller knows that `buffer[..newline_free]` holds
/// no `\n` (it looked before and the line was incomplete): the search
/// starts there. A long line arriving in many reads is then scanned once,
/// not once per read (quadratic: seconds for a 60 MiB value).
pub fn next_line_after(buffer: &[u8], newline_free: usize, max_line_bytes: usize) -> Framed<'_> {
    let skipped = newline_free.min(buffer.len());
    let found = memchr::memchr(b'\n', &buffer[skipped..]).map(|offset| skipped + offset);
    match found {
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
        None if buffer.len() > max_line_bytes && !ends_at_limit(buffer, max_line_bytes) => {
            Framed::TooLong
        }
        None => Framed::Incomplete,
    }
}

/// Whether `buffer` (which holds no `\n`) may still be a line of exactly
/// `max_line_bytes` whose `\r` has arrived and whose `\n` has not.
fn ends_at_limit(buffer: &[u8], max_line_bytes: usize) -> bool {
    buffer.len() == max_line_bytes + 1 && buffer.ends_with(b"\r")
}

fn strip_carriage_return(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Lines longer than this end [`key_hints`]' look-ahead.
pub const MAX_HINTED_LINE_BYTES: usize = 4096;

/// The keys of the whole `GET`/`PUT`/`DEL` lines at the front of `buffer`,
/// found cheaply so the store can fetch them into the cache before the
/// lines run: at most `keys.len()` lines are looked at. Returns how many
/// keys were written and how many lines were looked at. A hint only, with
/// no validation: [`parse`] decides what each line is (a lowercase command
/// or a malformed line is simply not hinted).
pub fn key_hints<'buf>(buffer: &'buf [u8], keys: &mut [&'buf [u8]]) -> (usize, usize) {
    let (mut found, mut lines, mut start) = (0, 0, 0);
    while lines < keys.len() {
        // A long line is no pipeline: stop rather than scan it (it may be
        // arriving 16 KiB at a time, and this runs after every read).
        let window = &buffer[start..buffer.len().min(start + MAX_HINTED_LINE_BYTES)];
        let Some(newline) = memchr::memchr(b'\n', window) else {
            break;
        };
        let line = strip_carriage_return(&buffer[start..start + newline]);
        start += newline + 1;
        lines += 1;
        if let Some((b"GET " | b"PUT " | b"DEL ", rest)) = line.split_first_chunk::<4>() {
            keys[found] = split_word(rest).0;
            found += 1;
        }
    }
    (found, lines)
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
    /// The server's figures on one line of `field=value` pairs (the fields
    /// of RESP's `INFO`). Answered by the connection, which knows the
    /// driver's figures, through the core's `Node::info_line`.
    Info,
    Quit,
    /// `AUTH <password>` (`--requirepass-file`): the password is the rest
    /// of the line, spaces included. Answered by the connection, never by
    /// the core.
    Auth {
        password: &'buf [u8],
    },
}

/// The line protocol's command names, lowercase: a request's position
/// here is its [`Request::command_index`] (counters are kept by it, with no
/// lookup by name per request).
pub const COMMAND_NAMES: [&str; 9] = [
    "put", "get", "del", "ping", "role", "snapshot", "info", "quit", "auth",
];

impl Request<'_> {
    /// Whether the request changes the store (and so goes through the log).
    pub fn is_write(&self) -> bool {
        matches!(self, Request::Put { .. } | Request::Del { .. })
    }

    /// Where the request's command is in [`COMMAND_NAMES`].
    pub fn command_index(&self) -> usize {
        match self {
            Request::Put { .. } => 0,
            Request::Get { .. } => 1,
            Request::Del { .. } => 2,
            Request::Ping => 3,
            Request::Role => 4,
            Request::Snapshot => 5,
            Request::Info => 6,
            Request::Quit => 7,
            Request::Auth { .. } => 8,
        }
    }
}

/// Where the command a line starts with is in [`COMMAND_NAMES`], if it is
/// one: a line that does not parse is still counted under its command.
pub fn command_index_of(line: &[u8]) -> Option<usize> {
    let (command, _) = split_word(line);
    COMMAND_NAMES
        .iter()
        .position(|name| command.eq_ignore_ascii_case(name.as_bytes()))
}

/// Why a line is not a request. Each becomes `ERR <reason>` on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    EmptyLine,
    /// A command the line protocol does not have; its name is shown.
    UnknownCommand(CommandName),
    /// A cluster-internal command (the seed's `REPL_PUT`, `ELECTION`, ...)
    /// sent on a client connection: peers speak only after a handshake.
    PeerCommand,
    /// The command and the arity it wants, e.g. `("GET", "GET <key>")`.
    WrongArity {
        usage: &'static str,
    },
    EmptyKey,
}

/// The most of an unknown command's name an error reply shows.
pub const MAX_SHOWN_NAME_BYTES: usize = 32;

/// An unknown command's name, kept inline (errors are `Copy` and parsing
/// never allocates), cut to [`MAX_SHOWN_NAME_BYTES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandName {
    bytes: [u8; MAX_SHOWN_NAME_BYTES],
    len: u8,
    truncated: bool,
}

impl CommandName {
    pub fn new(name: &[u8]) -> Self {
        let len = name.len().min(MAX_SHOWN_NAME_BYTES);
        let mut bytes = [0; MAX_SHOWN_NAME_BYTES];
        bytes[..len].copy_from_slice(&name[..len]);
        CommandName {
            bytes,
            len: len as u8,
            truncated: name.len() > len,
        }
    }
}

impl fmt::Display for CommandName {
    /// Printable ASCII as is, anything else escaped (`\x1b`), so the reply
    /// stays one line a terminal shows faithfully.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "{}",
            self.bytes[..self.len as usize].escape_ascii()
        )?;
        if self.truncated {
            formatter.write_str("...")?;
        }
        Ok(())
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::EmptyLine => write!(formatter, "empty line"),
            ParseError::UnknownCommand(name) => write!(formatter, "unknown command '{name}'"),
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
    } else if command.eq_ignore_ascii_case(b"INFO") {
        no_arguments(arguments, "INFO").map(|()| Request::Info)
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
        Err(ParseError::UnknownCommand(CommandName::new(command)))
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
    fn a_line_found_after_a_newline_free_prefix_is_the_same_line() {
        let buffer = b"PUT k 0123456789\r\nGET k\n";
        for skip in 0..=16 {
            assert_eq!(
                next_line_after(buffer, skip, 64),
                next_line(buffer, 64),
                "skip {skip}"
            );
        }
        // Past the end of what is buffered: nothing is skipped wrongly.
        assert_eq!(next_line_after(b"GET k", 99, 64), Framed::Incomplete);
        assert_eq!(next_line_after(b"GET k\n", 3, 3), Framed::TooLong);
        assert_eq!(next_line_after(&[b'x'; 70], 65, 64), Framed::TooLong);
    }

    #[test]
    fn key_hints_stop_at_a_line_longer_than_a_hint_looks() {
        let mut keys: [&[u8]; 4] = [&[]; 4];
        let mut buffer = b"GET a\nPUT b ".to_vec();
        buffer.extend(std::iter::repeat_n(b'v', MAX_HINTED_LINE_BYTES));
        buffer.extend_from_slice(b"\nGET c\n");
        assert_eq!(key_hints(&buffer, &mut keys), (1, 1));
        assert_eq!(keys[0], b"a");
    }

    #[test]
    fn key_hints_name_the_keys_of_whole_get_put_del_lines_only() {
        let mut keys: [&[u8]; 8] = [&[]; 8];
        let buffer = b"GET a\r\nPUT b v w\nget c\nPING\nDEL d\nGET e\nGET f";
        assert_eq!(key_hints(buffer, &mut keys), (4, 6));
        assert_eq!(keys[..4], [&b"a"[..], b"b", b"d", b"e"][..]);
        // The slots bound the lines looked at; a partial line is not one.
        assert_eq!(key_hints(buffer, &mut keys[..3]), (2, 3));
        let (found, lines) = key_hints(b"GET x\nGET y", &mut keys);
        assert_eq!((found, lines, keys[0]), (1, 1, &b"x"[..]));
        assert_eq!(key_hints(b"PUT \nGET\n\n", &mut keys), (1, 3));
        assert_eq!(keys[0], b"");
        assert_eq!(key_hints(b"", &mut keys), (0, 0));
    }

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

    /// Frames what a connection holds after each read when `stream` arrives
    /// in two reads, split after `split` bytes (a `\n` ends each read's
    /// framing, as the connection consumes the line it found).
    fn framed_in_two_reads(stream: &[u8], split: usize, max_line_bytes: usize) -> Vec<String> {
        let outcome = |buffered: &[u8]| match next_line(buffered, max_line_bytes) {
            Framed::Line { line, consumed } => format!(
                "line {:?} consumed {consumed}",
                String::from_utf8_lossy(line)
            ),
            other => format!("{other:?}"),
        };
        vec![outcome(&stream[..split]), outcome(stream)]
    }

    #[test]
    fn a_line_of_exactly_the_limit_is_framed_however_its_terminator_is_split() {
        // 8 bytes, the limit, then \r\n: every split position, including
        // the one between \r and \n.
        let stream = b"12345678\r\n";
        let whole = "line \"12345678\" consumed 10";
        for split in 0..=8 {
            assert_eq!(
                framed_in_two_reads(stream, split, 8),
                ["Incomplete", whole],
                "split after {split} bytes"
            );
        }
        assert_eq!(
            framed_in_two_reads(stream, 9, 8),
            ["Incomplete", whole],
            "split between \\r and \\n"
        );
        assert_eq!(framed_in_two_reads(stream, 10, 8), [whole, whole]);
        // With a bare \n the limit is reached without a pending \r.
        let bare = b"12345678\n";
        assert_eq!(next_line(&bare[..8], 8), Framed::Incomplete);
        assert_eq!(
            framed_in_two_reads(bare, 8, 8),
            ["Incomplete", "line \"12345678\" consumed 9"]
        );
    }

    #[test]
    fn a_line_one_over_the_limit_is_refused_as_soon_as_that_is_certain() {
        // 9 bytes (limit 8) then \r\n.
        let stream = b"123456789\r\n";
        for split in 0..=8 {
            assert_eq!(
                framed_in_two_reads(stream, split, 8),
                ["Incomplete", "TooLong"],
                "split after {split} bytes"
            );
        }
        // Nine bytes and no \r among them: certain before the terminator.
        for split in 9..=11 {
            assert_eq!(
                framed_in_two_reads(stream, split, 8),
                ["TooLong", "TooLong"],
                "split after {split} bytes"
            );
        }
        // A \r one past the limit that a \n does not follow.
        assert_eq!(next_line(b"12345678\r", 8), Framed::Incomplete);
        assert_eq!(next_line(b"12345678\rx", 8), Framed::TooLong);
        assert_eq!(next_line(b"12345678\r\r", 8), Framed::TooLong);
        assert_eq!(next_line(b"12345678\r\r\n", 8), Framed::TooLong);
        // A \r inside the line is content: 9 bytes, over the limit.
        assert_eq!(next_line(b"1234567\r8\n", 8), Framed::TooLong);
        assert_eq!(next_line(b"1234567\r8", 8), Framed::TooLong);
    }

    #[test]
    fn never_more_than_the_limit_and_a_terminator_is_incomplete() {
        for length in 0..=12 {
            let buffered = vec![b'\r'; length];
            let incomplete = next_line(&buffered, 8) == Framed::Incomplete;
            assert_eq!(incomplete, length <= 9, "{length} bytes of \\r");
        }
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
        assert_eq!(parse(b"Info"), Ok(Request::Info));
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
        assert_eq!(
            parse(b"FROB x"),
            Err(ParseError::UnknownCommand(CommandName::new(b"FROB")))
        );
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
    fn every_request_knows_its_command_name() {
        let requests = [
            (&b"PUT k v"[..], "put"),
            (b"GET k", "get"),
            (b"DEL k", "del"),
            (b"PING", "ping"),
            (b"ROLE", "role"),
            (b"SNAPSHOT", "snapshot"),
            (b"INFO", "info"),
            (b"QUIT", "quit"),
            (b"AUTH secret", "auth"),
        ];
        for (line, name) in requests {
            let index = parse(line).unwrap().command_index();
            assert_eq!(COMMAND_NAMES[index], name);
            assert_eq!(command_index_of(line), Some(index));
        }
        assert_eq!(command_index_of(b"get a b"), Some(1), "wrong arity");
        assert_eq!(command_index_of(b"FROB x"), None);
        assert_eq!(command_index_of(b""), None);
        assert_eq!(
            parse(b"INFO all"),
            Err(ParseError::WrongArity { usage: "INFO" })
        );
    }

    #[test]
    fn errors_read_well_on_the_wire() {
        let shown = |name: &[u8]| ParseError::UnknownCommand(CommandName::new(name)).to_string();
        assert_eq!(shown(b"FROB"), "unknown command 'FROB'");
        // Control bytes (an arrow key's escape sequence) are escaped, and a
        // long name is cut: the reply stays one readable line.
        assert_eq!(shown(b"\x1b[A"), "unknown command '\\x1b[A'");
        assert_eq!(
            shown(&[b'x'; 100]),
            format!("unknown command '{}...'", "x".repeat(MAX_SHOWN_NAME_BYTES))
        );
        assert_eq!(
            ParseError::WrongArity { usage: GET_USAGE }.to_string(),
            "wrong number of arguments, usage: GET <key>"
        );
    }
}
