"""Server-side sessions: the browser holds only an opaque id; the identity stays here.

Signing in exchanges a key or the admin token for a session that names the caller's role and
id (never the key). The id travels in an `HttpOnly`, `SameSite=Strict` cookie (`Secure` when
the request came over TLS). Sessions end at sign-out, after `idle_s` without a request, or
`max_age_s` after they began. The table is bounded: the least recently used session goes first.

Sessions live in this process's memory: a restart signs everyone out, and several API nodes
behind a load balancer need sticky sessions (docs/web.md).
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable

import msgspec

COOKIE = "dcp_session"
MAX_SESSIONS = 50_000


class Session(msgspec.Struct, kw_only=True):
    """One browser's session: its CSRF token, language, and who signed in (if anyone)."""

    sid: str
    csrf: str
    created_s: float
    seen_s: float
    role: str = ""  # "" until signed in; "renter", "provider" or "admin"
    subject_id: str = ""
    lang: str = ""  # "" = from Accept-Language
    flash: str = ""  # a one-time message for the next page (already translated)

    def csrf_ok(self, token: str | None) -> bool:
        """True if `token` is this session's CSRF token (compared in constant time)."""
        if not token:
            return False
        return hmac.compare_digest(token.encode("utf-8", "surrogatepass"), self.csrf.encode())


class SessionStore:
    """Sessions by id, bounded and expiring."""

    def __init__(
        self,
        idle_s: float = 2 * 3600,
        max_age_s: float = 12 * 3600,
        max_sessions: int = MAX_SESSIONS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.idle_s = idle_s
        self.max_age_s = max_age_s
        self._max = max_sessions
        self._clock = clock
        self._by_id: OrderedDict[str, Session] = OrderedDict()

    def get(self, sid: str | None) -> Session | None:
        """The live session with this id, or None (unknown, or expired: then dropped)."""
        if not sid or len(sid) > 100:
            return None
        s = self._by_id.get(sid)
        if s is None:
            return None
        now = self._clock()
        if now - s.seen_s > self.idle_s or now - s.created_s > self.max_age_s:
            del self._by_id[sid]
            return None
        s.seen_s = now
        self._by_id.move_to_end(sid)
        return s

    def new(self, lang: str = "") -> Session:
        """A fresh anonymous session with its own CSRF token."""
        now = self._clock()
        s = Session(
            sid=secrets.token_urlsafe(32),
            csrf=secrets.token_urlsafe(32),
            created_s=now,
            seen_s=now,
            lang=lang,
        )
        self._by_id[s.sid] = s
        while len(self._by_id) > self._max:
            self._by_id.popitem(last=False)
        return s

    def sign_in(self, old: Session, role: str, subject_id: str) -> Session:
        """A new session (new id and CSRF token) for `role`; the old one ends, so an id
        planted before sign-in is worth nothing after it."""
        self.end(old)
        s = self.new(old.lang)
        s.role, s.subject_id = role, subject_id
        return s

    def end(self, s: Session) -> None:
        self._by_id.pop(s.sid, None)

    def __len__(self) -> int:
        return len(self._by_id)
