//! The append-only, checksummed log: the durability log of one node and the
//! replication log of the cluster.
//!
//! This module owns the on-disk format and its recovery rules: how a record
//! is laid out ([`record`]), how the file starts, how it is replayed at
//! startup, and which damage is a torn write to truncate and which is
//! corruption to refuse ([`mod@file`]). It never interprets ops: applying a Put or
//! a Del is the core's job, as is choosing epochs and indexes.
//!
//! The core encodes the records of one turn into a single buffer; the reactor
//! writes that buffer with one [`LogFile::append`] and makes it durable with
//! one [`LogFile::sync_data`] (group commit). Replication ships the same
//! record bytes to followers, which check them with [`decode`] and append
//! them unchanged.
//!
//! # Format
//!
//! ```text
//! kvstore.log:  "KVLOG\0\0\x01"   8-byte magic, last byte = format version
//!               record*
//!
//! record:       u32 LE  body_len       bytes of body that follow the crc
//!               u32 LE  crc32c(body)
//!               body:   u64 LE epoch
//!                       u64 LE index    previous index + 1; epochs never decrease
//!                       u64 LE commit   leader's commit index when the record was made
//!                       u8     op       0 = Noop, 1 = Put, 2 = Del
//!                       u32 LE key_len
//!                       key bytes
//!                       value bytes     rest of the body; Put only
//! ```

pub mod data_dir;
pub mod epoch;
pub mod error;
pub mod file;
pub mod record;
mod scan;
pub mod segment;

pub use data_dir::{DataDir, LOCK_FILE_NAME};
pub use epoch::{EPOCH_FILE_NAME, EpochError, load_epoch, store_epoch};
pub use error::LogError;
pub use file::{LOG_FILE_NAME, LogFile, Replay};
pub use record::{
    DecodeError, Entry, MAX_RECORD_BODY_BYTES, MalformedReason, Op, RECORD_HEADER_BYTES, decode,
    encode, encoded_len,
};
pub use segment::{LOG_HEADER_BYTES, LOG_MAGIC};
