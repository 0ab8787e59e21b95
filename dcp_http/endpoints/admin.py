"""The admin API: credits, provider flags, jobs, payouts, pricing, images, the log."""

from __future__ import annotations

from dcp_http import requests as inp
from dcp_http import responses as out
from dcp_http.auth import ADMIN
from dcp_http.endpoints._api import api
from dcp_http.routing import Call

A = (ADMIN,)


@api.endpoint(
    "POST",
    "/api/admin/renters/{renter_id}/credit",
    "Credit a renter; the same reference twice credits once",
    roles=A,
    body=inp.Credit,
    returns=out.CreditReply,
    errors=(404, 409),
    tag="admin",
)
async def credit(call: Call) -> out.CreditReply:
    return await call.service.credit(call.path["renter_id"], call.body)


def _provider_flag(action: str, summary: str) -> None:
    @api.endpoint(
        "POST",
        f"/api/admin/providers/{{provider_id}}/{action}",
        summary,
        roles=A,
        body=inp.Reason,
        body_optional=True,
        returns=out.ProviderProfile,
        errors=(404, 409),
        tag="admin",
    )
    async def flag(call: Call) -> out.ProviderProfile:
        return await call.service.provider_flag(call.path["provider_id"], action, call.body.reason)


_provider_flag("approve", "Approve a provider")
_provider_flag("suspend", "Suspend a provider: it gets no new jobs")
_provider_flag("unsuspend", "Lift a provider's suspension")


@api.endpoint(
    "POST",
    "/api/admin/jobs/{job_id}/cancel",
    "Cancel any job (as in SPEC section 2)",
    roles=A,
    returns=out.JobReply,
    errors=(404, 409),
    tag="admin",
)
async def cancel_job(call: Call) -> out.JobReply:
    return out.JobReply(job=await call.service.cancel_job(call.who, call.path["job_id"]))


@api.endpoint(
    "POST",
    "/api/admin/jobs/{job_id}/requeue",
    "Requeue a failed job: reserves its cost again (402 if it can't)",
    roles=A,
    returns=out.JobReply,
    errors=(402, 404, 409),
    tag="admin",
)
async def requeue_job(call: Call) -> out.JobReply:
    return out.JobReply(job=await call.service.requeue_job(call.path["job_id"]))


@api.endpoint(
    "GET",
    "/api/admin/withdrawals",
    "Withdrawals, optionally by status",
    roles=A,
    query=inp.WithdrawalsQuery,
    returns=out.WithdrawalsPage,
    tag="admin",
)
async def withdrawals(call: Call) -> out.WithdrawalsPage:
    return await call.service.withdrawals(call.query)


@api.endpoint(
    "POST",
    "/api/admin/withdrawals/{withdrawal_id}/complete",
    "The payout was made: payout_pending -> world:payouts",
    roles=A,
    returns=out.WithdrawalView,
    errors=(404, 409),
    tag="admin",
)
async def complete_withdrawal(call: Call) -> out.WithdrawalView:
    return await call.service.decide_withdrawal(call.path["withdrawal_id"], "complete", "")


@api.endpoint(
    "POST",
    "/api/admin/withdrawals/{withdrawal_id}/reject",
    "Reject a withdrawal: payout_pending -> earnings",
    roles=A,
    body=inp.Reason,
    body_optional=True,
    returns=out.WithdrawalView,
    errors=(404, 409),
    tag="admin",
)
async def reject_withdrawal(call: Call) -> out.WithdrawalView:
    return await call.service.decide_withdrawal(
        call.path["withdrawal_id"], "reject", call.body.reason
    )


@api.endpoint(
    "PUT",
    "/api/admin/pricing/{gpu_model}",
    "Set a GPU model's price; applies to jobs submitted afterwards",
    roles=A,
    body=inp.SetPrice,
    returns=out.PriceView,
    tag="admin",
)
async def set_price(call: Call) -> out.PriceView:
    return await call.service.set_price(call.path["gpu_model"], call.body.halala_per_gpu_hour)


@api.endpoint(
    "GET",
    "/api/admin/images",
    "The image allowlist",
    roles=A,
    returns=out.ImageList,
    tag="admin",
)
async def images(call: Call) -> out.ImageList:
    return await call.service.images()


@api.endpoint(
    "POST",
    "/api/admin/images",
    "Allow an image reference (exact, repo@sha256:, or prefix*)",
    roles=A,
    body=inp.ImageBody,
    returns=out.ImageList,
    errors=(409,),
    tag="admin",
)
async def allow_image(call: Call) -> out.ImageList:
    return await call.service.set_image(call.body.reference, True)


@api.endpoint(
    "POST",
    "/api/admin/images/remove",
    "Remove an image reference from the allowlist",
    roles=A,
    body=inp.ImageBody,
    returns=out.ImageList,
    errors=(404, 409),
    tag="admin",
)
async def remove_image(call: Call) -> out.ImageList:
    return await call.service.set_image(call.body.reference, False)


@api.endpoint(
    "GET",
    "/api/admin/reconciliation",
    "Sum of all balances (always 0) and the invariants",
    roles=A,
    returns=out.Reconciliation,
    tag="admin",
)
async def reconciliation(call: Call) -> out.Reconciliation:
    return await call.service.reconciliation()


@api.endpoint(
    "GET",
    "/api/admin/events",
    "The log, in order, for auditors and tools",
    roles=A,
    query=inp.EventsQuery,
    returns=out.EventsPage,
    tag="admin",
)
async def events(call: Call) -> out.EventsPage:
    return await call.service.events(call.query)
