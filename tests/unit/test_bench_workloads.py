"""The bench's ingest counts an upload only when the Store Instances Response says that instance was stored; a head
CT series goes through as a PACS forwards one."""

from __future__ import annotations

import json
from contextlib import AbstractContextManager

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from qure_ray.bench import workloads
from qure_ray.bench.inbox import ResultInbox
from qure_ray.bench.workloads import _stored
from qure_ray.client.webhooks import sign
from qure_ray.dicom.stow import FailedInstance, StoredInstance, store_instances_response
from tests.unit.client_platform import serve

CT = "1.2.840.10008.5.1.4.1.1.2"
STORED = StoredInstance(CT, "1.2.3.1", "http://pacs/studies/1/series/2/instances/1.2.3.1")
OTHER = StoredInstance(CT, "1.2.3.9", "http://pacs/studies/1/series/2/instances/1.2.3.9")
FAILED = FailedInstance(CT, "1.2.3.1", 0xA700)


@pytest.mark.parametrize(
    ("stored", "failed", "counted"),
    [
        ([STORED], [], True),
        ([], [FAILED], False),
        ([STORED], [FAILED], False),
        ([OTHER], [], False),
        ([STORED, OTHER], [], False),
    ],
    ids=["stored", "failed", "stored-and-failed", "another-instance", "two-for-one"],
)
def test_a_response_counts_only_when_it_references_that_instance_alone_and_no_failure(
    stored: list[StoredInstance], failed: list[FailedInstance], counted: bool
) -> None:
    _, body = store_instances_response(stored, failed, study_url=None)
    assert _stored(json.dumps(body), "1.2.3.1") is counted


@pytest.mark.parametrize("response", ["<html>OK</html>", "{}", "null", '"ok"', "[]"])
def test_a_response_that_is_no_store_instances_response_is_not_counted(response: str) -> None:
    assert not _stored(response, "1.2.3.1")


def _peer_answering_200(body: bytes) -> AbstractContextManager[str]:
    """A STOW-RS peer that answers every upload to `/studies` 200 with `body`; yields its base URL."""

    async def store(request: Request) -> Response:
        await request.body()
        return Response(body, media_type="application/dicom+json")

    return serve(Starlette(routes=[Route("/studies", store, methods=["POST"])]))


@pytest.mark.timeout(60)
def test_ingest_refuses_to_count_a_200_that_stored_nothing() -> None:
    failed = json.dumps(store_instances_response([], [FAILED], study_url=None)[1]).encode()
    stored = json.dumps(store_instances_response([STORED], [], study_url=None)[1]).encode()
    with _peer_answering_200(stored) as base_url:
        assert workloads.ingest(f"{base_url}/studies", [("1.2.3.1", b"DICM")], concurrency=1).count == 1
    refused = pytest.raises(RuntimeError, match=r"answered 200, not storing 1\.2\.3\.1")
    with _peer_answering_200(failed) as base_url, refused:
        workloads.ingest(f"{base_url}/studies", [("1.2.3.1", b"DICM")], concurrency=1)


def _series_peer(inbox: ResultInbox, calls: list[str], *, compute_status: int = 200) -> AbstractContextManager[str]:
    """A platform stand-in for head CT series: stores any upload, and on `GET /compute/{series}` (when it answers
    200) announces the series' result to `inbox` as the platform's webhook would; `calls` records the requests."""

    async def store(request: Request) -> Response:
        calls.append(f"POST {request.url.path} {(await request.body()).count(b'Content-Type: application/dicom')}")
        return Response(b"{}", media_type="application/dicom+json")

    async def compute(request: Request) -> Response:
        series = request.path_params["series"]
        calls.append(f"compute {series}")
        if compute_status == 200:
            body = json.dumps({"series_instance_uid": series, "sop_instance_uid": None}).encode()
            assert inbox.receive(body, sign(body, inbox.secret)) == 204
        return Response(b"{}", status_code=compute_status, media_type="application/json")

    async def result(request: Request) -> Response:
        calls.append(f"result {request.path_params['uid']}")
        return Response(b"{}", media_type="application/json")

    return serve(Starlette(routes=[Route("/studies", store, methods=["POST"]),
                                   Route("/compute/{series}", compute), Route("/results/{uid}", result)]))  # fmt: skip


@pytest.mark.timeout(60)
def test_a_series_is_one_upload_then_compute_then_its_result_read_once() -> None:
    series = [("1.2.3.10", [b"DICM"] * 3), ("1.2.3.20", [b"DICM"])]
    calls: list[str] = []
    with ResultInbox("s3cret") as inbox, _series_peer(inbox, calls) as base_url:
        timed = workloads.series_end_to_end(base_url, series, concurrency=1, headers={}, inbox=inbox)
    assert timed.count == 2 and timed.bytes_sent == 16
    assert sorted(calls) == sorted(["POST /studies 3", "compute 1.2.3.10", "result 1.2.3.10",
                                    "POST /studies 1", "compute 1.2.3.20", "result 1.2.3.20"])  # fmt: skip
    refused = pytest.raises(RuntimeError, match="compute answered 404")
    with ResultInbox("s3cret") as inbox, _series_peer(inbox, [], compute_status=404) as base_url, refused:
        workloads.series_end_to_end(base_url, series[:1], concurrency=1, headers={}, inbox=inbox)
