//! Reading a secret (the cluster secret, a client password) from a file.
//!
//! Secrets come from files rather than flags, since a flag's value shows in
//! `ps` and in shell history. [`read_secret_file`] refuses a file that every
//! user can read, one too large to be a secret, and one empty or too short,
//! each with an error that names the file and the flag that pointed at it
//! and says what to do. It strips the trailing line break an editor or
//! `echo` leaves, and nothing else.
//!
//! This module reads the one file it is given and never writes; no error
//! carries or prints a secret's bytes, only their count.

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// A secret file larger than this is refused: it is not a secret but some
/// other file the flag points at by mistake.
pub const MAX_SECRET_FILE_BYTES: u64 = 4096;

/// The shortest cluster secret accepted: 256 bits if random bytes, and
/// `openssl rand -hex 32` (64 hex digits) passes with room.
pub const MIN_CLUSTER_SECRET_BYTES: usize = 32;

/// The "others may read" bit of a Unix mode.
const WORLD_READABLE_MODE: u32 = 0o004;

/// The permission bits of a Unix mode, as `chmod` and `ls -l` show them.
const PERMISSION_BITS_MODE: u32 = 0o777;

/// Why a secret file was refused. Each names the file and the flag.
#[derive(Debug)]
pub enum SecretFileError {
    /// Missing, a directory, or not readable by this process.
    Unreadable {
        path: PathBuf,
        flag: &'static str,
        error: io::Error,
    },
    /// Every user of the machine may read it.
    WorldReadable {
        path: PathBuf,
        flag: &'static str,
        mode: u32,
    },
    /// More than [`MAX_SECRET_FILE_BYTES`].
    TooLarge {
        path: PathBuf,
        flag: &'static str,
        file_bytes: u64,
    },
    /// Nothing but line breaks, or nothing at all.
    Empty { path: PathBuf, flag: &'static str },
    /// Fewer than the `min_bytes` asked for, line break stripped.
    TooShort {
        path: PathBuf,
        flag: &'static str,
        secret_bytes: usize,
        min_bytes: usize,
    },
}

impl fmt::Display for SecretFileError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretFileError::Unreadable { path, flag, error } => write!(
                formatter,
                "cannot read {flag} {}: {error}; check the path, and that the user \
                 running kvstore may read the file",
                path.display()
            ),
            SecretFileError::WorldReadable { path, flag, mode } => write!(
                formatter,
                "{flag} {path} is readable by every user of this machine (mode {mode:03o}); \
                 restrict it with `chmod 600 {path}`",
                path = path.display()
            ),
            SecretFileError::TooLarge {
                path,
                flag,
                file_bytes,
            } => write!(
                formatter,
                "{flag} {} is {file_bytes} bytes, more than the {MAX_SECRET_FILE_BYTES} a \
                 secret file may hold; point {flag} at a file that holds only the secret",
                path.display()
            ),
            SecretFileError::Empty { path, flag } => write!(
                formatter,
                "{flag} {path} is empty; write a secret into it, e.g. \
                 `(umask 077; openssl rand -hex 32 > {path})`",
                path = path.display()
            ),
            SecretFileError::TooShort {
                path,
                flag,
                secret_bytes,
                min_bytes,
            } => write!(
                formatter,
                "{flag} {path} holds a secret of {secret_bytes} bytes, fewer than the \
                 {min_bytes} needed; write a longer one, e.g. \
                 `(umask 077; openssl rand -hex 32 > {path})`",
                path = path.display()
            ),
        }
    }
}

