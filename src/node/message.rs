//! Peer messages: what nodes of a cluster say to each other, and their wire form.
//!
//! Every message travels in an [`Envelope`] that names the sender and the
//! sender's epoch. Log entries travel as the exact record bytes of the log
//! (`crate::log::encode`), so a follower checks their checksums and appends
//! them unchanged.
//!
//! # Wire form
//!
//! Peers share the client port. A connection opens with the peer handshake
//! (its lines, proofs and protocol version are `crate::security::handshake`'s
//! business), and from then on only the dialer sends, in binary frames: each
//! node sends its messages on the connection it dialed.
//!
//! ```text
//! frame:      u32 LE  body_len
//!             body:   u8     kind     1 Election, 2 Alive, 3 Coordinator,
//!                                     4 Promise, 5 Reject, 6 Fetch,
//!                                     7 FetchReply, 8 Append, 9 Ack,
//!                                     10 InstallSnapshot, 11 SnapshotAck
//!                     u64 LE from
//!                     u64 LE epoch
//!                     the kind's fields, in the order of the enum:
//!                       u64              u64 LE
//!                       Option<NodeId>   u8 flag (0 None, 1 Some) + u64 LE
//!                                        (the u64 is 0 for None, and ignored)
//!                       bool             u8 0 or 1
//!                       records, bytes   u32 LE len + the bytes
//! ```
//!
//! [`decode_frame`] checks `body_len` against [`MAX_FRAME_BODY_BYTES`] from
//! the 4-byte header alone, so a broken peer cannot make a node buffer (or
//! wait for) more than one bounded frame, and checks every inner length
//! against the bytes that remain, so nothing is allocated on a length it has
//! not seen backed by data.

use std::fmt;

use crate::log;

pub type NodeId = u64;

/// A message with its sender and the sender's current epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub from: NodeId,
    pub epoch: u64,
    pub message: Message,
}

/// The peer protocol. Bully's three messages (ELECTION, OK here named
/// `Alive`, COORDINATOR) plus what makes a change of leader safe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Bully: "I see no leader; is a node with a higher id alive?"
    Election,
    /// Bully's OK: "I am alive and of higher id; I will see to a leader."
    /// Names the leader the sender follows, if it has a live one.
    Alive { leader: Option<NodeId> },
    /// Bully's COORDINATOR, made safe: "I would lead `epoch`; promise me."
    Coordinator { commit_index: u64 },
    /// "I promise `epoch`: I will accept nothing from an older one."
    /// Carries the promiser's log position for log adoption.
    Promise {
        last_epoch: u64,
        last_index: u64,
        commit_index: u64,
    },
    /// "I will not promise that": the sender's own epoch and live leader.
    Reject { leader: Option<NodeId> },
    /// New leader to the most up-to-date promiser: "send me your log from
    /// `from_index` on".
    Fetch { from_index: u64 },
    /// Answer to `Fetch`: records from `from_index` to the sender's last.
    FetchReply { from_index: u64, records: Vec<u8> },
    /// Leader to follower: records after (`prev_index`, `prev_epoch`), the
    /// leader's commit index, and the read round (ReadIndex). Empty records
    /// make a heartbeat.
    Append {
        prev_index: u64,
        prev_epoch: u64,
        commit_index: u64,
        round: u64,
        records: Vec<u8>,
    },
    /// Follower to leader. `success`: the follower's log matches the
    /// leader's up to `match_index` and is durable up to there. Otherwise
    /// `match_index` is where the leader should retry from (the follower's
    /// last index, or below the conflict). `round` echoes the read round.
    Ack {
        success: bool,
        match_index: u64,
        round: u64,
    },
    /// Part of the sender's snapshot (Raft's InstallSnapshot): bytes
    /// `offset..offset + bytes.len()` of the `total_bytes`-long file of the
    /// store as of `index` (whose record has `epoch`). A leader sends it to
    /// a follower that lags behind the log it keeps; a promiser to a new
    /// leader that adopts its log.
    InstallSnapshot {
        index: u64,
        epoch: u64,
        total_bytes: u64,
        offset: u64,
        bytes: Vec<u8>,
    },
    /// Receiver to sender: "I hold the first `received_bytes` of snapshot
    /// `index`; send from there" (0: start over).
    SnapshotAck { index: u64, received_bytes: u64 },
}

// ---------------------------------------------------------------------------
// Frames
// ---------------------------------------------------------------------------

