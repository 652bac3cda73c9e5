"""When the queue is over its depth, uploads get 503 with Retry-After and nothing is stored."""

from __future__ import annotations

import io
import time

import pydicom
import pytest

from qure_ray.dicom.synthetic import chest_dx
from tests.integration.conftest import MAX_QUEUE_DEPTH, SOURCE, Deployed

pytestmark = pytest.mark.integration


def test_full_queue_answers_503_with_retry_after_and_stores_nothing(deployed: Deployed) -> None:
    in_flight = 16  # QURE_MAX_CONCURRENT_JOBS: taken off the queue by the job manager at once
    flood = [chest_dx(seed=300 + i, size=64) for i in range(MAX_QUEUE_DEPTH + in_flight + 20)]
    assert deployed.upload(*flood).status_code == 200
    time.sleep(0.6)  # ingress caches the queue depth for 0.5 s
    extra = chest_dx(seed=399, size=64)
    ds = pydicom.dcmread(io.BytesIO(extra))
    refused = deployed.upload(extra, wait_when_busy=False)
    assert refused.status_code == 503, refused.text
    assert int(refused.headers["Retry-After"]) > 0 and "queue" in refused.json()["message"]
    assert deployed.s3_keys(f"dicom/{SOURCE}/{ds.StudyInstanceUID}/") == []
    accepted_later = deployed.upload(extra)  # waits as Retry-After says, until the queue drains
    assert accepted_later.status_code == 200
