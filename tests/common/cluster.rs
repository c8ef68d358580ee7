//! A cluster of real `kvstore-server` processes on loopback.

use std::net::SocketAddr;
use std::path::PathBuf;

use super::{Connection, ServerProcess, free_port, wait_until};

pub struct Cluster {
    pub ports: Vec<u16>,
    pub nodes: Vec<Option<ServerProcess>>,
    extra_args: Vec<String>,
    dir: tempfile::TempDir,
}

/// One node's answer to `ROLE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleLine {
    pub role: String,
    pub leader: Option<u64>,
    pub epoch: u64,
}

impl Cluster {
    /// Starts `size` nodes whose ids are their ports.
    pub fn start(size: usize, extra_args: &[&str]) -> Cluster {
        let mut cluster = Cluster::prepare(size, extra_args);
        for node in 0..size {
            cluster.start_node(node);
        }
        cluster
    }

    /// A cluster of `size` nodes, none started yet (start them one by one).
    pub fn prepare(size: usize, extra_args: &[&str]) -> Cluster {
        Cluster {
            ports: (0..size).map(|_| free_port()).collect(),
            nodes: (0..size).map(|_| None).collect(),
            extra_args: extra_args.iter().map(|arg| arg.to_string()).collect(),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// The node with the highest id (the port): the one Bully makes leader.
    pub fn highest(&self) -> usize {
        (0..self.ports.len())
            .max_by_key(|&node| self.ports[node])
            .unwrap()
    }

    pub fn data_dir(&self, node: usize) -> PathBuf {
        self.dir.path().join(self.ports[node].to_string())
    }

    pub fn start_node(&mut self, node: usize) {
        self.start_node_with_env(node, &[]);
    }

    /// Starts `node` with flags beyond the cluster's own (a different
    /// secret, say).
    pub fn start_node_with_args(&mut self, node: usize, args: &[&str]) {
        let saved = self.extra_args.clone();
        self.extra_args
            .extend(args.iter().map(|arg| arg.to_string()));
        self.start_node(node);
        self.extra_args = saved;
    }

    /// Starts `node` with extra environment variables (a crash point).
    pub fn start_node_with_env(&mut self, node: usize, env: &[(&str, &str)]) {
        let peers: Vec<String> = self
            .ports
            .iter()
            .map(|port| format!("127.0.0.1:{port}"))
            .collect();
        let peers = peers.join(",");
        let mut args: Vec<&str> = vec![&peers];
        args.extend(self.extra_args.iter().map(String::as_str));
        let data_dir = self.data_dir(node);
        let process = ServerProcess::start_with_env(self.ports[node], &data_dir, &args, env);
        self.nodes[node] = Some(process);
    }

    /// Removes a stopped node's data directory: a replaced machine.
    pub fn wipe(&mut self, node: usize) {
        assert!(self.nodes[node].is_none(), "wipe a stopped node");
        let data_dir = self.data_dir(node);
        if data_dir.exists() {
            std::fs::remove_dir_all(&data_dir).unwrap();
        }
    }

    pub fn process(&mut self, node: usize) -> &mut ServerProcess {
        self.nodes[node].as_mut().expect("node is running")
    }

    pub fn address(&self, node: usize) -> SocketAddr {
        format!("127.0.0.1:{}", self.ports[node]).parse().unwrap()
    }

    pub fn connect(&self, node: usize) -> Connection {
        Connection::open(self.address(node))
    }

    pub fn kill9(&mut self, node: usize) {
        if let Some(mut process) = self.nodes[node].take() {
            process.kill9();
        }
    }

    pub fn signal(&mut self, node: usize, name: &str) {
        self.process(node).signal(name);
    }

    /// `ROLE` of a running node, or None if it does not answer.
    pub fn role(&self, node: usize) -> Option<RoleLine> {
        self.nodes[node].as_ref()?;
        let mut connection = std::net::TcpStream::connect(self.address(node)).ok()?;
        connection
            .set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .ok()?;
        use std::io::{BufRead, BufReader, Write};
        connection.write_all(b"ROLE\n").ok()?;
        let mut line = String::new();
        BufReader::new(connection).read_line(&mut line).ok()?;
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [role, leader, epoch, _commit, _snapshot, _used, _max] = fields[..] else {
            return None;
        };
        Some(RoleLine {
            role: role.to_string(),
            leader: leader.parse().ok(),
            epoch: epoch.parse().ok()?,
        })
    }

    /// Waits until exactly one of `nodes` leads and every other one of them
    /// follows it; returns the leader's index.
    pub fn wait_for_leader(&self, nodes: &[usize]) -> usize {
        let mut found = None;
        wait_until("one leader that the others follow", || {
            let roles: Vec<Option<RoleLine>> = nodes.iter().map(|&node| self.role(node)).collect();
            let leaders: Vec<usize> = nodes
                .iter()
                .zip(&roles)
                .filter(|(_, role)| role.as_ref().is_some_and(|role| role.role == "leader"))
                .map(|(node, _)| *node)
                .collect();
            let [leader] = leaders[..] else {
                return false;
            };
            let leader_id = u64::from(self.ports[leader]);
            let all_follow = roles.iter().all(|role| {
                role.as_ref()
                    .is_some_and(|role| role.leader == Some(leader_id))
            });
            found = Some(leader);
            all_follow
        });
        found.unwrap()
    }

    /// Waits until `expected` leads and all of `nodes` follow it.
    pub fn wait_for_leader_to_be(&self, expected: usize, nodes: &[usize]) {
        let expected_id = u64::from(self.ports[expected]);
        wait_until(&format!("node {expected} to lead"), || {
            nodes.iter().all(|&node| {
                self.role(node)
                    .is_some_and(|role| role.leader == Some(expected_id))
            })
        });
    }

    /// Polls `GET key` on `node` until it answers `expected`; on timeout,
    /// panics with every node's `ROLE` and stderr.
    pub fn wait_for_value(&mut self, node: usize, key: &str, expected: &[u8]) {
        let request = format!("GET {key}");
        let started = std::time::Instant::now();
        loop {
            let mut connection = self.connect(node);
            if connection.request(request.as_bytes()) == expected {
                return;
            }
            if started.elapsed() > super::DEADLINE {
                panic!(
                    "timed out waiting for node {node} to read {key}\n{}",
                    self.describe()
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    /// Every node's `ROLE` and stderr so far, for a failure report.
    pub fn describe(&mut self) -> String {
        let mut report = String::new();
        for node in 0..self.nodes.len() {
            let role = self.role(node);
            let port = self.ports[node];
            report.push_str(&format!("node {node} (port {port}): {role:?}\n"));
            if let Some(process) = self.nodes[node].as_mut() {
                for line in process.stderr_so_far() {
                    report.push_str(&format!("    {line}\n"));
                }
            }
        }
        report
    }
}
