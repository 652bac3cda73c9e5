"""DICOMweb STOW-RS (with dicomweb-client, a real DICOMweb peer) and the pydicom real-world corpus."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import httpx
import pydicom
import pydicom.data
import pytest
from dicomweb_client.api import DICOMwebClient

from qure_ray.dicom.synthetic import chest_dx
from qure_ray.dicom.validation import FailureReason
from tests.integration.conftest import Deployed

pytestmark = pytest.mark.integration
SHIPPED_TEST_FILES = Path(pydicom.data.__file__).parent / "test_files"  # no download: only what pydicom ships


def read(data: bytes) -> pydicom.Dataset:
    return pydicom.dcmread(io.BytesIO(data))


def client(deployed: Deployed) -> DICOMwebClient:
    return DICOMwebClient(url=deployed.base_url, headers=deployed.headers())


def test_dicomweb_client_stores_and_retrieves(deployed: Deployed) -> None:
    study = "1.2.826.0.1.3680043.10.543.200"
    series = [f"{study}.1", f"{study}.1", f"{study}.2"]
    datasets = [read(chest_dx(seed=200 + i, size=128, study_uid=study, series_uid=s)) for i, s in enumerate(series)]
    response = client(deployed).store_instances(datasets)
    referenced = response.ReferencedSOPSequence
    assert sorted(item.ReferencedSOPInstanceUID for item in referenced) == sorted(ds.SOPInstanceUID for ds in datasets)
    assert "FailedSOPSequence" not in response
    ds = datasets[0]
    retrieved = client(deployed).retrieve_instance(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    assert retrieved.SOPInstanceUID == ds.SOPInstanceUID
    whole = client(deployed).retrieve_study(study)
    assert sorted(d.SOPInstanceUID for d in whole) == sorted(d.SOPInstanceUID for d in datasets)
    first_series = client(deployed).retrieve_series(study, series[0])
    assert sorted(d.SOPInstanceUID for d in first_series) == sorted(d.SOPInstanceUID for d in datasets[:2])
    assert response.RetrieveURL.endswith(f"/studies/{study}")  # dicomweb-client sends Host without the port
    metadata = client(deployed).retrieve_series_metadata(study, series[0])
    assert sorted(item["00080018"]["Value"][0] for item in metadata) == sorted(d.SOPInstanceUID for d in datasets[:2])
    (frame,) = client(deployed).retrieve_instance_frames(
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, frame_numbers=[1]
    )
    assert frame == ds.PixelData  # S3 through the real ingress: the stored frame, byte for byte
    assert deployed.wait_final(ds.SOPInstanceUID).status_code == 200


def stow(deployed: Deployed, parts: list[bytes], *, study: str | None = None) -> httpx.Response:
    boundary = "qure-test-boundary"
    body = b"".join(
        f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + part + b"\r\n" for part in parts
    )
    body += f"--{boundary}--\r\n".encode()
    url = f"{deployed.base_url}/studies" + (f"/{study}" if study else "")
    content_type = f'multipart/related; type="application/dicom"; boundary={boundary}'
    return httpx.post(url, content=body, headers={**deployed.headers(), "Content-Type": content_type}, timeout=120)


def test_stow_statuses_and_failure_reasons(deployed: Deployed) -> None:
    good, other = chest_dx(seed=210, size=64), chest_dx(seed=211, size=64)
    sr = (SHIPPED_TEST_FILES / "test-SR.dcm").read_bytes()
    partial = stow(deployed, [good, sr, b"not dicom at all" * 20])
    assert partial.status_code == 202 and partial.headers["content-type"].startswith("application/dicom+json")
    body = partial.json()
    assert body["00081199"]["Value"][0]["00081155"]["Value"] == [read(good).SOPInstanceUID]
    reasons = [item["00081197"]["Value"][0] for item in body["00081198"]["Value"]]
    assert reasons == [FailureReason.SOP_CLASS_NOT_SUPPORTED, FailureReason.CANNOT_UNDERSTAND]

    mismatch = stow(deployed, [other], study="1.2.3.4.5")
    assert mismatch.status_code == 409
    failed = mismatch.json()["00081198"]["Value"][0]
    assert failed["00081197"]["Value"] == [FailureReason.DATA_SET_DOES_NOT_MATCH_SOP_CLASS]

    matching = stow(deployed, [other], study=str(read(other).StudyInstanceUID))
    assert matching.status_code == 200

    wrong_type = httpx.post(
        f"{deployed.base_url}/studies",
        content=b"x",
        headers={**deployed.headers(), "Content-Type": 'multipart/related; type="application/dicom+xml"; boundary=a'},
    )
    assert wrong_type.status_code == 415
    malformed = httpx.post(
        f"{deployed.base_url}/studies",
        content=b"--a\r\nContent-Type: application/dicom\r\n\r\nunterminated",
        headers={**deployed.headers(), "Content-Type": 'multipart/related; type="application/dicom"; boundary=a'},
    )
    assert malformed.status_code == 400 and "boundary" in malformed.json()["message"]


def test_every_pydicom_test_file_is_stored_decodable_or_refused_with_a_reason(deployed: Deployed) -> None:
    files = sorted(path for path in SHIPPED_TEST_FILES.rglob("*") if path.is_file())
    assert len(files) > 60
    outcomes: dict[str, str] = {}
    for path in files:
        response = deployed.upload(path.read_bytes(), field=path.name)
        assert response.status_code < 500, (path.name, response.text)
        entry = response.json()["messages"][path.name]
        if response.status_code == 200:
            outcomes[path.name] = "stored"
        else:
            assert entry["error"]["code"], path.name
            assert "expected" in entry["message"], (path.name, entry["message"])
            outcomes[path.name] = entry["error"]["code"]
    stored = [name for name, outcome in outcomes.items() if outcome == "stored"]
    assert len(stored) >= 40
    for name in ("JPEG2000.dcm", "SC_rgb_rle_32bit.dcm", "SC_rgb_jpeg.dcm", "JPEGLSNearLossless_08.dcm"):
        if name in outcomes:
            assert outcomes[name] in ("stored", "missing-uid", "duplicate-conflict"), (name, outcomes[name])
    assert outcomes["test-SR.dcm"] in ("sop-class-not-supported", "duplicate-conflict")
    assert outcomes["README.txt"] == "not-dicom"
    assert outcomes["ExplVR_BigEndNoMeta.dcm"] == "no-preamble"
    assert httpx.get(f"{deployed.base_url}/ready", timeout=10).status_code == 200
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert all(read(deployed.store.get(key)) for key in deployed.store.list_keys("dicom/site-a/")[:5])
