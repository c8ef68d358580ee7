//! Snapshots and log compaction on one real server process: a bounded data
//! directory under sustained overwrites, `SNAPSHOT`, restarts that load the
//! snapshot, kill -9 at every step of taking one, damaged snapshots, a full
//! disk, the previous version's log file, and backup and restore.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::{
    Connection, ServerProcess, assert_values, data_dir_bytes, last_values, overwrites, put_all,
    run_to_exit, wait_until,
};
use kvstore::log::{self, Entry, LOG_MAGIC, Op};
use kvstore::snapshot;

const KIB: u64 = 1024;

/// A small threshold, so a test sees many snapshots: 64 KiB of log between
/// them, 16 KiB segments.
const SMALL_SNAPSHOTS: &[&str] = &["--snapshot-log-bytes", "65536"];

fn snapshots_in(dir: &Path) -> Vec<(u64, PathBuf)> {
    snapshot::list(dir).unwrap().snapshots
}

/// `ROLE`'s fields: role, leader, epoch, commit index, snapshot index,
/// used and max memory bytes.
fn role(connection: &mut Connection) -> Vec<String> {
    let reply = String::from_utf8(connection.request(b"ROLE")).unwrap();
    reply.split(' ').map(str::to_string).collect()
}

#[test]
fn sustained_overwrites_keep_the_data_dir_bounded_and_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(
        dir.path(),
        &[SMALL_SNAPSHOTS, &["--fsync", "never"]].concat(),
    );
    let mut client = server.connect();
    let pairs = overwrites(100, 400, 100);
    let written: u64 = pairs
        .iter()
        .map(|(key, value)| (key.len() + value.len() + 37) as u64)
        .sum();
    assert!(
        written > 4 * 1024 * KIB,
        "the test writes {written} bytes of log"
    );
    // How far the directory runs ahead while a snapshot is being made
    // durable depends on the machine (a slow fsync lets the log grow
    // meanwhile); what must hold whatever the timing is that, once the
    // snapshot in flight lands, it comes back to the same small size however
    // much history was written: about two snapshots (~12 KiB each), the log
    // since the last one (64 KiB) and a segment.
    for (number, chunk) in pairs.chunks(2000).enumerate() {
        put_all(&mut client, chunk);
        wait_until(
            &format!("the data dir to come back under 1 MiB after chunk {number}"),
            || data_dir_bytes(dir.path(), "") < 1024 * KIB,
        );
    }
    // Quiet, with a fresh snapshot: about a snapshot (~12 KiB) and a segment
    // once the log it covers is gone (right after the reply, that turn).
    let reply = client.request(b"SNAPSHOT");
    assert!(reply.starts_with(b"OK "), "{reply:?}");
    wait_until("the data dir to shrink to a snapshot and a segment", || {
        data_dir_bytes(dir.path(), "") < 80 * KIB
    });
    server.kill9();
    let mut restarted = ServerProcess::start(dir.path(), SMALL_SNAPSHOTS);
    let line = restarted.wait_for_stderr("listening on");
    assert!(line.contains("with 100 keys loaded"), "{line}");
    assert_values(&mut restarted.connect(), &last_values(&pairs));
}

