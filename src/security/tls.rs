//! TLS settings from PEM files: the rustls configurations the server, the
//! peers and the client tools use.
//!
//! This module owns turning `--tls-cert-file`, `--tls-key-file` and
//! `--tls-ca-file` into an `Arc<rustls::ServerConfig>` or
//! `Arc<rustls::ClientConfig>`, with every check that can be made before the
//! first connection: each file readable and holding what its flag promises,
//! the private key matching the certificate, a CA whenever certificates must
//! be verified. Each failure is a [`TlsError`] naming the file (and its
//! flag) at fault. It never touches a socket and never consults a
//! process-wide default: the crypto provider is `ring`, chosen here, and the
//! protocol versions are rustls's safe defaults (TLS 1.2 and 1.3).
//!
//! # Certificates for a cluster
//!
//! Servers are verified against the CA file only; system roots are never
//! used. A node dials its peers with its own certificate as the client
//! certificate, so a node certificate must either carry both the
//! `serverAuth` and `clientAuth` extended key usages or no extended key
//! usage at all, and it must name, as an IP address subject alternative
//! name, the address its peers dial (a DNS name is enough for clients that
//! dial a host name).

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls::{ClientConfig, InconsistentKeys, RootCertStore, ServerConfig};
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// The files a TLS endpoint is configured from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain, the end-entity certificate first (`--tls-cert-file`).
    pub cert: PathBuf,
    /// PEM private key of that certificate (`--tls-key-file`).
    pub key: PathBuf,
    /// PEM certificates of the CA that signs client and peer certificates
    /// (`--tls-ca-file`); needed to verify them.
    pub ca: Option<PathBuf>,
}

/// Which client certificates a server asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// None are asked for.
    None,
    /// One is asked for and, if presented, must verify against the CA; a
    /// client without one is let in. Peers (which must present one) and
    /// plain clients (which need not) can then share one port: the reactor
    /// checks that a peer presented a verified certificate.
    Optional,
    /// Every client must present one that verifies (`--tls-client-auth`).
    Required,
}

/// Which file a [`TlsError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsFileRole {
    Certificate,
    PrivateKey,
    CertificateAuthority,
}

impl fmt::Display for TlsFileRole {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            TlsFileRole::Certificate => "certificate file (--tls-cert-file)",
            TlsFileRole::PrivateKey => "private key file (--tls-key-file)",
            TlsFileRole::CertificateAuthority => "CA file (--tls-ca-file)",
        })
    }
}

/// Why TLS settings could not be made.
#[derive(Debug)]
pub enum TlsError {
    /// The file is missing or cannot be read.
    Unreadable {
        role: TlsFileRole,
        path: PathBuf,
        source: io::Error,
    },
    /// The file is not valid PEM.
    MalformedPem {
        role: TlsFileRole,
        path: PathBuf,
        reason: String,
    },
    /// The certificate file holds no `CERTIFICATE` section.
    NoCertificate { path: PathBuf },
    /// The key file holds no private key section.
    NoPrivateKey { path: PathBuf },
    /// The private key is not the key of the certificate.
    KeyMismatch { cert: PathBuf, key: PathBuf },
    /// The CA file holds no `CERTIFICATE` section.
    NoCaCertificate { path: PathBuf },
    /// A certificate of the CA file cannot serve as a trust anchor.
    BadCaCertificate {
        path: PathBuf,
        reason: rustls::Error,
    },
    /// Client certificates are to be verified, but no CA file was given.
    CaRequired { client_auth: ClientAuth },
    /// rustls refused the certificate and key (an unsupported key type, ...).
    IdentityRefused {
        cert: PathBuf,
        key: PathBuf,
        reason: rustls::Error,
    },
    /// rustls refused the rest of the configuration.
    SettingsRefused { reason: String },
    /// A host that is neither an IP address nor a valid DNS name.
    InvalidServerName { host: String },
}

