//! Encoding RESP2 and RESP3 replies onto a connection's outgoing bytes.
//!
//! Each function appends one reply, or the header of an aggregate whose
//! elements the caller appends next. RESP3 types that RESP2 lacks (null,
//! map, set, verbatim string) fall back to what Redis sends a RESP2 client.
//! Pure: no I/O, and no allocation but the growth of `out`; numbers are
//! written digit by digit, without `format!`.
//!
//! ```text
//! simple   +OK\r\n              error  -ERR syntax error\r\n
//! integer  :42\r\n              bulk   $3\r\nabc\r\n
//! null     $-1\r\n  | _\r\n      null_array  *-1\r\n | _\r\n
//! array    *2\r\n ...           map    *4\r\n ... | %2\r\n ...
//! set      *2\r\n ... | ~2\r\n ...  verbatim  $3\r\nabc\r\n | =7\r\ntxt:abc\r\n
//! ```

/// Which protocol a connection speaks: RESP2 until `HELLO 3`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Resp2,
    Resp3,
}

/// `+text\r\n`. A `\r` or `\n` in `text` becomes a space, as Redis does,
/// so the reply stays one line.
pub fn simple(out: &mut Vec<u8>, text: &str) {
    out.push(b'+');
    push_line(out, text);
}

/// `-text\r\n`: `text` starts with its code word (`ERR syntax error`,
/// `MOVED 3999 127.0.0.1:6381`). A `\r` or `\n` becomes a space.
pub fn error(out: &mut Vec<u8>, text: &str) {
    debug_assert!(!text.is_empty(), "an error needs at least its code word");
    out.push(b'-');
    push_line(out, text);
}

/// `:value\r\n`.
pub fn integer(out: &mut Vec<u8>, value: i64) {
    out.push(b':');
    if value < 0 {
        out.push(b'-');
    }
    push_decimal(out, value.unsigned_abs());
    out.extend_from_slice(b"\r\n");
}

/// `$len\r\nbytes\r\n`; `bytes` may hold anything.
pub fn bulk(out: &mut Vec<u8>, bytes: &[u8]) {
    push_header(out, b'$', bytes.len());
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"\r\n");
}

/// A missing value (GET of an absent key): `$-1\r\n`, or RESP3's `_\r\n`.
pub fn null(out: &mut Vec<u8>, version: Version) {
    out.extend_from_slice(match version {
        Version::Resp2 => b"$-1\r\n",
        Version::Resp3 => b"_\r\n",
    });
}

/// A missing array (EXEC of an aborted transaction): `*-1\r\n`, or RESP3's
/// `_\r\n`.
pub fn null_array(out: &mut Vec<u8>, version: Version) {
    out.extend_from_slice(match version {
        Version::Resp2 => b"*-1\r\n",
        Version::Resp3 => b"_\r\n",
    });
}

/// The header of an array of `len` elements: `*len\r\n`.
pub fn array(out: &mut Vec<u8>, len: usize) {
    push_header(out, b'*', len);
}

/// The header of a map of `pairs` key-value pairs: `%pairs\r\n`, or for
/// RESP2 a flat array of keys and values, `*(2 * pairs)\r\n`.
pub fn map(out: &mut Vec<u8>, pairs: usize, version: Version) {
    match version {
        Version::Resp2 => push_header(out, b'*', 2 * pairs),
        Version::Resp3 => push_header(out, b'%', pairs),
    }
}

/// The header of a set of `len` elements: `~len\r\n`, or for RESP2 an
/// array, `*len\r\n`.
pub fn set(out: &mut Vec<u8>, len: usize, version: Version) {
    match version {
        Version::Resp2 => push_header(out, b'*', len),
        Version::Resp3 => push_header(out, b'~', len),
    }
}

/// Text meant for humans (INFO, CLIENT LIST): RESP3's verbatim string
/// `=len\r\ntxt:text\r\n` (`len` counts `txt:`), or for RESP2 a bulk string.
pub fn verbatim(out: &mut Vec<u8>, text: &[u8], version: Version) {
    match version {
        Version::Resp2 => bulk(out, text),
        Version::Resp3 => {
            push_header(out, b'=', text.len() + 4);
            out.extend_from_slice(b"txt:");
            out.extend_from_slice(text);
            out.extend_from_slice(b"\r\n");
        }
    }
}

/// `marker` `value` `\r\n`: the start of every length-prefixed reply.
fn push_header(out: &mut Vec<u8>, marker: u8, value: usize) {
    out.push(marker);
    push_decimal(out, value as u64);
    out.extend_from_slice(b"\r\n");
}

/// `text` with `\r` and `\n` replaced by spaces, then `\r\n`.
fn push_line(out: &mut Vec<u8>, text: &str) {
    out.reserve(text.len() + 2);
    out.extend(text.bytes().map(|byte| match byte {
        b'\r' | b'\n' => b' ',
        other => other,
    }));
    out.extend_from_slice(b"\r\n");
}

/// Most decimal digits of a `u64` (18446744073709551615).
const MAX_U64_DIGITS: usize = 20;

