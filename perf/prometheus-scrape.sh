#!/usr/bin/env bash
# A real Prometheus scraping a 3-node kvstore cluster: each node with
# --metrics-addr on a free port, Prometheus (Debian's `prometheus` package;
# installed if missing) with a scrape config in a temp dir, scraping every
# second on a free port of its own. After some load, it waits for a scrape
# to see it and prints what Prometheus's HTTP API answers to
#   /api/v1/query?query=kvstore_requests_total
#   /api/v1/query?query=kvstore_role==1
#   /api/v1/query?query=kvstore_follower_lag_records
#   /api/v1/query?query=histogram_quantile(0.99,rate(kvstore_log_fsync_duration_seconds_bucket[1m]))
# then stops everything. Loopback only; bounded in time (about 20 s).
#
#   perf/prometheus-scrape.sh
#
# Recorded run (2 cores, release build, Debian's Prometheus 2.42.0+ds, one
# scrape a second): all three targets "up" within a second; the leader (the
# highest port) counts the line GETs and RESP GETs together under
# command="get", PUTs under "put", RESP SETs under "set"; the followers count
# the PUT they redirected under result="redirect"; each follower's lag is 0
# records; fsync p99 1-2 ms on this machine's disk. The bench runs a
# warm-up before its 20,000 measured requests, hence the larger counts:
#   == cluster on 35075 42217 36529, metrics on 54921 57921 35405, Prometheus on 41931
#   targets up: 3
#   leader: node 1 (port 42217)
#   == load on the leader: 20,000 line and 20,000 RESP requests measured (after the
#      bench's warm-up), then one PUT sent to every node (the followers redirect it)
#   == kvstore_requests_total
#   kvstore_requests_total{command="get",instance="127.0.0.1:57921",job="kvstore",node="1",result="ok"} 95511
#   kvstore_requests_total{command="put",instance="127.0.0.1:35405",job="kvstore",node="2",result="redirect"} 1
#   kvstore_requests_total{command="put",instance="127.0.0.1:54921",job="kvstore",node="0",result="redirect"} 1
#   kvstore_requests_total{command="put",instance="127.0.0.1:57921",job="kvstore",node="1",result="ok"} 48906
#   kvstore_requests_total{command="quit",instance="127.0.0.1:35405",job="kvstore",node="2",result="ok"} 1
#   kvstore_requests_total{command="quit",instance="127.0.0.1:54921",job="kvstore",node="0",result="ok"} 1
#   kvstore_requests_total{command="quit",instance="127.0.0.1:57921",job="kvstore",node="1",result="ok"} 1
#   kvstore_requests_total{command="role",instance="127.0.0.1:35405",job="kvstore",node="2",result="ok"} 1
#   kvstore_requests_total{command="role",instance="127.0.0.1:54921",job="kvstore",node="0",result="ok"} 1
#   kvstore_requests_total{command="role",instance="127.0.0.1:57921",job="kvstore",node="1",result="ok"} 1
#   kvstore_requests_total{command="set",instance="127.0.0.1:57921",job="kvstore",node="1",result="ok"} 47229
#   == kvstore_role == 1
#   kvstore_role{instance="127.0.0.1:35405",job="kvstore",node="2",role="follower"} 1
#   kvstore_role{instance="127.0.0.1:54921",job="kvstore",node="0",role="follower"} 1
#   kvstore_role{instance="127.0.0.1:57921",job="kvstore",node="1",role="leader"} 1
#   == kvstore_follower_lag_records
#   kvstore_follower_lag_records{follower="35075",instance="127.0.0.1:57921",job="kvstore",node="1"} 0
#   kvstore_follower_lag_records{follower="36529",instance="127.0.0.1:57921",job="kvstore",node="1"} 0
#   == histogram_quantile(0.99, rate(kvstore_log_fsync_duration_seconds_bucket[1m]))
#   {instance="127.0.0.1:35405",job="kvstore",node="2"} 0.001053401595744609
#   {instance="127.0.0.1:54921",job="kvstore",node="0"} 0.0009983556212984825
#   {instance="127.0.0.1:57921",job="kvstore",node="1"} 0.0017561572942135536
set -euo pipefail
cd "$(dirname "$0")/.."

SERVER=target/release/kvstore-server
BENCH=target/release/kvstore-bench
cargo build --release --quiet --bins

