"""Hypothesis budgets of the projection tests.

The suite-wide profiles live in tests/conftest.py (`ci`: 200 examples, `dev`: 50); the
settlement properties run the active profile's count. The state machine has its own profile:
in CI 300 programs of up to 60 steps each, derandomized (about 15 s on two cores); for
developers 25 programs of up to 40 steps, fresh each run.
"""

import os

from hypothesis import HealthCheck, settings

CI = os.environ.get("HYPOTHESIS_PROFILE") == "ci"

# Registered by name, so test modules fetch it with settings.get_profile().
settings.register_profile(
    "dcp-state-machine",
    max_examples=300 if CI else 25,
    # CI explores the same programs every run, so its verdict (and the coverage check in
    # test_state_machine) does not depend on luck; developers get fresh programs each run.
    derandomize=CI,
    stateful_step_count=60 if CI else 40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
