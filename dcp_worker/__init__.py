"""The provider worker: heartbeats, takes jobs over HTTP, runs them in hardened Docker containers.

It talks to the platform only over HTTP (SPEC section 5) and never imports the store, the
domain or the API packages.
"""

__version__ = "0.1.0"