impl fmt::Display for TlsError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::Unreadable { role, path, source } => {
                write!(
                    formatter,
                    "cannot read the {role} {}: {source}",
                    path.display()
                )
            }
            TlsError::MalformedPem { role, path, reason } => write!(
                formatter,
                "the {role} {} is not valid PEM: {reason}",
                path.display()
            ),
            TlsError::NoCertificate { path } => write!(
                formatter,
                "the certificate file (--tls-cert-file) {} holds no PEM CERTIFICATE",
                path.display()
            ),
            TlsError::NoPrivateKey { path } => write!(
                formatter,
                "the private key file (--tls-key-file) {} holds no PEM private key",
                path.display()
            ),
            TlsError::KeyMismatch { cert, key } => write!(
                formatter,
                "the private key in {} (--tls-key-file) does not match the certificate in {} \
                 (--tls-cert-file)",
                key.display(),
                cert.display()
            ),
            TlsError::NoCaCertificate { path } => write!(
                formatter,
                "the CA file (--tls-ca-file) {} holds no PEM CERTIFICATE",
                path.display()
            ),
            TlsError::BadCaCertificate { path, reason } => write!(
                formatter,
                "a certificate in the CA file (--tls-ca-file) {} cannot be a trust anchor: {reason}",
                path.display()
            ),
            TlsError::CaRequired { client_auth } => write!(
                formatter,
                "verifying client certificates ({client_auth:?}) needs a CA file (--tls-ca-file)"
            ),
            TlsError::IdentityRefused { cert, key, reason } => write!(
                formatter,
                "TLS refused the certificate {} with the key {}: {reason}",
                cert.display(),
                key.display()
            ),
            TlsError::SettingsRefused { reason } => {
                write!(formatter, "TLS refused the configuration: {reason}")
            }
            TlsError::InvalidServerName { host } => write!(
                formatter,
                "{host:?} is neither an IP address nor a valid DNS name to verify the server by"
            ),
        }
    }
}

impl std::error::Error for TlsError {}

/// The server side: our certificate and key, and which client
/// certificates to ask for. `Optional` and `Required` need `files.ca`.
pub fn server_config(
    files: &TlsFiles,
    client_auth: ClientAuth,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = crypto_provider();
    let verifier = client_verifier(files.ca.as_deref(), client_auth, &provider)?;
    let (chain, key) = load_identity(&files.cert, &files.key)?;
    let builder = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(settings_refused)?;
    let builder = match verifier {
        Some(verifier) => builder.with_client_cert_verifier(verifier),
        None => builder.with_no_client_auth(),
    };
    let config = builder
        .with_single_cert(chain, key)
        .map_err(|reason| identity_error(&files.cert, &files.key, reason))?;
    Ok(Arc::new(config))
}

/// The client side: servers are verified against the certificates of
/// `ca` (and nothing else); `identity` is the certificate and key files to
/// present when the server asks (peers present their node certificate).
pub fn client_config(
    ca: &Path,
    identity: Option<(&Path, &Path)>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let provider = crypto_provider();
    let roots = load_roots(ca)?;
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(settings_refused)?
        .with_root_certificates(roots);
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let (chain, private_key) = load_identity(cert, key)?;
            builder
                .with_client_auth_cert(chain, private_key)
                .map_err(|reason| identity_error(cert, key, reason))?
        }
    };
    Ok(Arc::new(config))
}

/// The name a peer's certificate must carry when it is dialled at
/// `address`: its IP address.
pub fn server_name_for(address: &SocketAddr) -> ServerName<'static> {
    ServerName::IpAddress(address.ip().into())
}

/// The name to verify a server by, from a host as typed: an IP address
/// (IPv6 with or without brackets) or a DNS name.
pub fn server_name_from_host(host: &str) -> Result<ServerName<'static>, TlsError> {
    let bare = host
        .strip_prefix('[')
        .and_then(|inner| inner.strip_suffix(']'))
        .unwrap_or(host);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(ServerName::IpAddress(ip.into()));
    }
    ServerName::try_from(bare.to_owned()).map_err(|_| TlsError::InvalidServerName {
        host: host.to_owned(),
    })
}

/// [`server_name_from_host`] for the host of a `host:port` address.
pub fn server_name_from_host_and_port(address: &str) -> Result<ServerName<'static>, TlsError> {
    match address.rsplit_once(':') {
        Some((host, _port)) => server_name_from_host(host),
        None => Err(TlsError::InvalidServerName {
            host: address.to_owned(),
        }),
    }
}

fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn settings_refused(reason: impl fmt::Display) -> TlsError {
    TlsError::SettingsRefused {
        reason: reason.to_string(),
    }
}

