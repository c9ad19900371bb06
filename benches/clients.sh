#!/usr/bin/env bash
# Batch enqueue rate of each client, in one run against one private
# redis-server: 200,000 jobs of ~1 KiB in batches of 1,000, by the Rust CLI
# (`streamq produce`) and by the Python (sync) and Node clients' interop drivers.
# Build first: cargo build --release --bin streamq
set -euo pipefail
cd "$(dirname "$0")/.."
T=${CARGO_TARGET_DIR:-target}/release
COUNT=${COUNT:-200000}
port=${PORT:-16520}
work=$(mktemp -d)
trap 'redis-cli -p $port shutdown nosave >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
redis-server --port "$port" --save "" --appendonly no --daemonize yes --dir "$work" >/dev/null
until redis-cli -p "$port" ping >/dev/null 2>&1; do sleep 0.1; done
python=$(bash clients/python/dev-env.sh)
node_driver=$(bash clients/node/dev-env.sh 2>/dev/null)
echo "== $(redis-server --version)"
echo "== $(nproc) cores, $(lscpu | awk -F: '/Model name/{print $2; exit}' | xargs); load $(cut -d' ' -f1-3 /proc/loadavg)"

start=$(date +%s.%N)
"$T/streamq" produce --redis "redis://127.0.0.1:$port" --queue rust --count "$COUNT" \
    --payload-bytes 1024 --batch 1000 >/dev/null
end=$(date +%s.%N)
python3 -c "print(f'rust   (streamq produce --batch 1000):   {$COUNT/($end-$start):>9,.0f} jobs/s')"
redis-cli -p "$port" flushall >/dev/null

# The driver's payload is a map with a 1,000-byte pad: about the same 1 KiB.
"$python" clients/python/tests/interop_driver.py produce --redis "redis://127.0.0.1:$port" \
    --queue python --count "$COUNT" --batch 1000 --pad 1000 | tail -n 1 |
    python3 -c "import json,sys; r=json.load(sys.stdin); print(f\"python (enqueue_batch of 1,000, sync): {r['count']/r['seconds']:>9,.0f} jobs/s\")"
redis-cli -p "$port" flushall >/dev/null

node "$node_driver" produce --redis "redis://127.0.0.1:$port" \
    --queue node --count "$COUNT" --batch 1000 --pad 1000 | tail -n 1 |
    python3 -c "import json,sys; r=json.load(sys.stdin); print(f\"node   (enqueueBatch of 1,000):          {r['count']/r['seconds']:>9,.0f} jobs/s\")"
