"""The queue position a job is answered with at submit is the one GET /api/jobs/{id} and the
job list answer later: both read the order the domain decided (priority, then the sequence of
the submit event), never a re-derivation from times and ids."""

from ._live import Api, serve


def test_submits_in_one_microsecond_keep_their_queue_order_on_every_read(tmp_path):
    with serve(tmp_path / "queue.db", rate_limits=False) as server:
        api = Api(server)
        api.allow_image()
        renter = api.renter(credit_halala=1_000_000)
        # One instant for every submit: submitted_at_us cannot order them, and job ids are
        # random, so only the stored submit order can.
        ledger = server.app.state.service.ledger
        now = ledger.clock()
        ledger.clock = lambda: now
        submitted = [api.submit(renter)["job"] for _ in range(4)]
        assert [j["queue_position"] for j in submitted] == [1, 2, 3, 4]
        read = [
            api.ok("GET", f"/api/jobs/{j['job_id']}", headers=renter["headers"])["job"]
            for j in submitted
        ]
        assert {j["submitted_at"] for j in read} == {read[0]["submitted_at"]}
        assert [j["queue_position"] for j in read] == [1, 2, 3, 4]
        listed = api.ok("GET", "/api/jobs", headers=renter["headers"])["jobs"]
        by_id = {j["job_id"]: j["queue_position"] for j in listed}
        assert [by_id[j["job_id"]] for j in submitted] == [1, 2, 3, 4]

        # A priority job goes ahead of all four; the standard ones move down by one.
        first = api.submit(renter, priority="priority")["job"]
        assert first["queue_position"] == 1
        got = api.ok("GET", f"/api/jobs/{first['job_id']}", headers=renter["headers"])["job"]
        assert got["queue_position"] == 1
        listed = api.ok("GET", "/api/jobs", headers=renter["headers"])["jobs"]
        by_id = {j["job_id"]: j["queue_position"] for j in listed}
        assert [by_id[j["job_id"]] for j in submitted] == [2, 3, 4, 5]

        # Cancelling the second moves the later ones up, on both read paths.
        api.ok("POST", f"/api/jobs/{submitted[1]['job_id']}/cancel", headers=renter["headers"])
        after = [
            api.ok("GET", f"/api/jobs/{j['job_id']}", headers=renter["headers"])["job"]
            for j in submitted
        ]
        assert [j["queue_position"] for j in after] == [2, None, 3, 4]
        listed = api.ok("GET", "/api/jobs", headers=renter["headers"])["jobs"]
        by_id = {j["job_id"]: j["queue_position"] for j in listed}
        assert [by_id[j["job_id"]] for j in submitted] == [2, None, 3, 4]
        api.close()
