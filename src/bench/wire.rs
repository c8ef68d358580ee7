//! The bytes on the wire, for kvstore's line protocol and for RESP2 (Redis).
//!
//! Requests are encoded from pieces built once per run: everything before
//! the key and everything after it (the value included) are fixed, so one
//! request is three `extend_from_slice` calls. Replies are framed with
//! memchr; a RESP bulk string is framed by its length, so it may hold `\r\n`.
//!
//! ```text
//! line  PUT key:00000001 xxxx\n              -> OK\n | ERR ...\n | NOT_LEADER ...\n
//!       GET key:00000001\n                   -> xxxx\n | NOT_FOUND\n
//! resp  *3\r\n$3\r\nSET\r\n$12\r\nkey:00000001\r\n$4\r\nxxxx\r\n -> +OK\r\n | -ERR ...\r\n
//!       *2\r\n$3\r\nGET\r\n$12\r\nkey:00000001\r\n                -> $4\r\nxxxx\r\n | $-1\r\n
//! ```
//!
//! With a password, each connection first sends [`encode_auth`]'s request,
//! once, before any load:
//!
//! ```text
//! line  AUTH <password>\n                               -> OK\n | ERR ...\n
//! resp  *2\r\n$4\r\nAUTH\r\n$<length>\r\n<password>\r\n -> +OK\r\n | -ERR ...\r\n
//! ```

use std::fmt;

use clap::ValueEnum;

use super::workload::{KEY_LENGTH, Key, Operation};

/// The byte every value is made of.
pub const VALUE_BYTE: u8 = b'x';
/// The longest reply accepted; a longer one means the other end is not the
/// server this tool was pointed at. Values are bounded well below it.
pub const MAX_REPLY_BYTES: usize = 4 * 1024 * 1024;

/// The request/reply format spoken on every connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Protocol {
    /// kvstore's line protocol.
    Line,
    /// RESP2 arrays, as Redis speaks (SET and GET).
    Resp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            Protocol::Line => "line",
            Protocol::Resp => "resp",
        })
    }
}

/// Encodes requests for one protocol and one value size.
#[derive(Debug, Clone)]
pub struct RequestEncoder {
    put_before_key: Vec<u8>,
    put_after_key: Vec<u8>,
    get_before_key: Vec<u8>,
    get_after_key: Vec<u8>,
}

impl RequestEncoder {
    pub fn new(protocol: Protocol, value_size: usize) -> RequestEncoder {
        let value = vec![VALUE_BYTE; value_size];
        match protocol {
            Protocol::Line => RequestEncoder {
                put_before_key: b"PUT ".to_vec(),
                put_after_key: [&b" "[..], &value, b"\n"].concat(),
                get_before_key: b"GET ".to_vec(),
                get_after_key: b"\n".to_vec(),
            },
            Protocol::Resp => {
                let key_header = format!("${KEY_LENGTH}\r\n");
                let value_header = format!("\r\n${value_size}\r\n");
                RequestEncoder {
                    put_before_key: [b"*3\r\n$3\r\nSET\r\n", key_header.as_bytes()].concat(),
                    put_after_key: [value_header.as_bytes(), &value, b"\r\n"].concat(),
                    get_before_key: [b"*2\r\n$3\r\nGET\r\n", key_header.as_bytes()].concat(),
                    get_after_key: b"\r\n".to_vec(),
                }
            }
        }
    }

    /// Appends one request to `out`.
    pub fn encode(&self, operation: Operation, key: &Key, out: &mut Vec<u8>) {
        let (before, after) = match operation {
            Operation::Put => (&self.put_before_key, &self.put_after_key),
            Operation::Get => (&self.get_before_key, &self.get_after_key),
        };
        out.extend_from_slice(before);
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(after);
    }

    /// The encoded length of a request, for sizing buffers.
    pub fn longest_request(&self) -> usize {
        let put = self.put_before_key.len() + self.put_after_key.len();
        let get = self.get_before_key.len() + self.get_after_key.len();
        put.max(get) + KEY_LENGTH
    }
}

