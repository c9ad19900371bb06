#!/usr/bin/env bash
# streamq serve's figures in docs/benchmarks.md, in one run: the HTTP ceiling
# (a bare axum route that only parses the JSON and answers 202), single-alert
# POSTs, the batch endpoint, the library's own batch enqueue, and paced
# 7,000 alerts/s. wrk (keep-alive, 64 connections) for the saturating runs,
# hey for the paced one (wrk cannot pace); both from Debian:
#   apt-get install -y wrk hey
# Build first: cargo build --release --bin streamq --example http_baseline
# Every server listens on loopback; every load stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
T=${CARGO_TARGET_DIR:-target}/release
DUR=${DUR:-20s}
PORT_REDIS=16510 PORT_BARE=18090 PORT_SERVE=18091
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; \
    redis-cli -p $PORT_REDIS shutdown nosave >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT

# A ~1 KiB alert, and a batch of 1,000 of them.
python3 - "$work" <<'PY'
import json, sys
d = sys.argv[1]
alert = {"title": "disk usage above 95% on db-1", "severity": "critical", "source": "nagios",
         "tenant": "acme", "timestamp": 1795460409.25, "host": "db-1.eu-west.example.com"}
alert["description"] = "x" * (1024 - len(json.dumps(alert)) - 20)
body = json.dumps(alert)
open(f"{d}/alert.json", "w").write(body)
open(f"{d}/batch.json", "w").write(json.dumps([alert] * 1000))
for name, path in [("alert", "/api/alerts/event"), ("batch", "/api/alerts/batch")]:
    text = open(f"{d}/{name}.json").read()
    open(f"{d}/{name}.lua", "w").write(
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = {json.dumps(text)}\n")
print("alert body bytes:", len(body))
PY

redis-server --port $PORT_REDIS --save "" --appendonly no --daemonize yes --dir "$work" >/dev/null
until redis-cli -p $PORT_REDIS ping >/dev/null 2>&1; do sleep 0.1; done
echo "== $(redis-server --version)"
echo "== $(nproc) cores; $(wrk --version 2>&1 | head -1)"

"$T/examples/http_baseline" 127.0.0.1:$PORT_BARE >/dev/null & pids+=($!)
"$T/streamq" serve --redis redis://127.0.0.1:$PORT_REDIS --queue bench \
    --listen 127.0.0.1:$PORT_SERVE --history-step-secs "${HISTORY_STEP:-60}" >/dev/null & pids+=($!)
until curl -s -o /dev/null 127.0.0.1:$PORT_SERVE/healthz && \
      curl -s -o /dev/null -XPOST -d '{}' 127.0.0.1:$PORT_BARE/api/alerts/event; do sleep 0.1; done

# Empties the served queue's streams, keeping its consumer groups.
reset() {
    for p in critical high medium low; do
        redis-cli -p $PORT_REDIS xtrim "streamq:{bench}:$p" maxlen 0 >/dev/null
    done
    redis-cli -p $PORT_REDIS del "streamq:{lib}:medium" >/dev/null
}

run_wrk() { # name, port, path, lua
    echo "== $1"
    wrk -t1 -c64 -d"$DUR" --latency -s "$work/$4" "http://127.0.0.1:$2$3" |
        grep -E "Requests/sec|Latency|99%|50%|Non-2xx|Socket errors|requests in"
    reset
}

run_wrk "bare axum route (ceiling): 1 KiB alert, parse, 202" $PORT_BARE /api/alerts/event alert.lua
run_wrk "streamq serve: POST /api/alerts/event" $PORT_SERVE /api/alerts/event alert.lua
run_wrk "streamq serve: POST /api/alerts/batch, 1,000 alerts per request" $PORT_SERVE /api/alerts/batch batch.lua

echo "== library batch enqueue: streamq produce --count 200000 --batch 1000 (1 KiB)"
start=$(date +%s.%N)
"$T/streamq" produce --redis redis://127.0.0.1:$PORT_REDIS --queue lib --count 200000 \
    --payload-bytes 1024 --batch 1000 >/dev/null
end=$(date +%s.%N)
python3 -c "print(f'{200000/($end-$start):,.0f} jobs/s')"
reset

echo "== paced: 7,040 alerts/s for 30 s (hey, 64 workers x 110/s)"
hey -z 30s -c 64 -q 110 -m POST -T application/json -D "$work/alert.json" \
    "http://127.0.0.1:$PORT_SERVE/api/alerts/event" |
    grep -E "Requests/sec|Status code|\[[0-9]{3}\]|50%|90%|99%|Slowest|Average" || true
echo "== load average: $(cut -d' ' -f1-3 /proc/loadavg)"
