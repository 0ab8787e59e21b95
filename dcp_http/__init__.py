"""The JSON API of DCP (SPEC section 5): Starlette on uvicorn, thin handlers over `dcp_app`."""
