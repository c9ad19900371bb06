#!/usr/bin/env bash
# The Python client's environment: clients/python/.venv with the package
# (editable) and its test dependencies from PyPI. Idempotent and safe when
# several run at once (the Rust interop tests and CI both call it).
# Prints the venv's python.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
venv="$here/.venv"
exec 9>"$here/.dev-env.lock"
flock 9
if [ ! -f "$venv/.ready" ] || [ "$here/pyproject.toml" -nt "$venv/.ready" ]; then
    python3 -m venv "$venv" >&2
    "$venv/bin/python" -m pip install -q -e "$here[test]" >&2
    touch "$venv/.ready"
fi
echo "$venv/bin/python"
