"""A request with two different credentials is refused with 400 and changes nothing."""

from ._live import IMAGE, Api


def test_two_different_keys_are_refused_whatever_the_places(api: Api):
    """Header + ?key=, header + Bearer, ?key= + Bearer, two ?key=, path + header: 400
    `conflicting_credentials`, for a request that would otherwise succeed with either key."""
    a, b = api.renter(), api.renter()
    p, q = api.provider(), api.provider()
    ka, kb, kp, kq = a["api_key"], b["api_key"], p["api_key"], q["api_key"]
    cases = [
        ("/api/renters/me", {"headers": {"x-renter-key": ka}, "params": {"key": kb}}),
        ("/api/renters/me", {"headers": {"x-renter-key": ka, "authorization": f"Bearer {kb}"}}),
        ("/api/renters/me", {"headers": {"authorization": f"Bearer {ka}"}, "params": {"key": kb}}),
        ("/api/renters/me", {"params": [("key", ka), ("key", kb)]}),
        ("/api/renters/me", {"headers": [("x-renter-key", ka), ("x-renter-key", kb)]}),
        (f"/api/providers/{kp}/jobs", {"headers": {"x-provider-key": kq}}),
        ("/api/providers/me", {"headers": {"x-provider-key": kp, "authorization": f"Bearer {kq}"}}),
        ("/api/admin/images", {"headers": {**api.admin, "authorization": f"Bearer {ka}"}}),
        ("/api/admin/images", {"headers": {**api.admin, "x-renter-key": ka}}),
    ]
    for path, kw in cases:
        r = api.get(path, **kw)
        assert r.status_code == 400, (path, kw, r.text)
        body = r.json()
        assert body["code"] == "conflicting_credentials" and body["error"], body
        assert ka not in r.text and kb not in r.text and kp not in r.text


def test_a_conflicting_submit_moves_no_money(api: Api):
    """A submit carrying renter A's header and renter B's Bearer is 400: no job, no hold,
    nothing appended, for either renter."""
    a, b = api.renter(credit_halala=10_000), api.renter(credit_halala=10_000)
    before = api.head_seq()
    r = api.post(
        "/api/jobs/submit",
        json={"container_spec": {"image": IMAGE}, "max_duration_seconds": 600},
        headers={"x-renter-key": a["api_key"], "authorization": f"Bearer {b['api_key']}"},
    )
    assert r.status_code == 400 and r.json()["code"] == "conflicting_credentials"
    assert api.head_seq() == before
    for renter in (a, b):
        assert api.balance(renter)["held_halala"] == 0
        assert api.ok("GET", "/api/jobs", headers=renter["headers"])["jobs"] == []


def test_the_same_key_in_several_places_is_one_credential(api: Api):
    """Sending one key twice (header and Bearer, or path and header) is not a conflict."""
    a = api.renter()
    p = api.provider()
    same = {"x-renter-key": a["api_key"], "authorization": f"Bearer {a['api_key']}"}
    assert api.ok("GET", "/api/renters/me", headers=same)["renter_id"] == a["renter_id"]
    jobs = api.ok("GET", f"/api/providers/{p['api_key']}/jobs", headers=p["headers"])
    assert jobs == {"jobs": []}
