//! Framing of RESP requests, in place.
//!
//! A request is an array of bulk strings, the only form Redis clients send
//! once past the handshake:
//!
//! ```text
//! *<count>\r\n  then <count> times  $<length>\r\n<length bytes>\r\n
//! ```
//!
//! [`next_command`] finds one whole request at the front of a buffer and
//! records where each argument lies in it; the arguments are never copied.
//! It is pure: no I/O, and no allocation except growing the caller's
//! reusable `Vec` of ranges. Every bound is a named constant or the caller's
//! `max_request_bytes`, and a request that will exceed it is refused as soon
//! as its headers say so, before its bytes arrive.
//!
//! Error texts are Redis's (`networking.c`, `processMultibulkBuffer`) where
//! Redis has one; each is what follows `-ERR ` on the wire, after which the
//! connection is closed.

use std::fmt;
use std::ops::Range;

/// Most arguments in one request (Redis's multibulk limit).
pub const MAX_ARGS: usize = 1024 * 1024;

/// Longest `*<count>` or `$<length>` line, marker to `\r` (Redis's
/// `PROTO_INLINE_MAX_SIZE`).
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// Fewest bytes an argument takes on the wire: `$0\r\n\r\n`.
const MIN_ARG_BYTES: usize = 6;

/// Longest decimal integer Redis's `string2ll` accepts (`LONG_STR_SIZE - 1`).
const MAX_INTEGER_CHARS: usize = 20;

/// The result of looking for one whole request at the front of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framed {
    /// A whole request of `consumed` bytes; its arguments' ranges are in
    /// the caller's `args`. `*0` and `*-1` give no arguments: skip them.
    Command { consumed: usize },
    /// A prefix of a request that may still become valid: read more.
    Incomplete,
    /// Not a request, or one over a limit: reply, then close.
    Error(RespError),
}

/// Why the bytes at the front of a buffer are not an acceptable request.
/// `Display` gives the text after `-ERR ` on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RespError {
    /// The request does not start with `*` (the byte it starts with).
    ExpectedArray { got: u8 },
    /// `*<count>`: not a decimal integer, over [`MAX_ARGS`], or negative
    /// other than -1.
    InvalidMultibulkLength,
    /// An argument does not start with `$` (the byte it starts with).
    ExpectedBulk { got: u8 },
    /// `$<length>`: not a decimal integer, negative, or over the
    /// request limit.
    InvalidBulkLength,
    /// No `\r\n` within [`MAX_HEADER_BYTES`] of a `*`.
    MultibulkHeaderTooBig,
    /// No `\r\n` within [`MAX_HEADER_BYTES`] of a `$`.
    BulkHeaderTooBig,
    /// The request, by its declared or buffered length, is over the limit.
    RequestTooLarge { max_request_bytes: usize },
    /// An argument's bytes are not followed by `\r\n`.
    BulkNotTerminated,
}

impl fmt::Display for RespError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("Protocol error: ")?;
        match self {
            RespError::ExpectedArray { got } => {
                write!(formatter, "expected '*', got '{}'", got.escape_ascii())
            }
            RespError::InvalidMultibulkLength => formatter.write_str("invalid multibulk length"),
            RespError::ExpectedBulk { got } => {
                write!(formatter, "expected '$', got '{}'", got.escape_ascii())
            }
            RespError::InvalidBulkLength => formatter.write_str("invalid bulk length"),
            RespError::MultibulkHeaderTooBig => formatter.write_str("too big mbulk count string"),
            RespError::BulkHeaderTooBig => formatter.write_str("too big bulk count string"),
            RespError::RequestTooLarge { max_request_bytes } => {
                write!(
                    formatter,
                    "request too large (limit {max_request_bytes} bytes)"
                )
            }
            RespError::BulkNotTerminated => {
                formatter.write_str("bulk string not terminated by CRLF")
            }
        }
    }
}

