from __future__ import annotations

import pytest
from starlette.datastructures import Headers

from qure_ray.api.auth import authenticate
from qure_ray.api.ingest import IngestOutcome, qure_reply
from qure_ray.config import TokenTable
from qure_ray.dicom import Rules, read_instance
from qure_ray.dicom.synthetic import chest_dx
from qure_ray.errors import AuthError, ForbiddenError

TOKENS = TokenTable.parse("token-aaaa:site-a,token-bbbb:site-b")


@pytest.mark.parametrize(
    ("headers", "error"),
    [
        ({}, AuthError),
        ({"Authorization": "Basic dXNlcg=="}, AuthError),
        ({"Authorization": "Token nope-nope"}, AuthError),
        ({"Authorization": "Token token-aaaa"}, ForbiddenError),
        ({"Authorization": "Token token-aaaa", "Source": "site-b"}, ForbiddenError),
    ],
)
def test_auth_refusals(headers: dict[str, str], error: type[Exception]) -> None:
    with pytest.raises(error):
        authenticate(Headers(headers), TOKENS)


def test_token_and_bearer_both_work() -> None:
    assert authenticate(Headers({"Authorization": "Token token-aaaa", "Source": "site-a"}), TOKENS) == "site-a"
    assert authenticate(Headers({"authorization": "Bearer token-bbbb", "source": "site-b"}), TOKENS) == "site-b"


def test_qure_reply_counts_and_status() -> None:
    metadata = read_instance(chest_dx(size=32)).metadata
    ok = IngestOutcome("a", True, "stored", metadata)
    dup = IngestOutcome("b", False, "already stored", metadata)
    bad = IngestOutcome("c", False, "no", violation=Rules.NOT_DICOM.value.violation("x"))
    status, body = qure_reply([ok, dup, bad])
    assert status == 200
    assert body["detailed_info"]["created"] == 1 and body["detailed_info"]["already_stored"] == 1
    assert body["series_instance_uids"] == [metadata.series_uid]
    assert body["messages"]["c"]["error"]["code"] == "not-dicom"
    status, body = qure_reply([bad])
    assert status == 400 and body["message"].startswith("no file accepted")
    too_big = IngestOutcome("d", False, "big", violation=Rules.TOO_LARGE.value.violation("x"))
    assert qure_reply([too_big])[0] == 413
