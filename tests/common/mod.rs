//! Shared harness for tests that run the real `kvstore-server` binary.
//!
//! Every wait polls a condition against a generous deadline; nothing sleeps
//! a fixed time and hopes.
#![allow(dead_code)]

pub mod cluster;
pub mod fake_server;
pub mod fill;
pub mod pki;
pub mod resp;
pub mod terminal;

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::{Duration, Instant};

/// How long anything may take on a slow, loaded CI machine.
pub const DEADLINE: Duration = Duration::from_secs(30);

pub fn server_binary() -> &'static str {
    env!("CARGO_BIN_EXE_kvstore-server")
}

/// A running server process; killed (SIGKILL) when dropped.
pub struct ServerProcess {
    pub child: Child,
    pub address: SocketAddr,
    pub data_dir: PathBuf,
    stderr_lines: Receiver<String>,
    pub stderr_seen: Vec<String>,
}

/// Polls `condition` every few milliseconds until it holds or `DEADLINE`
/// passes; panics with `what` on timeout.
pub fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let started = Instant::now();
    while !condition() {
        assert!(started.elapsed() < DEADLINE, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(5));
    }
}

impl ServerProcess {
    /// Starts a server on an OS-chosen port (port 0) with `data_dir` and the
    /// extra flags, and waits for its "listening on" line.
    pub fn start(data_dir: &Path, extra_args: &[&str]) -> ServerProcess {
        Self::start_on_port(0, data_dir, extra_args)
    }

    pub fn start_on_port(port: u16, data_dir: &Path, extra_args: &[&str]) -> ServerProcess {
        Self::start_with_env(port, data_dir, extra_args, &[])
    }

    /// Starts a server with extra environment variables (a crash point:
    /// `KVSTORE_FAILPOINT`).
    pub fn start_with_env(
        port: u16,
        data_dir: &Path,
        extra_args: &[&str],
        env: &[(&str, &str)],
    ) -> ServerProcess {
        let mut command = Command::new(server_binary());
        command.args(server_args(port, data_dir, extra_args));
        command.envs(env.iter().copied());
        Self::spawn(command, data_dir)
    }

    /// Starts the server through `sh -c SCRIPT`, where the script ends in
    /// `exec "$0" "$@"` and `$0 $@` are the binary and its arguments; used to
    /// set resource limits or signal dispositions that survive the `exec`.
    pub fn start_in_shell(script: &str, data_dir: &Path, extra_args: &[&str]) -> ServerProcess {
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(script)
            .arg(server_binary())
            .args(server_args(0, data_dir, extra_args));
        Self::spawn(command, data_dir)
    }

    /// Spawns a prepared command (e.g. wrapped in `sh -c` with limits).
    pub fn spawn(mut command: Command, data_dir: &Path) -> ServerProcess {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn kvstore-server");
        let stderr_lines = forward_lines(child.stderr.take().unwrap());
        let mut process = ServerProcess {
            child,
            address: "0.0.0.0:0".parse().unwrap(),
            data_dir: data_dir.to_path_buf(),
            stderr_lines,
            stderr_seen: Vec::new(),
        };
        process.address = process.wait_for_listening();
        process
    }

    fn wait_for_listening(&mut self) -> SocketAddr {
        let line = self.wait_for_stderr("listening on");
        let after = line.split("listening on ").nth(1).unwrap();
        after.split_whitespace().next().unwrap().parse().unwrap()
    }