/// Bytes before the body: `body_len`.
pub const FRAME_HEADER_BYTES: usize = 4;

/// An `Append` gathers records up to about this many bytes (see
/// [`MAX_FRAME_RECORDS_BYTES`] for the rule).
pub const APPEND_TARGET_RECORDS_BYTES: usize = 1024 * 1024;

/// A `FetchReply` gathers records up to about this many bytes.
pub const FETCH_REPLY_TARGET_RECORDS_BYTES: usize = 8 * 1024 * 1024;

/// A frame carries at most this many record (or snapshot) bytes: one batch.
///
/// The batch rule: a batch takes records in order while their total stays
/// within its target, but it always takes the first record, however large.
/// So a batch is either within its target or one record alone, and never
/// above the larger of the two: a record that exceeds a target travels by
/// itself instead of never. The log's bound on one record is the root
/// (`log::MAX_RECORD_BODY_BYTES`); the targets only keep batches small.
pub const MAX_FRAME_RECORDS_BYTES: usize = larger(
    log::MAX_RECORD_BYTES,
    larger(
        APPEND_TARGET_RECORDS_BYTES,
        FETCH_REPLY_TARGET_RECORDS_BYTES,
    ),
);

/// Room in a frame body for everything but its records: the kind, the
/// envelope, a message's fixed fields and the records' length.
const FRAME_FIXED_ALLOWANCE_BYTES: usize = 1024;

/// The largest body a frame may declare: one batch and the fixed fields.
/// A larger `body_len` is [`FrameError::TooLarge`]. A peer connection
/// buffers at most one frame of it (and a read's chunk) before decoding.
pub const MAX_FRAME_BODY_BYTES: usize = MAX_FRAME_RECORDS_BYTES + FRAME_FIXED_ALLOWANCE_BYTES;

/// The largest whole frame: header and body.
pub const MAX_FRAME_BYTES: usize = FRAME_HEADER_BYTES + MAX_FRAME_BODY_BYTES;

const fn larger(left: usize, right: usize) -> usize {
    if left > right { left } else { right }
}

const KIND_ELECTION: u8 = 1;
const KIND_ALIVE: u8 = 2;
const KIND_COORDINATOR: u8 = 3;
const KIND_PROMISE: u8 = 4;
const KIND_REJECT: u8 = 5;
const KIND_FETCH: u8 = 6;
const KIND_FETCH_REPLY: u8 = 7;
const KIND_APPEND: u8 = 8;
const KIND_ACK: u8 = 9;
const KIND_INSTALL_SNAPSHOT: u8 = 10;
const KIND_SNAPSHOT_ACK: u8 = 11;

/// Why a buffer does not start with a valid frame. Every one means the peer
/// is broken (or not a peer): the caller drops the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// `body_len` exceeds [`MAX_FRAME_BODY_BYTES`].
    TooLarge { body_bytes: usize },
    /// The kind byte names no message.
    UnknownKind(u8),
    /// A field (or a records length) runs past the end of the body.
    Truncated,
    /// Bytes left in the body after the message's last field.
    TrailingBytes,
    /// A bool or an option flag that is neither 0 nor 1.
    BadFlag(u8),
}

impl fmt::Display for FrameError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::TooLarge { body_bytes } => write!(
                formatter,
                "frame body of {body_bytes} bytes exceeds the maximum of {MAX_FRAME_BODY_BYTES}"
            ),
            FrameError::UnknownKind(kind) => write!(formatter, "unknown message kind {kind}"),
            FrameError::Truncated => {
                formatter.write_str("a field runs past the end of the frame body")
            }
            FrameError::TrailingBytes => {
                formatter.write_str("unexpected bytes after the last field of the message")
            }
            FrameError::BadFlag(flag) => write!(formatter, "flag byte {flag} is neither 0 nor 1"),
        }
    }
}

impl std::error::Error for FrameError {}

/// Appends exactly one frame for `envelope` to `out`.
///
/// Record batches above [`MAX_FRAME_RECORDS_BYTES`] are the caller's bug (the
/// peer would refuse the frame and drop the connection): the batch rule
/// never makes one. Debug builds assert.
pub fn encode_frame(envelope: &Envelope, out: &mut Vec<u8>) {
    let frame_start = out.len();
    // The length is patched in once the body is in place, so the body is
    // never assembled anywhere but in `out`.
    out.extend_from_slice(&0u32.to_le_bytes());
    let body_start = out.len();
    out.push(kind(&envelope.message));
    put_u64(out, envelope.from);
    put_u64(out, envelope.epoch);
    encode_fields(&envelope.message, out);
    let body_bytes = out.len() - body_start;
    let body_len = u32::try_from(body_bytes).expect("frame body length fits in u32");
    out[frame_start..body_start].copy_from_slice(&body_len.to_le_bytes());
}

