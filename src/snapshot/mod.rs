//! Snapshots: the whole key-value store as of one log index, in one
//! checksummed file.
//!
//! This module owns the snapshot format and its rules: how the image is laid
//! out and checked ([`mod@format`]), and how snapshot files are named, listed,
//! loaded and published atomically ([`mod@file`]). It never decides when to
//! take a snapshot, never reads the store or the log, and never deletes a
//! published snapshot: those are the caller's choices.
//!
//! The writer hands [`Encoder::push_pair`] each pair in the store's own
//! layout and writes the chunks it returns to a temporary file, which
//! [`publish`] makes the snapshot only once it is whole and durable. A
//! snapshot file is therefore either absent or complete; a crash leaves at
//! most a temporary file, which is never loaded. The reader ([`load`], or a
//! [`Decoder`] fed from the network) verifies every chunk before handing out
//! its pairs, so loading a pair is one allocation and one copy.
//!
//! # Format
//!
//! ```text
//! snapshot-<index:020>.snap:
//!
//! file:     header chunk* trailer
//!
//! header:   "KVSNAP\0\x01"      8-byte magic, last byte = format version
//!           u64 LE  index       the last log index the image includes
//!           u64 LE  epoch       epoch of the record at index (0 when index is 0)
//!           u32 LE  reserved    0
//!           u32 LE  crc32c of the 28 bytes above
//!
//! chunk:    u32 LE  body_len    1..=MAX_CHUNK_BODY_BYTES
//!           u32 LE  crc32c(body)
//!           body:   pair+       pairs never straddle chunks
//!
//! pair:     u32 LE  pair_len    PAIR_FIXED_BYTES..=MAX_PAIR_BYTES
//!           u32 LE  key_len     at most pair_len - 12
//!           u64 LE  write_index at most the header's index
//!           key bytes           key_len bytes
//!           value bytes         the rest of the pair
//!
//! trailer:  u32 LE  0           a zero body_len marks the trailer
//!           u32 LE  crc32c of the 32 bytes that follow
//!           u64 LE  pairs       pairs in the file
//!           u64 LE  chunks      chunks in the file
//!           u64 LE  trailer_offset   bytes before the trailer (header + chunks)
//!           u32 LE  chain       crc32c over the 4-byte LE checksums of every
//!                               chunk, in order (0 when there are none)
//!           u32 LE  reserved    0
//! ```
//!
//! The bytes of a pair after `pair_len` are exactly the store's in-memory
//! `StoredPair` (see [`crate::store`]). The encoder closes a chunk before a
//! pair would take its body past [`TARGET_CHUNK_BODY_BYTES`].

pub mod file;
pub mod format;

pub use file::{
    Listing, SNAPSHOT_FILE_PREFIX, SnapshotError, create_temporary, file_name, list, load, publish,
    remove_temporary, temporary_file_name,
};
pub use format::{
    CHUNK_HEADER_BYTES, Decoder, Encoder, FormatError, HEADER_BYTES, Header, MAX_CHUNK_BODY_BYTES,
    MAX_PAIR_BYTES, MalformedReason, PAIR_FIXED_BYTES, PAIR_LENGTH_BYTES, SNAPSHOT_MAGIC, Summary,
    TARGET_CHUNK_BODY_BYTES, TRAILER_BYTES, Trailer, decode_trailer,
};
