"""Upload → queue → job manager → model replica → result, over real HTTP, Ray Serve and S3."""

from __future__ import annotations

import io
import warnings

import httpx
import pyarrow as pa
import pydicom
import pytest

from qure_ray.dicom.synthetic import chest_dx, to_bytes
from qure_ray.storage.segment_reading import read_live_segments
from tests.integration.conftest import SOURCE, Deployed

pytestmark = pytest.mark.integration


def uid_of(data: bytes) -> tuple[str, str, str]:
    ds = pydicom.dcmread(io.BytesIO(data))
    return str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)


def catalog_table(deployed: Deployed, table: str) -> pa.Table:
    """A table's rows as the store holds them, read the way the catalog loads them: the running catalog merges
    segments, and one listed here may be merged away before it is read."""
    _, rows = read_live_segments(deployed.store, table)
    assert rows is not None, f"no Parquet segment of {table} in S3"
    return rows


def test_chest_dx_upload_reaches_a_result_and_is_stored_in_s3(deployed: Deployed) -> None:
    data = chest_dx(seed=1)
    study, series, sop = uid_of(data)
    response = deployed.upload(data)
    assert response.status_code == 200, response.text
    body = response.json()
    entry = body["messages"]["file"]
    assert entry["created"] is True
    assert entry["metadata"]["SOPInstanceUID"] == sop
    assert entry["metadata"]["Modality"] == "DX" and entry["metadata"]["BodyPartExamined"] == "CHEST"
    assert body["series_instance_uids"] == [series]

    result = deployed.wait_final(sop)
    assert result.status_code == 200, result.text
    payload = result.json()
    assert payload["usecase"] == "qxr"
    assert payload["model"]["name"] == "qxr-densenet" and payload["model"]["trained"] is True
    assert payload["model"]["trained_on"] == "synthetic phantoms — demonstration only"
    assert set(payload["result"]["scores"]) == set(payload["result"]["decisions"])
    assert set(payload["result"]["scores"]) == {
        "nodule", "consolidation", "pleural_effusion", "cardiomegaly", "pneumothorax",
    }  # fmt: skip
    assert payload["triage_status"] == ("Critical" if any(payload["result"]["decisions"].values()) else "Routine")

    key = f"dicom/{SOURCE}/{study}/{series}/{sop}.dcm"
    assert deployed.store.get(key) == data
    instances = catalog_table(deployed, "instances").to_pylist()
    assert [row["object_key"] for row in instances if row["sop_uid"] == sop] == [key]
    events = [row["state"] for row in catalog_table(deployed, "events").to_pylist() if row["sop_uid"] == sop]
    assert events == ["received", "queued", "processing", "done"]
    results = [row for row in catalog_table(deployed, "results").to_pylist() if row["sop_uid"] == sop]
    assert len(results) == 1 and results[0]["state"] == "done" and results[0]["model_trained"] is True


