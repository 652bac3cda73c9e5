"""The bench's ingest counts an upload only when the Store Instances Response says that instance was stored."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from qure_ray.bench import workloads
from qure_ray.bench.workloads import _stored
from qure_ray.dicom.stow import FailedInstance, StoredInstance, store_instances_response

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


@contextmanager
def _peer_answering_200(body: bytes) -> Iterator[str]:
    """A STOW-RS peer that reads each upload and answers 200 with `body`."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200)
            self.send_header("Content-Type", "application/dicom+json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/studies"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.timeout(60)
def test_ingest_refuses_to_count_a_200_that_stored_nothing() -> None:
    failed = json.dumps(store_instances_response([], [FAILED], study_url=None)[1]).encode()
    stored = json.dumps(store_instances_response([STORED], [], study_url=None)[1]).encode()
    with _peer_answering_200(stored) as url:
        assert workloads.ingest(url, [("1.2.3.1", b"DICM")], concurrency=1).count == 1
    with _peer_answering_200(failed) as url, pytest.raises(RuntimeError, match=r"answered 200, not storing 1\.2\.3\.1"):
        workloads.ingest(url, [("1.2.3.1", b"DICM")], concurrency=1)