fn kind(message: &Message) -> u8 {
    match message {
        Message::Election => KIND_ELECTION,
        Message::Alive { .. } => KIND_ALIVE,
        Message::Coordinator { .. } => KIND_COORDINATOR,
        Message::Promise { .. } => KIND_PROMISE,
        Message::Reject { .. } => KIND_REJECT,
        Message::Fetch { .. } => KIND_FETCH,
        Message::FetchReply { .. } => KIND_FETCH_REPLY,
        Message::Append { .. } => KIND_APPEND,
        Message::Ack { .. } => KIND_ACK,
        Message::InstallSnapshot { .. } => KIND_INSTALL_SNAPSHOT,
        Message::SnapshotAck { .. } => KIND_SNAPSHOT_ACK,
    }
}

fn encode_fields(message: &Message, out: &mut Vec<u8>) {
    match message {
        Message::Election => {}
        Message::Alive { leader } | Message::Reject { leader } => put_node(out, *leader),
        Message::Coordinator { commit_index } => put_u64(out, *commit_index),
        Message::Promise {
            last_epoch,
            last_index,
            commit_index,
        } => {
            put_u64(out, *last_epoch);
            put_u64(out, *last_index);
            put_u64(out, *commit_index);
        }
        Message::Fetch { from_index } => put_u64(out, *from_index),
        Message::FetchReply {
            from_index,
            records,
        } => {
            put_u64(out, *from_index);
            put_records(out, records);
        }
        Message::Append {
            prev_index,
            prev_epoch,
            commit_index,
            round,
            records,
        } => {
            put_u64(out, *prev_index);
            put_u64(out, *prev_epoch);
            put_u64(out, *commit_index);
            put_u64(out, *round);
            put_records(out, records);
        }
        Message::Ack {
            success,
            match_index,
            round,
        } => {
            out.push(u8::from(*success));
            put_u64(out, *match_index);
            put_u64(out, *round);
        }
        Message::InstallSnapshot {
            index,
            epoch,
            total_bytes,
            offset,
            bytes,
        } => {
            put_u64(out, *index);
            put_u64(out, *epoch);
            put_u64(out, *total_bytes);
            put_u64(out, *offset);
            put_records(out, bytes);
        }
        Message::SnapshotAck {
            index,
            received_bytes,
        } => {
            put_u64(out, *index);
            put_u64(out, *received_bytes);
        }
    }
}

fn put_u64(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(&value.to_le_bytes());
}

fn put_node(out: &mut Vec<u8>, node: Option<NodeId>) {
    // Fixed size whether or not there is a node: one shape per kind.
    out.push(u8::from(node.is_some()));
    put_u64(out, node.unwrap_or(0));
}

fn put_records(out: &mut Vec<u8>, records: &[u8]) {
    debug_assert!(
        records.len() <= MAX_FRAME_RECORDS_BYTES,
        "{} record bytes exceed MAX_FRAME_RECORDS_BYTES; split the batch",
        records.len()
    );
    let records_len = u32::try_from(records.len()).expect("records length fits in u32");
    out.extend_from_slice(&records_len.to_le_bytes());
    out.extend_from_slice(records);
}

/// Decodes the frame at the start of `buffer`.
///
/// `Ok(None)`: not a whole frame yet (read more). `Ok(Some((envelope,
/// consumed)))`: one frame, which occupied `consumed` bytes. `Err`: the peer
/// is broken; the caller drops the connection.
pub fn decode_frame(buffer: &[u8]) -> Result<Option<(Envelope, usize)>, FrameError> {
    let Some((header, after_header)) = buffer.split_first_chunk::<FRAME_HEADER_BYTES>() else {
        return Ok(None);
    };
    // u32 to usize is lossless on every target this server runs on.
    let body_bytes = u32::from_le_bytes(*header) as usize;
    // Checked before waiting for the body, so a corrupt length is refused
    // from the header alone instead of making the caller buffer it.
    if body_bytes > MAX_FRAME_BODY_BYTES {
        return Err(FrameError::TooLarge { body_bytes });
    }
    let Some(body) = after_header.get(..body_bytes) else {
        return Ok(None);
    };
    let envelope = decode_body(body)?;
    Ok(Some((envelope, FRAME_HEADER_BYTES + body_bytes)))
}

