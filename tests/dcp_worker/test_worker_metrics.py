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


def test_metrics_port_out_of_range_is_a_config_error():
    """A port outside 1..65535 is refused before anything starts."""
    from dcp_worker.errors import ConfigError
    from dcp_worker.settings import parse_settings

    with pytest.raises(ConfigError, match="metrics port"):
        parse_settings(["--api", "http://x", "--key", "k", "--metrics-port", "70000"], env={})


async def test_a_taken_metrics_port_stops_the_worker_with_exit_2(make_settings, kit):
    """The worker does not run unobserved when its metrics port is taken: it exits 2."""
    import asyncio
    import socket

    from dcp_worker.worker import Worker

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        rc = await Worker(make_settings(metrics_port=port)).run(asyncio.Event())
    assert rc == 2
