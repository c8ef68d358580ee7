//! What survives: kill -9, SIGTERM/SIGINT, each fsync policy, a torn or
//! corrupt log, and a log write that fails.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;

use common::{DEADLINE, ServerProcess, run_to_exit, wait_until};
use kvstore::log::{self, BatchBuilder, DataDir, Entry, LOG_MAGIC, Log, Op};
use kvstore::node::NodeConfig;
use kvstore::startup;
use kvstore::store::{Store, StoredPair};

/// Byte offsets of every record in a log file, and the file's length.
fn record_offsets(path: &Path) -> (Vec<usize>, usize) {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(bytes[..LOG_MAGIC.len()], LOG_MAGIC);
    let mut offsets = Vec::new();
    let mut offset = LOG_MAGIC.len();
    while offset < bytes.len() {
        let (_, length) = log::decode(&bytes[offset..]).unwrap();
        offsets.push(offset);
        offset += length;
    }
    (offsets, bytes.len())
}

/// What one client of the kill -9 test was told before the server died.
#[derive(Default)]
struct Acknowledged {
    /// Keys whose PUT got OK and that were never sent a DEL.
    present: Vec<String>,
    /// Keys whose DEL got OK.
    deleted: Vec<String>,
}

/// Reads one reply line; `None` once the server is gone (EOF, reset, or a
/// line cut short, which is no reply).
fn reply_before_death(reader: &mut impl BufRead) -> Option<Vec<u8>> {
    let mut reply = Vec::new();
    match reader.read_until(b'\n', &mut reply) {
        Ok(_) if reply.ends_with(b"\n") => Some(reply),
        _ => None,
    }
}

/// One client thread of the kill -9 test. Each round pipelines eight PUTs
/// of new keys and a DEL of the last key acknowledged in the round before,
/// until the connection fails. A DEL whose reply never came is left out of
/// both lists: either outcome is correct.
fn write_until_the_server_dies(
    address: SocketAddr,
    client: usize,
    acknowledged_total: &AtomicUsize,
) -> Acknowledged {
    const BATCH: usize = 8;
    const MAX_BATCHES: usize = 100_000;
    let stream = TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    let mut acknowledged = Acknowledged::default();
    for batch in 0..MAX_BATCHES {
        let keys: Vec<String> = (0..BATCH)
            .map(|i| format!("c{client}-{}", batch * BATCH + i))
            .collect();
        let mut requests: String = keys
            .iter()
            .map(|key| format!("PUT {key} v-{key}\n"))
            .collect();
        let delete = acknowledged.present.pop();
        if let Some(key) = &delete {
            requests.push_str(&format!("DEL {key}\n"));
        }
        if writer.write_all(requests.as_bytes()).is_err() {
            return acknowledged;
        }
        for key in keys {
            let Some(reply) = reply_before_death(&mut reader) else {
                return acknowledged;
            };
            assert_eq!(reply, b"OK\n", "PUT {key}");
            acknowledged.present.push(key);
            acknowledged_total.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(key) = delete {
            let Some(reply) = reply_before_death(&mut reader) else {
                return acknowledged;
            };
            assert_eq!(reply, b"OK\n", "DEL {key}");
            acknowledged.deleted.push(key);
        }
    }
    panic!("client {client} was never cut off");
}

#[test]
fn every_acknowledged_write_survives_kill_9() {
    const CLIENTS: usize = 4;
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(dir.path(), &[]);
    let mut setup = server.connect();
    assert_eq!(setup.request(b"PUT deleted x"), b"OK");
    assert_eq!(setup.request(b"DEL deleted"), b"OK");

    let acknowledged_total = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let total = Arc::clone(&acknowledged_total);
            let address = server.address;
            thread::spawn(move || write_until_the_server_dies(address, client, &total))
        })
        .collect();
    wait_until("clients to get 2000 writes acknowledged", || {
        acknowledged_total.load(Ordering::Relaxed) >= 2000
    });
    // The clients are still writing: some of their requests are in flight.
    server.kill9();
    let acknowledged: Vec<Acknowledged> = clients
        .into_iter()
        .map(|client| client.join().unwrap())
        .collect();

    let port = server.address.port();
    drop(server);
    let restarted = ServerProcess::start_on_port(port, dir.path(), &[]);
    let mut client = restarted.connect();
    let mut checked = 0;
    for Acknowledged { present, deleted } in &acknowledged {
        for key in present {
            let value = client.request(format!("GET {key}").as_bytes());
            assert_eq!(
                String::from_utf8(value).unwrap(),
                format!("v-{key}"),
                "acknowledged PUT {key} lost"
            );
        }
        for key in deleted {
            let value = client.request(format!("GET {key}").as_bytes());
            assert_eq!(value, b"NOT_FOUND", "acknowledged DEL {key} lost");
        }
        checked += present.len() + deleted.len();
    }
    // Each client may have one DEL whose outcome it never learnt, and that
    // key is checked neither way.
    assert!(
        checked >= 2000 - CLIENTS,
        "only {checked} acknowledged writes"
    );
    assert_eq!(client.request(b"GET deleted"), b"NOT_FOUND");
}

