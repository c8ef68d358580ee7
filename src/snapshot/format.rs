//! The snapshot format: encoding a store image chunk by chunk, and checked,
//! incremental decoding of it. Pure: no I/O; the only allocations are the
//! chunk buffers the encoder hands out and the one-chunk buffer the decoder
//! keeps for a chunk split across calls.
//!
//! Invariants the decoder enforces, so that bytes which decode are exactly
//! bytes the [`Encoder`] could have produced (chunk boundaries aside, which are
//! the writer's choice):
//! - every length is checked against its named bound before anything waits
//!   for (or allocates) that many bytes: a corrupt chunk length is refused
//!   from its 8-byte chunk header alone;
//! - every checksum (header, chunk, trailer) is verified before any field it
//!   covers is trusted, and no pair of a chunk is handed out before the whole
//!   chunk is verified: a chunk's pairs arrive all or none;
//! - the trailer must agree with what was read (pair and chunk counts, its own
//!   offset, the chain of chunk checksums), so a lost, repeated or reordered
//!   chunk is caught, and nothing may follow it.
//!
//! It never interprets a pair beyond the fields the format constrains; whether
//! keys are distinct is the loader's business.

use std::fmt;

/// The first bytes of every snapshot; the last byte is the format version.
pub const SNAPSHOT_MAGIC: [u8; 8] = *b"KVSNAP\x00\x01";

/// Header: magic (8), index (8), epoch (8), reserved (4), checksum (4).
pub const HEADER_BYTES: usize = 32;

/// Trailer: zero marker (4), checksum (4), pairs (8), chunks (8),
/// trailer offset (8), chain (4), reserved (4).
pub const TRAILER_BYTES: usize = 40;

/// Bytes before a chunk body: `body_len` and the body's checksum.
pub const CHUNK_HEADER_BYTES: usize = 8;

/// The `pair_len` prefix in front of every pair inside a chunk body.
pub const PAIR_LENGTH_BYTES: usize = 4;

/// Fixed part of every pair: key length (4) and write index (8).
pub const PAIR_FIXED_BYTES: usize = 12;

/// The encoder closes a chunk before a pair that would take its body past
/// this size; only a single pair larger than it makes a larger chunk.
pub const TARGET_CHUNK_BODY_BYTES: usize = 256 * 1024;

/// The largest pair (after its length prefix). A pair is smaller than the log
/// record that wrote it, so every pair the store can hold fits.
pub const MAX_PAIR_BYTES: usize = crate::log::MAX_RECORD_BODY_BYTES;

/// The largest chunk body: one pair of the largest size. A larger `body_len`
/// is [`MalformedReason::ChunkTooLarge`], detected from the chunk header alone.
pub const MAX_CHUNK_BODY_BYTES: usize = PAIR_LENGTH_BYTES + MAX_PAIR_BYTES;

/// The smallest chunk body that holds a pair; bounds how many pairs a file of
/// a given size can claim.
const MIN_CHUNK_PAIR_BYTES: usize = PAIR_LENGTH_BYTES + PAIR_FIXED_BYTES;

/// A buffer is kept for reuse (the encoder's spare chunk, the decoder's split
/// chunk) only up to this capacity, so one huge pair does not pin its memory
/// for the rest of the snapshot.
const RETAINED_BUFFER_BYTES: usize = CHUNK_HEADER_BYTES + TARGET_CHUNK_BODY_BYTES;

/// Where the snapshot stands in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The last log index the image includes.
    pub index: u64,
    /// Epoch of the record at `index`; 0 when `index` is 0.
    pub epoch: u64,
}

/// What a whole, valid snapshot holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// The header's index.
    pub index: u64,
    /// The header's epoch.
    pub epoch: u64,
    /// Pairs in the file.
    pub pairs: u64,
    /// Chunks in the file.
    pub chunks: u64,
    /// Bytes in the file: header, chunks and trailer.
    pub file_bytes: u64,
}

/// The trailer's fields, as [`decode_trailer`] reads them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trailer {
    /// Pairs in the file.
    pub pairs: u64,
    /// Chunks in the file.
    pub chunks: u64,
    /// Bytes before the trailer: the header and every chunk.
    pub trailer_offset: u64,
    /// crc32c over the 4-byte LE checksums of every chunk, in order.
    pub chain: u32,
}

impl Trailer {
    /// The pair count, bounded by what the bytes before the trailer could
    /// hold: a caller may size a table from it without trusting it.
    pub fn pairs_bound(&self) -> u64 {
        let chunk_bytes = self.trailer_offset.saturating_sub(HEADER_BYTES as u64);
        self.pairs.min(chunk_bytes / MIN_CHUNK_PAIR_BYTES as u64)
    }
}

/// Why bytes are not a valid snapshot. Each error names a byte offset (see
/// [`FormatError::offset`]): the start of the structure at fault, except for
/// `Truncated` and `TrailingBytes`, which name where the data ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FormatError {
    /// The data does not start with [`SNAPSHOT_MAGIC`]: not a snapshot, or a
    /// format version this build cannot read. Offset 0.
    BadMagic,
    /// The header does not match its checksum. Offset 0.
    HeaderChecksum,
    /// The chunk whose header is at `offset` does not match its checksum.
    ChunkChecksum { offset: u64 },
    /// The trailer at `offset` does not match its checksum.
    TrailerChecksum { offset: u64 },
    /// The structure at `offset` (header, chunk, pair or trailer) is
    /// checksummed but impossible.
    Malformed {
        offset: u64,
        reason: MalformedReason,
    },
    /// The data ends at `offset`, before the trailer.
    Truncated { offset: u64 },
    /// The trailer at `offset` disagrees with the chunks read: `what` names
    /// the field.
    TrailerMismatch { offset: u64, what: &'static str },
    /// Bytes follow the trailer, which ends at `offset`.
    TrailingBytes { offset: u64 },
}

/// Why a checksummed structure is impossible.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MalformedReason {
    /// A chunk's `body_len` exceeds [`MAX_CHUNK_BODY_BYTES`].
    ChunkTooLarge,
    /// A `pair_len` below [`PAIR_FIXED_BYTES`].
    PairTooShort,
    /// A `pair_len` above [`MAX_PAIR_BYTES`].
    PairTooLarge,
    /// A pair (or its length prefix) runs past the end of its chunk body.
    PairPastChunkEnd,
    /// A key length that runs past the end of its pair.
    KeyLengthOutOfRange,
    /// A pair written by a log record after the snapshot's index.
    WriteIndexAfterSnapshot {
        write_index: u64,
        snapshot_index: u64,
    },
    /// A reserved field that is not zero.
    ReservedNotZero,
    /// A nonzero epoch in the header of a snapshot at index 0.
    EpochWithoutIndex,
    /// No zero length marker where the trailer should start.
    NotATrailer,
}

impl FormatError {
    /// The byte offset the error names.
    pub fn offset(&self) -> u64 {
        match *self {
            FormatError::BadMagic | FormatError::HeaderChecksum => 0,
            FormatError::ChunkChecksum { offset }
            | FormatError::TrailerChecksum { offset }
            | FormatError::Malformed { offset, .. }
            | FormatError::Truncated { offset }
            | FormatError::TrailerMismatch { offset, .. }
            | FormatError::TrailingBytes { offset } => offset,
        }
    }
}

