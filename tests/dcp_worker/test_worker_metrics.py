"""The worker's /metrics on its local port: real Docker, the stub API, prometheus_client's
own parser."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("docker_engine")]


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    r = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
    assert r.status_code == 200
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }


async def test_worker_metrics_move_with_jobs_and_heartbeats(stub, make_settings, kit):
    """Two jobs end completed, heartbeats are spaced, container starts timed, spool empty."""
    api, server = stub
    port = kit.free_port()
    jobs = [api.submit(["true"]), api.submit(["sh", "-c", "exit 3"])]
    async with kit.running(make_settings(metrics_port=port)):
        await kit.until(lambda: all(api.accepted(j) for j in jobs))
        await kit.until(lambda: scrape(port)[("dcp_worker_heartbeats_total", ())] >= 3)
        samples = scrape(port)
        server.stop()  # the API goes away: heartbeats fail and are counted
        await kit.until(
            lambda: scrape(port).get(
                ("dcp_worker_api_errors_total", (("call", "heartbeat"), ("kind", "unavailable")))
            ),
            10,
        )
    assert samples[("dcp_worker_jobs_total", (("outcome", "completed"),))] == 2
    assert samples[("dcp_worker_container_start_seconds_count", ())] == 2
    assert samples[("dcp_worker_container_start_seconds_sum", ())] > 0
    spacing = samples[("dcp_worker_heartbeat_interval_seconds_count", ())]
    assert spacing >= 2
    mean = samples[("dcp_worker_heartbeat_interval_seconds_sum", ())] / spacing
    assert 0.3 < mean < 2.0  # heartbeat_s=0.5 with 10% jitter, on a busy machine
    assert samples[("dcp_worker_spool_depth", ())] == 0
    assert samples[("dcp_worker_ready", ())] == 1
    with pytest.raises(httpx.HTTPError):  # the port is closed once the worker stops
        httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2)
