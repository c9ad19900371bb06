#!/usr/bin/env bash
# Script calls per job of a partitioned worker, against one private
# redis-server: streamq bench with N partitions, counted with INFO
# commandstats. Usage: benches/partitions.sh PARTITIONS [BINARY]
# Behind docs/benchmarks.md ("partitioned loops fetch and acknowledge in
# batches"); run two binaries alternately to compare builds.
set -euo pipefail
partitions=${1:?partitions}
bin=${2:-${STREAMQ_BIN:-target/release/streamq}}
server=${STREAMQ_REDIS_SERVER:-redis-server}
root=$(mktemp -d)
port=$((20000 + RANDOM % 20000))
"$server" --port "$port" --bind 127.0.0.1 --dir "$root" --save "" --appendonly no \
  --logfile "$root/log" &
pid=$!
trap 'kill -9 $pid 2>/dev/null || true; rm -rf "$root"' EXIT
until redis-cli -p "$port" ping >/dev/null 2>&1; do sleep 0.05; done
redis-cli -p "$port" config resetstat >/dev/null
"$bin" bench --jobs 100000 --partitions "$partitions" \
  --redis "redis://127.0.0.1:$port" --json > "$root/bench.json"
redis-cli -p "$port" info commandstats > "$root/stats.txt"
python3 - "$root" "$bin" "$partitions" <<'PY'
import json, re, sys
root, binary, partitions = sys.argv[1:]
bench = json.load(open(f"{root}/bench.json"))
jobs = bench["jobs"]
calls = {}
for line in open(f"{root}/stats.txt"):
    m = re.match(r"cmdstat_(\w+):calls=(\d+),usec=(\d+)", line)
    if m:
        calls[m.group(1)] = (int(m.group(2)), int(m.group(3)))
scripts, script_us = calls.get("evalsha", (0, 0))
print(json.dumps({
    "binary": binary, "partitions": int(partitions),
    "e2e_jobs_per_s": bench["e2e_jobs_per_s"],
    "queue_cpu_us_per_job": bench["queue_cpu_us_per_job"],
    "script_calls_per_job": round(scripts / jobs, 3),
    "redis_script_us_per_job": round(script_us / jobs, 1),
}))
PY
