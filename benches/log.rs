//! Group commit cost: encoding a turn's Put records, then one append and one
//! fdatasync per batch, as the reactor does once per turn. Throughput is in
//! records, so the batch sizes show how much group commit amortizes the sync.
//!
//! The log lives in a temporary directory under `KVSTORE_BENCH_DIR` (default:
//! the system temp dir). On tmpfs fdatasync costs nothing; point it at the disk
//! the server would use for meaningful sync numbers.

use std::hint::black_box;
use std::path::PathBuf;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use kvstore::log::{Entry, LogFile, Op, encode};

const VALUE_BYTES: usize = 100;
const BATCH_SIZES: [u64; 3] = [1, 16, 256];

fn bench_directory() -> tempfile::TempDir {
    let parent =
        std::env::var_os("KVSTORE_BENCH_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
    tempfile::Builder::new()
        .prefix("kvstore-log-bench")
        .tempdir_in(parent)
        .expect("create bench directory")
}

/// Encodes `batch_size` Put records starting at `first_index` into `out`.
fn encode_batch(out: &mut Vec<u8>, first_index: u64, batch_size: u64, value: &[u8]) {
    for index in first_index..first_index + batch_size {
        let key = index.to_le_bytes();
        let entry = Entry {
            epoch: 1,
            index,
            commit: index - 1,
            op: Op::Put { key: &key, value },
        };
        encode(&entry, out);
    }
}

fn group_commit(criterion: &mut Criterion) {
    let directory = bench_directory();
    let (mut log, _) = LogFile::open(directory.path(), |_, _| {}).expect("open log");
    let value = [b'v'; VALUE_BYTES];
    let mut batch = Vec::new();
    let mut next_index = 1;
    let mut group = criterion.benchmark_group("log_group_commit");
    for batch_size in BATCH_SIZES {
        group.throughput(Throughput::Elements(batch_size));
        group.bench_with_input(
            BenchmarkId::from_parameter(batch_size),
            &batch_size,
            |bencher, &batch_size| {
                bencher.iter(|| {
                    batch.clear();
                    encode_batch(&mut batch, next_index, batch_size, &value);
                    next_index += batch_size;
                    log.append(&batch).expect("append");
                    log.sync_data().expect("sync");
                });
            },
        );
    }
    group.finish();
}

fn encode_only(criterion: &mut Criterion) {
    let value = [b'v'; VALUE_BYTES];
    let mut batch = Vec::new();
    let mut group = criterion.benchmark_group("log_encode");
    for batch_size in BATCH_SIZES {
        group.throughput(Throughput::Elements(batch_size));
        group.bench_with_input(
            BenchmarkId::from_parameter(batch_size),
            &batch_size,
            |bencher, &batch_size| {
                bencher.iter(|| {
                    batch.clear();
                    encode_batch(&mut batch, 1, batch_size, black_box(&value));
                    black_box(&batch);
                });
            },
        );
    }
    group.finish();
}

criterion_group!(benches, group_commit, encode_only);
criterion_main!(benches);
