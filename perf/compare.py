#!/usr/bin/env python3
"""Side-by-side load comparison of kvstore and Redis on loopback, in one run.

    perf/compare.py                    # all comparisons, 2 rounds, 10 s per measurement
    perf/compare.py --rounds 3 --duration 5 --only fsync-never
    perf/compare.py --only resp --rounds 3 --wait-quiet   # on a machine others use too

For each comparison (A vs B) and each shape (50 clients x pipeline 1, and
x pipeline 32; 50% GET, 100-byte values, 100,000 preloaded keys) it measures
A, B, A, B, ... so drift on a noisy machine shows, starting every server
itself on a spare port with a fresh data dir and stopping it by PID. Servers
run on CPU 0 and the load generator on CPU 1 (taskset) when there are two.
It prints a table of median ops/s and p99 with the ratio A/B, and appends it
to perf/RESULTS.md with the date, commit and machine, and with how much CPU
other processes used meanwhile (all CPU time in /proc/stat minus our own
children's), so a run on a shared machine says so.

Comparisons:
  fsync-never   kvstore --fsync never         vs Redis appendonly no
  fsync-always  kvstore --fsync always        vs Redis appendonly yes, appendfsync always
  cluster       kvstore 3 nodes, sync repl.   vs kvstore 1 node (both --fsync always)
  tls           kvstore --fsync never with TLS vs without (certificates made with openssl;
                the load generator verifies the server against the CA)
  resp          kvstore --fsync never over RESP vs over the line protocol (same server,
                same flags; kvstore-bench --proto resp vs --proto line): what parsing
                and encoding RESP costs on the hot path
  resp-redis    kvstore --fsync never over RESP vs Redis appendonly no (both driven by
                kvstore-bench --proto resp, byte-identical requests)

  memory        RSS after loading 1,000,000 keys of 100 bytes: kvstore vs Redis

Redis comes from the OS packages: installed with apt-get if missing, and run
as our own process, never the system service.
"""

import argparse
import datetime
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "perf" / "RESULTS.md"
SERVER = ROOT / "target" / "release" / "kvstore-server"
BENCH = ROOT / "target" / "release" / "kvstore-bench"
CLIENTS = 50
KEYSPACE = 100_000
VALUE_SIZE = 100
GET_RATIO = 0.5
SHAPES = [1, 32]
START_TIMEOUT_S = 30


