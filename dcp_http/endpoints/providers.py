"""Providers: registration, heartbeats, leases, results, earnings and withdrawals."""

from __future__ import annotations

from dcp_http import requests as inp
from dcp_http import responses as out
from dcp_http.auth import PROVIDER
from dcp_http.endpoints._api import api
from dcp_http.routing import Call

P = (PROVIDER,)


@api.endpoint(
    "POST",
    "/api/providers/register",
    "Register a provider; the API key is shown once",
    body=inp.RegisterProvider,
    status=201,
    returns=out.ProviderCreated,
    tag="providers",
)
async def register(call: Call) -> out.ProviderCreated:
    return await call.service.register_provider(call.body)


@api.endpoint(
    "POST",
    "/api/providers/heartbeat",
    "Report GPUs and running jobs; renews the leases of the jobs listed as running",
    roles=P,
    body=inp.Heartbeat,
    returns=out.HeartbeatReply,
    tag="providers",
)
async def heartbeat(call: Call) -> out.HeartbeatReply:
    return await call.service.heartbeat(call.subject, call.body)


@api.endpoint(
    "GET",
    "/api/providers/{key}/jobs",
    "Every job leased to this provider and not ended, after assigning queued jobs",
    roles=P,
    returns=out.LeasedJobs,
    path_params={"key": "the provider's API key"},
    tag="providers",
)
async def jobs_by_key(call: Call) -> out.LeasedJobs:
    return out.LeasedJobs(jobs=await call.service.provider_jobs(call.subject))


@api.endpoint(
    "GET",
    "/api/providers/jobs/next",
    "The first job leased to this provider (after assigning), or null",
    roles=P,
    returns=out.NextJob,
    tag="providers",
)
async def next_job(call: Call) -> out.NextJob:
    jobs = await call.service.provider_jobs(call.subject)
    return out.NextJob(job=jobs[0] if jobs else None)


@api.endpoint(
    "POST",
    "/api/providers/jobs/{job_id}/started",
    "The container started (409 lease_lost for an old attempt)",
    roles=P,
    body=inp.JobStarted,
    returns=out.LeaseReply,
    errors=(404, 409),
    tag="providers",
)
async def started(call: Call) -> out.LeaseReply:
    job = await call.service.job_started(call.subject, call.path["job_id"], call.body.attempt)
    return out.LeaseReply(job=job)


@api.endpoint(
    "POST",
    "/api/providers/job-result",
    "Report how a job ended; the same result again gets the same 200, a different one 409",
    roles=P,
    body=inp.JobResult,
    returns=out.JobResultReply,
    errors=(404, 409),
    tag="providers",
)
async def job_result(call: Call) -> out.JobResultReply:
    return await call.service.job_result(call.subject, call.body)


@api.endpoint(
    "GET",
    "/api/providers/me",
    "State, approval and earnings",
    roles=P,
    returns=out.ProviderProfile,
    tag="providers",
)
async def me(call: Call) -> out.ProviderProfile:
    return await call.service.provider_profile(call.subject)


@api.endpoint(
    "GET",
    "/api/providers/earnings",
    "Earnings and pending payouts",
    roles=P,
    returns=out.Earnings,
    tag="providers",
)
async def earnings(call: Call) -> out.Earnings:
    return await call.service.provider_earnings(call.subject)


@api.endpoint(
    "POST",
    "/api/providers/me/withdraw",
    "Withdraw at least 1000 halala of earnings to a Saudi IBAN",
    roles=P,
    body=inp.Withdraw,
    status=201,
    returns=out.WithdrawalView,
    errors=(402, 403, 409),
    tag="providers",
)
async def withdraw(call: Call) -> out.WithdrawalView:
    return await call.service.withdraw(call.subject, call.body)


@api.endpoint(
    "POST",
    "/api/providers/pause",
    "Stop taking new jobs",
    roles=P,
    returns=out.ProviderProfile,
    errors=(409,),
    tag="providers",
)
async def pause(call: Call) -> out.ProviderProfile:
    return await call.service.set_paused(call.subject, True)


@api.endpoint(
    "POST",
    "/api/providers/resume",
    "Start taking jobs again",
    roles=P,
    returns=out.ProviderProfile,
    errors=(409,),
    tag="providers",
)
async def resume(call: Call) -> out.ProviderProfile:
    return await call.service.set_paused(call.subject, False)


@api.endpoint(
    "GET",
    "/api/marketplace",
    "Online, approved providers with their GPUs and price",
    returns=out.Marketplace,
    tag="providers",
)
async def marketplace(call: Call) -> out.Marketplace:
    return await call.service.marketplace()
