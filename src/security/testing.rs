//! Test fixtures for TLS, compiled only for unit tests: a throwaway PKI
//! generated with rcgen into a temporary directory.
//!
//! Nothing here is used outside `#[cfg(test)]` code.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::{ClientConfig, ServerConfig};
use tempfile::TempDir;

use super::tls::{self, ClientAuth, TlsFiles};

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