#[test]
fn snapshot_replies_its_index_once_durable_and_a_restart_loads_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(dir.path(), &["--snapshot-log-bytes", "0"]);
    let mut client = server.connect();
    let pairs = overwrites(50, 2, 10);
    put_all(&mut client, &pairs);
    assert_eq!(client.request(b"DEL key7"), b"OK");
    let commit_index = role(&mut client)[3].clone();
    let reply = client.request(b"SNAPSHOT");
    assert_eq!(reply, format!("OK {commit_index}").as_bytes());
    let index: u64 = commit_index.parse().unwrap();
    assert_eq!(
        snapshots_in(dir.path()),
        [(index, dir.path().join(snapshot::file_name(index)))]
    );
    assert_eq!(
        role(&mut client)[4],
        commit_index,
        "ROLE shows the snapshot"
    );
    // Nothing new: the same snapshot, at once.
    assert_eq!(
        client.request(b"SNAPSHOT"),
        format!("OK {index}").as_bytes()
    );
    assert_eq!(client.request(b"PUT after snapshot"), b"OK");
    server.stop();

    let mut restarted = ServerProcess::start(dir.path(), &[]);
    let line = restarted.wait_for_stderr("listening on");
    assert!(
        line.contains(&format!("snapshot index {index} with 49 keys loaded")),
        "{line}"
    );
    // The Noop of the first run's shutdown turn is not there; the PUT after
    // the snapshot is.
    assert!(line.contains("1 records replayed"), "{line}");
    let mut expected = last_values(&pairs);
    expected.remove("key7");
    expected.insert("after".to_string(), "snapshot".to_string());
    let mut client = restarted.connect();
    assert_values(&mut client, &expected);
    assert_eq!(client.request(b"GET key7"), b"NOT_FOUND");
}

#[test]
fn snapshot_pipelined_behind_writes_answers_after_them_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &["--snapshot-log-bytes", "0"]);
    let mut client = server.connect();
    client.send(b"PUT a 1\nSNAPSHOT\nGET a\nSNAPSHOT\n");
    assert_eq!(client.read_line(), b"OK\n");
    let first = client.read_line();
    assert!(first.starts_with(b"OK "), "{first:?}");
    assert_eq!(client.read_line(), b"1\n");
    assert_eq!(client.read_line(), first, "nothing was written in between");
}

/// The crash points of taking a snapshot and letting the log go, in order.
const SNAPSHOT_STEPS: [&str; 5] = [
    "snapshot-begin",
    "snapshot-write",
    "snapshot-before-publish",
    "snapshot-after-publish",
    "compact-log",
];

#[test]
fn kill_9_at_every_step_of_taking_a_snapshot_loses_nothing() {
    for step in SNAPSHOT_STEPS {
        let dir = tempfile::tempdir().unwrap();
        let env = [("KVSTORE_FAILPOINT", step)];
        let args = ["--snapshot-log-bytes", "0"];
        let mut server = ServerProcess::start_with_env(0, dir.path(), &args, &env);
        let mut client = server.connect();
        let first = overwrites(200, 3, 20);
        put_all(&mut client, &first);
        client.send(b"SNAPSHOT\n");
        server.wait_for_stderr(&format!("failpoint {step} reached"));
        // The loop may still serve while the snapshotter is stopped.
        let mut more = server.connect();
        let second: Vec<(String, String)> = (0..20)
            .map(|i| (format!("late{i}"), i.to_string()))
            .collect();
        if !matches!(step, "compact-log") {
            put_all(&mut more, &second);
        }
        server.kill9();

        let mut restarted = ServerProcess::start(dir.path(), &[]);
        let line = restarted.wait_for_stderr("listening on");
        let published = matches!(step, "snapshot-after-publish" | "compact-log");
        assert_eq!(line.contains("keys loaded"), published, "{step}: {line}");
        let leftovers = snapshot::list(dir.path()).unwrap().temporaries;
        assert!(leftovers.is_empty(), "{step}: {leftovers:?}");
        let mut client = restarted.connect();
        assert_values(&mut client, &last_values(&first));
        if !matches!(step, "compact-log") {
            assert_values(&mut client, &last_values(&second));
        }
    }
}

/// A server that took one snapshot with `SNAPSHOT`; returns its index and
/// every value. With `args` making small segments, the log it covers is gone.
fn server_with_a_snapshot(dir: &Path, args: &[&str]) -> (u64, BTreeMap<String, String>) {
    let mut server = ServerProcess::start(dir, args);
    let mut client = server.connect();
    let pairs = overwrites(300, 2, 30);
    put_all(&mut client, &pairs);
    let reply = String::from_utf8(client.request(b"SNAPSHOT")).unwrap();
    let index = reply.strip_prefix("OK ").unwrap().parse().unwrap();
    server.stop();
    (index, last_values(&pairs))
}