def test_upload_with_application_dicom_body_and_idempotent_reupload(deployed: Deployed) -> None:
    data = chest_dx(seed=2)
    _, _, sop = uid_of(data)
    response = httpx.post(
        f"{deployed.base_url}/upload",
        content=data,
        headers={**deployed.headers(), "Content-Type": "application/dicom"},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    assert response.json()["messages"]["file"]["created"] is True
    assert deployed.wait_final(sop).status_code == 200

    again = deployed.upload(data)
    assert again.status_code == 200
    assert again.json()["messages"]["file"]["created"] is False
    results = [row for row in catalog_table(deployed, "results").to_pylist() if row["sop_uid"] == sop]
    assert len(results) == 1, "a re-upload of the same content must not be processed again"


def test_auth_and_tenant_isolation(deployed: Deployed) -> None:
    data = chest_dx(seed=3)
    _, _, sop = uid_of(data)
    url = f"{deployed.base_url}/studies"
    files = {"file": ("a.dcm", data, "application/dicom")}
    assert httpx.post(url, files=files).status_code == 401
    assert httpx.post(url, files=files, headers={"Authorization": "Token wrong-token-x"}).status_code == 401
    no_source = httpx.post(url, files=files, headers={"Authorization": deployed.headers()["Authorization"]})
    assert no_source.status_code == 403 and "Source" in no_source.json()["message"]
    wrong_source = httpx.post(url, files=files, headers={**deployed.headers(), "Source": "site-b"})
    assert wrong_source.status_code == 403
    assert deployed.upload(data).status_code == 200
    other = deployed.result(sop, other=True)
    assert other.status_code == 404 and sop not in other.text.replace(f"SOPInstanceUID {sop}", "")
    assert deployed.result("1.2.3.999999").status_code == 404


def _without(data: bytes, keyword: str) -> bytes:
    ds = pydicom.dcmread(io.BytesIO(data))
    delattr(ds, keyword)
    return to_bytes(ds)


def _with(data: bytes, keyword: str, value: object) -> bytes:
    ds = pydicom.dcmread(io.BytesIO(data))
    with warnings.catch_warnings():  # pydicom warns about the invalid values these tests want
        warnings.simplefilter("ignore")
        setattr(ds, keyword, value)
        if keyword == "SOPInstanceUID":
            ds.file_meta.MediaStorageSOPInstanceUID = value
        return to_bytes(ds)


def test_bad_inputs_get_a_4xx_naming_the_problem_and_nothing_is_stored(deployed: Deployed) -> None:
    good = chest_dx(seed=4)
    study, _, _ = uid_of(good)
    cases = {
        "not-dicom": (b"this is not a DICOM file" * 10, "DICM"),
        "missing-uid": (_without(good, "SeriesInstanceUID"), "SeriesInstanceUID"),
        "malformed-uid": (_with(good, "SOPInstanceUID", "1.2.abc"), "SOPInstanceUID"),
        "no-pixel-data": (_without(good, "PixelData"), "Pixel Data"),
        "pixel-data-short": (_with(good, "PixelData", b"\x00" * 1000), "needs"),
    }
    for code, (data, mentioned) in cases.items():
        response = deployed.upload(data)
        assert response.status_code == 400, (code, response.text)
        body = response.json()
        assert body["messages"]["file"]["error"]["code"] == code
        assert mentioned in body["message"], (code, body["message"])
    assert deployed.store.list_keys(f"dicom/{SOURCE}/{study}/") == []
    assert httpx.get(f"{deployed.base_url}/ready", timeout=10).status_code == 200

    mixed = deployed.upload(good, b"garbage" * 50)
    assert mixed.status_code == 200
    detail = mixed.json()["detailed_info"]
    assert detail["accepted"] == 1 and [r["code"] for r in detail["refused"]] == ["not-dicom"]


def test_wrong_media_type_and_oversized_request(deployed: Deployed) -> None:
    response = httpx.post(
        f"{deployed.base_url}/studies",
        content=b"{}",
        headers={**deployed.headers(), "Content-Type": "application/json"},
    )
    assert response.status_code == 415 and "multipart/form-data" in response.json()["message"]
    big = b"\x00" * (9 * 1024 * 1024)
    response = httpx.post(
        f"{deployed.base_url}/upload",
        content=big,
        headers={**deployed.headers(), "Content-Type": "application/dicom"},
        timeout=60,
    )
    assert response.status_code == 413 and "limit" in response.json()["message"]


def test_image_without_a_use_case_gets_400_with_the_reason(deployed: Deployed) -> None:
    data = chest_dx(seed=5, modality="CT", body_part="ABDOMEN", view_position="")
    _, _, sop = uid_of(data)
    assert deployed.upload(data).status_code == 200
    result = deployed.wait_final(sop)
    assert result.status_code == 400
    assert "no use case" in result.json()["message"] and "ABDOMEN" in result.json()["message"]
    events = sorted(
        (row["event_at"], row["state"])
        for row in catalog_table(deployed, "events").to_pylist()
        if row["sop_uid"] == sop
    )
    assert [state for _, state in events] == ["received", "unsupported"]  # settled at ingest, never queued


def test_same_uid_new_content_is_refused_or_overwritten_by_source_policy(deployed: Deployed) -> None:
    sop = "1.2.826.0.1.3680043.10.999.1"
    first, second = chest_dx(seed=20, size=64, sop_uid=sop), chest_dx(seed=21, size=64, sop_uid=sop)
    assert deployed.upload(first).status_code == 200
    conflict = deployed.upload(second)
    assert conflict.status_code == 409
    assert conflict.json()["messages"]["file"]["error"]["code"] == "duplicate-conflict"

    assert deployed.upload(first, other=True).status_code == 200  # site-b may overwrite (QURE_OVERWRITE_SOURCES)
    assert deployed.wait_final_for(sop, other=True).status_code == 200
    overwritten = deployed.upload(second, other=True)
    assert overwritten.status_code == 200 and overwritten.json()["messages"]["file"]["created"] is True
    assert deployed.wait_final_for(sop, other=True).status_code == 200
    log = [
        (row["source"], row["outcome"])
        for row in catalog_table(deployed, "ingest_log").to_pylist()
        if row["sop_uid"] == sop
    ]
    assert ("site-a", "conflict") in log and ("site-b", "overwritten") in log
    results = [
        row
        for row in catalog_table(deployed, "results").to_pylist()
        if row["sop_uid"] == sop and row["source"] == "site-b"
    ]
    assert len(results) == 2


def test_zip_upload_of_dicom_files(deployed: Deployed) -> None:
    import zipfile

    members = {f"study/{i}.dcm": chest_dx(seed=700 + i, size=64) for i in range(3)}
    members["study/readme.txt"] = b"not an image"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    response = httpx.post(
        f"{deployed.base_url}/upload",
        content=buffer.getvalue(),
        headers={**deployed.headers(), "Content-Type": "application/zip"},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["detailed_info"]["created"] == 3
    assert [r["field"] for r in body["detailed_info"]["refused"]] == ["study/readme.txt"]
    sop = uid_of(members["study/0.dcm"])[2]
    assert deployed.wait_final(sop).status_code == 200


def test_lateral_chest_view_is_unusable_with_206_and_the_reason(deployed: Deployed) -> None:
    data = chest_dx(seed=30, size=128, view_position="LL")
    _, _, sop = uid_of(data)
    assert deployed.upload(data).status_code == 200
    result = deployed.wait_final(sop)
    assert result.status_code == 206, result.text
    body = result.json()
    assert "lateral" in body["message"]
    files = body["result"]["files"]
    assert "report_sr" not in files and {"sc", "report_pdf", "original"} <= set(files)
    assert httpx.get(files["report_pdf"][0], timeout=30).content.startswith(b"%PDF")
