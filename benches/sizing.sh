#!/usr/bin/env bash
# Runs every streamq bench scenario behind docs/benchmarks.md, three times
# each, and prints the medians. Each run starts its own private redis-server.
# Usage: bash benches/sizing.sh [RUNS]   (RUNS defaults to 3)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
cargo build --release --quiet
bin=target/release/streamq
out=$(mktemp)

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem:/{print $2}') GiB"
echo "redis:   $(${STREAMQ_REDIS_SERVER:-redis-server} --version)"
echo "date:    $(date -u +%Y-%m-%dT%H:%MZ)"

scenario() {
    local name=$1
    shift
    for _ in $(seq "$runs"); do
        echo "$name $("$bin" bench --json "$@" 2>/dev/null | tail -n 1)" >>"$out"
    done
}

scenario raw --raw
scenario saturation
scenario paced-7000 --rate 7000 --duration 60
scenario backlog --backlog 200000
scenario json --payload json --backlog 100000
scenario json-lz4 --payload json --backlog 100000 --compress-above 512

python3 - "$out" <<'PY'
import json, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    name, _, data = line.partition(" ")
    rows.setdefault(name, []).append(json.loads(data))
fields = ["e2e_jobs_per_s", "enqueue_jobs_per_s", "process_jobs_per_s", "p50_ms", "p99_ms",
          "p999_ms", "max_ms", "max_waiting", "redis_bytes_per_queued_job",
          "redis_used_memory_peak_bytes", "client_cpu_s_per_1k_jobs"]
for name, runs in rows.items():
    print(f"\n{name} ({len(runs)} runs, median [min..max])")
    for f in fields:
        values = [r[f] for r in runs if r.get(f) is not None]
        if values:
            print(f"  {f:32} {statistics.median(values):>14.3f}  [{min(values):.3f} .. {max(values):.3f}]")
    after = [r["redis_used_memory_after_bytes"] - r["redis_used_memory_before_bytes"]
             for r in runs if "redis_used_memory_after_bytes" in r]
    if after:
        print(f"  {'memory_after_minus_before_bytes':32} {statistics.median(after):>14.0f}")
PY
rm -f "$out"
