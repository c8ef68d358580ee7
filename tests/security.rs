//! Security, tried from outside as an attacker would, against real
//! processes: forged peer handshakes and frames, a node with the wrong
//! secret, clusters exposed without a secret, unsafe secret files, client
//! passwords, and peers locked out by idle clients.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::cluster::Cluster;
use common::{Connection, DEADLINE, ServerProcess, run_to_exit, wait_until};
use kvstore::log::{self, Entry, Op};
use kvstore::node::message::encode_frame;
use kvstore::node::{Envelope, Message, NodeId};
use kvstore::security::handshake::{ClusterKey, Dialing, Hello, fresh_nonce, take_line};

const SECRET: &str = "6b7673746f72652d746573742d636c75737465722d7365637265742d31323334";
const OTHER_SECRET: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Writes `contents` to `dir/name` with `mode`; returns the path.
fn secret_file(dir: &Path, name: &str, contents: &str, mode: u32) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

/// A three-node cluster whose nodes all hold `SECRET`, its leader elected.
fn cluster_with_secret(dir: &Path) -> (Cluster, usize) {
    let path = secret_file(dir, "cluster.secret", SECRET, 0o600);
    let path = path.to_str().unwrap().to_string();
    let cluster = Cluster::start(3, &["--cluster-secret-file", &path]);
    let leader = cluster.wait_for_leader(&[0, 1, 2]);
    (cluster, leader)
}

fn hello_of(cluster: &Cluster, node: usize) -> Hello {
    Hello {
        id: NodeId::from(cluster.ports[node]),
        address: cluster.address(node),
    }
}

/// Opens a connection to `target` and sends the first handshake line as
/// `claimed`; returns the stream and the acceptor's reply line (empty if
/// the acceptor closed instead).
fn start_handshake(target: SocketAddr, claimed: Hello) -> (TcpStream, Dialing, Vec<u8>) {
    let mut stream = TcpStream::connect(target).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut first = Vec::new();
    let dialing = Dialing::start(claimed, fresh_nonce().unwrap(), 0, &mut first);
    stream.write_all(&first).unwrap();
    let mut reply = Vec::new();
    let _ = BufReader::new(stream.try_clone().unwrap()).read_until(b'\n', &mut reply);
    (stream, dialing, reply)
}

/// Completes a handshake as `claimed` holding `secret` and sends `frames`
/// as that peer, in the same write as the proof: the real peer, which
/// reconnects when its connection is replaced by ours, would replace ours
/// in turn within milliseconds.
fn admitted_as(target: SocketAddr, claimed: Hello, secret: &str, frames: &[u8]) -> TcpStream {
    let (mut stream, dialing, reply) = start_handshake(target, claimed);
    let (line, _) = take_line(&reply).unwrap().expect("the acceptor's line");
    let key = ClusterKey::new(secret.as_bytes().to_vec());
    let mut proof = Vec::new();
    dialing
        .on_reply(line, &key, 0, &mut proof)
        .expect("the acceptor holds the same secret");
    proof.extend_from_slice(frames);
    stream.write_all(&proof).unwrap();
    stream
}

fn frame(from: NodeId, epoch: u64, message: Message) -> Vec<u8> {
    let mut bytes = Vec::new();
    encode_frame(
        &Envelope {
            from,
            epoch,
            message,
        },
        &mut bytes,
    );
    bytes
}

/// A record putting `key` = `value`.
fn put_record(epoch: u64, index: u64, key: &[u8], value: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::new();
    let entry = Entry {
        epoch,
        index,
        commit: index - 1,
        op: Op::Put { key, value },
    };
    log::encode(&entry, &mut bytes);
    bytes
}

/// The forged frames of the attack that used to work: an Append of a new
/// epoch with a record overwriting `key` and a commit index covering it,
/// an Ack and a Coordinator of that epoch, and a heartbeat of epoch 2^64-1.
fn forged_frames(from: NodeId, epoch: u64, last_index: u64) -> Vec<u8> {
    let next = epoch + 1;
    let mut bytes = frame(
        from,
        next,
        Message::Append {
            prev_index: last_index,
            prev_epoch: epoch,
            commit_index: last_index + 1,
            round: 1,
            records: put_record(next, last_index + 1, b"key", b"forged"),
        },
    );
    let ack = Message::Ack {
        success: true,
        match_index: last_index + 1,
        round: 1,
    };
    bytes.extend(frame(from, next, ack));
    let coordinator = Message::Coordinator {
        commit_index: last_index + 1,
    };
    bytes.extend(frame(from, next, coordinator));
    bytes.extend(frame(from, u64::MAX, heartbeat()));
    bytes
}

fn heartbeat() -> Message {
    Message::Append {
        prev_index: 0,
        prev_epoch: 0,
        commit_index: 0,
        round: 0,
        records: Vec::new(),
    }
}

