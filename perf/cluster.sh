#!/usr/bin/env bash
# Starts a local kvstore cluster (3 nodes by default) on 127.0.0.1 and waits.
# Ctrl-C (or SIGTERM) stops every node with SIGTERM, so each syncs its log.
#
#   perf/cluster.sh                      # nodes on 12345 12346 12347, data in ./kvstore-data/<port>
#   KVSTORE_PORTS="7001 7002 7003 7004 7005" perf/cluster.sh --fsync never
#
# Extra arguments go to every node. To play with failover, kill -9 one node
# and start it again with the command printed for it.
set -euo pipefail
cd "$(dirname "$0")/.."

read -r -a ports <<< "${KVSTORE_PORTS:-12345 12346 12347}"
data_root="${KVSTORE_DATA:-./kvstore-data}"
binary="${KVSTORE_BINARY:-target/release/kvstore-server}"

if [[ -z "${KVSTORE_BINARY:-}" ]]; then
    cargo build --release --quiet --bin kvstore-server
fi

pids=()
stop_all() {
    trap - INT TERM
    echo "stopping ${#pids[@]} nodes..." >&2
    kill -TERM "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
    exit 0
}
trap stop_all INT TERM

for port in "${ports[@]}"; do
    peers=()
    for other in "${ports[@]}"; do
        [[ "$other" == "$port" ]] || peers+=("127.0.0.1:$other")
    done
    peer_list=$(IFS=,; echo "${peers[*]}")
    command=("$binary" "$port" "$peer_list" --data-dir "$data_root/$port" "$@")
    echo "node $port: ${command[*]}" >&2
    "${command[@]}" &
    pids+=($!)
done

echo "cluster running; Ctrl-C stops it" >&2
# Keep running while any node runs (a node killed on purpose may be restarted by hand).
while true; do
    alive=0
    for pid in "${pids[@]}"; do
        kill -0 "$pid" 2>/dev/null && alive=1
    done
    if [[ $alive == 0 ]]; then echo "every node has stopped" >&2; exit 1; fi
    sleep 1
done
