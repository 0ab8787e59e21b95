"""Every endpoint of SPEC section 5, registered on one `Api` table.

Handlers are thin: the routing layer has already authenticated and decoded; a handler calls
the service adapter and returns its response type.
"""

from dcp_http.routing import Api

api = Api()

# Registration happens on import, in this order: the router tries routes in it, so the busy
# ones (submit, heartbeat, polls, results) come first. It is also the order in /openapi.json.
from dcp_http.endpoints import jobs, providers, renters, admin, payments, system  # noqa: E402, I001

__all__ = ["admin", "api", "jobs", "payments", "providers", "renters", "system"]
