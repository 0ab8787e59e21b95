"""The web plane as a way in: CSRF, escaping, tenant isolation, cookies, headers, throttling,
and no key in any URL or log line."""

from __future__ import annotations

import re

from playwright.sync_api import expect

from tests.dcp_http._live import ADMIN_TOKEN

from .conftest import Browser, Browserless
from .test_journeys import run_job_as_provider, signup_renter

XSS = '<script>alert("pwned")</script><img src=x onerror=alert(2)>'


def test_post_without_a_valid_csrf_token_changes_nothing(client: Browserless, api):
    """A form POST with no, or another session's, CSRF token is 403 and appends nothing."""
    client.signup_renter()
    other = Browserless(client_server(client))
    before = api.head_seq()
    r = client.post("/renter/topup", {"amount": "10.00"}, csrf=False)
    assert r.status_code == 403
    r = client.post("/renter/topup", {"amount": "10.00", "csrf_token": other.csrf()}, csrf=False)
    assert r.status_code == 403
    assert "Nothing was changed" in r.text
    r = client.post("/signout", {}, csrf=False)
    assert r.status_code == 403
    assert client.get("/renter").status_code == 200  # still signed in
    assert api.head_seq() == before
    other.close()


def client_server(client: Browserless):
    class _S:
        url = str(client.http.base_url).rstrip("/")

    return _S()


def test_stdout_with_script_is_shown_as_text(browser: Browser, api):
    """A job's stdout holding <script> is escaped: no script runs, the text is shown as is."""
    provider = api.provider(gpu_model="T4")  # an "any" job runs on a GPU at the default price
    page = browser.person()
    signup_renter(page)
    page.fill("#f-amount", "10.00")
    page.click("#topup-submit")
    page.goto("/renter/jobs/new")
    page.fill("#f-command", "echo hi")
    page.click("#submit-job")
    run_job_as_provider(api, provider, stdout=XSS)
    page.reload()
    expect(page.locator("#stdout")).to_have_text(XSS)
    assert page.locator("#stdout script").count() == 0
    assert page.locator("#stdout img").count() == 0
    assert "&lt;script&gt;" in page.content()
    page.wait_for_timeout(300)
    assert browser.dialogs == []
    browser.shot(page, "xss_escaped")


def test_another_renters_job_is_404(client: Browserless, server, api):
    """Renter B cannot see, download or cancel renter A's job: 404, and the job stays queued."""
    a = api.renter(credit_halala=10_000)
    job = api.submit(a)["job"]
    client.signup_renter("Bob")
    for path in (
        f"/renter/jobs/{job['job_id']}",
        f"/renter/jobs/{job['job_id']}/stdout.txt",
        f"/renter/jobs/{job['job_id']}/status",
    ):
        assert client.get(path).status_code == 404, path
    assert client.post(f"/renter/jobs/{job['job_id']}/cancel", {}).status_code == 404
    assert api.ok("GET", f"/api/jobs/{job['job_id']}", headers=a["headers"])["job"]["status"] == (
        "queued"
    )
    # The 404 page does not tell a foreign job from an unknown one.
    unknown = client.get("/renter/jobs/job-doesnotexist").text.replace("job-doesnotexist", "ID")
    assert unknown == client.get(f"/renter/jobs/{job['job_id']}").text.replace(job["job_id"], "ID")


def test_session_cookie_flags(browser: Browser, api):
    """The session cookie is HttpOnly, SameSite=Strict, opaque, and no script can read it."""
    page = browser.person()
    key = signup_renter(page)
    cookies = page.context.cookies()
    assert [c["name"] for c in cookies] == ["dcp_session"]
    c = cookies[0]
    assert c["httpOnly"] is True
    assert c["sameSite"] == "Strict"
    assert c["path"] == "/"
    assert key not in c["value"] and "dcp-" not in c["value"]
    assert page.evaluate("document.cookie") == ""


def test_cookie_is_secure_over_tls(client: Browserless):
    """Behind a TLS proxy (uvicorn trusts X-Forwarded-Proto from 127.0.0.1) the session
    cookie also carries Secure; over plain http it cannot."""
    tls = client.get("/signin", headers={"x-forwarded-proto": "https"}).headers["set-cookie"]
    assert {"secure", "httponly", "samesite=strict"} <= {
        part.strip().lower() for part in tls.split(";")
    }
    fresh = Browserless(client_server(client))
    plain = fresh.get("/signin").headers["set-cookie"]
    fresh.close()
    assert "secure" not in plain.lower()


