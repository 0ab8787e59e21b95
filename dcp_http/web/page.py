"""What every page handler shares: its session, language, CSRF check, and rendering.

`@page(role)` wraps a handler `async (Ctx) -> Response`: it finds or starts the browser's
session, picks the language, sends a visitor who is not signed in as `role` to the sign-in
page, refuses a POST whose CSRF token is not the session's (403, nothing changes), and turns
the errors the service raises on purpose into pages with their status. The handler calls the
same ServiceAdapter as the API.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import structlog
from markupsafe import escape
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from dcp_events.errors import StoreError
from dcp_http.auth import Identity
from dcp_http.errors import error_body, on_purpose
from dcp_http.middleware import request_info
from dcp_http.web import i18n
from dcp_http.web.sessions import COOKIE, Session

if TYPE_CHECKING:
    from dcp_http.service import ServiceAdapter
    from dcp_http.web.shared import Site

log = structlog.get_logger("dcp_http.web")

MAX_FORM_FIELDS = 300


class Ctx:
    """One request to one page."""

    def __init__(self, request: Request, site: Site, session: Session, fresh: bool) -> None:
        self.request = request
        self.site = site
        self.session = session
        self.fresh = fresh  # the session began with this request: its cookie must be set
        self.lang = session.lang or i18n.pick(request.headers.get("accept-language"))
        self.t = i18n.use(self.lang)
        self.form: FormData = FormData()

    @property
    def service(self) -> ServiceAdapter:
        service: ServiceAdapter = self.request.app.state.service
        return service

    @property
    def identity(self) -> Identity:
        """The signed-in caller, as the API's handlers see theirs."""
        return Identity(self.session.role, self.session.subject_id)

    def _(self, message: str, **values: Any) -> str:
        text = self.t.gettext(message)
        return text % values if values else text

    def field(self, name: str, default: str = "") -> str:
        """A form field as typed (stripped), or `default`."""
        value = self.form.get(name)
        return value.strip() if isinstance(value, str) else default

    def switch(self, session: Session) -> None:
        """Use `session` from here on (sign-in and sign-out replace the session)."""
        self.session, self.fresh = session, True

    def render(self, name: str, status: int = 200, /, **context: Any) -> Response:
        flash, self.session.flash = self.session.flash, ""
        base = {
            "c": self,
            "lang": self.lang,
            "dir": "rtl" if self.lang in i18n.RTL else "ltr",
            "arrow_next": "←" if self.lang in i18n.RTL else "→",
            "arrow_prev": "→" if self.lang in i18n.RTL else "←",
            "csrf": self.session.csrf,
            "role": self.session.role,
            "flash": flash,
            "path": self.request.url.path,
            "errors": {},
            "values": {},
        }
        response = self.site.templates.TemplateResponse(
            self.request, name, {**base, **context}, status_code=status
        )
        return self._cookie(response)

    def redirect(self, url: str, flash: str = "") -> Response:
        """303 to `url` (a GET), with a one-time message for the page there."""
        if flash:
            self.session.flash = flash
        return self._cookie(RedirectResponse(url, 303))

    def _cookie(self, response: Response) -> Response:
        if self.fresh:
            response.set_cookie(
                COOKIE,
                self.session.sid,
                httponly=True,
                samesite="strict",
                secure=self.request.url.scheme == "https",
                path="/",
            )
        return response


Handler = Callable[[Ctx], Awaitable[Response]]


def page(role: str | None = None) -> Callable[[Handler], Callable[[Request], Awaitable[Response]]]:
    """Wrap a page handler (see the module docstring); `role` None: anyone may see it."""

    def wrap(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        @functools.wraps(handler)
        async def endpoint(request: Request) -> Response:
            site: Site = request.app.state.web
            session = site.sessions.get(request.cookies.get(COOKIE))
            fresh = session is None
            if session is None:
                session = site.sessions.new()
            c = Ctx(request, site, session, fresh)
            info = request_info(request.scope)
            if info is not None:
                info.route = request.scope["route"].path if "route" in request.scope else None
                if session.role:
                    info.actor = c.identity.actor  # the access log names who, as for the API
            if role is not None and session.role != role:
                if fresh and request.method == "GET" and _cross_site(request):
                    return _bounce(request, c.lang)
                target = "/signin?next=" + quote(request.url.path, safe="/")
                return c.redirect(target)
            try:
                if request.method == "POST":
                    c.form = await request.form(max_files=0, max_fields=MAX_FORM_FIELDS)
                    if not session.csrf_ok(c.field("csrf_token") or None):
                        log.warning("csrf_refused", path=request.url.path)
                        return c.render(
                            "error.html",
                            403,
                            message=c._(
                                "This form has expired or did not come from DCP."
                                " Nothing was changed; please try again."
                            ),
                        )
                return await handler(c)
            except StoreError:
                return c.render(
                    "error.html",
                    503,
                    message=c._(
                        "The ledger is not available right now. Please try again in a moment."
                    ),
                )
            except Exception as exc:
                if not on_purpose(exc):
                    raise
                status, body, _ = error_body(exc)
                return c.render("error.html", status, message=message_of(c, exc, body.error))

        return endpoint

    return wrap


def _cross_site(request: Request) -> bool:
    return request.headers.get("sec-fetch-site") == "cross-site"


def _bounce(request: Request, lang: str) -> Response:
    """The same GET again, but asked by our own page: a navigation from another site (the
    payment gateway sending the renter back) carries no SameSite=Strict session cookie, and a
    navigation this page starts does. It sets no cookie, so the browser's session is kept;
    asked from here, a visitor with no session goes on to the sign-in page as usual."""
    url = escape(request.url.path + (f"?{request.url.query}" if request.url.query else ""))
    label = escape(i18n.translations(lang).gettext("Continue"))
    html = (
        f'<!doctype html><html lang="{lang}"><head><meta charset="utf-8">'
        f'<meta http-equiv="refresh" content="0;url={url}"></head>'
        f'<body><p><a href="{url}">{label}</a></p></body></html>'
    )
    return HTMLResponse(html)


def message_of(c: Ctx, exc: BaseException, fallback: str) -> str:
    """The user's-language message for an error the service raised on purpose."""
    code = getattr(exc, "code", "")
    known = {
        "not_found": c._("Not found."),
        "forbidden": c._("You are not allowed to do this."),
        "invalid_transition": c._("This cannot be done in the current state."),
        "conflict": c._("This cannot be done in the current state."),
        "insufficient_funds": c._("Not enough funds."),
        "rate_limited": c._("Too many attempts. Please wait a minute and try again."),
        "admin_disabled": c._("The admin console is disabled: no admin token is configured."),
        "payments_disabled": c._("Top-ups by card are not enabled on this server."),
    }
    return known.get(code, fallback)
