//! A throwaway PKI for TLS tests, made with rcgen: a CA, a node
//! certificate it signed (IP SAN 127.0.0.1 and DNS `localhost`, serverAuth
//! and clientAuth, so a node presents it to clients and to peers), a client
//! certificate it signed, and a second CA that signed nothing here.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

pub struct Pki {
    /// Holds the files; removed when dropped.
    pub directory: tempfile::TempDir,
    pub ca: PathBuf,
    pub untrusted_ca: PathBuf,
    pub node_cert: PathBuf,
    pub node_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl Pki {
    pub fn generate() -> Pki {
        let directory = tempfile::tempdir().unwrap();
        let (ca, ca_pem) = authority("kvstore test CA");
        let (_, untrusted_pem) = authority("kvstore untrusted CA");
        let both = [
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let (node_pem, node_key) = issue(&ca, &["127.0.0.1", "localhost"], &both);
        let (client_pem, client_key) = issue(&ca, &[], &[ExtendedKeyUsagePurpose::ClientAuth]);
        let write = |name: &str, contents: &str| {
            let path = directory.path().join(name);
            std::fs::write(&path, contents).unwrap();
            path
        };
        Pki {
            ca: write("ca.pem", &ca_pem),
            untrusted_ca: write("untrusted-ca.pem", &untrusted_pem),
            node_cert: write("node.pem", &node_pem),
            node_key: write("node-key.pem", &node_key),
            client_cert: write("client.pem", &client_pem),
            client_key: write("client-key.pem", &client_key),
            directory,
        }
    }

    /// The server flags that turn TLS on with the node certificate.
    pub fn server_flags(&self) -> Vec<String> {
        [
            ("--tls-cert-file", &self.node_cert),
            ("--tls-key-file", &self.node_key),
            ("--tls-ca-file", &self.ca),
        ]
        .iter()
        .flat_map(|(flag, path)| [flag.to_string(), path.display().to_string()])
        .collect()
    }

    /// Client settings trusting `ca`, presenting the client certificate if
    /// `with_certificate`.
    pub fn client_config(&self, ca: &Path, with_certificate: bool) -> Arc<rustls::ClientConfig> {
        let identity =
            with_certificate.then_some((self.client_cert.as_path(), self.client_key.as_path()));
        kvstore::security::tls::client_config(ca, identity).unwrap()
    }
}

fn authority(name: &str) -> (CertifiedIssuer<'static, KeyPair>, String) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.distinguished_name.push(DnType::CommonName, name);
    let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    let pem = issuer.pem();
    (issuer, pem)
}

fn issue(
    ca: &CertifiedIssuer<'static, KeyPair>,
    names: &[&str],
    usages: &[ExtendedKeyUsagePurpose],
) -> (String, String) {
    let names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
    let mut params = CertificateParams::new(names).unwrap();
    params.extended_key_usages = usages.to_vec();
    params
        .distinguished_name
        .push(DnType::CommonName, "kvstore test");
    let key = KeyPair::generate().unwrap();
    let certificate = params.signed_by(&key, ca).unwrap();
    (certificate.pem(), key.serialize_pem())
}
