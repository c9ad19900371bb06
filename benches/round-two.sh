#!/usr/bin/env bash
# The "performance round two" scenarios of docs/benchmarks.md, RUNS times each (default 3),
# interleaved so each round has its own raw baseline and BullMQ figure.
# One private redis-server for the whole script, flushed and reset before
# every run, so each run also reports Redis's own CPU per job and INFO
# commandstats (script time per call): measures that hold up on a loaded
# machine, beside the wall-clock rates that do not.
#
# Usage: bash benches/round-two.sh [RUNS]
#   ONLY="raw saturation ..."   run only these scenarios
#   BIN=path/to/streamq         another build (an A/B against an older commit)
#   PROFILE=1                   also log every command in SLOWLOG for one
#                               paced and one saturation run, and print Redis
#                               time per script (perturbs those runs)
#   WAKES=1                     run each bench under `perf stat` (Debian's
#                               linux-perf) and add the client's context
#                               switches per job to its result
# Needs: a release build (cargo build --release), redis-server, and for the
# BullMQ rows node + `npm install` in benches/bullmq (the lock pins bullmq;
# npm 11 `npm ci` refuses this lock over msgpackr-extract's optional
# per-platform packages, which it leaves out).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
target=${CARGO_TARGET_DIR:-target}
cargo build --release --quiet --bin streamq
bin=${BIN:-$target/release/streamq}
port=${PORT:-6399}
out=${OUT:-$(mktemp -d)}
only=${ONLY:-"raw saturation bullmq track-off track-on track-memory raw-paced-7000 paced-7000 raw-paced-500 paced-500 paced-7000-own paced-500-own paced-70000 drain-1m"}

redis-server --port "$port" --save '' --appendonly no --daemonize yes \
    --logfile "$out/redis.log" --pidfile "$out/redis.pid"
trap 'kill "$(cat "$out/redis.pid")" 2>/dev/null || true' EXIT
sleep 0.5
cli() { redis-cli -p "$port" "$@"; }
redis_cpu() { cli info cpu | tr -d '\r' | awk -F: '/used_cpu_(user|sys):/{s+=$2}END{printf "%.3f", s}'; }

echo "machine: $(nproc) cores, $(lscpu | awk -F: '/Model name/{print $2; exit}' | xargs), $(free -g | awk '/Mem:/{print $2}') GiB"
echo "redis:   $(redis-server --version)"
echo "date:    $(date -u +%Y-%m-%dT%H:%MZ), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "output:  $out"

# run NAME COMMAND...: one run; appends "NAME {json}" to results.
run() {
    local name=$1
    shift
    cli flushall >/dev/null
    cli config resetstat >/dev/null
    local cpu0 cpu1 line load
    load=$(cut -d' ' -f1 /proc/loadavg)
    cpu0=$(redis_cpu)
    local wakes="$out/$name.$(date +%s).perf"
    if [ "${WAKES:-0}" = 1 ]; then
        set -- perf stat -x, -e context-switches -o "$wakes" "$@"
    fi
    line=$("$@" 2>>"$out/stderr.log" | tail -n 1) || echo "  $name: the command failed (see $out/stderr.log)"
    cpu1=$(redis_cpu)
    cli info commandstats | tr -d '\r' | grep '^cmdstat' >"$out/$name.$(date +%s).cmdstats" || true
    local evalsha
    evalsha=$(cli info commandstats | tr -d '\r' | awk -F'[=,]' '/^cmdstat_evalsha:/{print $2, $6}')
    python3 - "$name" "$line" "$cpu0" "$cpu1" "$load" "$evalsha" "$wakes" >>"$out/results" <<'PY'
import json, os, sys
name, line, cpu0, cpu1, load, evalsha, wakes = sys.argv[1:8]
r = json.loads(line)
jobs = r.get("jobs") or 1
r["redis_cpu_us_per_job"] = round((float(cpu1) - float(cpu0)) * 1e6 / jobs, 2)
if evalsha:
    calls, usec_per_call = evalsha.split()
    r["script_calls_per_job"] = round(int(calls) / jobs, 3)
    r["script_usec_per_call"] = float(usec_per_call)
r["load"] = float(load)
if os.path.exists(wakes):
    for row in open(wakes):
        fields = row.strip().split(",")
        if len(fields) > 2 and fields[2] == "context-switches" and fields[0].isdigit():
            r["client_context_switches_per_job"] = round(int(fields[0]) / jobs, 2)
print(name, json.dumps(r))
PY
    echo "  $name done ($(date -u +%H:%M:%S), load $load)"
}