/// The request that sends `password` (see the module documentation).
pub fn encode_auth(protocol: Protocol, password: &[u8]) -> Vec<u8> {
    match protocol {
        Protocol::Line => [&b"AUTH "[..], password, b"\n"].concat(),
        Protocol::Resp => {
            let header = format!("*2\r\n$4\r\nAUTH\r\n${}\r\n", password.len());
            [header.as_bytes(), password, b"\r\n"].concat()
        }
    }
}

/// What one reply says, in either protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply<'buffer> {
    /// `OK` / `+OK`.
    Ok,
    /// A value (a line other than the known replies, or a RESP bulk string).
    Value,
    /// `NOT_FOUND` / `$-1`.
    Missing,
    /// `NOT_LEADER ...`: this node does not take the request.
    NotLeader(&'buffer [u8]),
    /// `ERR ...` / `-...`.
    Error(&'buffer [u8]),
    /// Well-framed but not an answer to SET or GET (e.g. a RESP integer).
    Other(&'buffer [u8]),
}

/// The result of looking for one reply at the front of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed<'buffer> {
    Complete {
        reply: Reply<'buffer>,
        consumed: usize,
    },
    Incomplete,
}

/// Why the bytes received are not replies of the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyError {
    TooLong,
    Malformed(&'static str),
}

impl fmt::Display for ReplyError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplyError::TooLong => {
                write!(formatter, "a reply longer than {MAX_REPLY_BYTES} bytes")
            }
            ReplyError::Malformed(reason) => write!(formatter, "malformed reply: {reason}"),
        }
    }
}

/// Parses the first reply in `buffer`, if it is all there.
pub fn parse_reply(protocol: Protocol, buffer: &[u8]) -> Result<Parsed<'_>, ReplyError> {
    match protocol {
        Protocol::Line => parse_line_reply(buffer),
        Protocol::Resp => parse_resp_reply(buffer),
    }
}

/// One reply line, `\n` or `\r\n` terminated.
fn parse_line_reply(buffer: &[u8]) -> Result<Parsed<'_>, ReplyError> {
    let Some(newline) = memchr::memchr(b'\n', buffer) else {
        return incomplete_within_limit(buffer);
    };
    let line = &buffer[..newline];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    Ok(Parsed::Complete {
        reply: classify_line(line),
        consumed: newline + 1,
    })
}

fn classify_line(line: &[u8]) -> Reply<'_> {
    if line == b"OK" {
        Reply::Ok
    } else if line == b"NOT_FOUND" {
        Reply::Missing
    } else if line.starts_with(b"NOT_LEADER") {
        Reply::NotLeader(line)
    } else if line == b"ERR" || line.starts_with(b"ERR ") {
        Reply::Error(line)
    } else {
        Reply::Value
    }
}

fn incomplete_within_limit(buffer: &[u8]) -> Result<Parsed<'_>, ReplyError> {
    if buffer.len() > MAX_REPLY_BYTES {
        Err(ReplyError::TooLong)
    } else {
        Ok(Parsed::Incomplete)
    }
}

/// One RESP2 reply: a simple string, an error, an integer or a bulk string.
fn parse_resp_reply(buffer: &[u8]) -> Result<Parsed<'_>, ReplyError> {
    let Some(newline) = memchr::memchr(b'\n', buffer) else {
        return incomplete_within_limit(buffer);
    };
    let Some(header) = buffer[..newline].strip_suffix(b"\r") else {
        return Err(ReplyError::Malformed("a RESP line must end in \\r\\n"));
    };
    let Some((&kind, content)) = header.split_first() else {
        return Err(ReplyError::Malformed("an empty RESP line"));
    };
    let line_end = newline + 1;
    let reply = match kind {
        b'+' if content == b"OK" => Reply::Ok,
        b'+' | b':' => Reply::Other(header),
        b'-' => Reply::Error(header),
        b'$' => return parse_bulk(buffer, content, line_end),
        b'*' => return Err(ReplyError::Malformed("an array reply to SET or GET")),
        _ => return Err(ReplyError::Malformed("an unknown RESP type byte")),
    };
    Ok(Parsed::Complete {
        reply,
        consumed: line_end,
    })
}

