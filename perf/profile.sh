#!/usr/bin/env bash
# Samples where a kvstore server spends its CPU under load, and prints the
# top symbols and the ops/s it served meanwhile.
#
#   perf/profile.sh                                   # --fsync never, 50 clients x pipeline 32
#   perf/profile.sh --fsync always --pipeline 1
#   perf/profile.sh --proto resp                      # the same load over RESP (SET/GET)
#   KVSTORE_BINARY=/path/to/kvstore-server perf/profile.sh   # profile another build
#
# Uses `perf record -e cpu-clock` (software sampling works where hardware
# counters are not exposed, as on many VMs); installs linux-perf if missing.
set -euo pipefail
cd "$(dirname "$0")/.."

fsync=never
pipeline=32
seconds=5
proto=line
while [[ $# -gt 0 ]]; do
    case "$1" in
        --fsync) fsync="$2"; shift 2 ;;
        --pipeline) pipeline="$2"; shift 2 ;;
        --seconds) seconds="$2"; shift 2 ;;
        --proto) proto="$2"; shift 2 ;;
        *) echo "usage: perf/profile.sh [--fsync always|interval|never] [--pipeline N] [--seconds S] [--proto line|resp]" >&2; exit 2 ;;
    esac
done

if ! command -v perf >/dev/null; then
    prefix=(); [[ $(id -u) == 0 ]] || prefix=(sudo)
    "${prefix[@]}" apt-get install -y -qq linux-perf >/dev/null
fi
cargo build --release --quiet --bins
server="${KVSTORE_BINARY:-target/release/kvstore-server}"
bench=target/release/kvstore-bench
work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cleanup() { [[ -n "${server_pid:-}" ]] && kill "$server_pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

taskset -c 0 "$server" "$port" --fsync "$fsync" --data-dir "$work/data" 2>"$work/server.err" &
server_pid=$!
for _ in $(seq 100); do
    grep -q "listening on" "$work/server.err" 2>/dev/null && break
    sleep 0.05
done
load=(taskset -c 1 "$bench" --addr "127.0.0.1:$port" --proto "$proto" --clients 50 --pipeline "$pipeline")
"${load[@]}" --duration 1 --preload >/dev/null 2>&1
"${load[@]}" --duration $((seconds + 2)) >"$work/bench.out" 2>/dev/null &
bench_pid=$!
sleep 1
perf record -q -F 1999 -e cpu-clock -p "$server_pid" -o "$work/perf.data" -- sleep "$seconds" 2>/dev/null
wait "$bench_pid"
grep RESULT "$work/bench.out"
perf report -i "$work/perf.data" --no-children --sort dso --stdio 2>/dev/null | grep -E '^ +[0-9]' | head -4
perf report -i "$work/perf.data" --no-children --percent-limit 1 --stdio 2>/dev/null | grep -E '^ +[0-9]' | head -20
