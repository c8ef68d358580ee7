#!/usr/bin/env python3
"""A 3-node kvstore cluster against a 3-member etcd, 100% PUT, in one run.

    perf/etcd.sh                                 # 3 rounds, 10 s per measurement
    perf/etcd.sh --rounds 1 --duration 3 --no-record
    perf/etcd.sh --wait-quiet                    # on a machine others use too

(perf/etcd.sh installs etcd if missing and runs this script.)

What is measured, the same way for both systems:
  - 3 replicas on 127.0.0.1, durable writes: kvstore with --fsync always on
    every node (a PUT is answered once a majority has it on disk); etcd
    with its defaults, which fsync the raft WAL before a proposal commits.
  - 100% PUT, 100-byte values, keys drawn uniformly from 100,000
    (`key:00001234`), 50 requests in flight: 50 closed loops, each sending
    its next PUT when the previous one is answered. 1 s of warmup, then
    --duration seconds measured; ops/s, p50 and p99 of the measured part.
  - All load goes to the leader. kvstore-bench follows NOT_LEADER to it
    (50 TCP connections, line protocol). etcd-bench (perf/etcd-bench/, a
    small tonic client on one tokio thread, as etcd's own tools/benchmark
    is not packaged by Debian) asks each member for its Status and sends
    every KV/Put to the leader over --etcd-conns HTTP/2 connections
    (default 1, etcd benchmark's default). etcd's own benchmark would spread
    clients over all endpoints, and followers forward to the leader.
  - Pinning as compare.py: all three servers of a system share CPU 0
    (taskset -c 0), the load generator runs on CPU 1.
  - A B A B: each round starts a fresh kvstore cluster, measures it, stops
    it, then does the same with a fresh etcd cluster (fresh temp data dirs,
    free ports, processes stopped by PID: SIGTERM, SIGKILL after 30 s;
    etcd's members one at a time, see stop_one_by_one).

etcd is the Debian package etcd-server (3.4.x), run as our own processes,
never the system service: --logger zap --log-level warn, otherwise its
defaults (heartbeat 100 ms, election 1000 ms, snapshot-count 100000).

It prints a table of medians with per-round values and the ratio
kvstore/etcd, and appends it to perf/RESULTS.md with the date, commit,
machine, versions and the CPU other processes used meanwhile (harness.py's
OtherLoad), unless --no-record. The target this serves: 10x etcd's ops/s
at a lower p99.
"""

import argparse
import datetime
import os
import shutil
import signal
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402  (servers, pinning, other-load accounting and machine description are shared)

CLIENTS = 50
KEYSPACE = 100_000
VALUE_SIZE = 100
WARMUP_S = 1
ETCD_BENCH_DIR = harness.ROOT / "perf" / "etcd-bench"
ETCD_BENCH = ETCD_BENCH_DIR / "target" / "release" / "etcd-bench"
KVSTORE = "kvstore 3-node, --fsync always"
ETCD = "etcd 3-member"
TARGET_RATIO = 10.0


def start_kvstore(servers):
    address, _, _ = harness.start_kvstore(servers, "always", nodes=3)
    return address


def start_etcd(servers):
    """Three members on free ports, data in the measurement's temp dir."""
    members = [(f"m{index}", harness.free_port(), harness.free_port()) for index in range(3)]
    cluster = ",".join(f"{name}=http://127.0.0.1:{peer}" for name, _, peer in members)
    token = f"kvstore-perf-{os.getpid()}-{id(servers)}"
    directory = Path(servers.directory.name)
    for name, client, peer in members:
        command = [
            "etcd", "--name", name, "--data-dir", str(directory / name),
            "--listen-client-urls", f"http://127.0.0.1:{client}",
            "--advertise-client-urls", f"http://127.0.0.1:{client}",
            "--listen-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-cluster", cluster, "--initial-cluster-token", token,
            "--initial-cluster-state", "new", "--logger", "zap", "--log-level", "warn",
        ]
        log_file = (directory / f"{name}.log").open("wb")
        process = subprocess.Popen(harness.pinned(0, command), stdout=log_file, stderr=subprocess.STDOUT,
                                   cwd=directory)
        log_file.close()
        servers.processes.append(process)
    for (name, client, _), process in zip(members, servers.processes):
        try:
            harness.wait_for_port(client, process, f"etcd member {name}")
        except RuntimeError:
            tail = (directory / f"{name}.log").read_text(errors="replace").splitlines()[-20:]
            harness.log("\n".join(tail))
            raise
    # etcd-bench waits for a leader and sends to it.
    return ",".join(f"127.0.0.1:{client}" for _, client, _ in members)


