#!/usr/bin/env bash
# Run the DCP API on the embedded SQLite log (./dcp.db by default) from a fresh checkout:
# creates .venv on first use, installs the project, then `dcp serve` with any arguments given.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/dcp ]; then
    "${PYTHON:-python3}" -m venv .venv
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -e .
fi
exec .venv/bin/dcp serve "$@"
