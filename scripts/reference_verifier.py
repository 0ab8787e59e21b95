"""Check a `dcp audit export` file with nothing but the Python standard library (docs/audit.md).

python3 reference_verifier.py export.jsonl [HEAD_HASH]
"""

import hashlib
import json
import sys


def netstring(text):
    data = text.encode("utf-8")
    return b"%d:%b," % (len(data), data)


prev_hash, seq, balances = "0" * 64, 0, {}
with open(sys.argv[1], encoding="utf-8") as export:
    for line in export:
        e, seq = json.loads(line), seq + 1
        fields = ["seq", "stream_id", "stream_version", "type", "schema_version", "recorded_at_us"]
        parts = [str(e[f]) for f in fields] + [e["actor"], e["idempotency_key"] or "", e["payload"]]
        digest = hashlib.sha256(bytes.fromhex(prev_hash) + b"".join(map(netstring, parts)))
        if e["seq"] != seq or e["prev_hash"] != prev_hash or e["hash"] != digest.hexdigest():
            sys.exit(f"FAIL at seq {seq}: sequence or hash chain broken")
        postings = json.loads(e["payload"]).get("postings") or []
        if sum(p["amount_halala"] for p in postings) != 0:
            sys.exit(f"FAIL at seq {seq}: postings do not sum to zero")
        for p in postings:
            balances[p["account"]] = balances.get(p["account"], 0) + p["amount_halala"]
        prev_hash = e["hash"]
if len(sys.argv) > 2 and sys.argv[2] != prev_hash:
    sys.exit(f"FAIL: head hash {prev_hash} is not the published {sys.argv[2]}")
print(f"OK {seq} events, head hash {prev_hash}, sum of balances {sum(balances.values())}")
