#!/usr/bin/env python3
"""Snapshots and log compaction, measured: disk, restart time, stalls, memory.

    perf/snapshots.py                  # everything (about 4 minutes), appended to perf/RESULTS.md
    perf/snapshots.py --only restart --no-record

Measurements (servers on CPU 0, kvstore-bench on CPU 1, as in compare.py):

  disk      20 s of kvstore-bench --get-ratio 0 --keyspace 1000 --pipeline 32
            against one node (--fsync never): the data dir's largest and
            final size, sampled every 100 ms, then kill -9 and the time to
            the first PONG of a restart. Without snapshots
            (--snapshot-log-bytes 0, the behaviour before them) and with the
            defaults, side by side.
  restart   1,000,000 keys x 100-byte values: the time from starting the
            server to its first PONG, loading a snapshot (SNAPSHOT, then
            kill -9) against replaying the whole log (no snapshot), and Redis
            loading the same data from its RDB file (SAVE, then restart).
  stall     1,000,000 keys loaded; 10 s of kvstore-bench (50 clients,
            pipeline 32, over all the keys; 50% GET, then 100% PUT), A B A B:
            without a snapshot, and with SNAPSHOT sent 2 s in (taken while
            the load goes on). Longest gap between two replies, p99, and the
            server's RSS before and at its peak (the memory a snapshot
            costs: pre-images of the pairs the load replaced).

Redis comes from the OS packages (apt-get if missing) and runs as our own
process.
"""

import argparse
import datetime
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.dont_write_bytecode = True  # importing harness.py leaves no perf/__pycache__
from harness import free_port, log, pinned, record  # noqa: E402  (shared by every perf script)

ROOT = Path(__file__).resolve().parent.parent
SERVER = ROOT / "target" / "release" / "kvstore-server"
BENCH = ROOT / "target" / "release" / "kvstore-bench"
MIB = 1024 * 1024
START_TIMEOUT_S = 120
LARGE_KEYSPACE = 1_000_000


def request(port, line, timeout=600):
    """One line-protocol request; returns the reply line without its newline."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as connection:
        connection.sendall(line.encode() + b"\n")
        reply = b""
        while not reply.endswith(b"\n"):
            chunk = connection.recv(4096)
            if not chunk:
                break
            reply += chunk
        return reply.decode().strip()


def resp_request(port, *words, timeout=600):
    payload = f"*{len(words)}\r\n" + "".join(f"${len(w)}\r\n{w}\r\n" for w in words)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as connection:
        connection.sendall(payload.encode())
        return connection.recv(4096).decode().strip()


def time_to_first_pong(port, process, ping):
    """Seconds from now until `ping(port)` answers PONG."""
    started = time.monotonic()
    while time.monotonic() - started < START_TIMEOUT_S:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with status {process.returncode}")
        try:
            if ping(port) in ("PONG", "+PONG"):
                return time.monotonic() - started
        except OSError:
            pass
        time.sleep(0.002)
    raise RuntimeError(f"no PONG on port {port}")


def kvstore_ping(port):
    return request(port, "PING", timeout=2)


def redis_ping(port):
    return resp_request(port, "PING", timeout=2)


def directory_bytes(path):
    total = 0
    for entry in os.scandir(path):
        try:
            total += entry.stat().st_size
        except FileNotFoundError:
            pass
    return total


def rss_bytes(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


class Kvstore:
    """One kvstore-server process on its own port and data dir."""

    def __init__(self, workdir, name, flags):
        self.port = free_port()
        self.data_dir = Path(workdir) / name
        self.flags = flags
        self.process = None

    def start(self):
        command = pinned(0, [
            str(SERVER), str(self.port), "--data-dir", str(self.data_dir), *self.flags,
        ])
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return time_to_first_pong(self.port, self.process, kvstore_ping)

    def kill9(self):
        self.process.kill()
        self.process.wait()

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=120)


def settle():
    """Flushes dirty pages, so one measurement's writeback does not run
    into the next one's."""
    subprocess.run(["sync"], check=False)


def run_bench(port, *arguments, timeout=900):
    command = pinned(1, [str(BENCH), "--addr", f"127.0.0.1:{port}", *arguments])
    output = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if output.returncode != 0:
        raise RuntimeError(f"kvstore-bench failed: {output.stderr.strip()}")
    for line in output.stdout.splitlines():
        if line.startswith("RESULT "):
            return dict(field.split("=", 1) for field in line.split()[1:])
    raise RuntimeError("kvstore-bench printed no RESULT line")


