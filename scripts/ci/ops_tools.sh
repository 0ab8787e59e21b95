#!/usr/bin/env bash
# The operators' checkers the tests run on docs/: promtool (from Debian's `prometheus` package)
# for the alert rules, systemd-analyze for the worker's unit template.
#
# Idempotent. promtool is taken out of the package into .venv/bin rather than installing the
# package, which would also install and start a Prometheus server this machine does not need.
# systemd-analyze comes with Debian's `systemd` package, installed if missing (in a container
# it starts nothing: systemd is not PID 1 there). Needs root or sudo only for that install.
set -euo pipefail
cd "$(dirname "$0")/../.."

BIN=".venv/bin"
WORK_DIR=""
trap 'rm -rf "${WORK_DIR:-/nonexistent}"' EXIT

log() { printf 'ops_tools.sh: %s\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

if [ ! -x "$BIN/promtool" ]; then
    if command -v promtool >/dev/null 2>&1; then
        ln -sf "$(command -v promtool)" "$BIN/promtool"
    else
        log "fetching promtool from Debian's prometheus package"
        WORK_DIR="$(mktemp -d)"
        (cd "$WORK_DIR" && { apt-get download prometheus >/dev/null 2>&1 \
            || { as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq \
                 && apt-get download prometheus >/dev/null; }; })
        dpkg-deb -x "$(ls "$WORK_DIR"/prometheus_*.deb | head -n 1)" "$WORK_DIR/root"
        install -m 0755 "$WORK_DIR/root/usr/bin/promtool" "$BIN/promtool"
    fi
fi
"$BIN/promtool" --version 2>&1 | head -n 1 >&2

if ! command -v systemd-analyze >/dev/null 2>&1; then
    log "installing systemd (for systemd-analyze)"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends systemd
fi
systemd-analyze --version | head -n 1 >&2
