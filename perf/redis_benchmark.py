#!/usr/bin/env python3
"""kvstore against Redis, measured by Redis's own load generator.

    perf/redis_benchmark.py                       # 3 rounds, fsync never and fsync always
    perf/redis_benchmark.py --rounds 2 --only fsync-never --no-record
    perf/redis_benchmark.py --wait-quiet          # on a machine others use too

compare.py measures both servers with kvstore-bench, a tool written here.
This script asks a tool nobody here wrote, redis-benchmark (Debian's
redis-tools, installed with apt-get if missing), the same question, with the
same flags for both servers:

    redis-benchmark -t set,get -n <N> -c 50 -P <1|32> -d 100 -r 100000 --csv

One invocation runs the SET test, then the GET test (on the keys the SETs
wrote: with -r 100000 and N >= 500,000 nearly every key exists). For each
comparison and pipeline depth it measures A, B, A, B, ... for --rounds
rounds, every server started fresh (own port, own data dir, stopped by PID)
on CPU 0 and redis-benchmark on CPU 1, as compare.py does. It prints the
median requests/s and p99 per command, and the ratio A/B (the median of the
rounds' own A/B, and median A / median B beside it), and appends the
table to perf/RESULTS.md with the date, commit and machine, and the CPU other
processes used meanwhile (perf/harness.py's OtherLoad).

Comparisons:
  fsync-never   kvstore --fsync never   vs Redis appendonly no
  fsync-always  kvstore --fsync always  vs Redis appendonly yes, appendfsync always

Each server's DBSIZE is read after the run, so a server that silently
dropped the SETs shows in the log rather than as a fast GET test.
"""

import argparse
import csv
import datetime
import io
import socket
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402  (the servers, pinning and machine description, shared with compare.py)

CLIENTS = 50
KEYSPACE = 100_000
VALUE_SIZE = 100
SHAPES = [1, 32]
TESTS = ("SET", "GET")
# Requests per test, per pipeline depth: about 3-8 s per test on a 2-core machine.
REQUESTS = {1: 500_000, 32: 3_000_000}
RUN_TIMEOUT_S = 600

COMPARISONS = {
    "fsync-never": ("kvstore fsync never", "redis appendonly no"),
    "fsync-always": ("kvstore fsync always", "redis appendfsync always"),
}


