#!/usr/bin/env bash
# Copies the repository's lua/*.lua into each client's package. The copies are
# never edited by hand; tests/interop.rs fails when one differs.
set -euo pipefail
cd "$(dirname "$0")/.."
for dest in clients/python/streamq/lua clients/node/lua; do
    rm -f "$dest"/*.lua
    cp lua/*.lua "$dest"/
done
