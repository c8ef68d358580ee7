//! The append-only, checksummed log: the durability log of one node and the
//! replication log of the cluster.
//!
//! This module owns the on-disk format and its recovery rules: how a record
//! is laid out ([`record`]), how a log file starts and is replayed
//! ([`segment`], [`scan`]), which damage is a torn write to truncate and
//! which is corruption to refuse, and the data directory's lock
//! ([`data_dir`]). It never interprets ops: applying a Put, a Del or a Batch
//! is the core's job, as is choosing epochs and indexes.
//!
//! The log is moving from one file that only grows ([`mod@file`], today's
//! [`LogFile`], found by byte offset) to a sequence of segment files found by
//! log index ([`segments`]: [`Log`]), so that a prefix a snapshot covers is
//! dropped by unlinking files. [`Log::open`] migrates a `kvstore.log` left by
//! the previous version.
//!
//! The core encodes the records of one turn into a single buffer; the reactor
//! writes that buffer with one append and makes it durable with one sync
//! (group commit; with segments, a [`SyncJob`] a syncer thread runs).
//! Replication ships the same record bytes to followers, which check them
//! with [`decode`] and append them unchanged.
//!
//! # Format
//!
//! ```text
//! log-<first index, 20 digits>.log   (a segment; kvstore.log before segments)
//!               "KVLOG\0\0\x01"   8-byte magic, last byte = format version
//!               record*
//!
//! record:       u32 LE  body_len       bytes of body that follow the crc
//!               u32 LE  crc32c(body)
//!               body:   u64 LE epoch
//!                       u64 LE index    previous index + 1; epochs never decrease
//!                       u64 LE commit   leader's commit index when the record was made
//!                       u8     op       0 = Noop, 1 = Put, 2 = Del, 3 = Batch
//!                       u32 LE key_len  0 for Noop and Batch
//!                       key bytes
//!                       value bytes     rest of the body; Put only, or a Batch's
//!                                       operations (see [`record`])
//! ```

pub mod data_dir;
pub mod epoch;
pub mod error;
pub mod file;
pub mod record;
pub mod scan;
pub mod segment;
pub mod segments;
pub mod sync_job;

pub use data_dir::{DataDir, LOCK_FILE_NAME};
pub use epoch::{EPOCH_FILE_NAME, EpochError, MAX_EPOCH, load_epoch, store_epoch};
pub use error::LogError;
pub use file::{LOG_FILE_NAME, LogFile, Replay};
pub use record::{
    BATCH_OP_HEADER_BYTES, Batch, BatchBuilder, DecodeError, Entry, MAX_INDEX,
    MAX_KEY_AND_VALUE_BYTES, MAX_RECORD_BODY_BYTES, MAX_RECORD_BYTES, MalformedReason, Op,
    RECORD_HEADER_BYTES, decode, decode_verified, encode, encoded_len, fits,
};
pub use segment::{LOG_HEADER_BYTES, LOG_MAGIC, PartialWriteLeft};
pub use segments::{Base, Log, segment_file_name};
pub use sync_job::SyncJob;
