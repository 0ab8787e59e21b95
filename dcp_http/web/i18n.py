"""Languages of the web plane: English (the msgids) and Arabic, from one gettext catalogue.

The catalogue is `locale/<lang>/LC_MESSAGES/messages.po`, kept in the repository and extracted
with Babel (`pybabel extract -F dcp_http/web/babel.cfg`; docs/web.md). It is compiled in memory
when the server starts (Babel's `read_po` then `write_mo`), so no compiled `.mo` file has to be
built, committed or shipped: a clean checkout serves Arabic as it is.

Templates call `_()` / `{% trans %}` through Jinja2's i18n extension; the current request's
translations sit in a context variable set while its page renders.
"""

from __future__ import annotations

import contextvars
import gettext
import io
from functools import cache
from pathlib import Path

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import Translations

LOCALE_DIR = Path(__file__).parent / "locale"
LANGUAGES = ("en", "ar")
DEFAULT = "en"
RTL = frozenset({"ar"})

_current: contextvars.ContextVar[gettext.NullTranslations | None] = contextvars.ContextVar(
    "dcp_web_translations", default=None
)
_ENGLISH = gettext.NullTranslations()


@cache
def translations(lang: str) -> gettext.NullTranslations:
    """The translations of `lang` (English: the msgids themselves)."""
    po = LOCALE_DIR / lang / "LC_MESSAGES" / "messages.po"
    if lang == DEFAULT or not po.is_file():
        return gettext.NullTranslations()
    with po.open("rb") as f:
        catalog = read_po(f, locale=lang)
    buf = io.BytesIO()
    write_mo(buf, catalog)
    buf.seek(0)
    return Translations(buf)


def use(lang: str) -> gettext.NullTranslations:
    """Make `lang` the current language of this task; returns its translations."""
    t = translations(lang)
    _current.set(t)
    return t


def gettext_(message: str) -> str:
    return (_current.get() or _ENGLISH).gettext(message)


def ngettext_(singular: str, plural: str, n: int) -> str:
    return (_current.get() or _ENGLISH).ngettext(singular, plural, n)


def pick(accept_language: str | None) -> str:
    """The first of our languages the browser's Accept-Language names, else English."""
    for part in (accept_language or "").split(","):
        tag = part.split(";")[0].strip().lower()
        base = tag.split("-")[0]
        if base in LANGUAGES:
            return base
    return DEFAULT


def sar(amount_halala: int | None) -> str:
    """Integer halala as SAR with halala exact: 1234 -> "12.34", -5 -> "-0.05"."""
    if amount_halala is None:
        return "–"
    sign = "-" if amount_halala < 0 else ""
    whole, cents = divmod(abs(int(amount_halala)), 100)
    return f"{sign}{whole:,}.{cents:02d}"
