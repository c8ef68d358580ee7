//! Test fixtures for TLS and passwords, compiled only for unit tests: a
//! throwaway PKI generated with rcgen into a temporary directory, and a fake
//! line-protocol server (plain or TLS) on a thread that records what it
//! receives.
//!
//! Nothing here is used outside `#[cfg(test)]` code; the fake server
//! listens on the loopback interface only.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::{ClientConfig, ServerConfig, ServerConnection, StreamOwned};
use tempfile::TempDir;

use super::tls::{self, ClientAuth, TlsFiles};

/// Bound on each read and write of the fake server, so a broken test fails
/// instead of leaving a thread blocked forever.
const FAKE_SERVER_TIMEOUT: Duration = Duration::from_secs(10);

/// A certificate file and its private key file.
pub(crate) struct Identity {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Identity {
    pub fn paths(&self) -> (&Path, &Path) {
        (&self.cert, &self.key)
    }
}

/// A CA, a node certificate it signed (IP SAN 127.0.0.1, DNS `localhost`,
/// serverAuth and clientAuth), a client certificate it signed (clientAuth
/// only), and a second CA that signed nothing here.
pub(crate) struct TestPki {
    /// Holds the files; removed when the PKI is dropped.
    pub directory: TempDir,
    pub ca: PathBuf,
    pub untrusted_ca: PathBuf,
    pub node: Identity,
    pub client: Identity,
}

impl TestPki {
    pub fn generate() -> TestPki {
        let directory = tempfile::tempdir().expect("temporary directory");
        let (ca, ca_pem) = certificate_authority("kvstore test CA");
        let (_, untrusted_pem) = certificate_authority("kvstore untrusted CA");
        let node = issue(
            &ca,
            &["127.0.0.1", "localhost"],
            &[
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        );
        let client = issue(&ca, &[], &[ExtendedKeyUsagePurpose::ClientAuth]);
        let write = |name: &str, contents: &str| {
            let path = directory.path().join(name);
            std::fs::write(&path, contents).expect("write a PEM file");
            path
        };
        TestPki {
            ca: write("ca.pem", &ca_pem),
            untrusted_ca: write("untrusted-ca.pem", &untrusted_pem),
            node: Identity {
                cert: write("node.pem", &node.0),
                key: write("node-key.pem", &node.1),
            },
            client: Identity {
                cert: write("client.pem", &client.0),
                key: write("client-key.pem", &client.1),
            },
            directory,
        }
    }

    /// The node's server settings, verifying client certificates against the CA.
    pub fn server_config(&self, client_auth: ClientAuth) -> Arc<ServerConfig> {
        let files = TlsFiles {
            cert: self.node.cert.clone(),
            key: self.node.key.clone(),
            ca: Some(self.ca.clone()),
        };
        tls::server_config(&files, client_auth).expect("server settings")
    }

    /// Client settings trusting the CA, presenting `identity` if asked.
    pub fn client_config(&self, identity: Option<&Identity>) -> Arc<ClientConfig> {
        tls::client_config(&self.ca, identity.map(Identity::paths)).expect("client settings")
    }
}

/// A self-signed CA and its certificate as PEM.
fn certificate_authority(name: &str) -> (CertifiedIssuer<'static, KeyPair>, String) {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.distinguished_name.push(DnType::CommonName, name);
    let key = KeyPair::generate().expect("CA key");
    let issuer = CertifiedIssuer::self_signed(params, key).expect("CA certificate");
    let pem = issuer.pem();
    (issuer, pem)
}

/// A certificate signed by `ca`, and its key, both as PEM.
fn issue(
    ca: &CertifiedIssuer<'static, KeyPair>,
    names: &[&str],
    usages: &[ExtendedKeyUsagePurpose],
) -> (String, String) {
    let names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
    let mut params = CertificateParams::new(names).expect("certificate parameters");
    params.extended_key_usages = usages.to_vec();
    params
        .distinguished_name
        .push(DnType::CommonName, "kvstore test");
    let key = KeyPair::generate().expect("key");
    let certificate = params.signed_by(&key, ca).expect("certificate");
    (certificate.pem(), key.serialize_pem())
}

/// What the fake server does after one received line.
pub(crate) enum Answer {
    Reply(Vec<u8>),
    /// Sends the bytes, then closes the connection.
    ReplyAndClose(Vec<u8>),
}

/// Answers each received line (without its `\n`).
pub(crate) type Responder = Box<dyn FnMut(&[u8]) -> Answer + Send>;

/// A line server on 127.0.0.1 that serves one connection at a time until
/// the test process ends, recording every line it receives.
pub(crate) struct FakeLineServer {
    pub address: SocketAddr,
    log: Arc<Mutex<ServerLog>>,
}

#[derive(Default)]
struct ServerLog {
    lines: Vec<Vec<u8>>,
    connections: usize,
}

impl FakeLineServer {
    /// Plain TCP without `tls`, else TLS with those settings.
    pub fn start(tls: Option<Arc<ServerConfig>>, responder: Responder) -> FakeLineServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = listener.local_addr().expect("address");
        let log = Arc::new(Mutex::new(ServerLog::default()));
        let shared = Arc::clone(&log);
        thread::spawn(move || serve(listener, tls, responder, &shared));
        FakeLineServer { address, log }
    }

    /// Every line received so far, on every connection, in order.
    pub fn received(&self) -> Vec<Vec<u8>> {
        self.log.lock().expect("lock").lines.clone()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.log.lock().expect("lock").connections
    }
}

fn serve(
    listener: TcpListener,
    tls: Option<Arc<ServerConfig>>,
    mut responder: Responder,
    log: &Mutex<ServerLog>,
) {
    for stream in listener.incoming() {
        let Ok(stream) = stream else { return };
        log.lock().expect("lock").connections += 1;
        let _ = stream.set_read_timeout(Some(FAKE_SERVER_TIMEOUT));
        let _ = stream.set_write_timeout(Some(FAKE_SERVER_TIMEOUT));
        match &tls {
            None => serve_one(stream, &mut responder, log),
            Some(config) => {
                let session = ServerConnection::new(Arc::clone(config)).expect("TLS session");
                let mut stream = StreamOwned::new(session, stream);
                serve_one(&mut stream, &mut responder, log);
                stream.conn.send_close_notify();
                let _ = stream.flush();
            }
        }
    }
}

/// Answers lines until the client leaves, an answer closes, or an error (a
/// failed TLS handshake included).
fn serve_one(stream: impl Read + Write, responder: &mut Responder, log: &Mutex<ServerLog>) {
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let request = line.strip_suffix(b"\n").unwrap_or(&line);
        log.lock().expect("lock").lines.push(request.to_vec());
        let (reply, close) = match responder(request) {
            Answer::Reply(reply) => (reply, false),
            Answer::ReplyAndClose(reply) => (reply, true),
        };
        if reader.get_mut().write_all(&reply).is_err() || close {
            return;
        }
    }
}
