#!/usr/bin/env python3
"""Redis compatibility checks: real Redis tools and clients against kvstore.

    .ci/redis-compat                   # installs what is missing, builds, runs this against kvstore
    .ci/redis-compat --against-redis   # the same single-node checks against a real redis-server 7
    perf/redis_compat.py --against-redis --cluster   # also the cluster checks, against a
                                                     # 3-node Redis Cluster (validation only)
    perf/redis_compat.py --port 6379   # the single-node checks against a server you started

Needs redis-cli and redis-benchmark (the redis-tools package, 7.x), redis-py
>= 5 in the interpreter that runs it (`.ci/redis-compat` makes a venv under
target/redis-compat-venv) and, for kvstore, target/release/kvstore-server.

Single node (kvstore or, with --against-redis, redis-server --save ''
--appendonly no): redis-cli one-shot commands, binary-safe arguments, the
cross-protocol case (`GET "DEL k2"` must not delete k2), redis-cli reading
commands from a pipe and interactively in a pty (it asks COMMAND DOCS at
start), `redis-cli --pipe` mass insertion, redis-benchmark, redis-py with its
default protocol, RESP3 and RESP2 (commands, MULTI/EXEC pipelines, WATCH,
CLIENT SETNAME, INFO, HELLO), and the error texts clients parse.

Cluster (default against kvstore; --cluster adds it against Redis): three
nodes, redis-py RedisCluster and redis-cli -c across a kill -9 of the leader,
MOVED from followers, CLUSTER SLOTS / SHARDS / NODES.

Every check prints `ok - <what>` or `FAIL - <what>: <detail>`; the exit status
is 1 if any check failed. Servers run in a temporary directory on free ports
and are stopped by PID; every subprocess and socket has a timeout, and each
section has a time budget: a check that cannot run is a FAIL, never a skip.
"""

import argparse
import atexit
import fcntl
import os
import pty
import random
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
import warnings
from pathlib import Path

try:
    import redis
    from redis.backoff import NoBackoff
    from redis.cluster import ClusterNode, RedisCluster
    from redis.crc import key_slot
    from redis.retry import Retry
except ImportError as error:
    sys.exit(f"redis-compat: redis-py is missing ({error}); .ci/redis-compat installs it")

ROOT = Path(__file__).resolve().parent.parent
KVSTORE_SERVER = ROOT / "target" / "release" / "kvstore-server"
HOST = "127.0.0.1"

CLI_TIMEOUT = 5.0  # one redis-cli command
SOCKET_TIMEOUT = 5.0  # every socket this script or redis-py opens
START_TIMEOUT = 10.0  # a server's port accepting connections
SINGLE_BUDGET = 60.0  # seconds for the single-node section (about 5 s against Redis)
CLUSTER_BUDGET = 45.0  # seconds for the cluster section (about 4 s against Redis Cluster)
FAILOVER_DEADLINE = 20.0  # writes must succeed on a new leader this long after the kill
SLOTS = 16384


class CheckFailed(Exception):
    pass


def require(condition, detail):
    if not condition:
        raise CheckFailed(detail)


def show_argv(argv):
    """A command line for a message: plain words as they are, anything else quoted."""
    if isinstance(argv, (str, bytes)):
        argv = [argv]
    words = [arg if isinstance(arg, bytes) else str(arg) for arg in argv]
    return " ".join(word if isinstance(word, str) and re.fullmatch(r"[\w.:=,/@+-]+", word)
                    else repr(word) for word in words)


def short(value, limit=300):
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"


# ---------------------------------------------------------------- processes

SERVERS = []


class Server:
    """A server process in its own directory, stopped by its PID."""

    def __init__(self, name, argv, cwd, port):
        self.name = name
        self.port = port
        self.cwd = Path(cwd)
        self.cwd.mkdir(parents=True, exist_ok=True)
        self.log_path = self.cwd / f"{name}.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                argv, cwd=self.cwd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        self.stopped_by_us = False
        SERVERS.append(self)

    def alive(self):
        return self.proc.poll() is None

    def crashed(self):
        return self.proc.poll() is not None and not self.stopped_by_us

    def log_tail(self, limit=1500):
        try:
            data = self.log_path.read_bytes()[-limit:]
        except OSError:
            return ""
        return data.decode("utf-8", "replace").strip()

    def wait_ready(self, timeout=START_TIMEOUT):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise CheckFailed(
                    f"{self.name} exited with status {self.proc.returncode}: {self.log_tail()}"
                )
            try:
                socket.create_connection((HOST, self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.02)
        raise CheckFailed(f"{self.name} did not accept connections on port {self.port} "
                          f"within {timeout:.0f} s: {self.log_tail()}")

    def kill9(self):
        self.stopped_by_us = True
        if self.alive():
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=5)

    def stop(self):
        if self.alive():
            self.stopped_by_us = True
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


def stop_all_servers():
    for server in SERVERS:
        try:
            server.stop()
        except Exception as error:  # keep stopping the others
            print(f"redis-compat: stopping {server.name} (pid {server.proc.pid}): {error}",
                  file=sys.stderr)


def free_ports(count):
    probes, ports = [], []
    try:
        while len(ports) < count:
            probe = socket.socket()
            probe.bind((HOST, 0))
            probes.append(probe)
            port = probe.getsockname()[1]
            if port not in ports:
                ports.append(port)
    finally:
        for probe in probes:
            probe.close()
    return ports


def tool_version(tool):
    try:
        out = subprocess.run([tool, "--version"], capture_output=True, timeout=CLI_TIMEOUT).stdout
    except (OSError, subprocess.TimeoutExpired) as error:
        return None, str(error)
    text = out.decode("utf-8", "replace").strip()
    match = re.search(r"(?:v=|\s)(\d+)\.(\d+)\.(\d+)", text)
    return (tuple(int(part) for part in match.groups()) if match else None), text


# ------------------------------------------------------------ a RESP client

class RespError:
    def __init__(self, text):
        self.text = text

    def __repr__(self):
        return f"RespError({self.text!r})"


class NotResp(Exception):
    pass


RESP_TYPES = [bytes([c]) for c in b"+-:$*%~_,#(=!|>"]


def encode_command(*args):
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, str):
            arg = arg.encode()
        elif isinstance(arg, int):
            arg = b"%d" % arg
        out.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(out)