impl fmt::Display for FormatError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "corrupt at byte {}: ", self.offset())?;
        match self {
            FormatError::BadMagic => formatter.write_str(
                "not a kvstore snapshot (no snapshot magic, or an unsupported format version)",
            ),
            FormatError::HeaderChecksum => formatter.write_str("header checksum mismatch"),
            FormatError::ChunkChecksum { .. } => formatter.write_str("chunk checksum mismatch"),
            FormatError::TrailerChecksum { .. } => formatter.write_str("trailer checksum mismatch"),
            FormatError::Malformed { reason, .. } => write!(formatter, "malformed: {reason}"),
            FormatError::Truncated { .. } => {
                formatter.write_str("the data ends before the trailer")
            }
            FormatError::TrailerMismatch { what, .. } => {
                write!(
                    formatter,
                    "the trailer's {what} disagrees with the chunks read"
                )
            }
            FormatError::TrailingBytes { .. } => formatter.write_str("bytes follow the trailer"),
        }
    }
}

impl fmt::Display for MalformedReason {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MalformedReason::ChunkTooLarge => write!(
                formatter,
                "chunk body length exceeds the maximum of {MAX_CHUNK_BODY_BYTES} bytes"
            ),
            MalformedReason::PairTooShort => write!(
                formatter,
                "pair length is below the minimum of {PAIR_FIXED_BYTES} bytes"
            ),
            MalformedReason::PairTooLarge => write!(
                formatter,
                "pair length exceeds the maximum of {MAX_PAIR_BYTES} bytes"
            ),
            MalformedReason::PairPastChunkEnd => {
                formatter.write_str("pair runs past the end of its chunk")
            }
            MalformedReason::KeyLengthOutOfRange => {
                formatter.write_str("key length runs past the end of the pair")
            }
            MalformedReason::WriteIndexAfterSnapshot {
                write_index,
                snapshot_index,
            } => write!(
                formatter,
                "pair written at index {write_index}, after the snapshot's index {snapshot_index}"
            ),
            MalformedReason::ReservedNotZero => formatter.write_str("reserved field is not zero"),
            MalformedReason::EpochWithoutIndex => {
                formatter.write_str("nonzero epoch in a snapshot of index 0")
            }
            MalformedReason::NotATrailer => {
                formatter.write_str("no zero length marker where the trailer starts")
            }
        }
    }
}

impl std::error::Error for FormatError {}

/// The little-endian integer at `bytes[at..at + N]` of a structure whose
/// length was checked by its caller.
fn field<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&bytes[at..at + N]);
    out
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(field(bytes, at))
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(field(bytes, at))
}

fn encode_header(header: Header) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(HEADER_BYTES);
    bytes.extend_from_slice(&SNAPSHOT_MAGIC);
    bytes.extend_from_slice(&header.index.to_le_bytes());
    bytes.extend_from_slice(&header.epoch.to_le_bytes());
    bytes.extend_from_slice(&0u32.to_le_bytes());
    let checksum = crc32c::crc32c(&bytes);
    bytes.extend_from_slice(&checksum.to_le_bytes());
    debug_assert_eq!(bytes.len(), HEADER_BYTES);
    bytes
}

/// Checks and reads the header (exactly [`HEADER_BYTES`]).
fn decode_header(bytes: &[u8]) -> Result<Header, FormatError> {
    debug_assert_eq!(bytes.len(), HEADER_BYTES);
    if bytes[..SNAPSHOT_MAGIC.len()] != SNAPSHOT_MAGIC {
        return Err(FormatError::BadMagic);
    }
    if crc32c::crc32c(&bytes[..28]) != u32_at(bytes, 28) {
        return Err(FormatError::HeaderChecksum);
    }
    let malformed = |reason| FormatError::Malformed { offset: 0, reason };
    if u32_at(bytes, 24) != 0 {
        return Err(malformed(MalformedReason::ReservedNotZero));
    }
    let header = Header {
        index: u64_at(bytes, 8),
        epoch: u64_at(bytes, 16),
    };
    if header.index == 0 && header.epoch != 0 {
        return Err(malformed(MalformedReason::EpochWithoutIndex));
    }
    Ok(header)
}

