//! Snapshot throughput: encoding a store image of 100,000 pairs with 100-byte
//! values into chunks, and decoding it back, in bytes of snapshot per second.
//! Pure CPU: no file is written, so the numbers bound what the disk or the
//! network can be fed.
//!
//! Decoding is measured twice: the whole file in one piece (every chunk
//! decoded in place, as `load` does within a 4 MiB block) and in 64 KiB
//! pieces (as from a socket, where chunks straddle reads and are copied).

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kvstore::snapshot::{Decoder, Encoder, Header};

const PAIRS: u64 = 100_000;
const VALUE_BYTES: usize = 100;
const NETWORK_READ_BYTES: usize = 64 * 1024;

/// The pairs of the store image, in the store's layout: key length, write
/// index, key, value.
fn stored_pairs() -> Vec<Vec<u8>> {
    let value = [b'v'; VALUE_BYTES];
    (1..=PAIRS)
        .map(|index| {
            let key = format!("key:{index:010}");
            let mut pair = (key.len() as u32).to_le_bytes().to_vec();
            pair.extend_from_slice(&index.to_le_bytes());
            pair.extend_from_slice(key.as_bytes());
            pair.extend_from_slice(&value);
            pair
        })
        .collect()
}

/// Encodes `pairs`, recycling each chunk as a writer would after writing it;
/// returns the bytes the file would hold (only counted unless `keep`).
fn encode(pairs: &[Vec<u8>], keep: bool) -> (u64, Vec<u8>) {
    let header = Header {
        index: PAIRS,
        epoch: 1,
    };
    let (mut encoder, header_bytes) = Encoder::new(header);
    let mut file = if keep { header_bytes } else { Vec::new() };
    for pair in pairs {
        if let Some(chunk) = encoder.push_pair(pair) {
            if keep {
                file.extend_from_slice(&chunk);
            }
            encoder.recycle(black_box(chunk));
        }
    }
    let (end, summary) = encoder.finish();
    file.extend_from_slice(&end);
    (summary.file_bytes, file)
}

/// Decodes `file` fed in pieces of `piece_bytes`; returns the pair bytes
/// handed out. Only the format's cost: the callback counts, where a loader
/// would allocate and copy each pair.
fn decode(file: &[u8], piece_bytes: usize) -> u64 {
    let mut decoder = Decoder::new();
    let mut pair_bytes = 0u64;
    for piece in file.chunks(piece_bytes) {
        decoder
            .feed(piece, |pair| pair_bytes += black_box(pair).len() as u64)
            .expect("valid snapshot");
    }
    decoder.finish().expect("complete snapshot");
    pair_bytes
}

fn snapshot_throughput(criterion: &mut Criterion) {
    let pairs = stored_pairs();
    let (file_bytes, file) = encode(&pairs, true);
    let mut group = criterion.benchmark_group("snapshot");
    group.throughput(Throughput::Bytes(file_bytes));
    group.bench_function("encode", |bencher| {
        bencher.iter(|| encode(black_box(&pairs), false).0);
    });
    group.bench_function("decode_whole", |bencher| {
        bencher.iter(|| decode(black_box(&file), file.len()));
    });
    group.bench_function("decode_network_pieces", |bencher| {
        bencher.iter(|| decode(black_box(&file), NETWORK_READ_BYTES));
    });
    group.finish();
}

criterion_group!(benches, snapshot_throughput);
criterion_main!(benches);