/// Parses one whole frame body; every byte of it must be used.
fn decode_body(body: &[u8]) -> Result<Envelope, FrameError> {
    let mut reader = Reader { rest: body };
    let kind = reader.u8()?;
    let from = reader.u64()?;
    let epoch = reader.u64()?;
    let message = decode_message(kind, &mut reader)?;
    reader.finish()?;
    Ok(Envelope {
        from,
        epoch,
        message,
    })
}

fn decode_message(kind: u8, reader: &mut Reader<'_>) -> Result<Message, FrameError> {
    let message = match kind {
        KIND_ELECTION => Message::Election,
        KIND_ALIVE => Message::Alive {
            leader: reader.node()?,
        },
        KIND_COORDINATOR => Message::Coordinator {
            commit_index: reader.u64()?,
        },
        KIND_PROMISE => Message::Promise {
            last_epoch: reader.u64()?,
            last_index: reader.u64()?,
            commit_index: reader.u64()?,
        },
        KIND_REJECT => Message::Reject {
            leader: reader.node()?,
        },
        KIND_FETCH => Message::Fetch {
            from_index: reader.u64()?,
        },
        KIND_FETCH_REPLY => Message::FetchReply {
            from_index: reader.u64()?,
            records: reader.records()?,
        },
        KIND_APPEND => Message::Append {
            prev_index: reader.u64()?,
            prev_epoch: reader.u64()?,
            commit_index: reader.u64()?,
            round: reader.u64()?,
            records: reader.records()?,
        },
        KIND_ACK => Message::Ack {
            success: reader.flag()?,
            match_index: reader.u64()?,
            round: reader.u64()?,
        },
        KIND_INSTALL_SNAPSHOT => Message::InstallSnapshot {
            index: reader.u64()?,
            epoch: reader.u64()?,
            total_bytes: reader.u64()?,
            offset: reader.u64()?,
            bytes: reader.records()?,
        },
        KIND_SNAPSHOT_ACK => Message::SnapshotAck {
            index: reader.u64()?,
            received_bytes: reader.u64()?,
        },
        unknown => return Err(FrameError::UnknownKind(unknown)),
    };
    Ok(message)
}

/// Reads fields off the front of a frame body; running out is
/// [`FrameError::Truncated`]. (Struct-literal fields are evaluated in the
/// order written, which is the wire order.)
struct Reader<'body> {
    rest: &'body [u8],
}

impl<'body> Reader<'body> {
    fn take<const BYTES: usize>(&mut self) -> Result<[u8; BYTES], FrameError> {
        let (taken, rest) = self
            .rest
            .split_first_chunk::<BYTES>()
            .ok_or(FrameError::Truncated)?;
        self.rest = rest;
        Ok(*taken)
    }

    fn u8(&mut self) -> Result<u8, FrameError> {
        let [byte] = self.take::<1>()?;
        Ok(byte)
    }

    fn u64(&mut self) -> Result<u64, FrameError> {
        self.take::<8>().map(u64::from_le_bytes)
    }