/// Appends the trailer for `trailer` to `out`.
fn encode_trailer(trailer: &Trailer, out: &mut Vec<u8>) {
    let trailer_start = out.len();
    out.extend_from_slice(&0u32.to_le_bytes());
    // Patched once the covered fields are in place.
    out.extend_from_slice(&0u32.to_le_bytes());
    let covered_start = out.len();
    out.extend_from_slice(&trailer.pairs.to_le_bytes());
    out.extend_from_slice(&trailer.chunks.to_le_bytes());
    out.extend_from_slice(&trailer.trailer_offset.to_le_bytes());
    out.extend_from_slice(&trailer.chain.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    let checksum = crc32c::crc32c(&out[covered_start..]);
    out[trailer_start + 4..covered_start].copy_from_slice(&checksum.to_le_bytes());
    debug_assert_eq!(out.len() - trailer_start, TRAILER_BYTES);
}

/// Checks and reads the trailer in `bytes`, found at file offset `offset`.
/// Checks the trailer on its own: whether it agrees with the chunks before
/// it is for the reader of those chunks to say. A reader that knows the
/// file's length can read the pair count first this way.
pub fn decode_trailer(bytes: &[u8; TRAILER_BYTES], offset: u64) -> Result<Trailer, FormatError> {
    let malformed = |reason| FormatError::Malformed { offset, reason };
    if u32_at(bytes, 0) != 0 {
        return Err(malformed(MalformedReason::NotATrailer));
    }
    if crc32c::crc32c(&bytes[8..]) != u32_at(bytes, 4) {
        return Err(FormatError::TrailerChecksum { offset });
    }
    if u32_at(bytes, 36) != 0 {
        return Err(malformed(MalformedReason::ReservedNotZero));
    }
    Ok(Trailer {
        pairs: u64_at(bytes, 8),
        chunks: u64_at(bytes, 16),
        trailer_offset: u64_at(bytes, 24),
        chain: u32_at(bytes, 32),
    })
}

/// Checks a pair's length (after its prefix) against the format's bounds.
fn check_pair_length(pair_bytes: usize) -> Result<(), MalformedReason> {
    if pair_bytes < PAIR_FIXED_BYTES {
        return Err(MalformedReason::PairTooShort);
    }
    if pair_bytes > MAX_PAIR_BYTES {
        return Err(MalformedReason::PairTooLarge);
    }
    Ok(())
}

/// Checks one pair (without its prefix) of a snapshot at `snapshot_index`.
fn check_pair(pair: &[u8], snapshot_index: u64) -> Result<(), MalformedReason> {
    check_pair_length(pair.len())?;
    let key_bytes = u32_at(pair, 0) as usize;
    if key_bytes > pair.len() - PAIR_FIXED_BYTES {
        return Err(MalformedReason::KeyLengthOutOfRange);
    }
    let write_index = u64_at(pair, 4);
    if write_index > snapshot_index {
        return Err(MalformedReason::WriteIndexAfterSnapshot {
            write_index,
            snapshot_index,
        });
    }
    Ok(())
}

/// Splits the first pair (without its prefix) off a chunk body's `bytes`;
/// checks only that its length is within bounds and inside the body.
fn split_pair(bytes: &[u8]) -> Result<(&[u8], &[u8]), MalformedReason> {
    let (length, after_length) = bytes
        .split_first_chunk::<PAIR_LENGTH_BYTES>()
        .ok_or(MalformedReason::PairPastChunkEnd)?;
    // u32 to usize is lossless on every target this server runs on.
    let pair_bytes = u32::from_le_bytes(*length) as usize;
    check_pair_length(pair_bytes)?;
    after_length
        .split_at_checked(pair_bytes)
        .ok_or(MalformedReason::PairPastChunkEnd)
}

/// Checks every pair of a checksummed chunk body that starts at file offset
/// `body_offset`; returns how many it holds.
fn validate_pairs(body: &[u8], body_offset: u64, snapshot_index: u64) -> Result<u64, FormatError> {
    let mut rest = body;
    let mut pairs = 0;
    while !rest.is_empty() {
        let offset = body_offset + (body.len() - rest.len()) as u64;
        let malformed = |reason| FormatError::Malformed { offset, reason };
        let (pair, after_pair) = split_pair(rest).map_err(malformed)?;
        check_pair(pair, snapshot_index).map_err(malformed)?;
        rest = after_pair;
        pairs += 1;
    }
    Ok(pairs)
}

/// Hands out every pair of a body that [`validate_pairs`] accepted.
fn deliver_pairs(body: &[u8], on_pair: &mut impl FnMut(&[u8])) {
    let mut rest = body;
    while let Ok((pair, after_pair)) = split_pair(rest) {
        on_pair(pair);
        rest = after_pair;
    }
    debug_assert!(rest.is_empty(), "pairs are validated before delivery");
}

/// Builds a snapshot incrementally, chunk by chunk, without copying a pair
/// twice: each pair is copied once, into the chunk buffer that is handed out.
#[derive(Debug)]
pub struct Encoder {
    header: Header,
    /// Empty, or the chunk being built: a placeholder chunk header, then the
    /// body so far.
    chunk: Vec<u8>,
    /// A written chunk buffer given back by [`Encoder::recycle`].
    spare: Option<Vec<u8>>,
    pairs: u64,
    chunks: u64,
    chain: u32,
    /// Bytes before the chunk being built: the header and closed chunks.
    closed_bytes: u64,
}

impl Encoder {
    /// Starts a snapshot; returns the encoder and the header bytes to write
    /// first.
    ///
    /// # Panics
    /// If `header` has a nonzero epoch at index 0: no record has an epoch
    /// before the first one, and the decoder refuses such a header.
    pub fn new(header: Header) -> (Encoder, Vec<u8>) {
        assert!(
            header.index != 0 || header.epoch == 0,
            "a snapshot at index 0 has epoch 0, not {}",
            header.epoch
        );
        let encoder = Encoder {
            header,
            chunk: Vec::new(),
            spare: None,
            pairs: 0,
            chunks: 0,
            chain: 0,
            closed_bytes: HEADER_BYTES as u64,
        };
        (encoder, encode_header(header))
    }

    /// Adds one pair: its bytes without the `pair_len` prefix, i.e. the
    /// store's `StoredPair` layout. Returns a completed chunk (chunk header
    /// and body, ready to write) when adding this pair closes one: a chunk is
    /// closed before a pair that would take its body past
    /// [`TARGET_CHUNK_BODY_BYTES`]. A chunk always holds at least one pair,
    /// so one huge pair makes one huge chunk.
    ///
    /// Debug-asserts that the pair is valid for this snapshot's header.
    ///
    /// # Panics
    /// If the pair is longer than [`MAX_PAIR_BYTES`]: no reader would accept
    /// the snapshot. The store holds no pair that large.
    pub fn push_pair(&mut self, pair: &[u8]) -> Option<Vec<u8>> {
        assert!(
            pair.len() <= MAX_PAIR_BYTES,
            "snapshot pair of {} bytes exceeds MAX_PAIR_BYTES",
            pair.len()
        );
        debug_assert_eq!(check_pair(pair, self.header.index), Ok(()), "invalid pair");
        let body_bytes = self.chunk.len().saturating_sub(CHUNK_HEADER_BYTES);
        let would_pass_target =
            body_bytes + PAIR_LENGTH_BYTES + pair.len() > TARGET_CHUNK_BODY_BYTES;
        let closed = if !self.chunk.is_empty() && would_pass_target {
            Some(self.close_chunk())
        } else {
            None
        };
        if self.chunk.is_empty() {
            self.start_chunk(pair.len());
        }
        // Fits in u32: bounded by MAX_PAIR_BYTES just above.
        self.chunk
            .extend_from_slice(&(pair.len() as u32).to_le_bytes());
        self.chunk.extend_from_slice(pair);
        self.pairs += 1;
        closed
    }

    /// Bytes of the chunk being built (not yet returned): 0, or its chunk
    /// header and body so far.
    pub fn pending_bytes(&self) -> usize {
        self.chunk.len()
    }

    /// Closes the chunk being built, if it holds any pair.
    pub fn flush(&mut self) -> Option<Vec<u8>> {
        if self.chunk.is_empty() {
            None
        } else {
            Some(self.close_chunk())
        }
    }

    /// Gives back a buffer that was written, so the next chunk reuses its
    /// allocation. Buffers larger than one target chunk are dropped.
    pub fn recycle(&mut self, mut buffer: Vec<u8>) {
        buffer.clear();
        let spare_capacity = self.spare.as_ref().map_or(0, Vec::capacity);
        if buffer.capacity() <= RETAINED_BUFFER_BYTES && buffer.capacity() > spare_capacity {
            self.spare = Some(buffer);
        }
    }

    /// Ends the snapshot: returns the last chunk (if any) followed by the
    /// trailer, and the summary of the whole file.
    pub fn finish(mut self) -> (Vec<u8>, Summary) {
        let mut bytes = self.flush().unwrap_or_else(|| {
            let mut spare = self.spare.take().unwrap_or_default();
            spare.reserve_exact(TRAILER_BYTES);
            spare
        });
        let trailer = Trailer {
            pairs: self.pairs,
            chunks: self.chunks,
            trailer_offset: self.closed_bytes,
            chain: self.chain,
        };
        encode_trailer(&trailer, &mut bytes);
        let summary = Summary {
            index: self.header.index,
            epoch: self.header.epoch,
            pairs: self.pairs,
            chunks: self.chunks,
            file_bytes: self.closed_bytes + TRAILER_BYTES as u64,
        };
        (bytes, summary)
    }

    /// Starts a chunk in the spare buffer (or a new one) with room for a
    /// target-sized body, or for a pair of `pair_bytes` alone if larger.
    fn start_chunk(&mut self, pair_bytes: usize) {
        debug_assert!(self.chunk.is_empty());
        let body_bytes = TARGET_CHUNK_BODY_BYTES.max(PAIR_LENGTH_BYTES + pair_bytes);
        let mut chunk = self.spare.take().unwrap_or_default();
        chunk.reserve_exact(CHUNK_HEADER_BYTES + body_bytes);
        // The chunk header is patched in when the chunk closes.
        chunk.extend_from_slice(&[0; CHUNK_HEADER_BYTES]);
        self.chunk = chunk;
    }

    /// Writes the chunk header of the chunk being built and hands it out.
    fn close_chunk(&mut self) -> Vec<u8> {
        let mut chunk = std::mem::take(&mut self.chunk);
        let body_bytes = chunk.len() - CHUNK_HEADER_BYTES;
        debug_assert!(body_bytes >= MIN_CHUNK_PAIR_BYTES);
        debug_assert!(body_bytes <= MAX_CHUNK_BODY_BYTES);
        let checksum = crc32c::crc32c(&chunk[CHUNK_HEADER_BYTES..]);
        // Fits in u32: at most MAX_CHUNK_BODY_BYTES.
        chunk[..4].copy_from_slice(&(body_bytes as u32).to_le_bytes());
        chunk[4..CHUNK_HEADER_BYTES].copy_from_slice(&checksum.to_le_bytes());
        self.chain = crc32c::crc32c_append(self.chain, &checksum.to_le_bytes());
        self.chunks += 1;
        self.closed_bytes += chunk.len() as u64;
        chunk
    }
}

/// What the decoder expects next.
#[derive(Debug, Clone, Copy)]
enum Stage {
    Header,
    /// A chunk or the trailer.
    Chunks(Header),
    /// A valid trailer was read; nothing may follow.
    Complete(Summary),
}

/// Incremental validating decoder: takes the file's bytes in pieces of any
/// size (a network transfer cuts them anywhere), verifies every checksum and
/// field, and hands out each pair of each verified chunk.
///
/// The data is a sequence of units: the header, each chunk, the trailer.
/// Units wholly inside one [`Decoder::feed`] are decoded in place; only a unit
/// split across calls is copied, into a buffer that never holds more than
/// that one unit.
#[derive(Debug)]
pub struct Decoder {
    stage: Stage,
    /// The start of a unit split across calls (empty between units).
    pending: Vec<u8>,
    /// File offset of the first byte of the next unit (or of `pending`).
    unit_offset: u64,
    pairs: u64,
    chunks: u64,
    chain: u32,
    /// The first error; every later call returns it again.
    failed: Option<FormatError>,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new()
    }
}

