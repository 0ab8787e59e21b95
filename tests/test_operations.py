"""The operators' files under docs/: the alert rules pass promtool (rules and their unit tests),
the Grafana dashboard is valid JSON whose every query names metrics the code exports, and the
worker's systemd unit passes `systemd-analyze verify`."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from dcp_http.metrics import Metrics
from dcp_replicator.metrics import ReplicatorMetrics
from dcp_worker.metrics import WorkerMetrics

ROOT = Path(__file__).resolve().parent.parent
MONITORING = ROOT / "docs" / "monitoring"
UNIT = ROOT / "docs" / "systemd" / "dcp-worker.service"
METRIC = re.compile(r"\b(dcp_[a-z0-9_]+|up)\b")
PROMQL_WORDS = {"up"}  # Prometheus' own series, not ours


def tool(name: str) -> str:
    """The path of a checker, or skip (fail under DCP_REQUIRE_OPS_TOOLS) without it."""
    found = shutil.which(name) or shutil.which(str(ROOT / ".venv" / "bin" / name))
    if found:
        return found
    message = f"{name} is missing; run `bash scripts/ci/ops_tools.sh`"
    if os.environ.get("DCP_REQUIRE_OPS_TOOLS"):
        pytest.fail(message)
    pytest.skip(message)


def exported() -> set[str]:
    """Every sample name the API, the worker and the replicator can expose."""
    names: set[str] = set()
    registries = [Metrics().registry, WorkerMetrics().registry, ReplicatorMetrics("x").registry]
    for registry in registries:
        for family in registry.collect():
            if family.type == "counter":
                names |= {f"{family.name}_total", f"{family.name}_created"}
            elif family.type == "histogram":
                names |= {f"{family.name}_{s}" for s in ("bucket", "count", "sum", "created")}
            else:
                names.add(family.name)
    return names


def named_in(expr: str) -> set[str]:
    # Label names and values are not metrics: drop {...} matchers before looking.
    return set(METRIC.findall(re.sub(r"\{[^}]*\}", "", expr))) - PROMQL_WORDS


def test_alert_rules_pass_promtool():
    """`promtool check rules` accepts the rules and `promtool test rules` passes their tests."""
    promtool = tool("promtool")
    check = subprocess.run(
        [promtool, "check", "rules", "dcp-alerts.yml"],
        cwd=MONITORING,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert re.search(r"SUCCESS: (\d+) rules found", check.stdout)
    tested = subprocess.run(
        [promtool, "test", "rules", "dcp-alerts.test.yml"],
        cwd=MONITORING,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_alert_rules_name_only_exported_metrics():
    """Every metric an alert reads is one the code exports (a renamed metric breaks this)."""
    known = exported()
    exprs = [
        line.split("expr:", 1)[1]
        for line in (MONITORING / "dcp-alerts.yml").read_text().splitlines()
        if line.strip().startswith("expr:")
    ]
    assert len(exprs) >= 10
    for expr in exprs:
        names = named_in(expr)
        assert names or "up{" in expr, expr
        assert names <= known, (expr, names - known)


def test_dashboard_queries_name_exported_metrics():
    """The dashboard loads as JSON; every panel queries something, and only exported metrics."""
    dashboard = json.loads((MONITORING / "dcp-dashboard.json").read_text())
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len(panels) >= 15
    known = exported()
    used: set[str] = set()
    for panel in panels:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            names = named_in(target["expr"])
            assert names, (panel["title"], target["expr"])
            assert names <= known, (panel["title"], names - known)
            used |= names
    rows = {p["title"].split(" ")[0] for p in dashboard["panels"] if p["type"] == "row"}
    assert {"Money", "Queue", "Latency", "Providers", "Replication"} <= rows
    assert {"dcp_renter_held_halala", "dcp_replicator_lag_seconds"} <= used


def test_systemd_unit_template_verifies(tmp_path: Path):
    """`systemd-analyze verify` accepts the worker's unit, with nothing to warn about."""
    analyze = tool("systemd-analyze")
    dcp = shutil.which("dcp") or str(ROOT / ".venv" / "bin" / "dcp")
    assert os.access(dcp, os.X_OK), "the dcp console script is not installed"
    # The template names /opt/dcp, where docs/worker.md installs it; verify checks that the
    # command exists, so point it at this checkout's.
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace("/opt/dcp/.venv/bin/dcp", dcp))
    done = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == "", done.stderr
    text = UNIT.read_text()
    for line in ("Restart=on-failure", "StateDirectory=dcp-worker", "EnvironmentFile="):
        assert line in text
