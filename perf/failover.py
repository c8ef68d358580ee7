#!/usr/bin/env python3
"""Failover instrument for issue #12: how long a 3-node cluster takes to
acknowledge a write after its leader falls silent, and whether a busy loop
causes false elections.

    perf/failover.py                                   # 10 trials, 60 s of load, appended to RESULTS.md
    perf/failover.py --trials 3 --load-seconds 5 --no-record
    perf/failover.py --trials 20 --load-seconds 0      # failover time only

1. Failover time (--trials N). A 3-node cluster with default flags (fresh
   data dirs and free ports; servers on CPU 0, this script on CPU 1). Per
   trial: wait until the cluster is stable (every node names the same
   leader, the highest id as Bully wants, and a PUT to it is acknowledged);
   SIGSTOP the leader (t0, just before the signal): a silent leader, no
   connection closes, only timeouts tell. Then one probe connection per
   surviving node keeps one `PUT failover:<trial> <n>` in flight, resending
   1 ms after a NOT_LEADER or ERR (and on a fresh connection after 250 ms
   without a reply); t1 is when the first OK arrives. failover = t1 - t0.
   The old leader is then SIGCONTed and the cluster left to settle (under
   Bully it takes leadership back). The servers' own log lines (wall clock,
   1 ms resolution) split each trial into detection (t0 to the first
   "election started"), election (to "leadership won") and the first commit
   (to t1).

2. False elections under load (--load-seconds S, 0 skips). A fresh cluster
   with default flags (fsync always, sync replication) driven for S seconds
   by kvstore-bench --clients 50 --pipeline 32 --get-ratio 0.5 --value-size
   100 --keyspace 100000 (on CPU 1). Leader changes and elections started
   are read from every node's /metrics (kvstore_leader_changes_total,
   kvstore_elections_started_total) and the epoch from ROLE, before and
   after. Zero is the target.

The table is printed and appended to perf/RESULTS.md with the date, commit,
machine and the CPU other processes used meanwhile (see perf/harness.py,
whose helpers this uses), unless --no-record.
"""

import argparse
import datetime
import os
import re
import resource
import selectors
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.dont_write_bytecode = True  # importing harness.py leaves no perf/__pycache__
sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402  (ports, pinning, servers, other load, machine: shared with compare.py)
from harness import BENCH, OtherLoad, ROOT, SERVER, free_port, log, pinned  # noqa: E402

NODES = 3
STABLE_TIMEOUT_S = 60
TRIAL_TIMEOUT_S = 30
REPLY_TIMEOUT_S = 0.25
RESEND_DELAY_S = 0.001
LOAD_CLIENTS = 50
LOAD_PIPELINE = 32


class Cluster(harness.Servers):
    """Three nodes with default flags but for ports, data dirs and a metrics
    port each; their stderr is kept for the election timeline."""

    def __init__(self, extra=()):
        super().__init__()
        self.extra = list(extra)
        self.ports = [free_port() for _ in range(NODES)]
        self.metrics = [free_port() for _ in range(NODES)]
        self.pids = {}
        self.logs = {}

    def start(self):
        for port, metrics in zip(self.ports, self.metrics):
            peers = ",".join(f"127.0.0.1:{other}" for other in self.ports if other != port)
            command = [str(SERVER), str(port), peers, "--data-dir", f"{self.directory.name}/{port}",
                       "--metrics-addr", f"127.0.0.1:{metrics}", *self.extra]
            self.logs[port] = Path(self.directory.name) / f"{port}.log"
            with self.logs[port].open("wb") as stderr:
                process = subprocess.Popen(pinned(0, command), stdout=subprocess.DEVNULL, stderr=stderr,
                                           cwd=self.directory.name)
            self.processes.append(process)
            self.pids[port] = process.pid
            harness.wait_for_port(port, process, f"kvstore-server {port}")

    def signal(self, port, number):
        os.kill(self.pids[port], number)

    def stop(self):
        # A stopped process would not see SIGTERM.
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGCONT)
        super().stop()


