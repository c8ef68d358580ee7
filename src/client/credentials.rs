//! What the client tools present to a server, from their flags, files and
//! environment: TLS settings (the CA to verify servers against, an optional
//! client certificate) and a password.
//!
//! `kvstore-client` and `kvstore-bench` both flatten [`CredentialArgs`], so
//! the flags are spelled and checked alike. Every file is read, and every
//! mistake reported with the flag at fault, before any connection is made.
//! This module never opens a connection and never prints a password.
//!
//! The password comes from `--password-file` or, failing that, from the
//! `KVSTORE_AUTH` environment variable (as `redis-cli` takes
//! `REDISCLI_AUTH`): unlike a flag, neither shows in `ps`. A password file
//! that every user may read is refused, as the server refuses its own.

use std::ffi::OsString;
use std::fmt;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Args;
use rustls::ClientConfig;

use super::validate_password;
use crate::security::secret_file::{SecretFileError, read_secret_file};
use crate::security::tls::{self, TlsError};

/// The environment variable a password is taken from without `--password-file`.
pub const PASSWORD_ENVIRONMENT_VARIABLE: &str = "KVSTORE_AUTH";
/// The longest password accepted, in bytes.
pub const MAX_PASSWORD_BYTES: usize = 4096;

/// The TLS and password flags shared by the client tools.
#[derive(Debug, Clone, Default, Args)]
pub struct CredentialArgs {
    /// Speak TLS. Servers are verified against --tls-ca-file only (never
    /// the system's roots), so that flag is needed too.
    #[arg(long)]
    pub tls: bool,
    /// PEM file of the CA that signed the servers' certificates; implies --tls.
    #[arg(long, value_name = "PATH")]
    pub tls_ca_file: Option<PathBuf>,
    /// PEM client certificate to present when a server asks for one
    /// (with --tls-key-file); implies --tls.
    #[arg(long, value_name = "PATH", requires = "tls_key_file")]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of --tls-cert-file.
    #[arg(long, value_name = "PATH", requires = "tls_cert_file")]
    pub tls_key_file: Option<PathBuf>,
    /// File holding the password, sent as `AUTH <password>` first on every
    /// connection; one trailing newline is ignored, and a file every user
    /// may read is refused. Without this flag the KVSTORE_AUTH environment
    /// variable, if set, holds the password.
    #[arg(long, value_name = "PATH")]
    pub password_file: Option<PathBuf>,
}

/// What a client presents: TLS settings and a password, each optional.
#[derive(Clone, Default)]
pub struct Credentials {
    pub tls: Option<Arc<ClientConfig>>,
    pub password: Option<Vec<u8>>,
}

impl fmt::Debug for Credentials {
    /// Whether each is there; never the password.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Credentials")
            .field("tls", &self.tls.is_some())
            .field("password", &self.password.as_ref().map(|_| "<hidden>"))
            .finish()
    }
}

/// Where a password came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordSource {
    File(PathBuf),
    Environment,
}

impl fmt::Display for PasswordSource {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PasswordSource::File(path) => {
                write!(
                    formatter,
                    "the password file (--password-file) {}",
                    path.display()
                )
            }
            PasswordSource::Environment => write!(
                formatter,
                "the {PASSWORD_ENVIRONMENT_VARIABLE} environment variable"
            ),
        }
    }
}

/// Why the credentials flags could not be honoured.
#[derive(Debug)]
pub enum CredentialsError {
    /// TLS was asked for without `--tls-ca-file`.
    CaRequired,
    /// A TLS file is missing, unreadable or wrong.
    Tls(TlsError),
    /// The password file is unreadable, readable by every user, too large
    /// or empty (the same checks as the server's secret files).
    PasswordFile(SecretFileError),
    /// The password is longer than [`MAX_PASSWORD_BYTES`].
    PasswordTooLong { source: PasswordSource },
    /// The password cannot be sent as one line.
    InvalidPassword {
        source: PasswordSource,
        reason: &'static str,
    },
}

impl fmt::Display for CredentialsError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CredentialsError::CaRequired => write!(
                formatter,
                "--tls and --tls-cert-file need --tls-ca-file: servers are verified against \
                 that CA only, never the system's roots"
            ),
            CredentialsError::Tls(error) => write!(formatter, "{error}"),
            CredentialsError::PasswordFile(error) => write!(formatter, "{error}"),
            CredentialsError::PasswordTooLong { source } => write!(
                formatter,
                "the password in {source} is longer than {MAX_PASSWORD_BYTES} bytes"
            ),
            CredentialsError::InvalidPassword { source, reason } => {
                write!(
                    formatter,
                    "the password in {source} cannot be used: {reason}"
                )
            }
        }
    }
}

