//! Real processes in a cluster on loopback: replication, redirects,
//! failover under kill -9 and SIGSTOP, restarts, and forged peer traffic.

mod common;

use std::time::Duration;

use common::cluster::{Cluster, RoleLine};
use common::wait_until;
use kvstore::client::{Client, ClientOptions};
use kvstore::security::handshake::{Dialing, Hello, NONCE_BYTES, PEER_PROTOCOL_VERSION};

fn client(cluster: &Cluster, node: usize) -> Client {
    let options = ClientOptions {
        timeout: Duration::from_secs(10),
        max_redirects: 200,
        ..ClientOptions::default()
    };
    Client::connect(&cluster.address(node).to_string(), options).unwrap()
}

/// PUTs through `node` (redirects followed) until `count` were acknowledged;
/// returns the acknowledged (key, value) pairs. Writes whose outcome is
/// unknown are retried under a new key, never assumed.
fn write_acknowledged(
    cluster: &Cluster,
    node: usize,
    prefix: &str,
    count: usize,
) -> Vec<(String, String)> {
    let mut acknowledged = Vec::new();
    let mut attempt = 0;
    let mut connection = client(cluster, node);
    while acknowledged.len() < count {
        attempt += 1;
        assert!(attempt < count * 20, "too many failed writes");
        let (key, value) = (format!("{prefix}{attempt}"), format!("v{attempt}"));
        match connection.put(key.as_bytes(), value.as_bytes()) {
            Ok(reply) if reply == b"OK" => acknowledged.push((key, value)),
            _ => connection = client(cluster, node),
        }
    }
    acknowledged
}

fn assert_all_readable(cluster: &Cluster, node: usize, pairs: &[(String, String)]) {
    let mut connection = client(cluster, node);
    for (key, value) in pairs {
        let read = connection.get(key.as_bytes()).unwrap();
        assert_eq!(
            read.as_deref(),
            Some(value.as_bytes()),
            "acknowledged {key} lost"
        );
    }
}

#[test]
fn writes_replicate_and_followers_redirect() {
    let mut cluster = Cluster::start(3, &[]);
    let leader = cluster.wait_for_leader(&[0, 1, 2]);
    // The highest id (port) leads.
    assert_eq!(cluster.ports[leader], *cluster.ports.iter().max().unwrap());
    let follower = (leader + 1) % 3;
    let mut raw = cluster.connect(follower);
    let expected = format!(
        "NOT_LEADER {} {}",
        cluster.ports[leader],
        cluster.address(leader)
    );
    assert_eq!(raw.request(b"PUT k v"), expected.as_bytes());
    assert_eq!(raw.request(b"DEL k"), expected.as_bytes());

    let mut redirected = client(&cluster, follower);
    assert_eq!(redirected.put(b"k", b"replicated").unwrap(), b"OK");
    for node in 0..3 {
        cluster.wait_for_value(node, "k", b"replicated");
    }
}

#[test]
fn forged_peer_commands_are_refused() {
    let cluster = Cluster::start(3, &[]);
    let leader = cluster.wait_for_leader(&[0, 1, 2]);
    for node in 0..3 {
        let mut raw = cluster.connect(node);
        assert_eq!(
            raw.request(b"REPL_PUT forged v"),
            b"ERR peer command refused on a client connection"
        );
        assert_eq!(
            raw.request(b"COORDINATOR 12345"),
            b"ERR peer command refused on a client connection"
        );
    }
    // A well-formed handshake from an address that is not a configured
    // peer is cut off before any reply.
    let mut impostor = cluster.connect(leader);
    let stranger = Hello {
        id: 99,
        address: "127.0.0.1:1".parse().unwrap(),
    };
    let mut first_line = Vec::new();
    Dialing::start(stranger, [7; NONCE_BYTES], 0, &mut first_line);
    impostor.send(&first_line);
    assert_eq!(impostor.read_until_closed(), b"");
    let forged = String::from_utf8(first_line).unwrap();
    let forged = forged.trim_end();
    assert!(forged.starts_with(&format!("KVPEER {PEER_PROTOCOL_VERSION} 99 ")));
    // A handshake that is not the first line is refused.
    let mut late = cluster.connect(leader);
    assert_eq!(late.request(b"PING"), b"PONG");
    let refusal = late.request(forged.as_bytes());
    assert!(
        refusal.starts_with(b"ERR bad peer handshake"),
        "{refusal:?}"
    );
    assert_eq!(cluster.connect(leader).request(b"GET forged"), b"NOT_FOUND");
}

