"""Every endpoint of SPEC section 5, registered on one `Api` table.

Handlers are thin: the routing layer has already authenticated and decoded; a handler calls
the service adapter and returns its response type.
"""

from dcp_http.routing import Api

api = Api()

# Registration happens on import; the order here is the order in /openapi.json.
from dcp_http.endpoints import admin, jobs, providers, renters, system  # noqa: E402

__all__ = ["admin", "api", "jobs", "providers", "renters", "system"]
