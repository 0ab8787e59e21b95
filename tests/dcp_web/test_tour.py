"""Every page in Chromium, in English and Arabic: it renders, its direction is right, and the
browser reports no error (a Content-Security-Policy violation, a failed asset, a script
error). Each page's screenshot lands under the test's tmp dir."""

from __future__ import annotations

import pytest

from tests.dcp_http._live import ADMIN_TOKEN, result_body

from .conftest import Browser

pytestmark = pytest.mark.browser

PUBLIC = [
    "/",
    "/marketplace",
    "/pricing",
    "/docs/renters",
    "/docs/providers",
    "/docs/api",
    "/signup",
    "/signup/provider",
    "/signin",
]
RENTER = ["/renter", "/renter/jobs", "/renter/jobs/new", "/renter/statement", "/wallet"]
PROVIDER = ["/provider", "/provider/earnings"]
ADMIN = [
    "/admin",
    "/admin/providers",
    "/admin/renters",
    "/admin/jobs",
    "/admin/withdrawals",
    "/admin/topups",
    "/admin/pricing",
    "/admin/images",
    "/admin/reconciliation",
    "/admin/events",
]


def _watch(page, problems: list[str]) -> None:
    page.on(
        "console",
        lambda m: (
            problems.append(f"{page.url} {m.location}: {m.text}") if m.type == "error" else None
        ),
    )
    page.on("pageerror", lambda e: problems.append(str(e)))
    # A request cut short by the next navigation (net::ERR_ABORTED) is no fault of the page.
    page.on(
        "requestfailed",
        lambda r: None if "ABORTED" in (r.failure or "") else problems.append(f"failed: {r.url}"),
    )


@pytest.mark.parametrize("locale", ["en-US", "ar-SA"])
def test_every_page_renders_without_browser_errors(browser: Browser, api, locale):
    rtl = locale.startswith("ar")
    provider = api.provider(gpu_model="T4")  # an "any" job runs on a GPU at the default price
    renter = browser.person(locale)
    admin = browser.person(locale)
    prov = browser.person(locale)
    problems: list[str] = []
    for page in (renter, admin, prov):
        _watch(page, problems)

    renter.goto("/signup")
    renter.fill("#f-name", "Tour")
    renter.fill("#f-email", "tour@example.com")
    renter.click("#signup-submit")
    renter.click("#continue")
    renter.fill("#f-amount", "5.00")
    renter.click("#topup-submit")
    renter.goto("/renter/jobs/new")
    renter.fill("#f-command", "echo tour")
    renter.click("#submit-job")
    job_path = renter.url.removeprefix(browser.server.url)
    lease = api.ok("GET", "/api/providers/jobs/next", headers=provider["headers"])["job"]
    api.ok(
        "POST",
        "/api/providers/job-result",
        json=result_body(lease["job_id"], lease["attempt"]),
        headers=provider["headers"],
    )

    prov.goto("/signin")
    prov.fill("#f-key", provider["api_key"])
    prov.click("#signin-submit")
    admin.goto("/signin")
    admin.fill("#f-key", ADMIN_TOKEN)
    admin.click("#signin-submit")

    visits = [(renter, p) for p in [*PUBLIC, *RENTER, job_path]]
    visits += [(prov, p) for p in PROVIDER] + [(admin, p) for p in ADMIN]
    for page, path in visits:
        response = page.goto(path)
        assert response is not None and response.status < 500, path
        assert page.locator("html").get_attribute("dir") == ("rtl" if rtl else "ltr"), path
        assert page.evaluate("getComputedStyle(document.body).direction") == (
            "rtl" if rtl else "ltr"
        )
        assert page.locator("h1").count() >= 1, path
        name = path.strip("/").replace("/", "_") or "home"
        browser.shot(page, f"{locale}_{name[:60]}")
    assert problems == []
    # The 404 page itself is the one error the browser should see.
    assert renter.goto("/no-such-page").status == 404
    browser.shot(renter, f"{locale}_not_found")
    assert [p for p in problems if not p.startswith(f"{browser.server.url}/no-such-page ")] == []
    assert any("404" in p for p in problems)
