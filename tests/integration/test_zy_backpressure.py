"""When the queue is over its depth, uploads get 503 with Retry-After and nothing of them is stored."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor

import httpx
import pydicom
import pytest

from qure_ray.dicom.synthetic import chest_dx
from tests.integration.conftest import SOURCE, Deployed

pytestmark = pytest.mark.integration


def test_full_queue_answers_503_with_retry_after_and_stores_nothing(deployed: Deployed) -> None:
    batches = [[chest_dx(seed=1000 + 40 * b + i, size=64) for i in range(30)] for b in range(4)]
    refused: httpx.Response | None = None
    probe = b""
    with ThreadPoolExecutor(max_workers=len(batches)) as pool:
        floods = [pool.submit(deployed.upload, *batch) for batch in batches]
        for attempt in range(400):  # probe while the flood fills the queue faster than models drain it
            probe = chest_dx(seed=2000 + attempt, size=64)
            response = deployed.upload(probe, wait_when_busy=False)
            if response.status_code == 503:
                refused = response
                break
        assert all(flood.result().status_code == 200 for flood in floods)
    assert refused is not None, "the queue never passed QURE_MAX_QUEUE_DEPTH during the flood"
    assert int(refused.headers["Retry-After"]) > 0 and "queue" in refused.json()["message"]
    study = pydicom.dcmread(io.BytesIO(probe)).StudyInstanceUID
    assert deployed.store.list_keys(f"dicom/{SOURCE}/{study}/") == []
    assert deployed.upload(probe).status_code == 200  # honouring Retry-After, it is accepted once drained