impl std::error::Error for CredentialsError {}

impl From<TlsError> for CredentialsError {
    fn from(error: TlsError) -> CredentialsError {
        CredentialsError::Tls(error)
    }
}

impl CredentialArgs {
    /// Reads every file the flags name, and `KVSTORE_AUTH` if no password
    /// file is given.
    pub fn load(&self) -> Result<Credentials, CredentialsError> {
        self.load_with(std::env::var_os(PASSWORD_ENVIRONMENT_VARIABLE))
    }

    /// [`CredentialArgs::load`] with the environment variable's value given.
    pub fn load_with(
        &self,
        environment_password: Option<OsString>,
    ) -> Result<Credentials, CredentialsError> {
        let password = match (&self.password_file, environment_password) {
            (Some(path), _) => Some(read_password_file(path)?),
            (None, Some(value)) if !value.is_empty() => Some(checked_password(
                value.into_vec(),
                PasswordSource::Environment,
            )?),
            (None, _) => None,
        };
        Ok(Credentials {
            tls: self.tls_config()?,
            password,
        })
    }

    /// TLS settings when any TLS flag is given.
    fn tls_config(&self) -> Result<Option<Arc<ClientConfig>>, CredentialsError> {
        let wanted = self.tls || self.tls_ca_file.is_some() || self.tls_cert_file.is_some();
        if !wanted {
            return Ok(None);
        }
        let ca = self
            .tls_ca_file
            .as_deref()
            .ok_or(CredentialsError::CaRequired)?;
        let identity = match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(cert), Some(key)) => Some((cert.as_path(), key.as_path())),
            _ => None,
        };
        Ok(Some(tls::client_config(ca, identity)?))
    }
}

/// The password in `path`, without its trailing line breaks, read with
/// the checks the server applies to its own secret files (refused if every
/// user may read it, if empty, or if larger than a secret file may be).
pub fn read_password_file(path: &Path) -> Result<Vec<u8>, CredentialsError> {
    let password =
        read_secret_file(path, "--password-file", 1).map_err(CredentialsError::PasswordFile)?;
    checked_password(password, PasswordSource::File(path.to_owned()))
}

fn checked_password(
    password: Vec<u8>,
    source: PasswordSource,
) -> Result<Vec<u8>, CredentialsError> {
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(CredentialsError::PasswordTooLong { source });
    }
    validate_password(&password)
        .map_err(|reason| CredentialsError::InvalidPassword { source, reason })?;
    Ok(password)
}

#[cfg(test)]
mod tests {
    use std::fs::Permissions;
    use std::os::unix::fs::PermissionsExt;

    use clap::Parser;

    use super::*;
    use crate::security::testing::TestPki;

    #[derive(Parser)]
    struct Tool {
        #[command(flatten)]
        credentials: CredentialArgs,
    }

    fn parse(arguments: &[&str]) -> Result<CredentialArgs, clap::Error> {
        let all = std::iter::once("tool").chain(arguments.iter().copied());
        Tool::try_parse_from(all).map(|tool| tool.credentials)
    }