url=redis://127.0.0.1:$port
has() { [[ " $only " == *" $1 "* ]]; }
for round in $(seq "$runs"); do
    echo "round $round"
    has raw && run raw "$bin" bench --redis "$url" --json --raw --jobs 200000
    has saturation && run saturation "$bin" bench --redis "$url" --json --jobs 200000
    if has bullmq && [ -d benches/bullmq/node_modules ]; then
        run bullmq node benches/bullmq/bench.js "$port" 50000
    fi
    has track-off && run track-off "$bin" bench --redis "$url" --json --jobs 100000
    has track-on && run track-on "$bin" bench --redis "$url" --json --jobs 100000 --track-jobs
    has track-memory && run track-memory "$bin" bench --redis "$url" --json --backlog 200000 --track-jobs
    has raw-paced-7000 && run raw-paced-7000 "$bin" bench --redis "$url" --json --raw --rate 7000 --duration 60
    has paced-7000 && run paced-7000 "$bin" bench --redis "$url" --json --rate 7000 --duration 60
    has raw-paced-500 && run raw-paced-500 "$bin" bench --redis "$url" --json --raw --rate 500 --duration 60
    has paced-500 && run paced-500 "$bin" bench --redis "$url" --json --rate 500 --duration 60
    # The same, each worker on a thread of its own (docs/sizing.md, "Steady rates").
    has paced-7000-own && run paced-7000-own "$bin" bench --redis "$url" --json --rate 7000 --duration 60 --worker-threads-own
    has paced-500-own && run paced-500-own "$bin" bench --redis "$url" --json --rate 500 --duration 60 --worker-threads-own
    has paced-70000 && run paced-70000 "$bin" bench --redis "$url" --json --rate 70000 --duration 20
    if has drain-1m && [ "$round" = 1 ]; then
        # Memory and progress once a second while 1,000,000 jobs are
        # enqueued, then drained; then 10 s more to show memory stays flat.
        (while [ ! -e "$out/drain.stop" ]; do
            echo "$(date +%s.%N | cut -c1-14) $(cli info memory | tr -d '\r' | awk -F: '/^used_memory:/{print $2}') $(for p in critical high medium low; do cli xlen "streamq:{streamq-bench}:$p"; done | paste -sd+ | bc)"
            sleep 1
        done) >"$out/drain-1m.timeline" &
        run drain-1m "$bin" bench --redis "$url" --json --backlog 1000000
        sleep 10
        touch "$out/drain.stop"
        wait
    fi
done

if [ "${PROFILE:-0}" = 1 ]; then
    for scenario in "paced-7000 --rate 7000 --duration 10" "saturation --jobs 50000"; do
        set -- $scenario
        name=$1
        shift
        cli flushall >/dev/null
        cli config set slowlog-log-slower-than 0 >/dev/null
        cli config set slowlog-max-len 2000000 >/dev/null
        cli slowlog reset >/dev/null
        "$bin" bench --redis "$url" --json "$@" 2>/dev/null | tail -n 1 >"$out/profile-$name.json"
        cli config set slowlog-log-slower-than 10000 >/dev/null
        cli --json slowlog get 2000000 >"$out/profile-$name.slowlog"
        cli slowlog reset >/dev/null
        python3 - "$out/profile-$name.slowlog" "$out/profile-$name.json" "$name" <<'PY'
import collections, hashlib, json, pathlib, sys
shas = {hashlib.sha1(p.read_bytes()).hexdigest(): p.stem for p in pathlib.Path("lua").glob("*.lua")}
log = json.loads(open(sys.argv[1], "rb").read().decode("utf-8", "replace"))
jobs = json.load(open(sys.argv[2]))["jobs"]
agg = collections.defaultdict(lambda: [0, 0])
for entry in log:
    args = entry[3]
    key = args[0].lower()
    if key == "evalsha":
        key = "script " + shas.get(args[1], args[1][:8])
    agg[key][0] += 1
    agg[key][1] += entry[2]
print(f"\nRedis time by command, {sys.argv[3]} ({jobs} jobs; commands run by scripts are also counted inside their script)")
for key, (calls, us) in sorted(agg.items(), key=lambda kv: -kv[1][1])[:14]:
    print(f"  {key:24} {calls:8} calls {us / calls:8.1f} us/call {us / jobs:7.2f} us/job")
PY
    done
fi

python3 - "$out/results" <<'PY'
import json, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    name, _, data = line.partition(" ")
    rows.setdefault(name, []).append(json.loads(data))
fields = ["e2e_jobs_per_s", "enqueue_jobs_per_s", "process_jobs_per_s", "p50_ms", "p99_ms",
          "p999_ms", "max_waiting", "redis_bytes_per_queued_job", "redis_used_memory_peak_bytes",
          "client_cpu_s_per_1k_jobs", "client_cpu_us_per_job", "producer_cpu_us_per_job",
          "worker_cpu_us_per_job", "pacing_cpu_us_per_job", "queue_cpu_us_per_job",
          "redis_cpu_us_per_job", "client_context_switches_per_job", "script_calls_per_job",
          "script_usec_per_call", "load"]
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
