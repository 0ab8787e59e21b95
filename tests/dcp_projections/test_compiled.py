"""The guard against a compiled module that is older than its source (setup.py compiles some
of dcp_projections with mypyc; a stale build would fold with old rules and say nothing)."""

import os
from pathlib import Path

import pytest

import dcp_projections
from dcp_projections import COMPILED, _fresh


def _package(tmp_path: Path, source_newer: bool) -> Path:
    source = tmp_path / "fold.py"
    built = tmp_path / "fold.cpython-311-x86_64-linux-gnu.so"
    source.write_text("")
    built.write_bytes(b"")
    older, newer = 1_000_000, 2_000_000
    os.utime(source, (newer, newer) if source_newer else (older, older))
    os.utime(built, (older, older) if source_newer else (newer, newer))
    return tmp_path


def test_a_build_older_than_its_source_refuses_to_import(tmp_path: Path) -> None:
    with pytest.raises(ImportError, match="compiled before"):
        _fresh(_package(tmp_path, source_newer=True))


def test_a_build_newer_than_its_source_imports(tmp_path: Path) -> None:
    _fresh(_package(tmp_path, source_newer=False))


def test_pure_python_has_nothing_to_check(tmp_path: Path) -> None:
    (tmp_path / "fold.py").write_text("")
    _fresh(tmp_path)


def test_the_installed_package_passes_its_own_guard() -> None:
    here = Path(dcp_projections.__file__).parent
    _fresh(here)
    assert all((here / f"{name}.py").exists() for name in COMPILED)
