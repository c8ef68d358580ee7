//! Splitting a typed line into arguments the way `redis-cli` does
//! (Redis's `sdssplitargs`), so that `"a b"`, `'a b'`, `\n` and `\x00`
//! mean here what they mean there.
//!
//! - Arguments are separated by blanks (space, tab, newline, carriage
//!   return, vertical tab, form feed); blanks before an argument are skipped.
//! - Inside double quotes: `\xHH` (two hex digits) is that byte; `\n`,
//!   `\r`, `\t`, `\b`, `\a` are newline, carriage return, tab, backspace
//!   and bell; a backslash before any other character is that character
//!   (`\"`, `\\`, `\'`, and `\x` not followed by two hex digits).
//! - Inside single quotes only `\'` is an escape; everything else is literal.
//! - Outside quotes a backslash is literal, and a quote starts a quoted part
//!   of the same argument (`ab"c d"` is `abc d`).
//! - A closing quote must be followed by a blank or the end of the line,
//!   and every opened quote must be closed: otherwise the whole line is an
//!   error ([`QuotingError`]), as `redis-cli`'s "Invalid argument(s)".
//! - The line ends at its first NUL byte, as a C string does.
//!
//! This module only splits; what may be sent over the line protocol is
//! decided by [`super::request`].

use std::fmt;

/// Why a line could not be split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotingError {
    /// A quote was opened and never closed.
    Unterminated,
    /// A closing quote is followed by something other than a blank.
    TextAfterClosingQuote,
}

impl fmt::Display for QuotingError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QuotingError::Unterminated => {
                write!(formatter, "Invalid argument(s): a quote is not closed")
            }
            QuotingError::TextAfterClosingQuote => write!(
                formatter,
                "Invalid argument(s): a closing quote must be followed by a space or the end of the line"
            ),
        }
    }
}

/// Splits `line` into arguments, byte for byte as `sdssplitargs`.
pub fn split_arguments(line: &[u8]) -> Result<Vec<Vec<u8>>, QuotingError> {
    let line = match memchr::memchr(0, line) {
        Some(nul) => &line[..nul],
        None => line,
    };
    let mut arguments = Vec::new();
    let mut position = 0;
    loop {
        while position < line.len() && is_blank(line[position]) {
            position += 1;
        }
        if position == line.len() {
            return Ok(arguments);
        }
        let (argument, end) = next_argument(line, position)?;
        arguments.push(argument);
        position = end;
    }
}

/// Which quotes the scanner is inside.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Quotes {
    None,
    Double,
    Single,
}

/// One argument starting at `start` (not a blank), and where scanning goes
/// on: past the blank or closing quote that ended it.
fn next_argument(line: &[u8], start: usize) -> Result<(Vec<u8>, usize), QuotingError> {
    let mut argument = Vec::new();
    let mut quotes = Quotes::None;
    let mut position = start;
    loop {
        let byte = line.get(position).copied();
        let step = match quotes {
            Quotes::Double => double_quoted(line, position, &mut argument)?,
            Quotes::Single => single_quoted(line, position, &mut argument)?,
            Quotes::None => match byte {
                None | Some(b' ' | b'\n' | b'\r' | b'\t') => Step::Done(1),
                Some(b'"') => {
                    quotes = Quotes::Double;
                    Step::Next(1)
                }
                Some(b'\'') => {
                    quotes = Quotes::Single;
                    Step::Next(1)
                }
                Some(other) => {
                    argument.push(other);
                    Step::Next(1)
                }
            },
        };
        match step {
            Step::Next(length) => position += length,
            Step::Done(length) => return Ok((argument, (position + length).min(line.len()))),
        }
    }
}

/// How far a scanning step moved, and whether it ended the argument.
enum Step {
    Next(usize),
    Done(usize),
}