/// Frames one request at the start of `buffer`. Clears `args`, and on
/// [`Framed::Command`] fills it with each argument's range in `buffer`.
///
/// A request longer than `max_request_bytes` is refused as soon as its
/// headers (or the bytes buffered so far) prove it, so a client cannot make
/// the caller buffer more than `max_request_bytes` for one request. Calling
/// again with more bytes re-reads only the headers: argument bytes are
/// skipped by their declared length, never scanned. `args` grows with the
/// headers actually received, never with a count merely declared.
pub fn next_command(
    buffer: &[u8],
    max_request_bytes: usize,
    args: &mut Vec<Range<usize>>,
) -> Framed {
    args.clear();
    // An empty line between requests is skipped, as Redis skips an empty
    // inline command: `redis-cli --pipe` sends one after its data.
    match buffer {
        [b'\n', ..] => return Framed::Command { consumed: 1 },
        [b'\r', b'\n', ..] => return Framed::Command { consumed: 2 },
        [b'\r'] => return Framed::Incomplete,
        _ => {}
    }
    let mut cursor = Cursor {
        buffer,
        position: 0,
        max_request_bytes,
    };
    match cursor.request(args) {
        Ok(()) => {
            let consumed = cursor.position;
            debug_assert!(consumed <= buffer.len() && consumed <= max_request_bytes);
            debug_assert!(args.iter().all(|range| range.end + 2 <= consumed));
            Framed::Command { consumed }
        }
        Err(stop) => {
            args.clear();
            match stop {
                Stop::Incomplete => Framed::Incomplete,
                Stop::Error(error) => Framed::Error(error),
            }
        }
    }
}

/// The second argument (the key, for the commands that have one) of each
/// whole request at the front of `buffer`, found cheaply so the store can
/// fetch them into the cache before the requests run: at most `keys.len()`
/// requests are looked at, only in the common form (short headers, at most
/// [`MAX_HINTED_ARGS`] arguments), and argument bytes are skipped by their
/// length, never scanned. Returns how many keys were written and how many
/// requests were looked at. A hint only: [`next_command`] frames and
/// checks each request.
pub fn key_hints<'buf>(buffer: &'buf [u8], keys: &mut [&'buf [u8]]) -> (usize, usize) {
    let mut cursor = Cursor {
        buffer,
        position: 0,
        max_request_bytes: usize::MAX,
    };
    let (mut found, mut requests) = (0, 0);
    while requests < keys.len() {
        let Some(key) = cursor.hinted_key() else {
            break;
        };
        requests += 1;
        if let Some(key) = key {
            keys[found] = key;
            found += 1;
        }
    }
    (found, requests)
}

/// Requests with more arguments than this are not looked into by
/// [`key_hints`].
pub const MAX_HINTED_ARGS: i64 = 16;

/// The bytes of one argument that [`next_command`] found in `buffer`.
pub fn arg<'a>(buffer: &'a [u8], range: &Range<usize>) -> &'a [u8] {
    &buffer[range.clone()]
}

/// A framed request's arguments, borrowed from the buffer it was framed in.
/// Argument 0 is the command name.
#[derive(Debug, Clone, Copy)]
pub struct Args<'a> {
    buffer: &'a [u8],
    ranges: &'a [Range<usize>],
}

impl<'a> Args<'a> {
    /// The arguments `ranges` (from [`next_command`]) point at in `buffer`.
    pub fn new(buffer: &'a [u8], ranges: &'a [Range<usize>]) -> Self {
        debug_assert!(ranges.iter().all(|range| range.end <= buffer.len()));
        Args { buffer, ranges }
    }

    /// How many arguments, the command name included.
    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    /// Whether there are none (an empty request, `*0` or `*-1`).
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Argument `index`. Panics if `index >= self.len()`.
    pub fn get(&self, index: usize) -> &'a [u8] {
        arg(self.buffer, &self.ranges[index])
    }

    /// Every argument in order, the command name first.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &'a [u8]> + Clone + use<'a> {
        let buffer = self.buffer;
        self.ranges.iter().map(move |range| arg(buffer, range))
    }

    /// Whether argument `index` exists and equals `lowercase` ignoring ASCII
    /// case (`lowercase` is written in lowercase by convention, e.g. `"get"`).
    pub fn name_lowercase_eq(&self, index: usize, lowercase: &str) -> bool {
        debug_assert!(!lowercase.bytes().any(|byte| byte.is_ascii_uppercase()));
        index < self.len() && self.get(index).eq_ignore_ascii_case(lowercase.as_bytes())
    }
}

/// Why framing stopped short of a whole request.
#[derive(Debug)]
enum Stop {
    Incomplete,
    Error(RespError),
}

impl From<RespError> for Stop {
    fn from(error: RespError) -> Self {
        Stop::Error(error)
    }
}

