"""Sign-up, sign-in, sign-out and the language switch."""

from __future__ import annotations

from starlette.responses import Response

from dcp_http import requests as inp
from dcp_http.auth import ADMIN, PROVIDER, RENTER, Authenticator, role_of_key
from dcp_http.errors import ApiError
from dcp_http.ratelimit import TokenBuckets
from dcp_http.web import i18n
from dcp_http.web.forms import Invalid, convert, whole
from dcp_http.web.page import Ctx, page

HOME = {RENTER: "/renter", PROVIDER: "/provider", ADMIN: "/admin"}


def _client(c: Ctx) -> str:
    client = c.request.client
    return client.host if client else "unknown"


def _throttled(c: Ctx, buckets: str) -> bool:
    if not c.site.config.rate_limits:
        return False
    bucket: TokenBuckets = getattr(c.site, buckets)
    return bucket.take("web", _client(c)) > 0


def safe_next(target: str, default: str) -> str:
    """`target` if it is a path on this site (never `//host` or a scheme), else `default`."""
    if target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return default


@page()
async def signup_renter(c: Ctx) -> Response:
    values = {"name": c.field("name"), "email": c.field("email")}
    if c.request.method == "GET":
        return c.render("signup_renter.html", values=values)
    if _throttled(c, "signup_buckets"):
        return c.render(
            "signup_renter.html",
            429,
            values=values,
            errors={"name": c._("Too many attempts. Please wait a minute and try again.")},
        )
    try:
        body = convert(c, values, inp.RegisterRenter, {"name": "name", "email": "email"})
    except Invalid as bad:
        return c.render("signup_renter.html", 400, values=values, errors=bad.errors)
    created = await c.service.register_renter(body)
    c.switch(c.site.sessions.sign_in(c.session, RENTER, created.renter_id))
    return c.render("key_shown.html", 201, key=created.api_key, who=RENTER, next="/renter")


@page()
async def signup_provider(c: Ctx) -> Response:
    names = ("name", "email", "gpu_model", "gpu_count", "vram_gb")
    values = {n: c.field(n) for n in names}
    if c.request.method == "GET":
        return c.render("signup_provider.html", values=values)
    if _throttled(c, "signup_buckets"):
        return c.render(
            "signup_provider.html",
            429,
            values=values,
            errors={"name": c._("Too many attempts. Please wait a minute and try again.")},
        )
    errors: dict[str, str] = {}
    data = {
        "name": values["name"],
        "email": values["email"],
        "gpu_model": values["gpu_model"],
        "gpu_count": whole(c, "gpu_count", errors),
        "vram_gb": whole(c, "vram_gb", errors),
    }
    try:
        if errors:
            raise Invalid(errors)
        body = convert(c, data, inp.RegisterProvider, {n: n for n in names})
    except Invalid as bad:
        return c.render("signup_provider.html", 400, values=values, errors=bad.errors)
    created = await c.service.register_provider(body)
    c.switch(c.site.sessions.sign_in(c.session, PROVIDER, created.provider_id))
    return c.render("key_shown.html", 201, key=created.api_key, who=PROVIDER, next="/provider")


@page()
async def signin(c: Ctx) -> Response:
    nxt = safe_next(c.field("next") or c.request.query_params.get("next", ""), "")
    if c.request.method == "GET":
        return c.render("signin.html", next=nxt)
    if _throttled(c, "signin_buckets"):
        return c.render(
            "signin.html",
            429,
            next=nxt,
            errors={"key": c._("Too many attempts. Please wait a minute and try again.")},
        )
    secret = c.field("key")
    role = role_of_key(secret) or ADMIN
    headers = {RENTER: "x-renter-key", PROVIDER: "x-provider-key", ADMIN: "x-admin-token"}
    auth = Authenticator(c.service.lookup_key, c.site.config.admin_token)
    try:
        who = await auth.authenticate((role,), [(headers[role], secret)])
    except ApiError as refused:
        message = (
            c._("The admin console is disabled: no admin token is configured.")
            if refused.code == "admin_disabled"
            else c._("This key or token is not valid.")
        )
        return c.render("signin.html", 401, next=nxt, errors={"key": message})
    c.switch(c.site.sessions.sign_in(c.session, who.role, who.subject_id))
    # Back to the page that asked for sign-in, if it belongs to this role; else its home.
    home = HOME[who.role]
    return c.redirect(nxt if nxt == home or nxt.startswith(home + "/") else home)


@page()
async def signout(c: Ctx) -> Response:
    c.site.sessions.end(c.session)
    c.switch(c.site.sessions.new(c.session.lang))
    return c.redirect("/", c._("You are signed out."))


@page()
async def language(c: Ctx) -> Response:
    lang = c.field("lang")
    if lang in i18n.LANGUAGES:
        c.session.lang = lang
    return c.redirect(safe_next(c.field("next"), "/"))
