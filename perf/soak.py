#!/usr/bin/env python3
"""Serving well-behaved clients while thousands of others misbehave.

    perf/soak.py                       # 30 s with and without attackers, appended to perf/RESULTS.md
    perf/soak.py --duration 10 --no-record

One kvstore-server (CPU 0, --fsync never, --max-clients 12000) is measured
twice with kvstore-bench (CPU 1: 50 clients, 50% GET, 100-byte values,
100,000 keys, pipeline 1): once alone, and once while this script holds
10,000 more connections (server defaults for every limit otherwise):

  9,000  idle      connect, send PING once, then nothing (the idle timeout
                   is 5 minutes, so they stay)
    250  drip      send a line that never ends, one byte a second
                   (slowloris: cut off by --request-timeout-ms, then reconnect)
    250  hog       send ~900 KiB of a line without its end (the client
                   buffer budget closes the largest; they reconnect)
    250  mute      pipeline GETs of a 64 KiB value and never read the replies
                   (backpressure stops reading them; the budget may close them)
    250  half-peer send the start of a peer handshake and stop (cut off after
                   the request deadline; they reconnect)

Recorded: the bench's ops/s and p99 with and without the attackers, the
server's RSS before, at its peak and at the end, how many attacker
connections the server closed, and whether any well-behaved request failed.
"""

import argparse
import datetime
import os
import resource
import selectors
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
GROUPS = {"idle": 9000, "drip": 250, "hog": 250, "mute": 250, "half-peer": 250}
BIG_VALUE_BYTES = 64 * 1024