/// Which of the two header lines is being read; they differ only in their
/// marker and their error texts.
#[derive(Clone, Copy)]
enum Header {
    Multibulk,
    Bulk,
}

impl Header {
    fn marker(self) -> u8 {
        match self {
            Header::Multibulk => b'*',
            Header::Bulk => b'$',
        }
    }

    fn unexpected(self, got: u8) -> RespError {
        match self {
            Header::Multibulk => RespError::ExpectedArray { got },
            Header::Bulk => RespError::ExpectedBulk { got },
        }
    }

    fn invalid(self) -> RespError {
        match self {
            Header::Multibulk => RespError::InvalidMultibulkLength,
            Header::Bulk => RespError::InvalidBulkLength,
        }
    }

    fn too_big(self) -> RespError {
        match self {
            Header::Multibulk => RespError::MultibulkHeaderTooBig,
            Header::Bulk => RespError::BulkHeaderTooBig,
        }
    }
}

/// A read position in the buffer; `position` is also the length of the
/// request so far, as the request starts at 0.
struct Cursor<'a> {
    buffer: &'a [u8],
    position: usize,
    max_request_bytes: usize,
}

impl<'a> Cursor<'a> {
    /// Reads a whole request, pushing its arguments' ranges onto `args`.
    fn request(&mut self, args: &mut Vec<Range<usize>>) -> Result<(), Stop> {
        let count = match self.header(Header::Multibulk)? {
            -1 => 0,
            count => usize::try_from(count)
                .ok()
                .filter(|&count| count <= MAX_ARGS)
                .ok_or(RespError::InvalidMultibulkLength)?,
        };
        self.check_length(self.position.saturating_add(count * MIN_ARG_BYTES))?;
        for index in 0..count {
            let later_args = count - index - 1;
            args.push(self.bulk(later_args)?);
        }
        Ok(())
    }

    /// Reads one `$<length>\r\n<bytes>\r\n`, `later_args` arguments before
    /// the end of the request, and returns where its bytes lie.
    fn bulk(&mut self, later_args: usize) -> Result<Range<usize>, Stop> {
        let length = usize::try_from(self.header(Header::Bulk)?)
            .ok()
            .filter(|&length| length <= self.max_request_bytes)
            .ok_or(RespError::InvalidBulkLength)?;
        let start = self.position;
        let data_end = start.saturating_add(length);
        let end = data_end.saturating_add(2);
        self.check_length(end.saturating_add(later_args * MIN_ARG_BYTES))?;
        let terminator = &self.buffer[data_end.min(self.buffer.len())..];
        if !b"\r\n".starts_with(&terminator[..terminator.len().min(2)]) {
            return Err(RespError::BulkNotTerminated.into());
        }
        if self.buffer.len() < end {
            return Err(Stop::Incomplete);
        }
        self.position = end;
        Ok(start..data_end)
    }

    /// Reads one header line (`*<count>\r\n` or `$<length>\r\n`) and
    /// returns its number.
    fn header(&mut self, header: Header) -> Result<i64, Stop> {
        if let Some((number, end)) = self.short_header(header) {
            self.position = end;
            self.check_length(end)?;
            return Ok(number);
        }
        self.any_header(header)
    }

    /// [`Self::header`] for any header line, whatever its number or state.
    fn any_header(&mut self, header: Header) -> Result<i64, Stop> {
        let line_start = self.position;
        let Some(&marker) = self.buffer.get(line_start) else {
            return Err(Stop::Incomplete);
        };
        if marker != header.marker() {
            return Err(header.unexpected(marker).into());
        }
        let carriage_return = self.find_carriage_return(header)?;
        match self.buffer.get(carriage_return + 1) {
            None => return Err(Stop::Incomplete),
            Some(b'\n') => {}
            Some(_) => return Err(header.invalid().into()),
        }
        self.position = carriage_return + 2;
        self.check_length(self.position)?;
        parse_integer(&self.buffer[line_start + 1..carriage_return])
            .ok_or_else(|| header.invalid().into())
    }

    /// Skips one whole request in the common form ([`key_hints`]),
    /// returning its second argument if it has one; `None` when the
    /// request is not whole or not in that form.
    fn hinted_key<'buf>(&mut self) -> Option<Option<&'buf [u8]>>
    where
        'a: 'buf,
    {
        let (count, after) = self.short_header(Header::Multibulk)?;
        if count > MAX_HINTED_ARGS {
            return None;
        }
        self.position = after;
        let mut key = None;
        for index in 0..count {
            let (length, start) = self.short_header(Header::Bulk)?;
            let end = start.checked_add(usize::try_from(length).ok()?)?;
            if self.buffer.get(end..end.checked_add(2)?)? != b"\r\n" {
                return None;
            }
            if index == 1 {
                key = Some(&self.buffer[start..end]);
            }
            self.position = end + 2;
        }
        Some(key)
    }

    /// The common header, read in one pass: its marker, a number of at
    /// most [`SHORT_HEADER_DIGITS`] digits that `parse_integer` takes (no
    /// sign, no leading zero), and `\r\n`, all buffered. Anything else
    /// (a `-1`, a partial line, an error) is `None`, for [`Self::header`]'s
    /// general path to decide. Saves a memchr and a second pass over the
    /// digits per header: about 250 instructions per RESP request.
    fn short_header(&self, header: Header) -> Option<(i64, usize)> {
        let bytes = self.buffer;
        if bytes.get(self.position) != Some(&header.marker()) {
            return None;
        }
        let start = self.position + 1;
        let mut at = start;
        let mut number = 0i64;
        while let Some(&byte) = bytes.get(at)
            && byte.is_ascii_digit()
        {
            if at - start == SHORT_HEADER_DIGITS {
                return None;
            }
            number = number * 10 + i64::from(byte - b'0');
            at += 1;
        }
        let digits = at - start;
        if digits == 0 || (digits > 1 && bytes[start] == b'0') {
            return None;
        }
        if bytes.get(at..at + 2)? != b"\r\n" {
            return None;
        }
        Some((number, at + 2))
    }

    /// Finds the `\r` that ends the header line at `position`, within
    /// [`MAX_HEADER_BYTES`] of it.
    fn find_carriage_return(&self, header: Header) -> Result<usize, Stop> {
        let line_start = self.position;
        let searched_end = self.buffer.len().min(line_start + MAX_HEADER_BYTES);
        let searched = &self.buffer[line_start..searched_end];
        if let Some(offset) = memchr::memchr(b'\r', searched) {
            return Ok(line_start + offset);
        }
        if searched.len() >= MAX_HEADER_BYTES {
            return Err(header.too_big().into());
        }
        // Every buffered byte belongs to this unfinished line.
        self.check_length(self.buffer.len())?;
        Err(Stop::Incomplete)
    }

    /// Refuses a request that is, or will be, `request_bytes` long.
    fn check_length(&self, request_bytes: usize) -> Result<(), RespError> {
        if request_bytes > self.max_request_bytes {
            return Err(RespError::RequestTooLarge {
                max_request_bytes: self.max_request_bytes,
            });
        }
        Ok(())
    }
}

/// Digits a header's number may have to be read by the short path: 18
/// cannot overflow an i64.
const SHORT_HEADER_DIGITS: usize = 18;

