//! Who may talk to this server, and how they prove it.
//!
//! Pure building blocks the reactor uses; none of them touches a socket:
//! the peers' mutual challenge-response handshake over a shared cluster
//! secret, the files secrets and passwords are read from, client password
//! checks, and TLS configuration. See `docs/SECURITY.md` for the threat
//! model.

#[cfg(test)]
pub(crate) mod testing;
pub mod tls;
