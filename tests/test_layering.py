"""The packages depend on each other in one direction only (docs/design.md)."""

import ast
import sys
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
# dcp_projections is pure: no disk, socket, clock, randomness or process. An allowlist, so a
# module nobody thought of (datetime, random, os, pathlib, ...) fails until it is judged here:
# these standard-library modules compute and do no I/O, read no clock and draw no randomness.
PURE_STDLIB = {
    "__future__",
    "abc",
    "bisect",
    "collections",
    "collections.abc",
    "dataclasses",
    "decimal",
    "enum",
    "functools",
    "hashlib",
    "heapq",
    "itertools",
    "math",
    "operator",
    "re",
    "string",
    "types",
    "typing",
}
# Builtins that read or write outside the process (or run code from a string).
IMPURE_BUILTINS = {"open", "print", "input", "breakpoint", "exec", "eval", "compile", "__import__"}

# The third-party packages each layer may import (docs/design.md, "Packages and the direction
# of imports"). A new dependency of a layer is one edit here, made on purpose.
THIRD_PARTY = {
    "dcp_events": {"msgspec", "aiosqlite", "psycopg", "psycopg_pool"},
    "dcp_projections": {"msgspec", "sortedcontainers"},
    "dcp_app": {"msgspec", "sortedcontainers", "structlog", "aiosqlite", "psycopg", "psycopg_pool"},
    "dcp_audit": {"msgspec", "psycopg"},  # psycopg: `dcp audit` on a PostgreSQL log
    "dcp_replicator": {
        "msgspec",
        "httpx",
        "psycopg",
        "psycopg_pool",
        "supabase",
        "postgrest",
        "structlog",
        "prometheus_client",
    },
    "dcp_http": {
        "starlette",
        "uvicorn",
        "msgspec",
        "structlog",
        "httpx",
        "prometheus_client",
        "jinja2",
        "markupsafe",
        "babel",
    },
    "dcp_worker": {"httpx", "msgspec", "aiodocker", "pynvml", "structlog", "prometheus_client"},
    "dcp_cli": {"psycopg"},  # dcp migrate (SQLite -> PostgreSQL)
}


def imports_of(path: Path) -> set[str]:
    """The top-level names of every module `path` imports (absolute imports)."""
    return {m.split(".")[0] for m in module_names(path)}


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_point_one_way(package):
    """A package imports only the packages below it."""
    for path in (ROOT / package).rglob("*.py"):
        bad = (imports_of(path) & OURS) - ALLOWED[package] - {package}
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def module_names(path: Path) -> set[str]:
    """Every module `path` imports (absolute imports, full dotted names)."""
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_projections_import_only_pure_stdlib():
    """dcp_projections imports, from the standard library, only modules that do no I/O and
    read no clock (PURE_STDLIB), and from outside it only THIRD_PARTY["dcp_projections"]."""
    for path in (ROOT / "dcp_projections").rglob("*.py"):
        for module in module_names(path):
            top = module.split(".")[0]
            if top in OURS or top in THIRD_PARTY["dcp_projections"]:
                continue
            assert module in PURE_STDLIB, f"{path.relative_to(ROOT)} imports {module}"


def test_projections_call_no_io_builtins():
    """dcp_projections calls no builtin that reads or writes outside the process."""
    for path in (ROOT / "dcp_projections").rglob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                name = node.func.id
                assert name not in IMPURE_BUILTINS, (
                    f"{path.relative_to(ROOT)}:{node.lineno} calls {name}()"
                )


@pytest.mark.parametrize("package", sorted(THIRD_PARTY))
def test_third_party_imports_are_allowed(package):
    """A layer imports only the third-party packages THIRD_PARTY allows it."""
    for path in (ROOT / package).rglob("*.py"):
        for top in imports_of(path) - OURS:
            if top in sys.stdlib_module_names:
                continue
            assert top in THIRD_PARTY[package], f"{path.relative_to(ROOT)} imports {top}"


def test_allowlists_name_real_modules():
    """The allowlists above cannot drift into names that import nothing (a typo would allow
    nothing and check nothing)."""
    for module in PURE_STDLIB:
        assert module.split(".")[0] in sys.stdlib_module_names, module
    for package, allowed in THIRD_PARTY.items():
        assert not allowed & set(sys.stdlib_module_names), package


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph() -> dict[str, set[str]]:
    """Our module -> our modules it imports anywhere in its file (function-level and
    TYPE_CHECKING imports too: a cycle of types is still two rooms that need each other).
    `from package import name` counts as importing `package.name` when that is a module."""
    paths = {_module_name(p): p for pkg in OURS for p in (ROOT / pkg).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        edges: set[str] = set()
        here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                edges.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here[: len(here) - (node.level - 1)]
                    module = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    module = node.module or ""
                edges.add(module)
                edges.update(f"{module}.{a.name}" for a in node.names)
        graph[name] = {m for m in edges if m in paths and m != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(component)
    return found


def test_no_import_cycles():
    """No two of our modules import each other, directly or round a longer loop (imports under
    TYPE_CHECKING count: they are a cycle of the design all the same)."""
    cycles = [sorted(c) for c in _cycles(_import_graph())]
    assert cycles == [], f"import cycles: {cycles}"


def test_the_cycle_check_finds_a_cycle():
    """The check itself: a two-module loop and a three-module loop are found, a chain is not."""
    graph = {"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"e"}, "e": {"c"}, "f": {"a"}}
    assert sorted(map(sorted, _cycles(graph))) == [["a", "b"], ["c", "d", "e"]]


# The web plane (dcp_http.web) reaches the ledger only through dcp_http's ServiceAdapter, as the
# JSON endpoints do: from the lower packages it may use only pure rules and error types.
WEB_MAY_IMPORT = {
    "dcp_projections.jobs",
    "dcp_projections.decisions",
    "dcp_projections.errors",
    "dcp_projections.state",
    "dcp_events.errors",
}


def test_web_plane_goes_through_the_service_adapter():
    """dcp_http.web imports no store, no dcp_app, and nothing of the domain but its rules."""
    for path in (ROOT / "dcp_http" / "web").rglob("*.py"):
        for module in module_names(path):
            if module.split(".")[0] not in OURS or module.startswith("dcp_http"):
                continue
            assert module in WEB_MAY_IMPORT, f"{path.relative_to(ROOT)} imports {module}"


def test_only_the_app_mounts_the_web_plane():
    """The API's own modules never import the web plane; app.py mounts it."""
    for path in (ROOT / "dcp_http").glob("**/*.py"):
        if "web" in path.relative_to(ROOT / "dcp_http").parts or path.name == "app.py":
            continue
        web = [m for m in module_names(path) if m.startswith("dcp_http.web")]
        assert not web, f"{path.relative_to(ROOT)} imports {web}"


def test_a_sqlite_server_does_not_load_the_postgresql_driver(tmp_path):
    """`dcp serve` on a SQLite file opens its service without importing psycopg (10 MB of
    resident memory): the PostgreSQL store and read side are imported when a URL names them."""
    import subprocess

    code = (
        "import asyncio, sys\n"
        "from dcp_http.config import ServerConfig\n"
        "from dcp_http.server import uvicorn_config\n"
        "from dcp_http.service import open_service\n"
        "async def main():\n"
        f"    config = ServerConfig(db={str(tmp_path / 'dcp.db')!r})\n"
        "    uvicorn_config(config)\n"
        "    svc = await open_service(config)\n"
        "    await svc.close()\n"
        "asyncio.run(main())\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('psycopg', 'psycopg_pool')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout
