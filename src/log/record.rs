//! One log record: encoding and checked decoding. Pure: no I/O, no allocation
//! beyond the caller's output buffer (and the body a [`BatchBuilder`] owns).
//!
//! ```text
//! u32 LE  body_len      bytes of body that follow the crc
//! u32 LE  crc32c(body)
//! body:   u64 LE epoch
//!         u64 LE index
//!         u64 LE commit   the leader's commit index when it made the record
//!         u8     op       0 = Noop, 1 = Put, 2 = Del, 3 = Batch
//!         u32 LE key_len
//!         key bytes       (key_len bytes; always 0 for Noop and Batch)
//!         value bytes     (the rest of the body; Put only, or a Batch's body)
//!
//! A Batch's body: one or more operations, back to back, applied in order
//! under the record's one index (all of them or, if the record is lost,
//! none):
//!         u8     kind       1 = put, 2 = del
//!         u32 LE key_len    at least 1
//!         u32 LE value_len  0 for a del
//!         key bytes
//!         value bytes
//! ```
//!
//! The length is checked against [`MAX_RECORD_BODY_BYTES`] before anything
//! else, so a corrupt length never makes a reader wait for (or allocate) a
//! gigabyte. The checksum is verified before any body field is trusted, and
//! every field is then checked again: a record that decodes is exactly a record
//! that [`encode`] could have produced.

use std::fmt;

/// The largest log index a node accepts: at ten million writes a second,
/// 14,000 years. Far below `u64::MAX`, so that no `+ 1` on an index can wrap.
pub const MAX_INDEX: u64 = 1 << 62;

/// Bytes before the body: `body_len` and the checksum.
pub const RECORD_HEADER_BYTES: usize = 8;

/// Fixed part of every body: epoch (8), index (8), commit (8), op (1), key_len (4).
pub const BODY_FIXED_BYTES: usize = 8 + 8 + 8 + 1 + 4;

/// The largest value a record is meant to carry.
const MAX_VALUE_BYTES: usize = 64 * 1024 * 1024;

/// Room beside the value for the key and the fixed fields.
const KEY_AND_FIXED_ALLOWANCE_BYTES: usize = 64 * 1024;

/// The largest body a record may declare; a larger `body_len` is
/// [`MalformedReason::BodyTooLarge`], detected from the header alone.
///
/// The root of every bound on what carries a record: the longest request
/// line (`config::MAX_MAX_LINE_BYTES`, through [`MAX_KEY_AND_VALUE_BYTES`]),
/// the largest peer frame (`node::message::MAX_FRAME_BODY_BYTES`, through
/// [`MAX_RECORD_BYTES`]) and the largest snapshot pair are derived from it.
pub const MAX_RECORD_BODY_BYTES: usize = MAX_VALUE_BYTES + KEY_AND_FIXED_ALLOWANCE_BYTES;

/// The largest whole record: header and body.
pub const MAX_RECORD_BYTES: usize = RECORD_HEADER_BYTES + MAX_RECORD_BODY_BYTES;

/// The most key and value bytes one record carries together.
pub const MAX_KEY_AND_VALUE_BYTES: usize = MAX_RECORD_BODY_BYTES - BODY_FIXED_BYTES;

const OP_NOOP: u8 = 0;
const OP_PUT: u8 = 1;
const OP_DEL: u8 = 2;
const OP_BATCH: u8 = 3;

/// The kind byte of a put inside a batch.
const BATCH_PUT: u8 = 1;
/// The kind byte of a del inside a batch.
const BATCH_DEL: u8 = 2;

/// Bytes before the key of each operation in a batch: kind (1), key_len
/// (4), value_len (4).
pub const BATCH_OP_HEADER_BYTES: usize = 1 + 4 + 4;

/// What a record asks the state machine to do. The log never interprets it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op<'a> {
    /// Carries no change; a new leader appends one to commit its epoch.
    Noop,
    /// Sets `key` to `value`.
    Put { key: &'a [u8], value: &'a [u8] },
    /// Removes `key`.
    Del { key: &'a [u8] },
    /// Puts and dels applied in order under one index, all or nothing: what
    /// a multi-key or derived write became on the leader.
    Batch(Batch<'a>),
}

/// The body of a batch record: one or more puts and dels (see the module
/// doc for the layout). A `Batch` is only ever made from a body that was
/// checked ([`Batch::from_body`]) or built ([`BatchBuilder`]), so iterating
/// it cannot fail, and encoding it makes a record that decodes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Batch<'a> {
    body: &'a [u8],
}

impl<'a> Batch<'a> {
    /// Checks the whole of `body` and wraps it: at least one operation, each
    /// a put or a del with a non-empty key, a del with no value, lengths
    /// within the body and no bytes after the last operation.
    pub fn from_body(body: &'a [u8]) -> Result<Batch<'a>, MalformedReason> {
        if body.is_empty() {
            return Err(MalformedReason::EmptyBatch);
        }
        let mut rest = body;
        while !rest.is_empty() {
            (_, rest) = split_batch_op(rest)?;
        }
        Ok(Batch { body })
    }

    /// The operations, in the order they apply: only `Op::Put` and `Op::Del`.
    pub fn iter(&self) -> impl Iterator<Item = Op<'a>> + use<'a> {
        let mut rest = self.body;
        std::iter::from_fn(move || {
            if rest.is_empty() {
                return None;
            }
            match split_batch_op(rest) {
                Ok((op, after)) => {
                    rest = after;
                    Some(op)
                }
                Err(reason) => {
                    // Unreachable: the body was checked when the Batch was made.
                    debug_assert!(false, "a checked batch fails to parse: {reason}");
                    rest = &[];
                    None
                }
            }
        })
    }

    /// How many operations the batch holds (counted by walking it).
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// Always false: a batch holds at least one operation.
    pub fn is_empty(&self) -> bool {
        self.body.is_empty()
    }

    /// The encoded operations: the record's value bytes.
    pub fn body(&self) -> &'a [u8] {
        self.body
    }
}

impl fmt::Debug for Batch<'_> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("Batch")?;
        formatter.debug_list().entries(self.iter()).finish()
    }
}

/// Splits the first operation off a batch body, checking it.
fn split_batch_op(body: &[u8]) -> Result<(Op<'_>, &[u8]), MalformedReason> {
    let Some((header, rest)) = body.split_first_chunk::<BATCH_OP_HEADER_BYTES>() else {
        return Err(MalformedReason::BatchTrailingBytes);
    };
    let [kind, k0, k1, k2, k3, v0, v1, v2, v3] = *header;
    let key_bytes = u32::from_le_bytes([k0, k1, k2, k3]) as usize;
    let value_bytes = u32::from_le_bytes([v0, v1, v2, v3]) as usize;
    let (key, rest) = rest
        .split_at_checked(key_bytes)
        .ok_or(MalformedReason::BatchLengthOutOfRange)?;
    let (value, rest) = rest
        .split_at_checked(value_bytes)
        .ok_or(MalformedReason::BatchLengthOutOfRange)?;
    let op = match kind {
        BATCH_PUT | BATCH_DEL if key.is_empty() => return Err(MalformedReason::BatchEmptyKey),
        BATCH_PUT => Op::Put { key, value },
        BATCH_DEL if value.is_empty() => Op::Del { key },
        BATCH_DEL => return Err(MalformedReason::BatchDelWithValue),
        unknown => return Err(MalformedReason::UnknownBatchOp(unknown)),
    };
    Ok((op, rest))
}

/// Builds the body of a batch, owning it; [`BatchBuilder::op`] lends it out
/// as an [`Op::Batch`] to append. Check [`BatchBuilder::fits_with`] before
/// each push: [`encode`] refuses a record larger than
/// [`MAX_RECORD_BODY_BYTES`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BatchBuilder {
    body: Vec<u8>,
    count: usize,
}

impl BatchBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a put of `key` to `value`.
    ///
    /// # Panics
    /// If `key` is empty (a batch holds none, so its record would not
    /// decode) or either length exceeds `u32::MAX`.
    pub fn push_put(&mut self, key: &[u8], value: &[u8]) {
        self.push(BATCH_PUT, key, value);
    }

    /// Appends a del of `key`.
    ///
    /// # Panics
    /// If `key` is empty or longer than `u32::MAX`.
    pub fn push_del(&mut self, key: &[u8]) {
        self.push(BATCH_DEL, key, &[]);
    }

    fn push(&mut self, kind: u8, key: &[u8], value: &[u8]) {
        assert!(!key.is_empty(), "a batch operation needs a key");
        let key_len = u32::try_from(key.len()).expect("key length fits in u32");
        let value_len = u32::try_from(value.len()).expect("value length fits in u32");
        self.body
            .reserve(BATCH_OP_HEADER_BYTES + key.len() + value.len());
        self.body.push(kind);
        self.body.extend_from_slice(&key_len.to_le_bytes());
        self.body.extend_from_slice(&value_len.to_le_bytes());
        self.body.extend_from_slice(key);
        self.body.extend_from_slice(value);
        self.count += 1;
    }

    /// Whether the record would still fit [`MAX_RECORD_BODY_BYTES`] after
    /// a put of a `key_bytes` key and a `value_bytes` value (a del of a
    /// `key_bytes` key takes as much as a put of an empty value).
    pub fn fits_with(&self, key_bytes: usize, value_bytes: usize) -> bool {
        let body_bytes = self
            .body
            .len()
            .saturating_add(BATCH_OP_HEADER_BYTES)
            .saturating_add(key_bytes)
            .saturating_add(value_bytes);
        key_and_value_fit(body_bytes)
    }

    /// The batch as an op to append, borrowing the builder.
    ///
    /// # Panics
    /// If nothing was pushed: an empty batch is no record.
    pub fn op(&self) -> Op<'_> {
        assert!(!self.is_empty(), "an empty batch is no record");
        Op::Batch(Batch { body: &self.body })
    }

    /// The encoded operations so far.
    pub fn body_bytes(&self) -> &[u8] {
        &self.body
    }

    /// The operations pushed so far.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Whether nothing was pushed since it was made or cleared.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Forgets every operation, keeping the allocation.
    pub fn clear(&mut self) {
        self.body.clear();
        self.count = 0;
    }
}

/// One record's content, borrowing key and value from wherever it came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry<'a> {
    pub epoch: u64,
    pub index: u64,
    /// A lower bound on the cluster's commit index when the record was made
    /// (every record at or below it is committed). After a restart it tells
    /// a node which of its records it may apply before hearing from a leader.
    pub commit: u64,
    pub op: Op<'a>,
}

/// Why a buffer does not start with a valid record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The buffer holds less than one whole record (so far).
    Incomplete,
    /// The body does not match its checksum.
    Checksum,
    /// The record is structurally impossible.
    Malformed(MalformedReason),
}

/// Why a record is structurally impossible.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MalformedReason {
    /// `body_len` exceeds [`MAX_RECORD_BODY_BYTES`].
    BodyTooLarge,
    /// `body_len` is smaller than the fixed body fields.
    BodyTooShort,
    /// The op byte is none of the known ops.
    UnknownOp(u8),
    /// `key_len` runs past the end of the body.
    KeyLengthOutOfRange,
    /// A Noop with key or value bytes, or a Del with value bytes.
    TrailingBytes,
    /// A Batch with key bytes of its own (its operations carry the keys).
    BatchWithKey,
    /// A Batch with no operations.
    EmptyBatch,
    /// An operation in a Batch whose kind is neither put nor del.
    UnknownBatchOp(u8),
    /// An operation's key or value length runs past the end of the Batch.
    BatchLengthOutOfRange,
    /// Bytes after a Batch's last operation too few to be another one.
    BatchTrailingBytes,
    /// A del in a Batch with value bytes.
    BatchDelWithValue,
    /// An operation in a Batch with an empty key.
    BatchEmptyKey,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Incomplete => {
                formatter.write_str("incomplete record (its length runs past the end of the data)")
            }
            DecodeError::Checksum => formatter.write_str("checksum mismatch"),
            DecodeError::Malformed(reason) => write!(formatter, "malformed record: {reason}"),
        }
    }
}

impl fmt::Display for MalformedReason {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MalformedReason::BodyTooLarge => write!(
                formatter,
                "body length exceeds the maximum of {MAX_RECORD_BODY_BYTES} bytes"
            ),
            MalformedReason::BodyTooShort => write!(
                formatter,
                "body length is below the minimum of {BODY_FIXED_BYTES} bytes"
            ),
            MalformedReason::UnknownOp(op) => write!(formatter, "unknown op {op}"),
            MalformedReason::KeyLengthOutOfRange => {
                formatter.write_str("key length runs past the end of the body")
            }
            MalformedReason::TrailingBytes => {
                formatter.write_str("unexpected bytes after the last field of the op")
            }
            MalformedReason::BatchWithKey => formatter.write_str("a batch with a key of its own"),
            MalformedReason::EmptyBatch => formatter.write_str("a batch with no operations"),
            MalformedReason::UnknownBatchOp(kind) => {
                write!(formatter, "unknown operation {kind} in a batch")
            }
            MalformedReason::BatchLengthOutOfRange => formatter
                .write_str("a key or value length in a batch runs past the end of the body"),
            MalformedReason::BatchTrailingBytes => {
                formatter.write_str("bytes after the last operation of a batch")
            }
            MalformedReason::BatchDelWithValue => {
                formatter.write_str("a del in a batch with value bytes")
            }
            MalformedReason::BatchEmptyKey => {
                formatter.write_str("an operation in a batch with an empty key")
            }
        }
    }
}

impl std::error::Error for DecodeError {}

/// The key and value an op carries (empty where it carries none; a
/// batch's body is its value), and its tag.
fn op_parts<'a>(op: &Op<'a>) -> (u8, &'a [u8], &'a [u8]) {
    match *op {
        Op::Noop => (OP_NOOP, &[], &[]),
        Op::Put { key, value } => (OP_PUT, key, value),
        Op::Del { key } => (OP_DEL, key, &[]),
        Op::Batch(batch) => (OP_BATCH, &[], batch.body),
    }
}

/// Whether a body of `key_and_value_bytes` beside the fixed fields fits
/// [`MAX_RECORD_BODY_BYTES`].
fn key_and_value_fit(key_and_value_bytes: usize) -> bool {
    key_and_value_bytes <= MAX_KEY_AND_VALUE_BYTES
}

/// Bytes [`encode`] appends for `entry`.
pub fn encoded_len(entry: &Entry<'_>) -> usize {
    let (_, key, value) = op_parts(&entry.op);
    RECORD_HEADER_BYTES + BODY_FIXED_BYTES + key.len() + value.len()
}

/// Whether a record of `op` fits [`MAX_RECORD_BODY_BYTES`], as [`encode`]
/// requires.
pub fn fits(op: &Op<'_>) -> bool {
    let (_, key, value) = op_parts(op);
    key_and_value_fit(key.len() + value.len())
}

/// Appends exactly one record for `entry` to `out`.
///
/// # Panics
/// If the body would exceed [`MAX_RECORD_BODY_BYTES`]: such a record could
/// never be read back, so writing it would silently lose it. Callers check
/// [`fits`] first.
pub fn encode(entry: &Entry<'_>, out: &mut Vec<u8>) {
    let (op_tag, key, value) = op_parts(&entry.op);
    let body_bytes = BODY_FIXED_BYTES + key.len() + value.len();
    assert!(
        body_bytes <= MAX_RECORD_BODY_BYTES,
        "log record body of {body_bytes} bytes exceeds MAX_RECORD_BODY_BYTES"
    );
    // Both fit in u32: bounded by MAX_RECORD_BODY_BYTES just above.
    let body_len = body_bytes as u32;
    let key_len = key.len() as u32;

    out.reserve(RECORD_HEADER_BYTES + body_bytes);
    let record_start = out.len();
    out.extend_from_slice(&body_len.to_le_bytes());
    // The checksum is patched in once the body is in place, so the body is
    // never assembled anywhere but in `out`.
    out.extend_from_slice(&0u32.to_le_bytes());
    let body_start = out.len();
    out.extend_from_slice(&entry.epoch.to_le_bytes());
    out.extend_from_slice(&entry.index.to_le_bytes());
    out.extend_from_slice(&entry.commit.to_le_bytes());
    out.push(op_tag);
    out.extend_from_slice(&key_len.to_le_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(value);

    let checksum = crc32c::crc32c(&out[body_start..]);
    out[record_start + 4..body_start].copy_from_slice(&checksum.to_le_bytes());
}

/// The total length (header + body) the record at the start of `buf` declares,
/// or `None` while the header itself is incomplete. Not validated: use it only
/// after [`decode`] has returned [`DecodeError::Incomplete`] or
/// [`DecodeError::Checksum`], which imply the length is within bounds.
pub(crate) fn declared_record_bytes(buf: &[u8]) -> Option<usize> {
    let (body_len, _) = buf.split_first_chunk::<4>()?;
    Some(RECORD_HEADER_BYTES + u32::from_le_bytes(*body_len) as usize)
}

/// The bytes [`peek`] needs: the header, the epoch and the index.
pub(crate) const PEEK_BYTES: usize = RECORD_HEADER_BYTES + 16;

/// What a reader needs to find its way through records it trusts (records
/// already checked once, by replay or before an append) without decoding them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RecordPeek {
    /// The whole record's length: header and body.
    pub record_bytes: usize,
    pub epoch: u64,
    pub index: u64,
}

/// The length, epoch and index of the record at the start of `buf`, without
/// checking its checksum. The length is range-checked as [`decode`] does, so
/// walking records by it always moves forward and never past a bound;
/// [`DecodeError::Incomplete`] when `buf` is shorter than [`PEEK_BYTES`].
pub(crate) fn peek(buf: &[u8]) -> Result<RecordPeek, DecodeError> {
    let Some(fields) = buf.first_chunk::<PEEK_BYTES>() else {
        return Err(DecodeError::Incomplete);
    };
    let (body_len, rest) = fields.split_at(4);
    let (epoch, index) = rest[4..].split_at(8);
    let body_bytes = u32::from_le_bytes(body_len.try_into().expect("4 bytes")) as usize;
    if body_bytes > MAX_RECORD_BODY_BYTES {
        return Err(DecodeError::Malformed(MalformedReason::BodyTooLarge));
    }
    if body_bytes < BODY_FIXED_BYTES {
        return Err(DecodeError::Malformed(MalformedReason::BodyTooShort));
    }
    Ok(RecordPeek {
        record_bytes: RECORD_HEADER_BYTES + body_bytes,
        epoch: u64::from_le_bytes(epoch.try_into().expect("8 bytes")),
        index: u64::from_le_bytes(index.try_into().expect("8 bytes")),
    })
}

/// Decodes the record at the start of `buf`, borrowing key and value from it.
/// Returns the entry and the bytes it occupied.
pub fn decode(buf: &[u8]) -> Result<(Entry<'_>, usize), DecodeError> {
    let Some((header, after_header)) = buf.split_first_chunk::<RECORD_HEADER_BYTES>() else {
        return Err(DecodeError::Incomplete);
    };
    let [l0, l1, l2, l3, c0, c1, c2, c3] = *header;
    // u32 to usize is lossless on every target this server runs on.
    let body_bytes = u32::from_le_bytes([l0, l1, l2, l3]) as usize;
    let stored_checksum = u32::from_le_bytes([c0, c1, c2, c3]);
    // Length checks come first so that a corrupt length is reported from the
    // header alone, before the caller buffers (or waits for) that many bytes.
    if body_bytes > MAX_RECORD_BODY_BYTES {
        return Err(DecodeError::Malformed(MalformedReason::BodyTooLarge));
    }
    if body_bytes < BODY_FIXED_BYTES {
        return Err(DecodeError::Malformed(MalformedReason::BodyTooShort));
    }
    let Some(body) = after_header.get(..body_bytes) else {
        return Err(DecodeError::Incomplete);
    };
    if crc32c::crc32c(body) != stored_checksum {
        return Err(DecodeError::Checksum);
    }
    let entry = decode_body(body).map_err(DecodeError::Malformed)?;
    Ok((entry, RECORD_HEADER_BYTES + body_bytes))
}

/// [`decode`] without the checksum, for records this process verified
/// already (on arrival, or when it encoded them): the fields are still
/// checked, so a damaged record is an error, never a panic.
pub fn decode_verified(buf: &[u8]) -> Result<Entry<'_>, DecodeError> {
    let Some((header, after_header)) = buf.split_first_chunk::<RECORD_HEADER_BYTES>() else {
        return Err(DecodeError::Incomplete);
    };
    let [l0, l1, l2, l3, ..] = *header;
    let body_bytes = u32::from_le_bytes([l0, l1, l2, l3]) as usize;
    if body_bytes > MAX_RECORD_BODY_BYTES {
        return Err(DecodeError::Malformed(MalformedReason::BodyTooLarge));
    }
    if body_bytes < BODY_FIXED_BYTES {
        return Err(DecodeError::Malformed(MalformedReason::BodyTooShort));
    }
    let body = after_header
        .get(..body_bytes)
        .ok_or(DecodeError::Incomplete)?;
    decode_body(body).map_err(DecodeError::Malformed)
}

