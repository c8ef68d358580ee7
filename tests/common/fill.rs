//! Filling a server's disk under pipelined writes, and checking every reply
//! against what a restart finds: OK must be there, "not applied" must not,
//! "may or may not" may go either way, and a connection cut without a
//! reply promises nothing.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;

use super::{Connection, DEADLINE};

/// What a client was told about one PUT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Told {
    Ok,
    NotApplied,
    MayOrMayNot,
    /// The connection closed before this PUT's reply.
    Nothing,
}

pub const NOT_APPLIED: &str = "ERR log write failed, write not applied; server is stopping";
pub const MAY_OR_MAY_NOT: &str = "ERR log write failed; the write may or may not have been applied";

/// Each of `clients` connections pipelines PUTs of `value_bytes`-byte
/// values, `batch` at a time, until its connection closes; returns what
/// every key's PUT was told.
pub fn pipeline_until_closed(
    address: SocketAddr,
    clients: usize,
    batch: usize,
    value_bytes: usize,
) -> BTreeMap<String, Told> {
    let threads: Vec<_> = (0..clients)
        .map(|client| thread::spawn(move || one_client(address, client, batch, value_bytes)))
        .collect();
    threads
        .into_iter()
        .flat_map(|handle| handle.join().expect("client thread"))
        .collect()
}

fn one_client(
    address: SocketAddr,
    client: usize,
    batch: usize,
    value_bytes: usize,
) -> Vec<(String, Told)> {
    let stream = TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    let value = "v".repeat(value_bytes);
    let mut told = Vec::new();
    for round in 0.. {
        let keys: Vec<String> = (0..batch)
            .map(|i| format!("c{client}-{round}-{i}"))
            .collect();
        let requests: String = keys
            .iter()
            .map(|key| format!("PUT {key} {value}\n"))
            .collect();
        // The server may be gone before the whole batch is written.
        let _ = writer.write_all(requests.as_bytes());
        let mut closed = false;
        for key in keys {
            let outcome = if closed {
                Told::Nothing
            } else {
                read_told(&mut reader)
            };
            closed |= outcome != Told::Ok;
            told.push((key, outcome));
        }
        if closed {
            return told;
        }
    }
    unreachable!("the loop returns once the connection closes")
}

fn read_told(reader: &mut BufReader<TcpStream>) -> Told {
    let mut line = String::new();
    match reader.read_line(&mut line) {
        Ok(0) | Err(_) => return Told::Nothing,
        Ok(_) => {}
    }
    match line.trim_end() {
        "OK" => Told::Ok,
        NOT_APPLIED => Told::NotApplied,
        MAY_OR_MAY_NOT => Told::MayOrMayNot,
        other if !line.ends_with('\n') => panic!("a reply cut short: {other:?}"),
        other => panic!("a PUT got {other:?}"),
    }
}

/// Checks `told` against a restarted server: every OK is there with its
/// value, nothing said "not applied" is. Returns how many keys each kind
/// of reply covered.
pub fn check_against_restart(
    connection: &mut Connection,
    told: &BTreeMap<String, Told>,
    value_bytes: usize,
) -> BTreeMap<&'static str, usize> {
    let value = "v".repeat(value_bytes);
    let mut counts = BTreeMap::new();
    for (key, outcome) in told {
        let reply = connection.request(format!("GET {key}").as_bytes());
        let found = reply == value.as_bytes();
        assert!(found || reply == b"NOT_FOUND", "GET {key}: {reply:?}");
        let name = match outcome {
            Told::Ok => {
                assert!(
                    found,
                    "{key} was acknowledged OK but is gone after the restart"
                );
                "ok"
            }
            Told::NotApplied => {
                assert!(
                    !found,
                    "{key} was answered 'not applied' but is there after the restart"
                );
                "not applied"
            }
            Told::MayOrMayNot if found => "may or may not: applied",
            Told::MayOrMayNot => "may or may not: not applied",
            Told::Nothing => "no reply",
        };
        *counts.entry(name).or_insert(0) += 1;
    }
    counts
}
