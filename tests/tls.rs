//! TLS on the one port, against real processes: clients and peers over
//! TLS (certificates made here with rcgen), plaintext clients turned away
//! with a line they can read, client certificates with --tls-client-auth,
//! and a would-be peer without a certificate from the cluster's CA.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use common::cluster::Cluster;
use common::pki::Pki;
use common::{DEADLINE, ServerProcess, wait_until};
use kvstore::client::{Client, ClientOptions};
use kvstore::security::handshake::{Dialing, Hello, fresh_nonce};
use kvstore::security::tls::server_name_from_host;

const SECRET: &str = "6b7673746f72652d746573742d636c75737465722d7365637265742d31323334";

fn tls_client(address: &str, config: Arc<rustls::ClientConfig>) -> Client {
    let options = ClientOptions {
        tls: Some(config),
        ..ClientOptions::default()
    };
    Client::connect(address, options).expect("a TLS connection")
}

fn role_over_tls(address: &str, config: &Arc<rustls::ClientConfig>) -> String {
    let mut client = tls_client(address, Arc::clone(config));
    String::from_utf8(client.request_raw(b"ROLE").unwrap()).unwrap()
}

fn secret_file(dir: &Path) -> String {
    let path = dir.join("cluster.secret");
    std::fs::write(&path, SECRET).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path.display().to_string()
}

/// A three-node cluster where every connection is TLS: nodes dial each
/// other over TLS (verifying each other against the CA, presenting their
/// node certificate), elect a leader, and replicate a write; clients read
/// it back over TLS on every node, with the library and with the
/// `kvstore-client` binary.
#[test]
fn clients_and_peers_speak_tls() {
    let pki = Pki::generate();
    let mut flags = pki.server_flags();
    flags.extend([
        "--cluster-secret-file".to_string(),
        secret_file(pki.directory.path()),
    ]);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut cluster = Cluster::start(3, &flags);
    let config = pki.client_config(&pki.ca, false);
    let address = |node: usize| cluster.address(node).to_string();
    let leader = cluster.highest();
    let leader_id = cluster.ports[leader];
    wait_until("the highest node to lead over TLS", || {
        (0..3).all(|node| {
            let role = role_over_tls(&address(node), &config);
            role.split_whitespace().nth(1) == Some(&leader_id.to_string())
        })
    });
    let mut client = tls_client(&address(leader), Arc::clone(&config));
    assert_eq!(client.execute(b"PUT key over-tls").unwrap(), b"OK");
    for node in 0..3 {
        wait_until("the write to reach every node", || {
            tls_client(&address(node), Arc::clone(&config))
                .request_raw(b"GET key")
                .unwrap()
                == b"over-tls"
        });
    }
    let output = Command::new(env!("CARGO_BIN_EXE_kvstore-client"))
        .args(["--tls-ca-file", pki.ca.to_str().unwrap()])
        .args(["127.0.0.1", &cluster.ports[0].to_string(), "GET", "key"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    assert_eq!(output.stdout, b"over-tls\n");
    assert!(
        !cluster
            .process(0)
            .stderr_so_far()
            .iter()
            .any(|line| line.contains("refused a peer handshake")),
        "{}",
        cluster.describe()
    );
}

fn single_node(pki: &Pki, extra: &[&str]) -> (tempfile::TempDir, ServerProcess) {
    let dir = tempfile::tempdir().unwrap();
    let mut flags = pki.server_flags();
    flags.extend(extra.iter().map(|flag| flag.to_string()));
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let server = ServerProcess::start(dir.path(), &flags);
    (dir, server)
}

/// Sends `bytes` in plain text and returns everything until the server
/// closes.
fn plaintext_exchange(server: &ServerProcess, bytes: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(server.address).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream.write_all(bytes).unwrap();
    let mut reply = Vec::new();
    let _ = stream.read_to_end(&mut reply);
    reply
}

/// A plaintext client on a TLS port is told why, in its own protocol, and
/// cut off; nothing it sent runs.
#[test]
fn a_plaintext_client_on_a_tls_port_is_told_and_closed() {
    let pki = Pki::generate();
    let (_dir, mut server) = single_node(&pki, &[]);
    assert_eq!(
        plaintext_exchange(&server, b"PUT key plain\n"),
        b"ERR this port requires TLS (kvstore-client --tls, redis-cli --tls, openssl s_client)\n"
    );
    assert_eq!(
        plaintext_exchange(&server, b"*1\r\n$4\r\nPING\r\n"),
        b"-ERR this port requires TLS\r\n"
    );
    server.wait_for_stderr("refused a plaintext connection from 127.0.0.1");
    let config = pki.client_config(&pki.ca, false);
    let mut client = tls_client(&server.address.to_string(), config);
    assert_eq!(client.request_raw(b"GET key").unwrap(), b"NOT_FOUND");
}

/// A client that does not trust the server's CA fails its handshake.
#[test]
fn a_client_that_does_not_trust_the_ca_cannot_connect() {
    let pki = Pki::generate();
    let (_dir, server) = single_node(&pki, &[]);
    let config = pki.client_config(&pki.untrusted_ca, false);
    let options = ClientOptions {
        tls: Some(config),
        ..ClientOptions::default()
    };
    let refused = Client::connect(&server.address.to_string(), options);
    assert!(refused.is_err(), "connected without trusting the CA");
}

/// With --tls-client-auth a client needs a certificate from the CA; with
/// one, it is served.
#[test]
fn client_certificates_are_required_with_tls_client_auth() {
    let pki = Pki::generate();
    let (_dir, server) = single_node(&pki, &["--tls-client-auth"]);
    let address = server.address.to_string();
    let without = ClientOptions {
        tls: Some(pki.client_config(&pki.ca, false)),
        ..ClientOptions::default()
    };
    let served =
        Client::connect(&address, without).and_then(|mut client| client.request_raw(b"PING"));
    assert!(
        served.is_err(),
        "served without a client certificate: {served:?}"
    );
    let mut client = tls_client(&address, pki.client_config(&pki.ca, true));
    assert_eq!(client.request_raw(b"PING").unwrap(), b"PONG");
}

/// A TLS connection without a certificate from the CA that opens with a
/// peer handshake is refused before any reply, even from a configured
/// peer's address and with the secret in hand.
#[test]
fn a_peer_without_a_certificate_from_the_ca_is_refused() {
    let pki = Pki::generate();
    let mut flags = pki.server_flags();
    flags.extend([
        "--cluster-secret-file".to_string(),
        secret_file(pki.directory.path()),
    ]);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut cluster = Cluster::prepare(2, &flags);
    cluster.start_node(0);
    let config = pki.client_config(&pki.ca, false);
    let socket = TcpStream::connect(cluster.address(0)).unwrap();
    socket.set_read_timeout(Some(DEADLINE)).unwrap();
    let name = server_name_from_host("127.0.0.1").unwrap();
    let session = rustls::ClientConnection::new(config, name).unwrap();
    let mut stream = rustls::StreamOwned::new(session, socket);
    let posing_as = Hello {
        id: u64::from(cluster.ports[1]),
        address: cluster.address(1),
    };
    let mut first = Vec::new();
    Dialing::start(posing_as, fresh_nonce().unwrap(), 0, &mut first);
    stream.write_all(&first).unwrap();
    let mut reply = Vec::new();
    let _ = BufReader::new(&mut stream).read_until(b'\n', &mut reply);
    assert_eq!(reply, b"", "the node answered a peer without a certificate");
    let line = cluster
        .process(0)
        .wait_for_stderr("refused a peer handshake");
    assert!(line.contains("must present a certificate"), "{line}");
}
