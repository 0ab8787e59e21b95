"""Fixtures for the web plane: a live `dcp serve` app (real uvicorn, real SQLite file), httpx
clients that keep a session cookie, and a real Chromium driven by Playwright.

The browser is Debian's Chromium (scripts/ci/chromium.sh); nothing is downloaded at test time.
Without it the browser tests skip, or fail where DCP_REQUIRE_BROWSER is set (CI).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from dcp_http.config import DEFAULT_RATE_LIMITS, RateLimit
from tests.dcp_http._live import ADMIN_TOKEN, Api, Server, serve

CHROMIUM = os.environ.get("DCP_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    """The API and web plane in sandbox mode, with an admin token and fast sweeps."""
    # The form-fuzzing test sends well over the default 1,000 page requests a minute from one
    # address; on a fast machine that is under a minute, and it met 429 instead of the page.
    # The limits have their own tests (tests/dcp_http).
    limits = dict(DEFAULT_RATE_LIMITS)
    limits["register"] = RateLimit(10_000, 3600.0)
    limits["auth_failure"] = RateLimit(10_000, 60.0)
    limits["default"] = RateLimit(100_000, 60.0)
    with serve(tmp_path / "dcp.db", sandbox=True, rate_limit_table=limits) as s:
        yield s


@pytest.fixture
def api(server: Server) -> Iterator[Api]:
    """A JSON API client for set-up steps and for acting as a provider; allows the test image."""
    client = Api(server)
    client.allow_image()
    yield client
    client.close()


class Browserless:
    """An httpx client with a session cookie, for the tests that need no rendering."""

    def __init__(self, server: Server) -> None:
        self.http = httpx.Client(base_url=server.url, timeout=30)

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return self.http.get(path, **kw)

    def csrf(self, path: str = "/") -> str:
        m = _CSRF.search(self.http.get(path).text)
        assert m, f"no CSRF token on {path}"
        return m.group(1)

    def post(self, path: str, data: dict[str, str], csrf: bool = True, **kw: Any) -> httpx.Response:
        if csrf:
            data = {"csrf_token": self.csrf(), **data}
        return self.http.post(path, data=data, **kw)

    def signup_renter(self, name: str = "Ada") -> str:
        r = self.post("/signup", {"name": name, "email": f"{name.lower()}@example.com"})
        assert r.status_code == 201, r.text
        key = re.search(r'id="api-key">([^<]+)<', r.text)
        assert key
        return key.group(1)

    def signin(self, secret: str) -> httpx.Response:
        return self.post("/signin", {"key": secret})

    def close(self) -> None:
        self.http.close()


@pytest.fixture
def client(server: Server) -> Iterator[Browserless]:
    c = Browserless(server)
    yield c
    c.close()


@pytest.fixture
def admin_client(server: Server) -> Iterator[Browserless]:
    c = Browserless(server)
    assert c.signin(ADMIN_TOKEN).status_code == 303
    yield c
    c.close()


def _launch(playwright: Any) -> Any:
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """One Chromium per test module (skip, or fail under DCP_REQUIRE_BROWSER, without one).

    Per module, not per session: Playwright's sync API keeps an asyncio loop running in this
    thread while it is open, and the async tests of the other packages need the thread free.
    """
    problem = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        problem = "playwright is not installed (pip install -e '.[test]')"
    if problem is None and not os.access(CHROMIUM, os.X_OK):
        problem = f"no Chromium at {CHROMIUM}; run `bash scripts/ci/chromium.sh` (as root)"
    if problem is not None:
        if os.environ.get("DCP_REQUIRE_BROWSER"):
            pytest.fail(problem + " (DCP_REQUIRE_BROWSER is set)")
        pytest.skip(problem)
    with sync_playwright() as p:
        browser = _launch(p)
        try:
            yield browser
        finally:
            browser.close()


class Browser:
    """Opens pages (one browser context, so one session, per person) and keeps screenshots."""

    def __init__(self, chromium: Any, server: Server, shots: Path) -> None:
        self.chromium = chromium
        self.server = server
        self.shots = shots
        self.contexts: list[Any] = []
        self.urls: list[str] = []  # every URL any page requested, for the no-key-in-URL check
        self.dialogs: list[str] = []  # alert()s a page opened: an injected script would

    def person(self, locale: str = "en-US") -> Any:
        ctx = self.chromium.new_context(
            base_url=self.server.url, locale=locale, viewport={"width": 1280, "height": 900}
        )
        ctx.set_default_timeout(15_000)
        ctx.on("request", lambda req: self.urls.append(req.url))
        self.contexts.append(ctx)
        page = ctx.new_page()
        page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        return page

    def shot(self, page: Any, name: str) -> Path:
        path = self.shots / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    def close(self) -> None:
        for ctx in self.contexts:
            ctx.close()


@pytest.fixture
def browser(chromium: Any, server: Server, tmp_path: Path) -> Iterator[Browser]:
    """People in Chromium against the live server; screenshots under tmp_path/screenshots."""
    shots = tmp_path / "screenshots"
    shots.mkdir()
    b = Browser(chromium, server, shots)
    yield b
    b.close()


@pytest.fixture(scope="session")
def docker_engine() -> None:
    """Skip (or fail, when DCP_REQUIRE_DOCKER is set) without Docker and the test image."""
    import subprocess

    from tests.dcp_http._live import IMAGE

    try:
        ok = (
            subprocess.run(
                ["docker", "image", "inspect", IMAGE], capture_output=True, timeout=20
            ).returncode
            == 0
        )
    except (OSError, subprocess.TimeoutExpired):
        ok = False
    if not ok:
        message = f"no Docker engine with {IMAGE}; run `bash scripts/ci/docker.sh` (as root)"
        if os.environ.get("DCP_REQUIRE_DOCKER"):
            pytest.fail(message)
        pytest.skip(message)