/// `value` in decimal, without a sign.
fn push_decimal(out: &mut Vec<u8>, mut value: u64) {
    let mut digits = [0u8; MAX_U64_DIGITS];
    let mut start = MAX_U64_DIGITS;
    loop {
        start -= 1;
        digits[start] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[start..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(encode: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let mut out = b"before ".to_vec();
        encode(&mut out);
        out.split_off(7)
    }

    #[test]
    fn encodes_simple_strings_and_errors_on_one_line() {
        assert_eq!(encoded(|out| simple(out, "OK")), b"+OK\r\n");
        assert_eq!(encoded(|out| simple(out, "a\r\nb\nc")), b"+a  b c\r\n");
        assert_eq!(encoded(|out| simple(out, "")), b"+\r\n");
        assert_eq!(
            encoded(|out| error(out, "ERR syntax error")),
            b"-ERR syntax error\r\n"
        );
        assert_eq!(
            encoded(|out| error(out, "MOVED 3999 127.0.0.1:6381")),
            b"-MOVED 3999 127.0.0.1:6381\r\n"
        );
        assert_eq!(
            encoded(|out| error(out, "ERR bad\r\nthing")),
            b"-ERR bad  thing\r\n"
        );
    }

    #[test]
    fn encodes_integers_of_every_width() {
        assert_eq!(encoded(|out| integer(out, 0)), b":0\r\n");
        assert_eq!(encoded(|out| integer(out, 7)), b":7\r\n");
        assert_eq!(encoded(|out| integer(out, -1)), b":-1\r\n");
        assert_eq!(encoded(|out| integer(out, 1000)), b":1000\r\n");
        assert_eq!(
            encoded(|out| integer(out, i64::MAX)),
            b":9223372036854775807\r\n"
        );
        assert_eq!(
            encoded(|out| integer(out, i64::MIN)),
            b":-9223372036854775808\r\n"
        );
        let mut out = Vec::new();
        push_decimal(&mut out, u64::MAX);
        assert_eq!(out, b"18446744073709551615");
    }

    #[test]
    fn encodes_bulk_strings_binary_safe() {
        assert_eq!(encoded(|out| bulk(out, b"abc")), b"$3\r\nabc\r\n");
        assert_eq!(encoded(|out| bulk(out, b"")), b"$0\r\n\r\n");
        assert_eq!(
            encoded(|out| bulk(out, b"a\r\n\0\xff")),
            b"$5\r\na\r\n\0\xff\r\n"
        );
        let long = vec![b'x'; 1234];
        let encoded_long = encoded(|out| bulk(out, &long));
        assert_eq!(&encoded_long[..7], b"$1234\r\n");
        assert_eq!(encoded_long.len(), 7 + 1234 + 2);
    }

    #[test]
    fn encodes_nulls_per_version() {
        assert_eq!(encoded(|out| null(out, Version::Resp2)), b"$-1\r\n");
        assert_eq!(encoded(|out| null(out, Version::Resp3)), b"_\r\n");
        assert_eq!(encoded(|out| null_array(out, Version::Resp2)), b"*-1\r\n");
        assert_eq!(encoded(|out| null_array(out, Version::Resp3)), b"_\r\n");
    }

    #[test]
    fn encodes_aggregate_headers_per_version() {
        assert_eq!(encoded(|out| array(out, 0)), b"*0\r\n");
        assert_eq!(encoded(|out| array(out, 12)), b"*12\r\n");
        assert_eq!(encoded(|out| map(out, 3, Version::Resp2)), b"*6\r\n");
        assert_eq!(encoded(|out| map(out, 3, Version::Resp3)), b"%3\r\n");
        assert_eq!(encoded(|out| set(out, 2, Version::Resp2)), b"*2\r\n");
        assert_eq!(encoded(|out| set(out, 2, Version::Resp3)), b"~2\r\n");
    }

    #[test]
    fn encodes_verbatim_text_per_version() {
        assert_eq!(
            encoded(|out| verbatim(out, b"a\r\nb", Version::Resp3)),
            b"=8\r\ntxt:a\r\nb\r\n"
        );
        assert_eq!(
            encoded(|out| verbatim(out, b"a\r\nb", Version::Resp2)),
            b"$4\r\na\r\nb\r\n"
        );
    }

    #[test]
    fn a_whole_reply_is_the_concatenation_of_its_parts() {
        // HELLO-like: a map of two pairs, in both versions.
        let hello = |version| {
            encoded(|out| {
                map(out, 2, version);
                bulk(out, b"proto");
                integer(out, 3);
                bulk(out, b"modules");
                array(out, 0);
            })
        };
        assert_eq!(
            hello(Version::Resp3),
            b"%2\r\n$5\r\nproto\r\n:3\r\n$7\r\nmodules\r\n*0\r\n"
        );
        assert_eq!(
            hello(Version::Resp2),
            b"*4\r\n$5\r\nproto\r\n:3\r\n$7\r\nmodules\r\n*0\r\n"
        );
    }
}
