//! How `kvstore-client` prints a reply line: raw, or formatted for a
//! person, as `redis-cli` chooses (formatted when stdout is a terminal,
//! `--raw` and `--no-raw` to override).
//!
//! - Raw: the reply's bytes as they came, then `\n`, whatever they are.
//! - Formatted: a reply that is UTF-8 text without control characters is
//!   printed as it is; any other (an empty value, binary bytes, a `\r`, an
//!   escape sequence that would drive the terminal) is printed quoted and
//!   escaped as `redis-cli` prints strings (Redis's `sdscatrepr`), e.g.
//!   `"a\x00b\r"` or `""`. That form typed back at the prompt is the same
//!   bytes.
//!
//! Line-protocol replies (`OK`, `NOT_FOUND`, `ERR ...`) are text, so they
//! print the same in both modes.

use std::io::{self, Write};

/// Raw or formatted; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputMode {
    Raw,
    Formatted,
}

/// Writes `reply` and a `\n` as `mode` says.
pub fn write_reply(output: &mut impl Write, reply: &[u8], mode: OutputMode) -> io::Result<()> {
    if mode == OutputMode::Formatted && !is_plain_text(reply) {
        output.write_all(&quoted(reply))?;
    } else {
        output.write_all(reply)?;
    }
    output.write_all(b"\n")
}

/// Non-empty UTF-8 without control characters.
fn is_plain_text(reply: &[u8]) -> bool {
    match std::str::from_utf8(reply) {
        Ok(text) => !text.is_empty() && !text.chars().any(char::is_control),
        Err(_) => false,
    }
}

/// `bytes` in double quotes, escaped as `sdscatrepr` escapes them.
pub fn quoted(bytes: &[u8]) -> Vec<u8> {
    let mut text = Vec::with_capacity(bytes.len() + 2);
    text.push(b'"');
    for &byte in bytes {
        match byte {
            b'\\' | b'"' => text.extend_from_slice(&[b'\\', byte]),
            b'\n' => text.extend_from_slice(b"\\n"),
            b'\r' => text.extend_from_slice(b"\\r"),
            b'\t' => text.extend_from_slice(b"\\t"),
            0x07 => text.extend_from_slice(b"\\a"),
            0x08 => text.extend_from_slice(b"\\b"),
            b' '..=b'~' => text.push(byte),
            _ => text.extend_from_slice(format!("\\x{byte:02x}").as_bytes()),
        }
    }
    text.push(b'"');
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::quoting::split_arguments;

    fn printed(reply: &[u8], mode: OutputMode) -> Vec<u8> {
        let mut output = Vec::new();
        write_reply(&mut output, reply, mode).unwrap();
        output
    }

    #[test]
    fn raw_prints_the_bytes_as_they_came() {
        let reply = b"a\x00\xff\r\x1b[2J";
        let mut expected = reply.to_vec();
        expected.push(b'\n');
        assert_eq!(printed(reply, OutputMode::Raw), expected);
        assert_eq!(printed(b"", OutputMode::Raw), b"\n");
    }

    #[test]
    fn formatted_prints_text_as_it_is() {
        for reply in [
            "OK",
            "NOT_FOUND",
            "ERR unknown command",
            "hello world",
            "clé ü",
        ] {
            let mut expected = reply.as_bytes().to_vec();
            expected.push(b'\n');
            assert_eq!(printed(reply.as_bytes(), OutputMode::Formatted), expected);
        }
    }

    #[test]
    fn formatted_quotes_and_escapes_anything_else_as_redis_cli() {
        assert_eq!(printed(b"", OutputMode::Formatted), b"\"\"\n");
        assert_eq!(
            printed(b"a\x00\xff\r\n\t\x07\x08\\\"\x1b", OutputMode::Formatted),
            b"\"a\\x00\\xff\\r\\n\\t\\a\\b\\\\\\\"\\x1b\"\n"
        );
        assert_eq!(
            printed("é\x01".as_bytes(), OutputMode::Formatted),
            b"\"\\xc3\\xa9\\x01\"\n"
        );
    }

    #[test]
    fn the_quoted_form_typed_back_is_the_same_bytes() {
        let every_byte: Vec<u8> = (0..=255).collect();
        for bytes in [&every_byte[..], b"", b"a b", b"'\"\\"] {
            assert_eq!(split_arguments(&quoted(bytes)), Ok(vec![bytes.to_vec()]));
        }
    }
}