class Resp:
    """A minimal RESP2/RESP3 client on a plain socket: the script's own view of
    the wire, independent of redis-py."""

    def __init__(self, port, timeout=SOCKET_TIMEOUT):
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        self.buf = b""

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def call(self, *args):
        self.sock.sendall(encode_command(*args))
        return self.read()

    def _fill(self):
        data = self.sock.recv(65536)
        if not data:
            raise NotResp(f"connection closed by the server (unparsed: {self.buf[:200]!r})")
        self.buf += data

    def _line(self):
        while b"\r\n" not in self.buf:
            if len(self.buf) > 1 << 20:
                raise NotResp(f"no CRLF in {self.buf[:200]!r}...")
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n):
        while len(self.buf) < n + 2:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def read(self):
        while not self.buf:
            self._fill()
        if self.buf[:1] not in RESP_TYPES:
            # not RESP: say so now, with what arrived, instead of waiting for a CRLF
            self.sock.settimeout(0.1)
            try:
                self.buf += self.sock.recv(65536)
            except OSError:
                pass
            raise NotResp(f"not a RESP reply: {self.buf[:200]!r}")
        line = self._line()
        kind, rest = line[:1], line[1:]
        try:
            if kind == b"+":
                return rest.decode("utf-8", "replace")
            if kind == b"-":
                return RespError(rest.decode("utf-8", "replace"))
            if kind in (b":", b"("):
                return int(rest)
            if kind == b",":
                return float(rest)
            if kind == b"#":
                return rest == b"t"
            if kind == b"_":
                return None
            if kind in (b"$", b"=", b"!"):
                n = int(rest)
                if n < 0:
                    return None
                data = self._exact(n)
                if kind == b"=":
                    return data[4:]  # "txt:" / "mkd:"
                return RespError(data.decode("utf-8", "replace")) if kind == b"!" else data
            if kind in (b"*", b"~", b">"):
                n = int(rest)
                return None if n < 0 else [self.read() for _ in range(n)]
            if kind in (b"%", b"|"):
                result = {}
                for _ in range(int(rest)):
                    key = self.read()
                    result[tuple(key) if isinstance(key, list) else key] = self.read()
                return self.read() if kind == b"|" else result  # attributes precede a reply
        except ValueError:
            pass
        raise NotResp(f"not a RESP reply: {line[:200]!r}")


def resp_ping_detail(port):
    """None if the port answers a RESP PING with +PONG, else what it did."""
    try:
        with Resp(port, timeout=3) as conn:
            reply = conn.call("PING")
    except (OSError, NotResp) as error:
        return f"RESP PING: {error}"
    if reply != "PONG":
        return f"RESP PING got {reply!r}, expected +PONG"
    return None


# ------------------------------------------------------------------ the run

class Suite:
    def __init__(self, work):
        self.work = Path(work)
        self.passed = 0
        self.failed = []
        self.blocked = None
        self.deadline = None
        self.section_name = ""

    def section(self, name, budget):
        print(f"== {name}", flush=True)
        self.section_name = name
        self.deadline = time.monotonic() + budget
        self.budget = budget
        self.blocked = None

    def ok(self, what, detail=None):
        self.passed += 1
        print(f"ok - {what}" + (f" ({detail})" if detail else ""), flush=True)

    def fail(self, what, detail):
        self.failed.append((what, detail.startswith("not run: ")))
        print(f"FAIL - {what}: {detail}", flush=True)

    def check(self, what, fn, *args):
        """Runs fn(*args); it returns an optional detail or raises CheckFailed."""
        if self.blocked:
            self.fail(what, f"not run: {self.blocked}")
            return False
        if time.monotonic() > self.deadline:
            self.fail(what, f"not run: the {self.section_name} section used its "
                            f"{self.budget:.0f} s budget")
            return False
        started = time.monotonic()
        try:
            detail, failure = fn(*args), None
        except CheckFailed as error:
            failure = str(error)
        except subprocess.TimeoutExpired as error:
            failure = (f"{short(show_argv(error.cmd), 120)} did not finish within "
                       f"{error.timeout:.0f} s")
        except Exception as error:  # a check's own bug or a client exception: still a FAIL
            failure = f"{type(error).__name__}: {short(str(error))}"
        took = time.monotonic() - started
        if failure is not None:
            self.fail(what, failure + (f" (after {took:.1f} s)" if took > 5 else ""))
            return False
        if took > 5:
            detail = f"{detail}; {took:.1f} s" if detail else f"{took:.1f} s"
        self.ok(what, detail)
        return True

    def timeout(self, wanted):
        """wanted, cut to what is left of the section's budget (at least 1 s)."""
        return max(1.0, min(wanted, self.deadline - time.monotonic()))


def redis_cli_env(work):
    env = dict(os.environ)
    env["REDISCLI_HISTFILE"] = "/dev/null"  # interactive mode must not write ~/.rediscli_history
    env["REDISCLI_RCFILE"] = "/dev/null"
    env["HOME"] = str(work)
    env.pop("REDISCLI_AUTH", None)
    return env


class Cli:
    def __init__(self, suite):
        self.suite = suite
        self.env = redis_cli_env(suite.work)

    def run(self, port, *args, stdin=b"", timeout=CLI_TIMEOUT, options=()):
        argv = ["redis-cli", "-h", HOST, "-p", str(port), *options, *args]
        return subprocess.run(argv, input=stdin, capture_output=True, env=self.env,
                              timeout=self.suite.timeout(timeout))

    def out(self, port, *args, **kwargs):
        """stdout of one command, trailing newlines removed (redis-cli prints an
        error reply's text, then an empty line, when stdout is not a tty)."""
        proc = self.run(port, *args, **kwargs)
        out = proc.stdout.rstrip(b"\n")
        if proc.stderr.strip():
            out_err = proc.stderr.decode("utf-8", "replace").strip()
            raise CheckFailed(f"redis-cli {short(show_argv(args), 100)}: stderr "
                              f"{short(out_err)} (stdout {short(out)})")
        return out


def expect_cli(cli, port, args, expected):
    got = cli.out(port, *args)
    if isinstance(expected, str):
        expected = expected.encode()
    require(got == expected, f"redis-cli {show_argv(args)} printed {got!r}, expected {expected!r}")


# ------------------------------------------------------- single-node checks

