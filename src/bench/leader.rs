//! Finding the leader before the run, with the blocking [`Client`].
//!
//! One probe request goes to `--addr`: a PUT of the first key when the run
//! writes, else a GET (which a follower redirects only under
//! `--follower-reads redirect`). The client follows `NOT_LEADER <id>
//! <host:port>` and backs off on `NOT_LEADER -1`, within
//! [`LEADER_SEARCH_RETRIES`]; the address that finally answered is where
//! the load goes. During the run itself a `NOT_LEADER` is an error, never a
//! reason to resend.

use std::time::Duration;

use crate::client::credentials::Credentials;
use crate::client::{Client, ClientOptions};

use super::BenchError;
use super::wire::{Protocol, RequestEncoder};
use super::workload::{Key, Operation};

/// Redirects, leaderless retries and reconnects the probe may use.
pub const LEADER_SEARCH_RETRIES: u32 = 20;
/// Bound on connecting and on each probe reply.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the probe was answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leader {
    pub address: String,
    /// Whether a `NOT_LEADER` moved the probe away from `--addr`.
    pub redirected: bool,
}

/// Sends the probe to `address` and follows redirects to the leader, over
/// TLS and with a password as `credentials` say.
pub fn find_leader(
    address: &str,
    operation: Operation,
    value_size: usize,
    credentials: &Credentials,
) -> Result<Leader, BenchError> {
    let options = ClientOptions {
        timeout: PROBE_TIMEOUT,
        max_redirects: LEADER_SEARCH_RETRIES,
        tls: credentials.tls.clone(),
        password: credentials.password.clone(),
        ..ClientOptions::default()
    };
    let leader_error = |source| BenchError::Leader {
        address: address.to_owned(),
        source,
    };
    let mut client = Client::connect(address, options).map_err(leader_error)?;
    let reply = client
        .execute(&probe_line(operation, value_size))
        .map_err(leader_error)?;
    if reply == b"ERR" || reply.starts_with(b"ERR ") {
        return Err(BenchError::ProbeRefused {
            address: client.addr().to_owned(),
            reply: reply.escape_ascii().to_string(),
        });
    }
    Ok(Leader {
        address: client.addr().to_owned(),
        redirected: client.addr() != address,
    })
}

/// The probe request without its `\n`: the workload's own first key and value.
fn probe_line(operation: Operation, value_size: usize) -> Vec<u8> {
    let mut line = Vec::new();
    RequestEncoder::new(Protocol::Line, value_size).encode(operation, &Key::new(0), &mut line);
    line.pop();
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_is_a_request_of_the_workload() {
        assert_eq!(probe_line(Operation::Put, 2), b"PUT key:00000000 xx");
        assert_eq!(probe_line(Operation::Get, 2), b"GET key:00000000");
    }
}