impl Decoder {
    /// A decoder expecting the first byte of a snapshot.
    pub fn new() -> Decoder {
        Decoder {
            stage: Stage::Header,
            pending: Vec::new(),
            unit_offset: 0,
            pairs: 0,
            chunks: 0,
            chain: 0,
            failed: None,
        }
    }

    /// Feeds the next bytes. Calls `on_pair(pair_bytes_without_length_prefix)`
    /// for every pair of every complete, verified chunk, in file order.
    /// Returns the first error, naming the file offset; after an error every
    /// call returns that error again.
    ///
    /// A chunk's `body_len` is checked against [`MAX_CHUNK_BODY_BYTES`] from
    /// its 8-byte chunk header alone, before any of its body is buffered.
    pub fn feed(
        &mut self,
        bytes: &[u8],
        mut on_pair: impl FnMut(&[u8]),
    ) -> Result<(), FormatError> {
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        let result = self.feed_units(bytes, &mut on_pair);
        if let Err(error) = &result {
            self.failed = Some(error.clone());
        }
        result
    }

    /// The header, once it has been read and verified.
    pub fn header(&self) -> Option<Header> {
        match self.stage {
            Stage::Header => None,
            Stage::Chunks(header) => Some(header),
            Stage::Complete(summary) => Some(Header {
                index: summary.index,
                epoch: summary.epoch,
            }),
        }
    }

    /// Bytes accepted so far: every byte fed before the first error,
    /// including the start of a unit held in the buffer.
    pub fn consumed_bytes(&self) -> u64 {
        self.unit_offset + self.pending.len() as u64
    }

    /// True once a valid trailer has been read.
    pub fn is_complete(&self) -> bool {
        matches!(self.stage, Stage::Complete(_))
    }

    /// The input ended here: the summary if a valid trailer ended it
    /// exactly, else the error ([`FormatError::Truncated`] at the offset
    /// where data is missing, or the error a feed already returned).
    pub fn finish(&self) -> Result<Summary, FormatError> {
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        match self.stage {
            Stage::Complete(summary) => Ok(summary),
            Stage::Header | Stage::Chunks(_) => Err(FormatError::Truncated {
                offset: self.consumed_bytes(),
            }),
        }
    }

    /// Capacity of the split-unit buffer, to check that a corrupt length
    /// never makes the decoder allocate.
    #[cfg(test)]
    pub(crate) fn buffer_capacity_bytes(&self) -> usize {
        self.pending.capacity()
    }

    fn feed_units(
        &mut self,
        mut input: &[u8],
        on_pair: &mut impl FnMut(&[u8]),
    ) -> Result<(), FormatError> {
        while !input.is_empty() {
            if self.pending.is_empty()
                && let Some(unit_bytes) = self.unit_bytes(input)?
                && let Some((unit, rest)) = input.split_at_checked(unit_bytes)
            {
                self.decode_unit(unit, on_pair)?;
                input = rest;
            } else {
                input = self.buffer(input, on_pair)?;
            }
        }
        Ok(())
    }

