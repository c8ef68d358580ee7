//! From arguments (split from a typed line by [`super::quoting`], or given
//! on the command line) to what the client does: nothing, leave, print
//! help, or send one request line.
//!
//! The line protocol frames a request as one line and a key as one word,
//! so a newline anywhere, a space in a key, or a carriage return at the end
//! (the server strips it) cannot be sent. Such a request is refused here,
//! with the reason, and nothing is sent: sending it would store something
//! else than what was typed. A PUT's value is the rest of its line, so its
//! arguments after the key are joined by single spaces and may hold spaces
//! themselves.

use std::fmt;

use super::MAX_LINE_LENGTH;

/// What one command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A blank line.
    Nothing,
    /// `quit` or `exit`, in any case: leave without sending anything.
    Quit,
    /// `help`, or `help <command>`.
    Help(Option<Vec<u8>>),
    /// One request line, without its `\n`.
    Send(Vec<u8>),
}

/// Why arguments cannot be sent as a line-protocol request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestError {
    /// The key of a PUT, GET or DEL holds a space.
    KeyWithSpace { key: Vec<u8> },
    /// An argument holds a newline, which would end the request.
    Newline,
    /// The request would end with a carriage return, which the server strips.
    TrailingCarriageReturn,
    /// The request is longer than a line may be.
    TooLong { length: usize },
}

/// Where a request that cannot travel over the line protocol can go.
const USE_RESP: &str = "redis-cli speaks RESP, binary-safe, to the same port";

impl fmt::Display for RequestError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestError::KeyWithSpace { key } => write!(
                formatter,
                "keys cannot contain spaces over the line protocol (key \"{}\"); \
                 nothing was sent. {USE_RESP} and takes any key, \
                 e.g. redis-cli -p <port> SET \"a key\" value",
                key.escape_ascii()
            ),
            RequestError::Newline => write!(
                formatter,
                "a newline cannot be sent over the line protocol (it ends the request); \
                 nothing was sent. {USE_RESP} and takes any value"
            ),
            RequestError::TrailingCarriageReturn => write!(
                formatter,
                "a request cannot end with a carriage return over the line protocol \
                 (the server strips it); nothing was sent. {USE_RESP}"
            ),
            RequestError::TooLong { length } => write!(
                formatter,
                "the request is {length} bytes; a line may be at most {MAX_LINE_LENGTH}; \
                 nothing was sent"
            ),
        }
    }
}

/// What `arguments` ask for; a request is checked to travel intact.
pub fn interpret(arguments: &[Vec<u8>]) -> Result<Input, RequestError> {
    let Some(command) = arguments.first() else {
        return Ok(Input::Nothing);
    };
    let is = |name: &str| command.eq_ignore_ascii_case(name.as_bytes());
    if is("QUIT") || is("EXIT") {
        return Ok(Input::Quit);
    }
    if is("HELP") {
        return Ok(Input::Help(arguments.get(1).cloned()));
    }
    if (is("PUT") || is("GET") || is("DEL"))
        && let Some(key) = arguments.get(1)
        && memchr::memchr(b' ', key).is_some()
    {
        return Err(RequestError::KeyWithSpace { key: key.clone() });
    }
    let line = arguments.join(&b' ');
    check_line(&line)?;
    Ok(Input::Send(line))
}

fn check_line(line: &[u8]) -> Result<(), RequestError> {
    if memchr::memchr(b'\n', line).is_some() {
        return Err(RequestError::Newline);
    }
    if line.ends_with(b"\r") {
        return Err(RequestError::TrailingCarriageReturn);
    }
    if line.len() > MAX_LINE_LENGTH {
        return Err(RequestError::TooLong { length: line.len() });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arguments(items: &[&[u8]]) -> Vec<Vec<u8>> {
        items.iter().map(|item| item.to_vec()).collect()
    }

    fn sent(items: &[&[u8]]) -> Vec<u8> {
        match interpret(&arguments(items)) {
            Ok(Input::Send(line)) => line,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_value_keeps_its_spaces_and_words_are_joined_by_one() {
        assert_eq!(sent(&[b"PUT", b"k", b"v  w"]), b"PUT k v  w");
        assert_eq!(sent(&[b"PUT", b"k", b"two", b"words"]), b"PUT k two words");
        assert_eq!(sent(&[b"put", b"k", b""]), b"put k ");
        assert_eq!(
            sent(&[b"PUT", b"k", b"\x00\xff\r\t"]),
            b"PUT k \x00\xff\r\t"
        );
    }

    #[test]
    fn other_commands_are_their_words_joined() {
        assert_eq!(sent(&[b"GET", b"k"]), b"GET k");
        assert_eq!(sent(&[b"AUTH", b"pass word"]), b"AUTH pass word");
        assert_eq!(sent(&[b"FROB", b"x"]), b"FROB x");
        assert_eq!(sent(&[b"PING"]), b"PING");
    }

    #[test]
    fn an_empty_first_argument_is_still_followed_by_the_others() {
        assert_eq!(sent(&[b"", b"k"]), b" k");
    }

    #[test]
    fn quit_exit_and_help_are_local_in_any_case() {
        for quit in [&b"quit"[..], b"QUIT", b"Exit", b"exit"] {
            assert_eq!(interpret(&arguments(&[quit, b"now"])), Ok(Input::Quit));
        }
        assert_eq!(interpret(&arguments(&[b"help"])), Ok(Input::Help(None)));
        assert_eq!(
            interpret(&arguments(&[b"HELP", b"put"])),
            Ok(Input::Help(Some(b"put".to_vec())))
        );
        assert_eq!(interpret(&[]), Ok(Input::Nothing));
    }

    #[test]
    fn a_key_with_a_space_is_refused_and_the_message_says_why_and_what_to_use() {
        for command in [&b"PUT"[..], b"get", b"Del"] {
            let error = interpret(&arguments(&[command, b"a b", b"v"])).unwrap_err();
            assert_eq!(
                error,
                RequestError::KeyWithSpace {
                    key: b"a b".to_vec()
                }
            );
            let message = error.to_string();
            assert!(message.contains("keys cannot contain spaces over the line protocol"));
            assert!(message.contains("redis-cli"), "{message}");
        }
    }

    #[test]
    fn a_newline_anywhere_is_refused() {
        for items in [
            &[&b"PUT"[..], b"k", b"a\nb"][..],
            &[b"GET", b"k\n"],
            &[b"AUTH", b"\n"],
        ] {
            assert_eq!(interpret(&arguments(items)), Err(RequestError::Newline));
        }
        assert!(
            RequestError::Newline
                .to_string()
                .contains("nothing was sent")
        );
    }

    #[test]
    fn a_trailing_carriage_return_is_refused_but_one_inside_is_sent() {
        assert_eq!(
            interpret(&arguments(&[b"PUT", b"k", b"v\r"])),
            Err(RequestError::TrailingCarriageReturn)
        );
        assert_eq!(sent(&[b"PUT", b"k\r", b"v"]), b"PUT k\r v");
    }

    #[test]
    fn a_request_longer_than_a_line_is_refused() {
        let value = vec![b'v'; MAX_LINE_LENGTH];
        assert_eq!(
            interpret(&[b"PUT".to_vec(), b"k".to_vec(), value]),
            Err(RequestError::TooLong {
                length: MAX_LINE_LENGTH + 6
            })
        );
    }
}
