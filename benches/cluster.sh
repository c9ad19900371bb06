#!/usr/bin/env bash
# streamq bench on a local Redis Cluster: MASTERS masters (each with one
# replica), created with redis-cli --cluster create, torn down on exit.
# Usage: benches/cluster.sh MASTERS PARTITIONS [streamq bench flags...]
# Behind docs/sizing.md. Needs redis-server and redis-cli (or
# STREAMQ_REDIS_SERVER) and a release build of streamq.
set -euo pipefail
masters=${1:?masters}; partitions=${2:?partitions}; shift 2
server=${STREAMQ_REDIS_SERVER:-redis-server}
cli=redis-cli
bin=${STREAMQ_BIN:-target/release/streamq}
root=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; rm -rf "$root"; }
trap cleanup EXIT
nodes=()
base=$((20000 + RANDOM % 20000))
for i in $(seq 0 $((masters * 2 - 1))); do
  port=$((base + i)); dir="$root/$port"; mkdir -p "$dir"
  "$server" --port "$port" --bind 127.0.0.1 --dir "$dir" --save "" --appendonly no \
    --cluster-enabled yes --cluster-config-file "$dir/nodes.conf" \
    --cluster-node-timeout 2000 --logfile "$dir/log" &
  pids+=($!)
  nodes+=("127.0.0.1:$port")
done
for n in "${nodes[@]}"; do
  until "$cli" -p "${n#*:}" ping >/dev/null 2>&1; do sleep 0.05; done
done
if [ "$masters" -ge 3 ]; then
  "$cli" --cluster create "${nodes[@]}" --cluster-replicas 1 --cluster-yes >/dev/null
else
  # redis-cli needs 3 masters; one master owns every slot, one replica.
  "$cli" -p "$base" cluster addslotsrange 0 16383 >/dev/null
  "$cli" -p $((base + 1)) cluster meet 127.0.0.1 "$base" >/dev/null
  until "$cli" -p "$base" cluster info | grep -q cluster_state:ok; do sleep 0.05; done
  sleep 1
  id=$("$cli" -p "$base" cluster myid)
  "$cli" -p $((base + 1)) cluster replicate "$id" >/dev/null
fi
for n in "${nodes[@]}"; do
  until "$cli" -p "${n#*:}" cluster info | grep -q cluster_state:ok; do sleep 0.05; done
done
cpu() { # Redis CPU seconds (user + sys) over every node
  local total=0
  for n in "${nodes[@]}"; do
    t=$("$cli" -p "${n#*:}" info cpu | awk -F: '/^used_cpu_(user|sys):/ {s += $2} END {print s}')
    total=$(echo "$total + $t" | bc -l)
  done
  echo "$total"
}
before=$(cpu)
"$bin" bench --redis "redis://127.0.0.1:$base" --partitions "$partitions" "$@"
after=$(cpu)
echo "redis_cpu_s_all_nodes=$(echo "$after - $before" | bc -l)"
