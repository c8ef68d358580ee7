//! Who may talk to this server, and how they prove it.
//!
//! Pure building blocks the reactor uses; none of them touches a socket:
//! the peers' mutual challenge-response handshake over a shared cluster
//! secret, the files secrets and passwords are read from, client password
//! checks, and TLS configuration. See `docs/SECURITY.md` for the threat
//! model.
//!
//! - [`handshake`]: the peer handshake lines, their proofs and deadlines;
//!   time comes in as `now_ms` arguments, never from a clock read here.
//! - [`secret_file`]: reading a secret from a file the operator protected.
//! - [`password`]: checking a client's password in constant time.
//! - [`settings`]: what a server starts with, read from the files its
//!   flags name.
//! - [`tls`]: TLS settings for clients and peers, from PEM files.
//!
//! Every MAC here is RustCrypto's HMAC-SHA256 and every MAC comparison goes
//! through its constant-time `verify_slice`; this module never compares
//! secret-derived bytes with `==` and never implements a primitive itself.

pub mod handshake;
pub mod password;
pub mod secret_file;
pub mod settings;
#[cfg(test)]
pub(crate) mod testing;
pub mod tls;

use std::io;

use hmac::{Hmac, KeyInit as _};
use sha2::Sha256;

/// The one MAC of this module.
type HmacSha256 = Hmac<Sha256>;

/// An HMAC-SHA256 keyed with `key`, ready for `update`.
fn keyed_mac(key: &[u8]) -> HmacSha256 {
    // HMAC hashes a key longer than a block and pads a shorter one, so every
    // length (the empty key included) is accepted.
    HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length")
}

/// Fills `bytes` from the operating system's CSPRNG.
fn fill_random(bytes: &mut [u8]) -> io::Result<()> {
    getrandom::fill(bytes).map_err(|error| match error.raw_os_error() {
        Some(code) => io::Error::from_raw_os_error(code),
        None => io::Error::other(format!("the OS random number generator failed: {error}")),
    })
}