/// A bulk string whose `$<length>` header ends at `header_end`: the payload
/// is taken by length, not by searching, so it may contain `\r\n`.
fn parse_bulk<'buffer>(
    buffer: &'buffer [u8],
    length: &[u8],
    header_end: usize,
) -> Result<Parsed<'buffer>, ReplyError> {
    if length == b"-1" {
        return Ok(Parsed::Complete {
            reply: Reply::Missing,
            consumed: header_end,
        });
    }
    let length = parse_length(length)?;
    if length > MAX_REPLY_BYTES {
        return Err(ReplyError::TooLong);
    }
    let end = header_end + length + 2;
    if buffer.len() < end {
        return Ok(Parsed::Incomplete);
    }
    if &buffer[end - 2..end] != b"\r\n" {
        return Err(ReplyError::Malformed(
            "a bulk string not followed by \\r\\n",
        ));
    }
    Ok(Parsed::Complete {
        reply: Reply::Value,
        consumed: end,
    })
}

/// Decimal digits only; at most enough of them to exceed the reply limit.
fn parse_length(digits: &[u8]) -> Result<usize, ReplyError> {
    const MAX_LENGTH_DIGITS: usize = 10;
    let bad = ReplyError::Malformed("a bulk length that is not a number");
    if digits.is_empty() || digits.len() > MAX_LENGTH_DIGITS {
        return Err(bad);
    }
    digits.iter().try_fold(0_usize, |length, &digit| {
        if digit.is_ascii_digit() {
            Ok(length * 10 + usize::from(digit - b'0'))
        } else {
            Err(bad)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(protocol: Protocol, value_size: usize, operation: Operation, key: u64) -> Vec<u8> {
        let encoder = RequestEncoder::new(protocol, value_size);
        let mut out = Vec::new();
        encoder.encode(operation, &Key::new(key), &mut out);
        assert!(out.len() <= encoder.longest_request());
        out
    }

    fn complete(reply: Reply<'_>, consumed: usize) -> Result<Parsed<'_>, ReplyError> {
        Ok(Parsed::Complete { reply, consumed })
    }

    #[test]
    fn line_requests_are_byte_exact() {
        assert_eq!(
            encoded(Protocol::Line, 3, Operation::Put, 42),
            b"PUT key:00000042 xxx\n"
        );
        assert_eq!(
            encoded(Protocol::Line, 3, Operation::Get, 42),
            b"GET key:00000042\n"
        );
        assert_eq!(
            encoded(Protocol::Line, 0, Operation::Put, 7),
            b"PUT key:00000007 \n"
        );
    }

    #[test]
    fn resp_requests_are_byte_exact() {
        assert_eq!(
            encoded(Protocol::Resp, 3, Operation::Put, 42),
            b"*3\r\n$3\r\nSET\r\n$12\r\nkey:00000042\r\n$3\r\nxxx\r\n"
        );
        assert_eq!(
            encoded(Protocol::Resp, 3, Operation::Get, 42),
            b"*2\r\n$3\r\nGET\r\n$12\r\nkey:00000042\r\n"
        );
        assert_eq!(
            encoded(Protocol::Resp, 0, Operation::Put, 1),
            b"*3\r\n$3\r\nSET\r\n$12\r\nkey:00000001\r\n$0\r\n\r\n"
        );
    }

    #[test]
    fn auth_requests_are_byte_exact() {
        assert_eq!(
            encode_auth(Protocol::Line, b"pass word"),
            b"AUTH pass word\n"
        );
        assert_eq!(
            encode_auth(Protocol::Resp, b"pass\r\nword"),
            b"*2\r\n$4\r\nAUTH\r\n$10\r\npass\r\nword\r\n"
        );
    }

    #[test]
    fn encoding_appends_requests_back_to_back() {
        let encoder = RequestEncoder::new(Protocol::Line, 1);
        let mut out = Vec::new();
        encoder.encode(Operation::Get, &Key::new(1), &mut out);
        encoder.encode(Operation::Put, &Key::new(2), &mut out);
        assert_eq!(out, b"GET key:00000001\nPUT key:00000002 x\n");
    }

    #[test]
    fn line_replies_are_one_line_each() {
        let line = |bytes| parse_reply(Protocol::Line, bytes);
        assert_eq!(line(b"OK\nxx"), complete(Reply::Ok, 3));
        assert_eq!(line(b"OK\r\n"), complete(Reply::Ok, 4));
        assert_eq!(line(b"xxxx\n"), complete(Reply::Value, 5));
        assert_eq!(line(b"\n"), complete(Reply::Value, 1));
        assert_eq!(line(b"NOT_FOUND\n"), complete(Reply::Missing, 10));
        assert_eq!(
            line(b"ERR unknown command\n"),
            complete(Reply::Error(b"ERR unknown command"), 20)
        );
        assert_eq!(
            line(b"NOT_LEADER 3 127.0.0.1:7003\n"),
            complete(Reply::NotLeader(b"NOT_LEADER 3 127.0.0.1:7003"), 28)
        );
        assert_eq!(
            line(b"NOT_LEADER -1\n"),
            complete(Reply::NotLeader(b"NOT_LEADER -1"), 14)
        );
        assert_eq!(line(b"OK"), Ok(Parsed::Incomplete));
        assert_eq!(line(b""), Ok(Parsed::Incomplete));
    }

    #[test]
    fn a_line_reply_without_end_past_the_limit_is_too_long() {
        let long = vec![b'x'; MAX_REPLY_BYTES + 1];
        assert_eq!(parse_reply(Protocol::Line, &long), Err(ReplyError::TooLong));
    }

    #[test]
    fn resp_simple_replies() {
        let resp = |bytes| parse_reply(Protocol::Resp, bytes);
        assert_eq!(resp(b"+OK\r\n"), complete(Reply::Ok, 5));
        assert_eq!(resp(b"$-1\r\n+OK\r\n"), complete(Reply::Missing, 5));
        assert_eq!(
            resp(b"-ERR wrong type\r\n"),
            complete(Reply::Error(b"-ERR wrong type"), 17)
        );
        assert_eq!(resp(b":1\r\n"), complete(Reply::Other(b":1"), 4));
        assert_eq!(resp(b"+PONG\r\n"), complete(Reply::Other(b"+PONG"), 7));
        assert_eq!(resp(b"+OK\r"), Ok(Parsed::Incomplete));
    }

    #[test]
    fn resp_bulk_strings_are_framed_by_length() {
        let resp = |bytes| parse_reply(Protocol::Resp, bytes);
        assert_eq!(resp(b"$3\r\nxyz\r\n"), complete(Reply::Value, 9));
        assert_eq!(resp(b"$0\r\n\r\n"), complete(Reply::Value, 6));
        assert_eq!(resp(b"$4\r\na\r\nb\r\n+OK\r\n"), complete(Reply::Value, 10));
    }

    #[test]
    fn a_bulk_string_with_crlf_inside_is_incomplete_at_every_split() {
        let whole = b"$6\r\n\r\nab\r\n\r\n";
        for split in 0..whole.len() {
            assert_eq!(
                parse_reply(Protocol::Resp, &whole[..split]),
                Ok(Parsed::Incomplete),
                "split at {split}"
            );
        }
        assert_eq!(
            parse_reply(Protocol::Resp, whole),
            complete(Reply::Value, whole.len())
        );
    }

    #[test]
    fn malformed_resp_is_refused() {
        let resp = |bytes| parse_reply(Protocol::Resp, bytes);
        for bytes in [
            &b"OK\r\n"[..],
            b"+OK\n",
            b"\r\n",
            b"*1\r\n$1\r\nx\r\n",
            b"$x\r\n",
            b"$-2\r\n",
            b"$\r\n",
            b"$3\r\nxyzab",
        ] {
            assert!(
                matches!(resp(bytes), Err(ReplyError::Malformed(_))),
                "{}",
                bytes.escape_ascii()
            );
        }
        assert_eq!(
            resp(b"$99999999999\r\n"),
            Err(ReplyError::Malformed("a bulk length that is not a number"))
        );
        let too_long = format!("${}\r\n", MAX_REPLY_BYTES + 1);
        assert_eq!(resp(too_long.as_bytes()), Err(ReplyError::TooLong));
    }
}
