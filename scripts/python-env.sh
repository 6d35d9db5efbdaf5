#!/usr/bin/env bash
# Create/refresh the Python virtualenv used by tests/python (the MCP Python SDK suite).
#
#   bash scripts/python-env.sh && .venv/bin/python -m pytest -q tests/python
#
# Idempotent: the venv is created only when missing, and pip runs only when
# tests/python/requirements.txt (or the interpreter) changed since the last
# successful install, tracked by a stamp file inside the venv. Quiet on success.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$repo/.venv"
req="$repo/tests/python/requirements.txt"
stamp="$venv/.exai-requirements.sha256"
python="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi

want="$( (sha256sum "$req" | cut -d' ' -f1; "$venv/bin/python" -c 'import sys; print(sys.version)') | sha256sum | cut -d' ' -f1)"
have="$(cat "$stamp" 2>/dev/null || true)"

if [ "$want" != "$have" ]; then
    log="$(mktemp)"
    trap 'rm -f "$log"' EXIT
    if ! "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
            --no-input -r "$req" >"$log" 2>&1; then
        cat "$log" >&2
        echo "python-env.sh: pip install -r $req failed" >&2
        exit 1
    fi
    echo "$want" >"$stamp"
fi
