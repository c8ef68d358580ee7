#!/usr/bin/env python3
"""Side-by-side load comparison of kvstore, Redis and the echo ceiling on
loopback, in one run.

    perf/compare.py                    # every comparison but memory, 3 rounds, 10 s each
    perf/compare.py --rounds 1 --duration 2 --only echo --no-record   # a quick look
    perf/compare.py --only fsync-never,echo --wait-quiet   # on a machine others use too

For each comparison (A vs B) and each shape (50 clients x pipeline 1, and
x pipeline 32; 50% GET, 100-byte values, 100,000 preloaded keys) it measures
A, B, A, B, ... so drift on a noisy machine shows, starting every server
itself on a spare port with a fresh data dir and stopping it by PID. Servers
run on CPU 0 and the load generator on CPU 1 (taskset) when there are two.
It prints a table of median ops/s and p99 with the ratio A/B (the median of
the rounds' own A/B, and median A / median B beside it), then issue #12's
targets table for the comparisons that ran (the same-round median against
each target, met or missed), and appends it all to perf/RESULTS.md
(unless --no-record) with the date, commit and machine, and with how much
CPU other processes used meanwhile (all CPU time in /proc/stat minus our
own children's), so a run on a shared machine says so.

Comparisons (--only NAME, repeatable or comma-separated), driven by
kvstore-bench:
  fsync-never      kvstore --fsync never          vs Redis appendonly no
  echo             kvstore --fsync never          vs the echo ceiling: perf/echo-ceiling,
                   a bare mio loop answering OK to every line (built here with cargo),
                   the ceiling for any single-threaded line server on this machine
  fsync-always     kvstore --fsync always         vs Redis appendonly yes, appendfsync always
  cluster          kvstore 3 nodes, sync repl.    vs kvstore 1 node (both --fsync always;
                   all three nodes on the server's one CPU)
  fsync-interval   kvstore --fsync interval       vs Redis appendonly yes, appendfsync everysec
                   (--fsync-interval-ms 1000)
  tls              kvstore --fsync never with TLS vs without (certificates made with openssl;
                   the load generator verifies the server against the CA)
  resp             kvstore --fsync never over RESP vs over the line protocol (same server,
                   same flags; kvstore-bench --proto resp vs --proto line): what parsing
                   and encoding RESP costs on the hot path
  resp-redis       kvstore --fsync never over RESP vs Redis appendonly no (both driven by
                   kvstore-bench --proto resp, byte-identical requests)
driven by redis-benchmark (perf/redis_benchmark.py's runs: SET then GET, same
flags for both servers, kvstore over RESP; -n scaled by --duration / 10):
  redis-benchmark         kvstore --fsync never  vs Redis appendonly no
  redis-benchmark-always  kvstore --fsync always vs Redis appendonly yes, appendfsync always
and only when named:
  memory           RSS after loading 1,000,000 keys of 100 bytes: kvstore vs Redis

A run without --only runs every comparison above but memory, the targets'
first; at --rounds 3 --duration 10 that is 96 kvstore-bench measurements of
about 12 s (warmup, preload, server start and stop included) and 24
redis-benchmark runs of 5-10 s: about 25 minutes on a quiet machine, more
with --wait-quiet (at least 10 quiet seconds before each measurement).

Redis comes from the OS packages (redis-server, redis-tools): installed with
apt-get if missing, and run as our own process, never the system service.
"""

import argparse
import datetime
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import (  # noqa: E402  (servers, pinning, other load: shared with redis_benchmark.py)
    BENCH, NEEDS_ECHO, SYSTEMS, OtherLoad, Servers, build_echo, build_kvstore, ensure_redis,
    ensure_redis_benchmark, log, machine, other_load_line, pinned, quietly, same_round_ratios, wait_quiet_help,
)
import harness  # noqa: E402
import redis_benchmark  # noqa: E402

CLIENTS = 50
KEYSPACE = 100_000
VALUE_SIZE = 100
GET_RATIO = 0.5
SHAPES = [1, 32]


