#!/usr/bin/env bash
# The Node client, installed (npm ci from the lock file) and built (tsc).
# Idempotent and safe when several run at once (the Rust interop tests and
# CI both call it). Prints the driver's path.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
exec 9>"$here/.dev-env.lock"
flock 9
cd "$here"
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.ready ]; then
    npm ci --silent --no-audit --no-fund >&2
    touch node_modules/.ready
fi
if [ ! -f dist/.ready ] || [ -n "$(find src -newer dist/.ready)" ]; then
    npx tsc -p tsconfig.json >&2
    touch dist/.ready
fi
echo "$here/test/interop-driver.mjs"