/// Parses a decimal integer as strictly as Redis's `string2ll`: `0`, or an
/// optional `-` then a digit 1-9 then digits, at most 20 characters, no
/// overflow. No `+`, spaces, leading zeros or `-0`.
fn parse_integer(text: &[u8]) -> Option<i64> {
    if text.len() > MAX_INTEGER_CHARS {
        return None;
    }
    if text == b"0" {
        return Some(0);
    }
    let (negative, digits) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, text),
    };
    if !matches!(digits.first(), Some(b'1'..=b'9')) {
        return None;
    }
    digits.iter().try_fold(0i64, |value, &digit| {
        if !digit.is_ascii_digit() {
            return None;
        }
        let digit = i64::from(digit - b'0');
        let shifted = value.checked_mul(10)?;
        if negative {
            shifted.checked_sub(digit)
        } else {
            shifted.checked_add(digit)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT_BYTES: usize = 1024;

    /// Frames `buffer` and shows the outcome with its arguments.
    fn framed(buffer: &[u8], max_request_bytes: usize) -> (Framed, Vec<Vec<u8>>) {
        let mut args = Vec::new();
        let outcome = next_command(buffer, max_request_bytes, &mut args);
        let args = args
            .iter()
            .map(|range| arg(buffer, range).to_vec())
            .collect();
        (outcome, args)
    }

    fn error(buffer: &[u8], max_request_bytes: usize) -> String {
        match framed(buffer, max_request_bytes).0 {
            Framed::Error(error) => error.to_string(),
            other => panic!("{:?}: {other:?}", buffer.escape_ascii().to_string()),
        }
    }

    const SET: &[u8] = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\na\r\nb\0\r\n";

    #[test]
    fn key_hints_name_second_arguments_of_whole_common_requests() {
        let mut keys: [&[u8]; 8] = [&[]; 8];
        let buffer = b"*2\r\n$3\r\nGET\r\n$1\r\na\r\n*1\r\n$4\r\nPING\r\n\
                       *3\r\n$3\r\nset\r\n$2\r\nbb\r\n$1\r\nv\r\n*2\r\n$3\r\nGET\r\n$1\r\nc";
        assert_eq!(key_hints(buffer, &mut keys), (2, 3));
        assert_eq!(keys[..2], [&b"a"[..], b"bb"]);
        assert_eq!(key_hints(buffer, &mut keys[..1]), (1, 1));
        // Not the common form: hints stop there (framing decides later).
        for odd in [
            &b"*-1\r\n*2\r\n$3\r\nGET\r\n$1\r\na\r\n"[..],
            b"*2\r\n$3\r\nGET\r\n$1\r\naX\r\n",
            b"*17\r\n$3\r\nGET\r\n",
            b"*2\r\n$3\r\nGET\r\n$999999999999999999\r\na\r\n",
            b"GET a\r\n",
            b"",
        ] {
            assert_eq!(key_hints(odd, &mut keys), (0, 0), "{odd:?}");
        }
    }

    #[test]
    fn the_short_header_path_agrees_with_the_general_one() {
        let mut inputs: Vec<Vec<u8>> = Vec::new();
        for number in [
            "0",
            "1",
            "9",
            "10",
            "42",
            "100",
            "01",
            "00",
            "-1",
            "-0",
            "+1",
            " 1",
            "1 ",
            "999999999999999999",
            "1000000000000000000",
            "9223372036854775807",
            "9223372036854775808",
            "99999999999999999999",
            "",
            "x",
            "1x",
        ] {
            for tail in ["\r\n", "\r", "", "\rx", "\n", "\r\nrest"] {
                for marker in ["*", "$"] {
                    inputs.push(format!("{marker}{number}{tail}").into_bytes());
                }
            }
        }
        for input in &inputs {
            for header in [Header::Multibulk, Header::Bulk] {
                let cursor = |max_request_bytes| Cursor {
                    buffer: input,
                    position: 0,
                    max_request_bytes,
                };
                for max_request_bytes in [4, 1 << 20] {
                    let Some((number, end)) = cursor(max_request_bytes).short_header(header) else {
                        continue;
                    };
                    let mut general = cursor(max_request_bytes);
                    let expected = general
                        .any_header(header)
                        .map(|number| (number, general.position));
                    let mut short = cursor(max_request_bytes);
                    let got = short.header(header).map(|number| (number, short.position));
                    assert_eq!(format!("{got:?}"), format!("{expected:?}"), "{input:?}");
                    assert!(expected.is_err() || expected.as_ref().ok() == Some(&(number, end)));
                }
            }
        }
    }

    #[test]
    fn frames_a_request_with_binary_arguments() {
        let (outcome, args) = framed(SET, LIMIT_BYTES);
        assert_eq!(outcome, Framed::Command { consumed: 31 });
        assert_eq!(SET.len(), 31);
        assert_eq!(args, [&b"SET"[..], b"k", b"a\r\nb\0"]);
    }

    #[test]
    fn empty_and_null_arrays_are_requests_without_arguments() {
        assert_eq!(
            framed(b"*0\r\n*1\r\n", LIMIT_BYTES),
            (Framed::Command { consumed: 4 }, vec![])
        );
        assert_eq!(
            framed(b"*-1\r\n", LIMIT_BYTES),
            (Framed::Command { consumed: 5 }, vec![])
        );
    }

    #[test]
    fn empty_arguments_and_spaces_are_kept() {
        let request = b"*2\r\n$0\r\n\r\n$3\r\n a \r\n";
        let (outcome, args) = framed(request, LIMIT_BYTES);
        assert_eq!(outcome, Framed::Command { consumed: 19 });
        assert_eq!(args, [&b""[..], b" a "]);
    }

    #[test]
    fn every_prefix_of_a_request_is_incomplete() {
        for request in [SET, b"*0\r\n", b"*-1\r\n", b"*1\r\n$0\r\n\r\n"] {
            for length in 0..request.len() {
                assert_eq!(
                    framed(&request[..length], LIMIT_BYTES),
                    (Framed::Incomplete, vec![]),
                    "{length} bytes of {}",
                    request.escape_ascii()
                );
            }
        }
    }

    #[test]
    fn pipelined_requests_are_framed_one_after_the_other() {
        let mut stream = SET.to_vec();
        stream.extend_from_slice(b"*1\r\n$4\r\nPING\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
        let mut seen = Vec::new();
        let mut rest = &stream[..];
        while let (Framed::Command { consumed }, args) = framed(rest, LIMIT_BYTES) {
            seen.push(args);
            rest = &rest[consumed..];
        }
        assert!(rest.is_empty());
        let expected: [&[&[u8]]; 3] = [&[b"SET", b"k", b"a\r\nb\0"], &[b"PING"], &[b"GET", b"k"]];
        assert_eq!(seen, expected);
    }

    #[test]
    fn args_read_a_request_by_index_and_by_name() {
        let mut ranges = Vec::new();
        assert!(matches!(
            next_command(SET, LIMIT_BYTES, &mut ranges),
            Framed::Command { .. }
        ));
        let args = Args::new(SET, &ranges);
        assert_eq!(args.len(), 3);
        assert!(!args.is_empty());
        assert_eq!(args.get(1), b"k");
        assert!(args.name_lowercase_eq(0, "set"));
        assert!(!args.name_lowercase_eq(0, "get"));
        assert!(!args.name_lowercase_eq(3, "set"));
        assert_eq!(
            args.iter().collect::<Vec<_>>(),
            [&b"SET"[..], b"k", b"a\r\nb\0"]
        );
        assert!(Args::new(b"", &[]).is_empty());
    }

    #[test]
    fn a_request_must_start_with_an_array() {
        assert_eq!(
            error(b"PING\r\n", LIMIT_BYTES),
            "Protocol error: expected '*', got 'P'"
        );
        assert_eq!(
            error(b"\x01", LIMIT_BYTES),
            "Protocol error: expected '*', got '\\x01'"
        );
        assert_eq!(
            error(b"\rPING", LIMIT_BYTES),
            "Protocol error: expected '*', got '\\r'"
        );
    }

    #[test]
    fn a_count_must_be_a_strict_decimal_within_bounds() {
        let invalid = "Protocol error: invalid multibulk length";
        for header in [
            &b"*\r\n"[..],
            b"*+1\r\n",
            b"* 1\r\n",
            b"*1 \r\n",
            b"*01\r\n",
            b"*-0\r\n",
            b"*-2\r\n",
            b"*1x\r\n",
            b"*1\rx",
            b"*-\r\n",
            b"*99999999999999999999\r\n",
            b"*1048577\r\n",
        ] {
            assert_eq!(
                error(header, usize::MAX),
                invalid,
                "{}",
                header.escape_ascii()
            );
        }
        // At the limit the count is accepted; the arguments are awaited.
        assert_eq!(framed(b"*1048576\r\n", usize::MAX).0, Framed::Incomplete);
    }

    #[test]
    fn an_argument_must_be_a_bulk_string() {
        assert_eq!(
            error(b"*1\r\n:1\r\n", LIMIT_BYTES),
            "Protocol error: expected '$', got ':'"
        );
        assert_eq!(
            error(b"*2\r\n$1\r\na\r\n\0", LIMIT_BYTES),
            "Protocol error: expected '$', got '\\x00'"
        );
    }

    #[test]
    fn a_bulk_length_must_be_a_strict_decimal_within_the_limit() {
        let invalid = "Protocol error: invalid bulk length";
        for header in [
            &b"*1\r\n$\r\n"[..],
            b"*1\r\n$-1\r\n",
            b"*1\r\n$01\r\n",
            b"*1\r\n$+1\r\n",
            b"*1\r\n$1 \r\n",
            b"*1\r\n$1\r\r\n",
            b"*1\r\n$1025\r\n",
            b"*1\r\n$99999999999999999999\r\n",
        ] {
            assert_eq!(
                error(header, LIMIT_BYTES),
                invalid,
                "{}",
                header.escape_ascii()
            );
        }
    }

    #[test]
    fn a_header_line_without_its_end_is_cut_off_at_the_header_limit() {
        let mut long_count = b"*".to_vec();
        long_count.resize(MAX_HEADER_BYTES - 1, b'1');
        assert_eq!(framed(&long_count, usize::MAX).0, Framed::Incomplete);
        long_count.push(b'1');
        assert_eq!(
            error(&long_count, usize::MAX),
            "Protocol error: too big mbulk count string"
        );
        let mut long_length = b"*1\r\n$".to_vec();
        long_length.resize(4 + MAX_HEADER_BYTES, b'1');
        assert_eq!(
            error(&long_length, usize::MAX),
            "Protocol error: too big bulk count string"
        );
        long_length.pop();
        assert_eq!(framed(&long_length, usize::MAX).0, Framed::Incomplete);
    }

    #[test]
    fn a_request_over_the_limit_is_refused_from_its_headers_alone() {
        let too_large = "Protocol error: request too large (limit 20 bytes)";
        // 4 + 5 + 10 + 2 = 21 bytes declared by the second header.
        assert_eq!(error(b"*1\r\n$10\r\n", 20), too_large);
        assert_eq!(framed(b"*1\r\n$9\r\n", 20).0, Framed::Incomplete);
        // Three arguments need at least 4 + 3 * 6 = 22 bytes.
        assert_eq!(error(b"*3\r\n", 20), too_large);
        assert_eq!(framed(b"*2\r\n", 20).0, Framed::Incomplete);
        // The first argument fits alone but leaves no room for the second.
        assert_eq!(error(b"*2\r\n$5\r\n", 20), too_large);
        // A header that has not ended yet already holds too many bytes.
        assert_eq!(error(b"*111111111111111111111", 20), too_large);
        // A request of exactly the limit is framed.
        assert_eq!(
            framed(b"*1\r\n$10\r\n0123456789\r\n", 21).0,
            Framed::Command { consumed: 21 }
        );
    }

    #[test]
    fn argument_bytes_must_end_in_crlf() {
        let unterminated = "Protocol error: bulk string not terminated by CRLF";
        assert_eq!(error(b"*1\r\n$1\r\nab\r\n", LIMIT_BYTES), unterminated);
        assert_eq!(error(b"*1\r\n$1\r\na\rx", LIMIT_BYTES), unterminated);
        assert_eq!(error(b"*1\r\n$1\r\na\n", LIMIT_BYTES), unterminated);
        // Detected as soon as the wrong byte arrives.
        assert_eq!(error(b"*1\r\n$1\r\nab", LIMIT_BYTES), unterminated);
        assert_eq!(
            framed(b"*1\r\n$1\r\na\r", LIMIT_BYTES).0,
            Framed::Incomplete
        );
    }

    #[test]
    fn integers_are_parsed_as_redis_does() {
        assert_eq!(parse_integer(b"0"), Some(0));
        assert_eq!(parse_integer(b"-1"), Some(-1));
        assert_eq!(parse_integer(b"1234"), Some(1234));
        assert_eq!(parse_integer(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_integer(b"-9223372036854775808"), Some(i64::MIN));
        for invalid in [
            &b""[..],
            b"-",
            b"00",
            b"-0",
            b"+1",
            b"1.0",
            b"9223372036854775808",
            b"-9223372036854775809",
            b"000000000000000000001",
        ] {
            assert_eq!(parse_integer(invalid), None, "{}", invalid.escape_ascii());
        }
    }

    #[test]
    fn framing_leaves_no_arguments_behind_when_it_stops_short() {
        let mut args = vec![0..1, 1..2];
        assert_eq!(
            next_command(&SET[..SET.len() - 1], LIMIT_BYTES, &mut args),
            Framed::Incomplete
        );
        assert!(args.is_empty());
    }

    #[test]
    fn empty_lines_between_requests_are_skipped() {
        let mut args = Vec::new();
        assert_eq!(
            next_command(b"\r\n*1\r\n$4\r\nPING\r\n", 100, &mut args),
            Framed::Command { consumed: 2 }
        );
        assert!(args.is_empty());
        assert_eq!(
            next_command(b"\n", 100, &mut args),
            Framed::Command { consumed: 1 }
        );
        assert_eq!(next_command(b"\r", 100, &mut args), Framed::Incomplete);
        assert_eq!(
            next_command(b"\rx", 100, &mut args),
            Framed::Error(RespError::ExpectedArray { got: b'\r' })
        );
    }
}