#[test]
fn killing_the_leader_elects_a_new_one_that_loses_nothing() {
    let mut cluster = Cluster::start(3, &[]);
    let leader = cluster.wait_for_leader(&[0, 1, 2]);
    let survivors: Vec<usize> = (0..3).filter(|&node| node != leader).collect();
    let before = write_acknowledged(&cluster, survivors[0], "before", 50);
    cluster.kill9(leader);

    let new_leader = cluster.wait_for_leader(&survivors);
    let after = write_acknowledged(&cluster, survivors[0], "after", 20);
    assert_all_readable(&cluster, new_leader, &before);
    assert_all_readable(&cluster, new_leader, &after);

    // The old leader comes back, catches up, and being the highest id leads again.
    cluster.start_node(leader);
    cluster.wait_for_leader_to_be(leader, &[0, 1, 2]);
    assert_all_readable(&cluster, leader, &before);
    assert_all_readable(&cluster, leader, &after);
}

#[test]
fn a_paused_leader_neither_acknowledges_nor_serves_stale_reads() {
    // With local follower reads a node that knows it follows may serve its
    // lagging copy; redirect makes every read linearizable.
    let mut cluster = Cluster::start(3, &["--follower-reads", "redirect"]);
    let old_leader = cluster.wait_for_leader(&[0, 1, 2]);
    let mut setup = client(&cluster, old_leader);
    assert_eq!(setup.put(b"k", b"old").unwrap(), b"OK");
    let mut stale_connection = cluster.connect(old_leader);
    assert_eq!(stale_connection.request(b"PING"), b"PONG");

    cluster.signal(old_leader, "STOP");
    let others: Vec<usize> = (0..3).filter(|&node| node != old_leader).collect();
    let new_leader = cluster.wait_for_leader(&others);
    let mut fresh = client(&cluster, new_leader);
    assert_eq!(fresh.put(b"k", b"new").unwrap(), b"OK");

    // Requests wait in the paused leader's socket; it reads them on resume,
    // still believing it leads.
    stale_connection.send(b"PUT k stale\nGET k\n");
    cluster.signal(old_leader, "CONT");
    let answers = stale_connection.read_until_closed_or_lines(2);
    for answer in &answers {
        assert_ne!(
            answer.as_slice(),
            b"OK",
            "a deposed leader acknowledged a write"
        );
        assert_ne!(
            answer.as_slice(),
            b"old",
            "a deposed leader served a stale read"
        );
        assert_ne!(
            answer.as_slice(),
            b"stale",
            "a deposed leader served its own lost write"
        );
    }
    // Once it rejoins, the value is the one the real leader accepted.
    let leader = cluster.wait_for_leader(&[0, 1, 2]);
    cluster.wait_for_value(leader, "k", b"new");
}

#[test]
fn a_minority_never_acknowledges_a_write() {
    let mut cluster = Cluster::start(3, &[]);
    let leader = cluster.wait_for_leader(&[0, 1, 2]);
    let followers: Vec<usize> = (0..3).filter(|&node| node != leader).collect();
    for &node in &followers {
        cluster.signal(node, "STOP");
    }
    let mut lonely = cluster.connect(leader);
    lonely.send(b"PUT k minority\n");
    // No OK: the write's outcome is unknown once its leader steps down.
    let answers = lonely.read_until_closed_or_lines(1);
    let refused: &[u8] =
        b"ERR leadership lost; earlier requests on this connection may or may not have been applied";
    assert_eq!(answers, vec![refused.to_vec()]);
    // The leader steps down: it no longer hears from a majority.
    wait_until("the cut-off leader to step down", || {
        cluster
            .role(leader)
            .is_some_and(|role| role.role != "leader")
    });
    for &node in &followers {
        cluster.signal(node, "CONT");
    }
    // It may or may not have been applied, but the cluster agrees which.
    let leader = cluster.wait_for_leader(&[0, 1, 2]);
    let value = cluster.connect(leader).request(b"GET k");
    assert!(value == b"NOT_FOUND" || value == b"minority", "{value:?}");
    for node in 0..3 {
        cluster.wait_for_value(node, "k", &value);
    }
}

