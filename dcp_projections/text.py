"""What counts as printable text, and patterns that match whole strings only.

One definition for the domain's checks and the HTTP layer's `Meta` patterns. Python's `$`
also matches before a final newline, and msgspec applies a `Meta(pattern=...)` with
`re.search`, so `^[a-z]+$` accepts `"ref\\n"`: a reference that then credits a second time
as a "different" one. Every pattern is therefore built by `whole()`, anchored with `\\Z`.
"""

from __future__ import annotations

import re

# C0 controls (NUL, tab, newline, escape...), DEL, C1 controls, and the two Unicode line
# breaks: none belongs in a name, an id or a reference, and each can forge a log line.
CONTROL = r"\x00-\x1f\x7f-\x9f\u2028\u2029"


def whole(body: str) -> str:
    """A pattern that matches only a whole string: `^(?:body)\\Z`."""
    return rf"^(?:{body})\Z"


PRINTABLE = whole(f"[^{CONTROL}]*")
ENV_KEY = whole(r"[A-Za-z_][A-Za-z0-9_]*")

_PRINTABLE = re.compile(PRINTABLE)
_ENV_KEY = re.compile(ENV_KEY)


def is_printable(value: str) -> bool:
    """True when `value` holds no control character (see CONTROL)."""
    return _PRINTABLE.match(value) is not None


def is_env_key(value: str) -> bool:
    """True for a shell-style environment variable name: `[A-Za-z_][A-Za-z0-9_]*`."""
    return _ENV_KEY.match(value) is not None
