//! The server's log, read as an operator reads it (issue #11): every line
//! has a timestamp, a level and the node id; a failover can be followed in
//! the survivors' logs alone; a peer that stays down is reported once, not
//! on every reconnect attempt.
//!
//! Real processes (`tests/common/cluster.rs`); every wait polls against a
//! deadline, nothing asserts on how long something took.

mod common;

use common::cluster::Cluster;
use common::wait_until;

/// Whether `line` is `<RFC 3339 UTC ms> <LEVEL> node=<id> <message>`:
/// `^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (ERROR|WARN|INFO|DEBUG) node=\d+ `.
fn is_text_line(line: &str) -> bool {
    let bytes = line.as_bytes();
    let timestamp_shape = b"dddd-dd-ddTdd:dd:dd.dddZ ";
    if bytes.len() < timestamp_shape.len() {
        return false;
    }
    let timestamp_ok = timestamp_shape
        .iter()
        .zip(bytes)
        .all(|(shape, byte)| match shape {
            b'd' => byte.is_ascii_digit(),
            _ => shape == byte,
        });
    let rest = &line[timestamp_shape.len()..];
    let Some(after_level) = ["ERROR ", "WARN ", "INFO ", "DEBUG "]
        .iter()
        .find_map(|level| rest.strip_prefix(level))
    else {
        return false;
    };
    let Some(after_node) = after_level.strip_prefix("node=") else {
        return false;
    };
    let digits = after_node.bytes().take_while(u8::is_ascii_digit).count();
    timestamp_ok && digits > 0 && after_node[digits..].starts_with(' ')
}

/// The timestamp a line starts with (text or JSON), comparable as text.
fn timestamp_of(line: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(line) {
        Ok(object) => object["ts"].as_str().expect("a ts").to_string(),
        Err(_) => line[..24].to_string(),
    }
}

#[test]
fn the_text_line_check_accepts_only_the_format() {
    assert!(is_text_line(
        "2026-12-01T19:12:03.123Z INFO node=12347 leadership won: epoch 3"
    ));
    for bad in [
        "kvstore: node 1 listening on 127.0.0.1:1",
        "2026-12-01T19:12:03Z INFO node=1 no milliseconds",
        "2026-12-01T19:12:03.123Z NOTICE node=1 no such level",
        "2026-12-01T19:12:03.123Z INFO no node id",
        "2026-12-01T19:12:03.123Z INFO node=x not a number",
    ] {
        assert!(!is_text_line(bad), "{bad}");
    }
}

/// Every line each running node printed so far, checked by `check`, and
/// what each printed.
fn all_lines(cluster: &mut Cluster, check: impl Fn(u16, &str)) -> Vec<Vec<String>> {
    let mut lines = Vec::new();
    for node in 0..cluster.nodes.len() {
        let port = cluster.ports[node];
        let printed = match cluster.nodes[node].as_mut() {
            Some(process) => process.stderr_so_far().to_vec(),
            None => Vec::new(),
        };
        for line in &printed {
            check(port, line);
        }
        lines.push(printed);
    }
    lines
}

/// Kills the leader of a fresh three-node cluster; returns the cluster,
/// the old leader's id, the new leader's node and the other survivor, once
/// the new leader leads them both.
fn failover(extra_args: &[&str]) -> (Cluster, u64, usize, usize) {
    let mut cluster = Cluster::start(3, extra_args);
    let old_leader = cluster.wait_for_leader(&[0, 1, 2]);
    let mut client = cluster.connect(old_leader);
    assert_eq!(client.request(b"PUT before failover"), b"OK");
    let old_id = u64::from(cluster.ports[old_leader]);
    cluster.kill9(old_leader);
    let survivors: Vec<usize> = (0..3).filter(|node| *node != old_leader).collect();
    let new_leader = cluster.wait_for_leader(&survivors);
    let other = survivors
        .into_iter()
        .find(|node| *node != new_leader)
        .unwrap();
    (cluster, old_id, new_leader, other)
}

/// The first line of `lines` at or after `from` containing `needle`.
fn find_from(lines: &[String], from: usize, needle: &str) -> Option<usize> {
    (from..lines.len()).find(|&index| lines[index].contains(needle))
}

/// Polls `node`'s stderr until a line contains `needle`; returns its index.
fn wait_for_line(cluster: &mut Cluster, node: usize, from: usize, needle: &str) -> usize {
    let mut found = None;
    wait_until(&format!("node {node} to log '{needle}'"), || {
        let lines = cluster.process(node).stderr_so_far();
        found = find_from(lines, from, needle);
        found.is_some()
    });
    found.unwrap()
}