/// The verifier for `client_auth`, or `None` when no certificate is asked.
fn client_verifier(
    ca: Option<&Path>,
    client_auth: ClientAuth,
    provider: &Arc<CryptoProvider>,
) -> Result<Option<Arc<dyn ClientCertVerifier>>, TlsError> {
    if client_auth == ClientAuth::None {
        return Ok(None);
    }
    let ca = ca.ok_or(TlsError::CaRequired { client_auth })?;
    let roots = Arc::new(load_roots(ca)?);
    let builder = WebPkiClientVerifier::builder_with_provider(roots, provider.clone());
    let builder = match client_auth {
        ClientAuth::Optional => builder.allow_unauthenticated(),
        ClientAuth::None | ClientAuth::Required => builder,
    };
    builder.build().map(Some).map_err(settings_refused)
}

/// Every certificate of the CA file, as trust anchors.
fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let certificates = read_certificates(path, TlsFileRole::CertificateAuthority)?;
    if certificates.is_empty() {
        return Err(TlsError::NoCaCertificate {
            path: path.to_owned(),
        });
    }
    let mut roots = RootCertStore::empty();
    for certificate in certificates {
        roots
            .add(certificate)
            .map_err(|reason| TlsError::BadCaCertificate {
                path: path.to_owned(),
                reason,
            })?;
    }
    Ok(roots)
}

/// The certificate chain and private key of one endpoint.
fn load_identity(
    cert: &Path,
    key: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let chain = read_certificates(cert, TlsFileRole::Certificate)?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert.to_owned(),
        });
    }
    let private_key = PrivateKeyDer::from_pem_file(key).map_err(|error| match error {
        pem::Error::NoItemsFound => TlsError::NoPrivateKey {
            path: key.to_owned(),
        },
        other => pem_error(TlsFileRole::PrivateKey, key, other),
    })?;
    Ok((chain, private_key))
}

/// Every `CERTIFICATE` section of a PEM file (other sections are skipped).
fn read_certificates(
    path: &Path,
    role: TlsFileRole,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    CertificateDer::pem_file_iter(path)
        .map_err(|error| pem_error(role, path, error))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| pem_error(role, path, error))
}

fn pem_error(role: TlsFileRole, path: &Path, error: pem::Error) -> TlsError {
    let path = path.to_owned();
    match error {
        pem::Error::Io(source) => TlsError::Unreadable { role, path, source },
        other => TlsError::MalformedPem {
            role,
            path,
            reason: other.to_string(),
        },
    }
}