fn shutdown_by_signal_keeps_everything(signal: &str) {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(dir.path(), &[]);
    let mut client = server.connect();
    assert_eq!(client.request(b"PUT a 1"), b"OK");
    assert_eq!(client.request(b"PUT b 2"), b"OK");
    assert_eq!(client.request(b"DEL a"), b"OK");

    // The client stays connected; the signal still stops the server.
    server.signal(signal);
    let status = server.wait_exit();
    let stderr = server.drain_stderr();
    assert_eq!(status.code(), Some(0), "stderr: {stderr}");
    assert!(stderr.contains("shutting down"), "stderr: {stderr}");
    // Index 1 is the Noop the node appended when it became leader.
    assert!(stderr.contains("log synced at index 4"), "stderr: {stderr}");
    assert_eq!(client.read_to_end(), b"");

    let mut restarted = ServerProcess::start(dir.path(), &[]);
    restarted.wait_for_stderr("4 records replayed");
    let mut client = restarted.connect();
    assert_eq!(client.request(b"GET a"), b"NOT_FOUND");
    assert_eq!(client.request(b"GET b"), b"2");
}

#[test]
fn sigterm_syncs_and_exits_0() {
    shutdown_by_signal_keeps_everything("TERM");
}

#[test]
fn sigint_syncs_and_exits_0() {
    shutdown_by_signal_keeps_everything("INT");
}

fn round_trip_and_restart(flags: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(dir.path(), flags);
    let mut client = server.connect();
    for i in 0..50 {
        assert_eq!(client.request(format!("PUT k{i} v{i}").as_bytes()), b"OK");
        assert_eq!(
            client.request(format!("GET k{i}").as_bytes()),
            format!("v{i}").as_bytes()
        );
    }
    assert_eq!(client.request(b"DEL k0"), b"OK");
    server.stop();

    let mut restarted = ServerProcess::start(dir.path(), flags);
    let mut client = restarted.connect();
    assert_eq!(client.request(b"GET k0"), b"NOT_FOUND");
    for i in 1..50 {
        assert_eq!(
            client.request(format!("GET k{i}").as_bytes()),
            format!("v{i}").as_bytes()
        );
    }

    // Without fsync an OK still follows the write(2): a crash of the
    // process alone (not of the machine) loses nothing acknowledged.
    assert_eq!(client.request(b"PUT late 1"), b"OK");
    restarted.kill9();
    let again = ServerProcess::start(dir.path(), flags);
    assert_eq!(again.connect().request(b"GET late"), b"1");
}

#[test]
fn fsync_interval_serves_and_keeps_data_across_sigterm() {
    round_trip_and_restart(&["--fsync", "interval", "--fsync-interval-ms", "20"]);
}

