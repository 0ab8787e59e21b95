"""The build: the domain fold's hottest modules compiled with mypyc, the rest pure Python.

The Python source stays the one definition; mypyc compiles the same files (dcp_projections is
mypy --strict clean), which folds about 1.5-1.7x faster (docs/ledger.md, "Compiled fold").
`DCP_PURE_PYTHON=1 pip install -e .` installs without compiling (no C compiler needed).
A compiled module older than its source refuses to import (dcp_projections/__init__.py).
"""

import ast
import os
from pathlib import Path

from setuptools import setup


def compiled() -> list[str]:
    """dcp_projections.COMPILED, the one list (beside its import guard), read without
    importing the package: its guard would refuse a stale build before this rebuilds it."""
    init = Path(__file__).parent / "dcp_projections" / "__init__.py"
    for node in ast.parse(init.read_text()).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "COMPILED":
            return list(ast.literal_eval(node.value))
    raise RuntimeError("dcp_projections.COMPILED not found")


def ext_modules() -> list[object]:
    if os.environ.get("DCP_PURE_PYTHON"):
        return []
    from mypyc.build import mypycify

    return mypycify([f"dcp_projections/{name}.py" for name in compiled()], opt_level="3")


setup(ext_modules=ext_modules())
