"""A job for "any" GPU never runs on a GPU dearer than its price, over HTTP."""

import pytest

from ._live import Api


@pytest.mark.parametrize("gpu_type", ["any", "ANY", "*"])
def test_an_any_gpu_job_is_not_leased_to_an_h200(api: Api, gpu_type):
    """Priced at the default 33/h, the job is passed over by an H200 (919/h) and leased to a
    GPU the default price covers; the H200 provider earns nothing from it."""
    renter = api.renter(credit_halala=100_000)
    h200 = api.provider(gpu_model="H200")
    t4 = api.provider(gpu_model="T4")
    job = api.submit(renter, gpu_requirements={"gpu_type": gpu_type})["job"]
    assert job["rate_halala_per_hour"] == 33
    assert api.ok("GET", "/api/providers/jobs/next", headers=h200["headers"]) == {"job": None}
    leased = api.ok("GET", "/api/providers/jobs/next", headers=t4["headers"])["job"]
    assert leased["job_id"] == job["job_id"]
    view = api.ok("GET", f"/api/jobs/{job['job_id']}", headers=renter["headers"])["job"]
    assert view["provider_id"] == t4["provider_id"] and view["status"] == "assigned"
    assert api.ok("GET", "/api/admin/reconciliation", headers=api.admin)["invariants_ok"]


def test_any_gpu_on_a_named_provider_pays_that_providers_price(api: Api):
    """Naming an H200 provider prices an "any" job at 919/h, and the H200 takes it."""
    renter = api.renter(credit_halala=100_000)
    h200 = api.provider(gpu_model="H200")
    any_gpu = {"gpu_type": "any"}
    job = api.submit(renter, gpu_requirements=any_gpu, provider_id=h200["provider_id"])["job"]
    assert job["rate_halala_per_hour"] == 919
    assert job["cost_halala"] == 919  # max_duration 3600 s: one hour, reserved up front
    leased = api.ok("GET", "/api/providers/jobs/next", headers=h200["headers"])["job"]
    assert leased["job_id"] == job["job_id"]