    fn flag(&mut self) -> Result<bool, FrameError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            bad => Err(FrameError::BadFlag(bad)),
        }
    }

    fn node(&mut self) -> Result<Option<NodeId>, FrameError> {
        let present = self.flag()?;
        let node = self.u64()?;
        Ok(present.then_some(node))
    }

    /// Copies the records out; the length is checked against the bytes that
    /// are really there before anything is allocated.
    fn records(&mut self) -> Result<Vec<u8>, FrameError> {
        let records_bytes = u32::from_le_bytes(self.take::<4>()?) as usize;
        let (records, rest) = self
            .rest
            .split_at_checked(records_bytes)
            .ok_or(FrameError::Truncated)?;
        self.rest = rest;
        Ok(records.to_vec())
    }

    fn finish(self) -> Result<(), FrameError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(FrameError::TrailingBytes)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::{self, Entry, Op};

    fn some_records() -> Vec<u8> {
        let mut records = Vec::new();
        for index in 1..=3 {
            let entry = Entry {
                epoch: 2,
                index,
                commit: 0,
                op: Op::Put {
                    key: b"key",
                    value: b"\x00value\xff\n",
                },
            };
            log::encode(&entry, &mut records);
        }
        records
    }

    /// Every variant, with `None`/`Some` leaders, empty and non-empty records,
    /// and extreme numbers.
    fn sample_messages() -> Vec<Message> {
        vec![
            Message::Election,
            Message::Alive { leader: None },
            Message::Alive { leader: Some(0) },
            Message::Alive {
                leader: Some(u64::MAX),
            },
            Message::Coordinator { commit_index: 17 },
            Message::Promise {
                last_epoch: u64::MAX,
                last_index: u64::MAX - 1,
                commit_index: 0,
            },
            Message::Reject { leader: None },
            Message::Reject { leader: Some(7003) },
            Message::Fetch { from_index: 1 },
            Message::FetchReply {
                from_index: 4,
                records: Vec::new(),
            },
            Message::FetchReply {
                from_index: 4,
                records: some_records(),
            },
            Message::Append {
                prev_index: 0,
                prev_epoch: 0,
                commit_index: 0,
                round: 0,
                records: Vec::new(),
            },
            Message::Append {
                prev_index: u64::MAX,
                prev_epoch: u64::MAX,
                commit_index: u64::MAX,
                round: u64::MAX,
                records: some_records(),
            },
            Message::Ack {
                success: true,
                match_index: 12,
                round: 3,
            },
            Message::Ack {
                success: false,
                match_index: u64::MAX,
                round: u64::MAX,
            },
            Message::InstallSnapshot {
                index: 9,
                epoch: 2,
                total_bytes: 100,
                offset: 40,
                bytes: vec![1, 2, 3],
            },
            Message::InstallSnapshot {
                index: u64::MAX,
                epoch: u64::MAX,
                total_bytes: u64::MAX,
                offset: u64::MAX,
                bytes: Vec::new(),
            },
            Message::SnapshotAck {
                index: 9,
                received_bytes: 43,
            },
        ]
    }

    fn sample_envelopes() -> Vec<Envelope> {
        sample_messages()
            .into_iter()
            .enumerate()
            .map(|(position, message)| Envelope {
                from: if position % 2 == 0 { 7001 } else { u64::MAX },
                epoch: if position % 3 == 0 { 0 } else { u64::MAX },
                message,
            })
            .collect()
    }

    fn framed(envelope: &Envelope) -> Vec<u8> {
        let mut out = Vec::new();
        encode_frame(envelope, &mut out);
        out
    }

    /// A frame around an arbitrary body.
    fn frame_with_body(body: &[u8]) -> Vec<u8> {
        let mut out = (body.len() as u32).to_le_bytes().to_vec();
        out.extend_from_slice(body);
        out
    }

    /// The body fields every message starts with.
    fn body_start(kind: u8) -> Vec<u8> {
        let mut body = vec![kind];
        body.extend_from_slice(&1u64.to_le_bytes());
        body.extend_from_slice(&2u64.to_le_bytes());
        body
    }

    #[test]
    fn every_variant_round_trips_with_exact_length() {
        for envelope in sample_envelopes() {
            let bytes = framed(&envelope);
            assert_eq!(
                decode_frame(&bytes),
                Ok(Some((envelope.clone(), bytes.len()))),
                "{envelope:?}"
            );
        }
    }

    #[test]
    fn append_layout_is_byte_exact() {
        let envelope = Envelope {
            from: 7002,
            epoch: 3,
            message: Message::Append {
                prev_index: 5,
                prev_epoch: 2,
                commit_index: 4,
                round: 0x0102_0304_0506_0708,
                records: vec![0xaa, 0xbb, 0xcc],
            },
        };
        #[rustfmt::skip]
        let expected: [u8; 60] = [
            56, 0, 0, 0,                 // body_len: 1 + 8 + 8 + 4 * 8 + 4 + 3
            8,                           // kind: Append
            0x5a, 0x1b, 0, 0, 0, 0, 0, 0, // from: 7002
            3, 0, 0, 0, 0, 0, 0, 0,      // epoch
            5, 0, 0, 0, 0, 0, 0, 0,      // prev_index
            2, 0, 0, 0, 0, 0, 0, 0,      // prev_epoch
            4, 0, 0, 0, 0, 0, 0, 0,      // commit_index
            8, 7, 6, 5, 4, 3, 2, 1,      // round
            3, 0, 0, 0,                  // records length
            0xaa, 0xbb, 0xcc,            // records
        ];
        assert_eq!(framed(&envelope), expected);
    }

    #[test]
    fn snapshot_messages_layout_is_byte_exact() {
        let chunk = Envelope {
            from: 1,
            epoch: 2,
            message: Message::InstallSnapshot {
                index: 3,
                epoch: 4,
                total_bytes: 5,
                offset: 6,
                bytes: vec![0xee],
            },
        };
        #[rustfmt::skip]
        let expected: [u8; 58] = [
            54, 0, 0, 0,                 // body_len: 1 + 8 + 8 + 4 * 8 + 4 + 1
            10,                          // kind: InstallSnapshot
            1, 0, 0, 0, 0, 0, 0, 0,      // from
            2, 0, 0, 0, 0, 0, 0, 0,      // epoch
            3, 0, 0, 0, 0, 0, 0, 0,      // index
            4, 0, 0, 0, 0, 0, 0, 0,      // snapshot epoch
            5, 0, 0, 0, 0, 0, 0, 0,      // total_bytes
            6, 0, 0, 0, 0, 0, 0, 0,      // offset
            1, 0, 0, 0,                  // bytes length
            0xee,                        // bytes
        ];
        assert_eq!(framed(&chunk), expected);
        let ack = Envelope {
            from: 1,
            epoch: 2,
            message: Message::SnapshotAck {
                index: 3,
                received_bytes: 7,
            },
        };
        let mut expected = vec![33, 0, 0, 0, 11];
        for field in [1u64, 2, 3, 7] {
            expected.extend_from_slice(&field.to_le_bytes());
        }
        assert_eq!(framed(&ack), expected);
    }

    #[test]
    fn option_and_bool_layout_is_byte_exact() {
        let alive = Envelope {
            from: 1,
            epoch: 2,
            message: Message::Alive { leader: None },
        };
        let mut expected = frame_with_body(&[body_start(KIND_ALIVE), vec![0; 9]].concat());
        assert_eq!(framed(&alive), expected);
        let reject = Envelope {
            from: 1,
            epoch: 2,
            message: Message::Reject { leader: Some(9) },
        };
        let leader = [1, 9, 0, 0, 0, 0, 0, 0, 0];
        expected = frame_with_body(&[body_start(KIND_REJECT), leader.to_vec()].concat());
        assert_eq!(framed(&reject), expected);
        let ack = Envelope {
            from: 1,
            epoch: 2,
            message: Message::Ack {
                success: true,
                match_index: 0,
                round: 0,
            },
        };
        expected = frame_with_body(&[body_start(KIND_ACK), vec![1], vec![0; 16]].concat());
        assert_eq!(framed(&ack), expected);
    }

    #[test]
    fn encode_appends_without_touching_existing_bytes() {
        let envelopes = sample_envelopes();
        let mut out = b"prefix".to_vec();
        for envelope in &envelopes {
            encode_frame(envelope, &mut out);
        }
        assert!(out.starts_with(b"prefix"));
        let mut rest = &out[b"prefix".len()..];
        for envelope in &envelopes {
            let (decoded, consumed) = decode_frame(rest)
                .expect("valid frame")
                .expect("whole frame");
            assert_eq!(&decoded, envelope);
            rest = &rest[consumed..];
        }
        assert!(rest.is_empty());
    }

    #[test]
    fn two_frames_back_to_back_decode_one_after_the_other() {
        let envelopes = sample_envelopes();
        let (first, second) = (&envelopes[0], &envelopes[envelopes.len() - 3]);
        let mut bytes = framed(first);
        let first_bytes = bytes.len();
        encode_frame(second, &mut bytes);
        assert_eq!(decode_frame(&bytes), Ok(Some((first.clone(), first_bytes))));
        let rest = &bytes[first_bytes..];
        assert_eq!(decode_frame(rest), Ok(Some((second.clone(), rest.len()))));
    }

    #[test]
    fn every_truncation_waits_for_more() {
        for envelope in sample_envelopes() {
            let bytes = framed(&envelope);
            for cut in 0..bytes.len() {
                assert_eq!(decode_frame(&bytes[..cut]), Ok(None), "cut at {cut}");
            }
        }
    }

    #[test]
    fn huge_declared_length_is_too_large_from_the_header_alone() {
        let too_large = |body_bytes: usize| Err(FrameError::TooLarge { body_bytes });
        assert_eq!(
            decode_frame(&u32::MAX.to_le_bytes()),
            too_large(u32::MAX as usize)
        );
        let just_over = MAX_FRAME_BODY_BYTES + 1;
        assert_eq!(
            decode_frame(&(just_over as u32).to_le_bytes()),
            too_large(just_over)
        );
        // The largest allowed length just waits for its body.
        let largest = (MAX_FRAME_BODY_BYTES as u32).to_le_bytes();
        assert_eq!(decode_frame(&largest), Ok(None));
    }

    #[test]
    fn largest_records_batch_fits_in_a_frame() {
        let envelope = Envelope {
            from: u64::MAX,
            epoch: u64::MAX,
            message: Message::Append {
                prev_index: u64::MAX,
                prev_epoch: u64::MAX,
                commit_index: u64::MAX,
                round: u64::MAX,
                records: vec![0x5a; MAX_FRAME_RECORDS_BYTES],
            },
        };
        let bytes = framed(&envelope);
        assert!(bytes.len() - FRAME_HEADER_BYTES <= MAX_FRAME_BODY_BYTES);
        assert_eq!(decode_frame(&bytes), Ok(Some((envelope, bytes.len()))));
    }

    /// Issue #10: a frame carries the largest record the log holds (a
    /// follower once refused a 10 MiB one and dropped the link).
    #[test]
    fn the_largest_record_travels_in_one_frame() {
        let value = vec![b'v'; log::MAX_KEY_AND_VALUE_BYTES - 1];
        let entry = Entry {
            epoch: 1,
            index: 1,
            commit: 0,
            op: Op::Put {
                key: b"k",
                value: &value,
            },
        };
        let mut records = Vec::new();
        log::encode(&entry, &mut records);
        assert_eq!(records.len(), log::MAX_RECORD_BYTES);
        let envelope = Envelope {
            from: 1,
            epoch: 1,
            message: Message::FetchReply {
                from_index: 1,
                records,
            },
        };
        let bytes = framed(&envelope);
        assert!(bytes.len() <= MAX_FRAME_BYTES);
        let Ok(Some((decoded, used))) = decode_frame(&bytes) else {
            panic!("the frame does not decode");
        };
        assert_eq!(used, bytes.len());
        let Message::FetchReply { records, .. } = &decoded.message else {
            panic!("decoded {decoded:?}");
        };
        assert_eq!(log::decode(records), Ok((entry, records.len())));
    }

    #[test]
    fn unknown_kinds_are_refused() {
        for kind in [0, 12, 255] {
            let bytes = frame_with_body(&[body_start(kind), vec![0; 40]].concat());
            assert_eq!(decode_frame(&bytes), Err(FrameError::UnknownKind(kind)));
        }
    }

    #[test]
    fn records_length_past_the_body_is_truncated() {
        for records_len in [4u32, 1000, u32::MAX] {
            let mut body = body_start(KIND_FETCH_REPLY);
            body.extend_from_slice(&4u64.to_le_bytes());
            body.extend_from_slice(&records_len.to_le_bytes());
            body.extend_from_slice(b"abc");
            let bytes = frame_with_body(&body);
            assert_eq!(decode_frame(&bytes), Err(FrameError::Truncated));
        }
    }

    #[test]
    fn bodies_shorter_than_their_fields_are_truncated() {
        assert_eq!(decode_frame(&[0, 0, 0, 0]), Err(FrameError::Truncated));
        let short_header = frame_with_body(&body_start(KIND_ELECTION)[..16]);
        assert_eq!(decode_frame(&short_header), Err(FrameError::Truncated));
        let short_field = frame_with_body(&[body_start(KIND_FETCH), vec![0; 7]].concat());
        assert_eq!(decode_frame(&short_field), Err(FrameError::Truncated));
    }

    #[test]
    fn extra_bytes_in_the_body_are_trailing() {
        for envelope in sample_envelopes() {
            let bytes = framed(&envelope);
            let mut body = bytes[FRAME_HEADER_BYTES..].to_vec();
            body.push(0);
            assert_eq!(
                decode_frame(&frame_with_body(&body)),
                Err(FrameError::TrailingBytes),
                "{envelope:?}"
            );
        }
    }

    #[test]
    fn flags_other_than_zero_or_one_are_refused() {
        for flag in [2, 0x80, 255] {
            let ack = [body_start(KIND_ACK), vec![flag], vec![0; 16]].concat();
            let alive = [body_start(KIND_ALIVE), vec![flag], vec![0; 8]].concat();
            let reject = [body_start(KIND_REJECT), vec![flag], vec![0; 8]].concat();
            for body in [ack, alive, reject] {
                let bytes = frame_with_body(&body);
                assert_eq!(decode_frame(&bytes), Err(FrameError::BadFlag(flag)));
            }
        }
    }

    #[test]
    fn the_node_field_of_a_none_flag_is_ignored() {
        let body = [body_start(KIND_ALIVE), vec![0], 5u64.to_le_bytes().to_vec()].concat();
        let bytes = frame_with_body(&body);
        let expected = Envelope {
            from: 1,
            epoch: 2,
            message: Message::Alive { leader: None },
        };
        assert_eq!(decode_frame(&bytes), Ok(Some((expected, bytes.len()))));
    }

    #[test]
    fn frame_errors_display_their_cause() {
        assert_eq!(
            FrameError::UnknownKind(42).to_string(),
            "unknown message kind 42"
        );
        assert_eq!(
            FrameError::BadFlag(2).to_string(),
            "flag byte 2 is neither 0 nor 1"
        );
        let too_large = FrameError::TooLarge {
            body_bytes: 1 << 30,
        }
        .to_string();
        assert!(too_large.contains("1073741824"), "{too_large}");
    }

    /// xorshift64: a reproducible stream of bytes for the fuzz loop.
    struct Xorshift(u64);

    impl Xorshift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, bound: usize) -> usize {
            (self.next() % bound as u64) as usize
        }

        fn byte(&mut self) -> u8 {
            self.next() as u8
        }
    }

    /// How many fuzz inputs ended each way, so a loop can show it reached
    /// both the decoding and the refusing paths.
    #[derive(Default)]
    struct Outcomes {
        decoded: usize,
        incomplete: usize,
        refused: usize,
    }

    /// What must hold for any input: no panic, `consumed` within the buffer
    /// and equal to the declared length, and a decoded frame re-encodes to
    /// something that decodes to the same envelope.
    fn check_decode_is_sane(buffer: &[u8], outcomes: &mut Outcomes) {
        match decode_frame(buffer) {
            Ok(Some((envelope, consumed))) => {
                outcomes.decoded += 1;
                assert!(consumed <= buffer.len());
                let declared = u32::from_le_bytes(buffer[..4].try_into().unwrap()) as usize;
                assert_eq!(consumed, FRAME_HEADER_BYTES + declared);
                let again = framed(&envelope);
                assert_eq!(decode_frame(&again), Ok(Some((envelope, again.len()))));
            }
            Ok(None) => outcomes.incomplete += 1,
            Err(_) => outcomes.refused += 1,
        }
    }

    fn assert_every_path_reached(outcomes: &Outcomes) {
        assert!(outcomes.decoded > 50, "decoded {}", outcomes.decoded);
        assert!(
            outcomes.incomplete > 50,
            "incomplete {}",
            outcomes.incomplete
        );
        assert!(outcomes.refused > 50, "refused {}", outcomes.refused);
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut random = Xorshift(0x9e37_79b9_7f4a_7c15);
        let mut outcomes = Outcomes::default();
        for _ in 0..20_000 {
            let length = random.below(96);
            let mut buffer: Vec<u8> = (0..length).map(|_| random.byte()).collect();
            // Mostly a plausible length, so that bodies are actually parsed.
            if length >= 4 && random.below(4) != 0 {
                let body_len = random.below(length - 3) as u32;
                buffer[..4].copy_from_slice(&body_len.to_le_bytes());
                if length > 4 {
                    buffer[4] = random.below(11) as u8;
                }
            }
            check_decode_is_sane(&buffer, &mut outcomes);
        }
        assert_every_path_reached(&outcomes);
    }

    #[test]
    fn mutated_frames_never_panic() {
        let frames: Vec<Vec<u8>> = sample_envelopes().iter().map(framed).collect();
        let mut random = Xorshift(0x0123_4567_89ab_cdef);
        let mut outcomes = Outcomes::default();
        for _ in 0..20_000 {
            let mut buffer = frames[random.below(frames.len())].clone();
            for _ in 0..1 + random.below(4) {
                mutate(&mut buffer, &mut random);
            }
            check_decode_is_sane(&buffer, &mut outcomes);
        }
        assert_every_path_reached(&outcomes);
    }

    fn mutate(buffer: &mut Vec<u8>, random: &mut Xorshift) {
        if buffer.is_empty() {
            buffer.push(random.byte());
            return;
        }
        let position = random.below(buffer.len());
        match random.below(4) {
            0 => buffer[position] ^= 1 << random.below(8),
            1 => buffer[position] = random.byte(),
            2 => buffer.truncate(position),
            _ => buffer.insert(position, random.byte()),
        }
    }
}