def stop_one_by_one(servers):
    """Stops the members in turn, each waited for (SIGTERM, SIGKILL after
    30 s). Sent to all at once, a stopping leader spends about 7 s trying to
    hand leadership to members that are stopping too; in turn, each hand-over
    (or its absence, for the last member) takes milliseconds."""
    for process in servers.processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    servers.stop()  # removes the data dirs


def parse_result(output, what):
    if output.returncode != 0:
        raise RuntimeError(f"{what} failed ({output.returncode}): {output.stderr.strip()[-2000:]}")
    for line in output.stdout.splitlines():
        if line.startswith("RESULT "):
            return dict(field.split("=", 1) for field in line.split()[1:])
    raise RuntimeError(f"{what} printed no RESULT line")


def run_kvstore_bench(address, duration):
    command = harness.pinned(1, [
        str(harness.BENCH), "--addr", address, "--clients", str(CLIENTS), "--pipeline", "1",
        "--get-ratio", "0", "--value-size", str(VALUE_SIZE), "--keyspace", str(KEYSPACE),
        "--warmup", str(WARMUP_S), "--duration", str(duration),
    ])
    output = subprocess.run(command, capture_output=True, text=True, timeout=duration * 10 + 120)
    return parse_result(output, "kvstore-bench")


def run_etcd_bench(endpoints, duration, conns):
    command = harness.pinned(1, [
        str(ETCD_BENCH), "--endpoints", endpoints, "--clients", str(CLIENTS), "--conns", str(conns),
        "--value-size", str(VALUE_SIZE), "--keyspace", str(KEYSPACE),
        "--warmup", str(WARMUP_S), "--duration", str(duration), "--wait", "30",
    ])
    output = subprocess.run(command, capture_output=True, text=True, timeout=duration * 10 + 120)
    return parse_result(output, "etcd-bench")


def measure_once(system, duration, conns):
    servers = harness.Servers()
    try:
        if system == KVSTORE:
            return run_kvstore_bench(start_kvstore(servers), duration)
        return run_etcd_bench(start_etcd(servers), duration, conns)
    finally:
        if system == ETCD:
            stop_one_by_one(servers)
        else:
            servers.stop()


def measure(system, duration, conns):
    result, other_load = harness.quietly(lambda: measure_once(system, duration, conns))
    sample = (float(result["ops_per_sec"]), float(result["p50_us"]), float(result["p99_us"]), int(result["errors"]))
    harness.log(f"  {system:<30} {sample[0]:>10,.0f} ops/s  p50 {sample[1]:>7,.0f} us  p99 {sample[2]:>7,.0f} us"
                f"  errors {sample[3]}  other load {other_load:.0%}")
    return sample


def median(samples, field):
    return statistics.median(sample[field] for sample in samples)


def table(samples):
    lines = [
        f"| {CLIENTS} clients x 1, 100% PUT | ops/s | p50 µs | p99 µs | rounds (ops/s) | rounds (p99 µs) |",
        "| --- | ---: | ---: | ---: | --- | --- |",
    ]
    for system in (KVSTORE, ETCD):
        runs = samples[system]
        errors = sum(sample[3] for sample in runs)
        note = f" ({errors} errors)" if errors else ""
        lines.append(
            f"| {system}{note} | {median(runs, 0):,.0f} | {median(runs, 1):,.0f} | {median(runs, 2):,.0f} "
            f"| {', '.join(f'{sample[0]:,.0f}' for sample in runs)} "
            f"| {', '.join(f'{sample[2]:,.0f}' for sample in runs)} |"
        )
    a, b = samples[KVSTORE], samples[ETCD]

    def ratio(field):
        return median(a, field) / median(b, field) if median(b, field) else float("nan")

    lines.append(f"| kvstore / etcd | **{ratio(0):.2f}x** | {ratio(1):.2f}x | {ratio(2):.2f}x | | |")
    met = ratio(0) >= TARGET_RATIO and median(a, 2) < median(b, 2)
    verdict = (f"\nTarget ({TARGET_RATIO:g}x etcd's ops/s at a lower p99): "
               f"{'met' if met else 'not met'} ({ratio(0):.2f}x ops/s, p99 {median(a, 2):,.0f} "
               f"vs {median(b, 2):,.0f} µs).\n")
    return "\n".join(lines) + "\n" + verdict


