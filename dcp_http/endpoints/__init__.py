"""Every endpoint of SPEC section 5, registered on one `Api` table.

Handlers are thin: the routing layer has already authenticated and decoded; a handler calls
the service adapter and returns its response type.
"""

# Registration happens on import, in this order: the router tries routes in it, so the busy
# ones (submit, heartbeat, polls, results) come first. It is also the order in /openapi.json.
# Each module registers on the table in `_api`, which imports none of them.
from dcp_http.endpoints import jobs, providers, renters, admin, payments, system  # noqa: I001
from dcp_http.endpoints._api import api

__all__ = ["admin", "api", "jobs", "payments", "providers", "renters", "system"]
