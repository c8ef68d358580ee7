"""What perf/compare.py and perf/redis_benchmark.py share: the servers
(started on a spare port with a fresh data dir, pinned on CPU 0, stopped by
PID), pinning, the CPU other processes use meanwhile (and --wait-quiet),
the machine's description and the OS packages (Redis) they need.

Not a script: the two scripts import it (`sys.path` holds perf/ when either
runs).
"""

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
ECHO_PROJECT = ROOT / "perf" / "echo-ceiling"
ECHO = ECHO_PROJECT / "target" / "release" / "echo-ceiling"
START_TIMEOUT_S = 30


def log(message):
    print(message, file=sys.stderr, flush=True)


def record(report, wanted=True):
    """Prints `report` and, if `wanted` (no --no-record), appends it to
    perf/RESULTS.md: what every perf script does with its findings."""
    print(report)
    if wanted:
        with RESULTS.open("a") as results:
            results.write(report)
        log(f"appended to {RESULTS.relative_to(ROOT)}")


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
# Set from --wait-quiet by the script that runs.
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


def wait_quiet_help():
    return ("on a shared machine: start each measurement on an idle machine, and repeat one "
            f"that other processes disturbed (over {QUIET_CPU_FRACTION * 100:.0f}%% of a CPU)")


def other_load_line():
    samples = OtherLoad.kept
    if not samples:
        return ""
    retried = f"; {OtherLoad.retried} disturbed measurements were repeated (--wait-quiet)" if OtherLoad.retried else ""
    return (f"Other processes used {statistics.mean(samples):.0%} of a CPU on average during "
            f"these measurements (at most {max(samples):.0%} during one; about 0-3% when the machine "
            f"is quiet){retried}.\n")


def same_round_ratios(first, second):
    """A_i / B_i for each round i (A and B measured back to back, so under
    the same load from elsewhere), and their median: the ratio to quote.
    median(A) / median(B) may pair a quiet round's A with a noisy round's B."""
    ratios = [a / b if b else float("nan") for a, b in zip(first, second)]
    return statistics.median(ratios), ratios


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


def start_kvstore(servers, fsync, nodes=1, tls=False, proto="line", flags=()):
    """Starts kvstore (`nodes` of them, one cluster); returns the address to
    load, the protocol and kvstore-bench's extra flags."""
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
        command += ["--fsync", fsync, "--data-dir", f"{servers.directory.name}/{port}", *server_tls, *flags]
        servers.spawn(command, port, f"kvstore-server {port}")
    # Any node will do: the load generator follows NOT_LEADER to the leader.
    return f"127.0.0.1:{ports[0]}", proto, bench_tls


def start_echo(servers):
    """The echo ceiling (perf/echo-ceiling): OK to every line, nothing stored."""
    port = free_port()
    servers.spawn([str(ECHO), str(port)], port, "echo-ceiling")
    return f"127.0.0.1:{port}", "line", []


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
    # Redis's everysec, spelled out: one fdatasync a second, off the loop.
    "kvstore fsync interval": lambda servers: start_kvstore(
        servers, "interval", flags=["--fsync-interval-ms", "1000"]),
    "redis appendfsync everysec": lambda servers: start_redis(servers, "yes", "everysec"),
    "echo ceiling": start_echo,
}

# The systems that need perf/echo-ceiling built.
NEEDS_ECHO = {"echo ceiling"}


def machine():
    """The machine's description and the commit measured."""
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


def build_kvstore():
    subprocess.run(["cargo", "build", "--release", "--quiet", "--bins"], cwd=ROOT, check=True)


def build_echo():
    """perf/echo-ceiling, its own cargo project (not in the root's workspace)."""
    subprocess.run(["cargo", "build", "--release", "--quiet", "--manifest-path", str(ECHO_PROJECT / "Cargo.toml")],
                   cwd=ROOT, check=True)


def apt_install(package, program):
    """Installs the OS package that provides `program` if it is missing."""
    if shutil.which(program):
        return
    log(f"{program} is missing; installing the OS package {package}")
    prefix = [] if os.geteuid() == 0 else ["sudo"]
    subprocess.run(prefix + ["apt-get", "update", "-qq"], check=True)
    subprocess.run(prefix + ["apt-get", "install", "-y", "-qq", package], check=True)


def ensure_redis():
    apt_install("redis-server", "redis-server")


def ensure_redis_benchmark():
    apt_install("redis-tools", "redis-benchmark")
