"""The admin credit endpoint with a reference the service no longer holds in memory (it keeps
the most recent ones and reads older ones back from the read models: docs/design.md,
"Bounded memory"): the same reference and terms again credit nothing and answer as the first
time did; another renter or amount is 409 Conflict; also after a restart. A real uvicorn."""

from pathlib import Path

from ._live import Api, serve


def credit(api: Api, renter_id: str, amount: int, reference: str):
    return api.post(
        f"/api/admin/renters/{renter_id}/credit",
        json={"amount_halala": amount, "reference": reference, "reason": "bank transfer"},
        headers=api.admin,
    )


def test_an_old_reference_answers_as_before(tmp_path: Path):
    db = tmp_path / "dcp.db"
    with serve(db, history_in_memory=2) as server:
        api = Api(server)
        try:
            renter = api.renter()
            a, b = renter["renter_id"], api.renter()["renter_id"]
            first = [credit(api, a, 1000 + i, f"bank-{i}").json() for i in range(6)]
            assert [f["duplicate"] for f in first] == [False] * 6
            available = first[-1]["available_halala"]
            ledger = server.app.state.service.ledger
            assert list(ledger.state.deposit_refs) == ["bank-4", "bank-5"]

            again = credit(api, a, 1000, "bank-0")
            assert again.status_code == 200, again.text
            assert again.json() == {**first[0], "duplicate": True, "available_halala": available}
            for who, amount in ((b, 1000), (a, 1001)):
                r = credit(api, who, amount, "bank-0")
                assert r.status_code == 409, r.text
                assert r.json()["code"] == "conflict"
            balance = api.ok("GET", "/api/renters/balance", headers=renter["headers"])
            assert balance["available_halala"] == available
            assert len(ledger.state.deposit_refs) <= 2
        finally:
            api.close()

    with serve(db, history_in_memory=2) as server:  # a restart: folded from the log
        api = Api(server)
        try:
            assert len(server.app.state.service.ledger.state.deposit_refs) == 2
            r = credit(api, a, 1001, "bank-1")
            assert r.status_code == 200 and r.json()["duplicate"], r.text
            assert r.json()["available_halala"] == available
            assert credit(api, b, 1002, "bank-2").status_code == 409
        finally:
            api.close()