#[test]
fn all_nodes_killed_at_once_lose_nothing() {
    let mut cluster = Cluster::start(3, &[]);
    let leader = cluster.wait_for_leader(&[0, 1, 2]);
    let acknowledged = write_acknowledged(&cluster, leader, "key", 100);
    for node in 0..3 {
        cluster.kill9(node);
    }
    for node in 0..3 {
        cluster.start_node(node);
    }
    let leader = cluster.wait_for_leader(&[0, 1, 2]);
    assert_all_readable(&cluster, leader, &acknowledged);
}

#[test]
fn five_nodes_survive_losing_two_including_the_leader() {
    let mut cluster = Cluster::start(5, &[]);
    let leader = cluster.wait_for_leader(&[0, 1, 2, 3, 4]);
    let before = write_acknowledged(&cluster, leader, "before", 30);
    let other = (leader + 1) % 5;
    cluster.kill9(leader);
    cluster.kill9(other);
    let survivors: Vec<usize> = (0..5)
        .filter(|&node| node != leader && node != other)
        .collect();
    let new_leader = cluster.wait_for_leader(&survivors);
    let after = write_acknowledged(&cluster, new_leader, "after", 30);
    assert_all_readable(&cluster, new_leader, &before);
    assert_all_readable(&cluster, new_leader, &after);
}

#[test]
fn follower_reads_redirect_sends_reads_to_the_leader() {
    let cluster = Cluster::start(3, &["--follower-reads", "redirect"]);
    let leader = cluster.wait_for_leader(&[0, 1, 2]);
    let follower = (leader + 1) % 3;
    let expected = format!(
        "NOT_LEADER {} {}",
        cluster.ports[leader],
        cluster.address(leader)
    );
    assert_eq!(
        cluster.connect(follower).request(b"GET k"),
        expected.as_bytes()
    );
    let mut redirected = client(&cluster, follower);
    assert_eq!(redirected.put(b"k", b"v").unwrap(), b"OK");
    assert_eq!(redirected.get(b"k").unwrap().as_deref(), Some(&b"v"[..]));
}

#[test]
fn a_follower_far_behind_catches_up_from_the_leaders_log_file() {
    // A tiny memory budget: the records the follower missed are read back
    // from the leader's log file, not served from memory.
    let mut cluster = Cluster::start(3, &["--log-memory-bytes", "4096"]);
    let leader = cluster.wait_for_leader(&[0, 1, 2]);
    let lagging = (leader + 1) % 3;
    cluster.kill9(lagging);
    let written = write_acknowledged(&cluster, leader, "missed", 500);
    cluster.start_node(lagging);
    cluster.wait_for_leader_to_be(leader, &[0, 1, 2]);
    for (key, value) in [written.first().unwrap(), written.last().unwrap()] {
        cluster.wait_for_value(lagging, key, value.as_bytes());
    }
    assert_all_readable(&cluster, leader, &written);
}

const MIB: usize = 1024 * 1024;

/// `bytes` of a value that holds no `\n` and repeats no short pattern, so
/// a record cut or shifted anywhere would not read back the same.
fn large_value(bytes: usize) -> Vec<u8> {
    (0..bytes)
        .map(|position| b'a' + ((position ^ (position >> 9)) % 26) as u8)
        .collect()
}

/// PUTs `value` under `key` through `node` and waits until every running
/// node of `nodes` serves it (followers from their own copy); returns how
/// long that took.
fn put_and_read_everywhere(
    cluster: &mut Cluster,
    node: usize,
    nodes: &[usize],
    key: &str,
    value: &[u8],
) -> Duration {
    let started = std::time::Instant::now();
    let request = [b"PUT ", key.as_bytes(), b" ", value].concat();
    let reply = cluster.connect(node).request(&request);
    if reply != b"OK" {
        let reply = String::from_utf8_lossy(&reply).into_owned();
        panic!("PUT {key}: {reply}\n{}", cluster.describe());
    }
    for &node in nodes {
        cluster.wait_for_value(node, key, value);
    }
    started.elapsed()
}

/// Every node of `nodes` still follows the leader `before` names, in its epoch.
fn assert_same_leader(cluster: &Cluster, nodes: &[usize], before: &RoleLine) {
    for &node in nodes {
        let role = cluster.role(node).unwrap();
        assert_eq!(role.epoch, before.epoch, "node {node}: the epoch moved");
        assert_eq!(role.leader, before.leader, "node {node}: another leader");
    }
}