def single_node_checks(suite, port, server, target):
    cli = Cli(suite)
    # keys whose checks need them new carry this run's tag, so that a server
    # given with --port need not be empty
    tag = "%06x" % random.randrange(1 << 24)

    def preflight():
        detail = resp_ping_detail(port)
        if detail:
            if server and not server.alive():
                detail += f"; the server exited: {server.log_tail()}"
            raise CheckFailed(detail)

    if not suite.check(f"{target} answers a RESP PING with +PONG", preflight):
        suite.blocked = ("the server does not speak RESP (the check above), so every check "
                         "after it would only time out")

    # --- redis-cli one-shot
    suite.check("redis-cli PING -> PONG", expect_cli, cli, port, ["PING"], "PONG")

    def basic_commands():
        steps = [
            (["SET", "compat:k", "v"], "OK"),
            (["GET", "compat:k"], "v"),
            (["EXISTS", "compat:k"], "1"),
            (["EXISTS", "compat:k", "compat:k", "compat:missing"], "2"),
            (["DEL", "compat:k"], "1"),
            (["DEL", "compat:k"], "0"),
            (["EXISTS", "compat:k"], "0"),
            (["GET", "compat:k"], ""),  # nil: an empty line when stdout is not a tty
            (["INCR", f"compat:counter:{tag}"], "1"),
            (["INCR", f"compat:counter:{tag}"], "2"),
            (["GET", f"compat:counter:{tag}"], "2"),
        ]
        for args, expected in steps:
            expect_cli(cli, port, args, expected)

    suite.check("redis-cli SET/GET/EXISTS/DEL/INCR values", basic_commands)

    def binary_safe():
        key, value = "compat:key with  spaces", "a value\twith spaces, \"quotes\" and\r\nCRLF"
        expect_cli(cli, port, ["SET", key, value], "OK")
        expect_cli(cli, port, ["GET", key], value)
        raw_key = b"compat:bin\xff\xfe key"
        expect_cli(cli, port, [b"SET", raw_key, b"\xc3\x28 not utf-8 \xff"], "OK")
        expect_cli(cli, port, [b"GET", raw_key], b"\xc3\x28 not utf-8 \xff")
        # -x: the last argument is stdin, byte for byte (NULs included)
        blob = bytes(range(256)) + b"\r\n\x00 end"
        proc = cli.run(port, "-x", "SET", "compat:blob", stdin=blob)
        require(proc.stdout.strip() == b"OK", f"redis-cli -x SET printed {proc.stdout!r}")
        got = cli.run(port, "--raw", "GET", "compat:blob").stdout
        require(got == blob + b"\n", f"GET of a 256-byte binary value printed {short(got)}")
        with Resp(port) as conn:
            require(conn.call("STRLEN", "compat:blob") == len(blob),
                    "STRLEN of the binary value is not its length")
        return "spaces, tab, CRLF, quotes, non-UTF-8, NUL via -x"

    suite.check("redis-cli binary-safe keys and values", binary_safe)

    def cross_protocol():
        expect_cli(cli, port, ["SET", "k2", "keep me"], "OK")
        for key in ["DEL k2", "x\nDEL k2", "x\r\nDEL k2", "x\r\nDEL k2\r\n"]:
            expect_cli(cli, port, ["GET", key], "")
        expect_cli(cli, port, ["SET", "y\r\nDEL k2\r\n", "v\r\nDEL k2"], "OK")
        with Resp(port) as conn:
            require(conn.call("GET", "y\r\nDEL k2\r\n") == b"v\r\nDEL k2",
                    "a key and value holding CRLF + DEL did not round-trip")
            require(conn.call("EXISTS", "k2") == 1, "k2 was deleted")
            require(conn.call("GET", "k2") == b"keep me", "k2 changed")
            # a command hidden in a key without spaces: run, it would add a reply
            # (or queue what follows, for MULTI) and shift the ones after it
            conn.sock.sendall(b"".join(encode_command(*args) for args in [
                ("GET", "x\r\nMULTI"), ("GET", "x\nPING"), ("GET", "k2"), ("PING",)]))
            replies = [conn.read() for _ in range(4)]
            require(replies == [None, None, b"keep me", "PONG"],
                    f"GET 'x\\r\\nMULTI', GET 'x\\nPING', GET k2, PING on one connection gave "
                    f"{short(replies)}")

    suite.check('redis-cli GET "DEL k2" (and keys hiding commands after LF, CRLF) runs no '
                'second command', cross_protocol)

    # --- redis-cli without a command
    def stdin_not_tty():
        script = b"SET compat:piped 1\nGET compat:piped\nINCR compat:piped\nGET compat:nope\n"
        try:
            proc = cli.run(port, stdin=script)
        except subprocess.TimeoutExpired as error:
            raise CheckFailed(f"redis-cli did not finish within {error.timeout:.0f} s (without a "
                              f"command it first asks COMMAND DOCS)")
        require(proc.stdout == b"OK\n1\n2\n\n",
                f"printed {proc.stdout!r} (stderr {proc.stderr!r}), expected OK, 1, 2, nil")

    suite.check("redis-cli with commands piped to stdin (not a tty)", stdin_not_tty)

    def command_docs():
        with Resp(port) as conn:
            docs2 = conn.call("COMMAND", "DOCS")
            require(isinstance(docs2, list) and len(docs2) % 2 == 0,
                    f"RESP2 COMMAND DOCS: {short(docs2)}, expected an array of name/doc pairs")
            hello = conn.call("HELLO", "3")
            require(isinstance(hello, dict), f"HELLO 3: {short(hello)}")
            docs3 = conn.call("COMMAND", "DOCS")
            require(isinstance(docs3, dict), f"RESP3 COMMAND DOCS: {short(docs3)}, expected a map")
            require(len(docs3) == len(docs2) // 2, "RESP2 and RESP3 list different commands")
        return f"{len(docs3)} commands documented"

    suite.check("COMMAND DOCS: an array under RESP2, a map under RESP3 (redis-cli asks at start)",
                command_docs)

    def interactive_pty():
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
        env = dict(cli.env, TERM="xterm")
        proc = subprocess.Popen(["redis-cli", "-h", HOST, "-p", str(port)], stdin=slave,
                                stdout=slave, stderr=slave, env=env, start_new_session=True)
        os.close(slave)
        seen = bytearray()

        def tail():
            text = bytes(seen[-400:])
            return repr(text) if len(seen) <= 400 else f"...{text!r}"

        def type_and_wait(keys, marker, what, timeout=CLI_TIMEOUT):
            """Types keys, then reads the terminal until marker appears after them."""
            start = len(seen)
            if keys:
                os.write(master, keys)
            timeout = suite.timeout(timeout)
            deadline = time.monotonic() + timeout
            while marker not in seen[start:]:
                if b"(error)" in seen[start:]:
                    raise CheckFailed(f"an error while {what}: {tail()}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise CheckFailed(f"{marker!r} not seen within {timeout:.0f} s while {what}; "
                                      f"the terminal shows {tail()}")
                ready, _, _ = select.select([master], [], [], left)
                if ready:
                    try:
                        data = os.read(master, 65536)
                    except OSError:
                        data = b""
                    if not data:
                        raise CheckFailed(f"redis-cli exited ({proc.poll()}) while {what}: "
                                          f"{tail()}")
                    seen.extend(data)

        try:
            # Type only once the prompt is back: linenoise prints it after switching
            # the terminal to raw mode, and keys typed before that are cooked (CR->LF).
            prompt = f"{HOST}:{port}> ".encode()
            type_and_wait(b"", prompt, "starting (it asks COMMAND DOCS first)")
            type_and_wait(b"SET a 1\r", b"\r\nOK\r\n" + prompt, "running SET a 1")
            type_and_wait(b"GET a\r", b'\r\n"1"\r\n' + prompt, "running GET a")
            os.write(master, b"quit\r")
            proc.wait(timeout=CLI_TIMEOUT)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=5)
            os.close(master)
        hints = "; command hints shown" if b"\x1b[0;90;49m" in seen else ""
        return 'typed SET a 1, GET a; saw OK and "1"' + hints

    suite.check('redis-cli interactive in a pty: SET a 1, GET a -> "1"', interactive_pty)

    # --- mass insertion
    count = 10_000

    def pipe_key(i):
        return b"pipe:%s:%05d" % (tag.encode(), i)

    def pipe_value(i):
        return b"value %d with spaces" % i if i % 3 else b"bin\x00\r\n\xff%d" % i

    dbsize_before = {}

    def mass_insertion():
        with Resp(port) as conn:
            dbsize_before["n"] = conn.call("DBSIZE")
        require(isinstance(dbsize_before["n"], int), f"DBSIZE: {dbsize_before['n']!r}")
        protocol = b"".join(encode_command(b"SET", pipe_key(i), pipe_value(i))
                            for i in range(count))
        proc = cli.run(port, "--pipe", stdin=protocol, timeout=30)
        text = (proc.stdout + proc.stderr).decode("utf-8", "replace")
        match = re.search(r"errors: (\d+), replies: (\d+)", text)
        require(match and match.groups() == ("0", str(count)),
                f"expected 'errors: 0, replies: {count}', got {short(text.strip())} (exit status "
                f"{proc.returncode}; after the data redis-cli sends an empty line, CRLF, then "
                f"ECHO <20 random bytes> and waits for that echo)")
        require(proc.returncode == 0, f"exit status {proc.returncode}: {short(text)}")
        return f"{len(protocol):,} bytes of RESP"

    if suite.check(f"redis-cli --pipe: {count:,} SETs -> errors: 0, replies: {count}",
                   mass_insertion):
        def after_mass_insertion():
            with Resp(port) as conn:
                size = conn.call("DBSIZE")
                require(size == dbsize_before["n"] + count,
                        f"DBSIZE went from {dbsize_before['n']} to {size}, expected +{count}")
                sample = [0, 1, 2, count - 1] + random.Random(8).sample(range(count), 60)
                got = conn.call("MGET", *[pipe_key(i) for i in sample])
                bad = [(i, value) for i, value in zip(sample, got) if value != pipe_value(i)]
                require(not bad, f"wrong values: {short(bad)}")
                for i in sample[:8]:
                    require(conn.call("GET", pipe_key(i)) == pipe_value(i), f"GET {pipe_key(i)}")
            return f"DBSIZE +{count}; 64 values checked"

        suite.check("DBSIZE and GET spot checks after --pipe", after_mass_insertion)
    else:
        suite.fail("DBSIZE and GET spot checks after --pipe", "not run: --pipe failed")

    # --- redis-benchmark
    requests, keyspace = 20_000, 1000

    def benchmark():
        with Resp(port) as conn:  # the keys it writes are fixed: start them afresh
            for name in (b"key:%012d", b"counter:%012d"):
                deleted = conn.call("DEL", *[name % i for i in range(keyspace)])
                require(isinstance(deleted, int), f"DEL: {deleted!r}")
        argv = ["redis-benchmark", "-h", HOST, "-p", str(port), "-t", "set,get,incr,mset",
                "-n", str(requests), "-P", "16", "-q", "-r", str(keyspace)]
        proc = subprocess.run(argv, capture_output=True, timeout=suite.timeout(40), env=cli.env)
        text = proc.stdout.decode("utf-8", "replace").replace("\r", "\n")
        lines = [line.strip() for line in text.split("\n") if "requests per second" in line]
        figures = {}
        for line in lines:
            match = re.match(r"^([A-Z]+)(?: \(\d+ keys\))?: ([\d.]+) requests per second", line)
            require(match, f"unexpected line {line!r}")
            figures[match.group(1)] = float(match.group(2))
        require(proc.returncode == 0, f"exit status {proc.returncode}: "
                                      f"{short(text + proc.stderr.decode('utf-8', 'replace'))}")
        require(sorted(figures) == ["GET", "INCR", "MSET", "SET"],
                f"tests reported: {sorted(figures)}; output {short(text.strip())}")
        require(all(value > 0 for value in figures.values()), f"a zero figure: {figures}")
        require(len(lines) == 4, f"{len(lines)} result lines: {lines}")
        return ", ".join(f"{name} {value:,.0f}/s" for name, value in figures.items())

    if suite.check(f"redis-benchmark -t set,get,incr,mset -n {requests} -P 16 -q -r {keyspace}",
                   benchmark):
        def benchmark_keys():
            with Resp(port) as conn:
                values = conn.call("MGET", *[b"key:%012d" % i for i in range(keyspace)])
                counters = conn.call("MGET", *[b"counter:%012d" % i for i in range(keyspace)])
            present = [value for value in values if value is not None]
            require(len(present) == keyspace,
                    f"{len(present)} of the {keyspace} keys key:000000000000.. exist "
                    f"(220,000 writes to {keyspace} random keys leave none out)")
            require(len(set(present)) == 1 and len(present[0]) == 3,
                    f"key values differ or are not the 3-byte payload: {short(set(present))}")
            ints = []
            for value in counters:
                if value is None:
                    continue
                require(re.fullmatch(rb"-?\d+", value), f"a counter holds {value!r}")
                ints.append(int(value))
            require(sum(ints) == requests,
                    f"the counters sum to {sum(ints)}, expected {requests} (one per INCR)")
            return f"{len(present)} keys; {len(ints)} counters summing to {requests}"

        suite.check("keys redis-benchmark wrote: key:… values, counter:… INCR totals",
                    benchmark_keys)
    else:
        suite.fail("keys redis-benchmark wrote: key:… values, counter:… INCR totals",
                   "not run: redis-benchmark failed")

    # --- redis-py
    configs = [("defaults", {}), ("protocol=3", {"protocol": 3}), ("protocol=2", {"protocol": 2})]
    for index, (label, options) in enumerate(configs):
        redis_py_checks(suite, port, f"{index}:{tag}", label, options)

    # --- error texts
    def incr_text():
        expect_cli(cli, port, ["SET", "compat:text", "abc"], "OK")
        expect_cli(cli, port, ["INCR", "compat:text"],
                   "ERR value is not an integer or out of range")

    suite.check("redis-cli INCR on a non-integer -> ERR value is not an integer or out of range",
                incr_text)

    def unknown_command():
        got = cli.out(port, "FOO", "bar")
        require(got.startswith(b"ERR unknown command 'FOO'"),
                f"printed {got!r}, expected it to start with ERR unknown command 'FOO'")
        return got.decode("utf-8", "replace")

    suite.check("redis-cli FOO bar -> ERR unknown command 'FOO'...", unknown_command)
    suite.check("redis-cli GET -> ERR wrong number of arguments for 'get' command",
                expect_cli, cli, port, ["GET"], "ERR wrong number of arguments for 'get' command")


