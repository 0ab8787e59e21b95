"""The pure domain of DCP: state, folds, decisions, settlement and read-model rows.

Imports only the standard library, msgspec and dcp_events; no disk, socket or clock.

Some modules may be compiled by mypyc at install (setup.py). A compiled module shadows its
source, so one built before its source last changed would run old rules silently: `_fresh`
refuses that at import, before any submodule loads.
"""

from pathlib import Path

# The modules setup.py compiles: on the fold's per-event path, defining no msgspec Struct.
COMPILED = ("fold", "money", "ledger")


def _fresh(here: Path = Path(__file__).parent) -> None:
    """Raise ImportError if a compiled module is older than its source."""
    for name in COMPILED:
        source = here / f"{name}.py"
        for built in here.glob(f"{name}.*.so"):
            if source.stat().st_mtime > built.stat().st_mtime:
                raise ImportError(
                    f"{built} was compiled before {source} last changed: rebuild it with"
                    " `pip install -e .`, or delete the .so files for pure Python"
                    " (`DCP_PURE_PYTHON=1 pip install -e .` installs without compiling)"
                )


_fresh()
