//! The security settings a server starts with, read from the files its
//! flags name: the cluster secret(s), the client password, and TLS.
//!
//! A cluster secret file holds one secret per line: normally one; two while
//! the secret is rotated (the first proves, either is accepted; see
//! `docs/SECURITY.md`). Each line must be at least
//! [`MIN_CLUSTER_SECRET_BYTES`] long. Reading happens once, at start-up;
//! every error names the file and the flag.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::{ClientConfig, ServerConfig};

use crate::config::TlsFlags;

use super::handshake::ClusterKey;
use super::password::PasswordCheck;
use super::secret_file::{MIN_CLUSTER_SECRET_BYTES, SecretFileError, read_secret_file};
use super::tls::{self, ClientAuth, TlsError, TlsFiles};

/// The flag naming the cluster secret file.
pub const CLUSTER_SECRET_FLAG: &str = "--cluster-secret-file";
/// The flag naming the client password file.
pub const REQUIREPASS_FLAG: &str = "--requirepass-file";
/// At most this many secrets in a cluster secret file: the current one and,
/// during a rotation, the previous one.
pub const MAX_CLUSTER_SECRETS: usize = 2;

/// What a server proves to its peers and asks of its clients.
#[derive(Debug)]
pub struct Settings {
    /// Empty (unauthenticated) without `--cluster-secret-file`.
    pub cluster_key: ClusterKey,
    /// `None` without `--requirepass-file`: clients need no password.
    pub password: Option<PasswordCheck>,
    /// `None` without `--tls-cert-file`: plain TCP.
    pub tls: Option<TlsSettings>,
}

/// TLS on the port, and for dialing peers.
pub struct TlsSettings {
    /// For every accepted connection.
    pub server: Arc<ServerConfig>,
    /// For dialing peers: verifies them against the CA and presents this
    /// node's certificate. `None` without `--tls-ca-file` (a single node).
    pub peer_client: Option<Arc<ClientConfig>>,
}

impl fmt::Debug for TlsSettings {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("TlsSettings")
            .field("peer_client", &self.peer_client.is_some())
            .finish_non_exhaustive()
    }
}

/// Why the settings could not be read.
#[derive(Debug)]
pub enum SettingsError {
    File(SecretFileError),
    Tls(TlsError),
    /// More secrets than [`MAX_CLUSTER_SECRETS`], or one line too short.
    BadSecretLines {
        path: PathBuf,
        reason: String,
    },
    /// A password with a line break inside: no line-protocol client could
    /// ever send it.
    PasswordWithLineBreak {
        path: PathBuf,
    },
    /// The operating system had no random bytes for the password check.
    Random(io::Error),
}

impl fmt::Display for SettingsError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SettingsError::File(error) => error.fmt(formatter),
            SettingsError::Tls(error) => error.fmt(formatter),
            SettingsError::BadSecretLines { path, reason } => write!(
                formatter,
                "{CLUSTER_SECRET_FLAG} {}: {reason} (one secret of at least \
                 {MIN_CLUSTER_SECRET_BYTES} bytes per line; two lines only while rotating)",
                path.display()
            ),
            SettingsError::PasswordWithLineBreak { path } => write!(
                formatter,
                "{REQUIREPASS_FLAG} {}: the password holds a line break, which no client \
                 of the line protocol could send; put it on one line",
                path.display()
            ),
            SettingsError::Random(error) => {
                write!(formatter, "no random bytes for the password check: {error}")
            }
        }
    }
}

impl std::error::Error for SettingsError {}

impl Settings {
    /// Reads the files `cluster_secret_file`, `requirepass_file` and the
    /// TLS flags name.
    pub fn load(
        cluster_secret_file: Option<&Path>,
        requirepass_file: Option<&Path>,
        tls_flags: Option<&TlsFlags>,
    ) -> Result<Settings, SettingsError> {
        let cluster_key = match cluster_secret_file {
            Some(path) => read_cluster_key(path)?,
            None => ClusterKey::unauthenticated(),
        };
        let password = match requirepass_file {
            Some(path) => {
                let password =
                    read_secret_file(path, REQUIREPASS_FLAG, 1).map_err(SettingsError::File)?;
                if password.iter().any(|byte| matches!(byte, b'\n' | b'\r')) {
                    let path = path.to_path_buf();
                    return Err(SettingsError::PasswordWithLineBreak { path });
                }
                Some(PasswordCheck::new(&password).map_err(SettingsError::Random)?)
            }
            None => None,
        };
        let tls = tls_flags.map(load_tls).transpose()?;
        Ok(Settings {
            cluster_key,
            password,
            tls,
        })
    }
}