/// Reads until the server closes the connection; true if it did.
fn closed_by_server(stream: &mut TcpStream) -> bool {
    let mut rest = Vec::new();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    match std::io::Read::read_to_end(&mut reader, &mut rest) {
        Ok(_) => true,
        Err(error) => error.kind() == std::io::ErrorKind::ConnectionReset,
    }
}

/// Every node's (role, leader, epoch).
fn roles(cluster: &Cluster) -> Vec<(String, Option<u64>, u64)> {
    (0..3)
        .map(|node| {
            let role = cluster.role(node).expect("the node answers ROLE");
            (role.role, role.leader, role.epoch)
        })
        .collect()
}

/// The attack of the issue, without the secret: a client poses as the
/// leader to each follower and sends an Append of a new epoch, an Ack, a
/// Coordinator and a heartbeat of epoch 2^64-1, with a made-up proof or
/// none. Every connection is closed, no node changes epoch or leader, and
/// the value read through the leader is the one written.
#[test]
fn without_the_secret_forged_peer_frames_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (mut cluster, leader) = cluster_with_secret(dir.path());
    assert_eq!(cluster.connect(leader).request(b"PUT key original"), b"OK");
    let before = roles(&cluster);
    let epoch = before[leader].2;
    let posing_as = hello_of(&cluster, leader);
    for follower in (0..3).filter(|node| *node != leader) {
        let target = cluster.address(follower);
        // A made-up proof, then the frames.
        let (mut stream, _, reply) = start_handshake(target, posing_as);
        assert!(reply.starts_with(b"KVPEER 3 "), "{reply:?}");
        let mut attack = format!("KVPROOF {}\n", "ab".repeat(32)).into_bytes();
        attack.extend(forged_frames(posing_as.id, epoch, 10));
        let _ = stream.write_all(&attack);
        assert!(closed_by_server(&mut stream));
        // No proof at all: the frames where the proof should be.
        let (mut stream, _, _) = start_handshake(target, posing_as);
        let _ = stream.write_all(&forged_frames(posing_as.id, epoch, 10));
        assert!(closed_by_server(&mut stream));
        let process = cluster.process(follower);
        let line = process.wait_for_stderr("refused a peer handshake from 127.0.0.1");
        assert!(line.contains("handshake failed"), "{line}");
    }
    assert_eq!(roles(&cluster), before);
    let mut client = cluster.connect(leader);
    assert_eq!(client.request(b"GET key"), b"original");
    assert_eq!(client.request(b"PUT after attack"), b"OK");
    for node in 0..3 {
        cluster.wait_for_value(node, "key", b"original");
    }
}

/// A node started with another secret never joins: the other two elect a
/// leader and take writes without it, and it says why.
#[test]
fn a_node_with_a_different_secret_cannot_join() {
    let dir = tempfile::tempdir().unwrap();
    let good = secret_file(dir.path(), "good.secret", SECRET, 0o600);
    let bad = secret_file(dir.path(), "bad.secret", OTHER_SECRET, 0o600);
    let mut cluster = Cluster::prepare(3, &[]);
    let outsider = cluster.highest();
    let members: Vec<usize> = (0..3).filter(|node| *node != outsider).collect();
    for &node in &members {
        cluster.start_node_with_args(node, &["--cluster-secret-file", good.to_str().unwrap()]);
    }
    cluster.start_node_with_args(outsider, &["--cluster-secret-file", bad.to_str().unwrap()]);
    let leader = cluster.wait_for_leader(&members);
    assert_eq!(cluster.connect(leader).request(b"PUT key members"), b"OK");
    for &node in &members {
        cluster.wait_for_value(node, "key", b"members");
    }
    // Each side finds out when it checks the other's proof.
    for node in [outsider, members[0]] {
        cluster.process(node).wait_for_stderr(
            "failed our handshake: handshake failed: the peer's proof does not match",
        );
    }
    let outsider_role = cluster.role(outsider).unwrap();
    let leader_id = u64::from(cluster.ports[leader]);
    assert_ne!(outsider_role.leader, Some(leader_id), "{outsider_role:?}");
    assert_eq!(cluster.connect(outsider).request(b"GET key"), b"NOT_FOUND");
}