def etcd_version():
    output = subprocess.run(["etcd", "--version"], capture_output=True, text=True).stdout
    fields = dict(line.split(": ", 1) for line in output.splitlines() if ": " in line)
    return f"etcd {fields.get('etcd Version', '?')} ({fields.get('Go Version', '?')})"


def stop_on_signal(number, _frame):
    # SIGTERM/SIGHUP unwind like Ctrl-C: the `finally`s stop every server by PID.
    raise SystemExit(128 + number)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="A/B rounds (default 3)")
    parser.add_argument("--duration", type=int, default=10, help="measured seconds per measurement (default 10)")
    parser.add_argument("--etcd-conns", type=int, default=1,
                        help="HTTP/2 connections etcd-bench spreads its 50 clients over (default 1)")
    parser.add_argument("--no-record", action="store_true", help="do not append to perf/RESULTS.md")
    parser.add_argument("--wait-quiet", action="store_true",
                        help="as for compare.py: start each measurement on an idle machine, repeat disturbed ones")
    arguments = parser.parse_args()
    if arguments.rounds < 1 or arguments.duration < 1 or arguments.etcd_conns < 1:
        parser.error("--rounds, --duration and --etcd-conns must be at least 1")
    harness.WAIT_FOR_QUIET = arguments.wait_quiet
    signal.signal(signal.SIGTERM, stop_on_signal)
    signal.signal(signal.SIGHUP, stop_on_signal)

    if not shutil.which("etcd"):
        sys.exit("etcd is not installed: run perf/etcd.sh, which installs the Debian package etcd-server")
    subprocess.run(["cargo", "build", "--release", "--quiet", "--bins"], cwd=harness.ROOT, check=True)
    subprocess.run(["cargo", "build", "--release", "--quiet", "--manifest-path",
                    str(ETCD_BENCH_DIR / "Cargo.toml")], cwd=harness.ROOT, check=True)
    version = etcd_version()

    samples = {KVSTORE: [], ETCD: []}
    for round_number in range(arguments.rounds):
        harness.log(f"round {round_number + 1}/{arguments.rounds}")
        for system in (KVSTORE, ETCD):
            samples[system].append(measure(system, arguments.duration, arguments.etcd_conns))

    machine_line, commit = harness.machine()
    command = "perf/etcd.sh" + (f" --rounds {arguments.rounds}" if arguments.rounds != 3 else "") \
        + (f" --duration {arguments.duration}" if arguments.duration != 10 else "") \
        + (f" --etcd-conns {arguments.etcd_conns}" if arguments.etcd_conns != 1 else "") \
        + (" --wait-quiet" if arguments.wait_quiet else "")
    report = (
        f"\n## etcd: {datetime.datetime.now():%Y-%m-%d %H:%M} — commit {commit}\n\n"
        f"{machine_line}; {version}, 3 members, default (fsync) WAL, gRPC KV/Put to the leader over "
        f"{arguments.etcd_conns} HTTP/2 connection(s) from perf/etcd-bench; kvstore 3 nodes, sync replication, "
        f"`--fsync always`, line protocol via kvstore-bench. {CLIENTS} clients x 1 in flight, 100% PUT, "
        f"{VALUE_SIZE}-byte values, {KEYSPACE:,} keys, {WARMUP_S} s warmup + {arguments.duration} s per "
        f"measurement, servers on CPU 0 and load generator on CPU 1, {arguments.rounds} rounds (A B A B), "
        f"medians shown. Command: `{command}`\n\n"
        + table(samples)
        + "\n" + harness.other_load_line()
    )
    harness.record(report, not arguments.no_record)


if __name__ == "__main__":
    main()