def preload(port, proto="line"):
    """PUTs every key of LARGE_KEYSPACE once, pipelined."""
    run_bench(
        port, "--proto", proto, "--clients", "50", "--pipeline", "64", "--preload",
        "--keyspace", str(LARGE_KEYSPACE), "--value-size", "100", "--requests", "1",
        "--warmup", "0",
    )


class Sampler:
    """Samples a value every `interval_s` on a thread; keeps the largest."""

    def __init__(self, sample, interval_s):
        self.sample = sample
        self.interval_s = interval_s
        self.largest = 0
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stopped.is_set():
            try:
                self.largest = max(self.largest, self.sample())
            except (OSError, ValueError):
                pass
            self.stopped.wait(self.interval_s)

    def stop(self):
        self.stopped.set()
        self.thread.join()
        return self.largest


def measure_disk(workdir, duration):
    rows = []
    for label, flags in [
        ("no snapshots (--snapshot-log-bytes 0)", ["--snapshot-log-bytes", "0"]),
        ("snapshots, defaults (64 MiB)", []),
    ]:
        server = Kvstore(workdir, f"disk-{len(rows)}", ["--fsync", "never", *flags])
        settle()
        server.start()
        sampler = Sampler(lambda: directory_bytes(server.data_dir), 0.1)
        result = run_bench(
            server.port, "--get-ratio", "0", "--keyspace", "1000", "--pipeline", "32",
            "--duration", str(duration), "--warmup", "0",
        )
        largest = sampler.stop()
        final = directory_bytes(server.data_dir)
        server.kill9()
        settle()
        restart_s = server.start()
        server.stop()
        shutil.rmtree(server.data_dir)
        rows.append((label, largest, final, restart_s, float(result["ops_per_sec"])))
        log(f"disk: {label}: largest {largest / MIB:.1f} MiB, final {final / MIB:.1f} MiB, "
            f"restart {restart_s * 1000:.0f} ms")
    lines = [
        f"| 20 s overwrites of 1,000 keys ({duration} s here) | largest data dir | final | restart to PONG after kill -9 | writes/s |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for label, largest, final, restart_s, ops in rows:
        lines.append(f"| {label} | {largest / MIB:.1f} MiB | {final / MIB:.1f} MiB | "
                     f"{restart_s * 1000:.0f} ms | {ops:,.0f} |")
    return lines


def ensure_redis():
    if shutil.which("redis-server"):
        return True
    log("installing redis-server with apt-get")
    installed = subprocess.run(["apt-get", "install", "-y", "redis-server"], capture_output=True)
    return installed.returncode == 0 and shutil.which("redis-server") is not None


def measure_restart(workdir):
    rows = []
    for label, flags, take_snapshot in [
        ("kvstore, the whole log replayed (no snapshot)", ["--snapshot-log-bytes", "0"], False),
        ("kvstore, snapshot loaded (defaults)", [], True),
    ]:
        server = Kvstore(workdir, f"restart-{len(rows)}", ["--fsync", "never", *flags])
        server.start()
        preload(server.port)
        if take_snapshot:
            reply = request(server.port, "SNAPSHOT")
            assert reply.startswith("OK "), reply
        server.kill9()
        settle()
        seconds = []
        for _ in range(3):
            seconds.append(server.start())
            server.kill9()
        rows.append((label, sorted(seconds)[1], directory_bytes(server.data_dir)))
        log(f"restart: {label}: {sorted(seconds)[1] * 1000:.0f} ms (median of 3)")
    if ensure_redis():
        rows.append(measure_redis_restart(workdir))
    lines = [
        "| 1,000,000 keys x 100 B | restart to first PONG (median of 3) | on disk |",
        "| --- | ---: | ---: |",
    ]
    for label, seconds, size in rows:
        lines.append(f"| {label} | {seconds * 1000:.0f} ms | {size / MIB:.0f} MiB |")
    return lines


def measure_redis_restart(workdir):
    directory = Path(workdir) / "redis"
    directory.mkdir()
    port = free_port()
    command = pinned(0, [
        "redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
        "--appendonly", "no", "--dir", str(directory), "--dbfilename", "dump.rdb",
        "--daemonize", "no", "--protected-mode", "no",
    ])
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time_to_first_pong(port, process, redis_ping)
    preload(port, proto="resp")
    assert resp_request(port, "SAVE") == "+OK"
    process.kill()
    process.wait()
    seconds = []
    for _ in range(3):
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # Redis answers -LOADING until the RDB is in: wait for +PONG.
        seconds.append(time_to_first_pong(port, process, redis_ping))
        process.kill()
        process.wait()
    label = f"Redis {redis_version()} loading its RDB"
    log(f"restart: {label}: {sorted(seconds)[1] * 1000:.0f} ms")
    return label, sorted(seconds)[1], directory_bytes(directory)


def redis_version():
    output = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout
    for word in output.split():
        if word.startswith("v="):
            return word[2:]
    return "?"


def measure_stall(workdir, duration):
    server = Kvstore(workdir, "stall", ["--fsync", "never", "--snapshot-log-bytes", "0"])
    server.start()
    preload(server.port)
    rows = []
    for get_ratio in ["0.5", "0"]:
        load = [
            "--clients", "50", "--pipeline", "32", "--get-ratio", get_ratio,
            "--keyspace", str(LARGE_KEYSPACE), "--value-size", "100",
            "--duration", str(duration), "--warmup", "1",
        ]
        for snapshot in [False, True, False, True]:
            rows.append(measure_one_stall(server, load, get_ratio, snapshot))
    server.stop()
    lines = [
        "| 1,000,000 keys, 50 clients x pipeline 32 | ops/s | p99 | p99.9 | longest gap between replies | RSS before -> peak | snapshot took |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for label, result, baseline, peak, took in rows:
        took_text = f"{took:.2f} s" if took is not None else ""
        lines.append(
            f"| {label} | {float(result['ops_per_sec']):,.0f} | {result['p99_us']} µs | "
            f"{result['p999_us']} µs | {int(result['max_gap_us']) / 1000:.1f} ms | "
            f"{baseline / MIB:.0f} -> {peak / MIB:.0f} MiB | {took_text} |")
    return lines


def measure_one_stall(server, load, get_ratio, snapshot):
    """One run of `load`; with `snapshot`, SNAPSHOT is sent 2 s in."""
    settle()
    baseline_rss = rss_bytes(server.process.pid)
    sampler = Sampler(lambda: rss_bytes(server.process.pid), 0.02)
    outcome = {}

    def take_snapshot():
        time.sleep(3)  # the bench's 1 s warm-up, then 2 s of load
        started = time.monotonic()
        outcome["reply"] = request(server.port, "SNAPSHOT")
        outcome["seconds"] = time.monotonic() - started

    thread = threading.Thread(target=take_snapshot) if snapshot else None
    if thread:
        thread.start()
    result = run_bench(server.port, *load)
    peak_rss = sampler.stop()
    if thread:
        thread.join()
        assert outcome["reply"].startswith("OK "), outcome
    mix = "50% GET" if get_ratio == "0.5" else "100% PUT"
    label = f"{mix}, {'SNAPSHOT sent 2 s in' if snapshot else 'no snapshot'}"
    log(f"stall: {label}: max gap {result['max_gap_us']} µs, p99 {result['p99_us']} µs, "
        f"RSS {baseline_rss / MIB:.0f} -> {peak_rss / MIB:.0f} MiB")
    return label, result, baseline_rss, peak_rss, outcome.get("seconds")


def commit():
    output = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return output.stdout.strip() or "?"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=["disk", "restart", "stall"])
    parser.add_argument("--duration", type=int, default=20, help="seconds of load for disk")
    parser.add_argument("--no-record", action="store_true", help="do not append to perf/RESULTS.md")
    arguments = parser.parse_args()
    log("building release binaries")
    subprocess.run(["cargo", "build", "--release", "--bins"], cwd=ROOT, check=True)
    sections = []
    with tempfile.TemporaryDirectory(prefix="kvstore-snapshots-", dir=ROOT / "target") as workdir:
        if arguments.only in (None, "disk"):
            sections += ["", "Disk and restart under sustained overwrites:", ""] + measure_disk(workdir, arguments.duration)
        if arguments.only in (None, "restart"):
            sections += ["", "Restart with 1,000,000 keys:", ""] + measure_restart(workdir)
        if arguments.only in (None, "stall"):
            sections += ["", "Serving while a snapshot of 1,000,000 keys is taken:", ""] + measure_stall(workdir, 10)
    heading = (f"## Snapshots: {datetime.date.today()}, commit {commit()}, "
               f"{os.cpu_count()} CPUs (`perf/snapshots.py`)")
    report = "\n".join([heading] + sections) + "\n"
    record("\n" + report, not arguments.no_record)


if __name__ == "__main__":
    main()