def test_no_key_in_any_url_or_log_line(browser: Browser, server, api):
    """After signing up, in and out as a renter, a provider and the admin, no key or token is
    in any URL the browser asked for, nor in any line the server logged."""
    page = browser.person()
    renter_key = signup_renter(page)
    page.click("#signout")
    page.goto("/signin")
    page.fill("#f-key", renter_key)
    page.click("#signin-submit")
    expect(page).to_have_url(re.compile(r"/renter$"))

    prov = browser.person()
    prov.goto("/signup/provider")
    for field, value in [
        ("name", "P"),
        ("email", "p@example.com"),
        ("gpu_model", "RTX 4090"),
        ("gpu_count", "1"),
        ("vram_gb", "24"),
    ]:
        prov.fill(f"#f-{field}", value)
    prov.click("#signup-submit")
    provider_key = prov.locator("#api-key").inner_text().strip()

    admin = browser.person()
    admin.goto("/signin")
    admin.fill("#f-key", ADMIN_TOKEN)
    admin.click("#signin-submit")
    admin.goto("/admin/events")
    secrets = [renter_key, provider_key, ADMIN_TOKEN]
    assert browser.urls
    for url in browser.urls:
        assert not any(s in url for s in secrets), url
    text = server.log_text()
    assert "http_request" in text
    for s in secrets:
        assert s not in text
    assert "dcp-renter-" not in text and "dcp-provider-" not in text


def test_security_headers_on_pages_and_static(client: Browserless):
    """Every page and static file has a CSP without unsafe-inline and refuses framing."""
    for path in ("/", "/signin", "/static/dcp.css", "/static/dcp.js", "/no-such-page"):
        r = client.get(path)
        csp = r.headers["content-security-policy"]
        assert "unsafe-inline" not in csp and "script-src 'self'" in csp, path
        assert "frame-ancestors 'none'" in csp
        assert r.headers["x-frame-options"] == "DENY"
        assert r.headers["referrer-policy"] == "same-origin"
        assert r.headers["x-content-type-options"] == "nosniff"
    assert client.get("/signin").headers["cache-control"] == "no-store"
    html = client.get("/").text
    assert "<script>" not in html and " style=" not in html  # no inline script or style
    assert "http://" not in html.replace(str(client.http.base_url).rstrip("/"), "").replace(
        "http://www.w3.org/2000/svg", ""
    )


def test_sign_in_is_rate_limited(client: Browserless):
    """Wrong keys are refused with the field's message; after 10 a minute, 429."""
    codes = [client.signin(f"dcp-renter-{i:032x}").status_code for i in range(12)]
    assert codes[:10] == [401] * 10
    assert codes[-1] == 429


def test_sign_out_ends_the_session(client: Browserless):
    """After sign-out the old session id is worth nothing."""
    client.signup_renter()
    old = client.http.cookies.get("dcp_session")
    assert client.post("/signout", {}).status_code == 303
    replay = Browserless(client_server(client))
    replay.http.cookies.set("dcp_session", old)
    r = replay.get("/renter")
    assert r.status_code == 303 and r.headers["location"].startswith("/signin")
    replay.close()


def test_pages_need_their_role(client: Browserless, admin_client: Browserless):
    """A visitor is sent to sign in; a renter cannot open provider or admin pages."""
    for path in ("/renter", "/provider", "/admin", "/admin/events"):
        r = client.get(path)
        assert r.status_code == 303 and r.headers["location"].startswith("/signin"), path
    client.signup_renter()
    for path in ("/provider", "/admin", "/admin/reconciliation"):
        assert client.get(path).status_code == 303, path
    assert admin_client.get("/admin/reconciliation").status_code == 200


def test_no_open_redirect_after_sign_in_or_language(client: Browserless, api):
    """`next` may only name a page of this site (and of the role signed in)."""
    renter = api.renter()
    for target in ("//evil.example/x", "https://evil.example/", "/\\evil.example", "/admin"):
        c = Browserless(client_server(client))
        r = c.post("/signin", {"key": renter["api_key"], "next": target})
        assert r.headers["location"] == "/renter", target
        r = c.post("/language", {"lang": "ar", "next": target})
        assert r.headers["location"] in ("/", "/admin"), target
        c.close()
    c = Browserless(client_server(client))
    r = c.post("/signin", {"key": renter["api_key"], "next": "/renter/statement"})
    assert r.headers["location"] == "/renter/statement"
    c.close()


def test_access_log_names_the_page_and_who(client: Browserless, server, api):
    """Each page request is one access-log line with its route template and the signed-in
    actor, as API requests are; the key is not on it."""
    key = client.signup_renter()
    rid = api.ok("GET", "/api/renters/me", headers={"x-renter-key": key})["renter_id"]
    client.get("/renter/jobs/job-none")
    lines = server.wait_for_log(
        lambda x: x.get("event") == "http_request" and x.get("path") == "/renter/jobs/job-none"
    )
    assert lines and lines[0]["route"] == "/renter/jobs/{job_id}"
    assert lines[0]["actor"] == f"renter:{rid}" and lines[0]["status"] == 404
