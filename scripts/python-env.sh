#!/usr/bin/env bash
# Create/refresh the Python virtualenvs of the MCP Python SDK suites:
#   .venv         tests/python/requirements.txt         (SDK 2.x: the current protocol)
#   .venv-legacy  tests/python_legacy/requirements.txt  (SDK 1.x: 2025-11-25 tasks)
#
#   bash scripts/python-env.sh && .venv/bin/python -m pytest -q tests/python
#   .venv-legacy/bin/python -m pytest -q tests/python_legacy
#
# Idempotent: a venv is created only when missing, and pip runs only when its
# requirements file (or the interpreter) changed since the last successful install,
# tracked by a stamp file inside the venv. Quiet on success.
set -euo pipefail
# Playwright (tests/python/test_live_page.py) drives Debian's chromium: never a download of its own.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-python3}"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT

ensure_venv() {
    local venv="$1" req="$2"
    local stamp="$venv/.exai-requirements.sha256"
    if [ ! -x "$venv/bin/python" ]; then
        "$python" -m venv "$venv"
    fi
    local want have
    want="$( (sha256sum "$req" | cut -d' ' -f1; "$venv/bin/python" -c 'import sys; print(sys.version)') | sha256sum | cut -d' ' -f1)"
    have="$(cat "$stamp" 2>/dev/null || true)"
    if [ "$want" != "$have" ]; then
        if ! "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
                --no-input -r "$req" >"$log" 2>&1; then
            cat "$log" >&2
            echo "python-env.sh: pip install -r $req failed" >&2
            exit 1
        fi
        echo "$want" >"$stamp"
    fi
}

ensure_venv "$repo/.venv" "$repo/tests/python/requirements.txt"
ensure_venv "$repo/.venv-legacy" "$repo/tests/python_legacy/requirements.txt"
