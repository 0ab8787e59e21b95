"""Auditor tooling: `dcp audit verify | replay | export` (SPEC section 7, docs/audit.md).

Auditors trust the numbers by checking them themselves: `verify` recomputes the hash chain and
folds the whole log through the domain's invariants, `replay` rebuilds every projection from
the log and compares it with the stored read models, `export` writes the log as JSON lines that
a twenty-line standard-library script (`scripts/reference_verifier.py`) can check alone.
"""