#[test]
fn fsync_never_serves_and_keeps_data_across_sigterm() {
    round_trip_and_restart(&["--fsync", "never"]);
}

#[test]
fn a_torn_tail_is_cut_with_a_warning_and_the_records_before_it_kept() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(dir.path(), &[]);
    let mut client = server.connect();
    for i in 1..=3 {
        assert_eq!(client.request(format!("PUT k{i} v{i}").as_bytes()), b"OK");
    }
    server.stop();
    let log_path = server.log_path();
    // A leader's Noop, then the three writes.
    let (offsets, length) = record_offsets(&log_path);
    assert_eq!(offsets.len(), 4);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&log_path)
        .unwrap();
    file.set_len(length as u64 - 3).unwrap();
    drop(file);

    let mut restarted = ServerProcess::start(dir.path(), &[]);
    let warning = restarted.wait_for_stderr("torn write");
    assert!(
        warning.contains(&format!("torn write at byte {}", offsets[3])),
        "{warning}"
    );
    assert!(
        warning.contains(&log_path.display().to_string()),
        "{warning}"
    );
    restarted.wait_for_stderr("3 records replayed");
    let mut client = restarted.connect();
    assert_eq!(client.request(b"GET k1"), b"v1");
    assert_eq!(client.request(b"GET k2"), b"v2");
    assert_eq!(client.request(b"GET k3"), b"NOT_FOUND");
    // The log is whole again: new writes follow the kept records.
    assert_eq!(client.request(b"PUT k4 v4"), b"OK");
    restarted.stop();
    // The kept three, the second run's Noop, and k4.
    let (offsets, _) = record_offsets(&log_path);
    assert_eq!(offsets.len(), 5);
    let mut again = ServerProcess::start(dir.path(), &[]);
    again.wait_for_stderr("5 records replayed, last index 5");
    assert_eq!(again.connect().request(b"GET k4"), b"v4");
}

#[test]
fn a_corrupt_record_in_the_middle_stops_the_server_naming_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join(log::segment_file_name(1));
    let mut bytes = LOG_MAGIC.to_vec();
    let mut offsets = Vec::new();
    for index in 1..=5u64 {
        offsets.push(bytes.len());
        let key = format!("k{index}");
        let value = format!("value {index}");
        let entry = Entry {
            epoch: 1,
            index,
            commit: 0,
            op: Op::Put {
                key: key.as_bytes(),
                value: value.as_bytes(),
            },
        };
        log::encode(&entry, &mut bytes);
    }
    // The last byte of record 2 is in its value: only the checksum can tell.
    bytes[offsets[2] - 1] ^= 0x01;
    std::fs::write(&log_path, &bytes).unwrap();

    let data_dir = dir.path().to_str().unwrap();
    let (status, stderr) = run_to_exit(&["0", "--data-dir", data_dir]);
    assert_eq!(status.code(), Some(1), "stderr: {stderr}");
    let expected = format!(
        "log {} is corrupt at byte {}",
        log_path.display(),
        offsets[1]
    );
    assert!(stderr.contains(&expected), "stderr: {stderr}");
    assert_eq!(
        std::fs::read(&log_path).unwrap(),
        bytes,
        "the log was changed"
    );
}

