"""Operations: Prometheus metrics scraped from Ray's metrics agent; logs never carry PHI; health and readiness."""

from __future__ import annotations

import io
import json
import re
import time

import httpx
import pydicom
import pytest
from pydicom.dataelem import RawDataElement
from pydicom.tag import Tag

from qure_ray.dicom.synthetic import chest_dx, to_bytes
from tests.integration.conftest import SOURCE, Deployed

pytestmark = pytest.mark.integration
PATIENT_NAME, PATIENT_ID = "Zebulon^Quixotic", "PHI-7731-XYZ"


def scrape(deployed: Deployed) -> str:
    return httpx.get(deployed.cluster.metrics_url, timeout=10).text


def sample(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of metric `name` (as Ray exports it) whose labels include `labels`."""
    total = 0.0
    for match in re.finditer(rf"^ray_{name}\{{([^}}]*)\}} ([0-9.e+-]+)$", text, re.MULTILINE):
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1)))
        if all(found.get(key) == value for key, value in labels.items()):
            total += float(match.group(2))
    return total


def test_metrics_are_scraped_with_their_labels(deployed: Deployed) -> None:
    data = chest_dx(seed=950)
    sop = str(pydicom.dcmread(io.BytesIO(data)).SOPInstanceUID)
    assert deployed.upload(data).status_code == 200
    assert deployed.upload(b"not dicom at all" * 10).status_code == 400
    assert deployed.wait_final(sop).status_code == 200
    expected = {
        "qure_uploads_total": {"source": SOURCE, "outcome": "stored"},
        "qure_upload_bytes_total": {"source": SOURCE, "outcome": "stored"},
        "qure_failures_total": {"stage": "ingest", "reason": "not-dicom"},
        "qure_stage_seconds_count": {"stage": "inference", "usecase": "qxr"},
        "qure_model_batch_size_count": {},
        "qure_model_inference_seconds_count": {},
        "qure_instances": {"state": "done"},
    }
    deadline = time.monotonic() + 90  # Ray's agent exports every few seconds
    while True:
        text = scrape(deployed)
        missing = [name for name, labels in expected.items() if sample(text, name, **labels) <= 0]
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert missing == [], f"not exported (yet): {missing}"
    assert re.search(r"^ray_qure_queue_depth(\{[^}]*\})? ", text, re.MULTILINE)


def test_health_is_liveness_and_ready_checks_every_part(deployed: Deployed) -> None:
    assert httpx.get(f"{deployed.base_url}/health", timeout=10).json() == {"status": "alive"}
    ready = httpx.get(f"{deployed.base_url}/ready", timeout=10)
    assert ready.status_code == 200 and ready.json() == {"status": "ok"}


def test_no_log_line_carries_patient_data(deployed: Deployed) -> None:
    ds = pydicom.dcmread(io.BytesIO(chest_dx(seed=960, patient_name=PATIENT_NAME, patient_id=PATIENT_ID)))
    ds[Tag(0x0010, 0x0030)] = RawDataElement(Tag(0x0010, 0x0030), "DA", 8, b"19xx0231", 0, False, True)  # bad DA
    ds.OtherPatientIDs = f"{PATIENT_ID}-OTHER"
    ds.StudyDescription = f"follow-up of {PATIENT_NAME}"
    good, sop = to_bytes(ds), str(ds.SOPInstanceUID)
    assert deployed.upload(good).status_code == 200
    assert deployed.wait_final(sop).status_code == 200
    ds.SOPInstanceUID = (
        "1.2.3.4.5.6.7.8.9.0.1.2.3.4.5.6.7.8.9.0.1.2.3.4.5.6.7.8.9.0.1.2.3.4.5.6.7.8.9.0.1.2.3.4.5.6.7.8.9"
    )
    assert deployed.upload(to_bytes(ds)).status_code == 400  # refused (UID too long): logged, without PHI
    time.sleep(3)  # log files are flushed asynchronously

    logs = [path for path in deployed.cluster.temp_dir.rglob("*") if path.is_file() and "logs" in path.parts]
    assert logs, "no Ray log files found"
    leaks = []
    for path in logs:
        content = path.read_bytes()
        for secret in (PATIENT_NAME, PATIENT_ID, "Zebulon", "Quixotic", "19xx0231"):
            if secret.encode() in content:
                leaks.append((path.name, secret))
    assert leaks == []
    replica_logs = [path for path in logs if path.name.startswith("replica_") and path.suffix == ".log"]
    lines = [line for path in replica_logs for line in path.read_text(errors="replace").splitlines() if line.strip()]
    structured = [json.loads(line) for line in lines if line.startswith("{")]
    assert structured and len(structured) >= len(lines) * 0.9, "replica logs are not JSON"
    assert any("request_id" in entry for entry in structured)
    finished = f"instance {sop} of {SOURCE}: done"  # qure_ray's own records are in the scanned replica logs
    assert any(finished in entry.get("message", "") for entry in structured), "no job manager record in the logs"