/// The server side, with client certificates asked for when there is a CA
/// (required with `--tls-client-auth`; otherwise only peers must present
/// one, which the reactor checks), and the peer-dialing side.
fn load_tls(flags: &TlsFlags) -> Result<TlsSettings, SettingsError> {
    let files = TlsFiles {
        cert: flags.cert_file.clone(),
        key: flags.key_file.clone(),
        ca: flags.ca_file.clone(),
    };
    let client_auth = match (&flags.ca_file, flags.client_auth) {
        (None, _) => ClientAuth::None,
        (Some(_), false) => ClientAuth::Optional,
        (Some(_), true) => ClientAuth::Required,
    };
    let server = tls::server_config(&files, client_auth).map_err(SettingsError::Tls)?;
    let peer_client = match &flags.ca_file {
        Some(ca) => {
            let identity = Some((flags.cert_file.as_path(), flags.key_file.as_path()));
            Some(tls::client_config(ca, identity).map_err(SettingsError::Tls)?)
        }
        None => None,
    };
    Ok(TlsSettings {
        server,
        peer_client,
    })
}

/// The secrets of a cluster secret file, one per line.
fn read_cluster_key(path: &Path) -> Result<ClusterKey, SettingsError> {
    let bytes = read_secret_file(path, CLUSTER_SECRET_FLAG, MIN_CLUSTER_SECRET_BYTES)
        .map_err(SettingsError::File)?;
    let bad = |reason: String| SettingsError::BadSecretLines {
        path: path.to_path_buf(),
        reason,
    };
    let mut secrets: Vec<Vec<u8>> = bytes
        .split(|byte| *byte == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line).to_vec())
        .collect();
    if secrets.len() > MAX_CLUSTER_SECRETS {
        return Err(bad(format!("{} lines", secrets.len())));
    }
    for (number, secret) in secrets.iter().enumerate() {
        if secret.len() < MIN_CLUSTER_SECRET_BYTES {
            return Err(bad(format!(
                "line {} holds {} bytes",
                number + 1,
                secret.len()
            )));
        }
    }
    let current = secrets.remove(0);
    Ok(match secrets.pop() {
        Some(previous) => ClusterKey::rotating(current, previous),
        None => ClusterKey::new(current),
    })
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn secret_file(contents: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cluster.secret");
        fs::write(&path, contents).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        (dir, path)
    }

    #[test]
    fn no_files_means_no_secret_and_no_password() {
        let settings = Settings::load(None, None, None).unwrap();
        assert!(!settings.cluster_key.is_authenticated());
        assert!(settings.password.is_none());
    }

    #[test]
    fn one_or_two_secrets_are_read() {
        let (_dir, path) = secret_file(&format!("{SECRET}\n"));
        let settings = Settings::load(Some(&path), None, None).unwrap();
        assert!(settings.cluster_key.is_authenticated());
        let (_dir, path) = secret_file(&format!("{SECRET}\r\n{SECRET}-old\n"));
        let settings = Settings::load(Some(&path), None, None).unwrap();
        assert!(settings.cluster_key.is_authenticated());
    }

    #[test]
    fn three_secrets_or_a_short_line_are_refused_naming_the_file() {
        let (_dir, path) = secret_file(&format!("{SECRET}\n{SECRET}\n{SECRET}\n"));
        let error = Settings::load(Some(&path), None, None)
            .unwrap_err()
            .to_string();
        assert!(error.contains("3 lines"), "{error}");
        assert!(error.contains(&path.display().to_string()), "{error}");
        let (_dir, path) = secret_file(&format!("{SECRET}\nshort\n"));
        let error = Settings::load(Some(&path), None, None)
            .unwrap_err()
            .to_string();
        assert!(error.contains("line 2 holds 5 bytes"), "{error}");
        let (_dir, path) = secret_file(&format!("\n{SECRET}\n"));
        let error = Settings::load(Some(&path), None, None)
            .unwrap_err()
            .to_string();
        assert!(error.contains("line 1 holds 0 bytes"), "{error}");
    }

    #[test]
    fn the_password_file_is_read_and_checked() {
        let (_dir, path) = secret_file("hunter2\n");
        let settings = Settings::load(None, Some(&path), None).unwrap();
        let check = settings.password.expect("a password is required");
        assert!(check.matches(b"hunter2"));
        assert!(!check.matches(b"hunter2\n"));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let error = Settings::load(None, Some(&path), None)
            .unwrap_err()
            .to_string();
        assert!(error.contains(REQUIREPASS_FLAG), "{error}");
        let (_dir, path) = secret_file("two\nlines\n");
        let error = Settings::load(None, Some(&path), None).unwrap_err();
        assert!(error.to_string().contains("line break"), "{error}");
    }
}