def ask(port, line, timeout=1.0):
    """One request on a fresh connection; its one-line reply, or None."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as connection:
            connection.sendall(line.encode() + b"\n")
            reply = b""
            while not reply.endswith(b"\n"):
                chunk = connection.recv(4096)
                if not chunk:
                    return None
                reply += chunk
            return reply.decode().strip()
    except OSError:
        return None


def role(port):
    """ROLE's fields: (role, leader id, epoch), or None if it did not answer."""
    reply = ask(port, "ROLE", timeout=0.5)
    fields = reply.split() if reply else []
    if len(fields) < 3 or not fields[1].lstrip("-").isdigit():
        return None
    return fields[0], int(fields[1]), int(fields[2])


def wait_stable(cluster, want_leader=None, timeout=STABLE_TIMEOUT_S):
    """Polls until every node names one leader (want_leader, if given), that
    node says it leads, and a PUT to it is acknowledged. Returns the leader's
    port and epoch, and how long it took."""
    start = time.monotonic()
    deadline = start + timeout
    while time.monotonic() < deadline:
        roles = [role(port) for port in cluster.ports]
        leaders = {found[1] for found in roles if found}
        if None not in roles and len(leaders) == 1:
            leader = leaders.pop()
            if leader in cluster.ports and (want_leader is None or leader == want_leader):
                own = roles[cluster.ports.index(leader)]
                if own[0] == "leader" and ask(leader, "PUT failover:stable 1") == "OK":
                    return leader, own[2], time.monotonic() - start
        time.sleep(0.005)
    raise RuntimeError(f"no stable leader within {timeout} s: {[role(port) for port in cluster.ports]}")


class Probe:
    """One connection to one node keeping one PUT in flight."""

    def __init__(self, port, trial, selector):
        self.port, self.trial, self.selector = port, trial, selector
        self.sent = 0
        self.socket = None
        self.buffer = b""
        self.deadline = None      # reply expected by then
        self.resend_at = None     # next PUT goes out then
        self.first_new_leader = None  # (time, id): first NOT_LEADER naming another leader
        self.replies = {}
        self.connect()

    def connect(self):
        if self.socket is not None:
            self.selector.unregister(self.socket)
            self.socket.close()
        self.socket = socket.create_connection(("127.0.0.1", self.port), timeout=1.0)
        self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.socket.setblocking(False)
        self.selector.register(self.socket, selectors.EVENT_READ, self)
        self.buffer = b""

    def send(self, now):
        self.sent += 1
        self.socket.sendall(f"PUT failover:{self.trial} {self.sent}\n".encode())
        self.deadline = now + REPLY_TIMEOUT_S
        self.resend_at = None

    def readable(self, now, old_leader):
        """Reads what arrived; True once an OK did."""
        try:
            chunk = self.socket.recv(4096)
        except BlockingIOError:
            return False
        if not chunk:  # closed: start again on a new connection
            self.connect()
            self.deadline, self.resend_at = None, now + RESEND_DELAY_S
            return False
        self.buffer += chunk
        while b"\n" in self.buffer:
            line, self.buffer = self.buffer.split(b"\n", 1)
            reply = line.decode(errors="replace").strip()
            kind = " ".join(reply.split()[:2]) if reply.startswith("NOT_LEADER") else reply.split(" ")[0]
            self.replies[kind] = self.replies.get(kind, 0) + 1
            if reply == "OK":
                return True
            fields = reply.split()
            if (self.first_new_leader is None and len(fields) >= 2 and fields[0] == "NOT_LEADER"
                    and fields[1] not in ("-1", str(old_leader))):
                self.first_new_leader = (now, int(fields[1]))
            self.deadline, self.resend_at = None, now + RESEND_DELAY_S
        return False

    def due(self, now):
        if self.resend_at is not None and now >= self.resend_at:
            self.send(now)
        elif self.deadline is not None and now >= self.deadline:
            # No reply in time: a reply may still come, so a fresh connection
            # keeps exactly one PUT in flight.
            self.connect()
            self.send(now)

    def next_wakeup(self):
        return min(t for t in (self.deadline, self.resend_at) if t is not None)


LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3})Z \w+ node=(\d+) (.*)$")