/// With the log's file size capped (SIGXFSZ ignored, so the write fails with
/// EFBIG), a PUT that does not fit gets ERR, never OK; the server exits 1;
/// every acknowledged write is there after a restart, the refused one is not.
#[test]
fn a_failed_log_write_is_refused_and_stops_the_server() {
    let dir = tempfile::tempdir().unwrap();
    // dash counts -f in 512-byte blocks, bash in KiB: 32 or 64 KiB.
    let script = r#"trap "" XFSZ; ulimit -f 64; exec "$0" "$@""#;
    let mut server = ServerProcess::start_in_shell(script, dir.path(), &[]);
    let mut client = server.connect();
    let value = "x".repeat(1000);
    let mut acknowledged = Vec::new();
    let mut refused = None;
    for i in 0..200 {
        let key = format!("k{i}");
        let reply = client.request(format!("PUT {key} {value}").as_bytes());
        if reply == b"OK" {
            acknowledged.push(key);
            continue;
        }
        assert_eq!(
            String::from_utf8_lossy(&reply),
            "ERR log write failed, write not applied; server is stopping"
        );
        refused = Some(key);
        break;
    }
    let refused = refused.expect("no write failed under a 64 KiB file size limit");
    assert!(!acknowledged.is_empty());
    assert_eq!(client.read_until_closed(), b"");

    let status = server.wait_exit();
    let stderr = server.drain_stderr();
    assert_eq!(status.code(), Some(1), "stderr: {stderr}");
    assert!(
        stderr.contains(" ERROR node=0 log write failed: File too large"),
        "stderr: {stderr}"
    );

    let mut restarted = ServerProcess::start(dir.path(), &[]);
    // Plus the Noop the node appended when it became leader.
    restarted.wait_for_stderr(&format!("{} records replayed", acknowledged.len() + 1));
    let mut client = restarted.connect();
    for key in &acknowledged {
        assert_eq!(
            client.request(format!("GET {key}").as_bytes()),
            value.as_bytes()
        );
    }
    let refused_get = client.request(format!("GET {refused}").as_bytes());
    assert_eq!(refused_get, b"NOT_FOUND");
    assert!(
        !restarted
            .stderr_seen
            .iter()
            .any(|line| line.contains(" WARN ")),
        "the refused write left a torn record: {:#?}",
        restarted.stderr_seen
    );
}

/// Pipelined writes from several clients into a log that hits its size
/// cap: writes already written in earlier turns (awaiting their fdatasync)
/// are answered "may or may not have been applied", never "not applied";
/// every OK is there after the restart and every "not applied" is not.
#[test]
fn pipelined_writes_that_meet_a_full_log_are_told_the_truth() {
    use common::fill::{self, Told};
    let dir = tempfile::tempdir().unwrap();
    let script = r#"trap "" XFSZ; ulimit -f 256; exec "$0" "$@""#;
    let mut server = ServerProcess::start_in_shell(script, dir.path(), &[]);
    let told = fill::pipeline_until_closed(server.address, 4, 16, 900);
    let status = server.wait_exit();
    assert_eq!(status.code(), Some(1), "{}", server.drain_stderr());
    let restarted = ServerProcess::start(dir.path(), &[]);
    let counts = fill::check_against_restart(&mut restarted.connect(), &told, 900);
    eprintln!("replies against the restart: {counts:?}");
    assert!(counts.get("ok").copied().unwrap_or(0) > 0, "{counts:?}");
    let errors = told
        .values()
        .filter(|outcome| matches!(outcome, Told::NotApplied | Told::MayOrMayNot))
        .count();
    assert!(errors > 0, "no write was refused: {counts:?}");
}

#[test]
fn a_promise_that_cannot_be_persisted_stops_the_server() {
    // A directory where the epoch's temporary file must go makes the atomic
    // replace fail, even as root. Leading on an unpersisted promise could
    // let a restart promise the same epoch twice: the server must stop.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("epoch.tmp")).unwrap();
    let (status, stderr) = run_to_exit(&["0", "--data-dir", dir.path().to_str().unwrap()]);
    assert_eq!(status.code(), Some(1), "stderr: {stderr}");
    assert!(
        stderr.contains("cannot persist the promised epoch"),
        "stderr: {stderr}"
    );
    assert!(!dir.path().join("epoch").exists());
}

