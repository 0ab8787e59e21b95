"""What the pages share (`Site`), in a module that imports no page.

`site.py` imports every page to build the route table; the pages reach `Site` through
`page.Ctx`, so it lives here, below both, and the pages never import `site.py`.
"""

from __future__ import annotations

from dcp_http.config import RateLimit, ServerConfig
from dcp_http.ratelimit import TokenBuckets
from dcp_http.web.render import templates
from dcp_http.web.sessions import SessionStore

# Sign-in attempts per client address: enough for typing a key wrong a few times, too few to
# guess one (a key has 128 random bits; this only keeps the log and the CPU quiet).
SIGNIN_LIMIT = RateLimit(10, 60.0)


class Site:
    """What the pages share: templates, sessions, and the sign-in and sign-up throttles."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.templates = templates()
        self.sessions = SessionStore()
        self.signin_buckets = TokenBuckets({"web": SIGNIN_LIMIT, "default": SIGNIN_LIMIT})
        register = config.rate_limit_table.get("register", SIGNIN_LIMIT)
        self.signup_buckets = TokenBuckets({"web": register, "default": register})