    fn password_file(directory: &Path, contents: &[u8], mode: u32) -> PathBuf {
        let path = directory.join(format!("password-{mode:o}-{}", contents.len()));
        std::fs::write(&path, contents).unwrap();
        std::fs::set_permissions(&path, Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn a_password_file_loses_its_trailing_newlines() {
        let directory = tempfile::tempdir().unwrap();
        for (contents, expected) in [
            (&b"secret\n"[..], &b"secret"[..]),
            (b"secret\r\n", b"secret"),
            (b"secret", b"secret"),
            (b"two words\n", b"two words"),
            (b"secret\n\n", b"secret"),
        ] {
            let path = password_file(directory.path(), contents, 0o600);
            assert_eq!(read_password_file(&path).unwrap(), expected);
        }
    }

    #[test]
    fn a_password_file_every_user_may_read_is_refused() {
        let directory = tempfile::tempdir().unwrap();
        let path = password_file(directory.path(), b"secret\n", 0o644);
        let error = read_password_file(&path).unwrap_err();
        assert!(
            matches!(
                &error,
                CredentialsError::PasswordFile(SecretFileError::WorldReadable { mode, .. })
                    if mode & 0o777 == 0o644
            ),
            "{error}"
        );
        let message = error.to_string();
        assert!(message.contains("--password-file"), "{message}");
        assert!(message.contains("644"), "{message}");
        let group_only = password_file(directory.path(), b"secret\n", 0o640);
        assert!(read_password_file(&group_only).is_ok());
    }

    #[test]
    fn bad_password_files_are_refused_naming_the_file() {
        let directory = tempfile::tempdir().unwrap();
        let missing = directory.path().join("missing");
        assert!(matches!(
            read_password_file(&missing),
            Err(CredentialsError::PasswordFile(SecretFileError::Unreadable { path, .. }))
                if path == missing
        ));
        for contents in [&b"\n"[..], b""] {
            let path = password_file(directory.path(), contents, 0o600);
            let error = read_password_file(&path).unwrap_err();
            assert!(
                matches!(
                    error,
                    CredentialsError::PasswordFile(SecretFileError::Empty { .. })
                ),
                "{error}"
            );
            assert!(error.to_string().contains(&path.display().to_string()));
        }
        let path = password_file(directory.path(), b"two\nlines\n", 0o600);
        let error = read_password_file(&path).unwrap_err();
        assert!(
            matches!(error, CredentialsError::InvalidPassword { .. }),
            "{error}"
        );
        assert!(error.to_string().contains(&path.display().to_string()));
        let long = vec![b'x'; MAX_PASSWORD_BYTES + 1];
        let path = password_file(directory.path(), &long, 0o600);
        assert!(matches!(
            read_password_file(&path),
            Err(CredentialsError::PasswordFile(
                SecretFileError::TooLarge { .. }
            ))
        ));
        let longest = vec![b'x'; MAX_PASSWORD_BYTES];
        let path = password_file(directory.path(), &longest, 0o600);
        assert_eq!(read_password_file(&path).unwrap(), longest);
    }

    #[test]
    fn the_password_file_wins_over_the_environment() {
        let directory = tempfile::tempdir().unwrap();
        let path = password_file(directory.path(), b"from file\n", 0o600);
        let file_flag = parse(&["--password-file", path.to_str().unwrap()]).unwrap();
        let environment = Some(OsString::from("from environment"));
        let loaded = file_flag.load_with(environment.clone()).unwrap();
        assert_eq!(loaded.password.as_deref(), Some(&b"from file"[..]));

        let no_flag = parse(&[]).unwrap();
        let loaded = no_flag.load_with(environment).unwrap();
        assert_eq!(loaded.password.as_deref(), Some(&b"from environment"[..]));
        assert!(
            no_flag
                .load_with(Some(OsString::new()))
                .unwrap()
                .password
                .is_none()
        );
        let loaded = no_flag.load_with(None).unwrap();
        assert!(loaded.password.is_none() && loaded.tls.is_none());
        let error = no_flag.load_with(Some(OsString::from("a\nb"))).unwrap_err();
        assert!(
            error.to_string().contains(PASSWORD_ENVIRONMENT_VARIABLE),
            "{error}"
        );
    }

    #[test]
    fn tls_flags_need_a_ca_and_a_key_with_a_certificate() {
        let pki = TestPki::generate();
        let ca = pki.ca.to_str().unwrap();
        let (cert, key) = (
            pki.client.cert.to_str().unwrap(),
            pki.client.key.to_str().unwrap(),
        );
        for tls_without_ca in [
            &["--tls"][..],
            &["--tls-cert-file", cert, "--tls-key-file", key],
        ] {
            let error = parse(tls_without_ca).unwrap().load_with(None).unwrap_err();
            assert!(matches!(error, CredentialsError::CaRequired), "{error}");
        }
        assert!(parse(&["--tls-cert-file", cert]).is_err());
        assert!(parse(&["--tls-key-file", key]).is_err());
        for with_ca in [
            &["--tls-ca-file", ca][..],
            &["--tls", "--tls-ca-file", ca],
            &[
                "--tls-ca-file",
                ca,
                "--tls-cert-file",
                cert,
                "--tls-key-file",
                key,
            ],
        ] {
            let loaded = parse(with_ca).unwrap().load_with(None).unwrap();
            assert!(loaded.tls.is_some(), "{with_ca:?}");
        }
        let mismatched = [
            "--tls-ca-file",
            ca,
            "--tls-cert-file",
            cert,
            "--tls-key-file",
        ];
        let node_key = pki.node.key.to_str().unwrap();
        let error = parse(&[&mismatched[..], &[node_key]].concat())
            .unwrap()
            .load_with(None)
            .unwrap_err();
        assert!(
            matches!(error, CredentialsError::Tls(TlsError::KeyMismatch { .. })),
            "{error}"
        );
    }

    #[test]
    fn credentials_never_show_the_password() {
        let credentials = Credentials {
            tls: None,
            password: Some(b"hunter2".to_vec()),
        };
        let shown = format!("{credentials:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}
