//! A real full disk (ENOSPC), on a small tmpfs: needs root to mount, so it
//! runs only with `--features root-tests` (`.ci/run` does, as root).
//!
//! Pipelined writes fill the filesystem; the server stops (exit 1, like
//! PostgreSQL and etcd on a WAL write failure: see README, "Limits"), every
//! reply is checked against what a restart finds once space is freed.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::ServerProcess;
use common::fill::{self, Told};

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mnt");
        std::fs::create_dir(&path).unwrap();
        mount(
            &["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"],
            &path,
        );
        Tmpfs { path, _dir: dir }
    }

    fn resize(&self, size: &str) {
        mount(&["-o", &format!("remount,size={size}")], &self.path);
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.path).status();
    }
}

fn mount(arguments: &[&str], path: &Path) {
    let output = Command::new("mount")
        .args(arguments)
        .arg(path)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "mount {arguments:?} failed (these tests need root): {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn a_full_disk_stops_the_server_and_every_reply_was_true() {
    let tmpfs = Tmpfs::mount("2m");
    let data_dir = tmpfs.path.join("data");
    let mut server = ServerProcess::start(&data_dir, &[]);
    let told = fill::pipeline_until_closed(server.address, 4, 16, 900);
    let status = server.wait_exit();
    let stderr = server.drain_stderr();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("No space left on device"), "{stderr}");

    tmpfs.resize("64m");
    let restarted = ServerProcess::start(&data_dir, &[]);
    let counts = fill::check_against_restart(&mut restarted.connect(), &told, 900);
    eprintln!("replies against the restart: {counts:?}");
    assert!(counts.get("ok").copied().unwrap_or(0) > 0, "{counts:?}");
    assert!(
        told.values()
            .any(|outcome| matches!(outcome, Told::NotApplied | Told::MayOrMayNot)),
        "no write was refused: {counts:?}"
    );
}

/// A snapshot that fills the disk is abandoned and its file removed, and
/// the server goes on serving reads and writes from its log.
#[test]
fn a_snapshot_that_meets_a_full_disk_is_abandoned_and_serving_goes_on() {
    let tmpfs = Tmpfs::mount("4m");
    let data_dir = tmpfs.path.join("data");
    let server = ServerProcess::start(&data_dir, &["--snapshot-log-bytes", "0"]);
    let mut client = server.connect();
    // 2.4 MB of data in the log: its snapshot does not fit beside it.
    let value = "s".repeat(1000);
    for i in 0..2400 {
        assert_eq!(
            client.request(format!("PUT k{i} {value}").as_bytes()),
            b"OK"
        );
    }
    let reply = client.request(b"SNAPSHOT");
    assert!(
        String::from_utf8_lossy(&reply).starts_with("ERR snapshot failed: No space left on device"),
        "{}",
        String::from_utf8_lossy(&reply)
    );
    let leftovers: Vec<_> = std::fs::read_dir(&data_dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("snapshot-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert_eq!(client.request(b"GET k7"), value.as_bytes());
    assert_eq!(client.request(b"DEL k7"), b"OK");
}
