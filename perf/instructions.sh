#!/usr/bin/env bash
# Counts the instructions a kvstore server executes per request (user space
# only), under callgrind, and prints the functions they go to. Unlike ops/s,
# the count does not move when other processes share the machine, so a
# change to the hot path can be judged in one run on a busy box.
#
#   perf/instructions.sh                       # line protocol, 50 clients x pipeline 32
#   perf/instructions.sh --proto resp          # the same requests over RESP (SET/GET)
#   perf/instructions.sh --proto resp --pipeline 1 --requests 100000
#   KVSTORE_BINARY=/path/to/kvstore-server perf/instructions.sh   # another build
#   perf/instructions.sh --get-ratio 1 --total-only   # one number: all instructions of the run
#   perf/instructions_table.py   # GET and PUT apart, pipeline 1 and 32, two builds side by side
#
# The server runs --fsync never; the load is kvstore-bench with --preload
# (100,000 PUTs) and then --requests more at 50% GET, so the count covers
# preload + requests; both are printed. Installs valgrind if missing.
set -euo pipefail
cd "$(dirname "$0")/.."

proto=line
pipeline=32
requests=300000
keyspace=100000
get_ratio=0.5
total_only=
while [[ $# -gt 0 ]]; do
    case "$1" in
        --proto) proto="$2"; shift 2 ;;
        --pipeline) pipeline="$2"; shift 2 ;;
        --requests) requests="$2"; shift 2 ;;
        --get-ratio) get_ratio="$2"; shift 2 ;;
        --total-only) total_only=1; shift ;;
        *) echo "usage: perf/instructions.sh [--proto line|resp] [--pipeline N] [--requests N] [--get-ratio F] [--total-only]" >&2; exit 2 ;;
    esac
done

if ! command -v valgrind >/dev/null; then
    prefix=(); [[ $(id -u) == 0 ]] || prefix=(sudo)
    "${prefix[@]}" apt-get install -y -qq valgrind >/dev/null
fi
cargo build --release --quiet --bins
work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cleanup() { [[ -n "${server_pid:-}" ]] && kill "$server_pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

valgrind --tool=callgrind --callgrind-out-file="$work/callgrind.out" \
    "${KVSTORE_BINARY:-target/release/kvstore-server}" "$port" --fsync never --data-dir "$work/data" 2>"$work/server.err" &
server_pid=$!
for _ in $(seq 600); do
    grep -q "listening on" "$work/server.err" 2>/dev/null && break
    sleep 0.1
done
target/release/kvstore-bench --addr "127.0.0.1:$port" --proto "$proto" --clients 50 \
    --pipeline "$pipeline" --keyspace "$keyspace" --preload --requests "$requests" --warmup 0 \
    --get-ratio "$get_ratio" \
    >"$work/bench.out" 2>/dev/null
kill "$server_pid"
wait "$server_pid" || true
server_pid=

total_requests=$((keyspace + requests))
if [[ -n "$total_only" ]]; then
    # The whole server's user-space instructions, start-up and preload included.
    callgrind_annotate --auto=no "$work/callgrind.out" 2>/dev/null \
        | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }'
    exit 0
fi
echo "proto $proto, 50 clients x pipeline $pipeline: $total_requests requests (preload $keyspace + $requests)"
summary() { callgrind_annotate --auto=no --threshold=100 --inclusive="$1" "$work/callgrind.out" 2>/dev/null; }
{ summary yes; echo "@@ own"; summary no; } | python3 -c '
import re, sys
requests = int(sys.argv[1])
inclusive, own = {}, {}
part = inclusive
for line in sys.stdin:
    if line.startswith("@@ own"):
        part = own
        continue
    match = re.match(r"\s*([\d,]+) \([ \d.]+%\)\s+(?:\S*?:)?(.*?)(?: \[.*\])?$", line)
    if match and "PROGRAM TOTALS" not in line:
        name, count = match.group(2), int(match.group(1).replace(",", ""))
        if part is own:
            # Code inlined from other files gets rows of its own: add them up.
            own[name] = own.get(name, 0) + count
        else:
            inclusive[name] = max(count, inclusive.get(name, 0))
executed = max(count for name, count in inclusive.items() if name.endswith("Connection::execute_buffered"))
total = sum(count for name, count in own.items())
print(f"{total / requests:.0f} instructions per request in the whole server (user space)")
print(f"{executed / requests:.0f} instructions per request in Connection::execute_buffered (inclusive, user space)")
print("own instructions per request (inlined code included), by function:")
for name, count in sorted(own.items(), key=lambda item: -item[1])[:22]:
    print(f"{count / requests:8.1f}  {name}")
' "$total_requests"