/// A node that holds the secret (a member, or its stolen secret) still
/// cannot brick the cluster: a heartbeat of epoch 2^64-1 and a record of
/// epoch 0 are refused whole, the epoch does not move, and the follower
/// restarts cleanly afterwards.
#[test]
fn an_authenticated_peer_cannot_wrap_the_epoch_or_plant_epoch_zero() {
    let dir = tempfile::tempdir().unwrap();
    let (mut cluster, leader) = cluster_with_secret(dir.path());
    assert_eq!(cluster.connect(leader).request(b"PUT key original"), b"OK");
    let follower = (leader + 1) % 3;
    cluster.wait_for_value(follower, "key", b"original");
    let epoch = cluster.role(follower).unwrap().epoch;
    let leader_hello = hello_of(&cluster, leader);

    let heartbeat = frame(leader_hello.id, u64::MAX, heartbeat());
    let mut stream = admitted_as(cluster.address(follower), leader_hello, SECRET, &heartbeat);
    assert!(closed_by_server(&mut stream));
    let line = cluster
        .process(follower)
        .wait_for_stderr("refused a frame from node");
    assert!(line.contains("epoch 18446744073709551615"), "{line}");
    assert_eq!(cluster.role(follower).unwrap().epoch, epoch);

    let zero = Message::Append {
        prev_index: 0,
        prev_epoch: 0,
        commit_index: 0,
        round: 0,
        records: put_record(0, 1, b"key", b"epoch zero"),
    };
    let zero = frame(leader_hello.id, epoch, zero);
    // Refusals are logged at most once a second: send until one is.
    let started = Instant::now();
    loop {
        let mut stream = admitted_as(cluster.address(follower), leader_hello, SECRET, &zero);
        assert!(closed_by_server(&mut stream));
        let logged = cluster
            .process(follower)
            .stderr_so_far()
            .iter()
            .any(|line| {
                line.contains("refused a frame from node") && line.contains("has epoch 0, outside")
            });
        if logged {
            break;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "the epoch-0 record was never refused"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    cluster.process(follower).stop();
    cluster.nodes[follower] = None;
    cluster.start_node(follower);
    cluster.wait_for_value(follower, "key", b"original");
    assert_eq!(cluster.connect(leader).request(b"GET key"), b"original");
}

/// The seed's three-node session on loopback needs no secret, and says
/// that its peers are not authenticated.
#[test]
fn a_loopback_cluster_without_a_secret_runs_and_says_so() {
    let mut cluster = Cluster::start(3, &[]);
    let leader = cluster.wait_for_leader(&[0, 1, 2]);
    assert_eq!(cluster.connect(leader).request(b"PUT key value"), b"OK");
    for node in 0..3 {
        cluster.wait_for_value(node, "key", b"value");
    }
    let line = cluster.process(0).wait_for_stderr("listening on");
    assert!(line.contains("NOT authenticated"), "{line}");
}

/// Any address off loopback without a secret: the server refuses to start,
/// says why and what to pass.
#[test]
fn a_cluster_off_loopback_without_a_secret_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().unwrap();
    for args in [
        vec!["7001", "127.0.0.1:7002", "--host", "0.0.0.0"],
        vec!["7001", "192.0.2.7:7002"],
    ] {
        let mut args = args.clone();
        args.extend(["--data-dir", data_dir]);
        let (status, stderr) = run_to_exit(&args);
        assert_eq!(status.code(), Some(2), "{stderr}");
        assert!(stderr.contains("is not a loopback address"), "{stderr}");
        assert!(stderr.contains("--cluster-secret-file"), "{stderr}");
    }
}

/// A secret file anyone may read, a short one, or a missing one: the server
/// does not start, and names the file.
#[test]
fn unsafe_or_short_secret_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let readable = secret_file(dir.path(), "readable", SECRET, 0o644);
    let short = secret_file(dir.path(), "short", "tooshort\n", 0o600);
    let missing = dir.path().join("missing");
    for (path, says) in [
        (&readable, "chmod 600"),
        (&short, "8 bytes"),
        (&missing, "No such file"),
    ] {
        let (status, stderr) = run_to_exit(&[
            "7001",
            "127.0.0.1:7002",
            "--data-dir",
            data_dir.to_str().unwrap(),
            "--cluster-secret-file",
            path.to_str().unwrap(),
        ]);
        assert_eq!(status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(path.to_str().unwrap()), "{stderr}");
        assert!(stderr.contains(says), "{says}: {stderr}");
    }
    let (status, stderr) = run_to_exit(&[
        "7001",
        "--data-dir",
        data_dir.to_str().unwrap(),
        "--requirepass-file",
        readable.to_str().unwrap(),
    ]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("--requirepass-file"), "{stderr}");
}

fn server_with_password(dir: &Path) -> ServerProcess {
    let path = secret_file(dir, "password", "s3cret pass\n", 0o600);
    ServerProcess::start(
        &dir.join("data"),
        &["--requirepass-file", path.to_str().unwrap()],
    )
}

