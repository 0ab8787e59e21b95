#!/usr/bin/env bash
# Install Chromium from Debian's packages for the browser tests (tests/dcp_web).
#
# Idempotent: does nothing when the browser is already there. Playwright (from PyPI, in the
# test extra) drives this system browser; `playwright install` is never run, so nothing is
# downloaded at test time. Prints `export DCP_CHROMIUM=...` for `eval`; progress goes to stderr.
#
# Needs root for apt (CI runs it with sudo where it is not root). Settings, by environment:
#   DCP_CHROMIUM   the browser binary (default /usr/bin/chromium)
set -euo pipefail

BROWSER="${DCP_CHROMIUM:-/usr/bin/chromium}"

log() { printf 'chromium.sh: %s\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

if [ ! -x "$BROWSER" ]; then
    log "installing chromium with apt"
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get install -y -q chromium >&2 || {
        as_root apt-get update -q >&2
        as_root apt-get install -y -q chromium >&2
    }
fi
# Debian's launcher script prints a shell warning on some hosts; ask the binary itself.
"$BROWSER" --version >&2 || { log "$BROWSER does not run"; exit 1; }
echo "export DCP_CHROMIUM=$BROWSER"