COMPARISONS = {
    "fsync-never": ("kvstore fsync never", "redis appendonly no"),
    "fsync-always": ("kvstore fsync always", "redis appendfsync always"),
    "cluster": ("kvstore 3-node sync cluster", "kvstore 1 node"),
    "tls": ("kvstore fsync never, TLS", "kvstore fsync never"),
    "resp": ("kvstore fsync never, RESP", "kvstore fsync never"),
    "resp-redis": ("kvstore fsync never, RESP", "redis appendonly no"),
    "echo": ("kvstore fsync never", "echo ceiling"),
    "fsync-interval": ("kvstore fsync interval", "redis appendfsync everysec"),
}

# redis-benchmark (redis_benchmark.py's comparisons), run from here: same
# servers and flags on both sides, A B A B, rows in this run's section.
REDIS_BENCHMARK = {
    "redis-benchmark": "fsync-never",
    "redis-benchmark-always": "fsync-always",
}
# redis_benchmark.py's request counts take about this long per test; other
# --duration values scale them.
REDIS_BENCHMARK_SECONDS = 10

# Issue #12's targets: (shape, comparison, pipeline, target A/B, the median
# of same-round ratios, at least).
TARGETS = [
    ("`--fsync never` vs Redis `appendonly no`, pipeline 32", "fsync-never", 32, 2.5),
    ("`--fsync never` vs the echo ceiling, pipeline 32", "echo", 32, 0.6),
    ("`--fsync never` vs the echo ceiling, pipeline 1", "echo", 1, 0.95),
    ("`--fsync always` vs Redis `appendfsync always`, pipeline 1", "fsync-always", 1, 1.5),
    ("`--fsync always` vs Redis `appendfsync always`, pipeline 32", "fsync-always", 32, 2.5),
    ("3-node cluster (sync replication, fsync always, all nodes on the server's one core) vs 1 node, "
     "pipeline 32", "cluster", 32, 0.6),
]

# What a run without --only runs: every comparison (the targets' included),
# not memory (not among the targets, not a throughput figure).
DEFAULT = ["fsync-never", "echo", "fsync-always", "cluster"]
DEFAULT += [name for name in COMPARISONS if name not in DEFAULT] + list(REDIS_BENCHMARK)
NAMES = DEFAULT + ["memory"]


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
        "| comparison | clients x pipeline | A | A ops/s | A p99 µs | B | B ops/s | B p99 µs "
        "| A/B ops/s, same round | A/B of medians | A rounds (ops/s) | B rounds (ops/s) |",
        "| --- | --- | --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for name, pipeline, first, second, samples in rows:
        a, b = samples[first], samples[second]
        ratio = median(a, 0) / median(b, 0) if median(b, 0) else float("nan")
        same_round, _ = same_round_ratios([sample[0] for sample in a], [sample[0] for sample in b])
        rounds_a = ", ".join(f"{sample[0]:,.0f}" for sample in a)
        rounds_b = ", ".join(f"{sample[0]:,.0f}" for sample in b)
        errors = sum(sample[2] for sample in a + b)
        note = f" ({errors} errors)" if errors else ""
        lines.append(
            f"| {name}{note} | {CLIENTS} x {pipeline} | {first} | {median(a, 0):,.0f} | {median(a, 1):,.0f} "
            f"| {second} | {median(b, 0):,.0f} | {median(b, 1):,.0f} | **{same_round:.2f}x** | {ratio:.2f}x "
            f"| {rounds_a} | {rounds_b} |"
        )
    return "\n".join(lines)


def targets_table(rows):
    """Issue #12's targets whose comparisons ran, with the median of
    same-round ratios measured."""
    measured = {(name, pipeline): (first, second, samples) for name, pipeline, first, second, samples in rows}
    lines = [
        f"Issue #12 targets ({CLIENTS} clients, {int(GET_RATIO * 100)}% GET, {VALUE_SIZE} B values, "
        f"{KEYSPACE // 1000}k keys; median of same-round ratios):",
        "",
        "| shape | measured | A/B per round | target | |",
        "| --- | ---: | --- | ---: | --- |",
    ]
    for shape, name, pipeline, target in TARGETS:
        if (name, pipeline) not in measured:
            continue
        first, second, samples = measured[name, pipeline]
        ratio, ratios = same_round_ratios([sample[0] for sample in samples[first]],
                                          [sample[0] for sample in samples[second]])
        errors = sum(sample[2] for sample in samples[first] + samples[second])
        verdict = "met" if ratio >= target else "missed"
        if errors:
            verdict += f" ({errors} errors)"
        per_round = ", ".join(f"{value:.2f}" for value in ratios)
        lines.append(f"| {shape} | **{ratio:.2f}x** | {per_round} | {target:g}x | {verdict} |")
    return "\n".join(lines) if len(lines) > 4 else ""