def rss_bytes(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def request(port, line):
    with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
        connection.sendall(line)
        reply = b""
        while not reply.endswith(b"\n"):
            chunk = connection.recv(65536)
            if not chunk:
                break
            reply += chunk
        return reply


class Attackers:
    """Every attacker connection on one selector, run on a thread; a closed
    one reconnects, so the pressure lasts."""

    def __init__(self, port):
        self.port = port
        self.selector = selectors.DefaultSelector()
        self.stopped = threading.Event()
        self.closed_by_server = {name: 0 for name in GROUPS}
        self.connections = {name: 0 for name in GROUPS}
        self.thread = threading.Thread(target=self.run, daemon=True)

    def open(self, group):
        connection = socket.socket()
        connection.setblocking(False)
        try:
            connection.connect(("127.0.0.1", self.port))
        except BlockingIOError:
            pass
        except OSError:
            connection.close()
            return
        state = {"group": group, "sent": False, "opened": time.monotonic()}
        self.selector.register(connection, selectors.EVENT_READ | selectors.EVENT_WRITE, state)
        self.connections[group] += 1

    def first_bytes(self, group):
        if group == "idle":
            return b"PING\n"
        if group == "drip":
            return b"PUT drip "
        if group == "hog":
            return b"PUT hog " + b"h" * (900 * 1024)
        if group == "mute":
            return b"GET big\n" * 4096
        return b"KVPEER 3 "

    def service(self, key, mask):
        connection, state = key.fileobj, key.data
        if mask & selectors.EVENT_READ and state["group"] != "mute":
            try:
                data = connection.recv(65536)
            except (BlockingIOError, InterruptedError):
                data = None
            except OSError:
                data = b""
            if data == b"":
                self.replace(connection, state)
                return
        if mask & selectors.EVENT_WRITE and not state["sent"]:
            try:
                connection.send(self.first_bytes(state["group"]))
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.replace(connection, state)
                return
            state["sent"] = True
            events = selectors.EVENT_READ if state["group"] != "mute" else selectors.EVENT_WRITE
            self.selector.modify(connection, events, state)

    def replace(self, connection, state):
        self.selector.unregister(connection)
        connection.close()
        self.closed_by_server[state["group"]] += 1
        self.connections[state["group"]] -= 1
        if not self.stopped.is_set():
            self.open(state["group"])

    def drip(self):
        for key in list(self.selector.get_map().values()):
            if key.data["group"] == "drip" and key.data["sent"]:
                try:
                    key.fileobj.send(b"x")
                except OSError:
                    pass

    def run(self):
        for group, count in GROUPS.items():
            for _ in range(count):
                self.open(group)
        last_drip = time.monotonic()
        while not self.stopped.is_set():
            for key, mask in self.selector.select(timeout=0.2):
                if key.data["group"] == "mute" and key.data["sent"]:
                    continue
                self.service(key, mask)
            if time.monotonic() - last_drip >= 1:
                self.drip()
                last_drip = time.monotonic()

    def start(self):
        self.thread.start()

    def stop(self):
        self.stopped.set()
        self.thread.join()
        for key in list(self.selector.get_map().values()):
            key.fileobj.close()


def run_bench(port, duration):
    command = pinned(1, [
        str(BENCH), "--addr", f"127.0.0.1:{port}", "--clients", "50", "--pipeline", "1",
        "--get-ratio", "0.5", "--keyspace", "100000", "--value-size", "100",
        "--duration", str(duration), "--warmup", "1", "--preload",
    ])
    output = subprocess.run(command, capture_output=True, text=True, timeout=duration * 10 + 300)
    if output.returncode != 0:
        raise RuntimeError(f"kvstore-bench failed: {output.stderr.strip()}")
    for line in output.stdout.splitlines():
        if line.startswith("RESULT "):
            return dict(field.split("=", 1) for field in line.split()[1:])
    raise RuntimeError("kvstore-bench printed no RESULT line")


def measure(duration, attack):
    workdir = tempfile.mkdtemp(prefix="kvstore-soak-")
    port = free_port()
    command = pinned(0, [str(SERVER), str(port), "--data-dir", f"{workdir}/data", "--fsync", "never",
                         "--max-clients", "12000"])
    # stderr is never read: a pipe would fill with the log (limits hit once a
    # second during the attack) and block the server.
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if request(port, b"PING\n") == b"PONG\n":
                    break
            except OSError:
                time.sleep(0.05)
        request(port, b"PUT big " + b"b" * BIG_VALUE_BYTES + b"\n")
        rss_before = rss_bytes(server.pid)
        attackers = Attackers(port) if attack else None
        if attackers:
            attackers.start()
            time.sleep(3)  # let the 10,000 connections open before measuring
        peak = [rss_bytes(server.pid)]
        sampling = threading.Event()

        def sample():
            while not sampling.is_set():
                peak[0] = max(peak[0], rss_bytes(server.pid))
                sampling.wait(0.2)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        result = run_bench(port, duration)
        sampling.set()
        sampler.join()
        rss_end = rss_bytes(server.pid)
        closed = dict(attackers.closed_by_server) if attackers else {}
        held = dict(attackers.connections) if attackers else {}
        if attackers:
            attackers.stop()
        return result, rss_before, peak[0], rss_end, closed, held
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
        shutil.rmtree(workdir, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=30, help="seconds of load per run")
    parser.add_argument("--no-record", action="store_true", help="do not append to perf/RESULTS.md")
    arguments = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < 12000:
        sys.exit(f"the open-file limit ({hard}) is below the 12,000 this soak needs")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    subprocess.run(["cargo", "build", "--release", "--quiet", "--bins"], cwd=ROOT, check=True)
    rows = []
    for attack in (False, True):
        label = "with 10,000 attacker connections" if attack else "alone"
        log(f"soak: {label}, {arguments.duration} s")
        result, before, peak, end, closed, held = measure(arguments.duration, attack)
        log(f"  {float(result['ops_per_sec']):,.0f} ops/s, p99 {result['p99_us']} us, errors {result['errors']}, "
            f"RSS {before / MIB:.0f} -> peak {peak / MIB:.0f} -> {end / MIB:.0f} MiB, closed {closed}, held {held}")
        rows.append((label, result, before, peak, end, closed, held))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    lines = [
        f"\n## Soak: {datetime.date.today()}, commit {commit}, {os.cpu_count()} CPUs (`perf/soak.py`)\n",
        "50 well-behaved clients (pipeline 1, 50% GET) for "
        f"{arguments.duration} s, alone and beside 9,000 idle, 250 dripping, 250 hogging, "
        "250 never-reading and 250 half-handshake connections (server defaults).\n",
        "| run | ops/s | p99 | errors | RSS before -> peak -> end | attacker connections closed by the server |",
        "| --- | ---: | ---: | ---: | --- | --- |",
    ]
    for label, result, before, peak, end, closed, _ in rows:
        closed_text = ", ".join(f"{name} {count}" for name, count in closed.items()) or "-"
        lines.append(
            f"| {label} | {float(result['ops_per_sec']):,.0f} | {result['p99_us']} µs | {result['errors']} | "
            f"{before / MIB:.0f} -> {peak / MIB:.0f} -> {end / MIB:.0f} MiB | {closed_text} |")
    report = "\n".join(lines) + "\n"
    record(report, not arguments.no_record)


if __name__ == "__main__":
    main()
