"""The whole loop with a real `dcp worker`: a provider signs up in the browser and starts the
worker with the command the page shows, an admin approves it, a renter submits in the browser,
Docker runs the job, and the renter reads its output on the job page."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.dcp_http._live import ADMIN_TOKEN, IMAGE

from .conftest import Browser
from .test_journeys import signup_renter

pytestmark = [
    pytest.mark.browser,
    pytest.mark.docker,
    pytest.mark.slow,
    pytest.mark.usefixtures("docker_engine"),
]
ROOT = Path(__file__).resolve().parents[2]


def test_a_real_worker_runs_the_renters_job(browser: Browser, api, tmp_path):
    prov = browser.person()
    prov.goto("/signup/provider")
    for field, value in [
        ("name", "Jeddah Rig"),
        ("email", "rig@example.com"),
        ("gpu_model", "RTX 4090"),
        ("gpu_count", "1"),
        ("vram_gb", "24"),
    ]:
        prov.fill(f"#f-{field}", value)
    prov.click("#signup-submit")
    command = prov.locator("#worker-command").inner_text()
    m = re.fullmatch(
        r"DCP_PROVIDER_KEY=(dcp-provider-[0-9a-f]{32}) dcp worker --api (\S+)", command
    )
    assert m and m.group(2) == browser.server.url
    key = m.group(1)
    prov.click("#continue")

    admin = browser.person()
    admin.goto("/signin")
    admin.fill("#f-key", ADMIN_TOKEN)
    admin.click("#signin-submit")
    admin.goto("/admin/providers")
    admin.click("tr:has-text('Jeddah Rig') >> button:has-text('Approve')")

    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "dcp_cli", "worker", "--api", m.group(2), "--gpus", "none",
             "--allow-image", IMAGE, "--state-dir", str(tmp_path / "worker-state"),
             "--heartbeat-s", "1", "--poll-s", "0.5", "--min-free-disk-gb", "0.1",
             "--job-memory-mb", "64", "--drain-s", "5"],
            cwd=ROOT, env={**os.environ, "DCP_PROVIDER_KEY": key}, stdout=out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        expect(prov.locator("#presence")).to_have_text("online", timeout=30_000)

        page = browser.person()
        signup_renter(page, "Docker Renter")
        page.fill("#f-amount", "5.00")
        page.click("#topup-submit")
        page.goto("/renter/jobs/new")
        page.select_option("#f-gpu_type", "RTX 4090")
        page.fill("#f-command", 'sh -c "echo hello from docker; echo oops >&2"')
        page.fill("#f-max_duration_seconds", "120")
        page.click("#submit-job")
        expect(page.locator("#job-status")).to_have_text("completed", timeout=60_000)
        expect(page.locator("#stdout")).to_have_text("hello from docker\n")
        expect(page.locator("#stderr")).to_have_text("oops\n")
        expect(page.locator("#exit-code")).to_have_text("0")
        job_id = page.url.rsplit("/", 1)[-1]
        job = api.ok("GET", f"/api/jobs/{job_id}", headers=api.admin)["job"]
        assert (
            job["provider_earned_halala"] + job["platform_fee_halala"] == job["actual_cost_halala"]
        )
        assert job["actual_cost_halala"] + job["refunded_halala"] == job["cost_halala"]
        browser.shot(page, "real_worker_job")
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(10)
    assert key not in log.read_text()  # the worker never logs its own key