impl std::error::Error for SecretFileError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SecretFileError::Unreadable { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// Reads the secret in the file at `path`, which the flag `flag` named,
/// without its trailing `\n`/`\r` characters; refuses the file (see
/// [`SecretFileError`]) if every user may read it, if it is larger than
/// [`MAX_SECRET_FILE_BYTES`], or if the secret is empty or shorter than
/// `min_bytes`.
pub fn read_secret_file(
    path: &Path,
    flag: &'static str,
    min_bytes: usize,
) -> Result<Vec<u8>, SecretFileError> {
    let unreadable = |error| SecretFileError::Unreadable {
        path: path.to_path_buf(),
        flag,
        error,
    };
    let file = File::open(path).map_err(unreadable)?;
    // The checks look at the file opened, not at the path again, so the
    // file cannot be swapped between the check and the read.
    let metadata = file.metadata().map_err(unreadable)?;
    if metadata.is_dir() {
        let error = io::Error::new(io::ErrorKind::IsADirectory, "it is a directory");
        return Err(unreadable(error));
    }
    let mode = metadata.permissions().mode();
    if mode & WORLD_READABLE_MODE != 0 {
        return Err(SecretFileError::WorldReadable {
            path: path.to_path_buf(),
            flag,
            mode: mode & PERMISSION_BITS_MODE,
        });
    }
    let mut secret = read_bounded(file, path, flag)?;
    secret.truncate(without_line_breaks(&secret).len());
    check_length(secret, path, flag, min_bytes)
}

/// Reads at most one byte past [`MAX_SECRET_FILE_BYTES`], so that a file
/// that grows, or a pipe with no end, is refused without being swallowed.
fn read_bounded(file: File, path: &Path, flag: &'static str) -> Result<Vec<u8>, SecretFileError> {
    let mut contents = Vec::new();
    file.take(MAX_SECRET_FILE_BYTES + 1)
        .read_to_end(&mut contents)
        .map_err(|error| SecretFileError::Unreadable {
            path: path.to_path_buf(),
            flag,
            error,
        })?;
    let file_bytes = u64::try_from(contents.len()).expect("a usize fits in u64");
    if file_bytes > MAX_SECRET_FILE_BYTES {
        return Err(SecretFileError::TooLarge {
            path: path.to_path_buf(),
            flag,
            file_bytes,
        });
    }
    Ok(contents)
}

/// `contents` without the `\n` and `\r` characters at its end.
fn without_line_breaks(contents: &[u8]) -> &[u8] {
    let kept = contents
        .iter()
        .rposition(|&byte| byte != b'\n' && byte != b'\r')
        .map_or(0, |last| last + 1);
    &contents[..kept]
}

fn check_length(
    secret: Vec<u8>,
    path: &Path,
    flag: &'static str,
    min_bytes: usize,
) -> Result<Vec<u8>, SecretFileError> {
    let path = path.to_path_buf();
    if secret.is_empty() {
        return Err(SecretFileError::Empty { path, flag });
    }
    if secret.len() < min_bytes {
        return Err(SecretFileError::TooShort {
            path,
            flag,
            secret_bytes: secret.len(),
            min_bytes,
        });
    }
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use std::fs::{self, Permissions};
    use std::io::Write as _;

    use tempfile::NamedTempFile;

    use super::*;

    const FLAG: &str = "--cluster-secret-file";

    /// A 64-byte secret, as `openssl rand -hex 32` writes it (without `\n`).
    const HEX_SECRET: &[u8] = b"3f2a9c0d81b7e6f5a4c3b2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1";

    /// A file holding `contents`, with permission bits `mode`.
    fn secret_file(contents: &[u8], mode: u32) -> NamedTempFile {
        let mut file = NamedTempFile::new().expect("a temporary file");
        file.write_all(contents).expect("write the secret");
        fs::set_permissions(file.path(), Permissions::from_mode(mode)).expect("chmod");
        file
    }

    fn read(file: &NamedTempFile, min_bytes: usize) -> Result<Vec<u8>, SecretFileError> {
        read_secret_file(file.path(), FLAG, min_bytes)
    }

    /// Asserts that `error`'s message names the file and the flag and
    /// includes `advice`.
    fn assert_names_file_and_flag(error: &SecretFileError, path: &Path, advice: &str) {
        let message = error.to_string();
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(message.contains(FLAG), "{message}");
        assert!(message.contains(advice), "{message}");
    }

    #[test]
    fn a_good_secret_is_read_without_its_line_break() {
        let endings: [&[u8]; 5] = [b"", b"\n", b"\r\n", b"\n\n", b"\r\n\r\n"];
        for ending in endings {
            let file = secret_file(&[HEX_SECRET, ending].concat(), 0o600);
            let secret = read(&file, MIN_CLUSTER_SECRET_BYTES).unwrap();
            assert_eq!(secret, HEX_SECRET, "ending {ending:?}");
        }
    }

    #[test]
    fn only_line_breaks_are_stripped() {
        let contents = b" two\nlines and spaces \t";
        let file = secret_file(&[&contents[..], b"\n"].concat(), 0o600);
        assert_eq!(read(&file, 1).unwrap(), contents);
    }

    #[test]
    fn owner_and_group_may_read() {
        for mode in [0o400, 0o600, 0o640, 0o660] {
            let file = secret_file(HEX_SECRET, mode);
            assert_eq!(
                read(&file, MIN_CLUSTER_SECRET_BYTES).unwrap(),
                HEX_SECRET,
                "{mode:o}"
            );
        }
    }

    #[test]
    fn a_world_readable_file_is_refused() {
        for mode in [0o604, 0o644, 0o666] {
            let file = secret_file(HEX_SECRET, mode);
            let error = read(&file, MIN_CLUSTER_SECRET_BYTES).unwrap_err();
            assert!(
                matches!(error, SecretFileError::WorldReadable { mode: refused, .. } if refused == mode),
                "{error:?}"
            );
            let advice = format!("chmod 600 {}", file.path().display());
            assert_names_file_and_flag(&error, file.path(), &advice);
            assert!(error.to_string().contains(&format!("mode {mode:03o}")));
        }
    }

    #[test]
    fn a_missing_file_is_unreadable() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("no-such-secret");
        let error = read_secret_file(&path, FLAG, MIN_CLUSTER_SECRET_BYTES).unwrap_err();
        let SecretFileError::Unreadable { error: cause, .. } = &error else {
            panic!("{error:?}");
        };
        assert_eq!(cause.kind(), io::ErrorKind::NotFound);
        assert_names_file_and_flag(&error, &path, "check the path");
    }

