"""The web plane as routes for the app: every page, the static files, and the HTML 404.

The one module that imports the pages; what they share (`Site`) is in `shared.py`.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route, request_response
from starlette.staticfiles import StaticFiles

from dcp_http.web import i18n
from dcp_http.web.headers import HEADERS, NO_STORE, WebHeaders
from dcp_http.web.pages import account, admin, admin_topups, provider, public, renter, wallet
from dcp_http.web.render import STATIC
from dcp_http.web.sessions import COOKIE
from dcp_http.web.shared import Site

GET, POST, BOTH = ["GET"], ["POST"], ["GET", "POST"]

PAGES: list[tuple[str, object, list[str]]] = [
    ("/", public.home, GET),
    ("/marketplace", public.marketplace, GET),
    ("/pricing", public.pricing, GET),
    ("/docs/renters", public.docs_renters, GET),
    ("/docs/providers", public.docs_providers, GET),
    ("/docs/api", public.docs_api, GET),
    ("/signup", account.signup_renter, BOTH),
    ("/signup/provider", account.signup_provider, BOTH),
    ("/signin", account.signin, BOTH),
    ("/signout", account.signout, POST),
    ("/language", account.language, POST),
    ("/renter", renter.dashboard, GET),
    ("/renter/jobs", renter.jobs, GET),
    ("/renter/jobs/new", renter.submit, BOTH),
    ("/renter/jobs/estimate", renter.estimate, GET),
    ("/renter/jobs/{job_id}", renter.job, GET),
    ("/renter/jobs/{job_id}/status", renter.job_status, GET),
    ("/renter/jobs/{job_id}/cancel", renter.cancel, POST),
    ("/renter/jobs/{job_id}/{stream:str}.txt", renter.download, GET),
    ("/renter/statement", renter.statement, GET),
    ("/renter/statement.csv", renter.statement_csv, GET),
    ("/renter/topup", renter.topup, POST),
    # The gateway sends the renter back to /wallet?topup=<id> (dcp_http.payments).
    ("/wallet", wallet.wallet, GET),
    ("/wallet/topup", wallet.start_topup, POST),
    ("/provider", provider.dashboard, GET),
    ("/provider/status", provider.status, GET),
    ("/provider/pause", provider.pause, POST),
    ("/provider/resume", provider.resume, POST),
    ("/provider/earnings", provider.earnings, BOTH),
    ("/provider/iban", provider.iban, GET),
    ("/admin", admin.overview, GET),
    ("/admin/providers", admin.providers, BOTH),
    ("/admin/renters", admin.renters, BOTH),
    ("/admin/jobs", admin.jobs, BOTH),
    ("/admin/withdrawals", admin.withdrawals, BOTH),
    ("/admin/topups", admin_topups.topups, BOTH),
    ("/admin/pricing", admin.pricing, BOTH),
    ("/admin/images", admin.images, BOTH),
    ("/admin/reconciliation", admin.reconciliation, GET),
    ("/admin/events", admin.events, GET),
]


def web_routes() -> list[BaseRoute]:
    """Every page (each with the security headers) and /static."""
    routes: list[BaseRoute] = [
        Route(path, WebHeaders(request_response(handler)), methods=methods)  # type: ignore[arg-type]
        for path, handler, methods in PAGES
    ]
    static = WebHeaders(StaticFiles(directory=STATIC), no_store=False)
    routes.append(Mount("/static", app=static, name="static"))
    return routes


def is_web_path(path: str) -> bool:
    """True for paths the web plane answers (their POST bodies are forms, not JSON)."""
    return not path.startswith("/api/")


async def not_found(request: Request) -> Response:
    """The HTML 404 page, for a browser that asked for a path no route has."""
    site: Site = request.app.state.web
    lang = i18n.pick(request.headers.get("accept-language"))
    session = site.sessions.get(request.cookies.get(COOKIE))
    if session is not None and session.lang:
        lang = session.lang
    i18n.use(lang)
    t = i18n.translations(lang)
    response = site.templates.TemplateResponse(
        request,
        "error.html",
        {
            "c": None,
            "lang": lang,
            "dir": "rtl" if lang in i18n.RTL else "ltr",
            "csrf": session.csrf if session else "",
            "role": session.role if session else "",
            "flash": "",
            "path": request.url.path,
            "errors": {},
            "values": {},
            "message": t.gettext("Not found."),
        },
        status_code=404,
    )
    for name, value in [*HEADERS, NO_STORE]:
        response.headers[name.decode()] = value.decode()
    return response
