"""Schemathesis hooks for `cargo xtask test`'s edge check.

Every schema-valid Idempotency-Key is replaced by a fresh one, so that two generated
requests never share a key by chance: a key sent again with another body is refused
with 422 (idempotency-key-reused), as the contract says, which would hide what the
request itself gets. Keys the schema refuses are left alone (the negative checks send
them and expect 400).
"""

import json
import pathlib
import re
import uuid

import schemathesis

# The header's pattern, read from the document the server serves (docs/openapi.json is
# held equal to it by the server's tests), not copied here.
_DOC = json.loads((pathlib.Path(__file__).resolve().parents[2] / "docs" / "openapi.json").read_text())
KEY = re.compile(
    next(
        p["schema"]["pattern"]
        for op in _DOC["paths"]["/orders"].values()
        for p in op.get("parameters", [])
        if p["name"] == "Idempotency-Key"
    )
)


@schemathesis.hook
def before_call(ctx, case, kwargs):
    # Every phase's requests pass here (the coverage phase's too, which map hooks miss).
    headers = case.headers
    if headers is not None and KEY.match(headers.get("Idempotency-Key", "")):
        headers["Idempotency-Key"] = f"st-{uuid.uuid4()}"