def redis_benchmark_rows(name, rounds, duration):
    return redis_benchmark.run_comparison(REDIS_BENCHMARK[name], rounds, duration / REDIS_BENCHMARK_SECONDS)


def redis_benchmark_section(rows):
    version = subprocess.run(["redis-benchmark", "--version"], capture_output=True, text=True).stdout.strip()
    requests = ", ".join(f"-n {count:,} at -P {pipeline}" for pipeline, count in
                         sorted({(row[1], row[2]) for row in rows}))
    return (
        f"redis-benchmark ({version}), a load generator nobody here wrote, against the same servers: "
        f"`redis-benchmark -t set,get -c {redis_benchmark.CLIENTS} -d {redis_benchmark.VALUE_SIZE} "
        f"-r {redis_benchmark.KEYSPACE} --csv` with {requests} (redis_benchmark.py's counts x "
        f"--duration / {REDIS_BENCHMARK_SECONDS}), kvstore over RESP; comparison names are redis_benchmark.py's.\n\n"
        + redis_benchmark.table(rows) + "\n"
    )


def comparison_names(text):
    """--only's argument: one name, or several separated by commas."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in NAMES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown comparison {text!r}; choose from {', '.join(NAMES)}")
    return names


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="A/B rounds per shape (default 3)")
    parser.add_argument("--duration", type=int, default=10, help="seconds per measurement (default 10)")
    parser.add_argument("--only", type=comparison_names, action="extend", metavar="NAME[,NAME...]",
                        help=f"run only these comparisons (repeatable): {', '.join(NAMES)}")
    parser.add_argument("--no-record", action="store_true", help="do not append to perf/RESULTS.md")
    parser.add_argument("--wait-quiet", action="store_true",
                        help=wait_quiet_help())
    arguments = parser.parse_args()
    harness.WAIT_FOR_QUIET = arguments.wait_quiet

    build_kvstore()
    names = list(dict.fromkeys(arguments.only or DEFAULT))
    if any(system in NEEDS_ECHO for name in names if name in COMPARISONS for system in COMPARISONS[name]):
        build_echo()
    ensure_redis()
    if any(name in REDIS_BENCHMARK for name in names):
        ensure_redis_benchmark()
    rows, benchmark_rows = [], []
    for name in names:
        if name in COMPARISONS:
            rows += compare(name, arguments.rounds, arguments.duration)
        elif name in REDIS_BENCHMARK:
            benchmark_rows += redis_benchmark_rows(name, arguments.rounds, arguments.duration)
    memory = memory_table() if "memory" in names else ""
    targets = targets_table(rows)
    machine_line, commit = machine()
    report = (
        f"\n## {datetime.datetime.now():%Y-%m-%d %H:%M} — commit {commit}\n\n"
        f"{machine_line}; {CLIENTS} clients, {int(GET_RATIO * 100)}% GET, {VALUE_SIZE}-byte values, "
        f"{KEYSPACE:,} preloaded keys, {arguments.duration} s per measurement, {arguments.rounds} rounds "
        f"(A B A B), medians shown; \"same round\" is the median over rounds of A/B within the round. Command: `perf/compare.py --rounds {arguments.rounds} "
        f"--duration {arguments.duration}" + (f" --only {','.join(names)}" if arguments.only else "")
        + (" --wait-quiet" if arguments.wait_quiet else "") + "`\n\n"
        + (table(rows) + "\n" if rows else "")
        + ("\n" + redis_benchmark_section(benchmark_rows) if benchmark_rows else "")
        + ("\n" + targets + "\n" if targets else "")
        + ("\n" + memory + "\n" if memory else "")
        + ("\n" + other_load_line() if OtherLoad.kept else "")
    )
    harness.record(report, not arguments.no_record)


if __name__ == "__main__":
    main()