def log_events(cluster, since_wall, until_wall):
    """(wall time, node, message) of the servers' lines in a window."""
    events = []
    for path in cluster.logs.values():
        for line in path.read_text(errors="replace").splitlines():
            match = LOG_LINE.match(line)
            if not match:
                continue
            stamp = datetime.datetime.fromisoformat(match[1]).replace(tzinfo=datetime.timezone.utc).timestamp()
            if since_wall - 0.002 <= stamp <= until_wall + 0.002:
                events.append((stamp, int(match[2]), match[3]))
    return sorted(events)


def trial(cluster, number):
    """One failover; returns its figures."""
    leader, epoch, _ = wait_stable(cluster, want_leader=max(cluster.ports))
    survivors = [port for port in cluster.ports if port != leader]
    selector = selectors.DefaultSelector()
    probes = [Probe(port, number, selector) for port in survivors]
    t0_wall = time.time()
    t0 = time.monotonic()
    cluster.signal(leader, signal.SIGSTOP)
    try:
        now = time.monotonic()
        for probe in probes:
            probe.send(now)
        winner = None
        while winner is None:
            now = time.monotonic()
            if now - t0 > TRIAL_TIMEOUT_S:
                raise RuntimeError(f"trial {number}: no write acknowledged within {TRIAL_TIMEOUT_S} s")
            wait = max(0.0, min(probe.next_wakeup() for probe in probes) - now)
            for key, _ in selector.select(timeout=wait):
                if key.data.readable(time.monotonic(), leader):
                    winner = key.data
                    break
            if winner is None:
                now = time.monotonic()
                for probe in probes:
                    probe.due(now)
        t1 = time.monotonic()
    finally:
        cluster.signal(leader, signal.SIGCONT)
        for probe in probes:
            probe.socket.close()
        selector.close()
    failover_ms = (t1 - t0) * 1000
    result = {
        "failover_ms": failover_ms, "old_leader": leader, "new_leader": winner.port, "epoch_before": epoch,
        "probe_puts": sum(probe.sent for probe in probes),
        "replies": {kind: sum(probe.replies.get(kind, 0) for probe in probes)
                    for kind in set().union(*(probe.replies for probe in probes))},
    }
    known = [probe.first_new_leader[0] for probe in probes if probe.first_new_leader]
    result["redirect_ms"] = (min(known) - t0) * 1000 if known else None
    # The servers' timeline, from their log lines (1 ms resolution).
    events = log_events(cluster, t0_wall, t0_wall + failover_ms / 1000)
    started = [stamp for stamp, node, text in events if node != leader and text.startswith("election started")]
    won = [stamp for stamp, node, text in events if node != leader and text.startswith("leadership won")]
    result["detect_ms"] = (started[0] - t0_wall) * 1000 if started else None
    result["won_ms"] = (won[0] - t0_wall) * 1000 if won else None
    result["elections"] = len(started)
    result["timeline"] = [(round((stamp - t0_wall) * 1000), node, text) for stamp, node, text in events]
    # Let the old leader come back and (Bully) take over again.
    _, _, settle_s = wait_stable(cluster, want_leader=max(cluster.ports))
    result["settle_s"] = settle_s
    return result


def failover(trials, extra):
    cluster = Cluster(extra)
    results = []
    try:
        cluster.start()
        leader, epoch, took = wait_stable(cluster)
        log(f"failover: cluster {cluster.ports} up, leader {leader} epoch {epoch} after {took:.2f} s")
        for number in range(1, trials + 1):
            if harness.WAIT_FOR_QUIET:
                harness.wait_for_quiet()
            with OtherLoadAround(cluster) as other:
                result = trial(cluster, number)
            other = other.fraction
            results.append(result)
            log(f"  trial {number}/{trials}: {result['failover_ms']:6.1f} ms  "
                f"(detection {fmt(result['detect_ms'])}, leadership won {fmt(result['won_ms'])}, "
                f"new leader {result['new_leader']}, {result['probe_puts']} PUTs, replies {result['replies']}, "
                f"settled in {result['settle_s']:.2f} s, other load {other:.0%})")
            for offset_ms, node, text in result["timeline"]:
                log(f"      +{offset_ms:4d} ms node {node}: {text}")
    finally:
        cluster.stop()
    return results


