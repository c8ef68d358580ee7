//! The simulated clients' side of RESP: encoding a command as Redis clients
//! do (an array of bulk strings), and reading replies back, as much of them
//! as has arrived.
//!
//! Written apart from the server's code (`kvstore::protocol::resp` frames
//! requests, `resp_reply` encodes replies) so that the simulation checks
//! the wire format rather than trusting it: a reply this parser cannot read
//! fails the run.

/// One RESP2 or RESP3 reply, of the types the key commands answer with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// `+OK`, `+QUEUED`.
    Simple(String),
    /// `-MOVED 866 10.0.0.3:7000`: the whole text after the `-`.
    Error(String),
    /// `:5`.
    Integer(i64),
    /// `$3\r\nabc`.
    Bulk(Vec<u8>),
    /// A missing value: RESP2's `$-1` or RESP3's `_`.
    Null,
    /// `*2` and its elements.
    Array(Vec<Value>),
    /// A missing array: RESP2's `*-1` (`EXEC` of an aborted `WATCH`).
    NullArray,
}

impl Value {
    /// The code word of an error reply (`MOVED`, `ERR`, `OOM`), if it is one.
    pub fn error_code(&self) -> Option<&str> {
        match self {
            Value::Error(text) => text.split(' ').next(),
            _ => None,
        }
    }
}

/// Most elements of an array the simulated commands can be answered with.
const MAX_ARRAY_LEN: usize = 64;
/// Longest bulk string the simulated workload can read back.
const MAX_BULK_BYTES: usize = 1024;

/// `args` as one RESP request: `*<n>\r\n` then `$<len>\r\n<arg>\r\n` each.
pub fn encode_command(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// The first whole reply in `buffer` and the bytes it took, `Ok(None)` if
/// the buffer holds only part of one, or why it is no RESP reply.
pub fn parse_reply(buffer: &[u8]) -> Result<Option<(Value, usize)>, String> {
    let mut cursor = Cursor {
        buffer,
        position: 0,
    };
    match cursor.value() {
        Ok(value) => Ok(Some((value, cursor.position))),
        Err(Stop::Incomplete) => Ok(None),
        Err(Stop::Bad(reason)) => Err(reason),
    }
}

enum Stop {
    Incomplete,
    Bad(String),
}

struct Cursor<'a> {
    buffer: &'a [u8],
    position: usize,
}

impl Cursor<'_> {
    fn value(&mut self) -> Result<Value, Stop> {
        let line = self.line()?;
        let (&marker, rest) = line
            .split_first()
            .ok_or_else(|| Stop::Bad("an empty reply line".to_string()))?;
        let text = String::from_utf8_lossy(rest).into_owned();
        match marker {
            b'+' => Ok(Value::Simple(text)),
            b'-' => Ok(Value::Error(text)),
            b':' => Ok(Value::Integer(number(&text)?)),
            b'_' if rest.is_empty() => Ok(Value::Null),
            b'$' => match number(&text)? {
                -1 => Ok(Value::Null),
                length if (0..=MAX_BULK_BYTES as i64).contains(&length) => {
                    self.bulk(length as usize)
                }
                length => Err(Stop::Bad(format!("bulk length {length}"))),
            },
            b'*' => match number(&text)? {
                -1 => Ok(Value::NullArray),
                length if (0..=MAX_ARRAY_LEN as i64).contains(&length) => (0..length)
                    .map(|_| self.value())
                    .collect::<Result<Vec<_>, _>>()
                    .map(Value::Array),
                length => Err(Stop::Bad(format!("array length {length}"))),
            },
            other => Err(Stop::Bad(format!(
                "a reply starting with {:?}",
                char::from(other)
            ))),
        }
    }

    /// The next line, without its `\r\n`.
    fn line(&mut self) -> Result<&[u8], Stop> {
        let rest = &self.buffer[self.position..];
        let Some(end) = rest.windows(2).position(|pair| pair == b"\r\n") else {
            return Err(Stop::Incomplete);
        };
        self.position += end + 2;
        Ok(&rest[..end])
    }

    fn bulk(&mut self, length: usize) -> Result<Value, Stop> {
        let rest = &self.buffer[self.position..];
        if rest.len() < length + 2 {
            return Err(Stop::Incomplete);
        }
        if &rest[length..length + 2] != b"\r\n" {
            return Err(Stop::Bad("a bulk string without its CRLF".to_string()));
        }
        self.position += length + 2;
        Ok(Value::Bulk(rest[..length].to_vec()))
    }
}

fn number(text: &str) -> Result<i64, Stop> {
    text.parse()
        .map_err(|_| Stop::Bad(format!("{text:?} is no integer")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_arrays_of_bulk_strings() {
        assert_eq!(
            encode_command(&[b"SET", b"k0", b"c1-2"]),
            b"*3\r\n$3\r\nSET\r\n$2\r\nk0\r\n$4\r\nc1-2\r\n"
        );
    }

    #[test]
    fn reads_each_kind_of_reply() {
        let cases: [(&[u8], Value); 8] = [
            (b"+OK\r\n", Value::Simple("OK".into())),
            (
                b"-MOVED 1 10.0.0.3:7000\r\n",
                Value::Error("MOVED 1 10.0.0.3:7000".into()),
            ),
            (b":-12\r\n", Value::Integer(-12)),
            (b"$4\r\nc1-2\r\n", Value::Bulk(b"c1-2".to_vec())),
            (b"$-1\r\n", Value::Null),
            (b"_\r\n", Value::Null),
            (b"*-1\r\n", Value::NullArray),
            (
                b"*3\r\n+OK\r\n:2\r\n$-1\r\n",
                Value::Array(vec![
                    Value::Simple("OK".into()),
                    Value::Integer(2),
                    Value::Null,
                ]),
            ),
        ];
        for (bytes, expected) in cases {
            assert_eq!(parse_reply(bytes), Ok(Some((expected, bytes.len()))));
        }
        assert_eq!(
            Value::Error("MOVED 1 10.0.0.3:7000".into()).error_code(),
            Some("MOVED")
        );
    }

    #[test]
    fn a_partial_reply_waits_for_more() {
        let whole = b"*2\r\n$4\r\nc1-2\r\n:7\r\n+OK\r\n";
        for cut in 0..18 {
            assert_eq!(parse_reply(&whole[..cut]), Ok(None), "cut at {cut}");
        }
        let (value, used) = parse_reply(whole).unwrap().unwrap();
        assert_eq!(used, 18);
        assert_eq!(
            value,
            Value::Array(vec![Value::Bulk(b"c1-2".to_vec()), Value::Integer(7)])
        );
    }

    #[test]
    fn garbage_is_no_reply() {
        for bad in [&b"OK\r\n"[..], b":x\r\n", b"$3\r\nabcd\r\n", b"*99999\r\n"] {
            assert!(parse_reply(bad).is_err(), "{}", bad.escape_ascii());
        }
    }
}