    /// Copies the bytes of `input` that belong to the unit split across
    /// calls into `pending`, decodes the unit once it is whole, and returns
    /// the rest of `input`.
    fn buffer<'input>(
        &mut self,
        input: &'input [u8],
        on_pair: &mut impl FnMut(&[u8]),
    ) -> Result<&'input [u8], FormatError> {
        // Until the chunk header is whole, only its 8 bytes are wanted: the
        // length is checked before anything more is buffered.
        let wanted_bytes = self
            .unit_bytes(&self.pending)?
            .unwrap_or(CHUNK_HEADER_BYTES);
        let (taken, rest) = input.split_at(input.len().min(wanted_bytes - self.pending.len()));
        self.pending
            .reserve_exact(wanted_bytes - self.pending.len());
        self.pending.extend_from_slice(taken);
        if self.unit_bytes(&self.pending)? == Some(self.pending.len()) {
            let unit = std::mem::take(&mut self.pending);
            let result = self.decode_unit(&unit, on_pair);
            if unit.capacity() <= RETAINED_BUFFER_BYTES {
                self.pending = unit;
                self.pending.clear();
            }
            result?;
        }
        Ok(rest)
    }

    /// The length of the unit that `start` begins, or `None` while `start` is
    /// too short to tell. Refuses what the first bytes already show is wrong:
    /// a bad magic, an oversized chunk, anything after the trailer.
    fn unit_bytes(&self, start: &[u8]) -> Result<Option<usize>, FormatError> {
        match self.stage {
            Stage::Header => {
                let magic_bytes = start.len().min(SNAPSHOT_MAGIC.len());
                if start[..magic_bytes] != SNAPSHOT_MAGIC[..magic_bytes] {
                    return Err(FormatError::BadMagic);
                }
                Ok(Some(HEADER_BYTES))
            }
            Stage::Chunks(_) => {
                let Some(body_len) = start.first_chunk::<4>() else {
                    return Ok(None);
                };
                match u32::from_le_bytes(*body_len) as usize {
                    0 => Ok(Some(TRAILER_BYTES)),
                    body_bytes if body_bytes <= MAX_CHUNK_BODY_BYTES => {
                        Ok(Some(CHUNK_HEADER_BYTES + body_bytes))
                    }
                    _ => Err(FormatError::Malformed {
                        offset: self.unit_offset,
                        reason: MalformedReason::ChunkTooLarge,
                    }),
                }
            }
            Stage::Complete(_) => Err(FormatError::TrailingBytes {
                offset: self.unit_offset,
            }),
        }
    }

    /// Decodes one whole unit, the one [`Decoder::unit_bytes`] measured.
    fn decode_unit(
        &mut self,
        unit: &[u8],
        on_pair: &mut impl FnMut(&[u8]),
    ) -> Result<(), FormatError> {
        self.stage = match self.stage {
            Stage::Header => Stage::Chunks(decode_header(unit)?),
            Stage::Chunks(header) => match unit.first_chunk::<TRAILER_BYTES>() {
                Some(trailer) if unit.len() == TRAILER_BYTES && u32_at(unit, 0) == 0 => {
                    Stage::Complete(self.decode_final_trailer(header, trailer)?)
                }
                _ => {
                    self.decode_chunk(header, unit, on_pair)?;
                    Stage::Chunks(header)
                }
            },
            Stage::Complete(_) => unreachable!("unit_bytes refuses bytes after the trailer"),
        };
        self.unit_offset += unit.len() as u64;
        Ok(())
    }

    /// Verifies one chunk (chunk header and body), then hands out its pairs.
    fn decode_chunk(
        &mut self,
        header: Header,
        chunk: &[u8],
        on_pair: &mut impl FnMut(&[u8]),
    ) -> Result<(), FormatError> {
        let chunk_offset = self.unit_offset;
        let (chunk_header, body) = chunk.split_at(CHUNK_HEADER_BYTES);
        let checksum = u32_at(chunk_header, 4);
        if crc32c::crc32c(body) != checksum {
            return Err(FormatError::ChunkChecksum {
                offset: chunk_offset,
            });
        }
        let body_offset = chunk_offset + CHUNK_HEADER_BYTES as u64;
        let pairs = validate_pairs(body, body_offset, header.index)?;
        deliver_pairs(body, on_pair);
        self.pairs += pairs;
        self.chunks += 1;
        self.chain = crc32c::crc32c_append(self.chain, &checksum.to_le_bytes());
        Ok(())
    }

    /// Verifies the trailer and that it agrees with every chunk read.
    fn decode_final_trailer(
        &self,
        header: Header,
        bytes: &[u8; TRAILER_BYTES],
    ) -> Result<Summary, FormatError> {
        let offset = self.unit_offset;
        let trailer = decode_trailer(bytes, offset)?;
        let disagreement = if trailer.chunks != self.chunks {
            Some("chunk count")
        } else if trailer.pairs != self.pairs {
            Some("pair count")
        } else if trailer.trailer_offset != offset {
            Some("trailer offset")
        } else if trailer.chain != self.chain {
            Some("chunk checksum chain")
        } else {
            None
        };
        if let Some(what) = disagreement {
            return Err(FormatError::TrailerMismatch { offset, what });
        }
        Ok(Summary {
            index: header.index,
            epoch: header.epoch,
            pairs: trailer.pairs,
            chunks: trailer.chunks,
            file_bytes: offset + TRAILER_BYTES as u64,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A pair in the store's layout: key length, write index, key, value.
    pub(crate) fn pair(key: &[u8], write_index: u64, value: &[u8]) -> Vec<u8> {
        let mut bytes = (key.len() as u32).to_le_bytes().to_vec();
        bytes.extend_from_slice(&write_index.to_le_bytes());
        bytes.extend_from_slice(key);
        bytes.extend_from_slice(value);
        bytes
    }

    const HEADER: Header = Header {
        index: 40,
        epoch: 3,
    };

    /// An encoded file: all its bytes, the offset of every chunk, the summary.
    struct Encoded {
        bytes: Vec<u8>,
        chunk_offsets: Vec<u64>,
        summary: Summary,
    }

    /// Encodes `pairs`, closing a chunk early after each pair whose position
    /// is in `flush_after`.
    fn encode(header: Header, pairs: &[Vec<u8>], flush_after: &[usize]) -> Encoded {
        let (mut encoder, mut bytes) = Encoder::new(header);
        let mut chunk_offsets = Vec::new();
        let mut write = |bytes: &mut Vec<u8>, chunk: Vec<u8>| {
            chunk_offsets.push(bytes.len() as u64);
            bytes.extend_from_slice(&chunk);
        };
        for (position, pair) in pairs.iter().enumerate() {
            if let Some(chunk) = encoder.push_pair(pair) {
                write(&mut bytes, chunk);
            }
            if flush_after.contains(&position)
                && let Some(chunk) = encoder.flush()
            {
                write(&mut bytes, chunk);
            }
        }
        let last_chunk_offset = bytes.len() as u64;
        let (end, summary) = encoder.finish();
        if end.len() > TRAILER_BYTES {
            chunk_offsets.push(last_chunk_offset);
        }
        bytes.extend_from_slice(&end);
        Encoded {
            bytes,
            chunk_offsets,
            summary,
        }
    }

    /// Decodes `bytes` fed in pieces of the given sizes (the rest in one
    /// last piece), returning the pairs and the summary.
    fn decode_in_pieces(
        bytes: &[u8],
        piece_sizes: impl IntoIterator<Item = usize>,
    ) -> Result<(Vec<Vec<u8>>, Summary), FormatError> {
        let mut decoder = Decoder::new();
        let mut pairs = Vec::new();
        let mut rest = bytes;
        for size in piece_sizes {
            let (piece, after) = rest.split_at(size.min(rest.len()));
            decoder.feed(piece, |pair| pairs.push(pair.to_vec()))?;
            rest = after;
        }
        decoder.feed(rest, |pair| pairs.push(pair.to_vec()))?;
        Ok((pairs, decoder.finish()?))
    }

    fn decode_whole(bytes: &[u8]) -> Result<(Vec<Vec<u8>>, Summary), FormatError> {
        decode_in_pieces(bytes, [])
    }

    /// Every kind of pair: empty key, empty value, binary, and one larger than
    /// a target chunk.
    fn varied_pairs() -> Vec<Vec<u8>> {
        vec![
            pair(b"alpha", 1, b"one"),
            pair(b"", 2, b"empty key"),
            pair(b"empty value", 3, b""),
            pair(b"", 4, b""),
            pair(b"\r\n\x00\xff", 5, b"\x00\r\n\x00\xc3\x28"),
            pair(b"large", 6, &vec![0x5a; TARGET_CHUNK_BODY_BYTES + 100]),
            pair(b"after large", 40, b"last"),
        ]
    }

    /// Three small chunks of two pairs each.
    fn small_three_chunks() -> Encoded {
        let pairs: Vec<Vec<u8>> = (0..6u8)
            .map(|number| pair(&[b'k', number], u64::from(number) + 1, &[number; 5]))
            .collect();
        encode(HEADER, &pairs, &[1, 3])
    }

    #[test]
    fn empty_snapshot_is_byte_exact() {
        let header = Header { index: 0, epoch: 0 };
        let encoded = encode(header, &[], &[]);
        let bytes = &encoded.bytes;
        assert_eq!(bytes.len(), HEADER_BYTES + TRAILER_BYTES);
        assert_eq!(bytes[..8], *b"KVSNAP\x00\x01");
        assert_eq!(bytes[8..28], [0; 20]);
        assert_eq!(bytes[28..32], crc32c::crc32c(&bytes[..28]).to_le_bytes());
        assert_eq!(bytes[32..36], [0; 4]);
        assert_eq!(bytes[36..40], crc32c::crc32c(&bytes[40..72]).to_le_bytes());
        assert_eq!(bytes[40..56], [0; 16], "no pairs, no chunks");
        assert_eq!(bytes[56..64], 32u64.to_le_bytes(), "trailer offset");
        assert_eq!(bytes[64..72], [0; 8], "chain of no chunks, reserved");
        let summary = Summary {
            index: 0,
            epoch: 0,
            pairs: 0,
            chunks: 0,
            file_bytes: 72,
        };
        assert_eq!(encoded.summary, summary);
        assert_eq!(decode_whole(bytes), Ok((vec![], summary)));
    }

    #[test]
    fn one_pair_layout_is_byte_exact() {
        let header = Header { index: 9, epoch: 2 };
        let encoded = encode(header, &[pair(b"ab", 7, b"xyz")], &[]);
        let bytes = &encoded.bytes;
        assert_eq!(bytes[8..16], 9u64.to_le_bytes());
        assert_eq!(bytes[16..24], 2u64.to_le_bytes());
        assert_eq!(bytes[24..28], [0; 4]);
        let chunk = &bytes[32..32 + 8 + 21];
        assert_eq!(chunk[0..4], 21u32.to_le_bytes(), "body_len");
        assert_eq!(chunk[4..8], crc32c::crc32c(&chunk[8..]).to_le_bytes());
        assert_eq!(chunk[8..12], 17u32.to_le_bytes(), "pair_len");
        assert_eq!(chunk[12..16], 2u32.to_le_bytes(), "key_len");
        assert_eq!(chunk[16..24], 7u64.to_le_bytes(), "write_index");
        assert_eq!(&chunk[24..], b"abxyz");
        let trailer = &bytes[61..];
        assert_eq!(trailer.len(), TRAILER_BYTES);
        assert_eq!(trailer[8..16], 1u64.to_le_bytes(), "pairs");
        assert_eq!(trailer[16..24], 1u64.to_le_bytes(), "chunks");
        assert_eq!(trailer[24..32], 61u64.to_le_bytes(), "trailer offset");
        let chain = crc32c::crc32c(&chunk[4..8]);
        assert_eq!(trailer[32..36], chain.to_le_bytes());
        assert_eq!(encoded.summary.file_bytes, 101);
    }

    #[test]
    fn varied_pairs_round_trip_in_order() {
        let pairs = varied_pairs();
        let encoded = encode(HEADER, &pairs, &[]);
        let summary = Summary {
            index: 40,
            epoch: 3,
            pairs: 7,
            chunks: 3,
            file_bytes: encoded.bytes.len() as u64,
        };
        assert_eq!(encoded.summary, summary);
        assert_eq!(decode_whole(&encoded.bytes), Ok((pairs, summary)));
    }

    #[test]
    fn chunks_close_before_the_target_size_is_passed() {
        let value = [7u8; 1000];
        let pairs: Vec<Vec<u8>> = (1..=1000)
            .map(|index| pair(b"key", index, &value))
            .collect();
        let pair_in_chunk_bytes = PAIR_LENGTH_BYTES + pairs[0].len();
        let pairs_per_chunk = TARGET_CHUNK_BODY_BYTES / pair_in_chunk_bytes;
        let (mut encoder, _) = Encoder::new(Header {
            index: 1000,
            epoch: 1,
        });
        let mut chunks = Vec::new();
        for (position, pair) in pairs.iter().enumerate() {
            if let Some(chunk) = encoder.push_pair(pair) {
                // Closed exactly when this pair would not fit.
                assert_eq!(
                    position % pairs_per_chunk,
                    0,
                    "closed before pair {position}"
                );
                chunks.push(chunk);
            }
        }
        let full_chunk_bytes = CHUNK_HEADER_BYTES + pairs_per_chunk * pair_in_chunk_bytes;
        assert!(full_chunk_bytes - CHUNK_HEADER_BYTES <= TARGET_CHUNK_BODY_BYTES);
        assert!(
            full_chunk_bytes - CHUNK_HEADER_BYTES + pair_in_chunk_bytes > TARGET_CHUNK_BODY_BYTES
        );
        assert_eq!(chunks.len(), 1000 / pairs_per_chunk);
        assert!(chunks.iter().all(|chunk| chunk.len() == full_chunk_bytes));
        let left_pairs = 1000 % pairs_per_chunk;
        let pending_bytes = CHUNK_HEADER_BYTES + left_pairs * pair_in_chunk_bytes;
        assert_eq!(encoder.pending_bytes(), pending_bytes);
        let (end, summary) = encoder.finish();
        assert_eq!(end.len(), pending_bytes + TRAILER_BYTES);
        assert_eq!(
            (summary.pairs, summary.chunks),
            (1000, chunks.len() as u64 + 1)
        );
    }

    #[test]
    fn a_pair_larger_than_the_target_makes_a_chunk_of_its_own() {
        let pairs = varied_pairs();
        let encoded = encode(HEADER, &pairs, &[]);
        let large_chunk_offset = encoded.chunk_offsets[1] as usize;
        let large_body_bytes = PAIR_LENGTH_BYTES + pairs[5].len();
        assert_eq!(
            encoded.bytes[large_chunk_offset..large_chunk_offset + 4],
            (large_body_bytes as u32).to_le_bytes()
        );
        assert_eq!(
            encoded.chunk_offsets[2] as usize,
            large_chunk_offset + CHUNK_HEADER_BYTES + large_body_bytes
        );
    }

    #[test]
    fn flush_closes_the_chunk_and_recycled_buffers_are_reused() {
        let (mut encoder, _) = Encoder::new(HEADER);
        assert_eq!(encoder.flush(), None);
        assert_eq!(encoder.push_pair(&pair(b"a", 1, b"1")), None);
        assert_eq!(encoder.pending_bytes(), CHUNK_HEADER_BYTES + 4 + 14);
        let first = encoder.flush().expect("a chunk holding one pair");
        assert_eq!(encoder.pending_bytes(), 0);
        let first_address = first.as_ptr();
        encoder.recycle(first);
        encoder.push_pair(&pair(b"b", 2, b"2"));
        let second = encoder.flush().expect("a second chunk");
        assert_eq!(second.as_ptr(), first_address, "the recycled allocation");
        // A buffer larger than one target chunk is not kept.
        encoder.recycle(Vec::with_capacity(2 * TARGET_CHUNK_BODY_BYTES));
        encoder.push_pair(&pair(b"c", 3, b"3"));
        assert!(encoder.flush().expect("a third chunk").capacity() <= RETAINED_BUFFER_BYTES);
    }

    #[test]
    fn every_split_position_decodes_identically() {
        let encoded = small_three_chunks();
        let expected = decode_whole(&encoded.bytes).expect("valid");
        assert_eq!(expected.1.chunks, 3);
        for split in 0..=encoded.bytes.len() {
            assert_eq!(
                decode_in_pieces(&encoded.bytes, [split]),
                Ok(expected.clone()),
                "split at {split}"
            );
        }
        let byte_by_byte = vec![1; encoded.bytes.len()];
        assert_eq!(decode_in_pieces(&encoded.bytes, byte_by_byte), Ok(expected));
    }

    /// A tiny deterministic generator: one seed, one sequence.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    #[test]
    fn random_sized_pieces_decode_identically() {
        let mut pairs = varied_pairs();
        pairs.extend((0..3000u64).map(|index| pair(&index.to_le_bytes(), index, &[3; 200])));
        let encoded = encode(
            Header {
                index: 3000,
                epoch: 9,
            },
            &pairs,
            &[],
        );
        let expected = (pairs, encoded.summary);
        for seed in 1..=20 {
            let mut random = XorShift(seed);
            // Piece sizes from one byte to a few chunks, on a log scale.
            let sizes: Vec<usize> = (0..400)
                .map(|_| 1 + (random.next() % (1 << (random.next() % 21))) as usize)
                .collect();
            assert_eq!(
                decode_in_pieces(&encoded.bytes, sizes),
                Ok(expected.clone()),
                "seed {seed}"
            );
        }
    }

    /// `bytes` with bit `bit` flipped.
    fn flipped(bytes: &[u8], bit: usize) -> Vec<u8> {
        let mut copy = bytes.to_vec();
        copy[bit / 8] ^= 1 << (bit % 8);
        copy
    }

    #[test]
    fn a_flipped_header_bit_is_reported_at_byte_zero() {
        let encoded = small_three_chunks();
        let bad_magic = flipped(&encoded.bytes, 7 * 8);
        assert_eq!(decode_whole(&bad_magic), Err(FormatError::BadMagic));
        let bad_index = flipped(&encoded.bytes, 9 * 8 + 3);
        assert_eq!(decode_whole(&bad_index), Err(FormatError::HeaderChecksum));
    }

    #[test]
    fn a_flipped_chunk_body_bit_is_reported_at_its_chunk() {
        let encoded = small_three_chunks();
        let second = encoded.chunk_offsets[1];
        let bit = (second as usize + CHUNK_HEADER_BYTES + 13) * 8;
        let mut pairs = Vec::new();
        let mut decoder = Decoder::new();
        let result = decoder.feed(&flipped(&encoded.bytes, bit), |pair| {
            pairs.push(pair.to_vec())
        });
        assert_eq!(result, Err(FormatError::ChunkChecksum { offset: second }));
        assert_eq!(pairs.len(), 2, "only the first chunk's pairs");
    }

    #[test]
    fn a_flipped_chunk_length_bit_is_reported_at_its_chunk() {
        let encoded = small_three_chunks();
        let third = encoded.chunk_offsets[2];
        let length_bit = third as usize * 8;
        assert_eq!(
            decode_whole(&flipped(&encoded.bytes, length_bit)),
            Err(FormatError::ChunkChecksum { offset: third })
        );
        assert_eq!(
            decode_whole(&flipped(&encoded.bytes, length_bit + 31)),
            Err(FormatError::Malformed {
                offset: third,
                reason: MalformedReason::ChunkTooLarge
            })
        );
    }

    #[test]
    fn every_single_bit_flip_is_caught() {
        let encoded = small_three_chunks();
        for bit in 0..encoded.bytes.len() * 8 {
            let result = decode_whole(&flipped(&encoded.bytes, bit));
            assert!(result.is_err(), "bit {bit} flipped yet decoded: {result:?}");
        }
    }

    #[test]
    fn every_truncation_is_truncated_where_the_data_ends() {
        let encoded = small_three_chunks();
        for cut in 0..encoded.bytes.len() {
            assert_eq!(
                decode_whole(&encoded.bytes[..cut]).map(|_| ()),
                Err(FormatError::Truncated { offset: cut as u64 }),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn a_removed_chunk_is_a_trailer_mismatch() {
        let encoded = small_three_chunks();
        let [first, second, third] = encoded.chunk_offsets[..] else {
            panic!("three chunks");
        };
        let mut bytes = encoded.bytes.clone();
        bytes.drain(second as usize..third as usize);
        let trailer_offset = bytes.len() as u64 - TRAILER_BYTES as u64;
        assert!(first < trailer_offset);
        assert_eq!(
            decode_whole(&bytes),
            Err(FormatError::TrailerMismatch {
                offset: trailer_offset,
                what: "chunk count"
            })
        );
    }

    #[test]
    fn swapped_chunks_break_the_chain() {
        let encoded = small_three_chunks();
        let [first, second, third] = encoded.chunk_offsets[..] else {
            panic!("three chunks");
        };
        let bytes = &encoded.bytes;
        let (first, second, third) = (first as usize, second as usize, third as usize);
        assert_eq!(
            second - first,
            third - second,
            "equal sizes, so offsets still hold"
        );
        let mut swapped = bytes[..first].to_vec();
        swapped.extend_from_slice(&bytes[second..third]);
        swapped.extend_from_slice(&bytes[first..second]);
        swapped.extend_from_slice(&bytes[third..]);
        let trailer_offset = (bytes.len() - TRAILER_BYTES) as u64;
        assert_eq!(
            decode_whole(&swapped),
            Err(FormatError::TrailerMismatch {
                offset: trailer_offset,
                what: "chunk checksum chain"
            })
        );
    }

    #[test]
    fn bytes_after_the_trailer_are_refused() {
        let encoded = small_three_chunks();
        let end = encoded.bytes.len() as u64;
        let mut garbage = encoded.bytes.clone();
        garbage.push(0);
        assert_eq!(
            decode_whole(&garbage),
            Err(FormatError::TrailingBytes { offset: end })
        );
        // Also when they arrive in a later call.
        let mut decoder = Decoder::new();
        decoder.feed(&encoded.bytes, |_| {}).expect("valid");
        assert!(decoder.is_complete());
        assert_eq!(decoder.feed(&[], |_| {}), Ok(()));
        let expected = Err(FormatError::TrailingBytes { offset: end });
        assert_eq!(decoder.feed(b"x", |_| {}), expected);
        assert_eq!(decoder.finish().map(|_| ()), expected);
    }

    /// A chunk with a valid checksum around an arbitrary body.
    fn chunk_with_body(body: &[u8]) -> Vec<u8> {
        let mut chunk = (body.len() as u32).to_le_bytes().to_vec();
        chunk.extend_from_slice(&crc32c::crc32c(body).to_le_bytes());
        chunk.extend_from_slice(body);
        chunk
    }

    /// A header for `HEADER` followed by `chunk`.
    fn file_with_chunk(chunk: &[u8]) -> Vec<u8> {
        let mut bytes = encode_header(HEADER);
        bytes.extend_from_slice(chunk);
        bytes
    }

    /// A chunk body holding `pair` behind the `pair_len` it declares.
    fn body_with_pair(pair_len: u32, pair: &[u8]) -> Vec<u8> {
        let mut body = pair_len.to_le_bytes().to_vec();
        body.extend_from_slice(pair);
        body
    }

    #[test]
    fn checksummed_but_impossible_pairs_are_malformed_at_their_offset() {
        let good = pair(b"k", 1, b"v");
        let second_pair_offset = (HEADER_BYTES + CHUNK_HEADER_BYTES + 4 + good.len()) as u64;
        let after_snapshot = pair(b"k", HEADER.index + 1, b"v");
        let mut long_key = good.clone();
        long_key[..4].copy_from_slice(&3u32.to_le_bytes());
        let cases = [
            (body_with_pair(11, &[0; 11]), MalformedReason::PairTooShort),
            (
                body_with_pair(u32::MAX, &good),
                MalformedReason::PairTooLarge,
            ),
            (
                body_with_pair(good.len() as u32 + 1, &good),
                MalformedReason::PairPastChunkEnd,
            ),
            (vec![0; 3], MalformedReason::PairPastChunkEnd),
            (
                body_with_pair(long_key.len() as u32, &long_key),
                MalformedReason::KeyLengthOutOfRange,
            ),
            (
                body_with_pair(after_snapshot.len() as u32, &after_snapshot),
                MalformedReason::WriteIndexAfterSnapshot {
                    write_index: 41,
                    snapshot_index: 40,
                },
            ),
        ];
        for (bad, reason) in cases {
            let mut body = body_with_pair(good.len() as u32, &good);
            body.extend_from_slice(&bad);
            let mut delivered = 0;
            let mut decoder = Decoder::new();
            let result = decoder.feed(&file_with_chunk(&chunk_with_body(&body)), |_| {
                delivered += 1
            });
            let offset = second_pair_offset;
            assert_eq!(result, Err(FormatError::Malformed { offset, reason }));
            assert_eq!(
                delivered, 0,
                "no pair of a bad chunk is handed out ({reason})"
            );
        }
    }

    #[test]
    fn an_oversized_chunk_length_is_refused_from_its_header_alone() {
        let chunk_header_bytes = (MAX_CHUNK_BODY_BYTES as u32 + 1).to_le_bytes();
        let bytes = file_with_chunk(&chunk_header_bytes);
        let expected = Err(FormatError::Malformed {
            offset: HEADER_BYTES as u64,
            reason: MalformedReason::ChunkTooLarge,
        });
        // Whole, and a byte at a time: refused once the length is in.
        assert_eq!(decode_whole(&bytes).map(|_| ()), expected);
        let mut decoder = Decoder::new();
        decoder
            .feed(&bytes[..HEADER_BYTES + 3], |_| {})
            .expect("no length yet");
        assert_eq!(decoder.feed(&bytes[HEADER_BYTES + 3..], |_| {}), expected);
        assert!(decoder.buffer_capacity_bytes() <= HEADER_BYTES);
        // The largest allowed length is waited for, not refused.
        let largest = (MAX_CHUNK_BODY_BYTES as u32).to_le_bytes();
        let mut decoder = Decoder::new();
        assert_eq!(decoder.feed(&file_with_chunk(&largest), |_| {}), Ok(()));
    }

    /// A header with valid magic and checksum around arbitrary fields.
    fn header_with(index: u64, epoch: u64, reserved: u32) -> Vec<u8> {
        let mut bytes = SNAPSHOT_MAGIC.to_vec();
        bytes.extend_from_slice(&index.to_le_bytes());
        bytes.extend_from_slice(&epoch.to_le_bytes());
        bytes.extend_from_slice(&reserved.to_le_bytes());
        bytes.extend_from_slice(&crc32c::crc32c(&bytes).to_le_bytes());
        bytes
    }

    #[test]
    fn checksummed_but_impossible_headers_are_malformed() {
        let malformed = |reason| Err(FormatError::Malformed { offset: 0, reason });
        let mut decoder = Decoder::new();
        let reserved = decoder.feed(&header_with(5, 1, 1), |_| {});
        assert_eq!(reserved, malformed(MalformedReason::ReservedNotZero));
        let mut decoder = Decoder::new();
        let epoch = decoder.feed(&header_with(0, 1, 0), |_| {});
        assert_eq!(epoch, malformed(MalformedReason::EpochWithoutIndex));
        let mut decoder = Decoder::new();
        assert_eq!(decoder.feed(&header_with(5, 1, 0), |_| {}), Ok(()));
        assert_eq!(decoder.header(), Some(Header { index: 5, epoch: 1 }));
    }

    #[test]
    fn a_foreign_file_is_bad_magic_from_its_first_bytes() {
        let mut decoder = Decoder::new();
        assert_eq!(decoder.feed(b"KVSNAP", |_| {}), Ok(()));
        assert_eq!(
            decoder.feed(b"\x00\x02", |_| {}),
            Err(FormatError::BadMagic)
        );
        let mut decoder = Decoder::new();
        assert_eq!(decoder.feed(b"KVLOG", |_| {}), Err(FormatError::BadMagic));
    }

    #[test]
    fn trailer_checks_stand_alone() {
        let encoded = small_three_chunks();
        let trailer_offset = (encoded.bytes.len() - TRAILER_BYTES) as u64;
        let trailer: [u8; TRAILER_BYTES] = encoded.bytes[trailer_offset as usize..]
            .try_into()
            .expect("40 bytes");
        let decoded = decode_trailer(&trailer, trailer_offset).expect("valid");
        assert_eq!((decoded.pairs, decoded.chunks), (6, 3));
        assert_eq!(decoded.trailer_offset, trailer_offset);
        let mut bad = trailer;
        bad[20] ^= 1;
        let checksum = FormatError::TrailerChecksum {
            offset: trailer_offset,
        };
        assert_eq!(decode_trailer(&bad, trailer_offset), Err(checksum.clone()));
        let bit = (trailer_offset as usize + 20) * 8;
        let decoded = decode_whole(&flipped(&encoded.bytes, bit));
        assert_eq!(decoded.map(|_| ()), Err(checksum));
        let mut not_trailer = trailer;
        not_trailer[0] = 1;
        let expected = FormatError::Malformed {
            offset: trailer_offset,
            reason: MalformedReason::NotATrailer,
        };
        assert_eq!(decode_trailer(&not_trailer, trailer_offset), Err(expected));
    }

    #[test]
    fn pairs_bound_never_exceeds_what_the_bytes_could_hold() {
        let claimed = Trailer {
            pairs: u64::MAX,
            chunks: 1,
            trailer_offset: (HEADER_BYTES + 1000) as u64,
            chain: 0,
        };
        assert_eq!(claimed.pairs_bound(), 1000 / 16);
        let honest = Trailer {
            pairs: 3,
            ..claimed
        };
        assert_eq!(honest.pairs_bound(), 3);
    }

    #[test]
    fn an_error_is_returned_again_by_every_later_call() {
        let encoded = small_three_chunks();
        let bad = flipped(&encoded.bytes, (encoded.chunk_offsets[0] as usize + 20) * 8);
        let expected = Err(FormatError::ChunkChecksum {
            offset: encoded.chunk_offsets[0],
        });
        let mut decoder = Decoder::new();
        let cut = encoded.chunk_offsets[1] as usize;
        assert_eq!(decoder.feed(&bad[..cut], |_| {}), expected);
        let mut delivered = 0;
        assert_eq!(
            decoder.feed(&encoded.bytes[cut..], |_| delivered += 1),
            expected
        );
        assert_eq!(delivered, 0);
        assert_eq!(decoder.finish().map(|_| ()), expected);
    }

    #[test]
    fn consumed_bytes_count_a_split_chunk_as_it_arrives() {
        let encoded = small_three_chunks();
        let mut decoder = Decoder::new();
        assert_eq!(decoder.header(), None);
        decoder
            .feed(&encoded.bytes[..HEADER_BYTES + 5], |_| {})
            .expect("valid");
        assert_eq!(decoder.consumed_bytes(), HEADER_BYTES as u64 + 5);
        assert_eq!(decoder.header(), Some(HEADER));
        assert!(!decoder.is_complete());
    }

    #[test]
    fn errors_display_their_offset_and_cause() {
        let chunk = FormatError::ChunkChecksum { offset: 4096 };
        assert_eq!(
            chunk.to_string(),
            "corrupt at byte 4096: chunk checksum mismatch"
        );
        let pair = FormatError::Malformed {
            offset: 80,
            reason: MalformedReason::WriteIndexAfterSnapshot {
                write_index: 9,
                snapshot_index: 5,
            },
        };
        assert_eq!(
            pair.to_string(),
            "corrupt at byte 80: malformed: pair written at index 9, after the snapshot's index 5"
        );
        let mismatch = FormatError::TrailerMismatch {
            offset: 100,
            what: "pair count",
        };
        assert_eq!(
            mismatch.to_string(),
            "corrupt at byte 100: the trailer's pair count disagrees with the chunks read"
        );
        assert_eq!(FormatError::BadMagic.offset(), 0);
    }
}
