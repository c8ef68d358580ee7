#!/usr/bin/env bash
# perf/etcd.sh: a 3-member etcd against a 3-node kvstore cluster, 100% PUT,
# 100-byte values, 50 requests in flight, A B A B; records ops/s, p50, p99.
#
#   perf/etcd.sh                                  # 3 rounds x 10 s, appends to perf/RESULTS.md
#   perf/etcd.sh --rounds 1 --duration 3 --no-record
#   perf/etcd.sh --help
#
# What is measured (details in perf/etcd.py's docstring, printed by --help):
#   - both durable: kvstore --fsync always on all 3 nodes; etcd's defaults,
#     which fsync the raft WAL before a write commits;
#   - 50 closed-loop clients, one request in flight each; 1 s warmup, then
#     --duration seconds measured;
#   - load sent to the leader on both sides: kvstore-bench follows NOT_LEADER;
#     perf/etcd-bench (a small tonic gRPC client, one tokio thread; etcd's own
#     tools/benchmark is not packaged by Debian) finds the leader with the
#     Maintenance/Status RPC and sends every KV/Put there;
#   - the 3 servers of a system pinned together on CPU 0, the load generator
#     on CPU 1 (taskset), as perf/compare.py does;
#   - fresh clusters (temp data dirs, free ports) per measurement, stopped by
#     PID (SIGTERM, then SIGKILL after 30 s); temp dirs removed on exit.
#   - versions: etcd from the Debian package etcd-server (3.4.23 on Debian 12),
#     kvstore at HEAD; both recorded in the report.
#
# This wrapper installs etcd-server (and etcd-client, for etcdctl) with apt-get
# when `etcd` is missing, then runs perf/etcd.py, which builds kvstore and
# perf/etcd-bench (cargo build --release) and does the rest.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

for argument in "$@"; do
    if [[ "$argument" == "-h" || "$argument" == "--help" ]]; then
        exec python3 "$here/etcd.py" --help
    fi
done

if ! command -v etcd >/dev/null 2>&1; then
    echo "etcd is missing; installing the Debian packages etcd-server and etcd-client" >&2
    sudo=()
    [[ "$(id -u)" == 0 ]] || sudo=(sudo)
    "${sudo[@]}" apt-get update -qq
    # The package's own service is not used (and does not start without systemd).
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server etcd-client >&2
fi

exec python3 "$here/etcd.py" "$@"
