//! Criterion benches for the per-request hot path: framing and parsing a
//! line in place, store get/put, and a whole request through the core.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kvstore::node::{LogWriteOutcome, Node, NodeConfig, ReplyQueue, Step};
use kvstore::protocol::{self, Framed};
use kvstore::store::Store;

const KEY_COUNT: usize = 100_000;
const VALUE_BYTES: usize = 100;

fn key(index: usize) -> Vec<u8> {
    format!("key:{index:08}").into_bytes()
}

/// 32 pipelined requests, half GET and half PUT with 100-byte values.
fn pipelined_batch() -> Vec<u8> {
    let value = vec![b'v'; VALUE_BYTES];
    let mut batch = Vec::new();
    for index in 0..32 {
        if index % 2 == 0 {
            batch.extend_from_slice(b"GET ");
            batch.extend_from_slice(&key(index));
        } else {
            batch.extend_from_slice(b"PUT ");
            batch.extend_from_slice(&key(index));
            batch.push(b' ');
            batch.extend_from_slice(&value);
        }
        batch.push(b'\n');
    }
    batch
}

fn parser(criterion: &mut Criterion) {
    let batch = pipelined_batch();
    let mut group = criterion.benchmark_group("parser");
    group.throughput(Throughput::Elements(32));
    group.bench_function("frame_and_parse_32", |bencher| {
        bencher.iter(|| {
            let mut rest = black_box(&batch[..]);
            let mut parsed = 0;
            while let Framed::Line { line, consumed } = protocol::next_line(rest, 1 << 20) {
                parsed += protocol::parse(line).is_ok() as usize;
                rest = &rest[consumed..];
            }
            parsed
        })
    });
    group.finish();
}

fn store(criterion: &mut Criterion) {
    let value = vec![b'v'; VALUE_BYTES];
    let keys: Vec<Vec<u8>> = (0..KEY_COUNT).map(key).collect();
    let mut store = Store::new();
    for key in &keys {
        store.put(key, &value, 1);
    }
    let mut group = criterion.benchmark_group("store");
    group.throughput(Throughput::Elements(1));
    let mut next = 0;
    group.bench_function("get_hit_100k", |bencher| {
        bencher.iter(|| {
            next = (next + 7919) % KEY_COUNT;
            black_box(store.get(&keys[next]).map(<[u8]>::len))
        })
    });
    group.bench_function("put_overwrite_100k", |bencher| {
        bencher.iter(|| {
            next = (next + 7919) % KEY_COUNT;
            store.put(&keys[next], black_box(&value), 2);
        })
    });
    group.finish();
}

/// A pipelined batch through parse, the core, the reply queue and the
/// record buffer, as one connection's turn would run it (minus syscalls).
fn node_turn(criterion: &mut Criterion) {
    let batch = pipelined_batch();
    let mut node = Node::new(NodeConfig::single(1));
    node.start(0);
    let mut replies = ReplyQueue::new();
    let mut log_buffer = Vec::new();
    let mut group = criterion.benchmark_group("node");
    group.throughput(Throughput::Elements(32));
    group.bench_function("turn_32_requests_half_put", |bencher| {
        bencher.iter(|| {
            let mut rest = &batch[..];
            while let Framed::Line { line, consumed } = protocol::next_line(rest, 1 << 20) {
                if let Ok(request) = protocol::parse(line) {
                    node.handle_request(request, &mut replies);
                }
                rest = &rest[consumed..];
            }
            let mut sendable = 0;
            while let Some(step) = node.next_step() {
                match step {
                    Step::WriteLog => {
                        let write = node.pending_log_write().expect("a pending write");
                        log_buffer.extend_from_slice(write.bytes);
                        node.log_write_done(LogWriteOutcome::Released);
                    }
                    Step::Release(released) => {
                        sendable = replies.sendable(released).len();
                        replies.consume(sendable);
                    }
                    _ => {}
                }
            }
            log_buffer.clear();
            sendable
        })
    });
    group.finish();
}

criterion_group!(benches, parser, store, node_turn);
criterion_main!(benches);