def run_redis_benchmark(address, pipeline, requests):
    """{test: (requests/s, p99 ms)} from one redis-benchmark invocation."""
    host, port = address.rsplit(":", 1)
    command = harness.pinned(1, [
        "redis-benchmark", "-h", host, "-p", port, "-t", "set,get", "-n", str(requests),
        "-c", str(CLIENTS), "-P", str(pipeline), "-d", str(VALUE_SIZE), "-r", str(KEYSPACE), "--csv",
    ])
    output = subprocess.run(command, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    if output.returncode != 0:
        raise RuntimeError(f"redis-benchmark failed: {output.stderr.strip() or output.stdout.strip()}")
    if "error" in output.stderr.lower():
        raise RuntimeError(f"redis-benchmark reported errors: {output.stderr.strip()[:500]}")
    results = {}
    for row in csv.DictReader(io.StringIO(output.stdout)):
        results[row["test"]] = (float(row["rps"]), float(row["p99_latency_ms"]))
    missing = [test for test in TESTS if test not in results]
    if missing:
        raise RuntimeError(f"redis-benchmark printed no result for {missing}: {output.stdout.strip()}")
    return results


def database_size(address):
    """The server's DBSIZE, over RESP (both servers answer it)."""
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        connection.sendall(b"*1\r\n$6\r\nDBSIZE\r\n")
        reply = b""
        while not reply.endswith(b"\r\n"):
            chunk = connection.recv(64)
            if not chunk:
                break
            reply += chunk
    if not reply.startswith(b":"):
        raise RuntimeError(f"unexpected DBSIZE reply {reply!r}")
    return int(reply[1:].strip())


def measure_once(system, pipeline, requests):
    servers = harness.Servers()
    try:
        address, _, _ = harness.SYSTEMS[system](servers)
        return run_redis_benchmark(address, pipeline, requests), database_size(address)
    finally:
        servers.stop()


def measure(system, pipeline, requests):
    (results, keys), other_load = harness.quietly(lambda: measure_once(system, pipeline, requests))
    figures = "  ".join(f"{test} {results[test][0]:>12,.0f}/s p99 {results[test][1]:>6.3f} ms" for test in TESTS)
    harness.log(f"  {system:<26} pipeline {pipeline:>2}: {figures}  DBSIZE {keys:,}  other load {other_load:.0%}")
    return results


def run_comparison(name, rounds, scale):
    first, second = COMPARISONS[name]
    rows = []
    for pipeline in SHAPES:
        requests = int(REQUESTS[pipeline] * scale)
        samples = {first: [], second: []}
        for round_number in range(rounds):
            harness.log(f"{name}, pipeline {pipeline}, round {round_number + 1}/{rounds}")
            for system in (first, second):
                samples[system].append(measure(system, pipeline, requests))
        rows.append((name, pipeline, requests, first, second, samples))
    return rows


def median(samples, test, field):
    return statistics.median(sample[test][field] for sample in samples)


def table(rows):
    lines = [
        "| comparison | test | -c x -P | A | A req/s | A p99 ms | B | B req/s | B p99 ms "
        "| A/B req/s, same round | A/B of medians | A rounds (req/s) | B rounds (req/s) |",
        "| --- | --- | --- | --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for name, pipeline, _, first, second, samples in rows:
        a, b = samples[first], samples[second]
        for test in TESTS:
            ratio = median(a, test, 0) / median(b, test, 0)
            same_round, _ = harness.same_round_ratios([sample[test][0] for sample in a],
                                                      [sample[test][0] for sample in b])
            rounds_a = ", ".join(f"{sample[test][0]:,.0f}" for sample in a)
            rounds_b = ", ".join(f"{sample[test][0]:,.0f}" for sample in b)
            lines.append(
                f"| {name} | {test} | {CLIENTS} x {pipeline} | {first} | {median(a, test, 0):,.0f} "
                f"| {median(a, test, 1):.3f} | {second} | {median(b, test, 0):,.0f} | {median(b, test, 1):.3f} "
                f"| **{same_round:.2f}x** | {ratio:.2f}x | {rounds_a} | {rounds_b} |"
            )
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="A/B rounds per shape (default 3)")
    parser.add_argument("--scale", type=float, default=1.0,
                        help=f"multiply the requests per test ({REQUESTS[1]:,} at -P 1, {REQUESTS[32]:,} at -P 32)")
    parser.add_argument("--only", choices=sorted(COMPARISONS), action="append", help="run only these comparisons")
    parser.add_argument("--no-record", action="store_true", help="do not append to perf/RESULTS.md")
    parser.add_argument("--wait-quiet", action="store_true",
                        help="as for compare.py: start each measurement on an idle machine, repeat disturbed ones")
    arguments = parser.parse_args()
    harness.WAIT_FOR_QUIET = arguments.wait_quiet

    harness.build_kvstore()
    harness.ensure_redis()
    harness.ensure_redis_benchmark()
    version = subprocess.run(["redis-benchmark", "--version"], capture_output=True, text=True).stdout.strip()
    rows = []
    for name in arguments.only or list(COMPARISONS):
        rows += run_comparison(name, arguments.rounds, arguments.scale)
    machine_line, commit = harness.machine()
    requests = ", ".join(f"-n {count:,} at -P {pipeline}" for pipeline, count in
                         sorted({(row[1], row[2]) for row in rows}))
    command = "perf/redis_benchmark.py" + (f" --rounds {arguments.rounds}" if arguments.rounds != 3 else "") \
        + (f" --scale {arguments.scale:g}" if arguments.scale != 1.0 else "") \
        + "".join(f" --only {name}" for name in arguments.only or []) \
        + (" --wait-quiet" if arguments.wait_quiet else "")
    report = (
        f"\n## redis-benchmark: {datetime.datetime.now():%Y-%m-%d %H:%M} — commit {commit}\n\n"
        f"{machine_line}; {version}; `redis-benchmark -t set,get -c {CLIENTS} -d {VALUE_SIZE} "
        f"-r {KEYSPACE} --csv` with {requests}; {arguments.rounds} rounds (A B A B), medians shown; "
        f"\"same round\" is the median over rounds of A/B within the round. "
        f"Command: `{command}`\n\n"
        + table(rows) + "\n"
        + "\n" + harness.other_load_line()
    )
    harness.record(report, not arguments.no_record)


if __name__ == "__main__":
    main()
