"""Which GPUs a job may run on for the price it was given (docs/ledger.md, "Any GPU").

A job's price per GPU-hour is fixed at submission (SPEC section 2). A job that names a GPU
model is priced at that model's price and runs only on that model. A job for any GPU
("any", "ANY", "*", "", "default") is priced at the default price, or at the requested
provider's price when it names one, and may run only on a GPU whose price, when it is
claimed, is at most the job's: it never runs on a dearer GPU than the renter paid for (the
probe priced an "any" job at 33 halala/h and ran it on an H200 at 919).

The decision (`dcp_projections.jobs.decide_claim`) leases only where `may_run_on` holds, and
the fold checks it again for every claim, from the state and from the GPU price the claim
records.
"""

from __future__ import annotations

import functools

from dcp_projections.state import ANY_GPU, State, gpu_key


@functools.lru_cache(maxsize=1024)  # once per submission folded: a few GPU types recur
def job_gpu_key(gpu_type: str) -> str:
    """The model a job asks for, as `gpu_key` compares them; "" for a job for any GPU."""
    return "" if gpu_type.lower() in ANY_GPU else gpu_key(gpu_type)


def gpu_price(state: State, gpu_model: str) -> int:
    """The price per GPU-hour of a provider's GPU model now (the default for an unpriced one)."""
    return state.price_for(gpu_model)


def may_run_on(
    job_key: str, job_price_halala_per_gpu_hour: int, gpu_model: str, gpu_price_halala: int
) -> bool:
    """May a job (its `job_gpu_key` and price per GPU-hour) run on a GPU of `gpu_model`
    whose price is now `gpu_price_halala`?

    A named model: only that model; its price was that model's when the job was submitted,
    and SPEC says nothing later re-prices a job, so a later price change does not strand it.
    Any GPU: only a GPU priced at most the job's price.
    """
    if job_key:
        return job_key == gpu_key(gpu_model)
    return gpu_price_halala <= job_price_halala_per_gpu_hour
