//! Snapshots in a cluster of real processes: a follower that lags past the
//! log the leader keeps, a node whose data dir was wiped, the leader killed
//! while sending a snapshot, kill -9 at every step of installing one, and
//! every node restarted from its snapshot.

mod common;

use std::collections::BTreeMap;

use common::cluster::Cluster;
use common::{last_values, overwrites, put_all, wait_until};

/// Snapshots every 64 KiB of log, 16 KiB segments, and 64 KiB of records
/// kept in memory: a leader cannot serve a follower far behind from memory.
const SMALL_SNAPSHOTS: &[&str] = &[
    "--snapshot-log-bytes",
    "65536",
    "--log-memory-bytes",
    "65536",
    "--fsync",
    "never",
];

/// Writes enough through `leader` for several snapshots, so its log no
/// longer reaches back to the start; returns the values.
fn write_past_compaction(cluster: &Cluster, leader: usize) -> BTreeMap<String, String> {
    let pairs = overwrites(300, 12, 100);
    put_all(&mut cluster.connect(leader), &pairs);
    let leader_dir = cluster.data_dir(leader);
    wait_until("the leader to drop the start of its log", || {
        !leader_dir.join(kvstore::log::segment_file_name(1)).exists()
    });
    last_values(&pairs)
}

/// Waits until `node` answers every key with its value from its own copy
/// (followers read locally by default).
fn wait_for_values(cluster: &mut Cluster, node: usize, expected: &BTreeMap<String, String>) {
    for (key, value) in expected {
        cluster.wait_for_value(node, key, value.as_bytes());
    }
}

#[test]
fn a_follower_that_missed_the_compacted_log_catches_up_from_a_snapshot() {
    let mut cluster = Cluster::start(3, SMALL_SNAPSHOTS);
    let leader = cluster.wait_for_leader(&[0, 1, 2]);
    let follower = (leader + 1) % 3;
    cluster.kill9(follower);
    let expected = write_past_compaction(&cluster, leader);
    cluster.start_node(follower);
    let line = cluster.process(follower).wait_for_stderr("sent by node");
    assert!(
        line.contains(&format!("sent by node {}", cluster.ports[leader])),
        "{line}"
    );
    wait_for_values(&mut cluster, follower, &expected);
}

#[test]
fn a_node_whose_data_dir_was_wiped_rejoins_and_serves_every_key() {
    let mut cluster = Cluster::start(3, SMALL_SNAPSHOTS);
    let leader = cluster.wait_for_leader(&[0, 1, 2]);
    let follower = (leader + 2) % 3;
    cluster.kill9(follower);
    cluster.wipe(follower);
    let expected = write_past_compaction(&cluster, leader);
    cluster.start_node(follower);
    cluster.process(follower).wait_for_stderr("sent by node");
    wait_for_values(&mut cluster, follower, &expected);
    // It is a full member again: writes go on and reach it.
    let mut client = cluster.connect(leader);
    assert_eq!(client.request(b"PUT after rejoin"), b"OK");
    cluster.wait_for_value(follower, "after", b"rejoin");
}

#[test]
fn the_leader_killed_while_sending_a_snapshot_loses_nothing() {
    let mut cluster = Cluster::prepare(3, SMALL_SNAPSHOTS);
    let leader = cluster.highest();
    // The leader stops (as if paused) once it has sent the first chunk of
    // a snapshot; the test then kills it.
    cluster.start_node_with_env(leader, &[("KVSTORE_FAILPOINT", "snapshot-send")]);
    let others: Vec<usize> = (0..3).filter(|&node| node != leader).collect();
    for &node in &others {
        cluster.start_node(node);
    }
    cluster.wait_for_leader_to_be(leader, &[0, 1, 2]);
    let (lagging, survivor) = (others[0], others[1]);
    cluster.kill9(lagging);
    cluster.wipe(lagging);
    // More than one 512 KiB chunk of snapshot.
    let pairs = overwrites(4000, 2, 200);
    put_all(&mut cluster.connect(leader), &pairs);
    let expected = last_values(&pairs);
    cluster.start_node(lagging);
    cluster
        .process(leader)
        .wait_for_stderr("failpoint snapshot-send reached");
    cluster.kill9(leader);
    // The survivor leads and sends its own snapshot (or the log); or, if
    // the lagging node has the higher id, that one leads, adopting the
    // survivor's state by the same transfer.
    cluster.wait_for_leader(&[lagging, survivor]);
    wait_for_values(&mut cluster, lagging, &expected);
    cluster.start_node(leader);
    cluster.wait_for_leader_to_be(leader, &[0, 1, 2]);
    wait_for_values(&mut cluster, leader, &expected);
}

