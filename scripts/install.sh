#!/usr/bin/env bash
# Create .venv and install the locked dependencies plus gandefect itself.
# Idempotent: a second run with an unchanged lock installs nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null || PYTHON=python3
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
stamp=.venv/.gandefect-lock.sha256
want="$(sha256sum requirements.lock pyproject.toml | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
    echo "installing locked dependencies into .venv (first run: about a minute)..."
    # --no-deps: the lock is complete and fully pinned, so nothing is resolved and nothing
    # can wander into other releases; --require-hashes: every file is the locked one.
    # uv installs the same files about 2-3x faster than pip (parallel, byte-code compiled
    # on all cores); pip does it alone if uv cannot be had or fails.
    find_links=()
    for dir in ${PIP_FIND_LINKS:-}; do find_links+=(--find-links "$dir"); done
    if .venv/bin/python -m pip install --quiet "uv==0.13.9" \
        && .venv/bin/uv pip install --quiet --python .venv/bin/python --no-deps --require-hashes \
            --compile-bytecode "${find_links[@]}" -r requirements.lock; then
        :
    else
        echo "uv unavailable or failed; installing with pip"
        .venv/bin/python -m pip install --quiet --no-deps --require-hashes -r requirements.lock
    fi
    .venv/bin/python -m pip install --quiet --no-deps --no-build-isolation -e .
    echo "$want" > "$stamp"
fi