    #[test]
    fn a_directory_is_unreadable() {
        let directory = tempfile::tempdir().unwrap();
        let error = read_secret_file(directory.path(), FLAG, 1).unwrap_err();
        assert!(
            matches!(&error, SecretFileError::Unreadable { error, .. }
                if error.kind() == io::ErrorKind::IsADirectory),
            "{error:?}"
        );
        assert_names_file_and_flag(&error, directory.path(), "is a directory");
    }

    #[test]
    fn a_file_past_the_limit_is_too_large() {
        let limit = usize::try_from(MAX_SECRET_FILE_BYTES).unwrap();
        let largest = secret_file(&vec![b'k'; limit], 0o600);
        assert_eq!(
            read(&largest, MIN_CLUSTER_SECRET_BYTES).unwrap().len(),
            limit
        );
        let file = secret_file(&vec![b'k'; limit + 1], 0o600);
        let error = read(&file, MIN_CLUSTER_SECRET_BYTES).unwrap_err();
        assert!(
            matches!(
                error,
                SecretFileError::TooLarge {
                    file_bytes: 4097,
                    ..
                }
            ),
            "{error:?}"
        );
        assert_names_file_and_flag(&error, file.path(), "more than the 4096");
    }

    #[test]
    fn an_empty_file_is_refused() {
        for contents in [&b""[..], b"\n", b"\r\n\n"] {
            let file = secret_file(contents, 0o600);
            let error = read(&file, MIN_CLUSTER_SECRET_BYTES).unwrap_err();
            assert!(matches!(error, SecretFileError::Empty { .. }), "{error:?}");
            assert_names_file_and_flag(&error, file.path(), "openssl rand -hex 32 >");
            // Even when no length is asked for, a secret is never empty.
            assert!(matches!(read(&file, 0), Err(SecretFileError::Empty { .. })));
        }
    }

    #[test]
    fn a_short_secret_says_how_short() {
        let shortest = secret_file(&HEX_SECRET[..MIN_CLUSTER_SECRET_BYTES], 0o600);
        assert_eq!(read(&shortest, MIN_CLUSTER_SECRET_BYTES).unwrap().len(), 32);
        let file = secret_file(&[&HEX_SECRET[..31], b"\n"].concat(), 0o600);
        let error = read(&file, MIN_CLUSTER_SECRET_BYTES).unwrap_err();
        assert!(
            matches!(
                error,
                SecretFileError::TooShort {
                    secret_bytes: 31,
                    min_bytes: 32,
                    ..
                }
            ),
            "{error:?}"
        );
        assert_names_file_and_flag(&error, file.path(), "31 bytes, fewer than the 32 needed");
        assert_names_file_and_flag(&error, file.path(), "openssl rand -hex 32 >");
    }
}