/// The crash points a follower passes while it installs a snapshot.
const INSTALL_STEPS: [&str; 4] = [
    "snapshot-write",
    "snapshot-before-publish",
    "snapshot-after-publish",
    "log-reset",
];

#[test]
fn kill_9_at_every_step_of_installing_a_snapshot_loses_nothing() {
    for step in INSTALL_STEPS {
        let mut cluster = Cluster::start(3, SMALL_SNAPSHOTS);
        let leader = cluster.wait_for_leader(&[0, 1, 2]);
        let follower = (leader + 1) % 3;
        cluster.kill9(follower);
        let expected = write_past_compaction(&cluster, leader);
        // With no snapshots of its own, every file it writes is the install.
        cluster.start_node_with_env(follower, &[("KVSTORE_FAILPOINT", step)]);
        cluster
            .process(follower)
            .wait_for_stderr(&format!("failpoint {step} reached"));
        cluster.kill9(follower);
        cluster.start_node(follower);
        wait_for_values(&mut cluster, follower, &expected);
    }
}

#[test]
fn every_node_restarted_from_its_snapshot_loses_nothing() {
    let mut cluster = Cluster::start(3, SMALL_SNAPSHOTS);
    let leader = cluster.wait_for_leader(&[0, 1, 2]);
    let expected = write_past_compaction(&cluster, leader);
    for node in 0..3 {
        let dir = cluster.data_dir(node);
        wait_until("every node to take a snapshot", || {
            !kvstore::snapshot::list(&dir).unwrap().snapshots.is_empty()
        });
    }
    for node in 0..3 {
        cluster.kill9(node);
    }
    for node in 0..3 {
        cluster.start_node(node);
        let line = cluster.process(node).wait_for_stderr("listening on");
        assert!(line.contains("keys loaded"), "{line}");
    }
    let leader = cluster.wait_for_leader(&[0, 1, 2]);
    let mut client = cluster.connect(leader);
    for (key, value) in &expected {
        assert_eq!(
            client.request(format!("GET {key}").as_bytes()),
            value.as_bytes()
        );
    }
    for node in 0..3 {
        wait_for_values(&mut cluster, node, &expected);
    }
}

#[test]
fn a_snapshot_file_starts_a_new_cluster() {
    // The backup: a single server's snapshot.
    let source = tempfile::tempdir().unwrap();
    let mut server = common::ServerProcess::start(source.path(), &[]);
    let pairs = overwrites(500, 2, 20);
    put_all(&mut server.connect(), &pairs);
    let reply = String::from_utf8(server.connect().request(b"SNAPSHOT")).unwrap();
    let index: u64 = reply.strip_prefix("OK ").unwrap().parse().unwrap();
    server.stop();
    let name = kvstore::snapshot::file_name(index);
    // Every node of a new cluster starts from a copy of it.
    let mut cluster = Cluster::prepare(3, &[]);
    for node in 0..3 {
        let data_dir = cluster.data_dir(node);
        std::fs::create_dir_all(&data_dir).unwrap();
        std::fs::copy(source.path().join(&name), data_dir.join(&name)).unwrap();
    }
    for node in 0..3 {
        cluster.start_node(node);
        let line = cluster.process(node).wait_for_stderr("listening on");
        assert!(line.contains(&format!("snapshot index {index}")), "{line}");
    }
    let leader = cluster.wait_for_leader(&[0, 1, 2]);
    let expected = last_values(&pairs);
    for node in 0..3 {
        wait_for_values(&mut cluster, node, &expected);
    }
    let mut client = cluster.connect(leader);
    assert_eq!(client.request(b"PUT restored yes"), b"OK");
    for node in 0..3 {
        cluster.wait_for_value(node, "restored", b"yes");
    }
}
