"""The web plane's pieces without a server: the catalogue, amounts, sessions, charts."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

from dcp_http.web import charts, i18n
from dcp_http.web.sessions import SessionStore

WEB = Path(i18n.__file__).parent
_PLACEHOLDER = re.compile(r"%\([a-z_]+\)s|\{[a-z_]+\}")


def extracted() -> set[str]:
    """Every msgid in the web plane's templates and Python, as `pybabel extract` finds them."""
    method_map = [("**/templates/**.html", "jinja2"), ("**.py", "python")]
    options = {"**/templates/**.html": {"extensions": "jinja2.ext.i18n"}}
    found = set()
    for _file, _line, message, _comments, _ctx in extract_from_dir(
        str(WEB), method_map, options, keywords={"_": None, "gettext": None}
    ):
        found.add(message if isinstance(message, str) else message[0])
    return found


def test_every_string_has_an_arabic_translation():
    """The Arabic catalogue covers every string in the pages, placeholders intact."""
    with (WEB / "locale" / "ar" / "LC_MESSAGES" / "messages.po").open("rb") as f:
        catalog = read_po(f, locale="ar")
    strings = extracted()
    assert len(strings) > 300
    missing = [s for s in strings if not (catalog.get(s) and catalog.get(s).string)]
    assert not missing, f"untranslated (see docs/web.md): {missing}"
    for s in strings:
        ar = catalog.get(s).string
        assert sorted(_PLACEHOLDER.findall(s)) == sorted(_PLACEHOLDER.findall(ar)), s


def test_catalogue_is_compiled_in_memory():
    """No .mo file is needed: the .po is compiled when first used."""
    assert not list((WEB / "locale").rglob("*.mo"))
    assert i18n.translations("ar").gettext("Sign in") == "تسجيل الدخول"
    assert i18n.translations("en").gettext("Sign in") == "Sign in"


def test_sar_is_exact_to_the_halala():
    assert i18n.sar(1234) == "12.34"
    assert i18n.sar(5) == "0.05"
    assert i18n.sar(-5) == "-0.05"
    assert i18n.sar(123_456_789) == "1,234,567.89"
    assert i18n.sar(10**15 + 1) == "10,000,000,000,000.01"  # no float on the way
    assert i18n.sar(None) == "–"


def test_language_from_accept_language():
    assert i18n.pick("ar-SA,ar;q=0.9,en;q=0.8") == "ar"
    assert i18n.pick("fr-FR, en-GB;q=0.5") == "en"
    assert i18n.pick(None) == "en"


def test_sessions_expire_and_are_bounded():
    now = [0.0]
    store = SessionStore(idle_s=10, max_age_s=100, max_sessions=3, clock=lambda: now[0])
    s = store.new()
    assert store.get(s.sid) is s
    now[0] = 9
    assert store.get(s.sid) is s  # seen: idle time restarts
    now[0] = 20
    assert store.get(s.sid) is None  # idle too long
    s = store.new()
    for t in range(29, 120, 9):  # created at 20: at most 100 s old, whatever the activity
        now[0] = t
        assert store.get(s.sid) is s
    now[0] = 121
    assert store.get(s.sid) is None  # too old, however active
    ids = [store.new().sid for _ in range(5)]
    assert len(store) == 3 and store.get(ids[0]) is None and store.get(ids[-1]) is not None


def test_sign_in_makes_a_new_session():
    """Signing in changes the session id and the CSRF token (no fixation)."""
    store = SessionStore()
    anon = store.new("ar")
    signed = store.sign_in(anon, "renter", "r-1")
    assert signed.sid != anon.sid and signed.csrf != anon.csrf
    assert store.get(anon.sid) is None
    assert (signed.role, signed.subject_id, signed.lang) == ("renter", "r-1", "ar")
    assert signed.csrf_ok(signed.csrf) and not signed.csrf_ok(anon.csrf)
    assert not signed.csrf_ok(None) and not signed.csrf_ok("")


def test_charts_scale_and_sum_per_day():
    today = dt.date(2026, 12, 1)
    days = charts.per_day(
        [
            ("2026-12-01T10:00:00Z", 150),
            ("2026-12-01T23:59:59Z", 50),
            ("2026-11-30T00:00:00Z", 100),
            ("2026-01-01T00:00:00Z", 999),
            (None, 7),
        ],
        3,
        today,
    )
    assert days == [("11-29", 0), ("11-30", 100), ("12-01", 200)]
    chart = charts.bars(days, money=True)
    assert chart.top == 200
    assert chart.bars[0].h == 0 and chart.bars[2].h == charts.HEIGHT - 2 * charts.PAD
    assert chart.bars[1].h == (charts.HEIGHT - 2 * charts.PAD) / 2
    empty = charts.bars([("a", 0)])
    assert empty.top == 0 and empty.bars[0].h == 0