    /// Waits for a stderr line containing `needle` and returns it; panics
    /// with everything seen if the process exits or the deadline passes.
    pub fn wait_for_stderr(&mut self, needle: &str) -> String {
        if let Some(line) = self.stderr_seen.iter().find(|line| line.contains(needle)) {
            return line.clone();
        }
        let started = Instant::now();
        while started.elapsed() < DEADLINE {
            match self.stderr_lines.recv_timeout(Duration::from_millis(50)) {
                Ok(line) => {
                    self.stderr_seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        panic!(
            "server never printed '{needle}'; stderr: {:#?}",
            self.stderr_seen
        );
    }

    /// The stderr lines printed so far, without waiting for more.
    pub fn stderr_so_far(&mut self) -> &[String] {
        while let Ok(line) = self.stderr_lines.try_recv() {
            self.stderr_seen.push(line);
        }
        &self.stderr_seen
    }

    /// Collects the rest of stderr (after the process exited).
    pub fn drain_stderr(&mut self) -> String {
        while let Ok(line) = self.stderr_lines.recv_timeout(Duration::from_secs(5)) {
            self.stderr_seen.push(line);
        }
        self.stderr_seen.join("\n")
    }

    pub fn connect(&self) -> Connection {
        Connection::open(self.address)
    }

    /// The first log segment (the whole log while it is small).
    pub fn log_path(&self) -> PathBuf {
        self.data_dir.join(kvstore::log::segment_file_name(1))
    }

    /// Bytes of every log segment in the data dir.
    pub fn log_bytes(&self) -> u64 {
        data_dir_bytes(&self.data_dir, "log-")
    }

    /// SIGTERM, then waits for a clean exit and its "log synced" line.
    pub fn stop(&mut self) {
        self.signal("TERM");
        let status = self.wait_exit();
        let stderr = self.drain_stderr();
        assert_eq!(status.code(), Some(0), "stderr: {stderr}");
        assert!(stderr.contains("log synced"), "stderr: {stderr}");
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits for the process to exit and returns its status.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(started.elapsed() < DEADLINE, "server did not exit");
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Resident memory of the server process, from /proc.
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let line = status
            .lines()
            .find(|line| line.starts_with("VmRSS:"))
            .unwrap();
        let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        kib * 1024
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn forward_lines(stderr: impl Read + Send + 'static) -> Receiver<String> {
    let (sender, receiver) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    receiver
}

fn server_args(port: u16, data_dir: &Path, extra_args: &[&str]) -> Vec<std::ffi::OsString> {
    let mut args = vec![
        port.to_string().into(),
        "--data-dir".into(),
        data_dir.into(),
    ];
    args.extend(extra_args.iter().map(Into::into));
    args
}

/// Bytes of the files in `dir` whose names start with `prefix`.
pub fn data_dir_bytes(dir: &Path, prefix: &str) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter(|entry| entry.file_name().to_string_lossy().starts_with(prefix))
        .filter_map(|entry| entry.metadata().ok())
        .map(|metadata| metadata.len())
        .sum()
}

/// Ports handed out by [`free_port`] come from below the kernel's ephemeral
/// range (32768 and up on Linux), which outgoing connections draw from: a
/// node restarted on its port must not find it taken by a peer's dial.
const FIRST_TEST_PORT: u32 = 20_000;
const TEST_PORTS: u32 = 12_000;

/// A port that was free a moment ago, and that no other caller in this
/// process has been given.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    // Each test binary starts at its own place in the range.
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(97) % TEST_PORTS,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    for _ in 0..TEST_PORTS {
        let offset = NEXT.fetch_add(1, Ordering::Relaxed) % TEST_PORTS;
        let port = (FIRST_TEST_PORT + offset) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!(
        "no free port in {FIRST_TEST_PORT}..{}",
        FIRST_TEST_PORT + TEST_PORTS
    );
}

/// Raises this process's soft limit on open files to at least `wanted`
/// (children, such as servers spawned afterwards, inherit it). Panics if the
/// hard limit does not allow it.
pub fn raise_open_file_limit(wanted: u64) {
    let (soft, hard) =
        rlimit::getrlimit(rlimit::Resource::NOFILE).expect("read the open-file limit");
    if soft >= wanted {
        return;
    }
    assert!(
        hard >= wanted,
        "the hard limit on open files ({hard}) is below the {wanted} this test needs"
    );
    rlimit::setrlimit(rlimit::Resource::NOFILE, wanted, hard).expect("raise the open-file limit");
}

/// Runs the server binary to completion (for start-up errors) and returns
/// its exit status and stderr.
pub fn run_to_exit(args: &[&str]) -> (ExitStatus, String) {
    let output = Command::new(server_binary())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run kvstore-server");
    (
        output.status,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Sends `pairs` as PUTs pipelined in batches and checks every reply is OK.
pub fn put_all(connection: &mut Connection, pairs: &[(String, String)]) {
    const BATCH: usize = 64;
    for batch in pairs.chunks(BATCH) {
        let requests: String = batch
            .iter()
            .map(|(key, value)| format!("PUT {key} {value}\n"))
            .collect();
        connection.send(requests.as_bytes());
        for (key, _) in batch {
            assert_eq!(connection.read_line(), b"OK\n", "PUT {key}");
        }
    }
}

/// Every key reads back its value.
pub fn assert_values(connection: &mut Connection, expected: &BTreeMap<String, String>) {
    for (key, value) in expected {
        assert_eq!(
            connection.request(format!("GET {key}").as_bytes()),
            value.as_bytes(),
            "GET {key}"
        );
    }
}

/// `rounds` overwrites of each of `keys` keys; returns the last values.
pub fn overwrites(keys: usize, rounds: usize, value_bytes: usize) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    for round in 0..rounds {
        for key in 0..keys {
            let value = format!("{round}-{}", "v".repeat(value_bytes));
            pairs.push((format!("key{key}"), value));
        }
    }
    pairs
}

pub fn last_values(pairs: &[(String, String)]) -> BTreeMap<String, String> {
    pairs.iter().cloned().collect()
}

/// A raw TCP client connection speaking the line protocol.
pub struct Connection {
    pub stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Connection {
    pub fn open(address: SocketAddr) -> Connection {
        let stream = TcpStream::connect(address).expect("connect to server");
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        let reader = BufReader::new(stream.try_clone().unwrap());
        Connection { stream, reader }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send to server");
    }

    /// One reply line, with its `\n`.
    pub fn read_line(&mut self) -> Vec<u8> {
        let mut line = Vec::new();
        self.reader
            .read_until(b'\n', &mut line)
            .expect("read reply");
        line
    }

    /// Sends one request line and returns its reply without the `\n`.
    pub fn request(&mut self, line: &[u8]) -> Vec<u8> {
        let mut request = line.to_vec();
        request.push(b'\n');
        self.send(&request);
        let mut reply = self.read_line();
        assert_eq!(reply.pop(), Some(b'\n'), "reply not terminated: {reply:?}");
        reply
    }

    /// Reads until the server closes; returns everything that arrived.
    pub fn read_to_end(&mut self) -> Vec<u8> {
        let mut rest = Vec::new();
        self.reader
            .read_to_end(&mut rest)
            .expect("read until close");
        rest
    }

    /// Reads until the server closes, which may come as an EOF or, when the
    /// server closed with our bytes still unread, as a reset. Returns what
    /// arrived before.
    pub fn read_until_closed(&mut self) -> Vec<u8> {
        let mut rest = Vec::new();
        match self.reader.read_to_end(&mut rest) {
            Ok(_) => {}
            Err(error) if error.kind() == io::ErrorKind::ConnectionReset => {}
            Err(error) => panic!("read until close: {error}; got {rest:?} first"),
        }
        rest
    }

    /// Reads up to `count` reply lines (without `\n`), stopping early if
    /// the server closes the connection or resets it.
    pub fn read_until_closed_or_lines(&mut self, count: usize) -> Vec<Vec<u8>> {
        let mut lines = Vec::new();
        while lines.len() < count {
            let mut line = Vec::new();
            match self.reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    line.pop();
                    lines.push(line);
                }
            }
        }
        lines
    }

    pub fn shutdown_write(&self) {
        self.stream.shutdown(std::net::Shutdown::Write).unwrap();
    }
}