/// Issue #10: a 10 MiB record was a frame larger than a peer accepts; the
/// followers dropped the link, the leader lost its majority and the
/// cluster refused writes. Now it travels alone in one frame, every node
/// serves it, and the leader never changes. (It takes 135-165 ms here, in
/// the default 300 ms election timeout; the timeout is raised to 1 s so a
/// loaded CI machine cannot turn slowness into a false failure.)
#[test]
fn a_record_larger_than_a_batch_replicates_without_a_change_of_leader() {
    let flags = [
        "--max-line-bytes",
        "16777216",
        "--election-timeout-ms",
        "1000",
    ];
    let mut cluster = Cluster::start(3, &flags);
    let leader = cluster.wait_for_leader(&[0, 1, 2]);
    let before = cluster.role(leader).unwrap();
    let value = large_value(10 * MIB);
    let took = put_and_read_everywhere(&mut cluster, leader, &[0, 1, 2], "ten", &value);
    eprintln!("10 MiB: acknowledged and served by every node in {took:?}");
    assert_same_leader(&cluster, &[0, 1, 2], &before);
    // Writes go on as before.
    let took = put_and_read_everywhere(&mut cluster, leader, &[0, 1, 2], "after", b"small");
    eprintln!("then a small write in {took:?}");
    assert_same_leader(&cluster, &[0, 1, 2], &before);
}

/// The largest line `--max-line-bytes` allows makes a record that replicates
/// too. Each node handles such a record in one turn of its reactor, which
/// takes a few hundred milliseconds on a small machine: the election
/// timeout must exceed that (see docs/ARCHITECTURE.md), so it is raised,
/// well above: under the whole test suite on two cores the three nodes'
/// turns took over 3 s once.
#[test]
fn the_largest_records_replicate_without_a_change_of_leader() {
    let longest = kvstore::config::MAX_MAX_LINE_BYTES.to_string();
    let flags = [
        "--max-line-bytes",
        &longest,
        "--election-timeout-ms",
        "10000",
    ];
    let mut cluster = Cluster::start(3, &flags);
    let leader = cluster.wait_for_leader(&[0, 1, 2]);
    let before = cluster.role(leader).unwrap();
    let sixty = large_value(60 * MIB);
    let took = put_and_read_everywhere(&mut cluster, leader, &[0, 1, 2], "sixty", &sixty);
    eprintln!("60 MiB: acknowledged and served by every node in {took:?}");
    let largest = large_value(kvstore::config::MAX_MAX_LINE_BYTES - "PUT k ".len());
    let took = put_and_read_everywhere(&mut cluster, leader, &[0, 1, 2], "k", &largest);
    eprintln!(
        "{} bytes: acknowledged and served by every node in {took:?}",
        largest.len()
    );
    assert_same_leader(&cluster, &[0, 1, 2], &before);
}

/// A follower that missed a record larger than a read of the log catches
/// up from the leader's log file (memory keeps almost nothing here): the
/// read that starts at the record before stops short of it, and the next
/// one returns it alone.
#[test]
fn a_follower_catches_up_a_large_record_from_the_leaders_log_file() {
    let flags = ["--max-line-bytes", "16777216", "--log-memory-bytes", "4096"];
    let mut cluster = Cluster::start(3, &flags);
    let leader = cluster.wait_for_leader(&[0, 1, 2]);
    let lagging = (leader + 1) % 3;
    let others: Vec<usize> = (0..3).filter(|&node| node != lagging).collect();
    cluster.kill9(lagging);
    let value = large_value(10 * MIB);
    put_and_read_everywhere(&mut cluster, leader, &others, "before", b"small");
    put_and_read_everywhere(&mut cluster, leader, &others, "ten", &value);
    put_and_read_everywhere(&mut cluster, leader, &others, "after", b"small");
    cluster.start_node(lagging);
    cluster.wait_for_leader_to_be(leader, &[0, 1, 2]);
    for (key, value) in [
        ("before", &b"small"[..]),
        ("ten", &value),
        ("after", b"small"),
    ] {
        cluster.wait_for_value(lagging, key, value);
    }
}
