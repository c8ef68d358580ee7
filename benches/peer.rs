//! The peer wire format on the replication hot path: a leader encodes one
//! Append frame per follower per turn, and a follower decodes it and answers
//! with an Ack. Heartbeats are empty Appends, sent every tick to every peer.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kvstore::log::{Entry, Op, encode};
use kvstore::node::message::{Envelope, Message, decode_frame, encode_frame};

const RECORDS_PER_APPEND: u64 = 32;
const VALUE_BYTES: usize = 100;

/// 32 Put records with 100-byte values, as a busy leader's turn produces.
fn put_records() -> Vec<u8> {
    let value = [b'v'; VALUE_BYTES];
    let mut records = Vec::new();
    for index in 1..=RECORDS_PER_APPEND {
        let key = format!("key:{index:08}").into_bytes();
        let entry = Entry {
            epoch: 3,
            index,
            commit: index - 1,
            op: Op::Put {
                key: &key,
                value: &value,
            },
        };
        encode(&entry, &mut records);
    }
    records
}

fn append(records: Vec<u8>) -> Envelope {
    Envelope {
        from: 7001,
        epoch: 3,
        message: Message::Append {
            prev_index: 1_000_000,
            prev_epoch: 3,
            commit_index: 999_990,
            round: 42,
            records,
        },
    }
}

fn ack() -> Envelope {
    Envelope {
        from: 7002,
        epoch: 3,
        message: Message::Ack {
            success: true,
            match_index: 1_000_032,
            round: 42,
        },
    }
}

/// Encodes `envelope` into a reused buffer and decodes it back.
fn round_trip(criterion: &mut Criterion, name: &str, envelope: &Envelope) {
    let mut frame = Vec::new();
    encode_frame(envelope, &mut frame);
    let mut group = criterion.benchmark_group("peer_frame");
    group.throughput(Throughput::Bytes(frame.len() as u64));
    group.bench_function(name, |bencher| {
        bencher.iter(|| {
            frame.clear();
            encode_frame(black_box(envelope), &mut frame);
            let decoded = decode_frame(black_box(&frame)).expect("valid frame");
            black_box(decoded)
        })
    });
    group.finish();
}

fn frames(criterion: &mut Criterion) {
    round_trip(criterion, "append_32_puts_100b", &append(put_records()));
    round_trip(criterion, "append_heartbeat", &append(Vec::new()));
    round_trip(criterion, "ack", &ack());
}

criterion_group!(benches, frames);
criterion_main!(benches);
