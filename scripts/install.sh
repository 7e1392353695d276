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
    echo "installing locked dependencies into .venv (first run: a few minutes)..."
    # --no-deps: the lock is complete and fully pinned, so pip resolves nothing and
    # cannot wander into other releases; --require-hashes: every file is the locked one.
    .venv/bin/python -m pip install --quiet --no-deps --require-hashes -r requirements.lock
    .venv/bin/python -m pip install --quiet --no-deps --no-build-isolation -e .
    echo "$want" > "$stamp"
fi
