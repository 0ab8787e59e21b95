"""The packages depend on each other in one direction only (docs/design.md)."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OURS = {
    "dcp_events",
    "dcp_projections",
    "dcp_app",
    "dcp_http",
    "dcp_worker",
    "dcp_replicator",
    "dcp_audit",
    "dcp_cli",
}
# What each package may import from the others.
ALLOWED = {
    "dcp_events": set(),
    "dcp_projections": {"dcp_events"},
    "dcp_app": {"dcp_events", "dcp_projections"},
    "dcp_audit": {"dcp_events", "dcp_projections", "dcp_app"},
    "dcp_replicator": {"dcp_events", "dcp_projections", "dcp_app"},
    "dcp_http": {"dcp_events", "dcp_projections", "dcp_app"},
    "dcp_worker": set(),  # the worker talks to the platform over HTTP only
    "dcp_cli": OURS - {"dcp_cli"},
}
# dcp_projections is pure: no disk, socket, clock or process from these modules.
IMPURE = {"sqlite3", "aiosqlite", "socket", "asyncio", "time", "os", "subprocess", "httpx"}


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_point_one_way(package):
    """A package imports only the packages below it."""
    for path in (ROOT / package).rglob("*.py"):
        bad = (imports_of(path) & OURS) - ALLOWED[package] - {package}
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def test_projections_are_pure():
    """dcp_projections touches no disk, socket or clock."""
    for path in (ROOT / "dcp_projections").rglob("*.py"):
        bad = imports_of(path) & IMPURE
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


# The web plane (dcp_http.web) reaches the ledger only through dcp_http's ServiceAdapter, as the
# JSON endpoints do: from the lower packages it may use only pure rules and error types.
WEB_MAY_IMPORT = {
    "dcp_projections.jobs",
    "dcp_projections.decisions",
    "dcp_projections.errors",
    "dcp_projections.state",
    "dcp_events.errors",
}


def modules_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_web_plane_goes_through_the_service_adapter():
    """dcp_http.web imports no store, no dcp_app, and nothing of the domain but its rules."""
    for path in (ROOT / "dcp_http" / "web").rglob("*.py"):
        for module in modules_of(path):
            if module.split(".")[0] not in OURS or module.startswith("dcp_http"):
                continue
            assert module in WEB_MAY_IMPORT, f"{path.relative_to(ROOT)} imports {module}"


def test_only_the_app_mounts_the_web_plane():
    """The API's own modules never import the web plane; app.py mounts it."""
    for path in (ROOT / "dcp_http").glob("**/*.py"):
        if "web" in path.relative_to(ROOT / "dcp_http").parts or path.name == "app.py":
            continue
        web = [m for m in modules_of(path) if m.startswith("dcp_http.web")]
        assert not web, f"{path.relative_to(ROOT)} imports {web}"
