//! Checking a client's password against the configured one.
//!
//! [`PasswordCheck`] keeps no copy of the password: at construction it draws
//! a random key and keeps only the HMAC of the password under that key. A
//! candidate is checked by computing its HMAC under the same key and
//! comparing the two with the constant-time `verify_slice`, so neither the
//! time a comparison takes nor the candidate's length tells a client how
//! close it came or how long the password is.
//!
//! This module never prints, logs or returns anything derived from the
//! password; how long to make a wrong guess wait is the reactor's business,
//! with [`WRONG_PASSWORD_DELAY_MS`].

use std::fmt;
use std::io;

use hmac::Mac as _;

use super::{fill_random, keyed_mac};

/// The reactor delays its reply to a wrong password by this long, so that a
/// client guessing over one connection tries at most ten passwords a second.
pub const WRONG_PASSWORD_DELAY_MS: u64 = 100;

/// Bytes of the random key a check draws at construction.
const CHECK_KEY_BYTES: usize = 32;

/// Bytes of an HMAC-SHA256.
const DIGEST_BYTES: usize = 32;

/// The configured password, kept only as its HMAC under a random key.
///
/// Its `Debug` shows nothing of either.
pub struct PasswordCheck {
    key: [u8; CHECK_KEY_BYTES],
    expected: [u8; DIGEST_BYTES],
}

impl PasswordCheck {
    /// A check for `password` (as read by
    /// `security::secret_file::read_secret_file`). Fails only if the
    /// operating system cannot supply random bytes for the key.
    pub fn new(password: &[u8]) -> io::Result<PasswordCheck> {
        let mut key = [0; CHECK_KEY_BYTES];
        fill_random(&mut key)?;
        let mut mac = keyed_mac(&key);
        mac.update(password);
        let expected = mac.finalize().into_bytes().into();
        Ok(PasswordCheck { key, expected })
    }

    /// Whether `candidate` is the password, compared in constant time.
    pub fn matches(&self, candidate: &[u8]) -> bool {
        let mut mac = keyed_mac(&self.key);
        mac.update(candidate);
        mac.verify_slice(&self.expected).is_ok()
    }
}

impl fmt::Debug for PasswordCheck {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("PasswordCheck")
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWORD: &[u8] = b"correct horse battery staple";

    fn check() -> PasswordCheck {
        PasswordCheck::new(PASSWORD).expect("the OS has random bytes")
    }

    #[test]
    fn the_right_password_matches() {
        assert!(check().matches(PASSWORD));
    }

    #[test]
    fn a_wrong_password_does_not_match() {
        let check = check();
        assert!(!check.matches(b"correct horse battery staplE"));
        assert!(!check.matches(b"Correct horse battery staple"));
        assert!(!check.matches(b"something else entirely"));
    }

    #[test]
    fn a_prefix_does_not_match() {
        let check = check();
        for length in 0..PASSWORD.len() {
            assert!(
                !check.matches(&PASSWORD[..length]),
                "prefix of {length} bytes"
            );
        }
    }

    #[test]
    fn a_longer_candidate_does_not_match() {
        let check = check();
        for suffix in [&b"\n"[..], b"\0", b" ", b"staple"] {
            assert!(
                !check.matches(&[PASSWORD, suffix].concat()),
                "suffix {suffix:?}"
            );
        }
    }

    #[test]
    fn an_empty_candidate_does_not_match() {
        assert!(!check().matches(b""));
    }

    #[test]
    fn each_check_draws_its_own_key() {
        let (first, second) = (check(), check());
        assert_ne!(first.key, second.key);
        assert_ne!(first.expected, second.expected);
        assert!(first.matches(PASSWORD) && second.matches(PASSWORD));
    }

    #[test]
    fn debug_shows_nothing_secret() {
        assert_eq!(format!("{:?}", check()), "PasswordCheck { .. }");
    }
}
