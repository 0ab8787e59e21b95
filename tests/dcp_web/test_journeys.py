"""The browser journeys of issue 13, in Chromium against a live server.

Each journey ends with a screenshot of its last page under the test's tmp dir
(`screenshots/`), for a person to look at.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.dcp_http._live import ADMIN_TOKEN, IBAN, IMAGE, result_body

from .conftest import Browser

pytestmark = pytest.mark.browser


def sar(halala: int) -> str:
    return f"{halala // 100:,}.{halala % 100:02d}"


def run_job_as_provider(
    api, provider, stdout: str, runtime_s: int = 600, outcome: str = "completed"
) -> dict:
    """The API acting as the provider's worker: claim the next job, start it, report it."""
    job = api.ok("GET", "/api/providers/jobs/next", headers=provider["headers"])["job"]
    assert job is not None
    api.ok(
        "POST",
        f"/api/providers/jobs/{job['job_id']}/started",
        json={"attempt": job["attempt"]},
        headers=provider["headers"],
    )
    body = result_body(
        job["job_id"], job["attempt"], stdout=stdout, runtime_seconds=runtime_s, outcome=outcome
    )
    return api.ok("POST", "/api/providers/job-result", json=body, headers=provider["headers"])


def signup_renter(page, name: str = "Ada Renter") -> str:
    page.goto("/signup")
    page.fill("#f-name", name)
    page.fill("#f-email", "ada@example.com")
    page.click("#signup-submit")
    expect(page.locator(".warning")).to_contain_text("shown only now")
    key = page.locator("#api-key").inner_text().strip()
    assert re.fullmatch(r"dcp-renter-[0-9a-f]{32}", key)
    page.click("#continue")
    return key


def test_renter_journey(browser: Browser, api):
    """Sign up, sandbox top-up, submit with the reserve shown first, a provider runs the job,
    and the job page shows it completed with its output and the money to the halala."""
    provider = api.provider(gpu_model="T4")  # unpriced: the default price, which an "any" job pays
    page = browser.person()
    signup_renter(page)
    expect(page).to_have_url(re.compile(r"/renter$"))
    expect(page.locator("#available")).to_have_text("0.00")

    page.fill("#f-amount", "250.75")
    page.click("#topup-submit")
    expect(page.locator(".flash")).to_be_visible()
    expect(page.locator("#available")).to_have_text("250.75")

    page.click("text=Submit a job >> nth=0")
    expect(page.locator("#f-image")).to_have_value(IMAGE)
    page.fill("#f-command", 'sh -c "echo hello from the web"')
    page.fill("#f-max_duration_seconds", "3600")
    page.click("#estimate-button")
    # RTX 4090's default is 100 halala/h, "any" GPU the default 33: 3600 s reserve = 33 halala.
    expect(page.locator("#estimate")).to_contain_text("0.33 SAR")
    page.click("#submit-job")
    expect(page).to_have_url(re.compile(r"/renter/jobs/job-"))
    job_id = page.url.rsplit("/", 1)[-1]
    expect(page.locator("#job-status")).to_have_text("queued")
    expect(page.locator("#reserve")).to_have_text("0.33")

    run_job_as_provider(api, provider, stdout="hello from the web\n", runtime_s=1800)
    # The page polls the job's status and reloads itself when it changes.
    expect(page.locator("#job-status")).to_have_text("completed", timeout=20_000)
    expect(page.locator("#stdout")).to_have_text("hello from the web\n")
    # The timeline is the job's events, read from the log.
    types = page.locator("#timeline li[data-type]").evaluate_all(
        "els => els.map(e => e.dataset.type)"
    )
    assert types == ["job.submitted", "job.claimed", "job.started", "job.completed"]

    # Billed by the shorter of the reported and the server-measured runtime (seconds here).
    job = _job_as_admin(api, job_id)
    assert 1 <= job["actual_cost_halala"] <= 17
    assert job["actual_cost_halala"] + job["refunded_halala"] == 33
    expect(page.locator("#charged")).to_have_text(sar(job["actual_cost_halala"]))
    expect(page.locator("#refunded")).to_have_text(sar(job["refunded_halala"]))
    expect(page.locator("#provider-share")).to_have_text(sar(job["provider_earned_halala"]))
    expect(page.locator("#platform-fee")).to_have_text(sar(job["platform_fee_halala"]))
    assert job["provider_earned_halala"] + job["platform_fee_halala"] == job["actual_cost_halala"]
    browser.shot(page, "renter_job_completed")

    page.click("header >> text=Dashboard")
    expect(page.locator("#available")).to_have_text(sar(25075 - job["actual_cost_halala"]))
    expect(page.locator("#held")).to_have_text("0.00")
    browser.shot(page, "renter_dashboard")


def _job_as_admin(api, job_id: str) -> dict:
    return api.ok("GET", f"/api/jobs/{job_id}", headers=api.admin)["job"]