fn double_quoted(
    line: &[u8],
    position: usize,
    argument: &mut Vec<u8>,
) -> Result<Step, QuotingError> {
    let byte = line.get(position).copied();
    let next = line.get(position + 1).copied();
    match (byte, next) {
        (None, _) => Err(QuotingError::Unterminated),
        (Some(b'\\'), Some(b'x')) if hex_pair(line, position + 2).is_some() => {
            argument.extend(hex_pair(line, position + 2));
            Ok(Step::Next(4))
        }
        (Some(b'\\'), Some(escaped)) => {
            argument.push(unescape(escaped));
            Ok(Step::Next(2))
        }
        (Some(b'"'), _) => closing_quote(next),
        (Some(other), _) => {
            argument.push(other);
            Ok(Step::Next(1))
        }
    }
}

fn single_quoted(
    line: &[u8],
    position: usize,
    argument: &mut Vec<u8>,
) -> Result<Step, QuotingError> {
    let byte = line.get(position).copied();
    let next = line.get(position + 1).copied();
    match (byte, next) {
        (None, _) => Err(QuotingError::Unterminated),
        (Some(b'\\'), Some(b'\'')) => {
            argument.push(b'\'');
            Ok(Step::Next(2))
        }
        (Some(b'\''), _) => closing_quote(next),
        (Some(other), _) => {
            argument.push(other);
            Ok(Step::Next(1))
        }
    }
}

/// A closing quote ends the argument if a blank or the end follows; the
/// blank is then skipped with it.
fn closing_quote(next: Option<u8>) -> Result<Step, QuotingError> {
    match next {
        None => Ok(Step::Done(1)),
        Some(byte) if is_blank(byte) => Ok(Step::Done(2)),
        Some(_) => Err(QuotingError::TextAfterClosingQuote),
    }
}

/// The byte after a backslash inside double quotes (not `\xHH`).
fn unescape(escaped: u8) -> u8 {
    match escaped {
        b'n' => b'\n',
        b'r' => b'\r',
        b't' => b'\t',
        b'b' => 0x08,
        b'a' => 0x07,
        other => other,
    }
}

/// The byte written as two hex digits at `line[at..at + 2]`, if they are.
fn hex_pair(line: &[u8], at: usize) -> Option<u8> {
    let high = hex_digit(*line.get(at)?)?;
    let low = hex_digit(*line.get(at + 1)?)?;
    Some(high * 16 + low)
}

fn hex_digit(byte: u8) -> Option<u8> {
    (byte as char).to_digit(16).map(|digit| digit as u8)
}

