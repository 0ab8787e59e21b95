"""From form fields to the API's own request types, with errors by field in the user's language.

A form is checked by the very types the JSON API decodes (`dcp_http.requests`), converted with
msgspec, and then by the service's decisions; this module only reads text into those types and
says what is wrong next to the field it belongs to. Nothing here decides a money rule.
"""

from __future__ import annotations

import re
from typing import Any, TypeVar

import msgspec

from dcp_http.routing import _field_error
from dcp_http.web.page import Ctx

T = TypeVar("T")

_SAR = re.compile(r"([0-9]{1,10})(?:[.,]([0-9]{1,2}))?")
_INT = re.compile(r"[0-9]{1,12}")


class Invalid(Exception):
    """A form that cannot be used: `errors` maps field names to messages."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__(", ".join(errors))
        self.errors = errors


def sar_to_halala(c: Ctx, name: str, errors: dict[str, str]) -> int | None:
    """The field `name` (an amount in SAR, e.g. "12.34") as integer halala, with no float:
    more than two decimals is not a whole number of halala and is refused."""
    text = c.field(name)
    m = _SAR.fullmatch(text)
    if not m:
        errors[name] = c._(
            "Enter an amount in SAR with at most two decimals"
            " (a whole number of halala), e.g. 12.34."
        )
        return None
    whole, frac = m.group(1), (m.group(2) or "").ljust(2, "0")
    return int(whole) * 100 + int(frac)


def whole(c: Ctx, name: str, errors: dict[str, str], default: int | None = None) -> int | None:
    """The field `name` as a whole number (digits only), or `default` when left empty."""
    text = c.field(name)
    if not text and default is not None:
        return default
    if not _INT.fullmatch(text):
        errors[name] = c._("Enter a whole number.")
        return None
    return int(text)


def convert(c: Ctx, data: dict[str, Any], into: type[T], fields: dict[str, str]) -> T:
    """`data` as the API type `into`; raises Invalid naming the form field (`fields` maps API
    paths such as `container_spec.image` to form field names)."""
    try:
        return msgspec.convert(data, into)
    except msgspec.ValidationError as e:
        raise Invalid(field_errors(c, [_field_error(e)], fields)) from None


def field_errors(c: Ctx, found: list[Any], fields: dict[str, str]) -> dict[str, str]:
    """API field errors ({field, message} dicts or FieldErrors) as form errors."""
    out: dict[str, str] = {}
    for f in found:
        path = f["field"] if isinstance(f, dict) else f.field
        name = fields.get(path) or fields.get(path.split(".")[0]) or next(iter(fields.values()))
        out.setdefault(
            name, message_for(c, name, f["message"] if isinstance(f, dict) else f.message)
        )
    return out


def message_for(c: Ctx, name: str, detail: str) -> str:
    """A message in the user's language for an invalid field."""
    if "allowlist" in detail:
        return c._("This image is not on the allowlist.")
    if "mod-97" in detail or name == "iban":
        return c._("This is not a valid Saudi IBAN (SA followed by 22 digits, with a valid check).")
    specific = {
        "command": c._("Enter the command to run."),
        "image": c._("Enter an image reference, e.g. dcp-test/busybox:1."),
        "name": c._("Enter a name (at most 200 characters)."),
        "email": c._("Enter a valid email address."),
        "gpu_count": c._("Enter a GPU count from 1 to 64."),
        "vram_gb": c._("Enter the VRAM in GB (1 to 4096)."),
        "gpu_model": c._("Enter the GPU model."),
        "max_duration_seconds": c._("Enter a maximum duration from 60 to 86400 seconds."),
        "env": c._("Write one NAME=value per line; names are letters, digits and _."),
        "amount": c._("Enter an amount of at least 0.01 SAR."),
        "reference": c._("Enter a reference (at most 200 characters)."),
        "price": c._("Enter a price in SAR per GPU hour."),
    }
    return specific.get(name, c._("This value is not valid."))
