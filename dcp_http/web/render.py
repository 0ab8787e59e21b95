"""The Jinja2 environment: autoescaping in every template, gettext through the i18n extension,
and the filters pages share (SAR amounts, times)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import jinja2
from markupsafe import Markup, escape
from starlette.templating import Jinja2Templates

from dcp_http.web import i18n

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"


def _when(value: str | int | None) -> Markup | str:
    """An RFC 3339 string or integer microseconds as `YYYY-MM-DD HH:MM:SS UTC`, in a
    left-to-right <time> so an Arabic page does not reorder its parts."""
    if value is None or value == "":
        return "–"
    if isinstance(value, int):
        t = dt.datetime.fromtimestamp(value / 1_000_000, dt.UTC)
    else:
        t = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    iso = escape(t.isoformat())
    return Markup(f'<time dir="ltr" datetime="{iso}">{t:%Y-%m-%d %H:%M:%S} UTC</time>')


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,  # every template, whatever its name: stdout with <script> is text
        extensions=["jinja2.ext.i18n"],
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.install_gettext_callables(  # type: ignore[attr-defined]
        i18n.gettext_, i18n.ngettext_, newstyle=True
    )
    env.filters["sar"] = i18n.sar
    env.filters["when"] = _when
    return env


def templates() -> Jinja2Templates:
    return Jinja2Templates(env=environment())