/// Parses a checksummed body of at least [`BODY_FIXED_BYTES`].
fn decode_body(body: &[u8]) -> Result<Entry<'_>, MalformedReason> {
    let (epoch, rest) = body
        .split_first_chunk::<8>()
        .ok_or(MalformedReason::BodyTooShort)?;
    let (index, rest) = rest
        .split_first_chunk::<8>()
        .ok_or(MalformedReason::BodyTooShort)?;
    let (commit, rest) = rest
        .split_first_chunk::<8>()
        .ok_or(MalformedReason::BodyTooShort)?;
    let (&op_tag, rest) = rest.split_first().ok_or(MalformedReason::BodyTooShort)?;
    let (key_len, rest) = rest
        .split_first_chunk::<4>()
        .ok_or(MalformedReason::BodyTooShort)?;
    let key_bytes = u32::from_le_bytes(*key_len) as usize;
    let (key, value) = rest
        .split_at_checked(key_bytes)
        .ok_or(MalformedReason::KeyLengthOutOfRange)?;
    let op = match op_tag {
        OP_NOOP if key.is_empty() && value.is_empty() => Op::Noop,
        OP_PUT => Op::Put { key, value },
        OP_DEL if value.is_empty() => Op::Del { key },
        OP_NOOP | OP_DEL => return Err(MalformedReason::TrailingBytes),
        OP_BATCH if key.is_empty() => Op::Batch(Batch::from_body(value)?),
        OP_BATCH => return Err(MalformedReason::BatchWithKey),
        unknown => return Err(MalformedReason::UnknownOp(unknown)),
    };
    Ok(Entry {
        epoch: u64::from_le_bytes(*epoch),
        index: u64::from_le_bytes(*index),
        commit: u64::from_le_bytes(*commit),
        op,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(entry: &Entry<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        encode(entry, &mut out);
        out
    }

    fn sample_entries() -> Vec<Entry<'static>> {
        vec![
            Entry {
                epoch: 0,
                index: 1,
                commit: 0,
                op: Op::Noop,
            },
            Entry {
                epoch: 3,
                index: 7,
                commit: 0,
                op: Op::Put {
                    key: b"k",
                    value: b"v",
                },
            },
            Entry {
                epoch: 3,
                index: 8,
                commit: 0,
                op: Op::Put {
                    key: b"empty",
                    value: b"",
                },
            },
            Entry {
                epoch: 3,
                index: 9,
                commit: 0,
                op: Op::Put {
                    key: b"",
                    value: b"",
                },
            },
            Entry {
                epoch: u64::MAX,
                index: u64::MAX,
                commit: 0,
                op: Op::Put {
                    key: b"\xff\x00\xfe\n",
                    value: b"\x00\x80\xc3\x28 \r\n",
                },
            },
            Entry {
                epoch: 4,
                index: 10,
                commit: 0,
                op: Op::Del { key: b"k" },
            },
            Entry {
                epoch: 4,
                index: 11,
                commit: 0,
                op: Op::Del { key: b"\x00\xff" },
            },
            Entry {
                epoch: 5,
                index: 12,
                commit: 11,
                op: leaked_batch(&[(b"k", Some(b"v"))]),
            },
            Entry {
                epoch: 5,
                index: 13,
                commit: 12,
                op: leaked_batch(&[
                    (b"a", Some(b"1")),
                    (b"gone", None),
                    (b"\r\n\x00key", Some(b"\x00\r\nvalue\r\n\x00")),
                    (b"empty", Some(b"")),
                    (b"a", Some(b"2")),
                ]),
            },
        ]
    }

    /// A batch of `ops` (a value: put; none: del) that lives for the test.
    fn leaked_batch(ops: &[(&[u8], Option<&[u8]>)]) -> Op<'static> {
        let mut builder = BatchBuilder::new();
        for (key, value) in ops {
            match value {
                Some(value) => builder.push_put(key, value),
                None => builder.push_del(key),
            }
        }
        let body: &'static [u8] = Box::leak(builder.body_bytes().into());
        Op::Batch(Batch::from_body(body).expect("a built batch checks"))
    }

    #[test]
    fn decode_verified_reads_what_decode_reads_and_refuses_bad_lengths() {
        let mut out = Vec::new();
        let entry = Entry {
            epoch: 3,
            index: 7,
            commit: 5,
            op: Op::Put {
                key: b"k",
                value: b"v",
            },
        };
        encode(&entry, &mut out);
        assert_eq!(decode_verified(&out), decode(&out).map(|(entry, _)| entry));
        assert_eq!(
            decode_verified(&out[..out.len() - 1]),
            Err(DecodeError::Incomplete)
        );
        assert_eq!(decode_verified(&out[..3]), Err(DecodeError::Incomplete));
        let mut short = out.clone();
        short[..4].copy_from_slice(&1u32.to_le_bytes());
        assert_eq!(
            decode_verified(&short),
            Err(DecodeError::Malformed(MalformedReason::BodyTooShort))
        );
        short[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            decode_verified(&short),
            Err(DecodeError::Malformed(MalformedReason::BodyTooLarge))
        );
    }

    #[test]
    fn every_op_round_trips_with_exact_length() {
        for entry in sample_entries() {
            let bytes = encoded(&entry);
            assert_eq!(bytes.len(), encoded_len(&entry));
            assert_eq!(decode(&bytes), Ok((entry, bytes.len())));
        }
    }

    #[test]
    fn encode_appends_without_touching_existing_bytes() {
        let entries = sample_entries();
        let mut out = b"prefix".to_vec();
        for entry in &entries {
            encode(entry, &mut out);
        }
        assert!(out.starts_with(b"prefix"));
        let mut rest = &out[b"prefix".len()..];
        for entry in &entries {
            let (decoded, used) = decode(rest).expect("record decodes");
            assert_eq!(&decoded, entry);
            rest = &rest[used..];
        }
        assert!(rest.is_empty());
    }

    #[test]
    fn put_layout_is_byte_exact() {
        let entry = Entry {
            epoch: 2,
            index: 5,
            commit: 4,
            op: Op::Put {
                key: b"ab",
                value: b"xyz",
            },
        };
        let bytes = encoded(&entry);
        let body_len = (BODY_FIXED_BYTES + 5) as u32;
        assert_eq!(bytes[0..4], body_len.to_le_bytes());
        assert_eq!(bytes[4..8], crc32c::crc32c(&bytes[8..]).to_le_bytes());
        assert_eq!(bytes[8..16], 2u64.to_le_bytes());
        assert_eq!(bytes[16..24], 5u64.to_le_bytes());
        assert_eq!(bytes[24..32], 4u64.to_le_bytes());
        assert_eq!(bytes[32], OP_PUT);
        assert_eq!(bytes[33..37], 2u32.to_le_bytes());
        assert_eq!(&bytes[37..], b"abxyz");
    }

    #[test]
    fn every_single_bit_flip_is_caught() {
        for entry in sample_entries() {
            let record_bytes = encoded_len(&entry);
            // A second record after the first gives a length flip that grows
            // the record real bytes to checksum instead of only "Incomplete".
            let mut original = encoded(&entry);
            encode(
                &Entry {
                    epoch: 9,
                    index: 99,
                    commit: 0,
                    op: Op::Put {
                        key: b"n",
                        value: &[7; 64],
                    },
                },
                &mut original,
            );
            for bit in 0..record_bytes * 8 {
                let mut flipped = original.clone();
                flipped[bit / 8] ^= 1 << (bit % 8);
                let result = decode(&flipped);
                let declared = declared_record_bytes(&flipped).unwrap_or(0);
                match result {
                    Err(DecodeError::Checksum | DecodeError::Malformed(_)) => {}
                    // Only a length that now points past the buffer may wait for more.
                    Err(DecodeError::Incomplete) => assert!(declared > flipped.len(), "bit {bit}"),
                    Ok(decoded) => panic!("bit {bit} flipped yet decoded as {decoded:?}"),
                }
            }
        }
    }

    #[test]
    fn every_truncation_is_incomplete() {
        for entry in sample_entries() {
            let bytes = encoded(&entry);
            for cut in 0..bytes.len() {
                assert_eq!(
                    decode(&bytes[..cut]),
                    Err(DecodeError::Incomplete),
                    "cut at {cut}"
                );
            }
        }
    }

    #[test]
    fn absurd_body_length_is_malformed_from_the_header_alone() {
        let mut header = Vec::new();
        header.extend_from_slice(&u32::MAX.to_le_bytes());
        header.extend_from_slice(&0u32.to_le_bytes());
        let expected = Err(DecodeError::Malformed(MalformedReason::BodyTooLarge));
        assert_eq!(decode(&header), expected);
        let just_over = (MAX_RECORD_BODY_BYTES as u32 + 1).to_le_bytes();
        header[0..4].copy_from_slice(&just_over);
        assert_eq!(decode(&header), expected);
    }

    #[test]
    fn zero_header_is_too_short() {
        let zeros = [0u8; 64];
        let expected = Err(DecodeError::Malformed(MalformedReason::BodyTooShort));
        assert_eq!(decode(&zeros), expected);
    }

    /// A record with a valid checksum around an arbitrary body.
    fn record_with_body(body: &[u8]) -> Vec<u8> {
        let mut out = (body.len() as u32).to_le_bytes().to_vec();
        out.extend_from_slice(&crc32c::crc32c(body).to_le_bytes());
        out.extend_from_slice(body);
        out
    }

    fn body(op: u8, key_len: u32, rest: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&1u64.to_le_bytes());
        out.extend_from_slice(&2u64.to_le_bytes());
        out.extend_from_slice(&1u64.to_le_bytes());
        out.push(op);
        out.extend_from_slice(&key_len.to_le_bytes());
        out.extend_from_slice(rest);
        out
    }

    #[test]
    fn checksummed_but_impossible_bodies_are_malformed() {
        let cases = [
            (body(4, 0, b""), MalformedReason::UnknownOp(4)),
            (
                body(OP_PUT, 5, b"abcd"),
                MalformedReason::KeyLengthOutOfRange,
            ),
            (
                body(OP_PUT, u32::MAX, b""),
                MalformedReason::KeyLengthOutOfRange,
            ),
            (body(OP_NOOP, 1, b"k"), MalformedReason::TrailingBytes),
            (body(OP_NOOP, 0, b"v"), MalformedReason::TrailingBytes),
            (body(OP_DEL, 1, b"kv"), MalformedReason::TrailingBytes),
        ];
        for (body, reason) in cases {
            assert_eq!(
                decode(&record_with_body(&body)),
                Err(DecodeError::Malformed(reason))
            );
        }
    }

    #[test]
    fn peek_reads_length_epoch_and_index_without_the_checksum() {
        for entry in sample_entries() {
            let mut bytes = encoded(&entry);
            let expected = RecordPeek {
                record_bytes: bytes.len(),
                epoch: entry.epoch,
                index: entry.index,
            };
            assert_eq!(peek(&bytes), Ok(expected));
            // The checksum is not consulted.
            bytes[4] ^= 0xff;
            assert_eq!(peek(&bytes), Ok(expected));
            assert_eq!(peek(&bytes[..PEEK_BYTES - 1]), Err(DecodeError::Incomplete));
        }
        let mut short = encoded(&sample_entries()[0]);
        short[0..4].copy_from_slice(&(BODY_FIXED_BYTES as u32 - 1).to_le_bytes());
        let too_short = Err(DecodeError::Malformed(MalformedReason::BodyTooShort));
        assert_eq!(peek(&short), too_short);
    }

    #[test]
    fn a_batch_yields_its_operations_in_order() {
        let op = leaked_batch(&[
            (b"a", Some(b"1")),
            (b"gone", None),
            (b"\r\n\x00key", Some(b"\x00\r\nvalue\r\n\x00")),
            (b"a", Some(b"2")),
        ]);
        let Op::Batch(batch) = op else {
            panic!("not a batch: {op:?}");
        };
        let expected = [
            Op::Put {
                key: b"a",
                value: b"1",
            },
            Op::Del { key: b"gone" },
            Op::Put {
                key: b"\r\n\x00key",
                value: b"\x00\r\nvalue\r\n\x00",
            },
            Op::Put {
                key: b"a",
                value: b"2",
            },
        ];
        assert_eq!(batch.iter().collect::<Vec<_>>(), expected);
        assert_eq!((batch.len(), batch.is_empty()), (4, false));
        // The iterator borrows the body, not the Batch that lent it.
        let operations = {
            let copy = batch;
            copy.iter()
        };
        assert_eq!(operations.count(), 4);
        let entry = Entry {
            epoch: 1,
            index: 2,
            commit: 1,
            op,
        };
        let bytes = encoded(&entry);
        let (decoded, used) = decode(&bytes).expect("a batch decodes");
        assert_eq!((decoded, used), (entry, encoded_len(&entry)));
        let Op::Batch(decoded) = decoded.op else {
            panic!("decoded as {:?}", decoded.op);
        };
        assert_eq!(decoded.iter().collect::<Vec<_>>(), expected);
    }

    #[test]
    fn batch_layout_is_byte_exact() {
        let mut builder = BatchBuilder::new();
        builder.push_put(b"ab", b"xyz");
        builder.push_del(b"k");
        let entry = Entry {
            epoch: 2,
            index: 5,
            commit: 4,
            op: builder.op(),
        };
        let bytes = encoded(&entry);
        let mut batch_body = vec![1];
        batch_body.extend_from_slice(&2u32.to_le_bytes());
        batch_body.extend_from_slice(&3u32.to_le_bytes());
        batch_body.extend_from_slice(b"abxyz");
        batch_body.push(2);
        batch_body.extend_from_slice(&1u32.to_le_bytes());
        batch_body.extend_from_slice(&0u32.to_le_bytes());
        batch_body.extend_from_slice(b"k");
        assert_eq!(builder.body_bytes(), batch_body);
        let body_len = (BODY_FIXED_BYTES + batch_body.len()) as u32;
        assert_eq!(bytes[0..4], body_len.to_le_bytes());
        assert_eq!(bytes[4..8], crc32c::crc32c(&bytes[8..]).to_le_bytes());
        assert_eq!(bytes[8..16], 2u64.to_le_bytes());
        assert_eq!(bytes[16..24], 5u64.to_le_bytes());
        assert_eq!(bytes[24..32], 4u64.to_le_bytes());
        assert_eq!(bytes[32], OP_BATCH);
        assert_eq!(bytes[33..37], 0u32.to_le_bytes());
        assert_eq!(&bytes[37..], batch_body);
        assert_eq!(bytes.len(), encoded_len(&entry));
    }

    /// One operation of a batch body, with lengths that need not match.
    fn batch_op(kind: u8, key_len: u32, value_len: u32, bytes: &[u8]) -> Vec<u8> {
        let mut out = vec![kind];
        out.extend_from_slice(&key_len.to_le_bytes());
        out.extend_from_slice(&value_len.to_le_bytes());
        out.extend_from_slice(bytes);
        out
    }

    /// Batch bodies that break one rule each, and the rule.
    fn impossible_batch_bodies() -> Vec<(Vec<u8>, MalformedReason)> {
        let good = batch_op(BATCH_PUT, 1, 1, b"kv");
        let then = |bad: Vec<u8>| [good.clone(), bad].concat();
        vec![
            (Vec::new(), MalformedReason::EmptyBatch),
            (batch_op(0, 1, 1, b"kv"), MalformedReason::UnknownBatchOp(0)),
            (
                then(batch_op(3, 1, 0, b"k")),
                MalformedReason::UnknownBatchOp(3),
            ),
            (
                batch_op(BATCH_PUT, 3, 0, b"kk"),
                MalformedReason::BatchLengthOutOfRange,
            ),
            (
                then(batch_op(BATCH_PUT, 1, 2, b"kv")),
                MalformedReason::BatchLengthOutOfRange,
            ),
            (
                batch_op(BATCH_PUT, u32::MAX, u32::MAX, b"kv"),
                MalformedReason::BatchLengthOutOfRange,
            ),
            (
                batch_op(BATCH_DEL, 1, u32::MAX, b"k"),
                MalformedReason::BatchLengthOutOfRange,
            ),
            (
                batch_op(BATCH_DEL, 1, 1, b"kv"),
                MalformedReason::BatchDelWithValue,
            ),
            (
                then(batch_op(BATCH_DEL, 1, 1, b"kv")),
                MalformedReason::BatchDelWithValue,
            ),
            (
                batch_op(BATCH_PUT, 0, 1, b"v"),
                MalformedReason::BatchEmptyKey,
            ),
            (
                batch_op(BATCH_DEL, 0, 0, b""),
                MalformedReason::BatchEmptyKey,
            ),
            (
                then(batch_op(BATCH_PUT, 0, 0, b"")),
                MalformedReason::BatchEmptyKey,
            ),
            (then(vec![BATCH_PUT]), MalformedReason::BatchTrailingBytes),
            (
                then(batch_op(BATCH_DEL, 1, 0, b"")[..8].to_vec()),
                MalformedReason::BatchTrailingBytes,
            ),
            (vec![0; 8], MalformedReason::BatchTrailingBytes),
            (then(vec![0]), MalformedReason::BatchTrailingBytes),
        ]
    }

    #[test]
    fn checksummed_but_impossible_batches_are_malformed() {
        for (batch_body, reason) in impossible_batch_bodies() {
            assert_eq!(Batch::from_body(&batch_body), Err(reason), "{batch_body:?}");
            // The checksum is right: the structure check is what refuses it.
            let record = record_with_body(&body(OP_BATCH, 0, &batch_body));
            let expected = Err(DecodeError::Malformed(reason));
            assert_eq!(decode(&record), expected, "{batch_body:?}");
        }
        // A batch carries its keys in its operations, none of its own.
        let keyed = [b"k".as_slice(), &batch_op(BATCH_PUT, 1, 1, b"kv")].concat();
        let record = record_with_body(&body(OP_BATCH, 1, &keyed));
        let expected = Err(DecodeError::Malformed(MalformedReason::BatchWithKey));
        assert_eq!(decode(&record), expected);
    }

    #[test]
    fn a_body_checked_by_hand_is_the_body_built() {
        let body = [
            batch_op(BATCH_DEL, 1, 0, b"k"),
            batch_op(BATCH_PUT, 2, 0, b"\x00\n"),
        ]
        .concat();
        let batch = Batch::from_body(&body).expect("a valid body");
        let mut builder = BatchBuilder::new();
        builder.push_del(b"k");
        builder.push_put(b"\x00\n", b"");
        assert_eq!(builder.op(), Op::Batch(batch));
        assert_eq!(batch.body(), &body[..]);
        assert_eq!(
            format!("{batch:?}"),
            r#"Batch[Del { key: [107] }, Put { key: [0, 10], value: [] }]"#
        );
    }

    #[test]
    fn the_largest_batch_that_fits_round_trips() {
        let mut builder = BatchBuilder::new();
        builder.push_put(b"a", b"1");
        let room = MAX_KEY_AND_VALUE_BYTES - builder.body_bytes().len() - BATCH_OP_HEADER_BYTES;
        assert!(builder.fits_with(1, room - 1));
        assert!(!builder.fits_with(1, room), "one byte over");
        assert!(!builder.fits_with(usize::MAX, usize::MAX), "saturates");
        let value = vec![b'v'; room - 1];
        builder.push_put(b"b", &value);
        assert!(!builder.fits_with(1, 0), "full");
        assert!(fits(&builder.op()));
        let entry = Entry {
            epoch: 1,
            index: 1,
            commit: 0,
            op: builder.op(),
        };
        assert_eq!(encoded_len(&entry), MAX_RECORD_BYTES);
        let bytes = encoded(&entry);
        assert_eq!(bytes.len(), MAX_RECORD_BYTES);
        assert_eq!(decode(&bytes), Ok((entry, MAX_RECORD_BYTES)));
        builder.push_del(b"c");
        assert!(!fits(&builder.op()), "a del more does not fit");
    }

    #[test]
    fn a_builder_counts_and_clears() {
        let mut builder = BatchBuilder::new();
        assert!(builder.is_empty());
        assert_eq!((builder.count(), builder.body_bytes()), (0, &b""[..]));
        builder.push_put(b"k", b"v");
        builder.push_del(b"k");
        builder.push_put(b"k", b"w");
        assert_eq!((builder.count(), builder.is_empty()), (3, false));
        let Op::Batch(batch) = builder.op() else {
            panic!("not a batch");
        };
        assert_eq!(batch.len(), 3);
        assert_eq!(
            builder.body_bytes().len(),
            3 * (BATCH_OP_HEADER_BYTES + 1) + 2
        );
        builder.clear();
        assert!(builder.is_empty());
        assert_eq!((builder.count(), builder.body_bytes()), (0, &b""[..]));
    }

    #[test]
    #[should_panic(expected = "an empty batch is no record")]
    fn an_empty_builder_makes_no_op() {
        BatchBuilder::new().op();
    }

    #[test]
    #[should_panic(expected = "a batch operation needs a key")]
    fn a_batch_refuses_an_empty_key() {
        BatchBuilder::new().push_del(b"");
    }

    #[test]
    fn batch_errors_display_their_cause() {
        let cases = [
            (
                MalformedReason::BatchWithKey,
                "a batch with a key of its own",
            ),
            (MalformedReason::EmptyBatch, "a batch with no operations"),
            (
                MalformedReason::UnknownBatchOp(7),
                "unknown operation 7 in a batch",
            ),
            (
                MalformedReason::BatchLengthOutOfRange,
                "a key or value length in a batch runs past the end of the body",
            ),
            (
                MalformedReason::BatchTrailingBytes,
                "bytes after the last operation of a batch",
            ),
            (
                MalformedReason::BatchDelWithValue,
                "a del in a batch with value bytes",
            ),
            (
                MalformedReason::BatchEmptyKey,
                "an operation in a batch with an empty key",
            ),
        ];
        for (reason, text) in cases {
            let error = DecodeError::Malformed(reason);
            assert_eq!(error.to_string(), format!("malformed record: {text}"));
        }
    }

    #[test]
    fn errors_display_their_cause() {
        assert_eq!(DecodeError::Checksum.to_string(), "checksum mismatch");
        let unknown = DecodeError::Malformed(MalformedReason::UnknownOp(9));
        assert_eq!(unknown.to_string(), "malformed record: unknown op 9");
    }
}