if ! command -v prometheus >/dev/null; then
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq prometheus >/dev/null
fi

WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
PORTS=("$(free_port)" "$(free_port)" "$(free_port)")
METRICS=("$(free_port)" "$(free_port)" "$(free_port)")
PROMETHEUS_PORT=$(free_port)
PEERS="127.0.0.1:${PORTS[0]},127.0.0.1:${PORTS[1]},127.0.0.1:${PORTS[2]}"

for node in 0 1 2; do
    "$SERVER" "${PORTS[$node]}" "$PEERS" --data-dir "$WORK/data$node" \
        --metrics-addr "127.0.0.1:${METRICS[$node]}" 2>"$WORK/node$node.err" &
    PIDS+=("$!")
done

cat >"$WORK/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: kvstore
    static_configs:
      - targets: ["127.0.0.1:${METRICS[0]}"]
        labels: {node: "0"}
      - targets: ["127.0.0.1:${METRICS[1]}"]
        labels: {node: "1"}
      - targets: ["127.0.0.1:${METRICS[2]}"]
        labels: {node: "2"}
EOF
promtool check config "$WORK/prometheus.yml" >/dev/null
prometheus --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/tsdb" \
    --web.listen-address="127.0.0.1:$PROMETHEUS_PORT" 2>"$WORK/prometheus.err" &
PIDS+=("$!")
API="http://127.0.0.1:$PROMETHEUS_PORT/api/v1"

echo "== cluster on ${PORTS[*]}, metrics on ${METRICS[*]}, Prometheus on $PROMETHEUS_PORT"
targets_up() {
    curl -s "$API/targets" | python3 -c '
import json, sys
targets = json.load(sys.stdin)["data"]["activeTargets"]
print(sum(target["health"] == "up" for target in targets))'
}
for _ in $(seq 1 200); do
    [ "$(targets_up 2>/dev/null)" = "3" ] && break
    sleep 0.1
done
echo "targets up: $(targets_up)"

role_of() {
    exec 3<>"/dev/tcp/127.0.0.1/$1"
    printf 'ROLE\n' >&3
    read -r role _ <&3
    exec 3<&-
    echo "$role"
}
LEADER=""
for _ in $(seq 1 200); do
    for node in 0 1 2; do
        [ "$(role_of "${PORTS[$node]}")" = "leader" ] && LEADER=$node
    done
    [ -n "$LEADER" ] && break
    sleep 0.05
done
[ -n "$LEADER" ] || { echo "no leader was elected" >&2; exit 1; }
echo "leader: node $LEADER (port ${PORTS[$LEADER]})"

echo "== load on the leader: 20,000 line and 20,000 RESP requests measured (after the"
echo "   bench's warm-up), then one PUT sent to every node (the followers redirect it)"
"$BENCH" --addr "127.0.0.1:${PORTS[$LEADER]}" --clients 8 --pipeline 8 --requests 20000 \
    --keyspace 1000 >/dev/null 2>&1
"$BENCH" --addr "127.0.0.1:${PORTS[$LEADER]}" --proto resp --clients 8 --pipeline 8 \
    --requests 20000 --keyspace 1000 >/dev/null 2>&1
for node in 0 1 2; do
    exec 3<>"/dev/tcp/127.0.0.1/${PORTS[$node]}"
    printf 'PUT redirected 1\nQUIT\n' >&3
    cat <&3 >/dev/null
    exec 3<&-
done
# Two scrape intervals, so the last scrape saw all of it.
sleep 2.5

query() {
    echo "== $1"
    curl -s -G "$API/query" --data-urlencode "query=$1" | python3 -c '
import json, sys
answer = json.load(sys.stdin)
if answer["status"] != "success":
    sys.exit("query failed: %s" % answer)
for series in sorted(answer["data"]["result"], key=lambda s: sorted(s["metric"].items())):
    labels = ",".join("%s=\"%s\"" % item for item in sorted(series["metric"].items())
                      if item[0] != "__name__")
    print("%s{%s} %s" % (series["metric"].get("__name__", ""), labels, series["value"][1]))'
}
query 'kvstore_requests_total'
query 'kvstore_role == 1'
query 'kvstore_follower_lag_records'
query 'histogram_quantile(0.99, rate(kvstore_log_fsync_duration_seconds_bucket[1m]))'