/// C's `isspace` in the C locale.
fn is_blank(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(line: &[u8]) -> Vec<Vec<u8>> {
        split_arguments(line).unwrap_or_else(|error| panic!("{}: {error}", line.escape_ascii()))
    }

    fn words(items: &[&[u8]]) -> Vec<Vec<u8>> {
        items.iter().map(|item| item.to_vec()).collect()
    }

    #[test]
    fn blanks_separate_arguments_and_are_skipped_around_them() {
        assert_eq!(split(b"PUT k v"), words(&[b"PUT", b"k", b"v"]));
        assert_eq!(split(b"  GET \t k  "), words(&[b"GET", b"k"]));
        assert_eq!(split(b"\x0b\x0cPING"), words(&[b"PING"]));
        assert!(split(b"").is_empty());
        assert!(split(b"   \t ").is_empty());
    }

    #[test]
    fn a_vertical_tab_or_form_feed_inside_an_argument_is_kept() {
        // Skipped before an argument (isspace), but not one of the bytes
        // that end an unquoted argument.
        assert_eq!(split(b"a\x0bb c"), words(&[b"a\x0bb", b"c"]));
        assert_eq!(split(b"a\x0cb"), words(&[b"a\x0cb"]));
    }

    #[test]
    fn quotes_keep_spaces_in_one_argument() {
        assert_eq!(
            split(b"PUT \"key with space\" \"v w\""),
            words(&[b"PUT", b"key with space", b"v w"])
        );
        assert_eq!(split(b"PUT k 'v  w'"), words(&[b"PUT", b"k", b"v  w"]));
        assert_eq!(split(b"PUT k \"\""), words(&[b"PUT", b"k", b""]));
        assert_eq!(split(b"''"), words(&[b""]));
    }

    #[test]
    fn every_double_quoted_escape_is_one_byte() {
        assert_eq!(
            split(br#""\n\r\t\b\a\\\"\'""#),
            words(&[b"\n\r\t\x08\x07\\\"'"])
        );
        assert_eq!(
            split(br#""\x00\xff\x4A\x4a""#),
            words(&[b"\x00\xff\x4a\x4a"])
        );
        assert_eq!(split(br#""\z\ \?""#), words(&[b"z ?"]));
    }

    #[test]
    fn a_hex_escape_needs_two_hex_digits() {
        // `\x` without two hex digits is the letter x, as for any other
        // escaped character.
        assert_eq!(split(br#""\xzz""#), words(&[b"xzz"]));
        assert_eq!(split(br#""\x4""#), words(&[b"x4"]));
        assert_eq!(split(br#""\x4g""#), words(&[b"x4g"]));
        assert_eq!(split(br#""\x414""#), words(&[b"A4"]));
    }

    #[test]
    fn single_quotes_know_only_the_escaped_single_quote() {
        assert_eq!(split(br"'b\'c\n\x41'"), words(&[br"b'c\n\x41"]));
        assert_eq!(split(br"'a\\b'"), words(&[br"a\\b"]));
        assert_eq!(split(br#"'say "hi"'"#), words(&[br#"say "hi""#]));
    }

    #[test]
    fn outside_quotes_backslashes_are_literal() {
        assert_eq!(
            split(br"a\nb \x41 \q"),
            words(&[br"a\nb", br"\x41", br"\q"])
        );
    }

    #[test]
    fn a_quote_inside_an_argument_opens_a_quoted_part_of_it() {
        assert_eq!(split(b"SET a\"b c\""), words(&[b"SET", b"ab c"]));
        assert_eq!(split(b"x'y z' w"), words(&[b"xy z", b"w"]));
    }

    #[test]
    fn a_closing_quote_followed_by_a_blank_ends_the_argument() {
        assert_eq!(split(b"\"a\"\tb"), words(&[b"a", b"b"]));
        assert_eq!(split(b"\"a\"\x0bb"), words(&[b"a", b"b"]));
    }

    #[test]
    fn unbalanced_quotes_are_invalid() {
        for line in [
            &b"SET 'x"[..],
            b"GET \"a",
            b"\"a\\\"",
            b"'it\\'",
            b"\"",
            b"\"abc\\",
        ] {
            assert_eq!(
                split_arguments(line),
                Err(QuotingError::Unterminated),
                "{}",
                line.escape_ascii()
            );
        }
    }

    #[test]
    fn text_right_after_a_closing_quote_is_invalid() {
        for line in [&b"SET \"ab\"c"[..], b"'a'b", b"\"a\"\"b\"", b"\"a\"'"] {
            assert_eq!(
                split_arguments(line),
                Err(QuotingError::TextAfterClosingQuote),
                "{}",
                line.escape_ascii()
            );
        }
    }

    #[test]
    fn the_line_ends_at_a_nul_byte() {
        assert_eq!(split(b"PUT k v\x00 w"), words(&[b"PUT", b"k", b"v"]));
        assert_eq!(
            split_arguments(b"PUT \"k\x00\""),
            Err(QuotingError::Unterminated)
        );
    }

    #[test]
    fn bytes_above_ascii_are_ordinary() {
        assert_eq!(
            split("clé \"é ü\"".as_bytes()),
            words(&["clé".as_bytes(), "é ü".as_bytes()])
        );
        assert_eq!(split(b"\xff\xfe"), words(&[b"\xff\xfe"]));
    }

    /// What `redis-cli` 7 sent for these lines (captured from its RESP
    /// requests to a fake server), argument for argument.
    #[test]
    fn matches_lines_captured_from_redis_cli() {
        assert_eq!(
            split(br#"SET "a\x41\z\"" 'b\'c\n'"#),
            words(&[b"SET", b"aAz\"", br"b'c\n"])
        );
        assert_eq!(split(br"SET x\ty\vz"), words(&[b"SET", br"x\ty\vz"]));
        assert_eq!(
            split(br#"SET "\n\r\t\b\a\\\x4a\xzz\x4""#),
            words(&[b"SET", b"\n\r\t\x08\x07\\Jxzzx4"])
        );
    }
}
