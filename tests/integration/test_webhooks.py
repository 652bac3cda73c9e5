"""Webhooks: a source registers a callback; each final result is POSTed to it, signed, retried on failure."""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pydicom
import pytest

from qure_ray.client.webhooks import SIGNATURE_HEADER, WebhookSignatureError, verify_signature
from qure_ray.dicom.synthetic import chest_dx
from tests.integration.conftest import Deployed
from tests.integration.test_end_to_end import catalog_table

pytestmark = pytest.mark.integration
SECRET = "webhook-test-secret-0123456789"


@dataclass
class Receiver:
    """A partner's HTTP endpoint on loopback: fails the first `failures` calls with 500, then answers 204."""

    url: str = ""
    failures: int = 1
    calls: list[tuple[dict[str, str], bytes, int]] = field(default_factory=list)

    def wait_for(self, count: int, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.calls) < count:
            assert time.monotonic() < deadline, f"{len(self.calls)} of {count} webhook calls after {timeout_s}s"
            time.sleep(0.2)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            status = 500 if len(state.calls) < state.failures else 204
            state.calls.append(({k.lower(): v for k, v in self.headers.items()}, body, status))
            self.send_response(status)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/qure-hook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()


def test_a_final_result_is_posted_signed_and_retried(deployed: Deployed, receiver: Receiver) -> None:
    hooks = f"{deployed.base_url}/webhooks"
    headers = deployed.headers(other=True)
    assert httpx.put(hooks, json={"url": "ftp://example.org"}, headers=headers).status_code == 400
    assert httpx.put(hooks, content=b"not json", headers=headers).status_code == 400
    metadata = httpx.put(hooks, json={"url": "http://169.254.169.254/latest/meta-data/"}, headers=headers)
    assert metadata.status_code == 400 and "QURE_WEBHOOK_ALLOWED_NETWORKS" in metadata.text, metadata.text
    registered = httpx.put(hooks, json={"url": receiver.url, "secret": SECRET}, headers=headers)
    assert registered.status_code == 200 and registered.json()["secret"] == SECRET, registered.text
    stored = [row["secret"] for row in catalog_table(deployed, "webhooks").to_pylist() if row["url"] == receiver.url]
    assert stored and all(value.startswith("sealed:v1:") and SECRET not in value for value in stored), stored
    assert httpx.get(hooks, headers=headers).json() == {"url": receiver.url}
    assert httpx.get(hooks, headers=deployed.headers()).status_code == 404  # site-a has none

    data = chest_dx(seed=901, patient_name="Doe^Jane", patient_id="MRN-901")
    sop = str(pydicom.dcmread(io.BytesIO(data)).SOPInstanceUID)
    assert deployed.upload(data, other=True).status_code == 200
    assert deployed.wait_final_for(sop, other=True).status_code == 200
    receiver.wait_for(2)  # the first answer was 500: retried

    (_, first_body, first_status), (hook_headers, body, status) = receiver.calls[:2]
    assert (first_status, status) == (500, 204) and first_body == body
    verify_signature(body, hook_headers[SIGNATURE_HEADER.lower()], SECRET)
    with pytest.raises(WebhookSignatureError):
        verify_signature(body + b" ", hook_headers[SIGNATURE_HEADER.lower()], SECRET)
    payload = json.loads(body)
    assert payload["event"] == "result.final" and payload["sop_instance_uid"] == sop
    assert payload["status"] == "done" and payload["result_url"].endswith(f"/results/{sop}")
    assert b"Doe" not in body and b"MRN-901" not in body

    deadline = time.monotonic() + 30
    while True:  # the attempts are recorded in the catalog
        outcomes = [
            (row["attempt"], row["outcome"])
            for row in catalog_table(deployed, "webhook_deliveries").to_pylist()
            if row["uid"] == sop
        ]
        if len(outcomes) == 2 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert sorted(outcomes) == [(1, "retrying"), (2, "delivered")]

    assert httpx.delete(hooks, headers=headers).status_code == 200
    assert httpx.get(hooks, headers=headers).status_code == 404