#[test]
fn a_damaged_snapshot_stops_the_server_naming_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let (index, _) = server_with_a_snapshot(dir.path(), SMALL_SNAPSHOTS);
    assert!(
        !dir.path().join(log::segment_file_name(1)).exists(),
        "the log from index 1 is gone: nothing else has the data"
    );
    let path = dir.path().join(snapshot::file_name(index));
    let original = std::fs::read(&path).unwrap();
    let data_dir = dir.path().to_str().unwrap();
    // A flipped bit in the first chunk's body, then a cut-off trailer.
    let mut flipped = original.clone();
    flipped[snapshot::HEADER_BYTES + 20] ^= 0x10;
    let cut = original[..original.len() - 7].to_vec();
    for (damaged, offset) in [(flipped, snapshot::HEADER_BYTES), (cut.clone(), cut.len())] {
        std::fs::write(&path, &damaged).unwrap();
        let (status, stderr) = run_to_exit(&["0", "--data-dir", data_dir]);
        assert_eq!(status.code(), Some(1), "{stderr}");
        let expected = format!("snapshot {} is corrupt at byte {offset}", path.display());
        assert!(stderr.contains(&expected), "{stderr}");
        assert!(stderr.contains("refusing to start"), "{stderr}");
        assert_eq!(
            std::fs::read(&path).unwrap(),
            damaged,
            "the file was changed"
        );
    }
}

#[test]
fn an_older_snapshot_and_the_log_stand_in_for_a_damaged_newer_one() {
    let dir = tempfile::tempdir().unwrap();
    let (older, mut expected) = server_with_a_snapshot(dir.path(), SMALL_SNAPSHOTS);
    // A newer snapshot is published, and the crash comes before the older
    // one and the log it covers are removed.
    let env = [("KVSTORE_FAILPOINT", "snapshot-after-publish")];
    let mut server = ServerProcess::start_with_env(0, dir.path(), SMALL_SNAPSHOTS, &env);
    let mut client = server.connect();
    let pairs = overwrites(20, 1, 5);
    put_all(&mut client, &pairs);
    expected.extend(last_values(&pairs));
    client.send(b"SNAPSHOT\n");
    server.wait_for_stderr("failpoint snapshot-after-publish reached");
    server.kill9();
    let snapshots = snapshots_in(dir.path());
    assert_eq!(snapshots.len(), 2, "{snapshots:?}");
    let (newer, newer_path) = snapshots[1].clone();
    assert!(newer > older);
    let mut bytes = std::fs::read(&newer_path).unwrap();
    bytes[snapshot::HEADER_BYTES + 12] ^= 0x01;
    std::fs::write(&newer_path, &bytes).unwrap();

    let mut restarted = ServerProcess::start(dir.path(), &[]);
    let warning = restarted.wait_for_stderr("older snapshot");
    assert!(warning.contains(" WARN "), "{warning}");
    assert!(
        warning.contains(&newer_path.display().to_string()),
        "{warning}"
    );
    let line = restarted.wait_for_stderr("listening on");
    assert!(line.contains(&format!("snapshot index {older}")), "{line}");
    assert_values(&mut restarted.connect(), &expected);
}

#[test]
fn a_snapshot_the_log_does_not_continue_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (first, _) = server_with_a_snapshot(dir.path(), SMALL_SNAPSHOTS);
    let first_path = dir.path().join(snapshot::file_name(first));
    let first_bytes = std::fs::read(&first_path).unwrap();
    // Much more log, a newer snapshot, and the log it covers removed.
    let mut server = ServerProcess::start(dir.path(), SMALL_SNAPSHOTS);
    let mut client = server.connect();
    put_all(&mut client, &overwrites(100, 30, 100));
    let reply = String::from_utf8(client.request(b"SNAPSHOT")).unwrap();
    let second: u64 = reply.strip_prefix("OK ").unwrap().parse().unwrap();
    server.stop();
    // Someone puts the old snapshot back in place of the new one.
    std::fs::remove_file(dir.path().join(snapshot::file_name(second))).unwrap();
    std::fs::write(&first_path, &first_bytes).unwrap();
    let data_dir = dir.path().to_str().unwrap();
    let (status, stderr) = run_to_exit(&["0", "--data-dir", data_dir]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("does not continue"), "{stderr}");
    assert!(stderr.contains("refusing to start"), "{stderr}");
}

#[test]
fn a_snapshot_that_fills_the_disk_is_abandoned_and_the_server_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    // dash counts -f in 512-byte blocks, bash in KiB: 1 or 2 MiB. The log's
    // 16 KiB segments fit; a 3 MB snapshot does not.
    let script = r#"trap "" XFSZ; ulimit -f 2048; exec "$0" "$@""#;
    let mut server = ServerProcess::start_in_shell(script, dir.path(), SMALL_SNAPSHOTS);
    let mut client = server.connect();
    let pairs: Vec<(String, String)> = (0..3000)
        .map(|i| (format!("key{i}"), "x".repeat(1000)))
        .collect();
    for batch in pairs.chunks(8) {
        put_all(&mut client, batch);
    }
    let reply = String::from_utf8(client.request(b"SNAPSHOT")).unwrap();
    assert!(reply.starts_with("ERR snapshot failed: "), "{reply}");
    let line = server.wait_for_stderr("was abandoned");
    assert!(line.contains("the server goes on"), "{line}");
    assert_eq!(client.request(b"PUT after full 1"), b"OK");
    assert_eq!(client.request(b"GET key2999"), "x".repeat(1000).as_bytes());
    wait_until("the abandoned file to be removed", || {
        snapshot::list(dir.path()).unwrap().temporaries.is_empty()
    });
    // Snapshots taken while the data still fit are whole.
    for (_, path) in snapshots_in(dir.path()) {
        kvstore::startup::load_snapshot(&path).unwrap();
    }
    server.stop();
    let restarted = ServerProcess::start(dir.path(), &[]);
    let mut client = restarted.connect();
    assert_eq!(client.request(b"GET after"), b"full 1");
    assert_values(&mut client, &last_values(&pairs[..100]));
}

#[test]
fn the_previous_versions_single_log_file_is_taken_over() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = LOG_MAGIC.to_vec();
    for index in 1..=3u64 {
        let key = format!("k{index}");
        let op = Op::Put {
            key: key.as_bytes(),
            value: b"from the old log",
        };
        let entry = Entry {
            epoch: 1,
            index,
            commit: index,
            op,
        };
        log::encode(&entry, &mut bytes);
    }
    std::fs::write(dir.path().join("kvstore.log"), &bytes).unwrap();
    let mut server = ServerProcess::start(dir.path(), &[]);
    let line = server.wait_for_stderr("listening on");
    assert!(line.contains("3 records replayed"), "{line}");
    assert!(!dir.path().join("kvstore.log").exists());
    assert!(dir.path().join(log::segment_file_name(1)).exists());
    let mut client = server.connect();
    assert_eq!(client.request(b"GET k2"), b"from the old log");
}

#[test]
fn a_snapshot_file_restores_a_new_server() {
    let dir = tempfile::tempdir().unwrap();
    let (index, expected) = server_with_a_snapshot(dir.path(), &[]);
    // The backup: the file SNAPSHOT named, copied elsewhere.
    let backup = tempfile::tempdir().unwrap();
    let name = snapshot::file_name(index);
    std::fs::copy(dir.path().join(&name), backup.path().join(&name)).unwrap();
    // A new data dir holding only the backup.
    let restored = tempfile::tempdir().unwrap();
    std::fs::copy(backup.path().join(&name), restored.path().join(&name)).unwrap();
    let mut server = ServerProcess::start(restored.path(), &[]);
    let line = server.wait_for_stderr("listening on");
    assert!(line.contains(&format!("snapshot index {index}")), "{line}");
    let mut client = server.connect();
    assert_values(&mut client, &expected);
    assert_eq!(client.request(b"PUT new write"), b"OK");
    assert_eq!(role(&mut client)[4], index.to_string());
}
