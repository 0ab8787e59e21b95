"""Suite-wide settings: hypothesis profiles (CI runs `ci`, bounded so the suite fits its time)."""

import os

import pytest
from hypothesis import HealthCheck, settings

from tests.pg import server_dsn

settings.register_profile(
    "ci",
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.register_profile("dev", max_examples=50, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


@pytest.fixture(scope="session")
def pg_server_dsn() -> str:
    """The DSN of the test PostgreSQL server (a database the test role owns; it may create
    others): tests/pg.py."""
    return server_dsn()