#[test]
fn a_failover_is_readable_in_the_logs_alone() {
    let (mut cluster, old_id, new_leader, other) = failover(&[]);
    let new_id = u64::from(cluster.ports[new_leader]);
    let epoch = cluster.role(new_leader).unwrap().epoch;
    // The new leader: why it started an election, then that it won.
    let lost = format!("election started: leader {old_id} lost (its connection closed)");
    let started = wait_for_line(&mut cluster, new_leader, 0, &lost);
    let won = format!("leadership won: epoch {epoch}, ");
    let won_at = wait_for_line(&mut cluster, new_leader, started, &won);
    // The other survivor: that the leader changed, to whom, in which epoch.
    let changed = format!("leader changed to node {new_id} in epoch {epoch} (was node ");
    let changed_at = wait_for_line(&mut cluster, other, 0, &changed);
    let lines = all_lines(&mut cluster, |port, line| {
        assert!(is_text_line(line), "node {port}: {line}");
        assert!(line.contains(&format!(" node={port} ")), "{line}");
    });
    let (leader_lines, other_lines) = (&lines[new_leader], &lines[other]);
    assert!(
        leader_lines[started].contains(" INFO "),
        "{}",
        leader_lines[started]
    );
    // In order across the two processes, by their timestamps.
    let times = [
        timestamp_of(&leader_lines[started]),
        timestamp_of(&leader_lines[won_at]),
        timestamp_of(&other_lines[changed_at]),
    ];
    assert!(
        times.windows(2).all(|pair| pair[0] <= pair[1]),
        "{times:?}\n{}\n{}\n{}",
        leader_lines[started],
        leader_lines[won_at],
        other_lines[changed_at]
    );
    // The other survivor lost the same leader and says so once.
    let lost_peer = format!("lost peer 127.0.0.1:{old_id} (node {old_id})");
    let lost_lines = other_lines
        .iter()
        .filter(|line| line.contains(&lost_peer))
        .count();
    assert_eq!(lost_lines, 1, "{other_lines:#?}");
}

#[test]
fn a_failover_in_json_is_one_object_per_line_with_the_events_fields() {
    let (mut cluster, old_id, new_leader, other) = failover(&["--log-format", "json"]);
    let new_id = u64::from(cluster.ports[new_leader]);
    let epoch = cluster.role(new_leader).unwrap().epoch;
    wait_for_line(&mut cluster, new_leader, 0, "\"event\":\"leadership_won\"");
    wait_for_line(&mut cluster, other, 0, "\"event\":\"leader_changed\"");
    let lines = all_lines(&mut cluster, |port, line| {
        let object: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|error| panic!("{error}: {line}"));
        assert_eq!(object["node"], u64::from(port), "{line}");
        let level = object["level"].as_str().expect("a level");
        assert!(
            ["ERROR", "WARN", "INFO", "DEBUG"].contains(&level),
            "{line}"
        );
        assert!(is_text_line(&format!(
            "{} {level} node={port} {}",
            object["ts"].as_str().expect("a ts"),
            object["msg"].as_str().expect("a msg")
        )));
    });
    let events = |node: usize, name: &str| -> Vec<serde_json::Value> {
        lines[node]
            .iter()
            .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
            .filter(|object| object["event"] == name)
            .collect()
    };
    let started = events(new_leader, "election_started");
    assert!(
        started
            .iter()
            .any(|event| event["reason"] == "leader_lost" && event["leader"] == old_id),
        "{started:#?}"
    );
    let won = events(new_leader, "leadership_won");
    let won = won.last().expect("leadership won");
    assert_eq!(won["epoch"], epoch, "{won}");
    assert!(
        won["records_cut"].is_u64() && won["commit_index"].is_u64(),
        "{won}"
    );
    let changed = events(other, "leader_changed");
    let changed = changed.last().expect("leader changed");
    assert_eq!(changed["to"], serde_json::json!(new_id), "{changed}");
    assert_eq!(changed["epoch"], serde_json::json!(epoch), "{changed}");
}

#[test]
fn a_peer_that_stays_down_is_logged_once_not_per_reconnect_attempt() {
    let mut cluster = Cluster::start(3, &["--log-level", "debug"]);
    let leader = cluster.wait_for_leader(&[0, 1, 2]);
    let follower = (leader + 1) % 3;
    let (port, id) = (cluster.ports[follower], u64::from(cluster.ports[follower]));
    let from = cluster.process(leader).stderr_so_far().len();
    cluster.kill9(follower);
    // About 3 s of retries (backing off from 20 ms to 500 ms).
    let attempt = format!("reconnect attempt 10 to peer 127.0.0.1:{port} failed");
    wait_for_line(&mut cluster, leader, from, &attempt);
    let peer = format!("peer 127.0.0.1:{port}");
    let lines = cluster.process(leader).stderr_so_far()[from..].to_vec();
    let about_it = |level: &str| {
        lines
            .iter()
            .filter(|line| line.contains(level) && line.contains(&peer))
            .cloned()
            .collect::<Vec<_>>()
    };
    let reported = [about_it(" WARN "), about_it(" INFO ")].concat();
    assert_eq!(reported.len(), 1, "{lines:#?}");
    assert!(
        reported[0].contains(&format!("lost peer 127.0.0.1:{port} (node {id}): ")),
        "{}",
        reported[0]
    );
    assert!(about_it(" DEBUG ").len() >= 10, "{lines:#?}");
    for line in &lines {
        assert!(is_text_line(line), "{line}");
    }
    // Back once, said once.
    let from = cluster.process(leader).stderr_so_far().len();
    cluster.start_node(follower);
    let connected = format!("peer 127.0.0.1:{port} (node {id}) connected after ");
    let at = wait_for_line(&mut cluster, leader, from, &connected);
    let line = cluster.process(leader).stderr_so_far()[at].clone();
    assert!(
        line.contains(" INFO ") && line.contains("failed reconnect attempts"),
        "{line}"
    );
}