def log(message):
    print(message, file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def pinned(cpu, command):
    """Prefix `command` with taskset when the machine has a CPU to spare."""
    if shutil.which("taskset") and os.cpu_count() >= 2:
        return ["taskset", "-c", str(cpu)] + command
    return command


def wait_for_port(port, process, what):
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with status {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on port {port}")


def busy_cpu_seconds():
    """CPU time every process on the machine has used so far (/proc/stat:
    all but idle and iowait, steal included)."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds():
    """CPU time of our children (servers, load generators) once waited for."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class OtherLoad:
    """Measures, around one measurement, the CPU used by processes that are
    not ours, as a fraction of one CPU: near 0 on a quiet machine."""

    kept = []
    retried = 0

    def __enter__(self):
        self.start = (time.monotonic(), busy_cpu_seconds(), own_cpu_seconds())
        return self

    def __exit__(self, *exception):
        wall, busy, own = (now - then for now, then in zip(
            (time.monotonic(), busy_cpu_seconds(), own_cpu_seconds()), self.start))
        self.fraction = max(0.0, (busy - own) / wall)


# Other processes may use this much of a CPU during a measurement before
# --wait-quiet measures it again, at most QUIET_ATTEMPTS times in all.
QUIET_CPU_FRACTION = 0.10
QUIET_ATTEMPTS = 4
QUIET_SECONDS = 10
QUIET_TIMEOUT_S = 1800
WAIT_FOR_QUIET = False


def wait_for_quiet():
    """Returns once the machine has been idle (busy under QUIET_CPU_FRACTION
    of a CPU) for QUIET_SECONDS in a row, or after QUIET_TIMEOUT_S."""
    deadline = time.monotonic() + QUIET_TIMEOUT_S
    quiet_s, announced = 0, False
    while quiet_s < QUIET_SECONDS and time.monotonic() < deadline:
        before = busy_cpu_seconds()
        time.sleep(1)
        if busy_cpu_seconds() - before < QUIET_CPU_FRACTION:
            quiet_s += 1
        else:
            quiet_s = 0
            if not announced:
                log("  waiting for other processes to leave the CPUs")
                announced = True


def quietly(measurement):
    """Runs `measurement()` and returns its result and the other load during
    it. With WAIT_FOR_QUIET (--wait-quiet), it first waits for a quiet
    machine, and measures again if other processes still took more than
    QUIET_CPU_FRACTION of a CPU meanwhile (the last attempt is kept)."""
    for attempt in range(1, QUIET_ATTEMPTS + 1):
        if WAIT_FOR_QUIET:
            wait_for_quiet()
        with OtherLoad() as other:
            result = measurement()
        if not WAIT_FOR_QUIET or other.fraction <= QUIET_CPU_FRACTION or attempt == QUIET_ATTEMPTS:
            OtherLoad.kept.append(other.fraction)
            return result, other.fraction
        OtherLoad.retried += 1
        log(f"  other processes took {other.fraction:.0%} of a CPU meanwhile: measuring again")


def other_load_line():
    samples = OtherLoad.kept
    if not samples:
        return ""
    retried = f"; {OtherLoad.retried} disturbed measurements were repeated (--wait-quiet)" if OtherLoad.retried else ""
    return (f"Other processes used {statistics.mean(samples):.0%} of a CPU on average during "
            f"these measurements (at most {max(samples):.0%} during one; about 0-3% when the machine "
            f"is quiet){retried}.\n")


class Servers:
    """Processes started for one measurement; stopped by PID."""

    def __init__(self):
        self.processes = []
        self.directory = tempfile.TemporaryDirectory(prefix="kvstore-perf-")

    def spawn(self, command, port, what):
        process = subprocess.Popen(
            pinned(0, command),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=self.directory.name,
        )
        self.processes.append(process)
        wait_for_port(port, process, what)

    def stop(self):
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.directory.cleanup()


CERTIFICATES = tempfile.TemporaryDirectory(prefix="kvstore-perf-tls-")


def certificates():
    """A CA and a node certificate (IP SAN 127.0.0.1), made once per run
    with the openssl commands docs/SECURITY.md gives."""
    directory = Path(CERTIFICATES.name)
    ca, cert, key = directory / "ca.pem", directory / "node.pem", directory / "node-key.pem"
    if not cert.exists():
        quiet = {"check": True, "capture_output": True, "cwd": directory}
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                        "-nodes", "-days", "30", "-subj", "/CN=kvstore perf CA",
                        "-keyout", "ca-key.pem", "-out", "ca.pem"], **quiet)
        subprocess.run(["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                        "-nodes", "-subj", "/CN=node", "-keyout", "node-key.pem", "-out", "node.csr"], **quiet)
        (directory / "extensions").write_text("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n")
        subprocess.run(["openssl", "x509", "-req", "-in", "node.csr", "-CA", "ca.pem", "-CAkey", "ca-key.pem",
                        "-days", "30", "-out", "node.pem", "-extfile", "extensions"], **quiet)
    return ca, cert, key


def start_kvstore(servers, fsync, nodes=1, tls=False, proto="line"):
    ports = [free_port() for _ in range(nodes)]
    server_tls, bench_tls = [], []
    if tls:
        ca, cert, key = certificates()
        server_tls = ["--tls-cert-file", str(cert), "--tls-key-file", str(key), "--tls-ca-file", str(ca)]
        bench_tls = ["--tls-ca-file", str(ca)]
    for port in ports:
        peers = ",".join(f"127.0.0.1:{other}" for other in ports if other != port)
        command = [str(SERVER), str(port)]
        if peers:
            command.append(peers)
        command += ["--fsync", fsync, "--data-dir", f"{servers.directory.name}/{port}", *server_tls]
        servers.spawn(command, port, f"kvstore-server {port}")
    # Any node will do: the load generator follows NOT_LEADER to the leader.
    return f"127.0.0.1:{ports[0]}", proto, bench_tls


def start_redis(servers, appendonly, appendfsync="everysec"):
    port = free_port()
    command = [
        "redis-server", "--port", str(port), "--bind", "127.0.0.1",
        "--save", "", "--appendonly", appendonly, "--appendfsync", appendfsync,
        "--dir", servers.directory.name, "--daemonize", "no", "--protected-mode", "no",
    ]
    servers.spawn(command, port, "redis-server")
    return f"127.0.0.1:{port}", "resp", []


SYSTEMS = {
    "kvstore fsync never": lambda servers: start_kvstore(servers, "never"),
    "redis appendonly no": lambda servers: start_redis(servers, "no"),
    "kvstore fsync always": lambda servers: start_kvstore(servers, "always"),
    "redis appendfsync always": lambda servers: start_redis(servers, "yes", "always"),
    "kvstore 3-node sync cluster": lambda servers: start_kvstore(servers, "always", nodes=3),
    "kvstore 1 node": lambda servers: start_kvstore(servers, "always"),
    "kvstore fsync never, TLS": lambda servers: start_kvstore(servers, "never", tls=True),
    "kvstore fsync never, RESP": lambda servers: start_kvstore(servers, "never", proto="resp"),
}

COMPARISONS = {
    "fsync-never": ("kvstore fsync never", "redis appendonly no"),
    "fsync-always": ("kvstore fsync always", "redis appendfsync always"),
    "cluster": ("kvstore 3-node sync cluster", "kvstore 1 node"),
    "tls": ("kvstore fsync never, TLS", "kvstore fsync never"),
    "resp": ("kvstore fsync never, RESP", "kvstore fsync never"),
    "resp-redis": ("kvstore fsync never, RESP", "redis appendonly no"),
}


def run_bench(address, proto, pipeline, duration, extra=()):
    command = pinned(1, [
        str(BENCH), "--addr", address, "--proto", proto, *extra,
        "--clients", str(CLIENTS), "--pipeline", str(pipeline),
        "--duration", str(duration), "--get-ratio", str(GET_RATIO),
        "--keyspace", str(KEYSPACE), "--value-size", str(VALUE_SIZE), "--preload",
    ])
    output = subprocess.run(command, capture_output=True, text=True, timeout=duration * 10 + 120)
    if output.returncode != 0:
        raise RuntimeError(f"kvstore-bench failed: {output.stderr.strip()}")
    for line in output.stdout.splitlines():
        if line.startswith("RESULT "):
            return dict(field.split("=", 1) for field in line.split()[1:])
    raise RuntimeError("kvstore-bench printed no RESULT line")


def measure_once(system, pipeline, duration):
    servers = Servers()
    try:
        address, proto, extra = SYSTEMS[system](servers)
        return run_bench(address, proto, pipeline, duration, extra)
    finally:
        servers.stop()


def measure(system, pipeline, duration):
    result, other_load = quietly(lambda: measure_once(system, pipeline, duration))
    ops = float(result["ops_per_sec"])
    p99 = float(result["p99_us"])
    errors = int(result["errors"])
    log(f"  {system:<28} pipeline {pipeline:>2}: {ops:>12,.0f} ops/s  p99 {p99:>8,.0f} us  errors {errors}"
        f"  other load {other_load:.0%}")
    return ops, p99, errors


MEMORY_KEYS = 1_000_000


def rss_bytes(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def measure_memory(system):
    """Resident memory of the server after preloading MEMORY_KEYS keys."""
    servers = Servers()
    try:
        address, proto, _ = SYSTEMS[system](servers)
        before = rss_bytes(servers.processes[0].pid)
        command = pinned(1, [
            str(BENCH), "--addr", address, "--proto", proto, "--clients", "8",
            "--pipeline", "64", "--requests", "1", "--get-ratio", "1",
            "--keyspace", str(MEMORY_KEYS), "--value-size", str(VALUE_SIZE), "--preload",
        ])
        subprocess.run(command, capture_output=True, check=True, timeout=600)
        after = rss_bytes(servers.processes[0].pid)
    finally:
        servers.stop()
    log(f"  {system:<28} RSS {before / 2**20:,.1f} MiB empty, {after / 2**20:,.1f} MiB with {MEMORY_KEYS:,} keys")
    return before, after


def memory_table():
    lines = [
        f"| memory, {MEMORY_KEYS:,} keys x {VALUE_SIZE} B | RSS empty | RSS loaded | bytes per key |",
        "| --- | ---: | ---: | ---: |",
    ]
    results = {}
    for system in ("kvstore fsync never", "redis appendonly no"):
        before, after = measure_memory(system)
        results[system] = after
        per_key = (after - before) / MEMORY_KEYS
        lines.append(f"| {system} | {before / 2**20:,.1f} MiB | {after / 2**20:,.1f} MiB | {per_key:,.0f} |")
    ratio = results["kvstore fsync never"] / results["redis appendonly no"]
    lines.append(f"| kvstore / Redis | | **{ratio:.2f}x** | |")
    return "\n".join(lines)


def compare(name, rounds, duration):
    first, second = COMPARISONS[name]
    rows = []
    for pipeline in SHAPES:
        samples = {first: [], second: []}
        for round_number in range(rounds):
            log(f"{name}, pipeline {pipeline}, round {round_number + 1}/{rounds}")
            for system in (first, second):
                samples[system].append(measure(system, pipeline, duration))
        rows.append((name, pipeline, first, second, samples))
    return rows


def median(samples, field):
    return statistics.median(sample[field] for sample in samples)


def table(rows):
    lines = [
        "| comparison | clients x pipeline | A | A ops/s | A p99 µs | B | B ops/s | B p99 µs | A/B ops/s | A rounds (ops/s) | B rounds (ops/s) |",
        "| --- | --- | --- | ---: | ---: | --- | ---: | ---: | ---: | --- | --- |",
    ]
    for name, pipeline, first, second, samples in rows:
        a, b = samples[first], samples[second]
        ratio = median(a, 0) / median(b, 0) if median(b, 0) else float("nan")
        rounds_a = ", ".join(f"{sample[0]:,.0f}" for sample in a)
        rounds_b = ", ".join(f"{sample[0]:,.0f}" for sample in b)
        errors = sum(sample[2] for sample in a + b)
        note = f" ({errors} errors)" if errors else ""
        lines.append(
            f"| {name}{note} | {CLIENTS} x {pipeline} | {first} | {median(a, 0):,.0f} | {median(a, 1):,.0f} "
            f"| {second} | {median(b, 0):,.0f} | {median(b, 1):,.0f} | **{ratio:.2f}x** | {rounds_a} | {rounds_b} |"
        )
    return "\n".join(lines)


def machine():
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip() or "unknown"
    return f"nproc {os.cpu_count()}, {model}", commit


def ensure_redis():
    if shutil.which("redis-server"):
        return
    log("redis-server is missing; installing the OS package")
    prefix = [] if os.geteuid() == 0 else ["sudo"]
    subprocess.run(prefix + ["apt-get", "update", "-qq"], check=True)
    subprocess.run(prefix + ["apt-get", "install", "-y", "-qq", "redis-server"], check=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2, help="A/B rounds per shape (default 2)")
    parser.add_argument("--duration", type=int, default=10, help="seconds per measurement (default 10)")
    parser.add_argument("--only", choices=sorted(COMPARISONS) + ["memory"], action="append",
                        help="run only these comparisons")
    parser.add_argument("--no-record", action="store_true", help="do not append to perf/RESULTS.md")
    parser.add_argument("--wait-quiet", action="store_true",
                        help="on a shared machine: start each measurement on an idle machine, and repeat one "
                             f"that other processes disturbed (over {QUIET_CPU_FRACTION * 100:.0f}%% of a CPU)")
    arguments = parser.parse_args()
    global WAIT_FOR_QUIET
    WAIT_FOR_QUIET = arguments.wait_quiet

    subprocess.run(["cargo", "build", "--release", "--quiet", "--bins"], cwd=ROOT, check=True)
    names = arguments.only or list(COMPARISONS) + ["memory"]
    ensure_redis()
    rows = []
    for name in names:
        if name != "memory":
            rows += compare(name, arguments.rounds, arguments.duration)
    memory = memory_table() if "memory" in names else ""
    machine_line, commit = machine()
    report = (
        f"\n## {datetime.datetime.now():%Y-%m-%d %H:%M} — commit {commit}\n\n"
        f"{machine_line}; {CLIENTS} clients, {int(GET_RATIO * 100)}% GET, {VALUE_SIZE}-byte values, "
        f"{KEYSPACE:,} preloaded keys, {arguments.duration} s per measurement, {arguments.rounds} rounds "
        f"(A B A B), medians shown. Command: `perf/compare.py --rounds {arguments.rounds} "
        f"--duration {arguments.duration}" + "".join(f" --only {name}" for name in arguments.only or [])
        + (" --wait-quiet" if arguments.wait_quiet else "") + "`\n\n"
        + (table(rows) + "\n" if rows else "")
        + ("\n" + memory + "\n" if memory else "")
        + ("\n" + other_load_line() if OtherLoad.kept else "")
    )
    print(report)
    if not arguments.no_record:
        with RESULTS.open("a") as results:
            results.write(report)
        log(f"appended to {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