fn identity_error(cert: &Path, key: &Path, reason: rustls::Error) -> TlsError {
    let (cert, key) = (cert.to_owned(), key.to_owned());
    match reason {
        rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch) => {
            TlsError::KeyMismatch { cert, key }
        }
        reason => TlsError::IdentityRefused { cert, key, reason },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::testing::TestPki;

    fn files(pki: &TestPki, ca: Option<&Path>) -> TlsFiles {
        TlsFiles {
            cert: pki.node.cert.clone(),
            key: pki.node.key.clone(),
            ca: ca.map(Path::to_owned),
        }
    }

    #[test]
    fn server_settings_are_made_for_every_client_auth() {
        let pki = TestPki::generate();
        for client_auth in [ClientAuth::None, ClientAuth::Optional, ClientAuth::Required] {
            pki.server_config(client_auth);
        }
        pki.client_config(Some(&pki.client));
        assert!(server_config(&files(&pki, None), ClientAuth::None).is_ok());
    }

    #[test]
    fn verifying_clients_without_a_ca_is_refused() {
        let pki = TestPki::generate();
        for client_auth in [ClientAuth::Optional, ClientAuth::Required] {
            let error = server_config(&files(&pki, None), client_auth).unwrap_err();
            assert!(
                matches!(error, TlsError::CaRequired { client_auth: asked } if asked == client_auth)
            );
            assert!(error.to_string().contains("--tls-ca-file"), "{error}");
        }
    }

    #[test]
    fn a_missing_file_is_named_with_its_flag() {
        let pki = TestPki::generate();
        let missing = pki.directory.path().join("missing.pem");
        let mut settings = files(&pki, None);
        settings.cert = missing.clone();
        let error = server_config(&settings, ClientAuth::None).unwrap_err();
        assert!(matches!(
            &error,
            TlsError::Unreadable { role: TlsFileRole::Certificate, path, source }
                if *path == missing && source.kind() == io::ErrorKind::NotFound
        ));
        let message = error.to_string();
        assert!(message.contains("--tls-cert-file"), "{message}");
        assert!(
            message.contains(&missing.display().to_string()),
            "{message}"
        );

        let error = client_config(&missing, None).unwrap_err();
        assert!(matches!(
            error,
            TlsError::Unreadable {
                role: TlsFileRole::CertificateAuthority,
                ..
            }
        ));
    }

    #[test]
    fn files_without_what_their_flag_promises_are_refused() {
        let pki = TestPki::generate();
        let mut settings = files(&pki, None);
        settings.cert = pki.node.key.clone();
        assert!(matches!(
            server_config(&settings, ClientAuth::None),
            Err(TlsError::NoCertificate { path }) if path == pki.node.key
        ));
        let mut settings = files(&pki, None);
        settings.key = pki.node.cert.clone();
        assert!(matches!(
            server_config(&settings, ClientAuth::None),
            Err(TlsError::NoPrivateKey { path }) if path == pki.node.cert
        ));
        assert!(matches!(
            server_config(&files(&pki, Some(&pki.node.key)), ClientAuth::Required),
            Err(TlsError::NoCaCertificate { path }) if path == pki.node.key
        ));
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        let pki = TestPki::generate();
        let mut settings = files(&pki, None);
        settings.key = pki.client.key.clone();
        let error = server_config(&settings, ClientAuth::None).unwrap_err();
        assert!(matches!(error, TlsError::KeyMismatch { .. }), "{error}");
        assert!(error.to_string().contains("does not match"), "{error}");
        let error = client_config(&pki.ca, Some((&pki.client.cert, &pki.node.key))).unwrap_err();
        assert!(matches!(error, TlsError::KeyMismatch { .. }), "{error}");
    }

    #[test]
    fn malformed_pem_is_refused() {
        let pki = TestPki::generate();
        let broken = pki.directory.path().join("broken.pem");
        std::fs::write(&broken, "-----BEGIN CERTIFICATE-----\nnot base64!\n").unwrap();
        let error = client_config(&broken, None).unwrap_err();
        assert!(
            matches!(
                error,
                TlsError::MalformedPem {
                    role: TlsFileRole::CertificateAuthority,
                    ..
                }
            ),
            "{error}"
        );
    }

    #[test]
    fn client_settings_with_and_without_an_identity() {
        let pki = TestPki::generate();
        assert!(client_config(&pki.ca, None).is_ok());
        assert!(client_config(&pki.ca, Some(pki.client.paths())).is_ok());
        assert!(client_config(&pki.ca, Some(pki.node.paths())).is_ok());
        assert!(client_config(&pki.untrusted_ca, None).is_ok());
    }

    #[test]
    fn server_names_from_addresses_and_hosts() {
        let ip = |text: &str| ServerName::IpAddress(text.parse::<IpAddr>().unwrap().into());
        let address: SocketAddr = "127.0.0.1:7001".parse().unwrap();
        assert_eq!(server_name_for(&address), ip("127.0.0.1"));
        assert_eq!(server_name_from_host("10.0.0.2").unwrap(), ip("10.0.0.2"));
        assert_eq!(server_name_from_host("::1").unwrap(), ip("::1"));
        assert_eq!(server_name_from_host("[::1]").unwrap(), ip("::1"));
        assert_eq!(
            server_name_from_host("node-a.example").unwrap(),
            ServerName::try_from("node-a.example").unwrap()
        );
        assert_eq!(
            server_name_from_host_and_port("[::1]:7001").unwrap(),
            ip("::1")
        );
        assert_eq!(
            server_name_from_host_and_port("localhost:7001").unwrap(),
            ServerName::try_from("localhost").unwrap()
        );
        for bad in ["", "bad name", "a..b"] {
            assert!(
                matches!(
                    server_name_from_host(bad),
                    Err(TlsError::InvalidServerName { .. })
                ),
                "{bad:?}"
            );
        }
        assert!(server_name_from_host_and_port("no-port").is_err());
    }
}
