"""Renters: registration, profile, balance, ledger and sandbox top-up."""

from __future__ import annotations

from dcp_http import requests as inp
from dcp_http import responses as out
from dcp_http.auth import RENTER
from dcp_http.endpoints._api import api
from dcp_http.routing import Call

R = (RENTER,)


@api.endpoint(
    "POST",
    "/api/renters/register",
    "Register a renter; the API key is shown once",
    body=inp.RegisterRenter,
    status=201,
    returns=out.RenterCreated,
    tag="renters",
)
async def register(call: Call) -> out.RenterCreated:
    return await call.service.register_renter(call.body)


@api.endpoint(
    "GET",
    "/api/renters/me",
    "The renter's profile and balances",
    roles=R,
    returns=out.RenterProfile,
    tag="renters",
)
async def me(call: Call) -> out.RenterProfile:
    return await call.service.renter_profile(call.subject)


@api.endpoint(
    "GET",
    "/api/renters/balance",
    "balance = available + held",
    roles=R,
    returns=out.Balance,
    tag="renters",
)
async def balance(call: Call) -> out.Balance:
    return await call.service.renter_balance(call.subject)


@api.endpoint(
    "GET",
    "/api/renters/ledger",
    "The renter's own postings, newest first",
    roles=R,
    query=inp.PageQuery,
    returns=out.LedgerPage,
    tag="renters",
)
async def ledger(call: Call) -> out.LedgerPage:
    return await call.service.renter_ledger(call.subject, call.query)


@api.endpoint(
    "POST",
    "/api/renters/topup",
    "Top up your own balance (sandbox mode only, else 403)",
    roles=R,
    body=inp.TopUp,
    returns=out.Balance,
    errors=(403,),
    tag="renters",
)
async def topup(call: Call) -> out.Balance:
    return await call.service.topup(call.subject, call.body)