class OtherLoadAround(OtherLoad):
    """harness.OtherLoad counts as ours only children already waited for;
    these clusters outlive a measurement, so their CPU time so far is read
    from /proc, and this script's own is counted too."""

    def __init__(self, cluster):
        self.cluster = cluster

    def own(self):
        usage = resource.getrusage(resource.RUSAGE_SELF)
        total = harness.own_cpu_seconds() + usage.ru_utime + usage.ru_stime
        for pid in self.cluster.pids.values():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return total

    def __enter__(self):
        self.start = (time.monotonic(), harness.busy_cpu_seconds(), self.own())
        return self

    def __exit__(self, *exception):
        wall, busy, own = (now - then for now, then in zip(
            (time.monotonic(), harness.busy_cpu_seconds(), self.own()), self.start))
        self.fraction = max(0.0, (busy - own) / wall)
        OtherLoad.kept.append(self.fraction)


def fmt(value, digits=0):
    return "-" if value is None else f"{value:.{digits}f}"


def metrics(port):
    """The unlabelled samples of a node's /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and "{" not in line:
            name, value = line.split()[:2]
            values[name] = float(value)
    return values


COUNTERS = ("kvstore_leader_changes_total", "kvstore_elections_started_total")


def under_load(seconds, extra):
    cluster = Cluster(extra)
    try:
        cluster.start()
        leader, epoch, _ = wait_stable(cluster)
        before = {port: metrics(metric) for port, metric in zip(cluster.ports, cluster.metrics)}
        log(f"load: {seconds} s of {LOAD_CLIENTS} clients x pipeline {LOAD_PIPELINE} on the cluster "
            f"(leader {leader}, epoch {epoch})")
        command = pinned(1, [
            str(BENCH), "--addr", f"127.0.0.1:{cluster.ports[0]}", "--clients", str(LOAD_CLIENTS),
            "--pipeline", str(LOAD_PIPELINE), "--get-ratio", "0.5", "--value-size", "100",
            "--keyspace", "100000", "--duration", str(seconds),
        ])
        if harness.WAIT_FOR_QUIET:
            harness.wait_for_quiet()
        with OtherLoadAround(cluster) as other:
            output = subprocess.run(command, capture_output=True, text=True, timeout=seconds * 10 + 120)
        after = {port: metrics(metric) for port, metric in zip(cluster.ports, cluster.metrics)}
        roles = [role(port) for port in cluster.ports]
        bench = {}
        for line in output.stdout.splitlines():
            if line.startswith("RESULT "):
                bench = dict(field.split("=", 1) for field in line.split()[1:])
        if output.returncode != 0 or not bench:
            log(f"  kvstore-bench exited with status {output.returncode}: {output.stderr.strip()[-500:]}")
        deltas = {name: {port: int(after[port].get(name, 0) - before[port].get(name, 0)) for port in cluster.ports}
                  for name in COUNTERS}
        epochs_after = sorted({found[2] for found in roles if found})
        result = {
            "seconds": seconds, "ops_per_sec": float(bench.get("ops_per_sec", "nan")),
            "p99_us": bench.get("p99_us", "-"), "errors": bench.get("errors", "-"),
            "bench_status": output.returncode, "epoch_before": epoch, "epochs_after": epochs_after,
            "leaders_after": sorted({found[1] for found in roles if found}), "other": other.fraction, **deltas,
        }
        log(f"  {result['ops_per_sec']:,.0f} ops/s, p99 {result['p99_us']} us, errors {result['errors']}; "
            f"leader changes {deltas[COUNTERS[0]]}, elections started {deltas[COUNTERS[1]]}, "
            f"epoch {epoch} -> {epochs_after}; other load {other.fraction:.0%}")
        return result
    finally:
        cluster.stop()


def failover_table(results):
    values = [result["failover_ms"] for result in results]
    lines = [
        "| failover (silent leader: SIGSTOP -> first OK from the new leader) | median ms | min ms | max ms | trials |",
        "| --- | ---: | ---: | ---: | ---: |",
        f"| 3 nodes | **{statistics.median(values):.0f}** | {min(values):.0f} | {max(values):.0f} "
        f"| {len(values)} |",
        "",
        "| trial | failover ms | first election started ms | leadership won ms | first NOT_LEADER naming the new "
        "leader ms | elections started | new leader | probe PUTs |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |",
    ]
    for number, result in enumerate(results, 1):
        lines.append(f"| {number} | {result['failover_ms']:.1f} | {fmt(result['detect_ms'])} | {fmt(result['won_ms'])} "
                     f"| {fmt(result['redirect_ms'], 1)} | {result['elections']} | {result['new_leader']} "
                     f"| {result['probe_puts']} |")
    detect = [r["detect_ms"] for r in results if r["detect_ms"] is not None]
    won = [r["won_ms"] for r in results if r["won_ms"] is not None]
    if detect and won:
        lines += ["", f"Medians: election started {statistics.median(detect):.0f} ms after the SIGSTOP, "
                      f"leadership won at {statistics.median(won):.0f} ms, first write acknowledged at "
                      f"{statistics.median(values):.0f} ms (times from the servers' log lines, 1 ms resolution)."]
    return "\n".join(lines)


def load_table(result):
    changes, elections = (result[name] for name in COUNTERS)
    per_node = lambda counts: ", ".join(f"{counts[port]}" for port in sorted(counts))  # noqa: E731
    note = "" if result["bench_status"] == 0 else f" (kvstore-bench exit status {result['bench_status']})"
    return "\n".join([
        f"| false elections under load ({LOAD_CLIENTS} clients x pipeline {LOAD_PIPELINE}, 50% GET, "
        f"{result['seconds']} s) | ops/s | p99 µs | errors | leader changes (per node) | elections started "
        "(per node) | epoch before -> after |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
        f"| 3 nodes{note} | {result['ops_per_sec']:,.0f} | {result['p99_us']} | {result['errors']} "
        f"| **{sum(changes.values())}** ({per_node(changes)}) | {sum(elections.values())} ({per_node(elections)}) "
        f"| {result['epoch_before']} -> {', '.join(map(str, result['epochs_after']))} |",
    ])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=10, help="failovers measured (default 10; 0 skips)")
    parser.add_argument("--load-seconds", type=int, default=60,
                        help="seconds of full load counting false elections (default 60; 0 skips)")
    parser.add_argument("--no-record", action="store_true", help="do not append to perf/RESULTS.md")
    parser.add_argument("--wait-quiet", action="store_true",
                        help="on a shared machine: start each trial and the load run on an idle machine "
                             "(the other load is reported either way)")
    parser.add_argument("--server-args", default="", metavar="FLAGS",
                        help="extra kvstore-server flags for every node, to try a change, e.g. "
                             "\"--election-timeout-ms 200\" (default: none, the default flags)")
    arguments = parser.parse_args()
    extra = shlex.split(arguments.server_args)
    harness.WAIT_FOR_QUIET = arguments.wait_quiet

    subprocess.run(["cargo", "build", "--release", "--quiet", "--bins"], cwd=ROOT, check=True)
    # The probes are the load generator here: on CPU 1, away from the servers.
    if (os.cpu_count() or 1) >= 2 and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {1})
    sections = []
    if arguments.trials > 0:
        sections.append(failover_table(failover(arguments.trials, extra)))
    if arguments.load_seconds > 0:
        sections.append(load_table(under_load(arguments.load_seconds, extra)))
    if not sections:
        return
    machine_line, commit = harness.machine()
    command = (f"perf/failover.py --trials {arguments.trials} --load-seconds {arguments.load_seconds}"
               + (" --wait-quiet" if arguments.wait_quiet else "")
               + (f" --server-args {shlex.quote(arguments.server_args)}" if extra else ""))
    defaults = "heartbeat 50 ms, election timeout 300 ms plus jitter, fsync always, sync replication"
    flags = (f"server flags: the defaults ({defaults}) plus `{arguments.server_args}`" if extra
             else f"default server flags ({defaults})")
    report = (
        f"\n## Failover: {datetime.datetime.now():%Y-%m-%d %H:%M} — commit {commit}\n\n"
        f"{machine_line}; {flags}, servers on CPU 0, probes and load generator on CPU 1. "
        f"Command: `{command}`\n\n"
        + "\n\n".join(sections) + "\n\n" + harness.other_load_line()
    )
    harness.record(report, not arguments.no_record)


if __name__ == "__main__":
    main()
