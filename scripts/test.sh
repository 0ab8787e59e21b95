#!/usr/bin/env bash
# The whole test suite on a fresh Debian machine with Python 3.11, from nothing:
#   1. a virtualenv in .venv with the project and its test extras (editable, so the SQL under
#      schemas/ is found beside the packages);
#   2. a Docker engine and the worker's locally built test image (scripts/ci/docker.sh; root or
#      sudo: it installs docker.io with apt and starts dockerd);
#   3. a PostgreSQL 15 for the replicator (scripts/ci/postgres.sh, which prints the DSN);
#   4. Chromium from Debian's packages for the browser tests (scripts/ci/chromium.sh);
#   5. promtool and systemd-analyze for the operators' files under docs/ (scripts/ci/ops_tools.sh);
#   6. every test, with Docker, PostgreSQL, the browser and those tools required (their tests fail rather
#      than skip).
# Extra arguments go to pytest (e.g. `bash scripts/test.sh tests/dcp_events -x`).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test,bench]'

if [ -f scripts/ci/docker.sh ]; then
    bash scripts/ci/docker.sh
    export DCP_REQUIRE_DOCKER=1
fi
if [ -f scripts/ci/postgres.sh ]; then
    # postgres.sh prints `export DCP_TEST_PG_DSN=...` lines for the tests.
    eval "$(bash scripts/ci/postgres.sh)"
    export DCP_REQUIRE_POSTGRES=1
fi
if [ -f scripts/ci/chromium.sh ]; then
    # chromium.sh prints `export DCP_CHROMIUM=...` for the browser tests.
    eval "$(bash scripts/ci/chromium.sh)"
    export DCP_REQUIRE_BROWSER=1
fi

if [ -f scripts/ci/ops_tools.sh ]; then
    # promtool and systemd-analyze, for the tests of docs/monitoring and docs/systemd.
    bash scripts/ci/ops_tools.sh
    export DCP_REQUIRE_OPS_TOOLS=1
fi

export PATH="$PWD/.venv/bin:$PATH"
exec .venv/bin/python -m pytest "$@"