/// Before AUTH only AUTH, PING and QUIT run; a wrong password is answered
/// after a delay and logged; the right one lets everything through.
#[test]
fn a_password_is_required_before_anything_but_ping_and_quit() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = server_with_password(dir.path());
    let mut client = server.connect();
    let noauth = b"ERR NOAUTH Authentication required.".to_vec();
    assert_eq!(client.request(b"GET key"), noauth);
    assert_eq!(client.request(b"PUT key value"), noauth);
    assert_eq!(client.request(b"ROLE"), noauth);
    assert_eq!(client.request(b"SNAPSHOT"), noauth);
    assert_eq!(client.request(b"PING"), b"PONG");
    let asked = Instant::now();
    assert_eq!(
        client.request(b"AUTH s3cret"),
        b"ERR WRONGPASS invalid username-password pair or user is disabled."
    );
    assert!(asked.elapsed() >= Duration::from_millis(90), "no delay");
    // Pipelined behind a wrong password, a request waits for its reply.
    client.send(b"AUTH wrong\nGET key\n");
    assert!(client.read_line().starts_with(b"ERR WRONGPASS"));
    assert_eq!(client.read_line(), [noauth.as_slice(), b"\n"].concat());
    assert_eq!(client.request(b"AUTH s3cret pass"), b"OK");
    assert_eq!(client.request(b"PUT key value"), b"OK");
    assert_eq!(client.request(b"GET key"), b"value");
    let line = server.wait_for_stderr("wrong password from 127.0.0.1");
    assert!(line.contains("so far"), "{line}");
    // Each connection authenticates on its own; QUIT needs no password.
    let mut other = server.connect();
    assert_eq!(other.request(b"GET key"), noauth);
    other.send(b"QUIT\n");
    assert_eq!(other.read_until_closed(), b"");
}

#[test]
fn auth_without_a_configured_password_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &[]);
    let mut client = server.connect();
    assert_eq!(
        client.request(b"AUTH anything"),
        b"ERR AUTH <password> called without any password configured for the default user. \
          Are you sure your configuration is correct?"
    );
    assert_eq!(client.request(b"PUT key value"), b"OK");
}

/// A follower full of idle clients (--max-clients) still lets its peers
/// in: a leader started afterwards is followed, while one more plain
/// client is refused.
#[test]
fn peers_get_in_when_the_client_slots_are_full() {
    let mut cluster = Cluster::prepare(3, &["--max-clients", "8"]);
    let latecomer = cluster.highest();
    let others: Vec<usize> = (0..3).filter(|node| *node != latecomer).collect();
    for &node in &others {
        cluster.start_node(node);
    }
    let full = others[0];
    // Wait until the two have found each other, then fill `full`.
    cluster.wait_for_leader(&others);
    let mut idle: Vec<Connection> = (0..8).map(|_| cluster.connect(full)).collect();
    assert_eq!(idle[0].request(b"PING"), b"PONG");
    // From a peer's address (all is loopback here) it may wait to prove it
    // is a peer; a client's first bytes give it away, and so does silence.
    let mut refused = cluster.connect(full);
    refused.send(b"PING\n");
    assert_eq!(
        refused.read_until_closed(),
        b"ERR max number of clients reached\n"
    );
    let mut silent = cluster.connect(full);
    assert_eq!(
        silent.read_until_closed(),
        b"ERR max number of clients reached\n"
    );
    cluster.start_node(latecomer);
    let latecomer_id = cluster.ports[latecomer].to_string();
    wait_until("the full node to follow the latecomer", || {
        let role = idle[0].request(b"ROLE");
        String::from_utf8_lossy(&role).starts_with(&format!("follower {latecomer_id} "))
    });
    assert_eq!(cluster.connect(latecomer).request(b"PUT key value"), b"OK");
    wait_until("the full node to hold the write", || {
        idle[1].request(b"GET key") == b"value"
    });
}

/// Half-finished handshakes keep the slot they came in on until their
/// proof arrives: they cannot be opened without bound.
#[test]
fn pending_peer_handshakes_hold_connection_slots() {
    let dir = tempfile::tempdir().unwrap();
    let path = secret_file(dir.path(), "cluster.secret", SECRET, 0o600);
    let mut cluster = Cluster::prepare(2, &["--max-clients", "4"]);
    cluster.start_node_with_args(0, &["--cluster-secret-file", path.to_str().unwrap()]);
    let posing_as = hello_of(&cluster, 1);
    // Four client slots and two peer-only slots (one configured peer).
    let pending: Vec<TcpStream> = (0..6)
        .map(|_| {
            let (stream, _, reply) = start_handshake(cluster.address(0), posing_as);
            assert!(reply.starts_with(b"KVPEER 3 "), "{reply:?}");
            stream
        })
        .collect();
    let (_, _, reply) = start_handshake(cluster.address(0), posing_as);
    assert_eq!(reply, b"ERR max number of clients reached\n");
    drop(pending);
    wait_until("the slots to come back", || {
        let (_, _, reply) = start_handshake(cluster.address(0), posing_as);
        reply.starts_with(b"KVPEER 3 ")
    });
}