def test_provider_journey(browser: Browser, api):
    """A provider signs up, an admin approves it in the admin pages, its machine's heartbeat
    turns it online, it earns from a job, withdraws (a bad IBAN first), the admin completes
    the payout, and reconciliation shows a sum of 0."""
    page = browser.person()
    page.goto("/signup/provider")
    page.fill("#f-name", "Riyadh GPUs")
    page.fill("#f-email", "ops@example.com")
    page.fill("#f-gpu_model", "RTX 4090")
    page.fill("#f-gpu_count", "1")
    page.fill("#f-vram_gb", "24")
    page.click("#signup-submit")
    key = page.locator("#api-key").inner_text().strip()
    assert key.startswith("dcp-provider-")
    expect(page.locator("#worker-command")).to_contain_text("dcp worker --api")
    page.click("#continue")
    expect(page.locator("#waiting")).to_be_visible()
    expect(page.locator("#approval")).to_have_text("waiting for approval")

    admin = browser.person()
    admin.goto("/signin")
    admin.fill("#f-key", ADMIN_TOKEN)
    admin.click("#signin-submit")
    expect(admin).to_have_url(re.compile(r"/admin$"))
    admin.goto("/admin/providers")
    admin.click("tr:has-text('Riyadh GPUs') >> button:has-text('Approve')")
    expect(admin.locator(".flash")).to_have_text("Provider approved.")

    provider = {"headers": {"x-provider-key": key}}
    api.heartbeat(provider)
    # The onboarding page polls for the first heartbeat and reloads itself.
    expect(page.locator("#presence")).to_have_text("online", timeout=20_000)
    expect(page.locator("#approval")).to_have_text("approved")

    # A job is billed by the server-measured runtime (about a second here), so the admin
    # prices RTX 4090 at 100,000 SAR an hour for this provider to earn over the 10 SAR minimum.
    admin.goto("/admin/pricing")
    admin.fill("#f-gpu_model", "RTX 4090")
    admin.fill("#f-price", "100000.00")
    admin.click("form.row button")
    expect(admin.locator(".flash")).to_have_text("Price saved.")
    renter = api.renter(credit_halala=200_000)
    api.submit(renter, max_duration_seconds=60)  # reserve ceil(10,000,000 * 60 / 3600)
    job = run_job_as_provider(api, provider, "done\n", runtime_s=30)["job"]
    assert job["cost_halala"] == 166_667
    earned = job["provider_earned_halala"]
    assert earned >= 2083  # at least one second: floor(ceil(10,000,000 / 3600) * 75 / 100)

    page.click("header >> text=Earnings")
    expect(page.locator("#earnings")).to_have_text(sar(earned))
    page.fill("#f-amount", "12.50")
    page.fill("#f-iban", "SA0380000000608010167518")  # fails mod-97
    page.locator("#f-iban").evaluate("el => el.form.noValidate = true")
    page.click("#withdraw-submit")
    expect(page.locator("#e-iban")).to_contain_text("not a valid Saudi IBAN")
    expect(page.locator("#f-amount")).to_have_value("12.50")
    expect(page.locator("#earnings")).to_have_text(sar(earned))

    page.fill("#f-iban", IBAN)
    page.click("#withdraw-submit")
    expect(page.locator(".flash")).to_contain_text("Withdrawal requested")
    expect(page.locator("#earnings")).to_have_text(sar(earned - 1250))
    expect(page.locator("#pending")).to_have_text("12.50")
    expect(page.locator(".wd-status").first).to_have_text("pending")

    admin.goto("/admin/withdrawals")
    admin.click("tr:has-text('12.50') >> button:has-text('Mark as paid')")
    expect(admin.locator(".flash")).to_have_text("Withdrawal completed.")

    page.reload()
    expect(page.locator(".wd-status").first).to_have_text("paid out")
    expect(page.locator("#pending")).to_have_text("0.00")
    browser.shot(page, "provider_earnings")

    admin.goto("/admin/reconciliation")
    expect(admin.locator("#sum")).to_have_text("0.00")
    expect(admin.locator("#invariants")).to_have_text("yes")
    recon = api.ok("GET", "/api/admin/reconciliation", headers=api.admin)
    expect(admin.locator("#head-seq")).to_have_text(str(recon["head_seq"]))
    expect(admin.locator("#head-hash")).to_have_text(recon["head_hash"])
    browser.shot(admin, "admin_reconciliation")


def test_arabic_is_right_to_left(browser: Browser, api):
    """An Arabic browser gets Arabic pages laid out right to left; the switch goes both ways."""
    page = browser.person(locale="ar-SA")
    page.goto("/")
    assert page.locator("html").get_attribute("dir") == "rtl"
    assert page.locator("html").get_attribute("lang") == "ar"
    assert page.evaluate("getComputedStyle(document.body).direction") == "rtl"
    expect(page.locator("header")).to_contain_text("تسجيل الدخول")
    signup_renter_ar(page)
    expect(page.locator("#available")).to_have_text("0.00")
    expect(page.locator("h1")).to_have_text("لوحة التحكم")
    browser.shot(page, "arabic_dashboard")

    page.click("button:has-text('English')")
    assert page.locator("html").get_attribute("dir") == "ltr"
    expect(page.locator("h1")).to_have_text("Your dashboard")
    page.click("button:has-text('العربية')")
    assert page.locator("html").get_attribute("dir") == "rtl"


def signup_renter_ar(page) -> None:
    page.goto("/signup")
    page.fill("#f-name", "سارة")
    page.fill("#f-email", "sara@example.com")
    page.click("#signup-submit")
    expect(page.locator(".warning")).to_contain_text("يُعرض الآن فقط")
    page.click("#continue")
