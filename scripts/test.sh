#!/usr/bin/env bash
# The test suite on a fresh machine (the README's test command; CI runs exactly this): what the suite
# needs beyond Python packages, which is Debian's Chromium for the web-page tests (Playwright drives
# it; no browser is downloaded), then the locked dependencies, then pytest (arguments go to pytest).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null; then
    echo "installing Debian's chromium for the web-page tests (once)..."
    sudo=""
    [ "$(id -u)" = 0 ] || sudo=sudo
    if ! command -v apt-get >/dev/null || { [ -n "$sudo" ] && ! sudo -n true 2>/dev/null; } \
        || ! { $sudo apt-get update -qq && $sudo apt-get install -y -qq chromium >/dev/null; }; then
        echo "error: the web-page tests need Chromium, and it could not be installed here (it takes apt-get" \
             "as root or password-less sudo). Install Debian's or Ubuntu's chromium package, or any Chromium" \
             "on the PATH as chromium, then run this again." >&2
        exit 2
    fi
fi
./scripts/install.sh
exec .venv/bin/python -m pytest "$@"
