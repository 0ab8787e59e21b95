"""The one `Api` table every endpoint module registers on (a leaf: it imports no endpoint).

The package's `__init__` imports the endpoint modules, in the router's order; they import the
table from here, so none of them needs the package that imports them.
"""

from dcp_http.routing import Api

api = Api()
