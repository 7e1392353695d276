#!/usr/bin/env bash
# Regenerate requirements.lock from pyproject.toml (fully pinned, with hashes).
# torch's CPU build must be findable: pip's find-links (PIP_FIND_LINKS) or an index
# that serves `torch==2.13.0+cpu`.
set -euo pipefail
cd "$(dirname "$0")/.."
UV="${UV:-uv}"
command -v "$UV" >/dev/null || { python3 -m pip install --quiet uv && UV="python3 -m uv"; }
find_links=()
for dir in ${PIP_FIND_LINKS:-}; do find_links+=(--find-links "$dir"); done
$UV pip compile --quiet pyproject.toml --extra test \
    --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
    "${find_links[@]}" --no-emit-find-links \
    --override requirements/overrides.txt --generate-hashes \
    --custom-compile-command "requirements/lock.sh" \
    -o requirements.lock
if grep -qiE '^(nvidia-|triton)' requirements.lock; then
    echo "requirements.lock would install nvidia-*/triton wheels; fix the overrides" >&2
    exit 1
fi
