"""Jobs, from the renter's side (and reads for the job's provider and admins)."""

from __future__ import annotations

from dcp_http import requests as inp
from dcp_http import responses as out
from dcp_http.auth import ADMIN, PROVIDER, RENTER
from dcp_http.endpoints._api import api
from dcp_http.errors import InvalidRequest
from dcp_http.routing import Call, Reply

R = (RENTER,)
ANY = (RENTER, PROVIDER, ADMIN)
MAX_IDEMPOTENCY_KEY = 200


def idempotency_key(call: Call) -> str | None:
    """The `Idempotency-Key` header, checked: printable ASCII, at most 200 characters."""
    key = call.header("idempotency-key")
    if key is None:
        return None
    if not 0 < len(key) <= MAX_IDEMPOTENCY_KEY or not key.isprintable() or not key.isascii():
        raise InvalidRequest(
            "invalid Idempotency-Key",
            fields=[{"field": "Idempotency-Key", "message": "1..200 printable ASCII characters"}],
        )
    return key


@api.endpoint(
    "POST",
    "/api/jobs/submit",
    "Submit a job; its reserve moves from available to held (402 with shortfall_halala)",
    roles=R,
    body=inp.SubmitJob,
    status=201,
    returns=out.JobSubmittedReply,
    errors=(402, 404, 409, 422),
    headers={
        "Idempotency-Key": "the same key with the same request returns the first job, submitted"
        " once; with another request it is 422 idempotency_key_reused"
    },
    tag="jobs",
)
async def submit(call: Call) -> out.JobSubmittedReply:
    key = idempotency_key(call)
    return await call.service.submit_job(call.subject, call.body, key)


@api.endpoint(
    "GET",
    "/api/jobs",
    "The renter's own jobs, newest first",
    roles=R,
    query=inp.JobsQuery,
    returns=out.JobsPage,
    tag="jobs",
)
async def list_jobs(call: Call) -> out.JobsPage:
    return await call.service.list_jobs(call.subject, call.query)


@api.endpoint(
    "GET",
    "/api/jobs/{job_id}",
    "A job with its money (its renter, its provider, admins)",
    roles=ANY,
    returns=out.JobReply,
    errors=(404,),
    tag="jobs",
)
async def get_job(call: Call) -> out.JobReply:
    return out.JobReply(job=await call.service.get_job(call.who, call.path["job_id"]))


@api.endpoint(
    "POST",
    "/api/jobs/{job_id}/cancel",
    "Cancel your job (refunded as in SPEC section 2)",
    roles=R,
    returns=out.JobReply,
    errors=(404, 409),
    tag="jobs",
)
async def cancel(call: Call) -> out.JobReply:
    job = await call.service.cancel_job(call.who, call.path["job_id"])
    return out.JobReply(job=job)


@api.endpoint(
    "GET",
    "/api/jobs/{job_id}/output",
    "The job's output; 202 while it has not ended; 410 when it ended without output",
    roles=ANY,
    responses={200: out.JobOutputView, 202: out.JobPending},
    errors=(404, 410),
    tag="jobs",
)
async def output(call: Call) -> out.JobOutputView | Reply:
    found = await call.service.job_output(call.who, call.path["job_id"])
    # Not ended yet: 202 with the status (SPEC section 5), the endpoint's choice, not the
    # adapter's.
    return Reply(202, found) if isinstance(found, out.JobPending) else found