/// The records of the batch replay test: single writes and batches (one
/// writing a key twice, one deleting a key never written), with keys and
/// values of any bytes, and one batch large enough to roll a segment.
fn batch_replay_ops() -> Vec<BatchBuilder> {
    let single = |key: &[u8], value: Option<&[u8]>| {
        let mut builder = BatchBuilder::new();
        match value {
            Some(value) => builder.push_put(key, value),
            None => builder.push_del(key),
        }
        builder
    };
    let mut ops = vec![single(b"a", Some(b"0"))];
    let mut batch = BatchBuilder::new();
    batch.push_put(b"a", b"1");
    batch.push_put(b"\r\n\x00k", b"v\r\n\x00");
    batch.push_del(b"a");
    batch.push_put(b"b", b"2");
    ops.push(batch);
    let mut twice = BatchBuilder::new();
    twice.push_put(b"a", b"3");
    twice.push_put(b"a", b"4");
    twice.push_del(b"never");
    ops.push(twice);
    let mut large = BatchBuilder::new();
    for index in 0..50 {
        large.push_put(format!("many{index}").as_bytes(), &[b'm'; 40]);
    }
    ops.push(large);
    let mut last = BatchBuilder::new();
    last.push_del(b"\r\n\x00k");
    last.push_put(b"c", b"5");
    ops.push(last);
    ops
}

/// Every pair with the index of the write that set it, sorted.
fn pairs_with_indexes(store: &Store) -> Vec<(Vec<u8>, Vec<u8>, u64)> {
    let mut pairs: Vec<_> = store
        .iter()
        .map(|(key, value)| {
            let index = store.lookup(key).map(StoredPair::write_index).unwrap();
            (key.to_vec(), value.to_vec(), index)
        })
        .collect();
    pairs.sort();
    pairs
}

/// A log holding batch records, written through the segmented log and
/// read back at start-up (by `startup::open`, then by a real server),
/// replays to the store that applying the same records gave: each batch
/// whole, in order, its operations with the batch's index.
#[test]
fn batch_records_replay_to_the_store_they_made() {
    const SEGMENT_BYTES: u64 = 512;
    let dir = tempfile::tempdir().unwrap();
    let ops = batch_replay_ops();
    let mut expected = Store::new();
    {
        let data_dir = DataDir::lock(dir.path()).unwrap();
        let (mut log, _) = Log::open(&data_dir, SEGMENT_BYTES, None, |_| {}).unwrap();
        for (position, builder) in ops.iter().enumerate() {
            let index = position as u64 + 1;
            // A one-operation builder stands for a plain Put or Del record.
            let Op::Batch(batch) = builder.op() else {
                unreachable!("a builder makes batches");
            };
            let op = match builder.count() {
                1 => batch.iter().next().unwrap(),
                _ => builder.op(),
            };
            let mut bytes = Vec::new();
            log::encode(
                &Entry {
                    epoch: 1,
                    index,
                    commit: index,
                    op,
                },
                &mut bytes,
            );
            log.append(index, &bytes).unwrap();
            expected.apply(index, &op);
        }
        log.take_sync_job().unwrap().run().unwrap();
        assert!(log.segment_count() > 1, "the large batch rolled a segment");
    }
    let records = ops.len() as u64;
    let config = NodeConfig::single(1);
    let (node, log, loaded) = startup::open(dir.path(), &config, SEGMENT_BYTES).unwrap();
    assert_eq!(
        (loaded.records_replayed, loaded.last_index),
        (records, records)
    );
    assert_eq!(
        pairs_with_indexes(node.store()),
        pairs_with_indexes(&expected)
    );
    assert_eq!(expected.get(b"a"), Some(&b"4"[..]));
    assert_eq!(expected.len(), 53, "a, b, c and the 50 of the large batch");
    drop((node, log));

    let mut server = ServerProcess::start(dir.path(), &[]);
    server.wait_for_stderr(&format!("{records} records replayed, last index {records}"));
    let mut client = server.connect();
    assert_eq!(client.request(b"GET a"), b"4");
    assert_eq!(client.request(b"GET b"), b"2");
    assert_eq!(client.request(b"GET c"), b"5");
    assert_eq!(client.request(b"GET many49"), [b'm'; 40]);
    assert_eq!(client.request(b"GET never"), b"NOT_FOUND");
}