def pool_connection(client):
    """A connection from a client's pool (redis-py 5 needs a command name)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return client.connection_pool.get_connection("PING")


def redis_py_checks(suite, port, index, label, options):
    prefix = f"rp{index}:"  # index carries the run's tag
    clients = {}

    def connect():
        # No retries: redis-py >= 6 retries a failed command 3 times by default,
        # which would hide a connection the server closed (and triple every timeout).
        return redis.Redis(host=HOST, port=port, socket_timeout=SOCKET_TIMEOUT,
                           socket_connect_timeout=SOCKET_TIMEOUT, retry=Retry(NoBackoff(), 0),
                           **options)

    def k(name):
        return f"{prefix}{name}"

    def negotiate():
        client = clients["r"] = connect()
        clients["other"] = connect()
        require(client.ping() is True, "PING did not return True")
        conn = pool_connection(client)
        try:
            protocol = int(getattr(conn, "protocol", None) or 2)
            metadata = getattr(conn, "handshake_metadata", None)
        finally:
            client.connection_pool.release(conn)
        clients["protocol"] = protocol
        if protocol == 3 and not hasattr(conn, "handshake_metadata"):
            how = "HELLO 3 (this redis-py checks the proto answered itself)"
        elif protocol == 3:
            require(isinstance(metadata, dict), f"no HELLO reply recorded: {metadata!r}")
            proto = metadata.get(b"proto", metadata.get("proto"))
            require(proto == 3, f"HELLO 3 answered proto {proto!r}")
            how = "HELLO 3, the server answered proto 3"
        else:
            require(not metadata, f"a HELLO reply under RESP2: {metadata!r}")
            how = "no HELLO"
        require(options.get("protocol", protocol) == protocol,
                f"asked for protocol {options.get('protocol')}, the connection uses {protocol}")
        return f"redis-py {redis.__version__}: RESP{protocol}, {how}"

    what = f"redis-py {label}"
    connected = suite.check(f"{what}: connects, negotiates its protocol", negotiate)
    r, other = clients.get("r"), clients.get("other")

    def string_commands():
        require(r.set(k("a"), "v1") is True, "SET did not return True")
        require(r.get(k("a")) == b"v1", "GET")
        require(r.exists(k("a"), k("missing")) == 1, "EXISTS of one present, one missing")
        require(r.getset(k("a"), "v2") == b"v1", "GETSET did not return the old value")
        require(r.get(k("a")) == b"v2", "GET after GETSET")
        require(r.strlen(k("a")) == 2, "STRLEN")
        require(r.append(k("a"), "xyz") == 5, "APPEND did not return the new length")
        require(r.get(k("a")) == b"v2xyz", "GET after APPEND")
        require(r.append(k("new"), "abc") == 3, "APPEND to a missing key")
        require(r.mset({k("m1"): "1", k("m2"): "two"}) is True, "MSET")
        require(r.mget([k("m1"), k("missing"), k("m2")]) == [b"1", None, b"two"], "MGET")
        require(r.incr(k("n")) == 1 and r.incr(k("n")) == 2, "INCR (redis-py sends INCRBY n 1)")
        require(r.incr(k("n"), 40) == 42, "INCRBY 40")
        require(r.get(k("n")) == b"42", "GET of a counter")
        try:
            r.incr(k("a"))
            raise CheckFailed("INCR of 'v2xyz' did not fail")
        except redis.ResponseError as error:
            require(str(error) == "value is not an integer or out of range",
                    f"INCR error text {str(error)!r}")
        require(r.delete(k("a"), k("m1"), k("missing")) == 2, "DEL of two present, one missing")
        require(r.exists(k("a")) == 0 and r.get(k("a")) is None, "the key survived DEL")
        return "set get exists getset strlen append mset mget incr incrby delete"

    def binary():
        key = b"bin\x00key \r\n\xff" + prefix.encode()
        value = bytes(range(256)) * 400  # 100 KiB, every byte value, CRLFs inside
        require(r.set(key, value) is True, "SET")
        require(r.get(key) == value, "the value came back different")
        require(r.strlen(key) == len(value), "STRLEN")
        require(r.delete(key) == 1, "DEL")

    def transaction():
        with r.pipeline() as pipe:
            result = pipe.set(k("t"), "1").incr(k("t")).get(k("t")).exists(k("t")).execute()
        require(result == [True, 2, b"2", 1], f"EXEC returned {result!r}")

    def transaction_with_error():
        with r.pipeline() as pipe:
            pipe.set(k("te"), "abc").incr(k("te")).set(k("te2"), "after")
            result = pipe.execute(raise_on_error=False)
        require(len(result) == 3 and result[0] is True and result[2] is True,
                f"EXEC returned {result!r}")
        require(isinstance(result[1], redis.ResponseError)
                and "not an integer" in str(result[1]), f"the INCR in EXEC gave {result[1]!r}")
        require(r.get(k("te2")) == b"after", "commands after the failing one were not applied")

    def plain_pipeline():
        with r.pipeline(transaction=False) as pipe:
            for i in range(100):
                pipe.set(k(f"p{i}"), str(i))
            pipe.incr(k("p7")).get(k("p7")).get(k("missing"))
            result = pipe.execute()
        require(result == [True] * 100 + [8, b"8", None], f"got {short(result)}")

    def watch():
        r.set(k("w"), "0")
        with r.pipeline() as pipe:
            pipe.watch(k("w"))
            require(pipe.get(k("w")) == b"0", "GET after WATCH")
            other.set(k("w"), "other")
            pipe.multi()
            pipe.set(k("w"), "mine")
            try:
                pipe.execute()
                raise CheckFailed("EXEC ran although another client wrote the watched key")
            except redis.WatchError:
                pass
        require(r.get(k("w")) == b"other", "the other client's write is not there")
        with r.pipeline() as pipe:
            pipe.watch(k("w"))
            pipe.multi()
            pipe.set(k("w"), "mine")
            require(pipe.execute() == [True], "EXEC without interference")
        require(r.get(k("w")) == b"mine", "the transaction without interference did not apply")

    def client_name():
        name = f"compat-{index}"
        require(r.client_setname(name) is True, "CLIENT SETNAME")
        got = r.client_getname()
        require(got in (name, name.encode()), f"CLIENT GETNAME gave {got!r}")

    def info():
        data = r.info()
        require(isinstance(data, dict), f"info() gave {type(data).__name__}")
        missing = [field for field in ("redis_version", "connected_clients", "role")
                   if field not in data]
        require(not missing, f"INFO lacks {missing}; fields: {short(sorted(data))}")
        require(isinstance(data["connected_clients"], int) and data["connected_clients"] >= 2,
                f"connected_clients {data['connected_clients']!r} (two clients are connected)")
        require(data["role"] == "master", f"role {data['role']!r}")
        return f"redis_version {data['redis_version']}, role {data['role']}"

    def hello():
        reply = r.execute_command("HELLO", 3)
        require(isinstance(reply, dict), f"HELLO 3 gave {short(reply)}")
        fields = {(key.decode() if isinstance(key, bytes) else key): value
                  for key, value in reply.items()}
        types = {"server": bytes, "version": bytes, "proto": int, "id": int, "mode": bytes,
                 "role": bytes, "modules": list}
        for field, kind in types.items():
            require(field in fields, f"no {field!r} in {short(fields)}")
            value = fields[field]
            ok = isinstance(value, (bytes, str)) if kind is bytes else isinstance(value, kind)
            require(ok, f"{field} is {value!r}")
        require(fields["proto"] == 3, f"proto {fields['proto']!r}")
        mode = fields["mode"].decode() if isinstance(fields["mode"], bytes) else fields["mode"]
        role = fields["role"].decode() if isinstance(fields["role"], bytes) else fields["role"]
        require(mode in ("standalone", "cluster", "sentinel"), f"mode {mode!r}")
        require(role in ("master", "replica"), f"role {role!r}")
        return f"server {fields['server']!r}, version {fields['version']!r}, mode {mode}"

    checks = [
        ("string commands", string_commands),
        ("binary key and value (NUL, CRLF, 0xff; 100 KiB)", binary),
        ("pipeline() MULTI/EXEC", transaction),
        ("MULTI/EXEC with a failing command inside", transaction_with_error),
        ("pipeline(transaction=False)", plain_pipeline),
        ("WATCH + another client's write -> WatchError", watch),
        ("client_setname/client_getname", client_name),
        ("info() has redis_version, connected_clients, role", info),
    ]
    if clients.get("protocol", options.get("protocol", 3)) == 3:
        checks.append(("hello() fields server version proto id mode role modules", hello))
    for name, check in checks:
        if connected:
            suite.check(f"{what}: {name}", check)
        else:
            suite.fail(f"{what}: {name}", "not run: the connection failed (above)")
    for client in (r, other):
        if client is not None:
            client.close()


# ------------------------------------------------------------ cluster nodes

def line_role(port):
    """A kvstore node's (role, leader id) from the line protocol's ROLE: `<role>
    <leader-id|-1> <epoch> ...` (ids are ports here). Should the port one day
    answer an inline ROLE in RESP, Redis's form is read instead: master, or
    slave with its master's port."""
    with socket.create_connection((HOST, port), timeout=2) as sock:
        sock.sendall(b"ROLE\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
            if data.startswith(b"*"):
                break
    if data.startswith(b"*"):
        with Resp(port, timeout=2) as conn:
            role = conn.call("ROLE")
        if isinstance(role, list) and role and role[0] in (b"master", b"slave"):
            if role[0] == b"master":
                return "leader", port
            return "follower", (role[2] if len(role) > 2 and isinstance(role[2], int) else -1)
        raise CheckFailed(f"RESP ROLE on port {port} answered {short(role)}")
    fields = data.decode("utf-8", "replace").split()
    if len(fields) < 2 or not re.fullmatch(r"-?\d+", fields[1]):
        raise CheckFailed(f"ROLE on port {port} answered {data!r}")
    return fields[0], int(fields[1])


class KvstoreCluster:
    """Three kvstore-server nodes; the id is the port, the highest live id leads."""

    name = "kvstore cluster"

    def __init__(self, work):
        self.work = Path(work)
        self.nodes = {}

    def start(self):
        ports = free_ports(3)
        for port in ports:
            peers = ",".join(f"{HOST}:{other}" for other in ports if other != port)
            self.nodes[port] = Server(f"kvstore-{port}", [str(KVSTORE_SERVER), str(port), peers,
                                                         "--fsync", "never"],
                                      self.work / f"node-{port}", port)
        for server in self.nodes.values():
            server.wait_ready()

    def alive(self):
        return [port for port, server in self.nodes.items() if server.alive()]

    def leader(self, timeout):
        """The port every live node names as leader, once they agree."""
        deadline = time.monotonic() + timeout
        seen = {}
        while time.monotonic() < deadline:
            try:
                seen = {port: line_role(port) for port in self.alive()}
            except OSError as error:
                seen = {"error": str(error)}
            leaders = [port for port, (role, _) in seen.items() if role == "leader"] \
                if "error" not in seen else []
            if len(leaders) == 1 and all(lead == leaders[0] for _, lead in seen.values()):
                return leaders[0]
            time.sleep(0.05)
        raise CheckFailed(f"no agreed leader within {timeout:.0f} s; ROLE: {seen}")

    def kill_leader(self, port):
        self.nodes[port].kill9()

    def after_leader_killed(self, port):
        pass  # the followers elect a new leader by themselves

    def kill(self, port):
        self.nodes[port].kill9()


class RedisClusterNodes:
    """Validation only: one Redis Cluster master holding all 16384 slots and two
    replicas, the shape kvstore exposes. Redis replication is asynchronous and
    a lone master's replicas cannot win an election (no other master votes), so
    kill_leader WAITs for both replicas before the kill and then promotes the
    highest-port replica with CLUSTER FAILOVER TAKEOVER a second later: kvstore
    does both by itself (sync replication, elections among the survivors)."""

    name = "Redis Cluster"

    def __init__(self, work):
        self.work = Path(work)
        self.nodes = {}

    def start(self):
        ports = free_ports(6)
        pairs = list(zip(ports[:3], ports[3:]))
        for port, bus in pairs:
            directory = self.work / f"redis-{port}"
            self.nodes[port] = Server(
                f"redis-cluster-{port}",
                ["redis-server", "--port", str(port), "--bind", HOST, "--cluster-enabled", "yes",
                 "--cluster-port", str(bus), "--cluster-config-file", "nodes.conf",
                 "--cluster-node-timeout", "1000", "--repl-diskless-sync-delay", "0",
                 "--save", "", "--appendonly", "no",
                 "--dir", str(directory)],
                directory, port)
        for server in self.nodes.values():
            server.wait_ready()
        master = max(self.nodes)
        with Resp(master) as conn:
            for port, bus in pairs:
                if port != master:
                    require(conn.call("CLUSTER", "MEET", HOST, port, bus) == "OK", "CLUSTER MEET")
            require(conn.call("CLUSTER", "ADDSLOTSRANGE", 0, SLOTS - 1) == "OK", "ADDSLOTSRANGE")
            master_id = conn.call("CLUSTER", "MYID").decode()
        deadline = time.monotonic() + 15
        for port in self.nodes:
            if port == master:
                continue
            with Resp(port) as conn:
                while True:
                    reply = conn.call("CLUSTER", "REPLICATE", master_id)
                    if reply == "OK":
                        break
                    require(time.monotonic() < deadline, f"CLUSTER REPLICATE: {reply!r}")
                    time.sleep(0.05)
        while True:
            states = []
            for port in self.nodes:
                with Resp(port) as conn:
                    info = conn.call("CLUSTER", "INFO").decode()
                    repl = conn.call("INFO", "replication").decode()
                    states.append("cluster_state:ok" in info and
                                  ("connected_slaves:2" in repl if port == master
                                   else "master_link_status:up" in repl))
            if all(states):
                break
            require(time.monotonic() < deadline, f"the Redis cluster did not form: {states}")
            time.sleep(0.05)
        # Redis leaves a replica out of CLUSTER SLOTS until it has replicated
        # something (a zero offset): write once and wait until all nodes list both.
        with Resp(master) as conn:
            require(conn.call("SET", "compat:warmup", "1") == "OK", "SET on the new master")
            require(conn.call("WAIT", 2, 5000) == 2, "WAIT 2 after the first write")
        while True:
            listed = []
            for port in self.nodes:
                with Resp(port) as conn:
                    listed.append(sum(len(entry) - 3 for entry in conn.call("CLUSTER", "SLOTS")))
            if listed == [2, 2, 2]:
                return
            require(time.monotonic() < deadline, f"replicas in CLUSTER SLOTS: {listed}")
            time.sleep(0.05)

    def alive(self):
        return [port for port, server in self.nodes.items() if server.alive()]

    def leader(self, timeout):
        deadline = time.monotonic() + timeout
        seen = {}
        while time.monotonic() < deadline:
            seen = {}
            for port in self.alive():
                with Resp(port) as conn:
                    seen[port] = conn.call("ROLE")
            masters = [port for port, role in seen.items() if role[0] == b"master"]
            if len(masters) == 1 and all(role[0] == b"master" or role[2] == masters[0]
                                         for role in seen.values()):
                return masters[0]
            time.sleep(0.05)
        raise CheckFailed(f"no agreed master within {timeout:.0f} s; ROLE: {short(seen)}")

    def kill_leader(self, port):
        with Resp(port) as conn:
            acked = conn.call("WAIT", 2, 5000)
        require(acked == 2, f"WAIT 2: only {acked!r} replicas acknowledged")
        self.nodes[port].kill9()

    def after_leader_killed(self, port):
        # Promote a replica one second from now, on a timer: the client sees the
        # dead master for a while, as it would during an election.
        survivor = max(self.alive())

        def takeover():
            with Resp(survivor) as conn:
                reply = conn.call("CLUSTER", "FAILOVER", "TAKEOVER")
            if reply != "OK":
                print(f"redis-compat: CLUSTER FAILOVER TAKEOVER on {survivor}: {reply!r}",
                      file=sys.stderr)

        timer = threading.Timer(1.0, takeover)
        timer.daemon = True
        timer.start()

    def kill(self, port):
        self.nodes[port].kill9()


# ----------------------------------------------------------- cluster checks

def covers_all_slots(ranges):
    covered = bytearray(SLOTS)
    for start, end in ranges:
        for slot in range(start, end + 1):
            covered[slot] += 1
    return all(count == 1 for count in covered)


def as_dict(value):
    """A RESP3 map, or its RESP2 form (a flat array of keys and values), as a dict."""
    return value if isinstance(value, dict) else dict(zip(value[::2], value[1::2]))


def cluster_view(port, which):
    """CLUSTER SLOTS, SHARDS or NODES from one node, reduced to {master port:
    [slot ranges]}, and the ports it lists as replicas."""
    with Resp(port) as conn:
        reply = conn.call("CLUSTER", which)
    view, replicas = {}, set()
    if which == "SLOTS":
        require(isinstance(reply, list), f"CLUSTER SLOTS on {port}: {short(reply)}")
        for entry in reply:
            require(isinstance(entry, list) and len(entry) >= 3,
                    f"CLUSTER SLOTS entry on {port}: {short(entry)}")
            view.setdefault(int(entry[2][1]), []).append((int(entry[0]), int(entry[1])))
            replicas.update(int(node[1]) for node in entry[3:])
    elif which == "SHARDS":
        require(isinstance(reply, list), f"CLUSTER SHARDS on {port}: {short(reply)}")
        for shard in map(as_dict, reply):
            ranges = shard[b"slots"]
            pairs = list(zip(ranges[::2], ranges[1::2]))
            for node in map(as_dict, shard[b"nodes"]):
                if node.get(b"role") == b"master" and pairs:
                    view.setdefault(int(node[b"port"]), []).extend(pairs)
                elif node.get(b"role") == b"replica":
                    replicas.add(int(node[b"port"]))
    else:
        require(isinstance(reply, bytes), f"CLUSTER NODES on {port}: {short(reply)}")
        myself = 0
        for line in reply.decode("utf-8", "replace").strip().splitlines():
            fields = line.split()
            require(len(fields) >= 8, f"CLUSTER NODES line on {port}: {line!r}")
            flags = fields[2].split(",")
            node_port = int(fields[1].split("@")[0].split(",")[0].rsplit(":", 1)[1])
            if "myself" in flags:
                myself += 1
                require(node_port == port, f"CLUSTER NODES on {port} calls {fields[1]} myself")
            if "slave" in flags and "fail" not in flags:
                replicas.add(node_port)
            if "master" in flags and "fail" not in flags:
                for part in fields[8:]:
                    if not part.startswith("["):  # [slot->-id]: a slot being migrated
                        first, _, last = part.partition("-")
                        view.setdefault(node_port, []).append((int(first), int(last or first)))
        require(myself == 1, f"CLUSTER NODES on {port} has {myself} 'myself' lines")
    return view, replicas


def cluster_checks(suite, harness):
    cli = Cli(suite)
    state = {}

    def start():
        harness.start()
        state["ports"] = sorted(harness.nodes)
        state["leader"] = harness.leader(timeout=15)
        return f"ports {state['ports']}, leader {state['leader']}"

    if not suite.check(f"3-node {harness.name} starts and agrees on a leader", start):
        suite.blocked = "the cluster did not start"

    def resp_everywhere():
        problems = {port: resp_ping_detail(port) for port in state["ports"]}
        problems = {port: detail for port, detail in problems.items() if detail}
        require(not problems, f"{problems}")

    if not suite.check("every node answers a RESP PING with +PONG", resp_everywhere) \
            and not suite.blocked:
        suite.blocked = "the nodes do not speak RESP (the check above)"

    def slot_map(which):
        leader, deadline = state["leader"], time.monotonic() + 5
        while True:  # nodes may take a moment to agree
            problems = []
            for port in state["ports"]:
                view, replicas = cluster_view(port, which)
                if list(view) != [leader] or not covers_all_slots(view[leader]):
                    problems.append(f"on {port}: {view}")
                elif which == "SLOTS":
                    state.setdefault("replicas", {})[port] = replicas
            if not problems or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        require(not problems, f"expected {{{leader}: [(0, {SLOTS - 1})]}}; " + "; ".join(problems))
        return f"0-{SLOTS - 1} on {leader}, from every node"

    for which in ("SLOTS", "SHARDS", "NODES"):
        suite.check(f"CLUSTER {which} puts all slots on the leader, on every node", slot_map,
                    which)

    def replicas_listed():
        require(len(state.get("replicas", {})) == 3, "not run: CLUSTER SLOTS failed above")
        followers = set(state["ports"]) - {state["leader"]}
        bad = {port: sorted(listed) for port, listed in state["replicas"].items()
               if listed != followers}
        require(not bad, f"replicas listed per node: {bad}, expected the followers "
                         f"{sorted(followers)}: RedisCluster replaces its startup nodes with the "
                         f"nodes CLUSTER SLOTS lists, so without the followers it cannot find "
                         f"a new leader after a failover")
        return f"{sorted(followers)}"

    suite.check("CLUSTER SLOTS lists the followers as the leader's replicas", replicas_listed)

    keys = [f"ck:{i}" for i in range(300)]
    possible = {}  # key -> the values it may hold

    def new_client():
        return RedisCluster(startup_nodes=[ClusterNode(HOST, port) for port in state["ports"]],
                            socket_timeout=2, socket_connect_timeout=2)

    def write_read_200():
        client = state["rc"] = new_client()
        for key in keys[:200]:
            value = f"{key}=v0"
            require(client.set(key, value) is True, f"SET {key}")
            possible[key] = {value.encode()}
        for key in keys[:200]:
            got = client.get(key)
            require(got in possible[key], f"GET {key} gave {got!r}")
        node = client.get_node_from_key(keys[0])
        require(node.port == state["leader"],
                f"RedisCluster routes {keys[0]} to {node.port}, not the leader")

    suite.check("RedisCluster(startup_nodes=all three) writes and reads 200 keys", write_read_200)

    def failover():
        old = state["leader"]
        harness.kill_leader(old)
        killed_at = time.monotonic()
        harness.after_leader_killed(old)
        client = state["rc"]
        deadline = killed_at + FAILOVER_DEADLINE
        # rewrite the first 100 keys and write 100 new ones; ck:100..199 keep v0
        targets = keys[:100] + keys[200:]
        errors, first_ok, last_error = 0, None, None
        for attempt_key in targets:
            round_ = 1
            while True:
                value = f"{attempt_key}=v1.{round_}".encode()
                try:
                    if client.set(attempt_key, value) is not True:
                        raise CheckFailed(f"SET {attempt_key} did not return True")
                    possible[attempt_key] = {value}
                    first_ok = first_ok or time.monotonic()
                    break
                except (redis.RedisError, redis.exceptions.RedisClusterException) as error:
                    # unacknowledged: the key may hold this value or any earlier one
                    # (RedisClusterException, raised while the slot map has no
                    # reachable node, is not a RedisError)
                    possible.setdefault(attempt_key, set()).add(value)
                    errors, last_error = errors + 1, error
                    if time.monotonic() > deadline:
                        raise CheckFailed(
                            f"{targets.index(attempt_key)} of {len(targets)} writes acknowledged "
                            f"{FAILOVER_DEADLINE:.0f} s after the kill; {errors} errors, the last "
                            f"{type(error).__name__}: {short(str(error))}")
                    time.sleep(0.05)
                    round_ += 1
        new = harness.leader(timeout=5)
        require(new != old, f"the killed node {old} is still the leader")
        node = client.get_node_from_key(keys[0])
        require(node.port == new, f"RedisCluster routes to {node.port}, the leader is {new}")
        state["leader"] = new
        took = first_ok - killed_at
        tail = f"; the last error: {type(last_error).__name__}: {short(str(last_error), 80)}" \
            if last_error else ""
        return (f"first write acknowledged {took:.2f} s after the kill, on {new}; "
                f"{len(targets)} writes, {errors} failed attempts{tail}")

    if not suite.check(f"kill -9 the leader: RedisCluster writes go on at the new leader "
                       f"within {FAILOVER_DEADLINE:.0f} s", failover) and not suite.blocked:
        suite.blocked = "the failover did not complete"

    def verify(client):
        wrong = []
        for key in keys:
            got = client.get(key)
            if got not in possible[key]:
                wrong.append(f"{key}={got!r} (expected {sorted(possible[key])})")
        require(not wrong, f"{len(wrong)} keys: {short('; '.join(wrong))}")
        ambiguous = sum(len(values) > 1 for values in possible.values())
        return f"{len(keys)} keys, {ambiguous} whose last write was not acknowledged"

    suite.check("every acknowledged write reads back its last acknowledged value",
                lambda: verify(state["rc"]))

    def fresh_client():
        client = new_client()
        try:
            return verify(client) + "; the dead node is a startup node"
        finally:
            client.close()

    suite.check("a new RedisCluster (the dead node among startup_nodes) reads the same",
                fresh_client)

    def follower():
        followers = [port for port in harness.alive() if port != state["leader"]]
        require(len(followers) == 1, f"live followers: {followers}")
        return followers[0]

    def moved_without_c():
        port = follower()
        got = cli.out(port, "SET", "compat:moved", "y").decode("utf-8", "replace")
        slot = key_slot(b"compat:moved")
        expected = f"MOVED {slot} {HOST}:{state['leader']}"
        require(got == expected, f"redis-cli -p {port} SET printed {got!r}, expected {expected!r}")
        require(state["rc"].get("compat:moved") is None, "the redirected SET was applied")
        return got

    suite.check("redis-cli (no -c) SET on a follower prints MOVED <slot> <leader>",
                moved_without_c)

    def follows_moved():
        port = follower()
        out = cli.out(port, "SET", "x", "y", options=["-c"])
        lines = [line for line in out.splitlines() if not line.startswith(b"-> Redirected")]
        require(lines == [b"OK"], f"redis-cli -c -p {port} SET x y printed {out!r}")
        deadline = time.monotonic() + 5  # a follower may answer reads from a lagging copy
        while True:
            out = cli.out(port, "GET", "x", options=["-c"])
            lines = [line for line in out.splitlines() if not line.startswith(b"-> Redirected")]
            if lines == [b"y"] or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        require(lines == [b"y"], f"redis-cli -c -p {port} GET x printed {out!r}")
        require(state["rc"].get("x") == b"y", "RedisCluster does not read x=y")
        return f"via follower {port}"

    suite.check("redis-cli -c SET x y on a follower follows MOVED; GET x -> y", follows_moved)

    if isinstance(harness, KvstoreCluster):
        def clusterdown():
            port = follower()
            harness.kill(state["leader"])
            deadline = time.monotonic() + 10
            while True:
                out = cli.out(port, "SET", "compat:down", "1").decode("utf-8", "replace")
                if not out.startswith("MOVED") or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            require(out.startswith("CLUSTERDOWN"),
                    f"the last node, without a majority, answered SET with {out!r}")
            return out

        suite.check("a lone node (leader and one more killed) answers writes with CLUSTERDOWN",
                    clusterdown)
    else:
        print("note - not run against Redis Cluster: the CLUSTERDOWN check (a replica whose "
              "only master died keeps answering MOVED; no other master can mark it failed)")
    if "rc" in state:
        state["rc"].close()


# --------------------------------------------------------------------- main

def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--against-redis", action="store_true",
                        help="run against redis-server instead of kvstore-server (validation)")
    parser.add_argument("--single", action=argparse.BooleanOptionalAction, default=True,
                        help="the single-node checks (default: on)")
    parser.add_argument("--cluster", action=argparse.BooleanOptionalAction, default=None,
                        help="the cluster checks (default: on against kvstore, off against Redis)")
    parser.add_argument("--port", type=int,
                        help="run the single-node checks against a server you started on "
                             "127.0.0.1:PORT (the cluster checks are then off unless --cluster)")
    args = parser.parse_args()
    cluster = (not (args.against_redis or args.port)) if args.cluster is None else args.cluster
    target = "redis-server" if args.against_redis else "kvstore-server"
    if args.port:
        target = f"the server on port {args.port}"

    work = Path(tempfile.mkdtemp(prefix="redis-compat-"))
    atexit.register(shutil.rmtree, work, True)
    atexit.register(stop_all_servers)
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, lambda number, frame: sys.exit(128 + number))

    started = time.monotonic()
    suite = Suite(work)
    suite.section("tools", 30)

    def tools():
        needed = ["redis-cli", "redis-benchmark"] + (["redis-server"] if args.against_redis else [])
        versions = []
        for tool in needed:
            version, text = tool_version(tool)
            require(version, f"{tool}: {text or 'not found'} (install redis-tools / redis-server)")
            require(version >= (7, 0, 0), f"{tool} {text}: these checks need Redis 7 tools")
            versions.append(f"{tool} {'.'.join(map(str, version))}")
        if not args.against_redis and not (args.port and not cluster):
            require(KVSTORE_SERVER.exists(), f"{KVSTORE_SERVER} is missing: cargo build --release")
        return ", ".join(versions + [f"redis-py {redis.__version__}"])

    tools_ok = suite.check("Redis 7 tools, redis-py and the server binary are present", tools)

    if args.single:
        suite.section(f"single node: {target}", SINGLE_BUDGET)
        if not tools_ok:
            suite.blocked = "tools are missing"
        server, port = None, args.port or free_ports(1)[0]

        def start():
            nonlocal server
            if args.port:
                socket.create_connection((HOST, port), timeout=SOCKET_TIMEOUT).close()
                return "started by you"
            directory = work / "single"
            if args.against_redis:
                argv = ["redis-server", "--port", str(port), "--bind", HOST, "--save", "",
                        "--appendonly", "no", "--dir", str(directory)]
            else:
                argv = [str(KVSTORE_SERVER), str(port), "--fsync", "never"]
            server = Server(target, argv, directory, port)
            server.wait_ready()
            return f"port {port}"

        if not suite.check(f"{target} accepts connections", start) and not suite.blocked:
            suite.blocked = "the server did not start"
        single_node_checks(suite, port, server, target)
        if server:
            server.stop()

    if cluster:
        suite.section(f"cluster: {'Redis Cluster' if args.against_redis else 'kvstore'}",
                      CLUSTER_BUDGET)
        harness = RedisClusterNodes(work) if args.against_redis else KvstoreCluster(work)
        if not tools_ok:
            suite.blocked = "tools are missing"
        cluster_checks(suite, harness)
        stop_all_servers()

    took = time.monotonic() - started
    print(f"== redis-compat against {target}: {suite.passed} ok, {len(suite.failed)} FAIL "
          f"in {took:.1f} s")
    if suite.failed:
        for what, _ in filter(lambda failure: not failure[1], suite.failed):
            print(f"   failed: {what}")
        not_run = sum(blocked for _, blocked in suite.failed)
        if not_run:
            print(f"   and {not_run} checks not run (FAIL) because of the failures above")
        for server in SERVERS:
            if server.crashed():
                print(f"-- {server.name} exited by itself ({server.proc.returncode}); "
                      f"the end of its output:\n{server.log_tail(1500)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
