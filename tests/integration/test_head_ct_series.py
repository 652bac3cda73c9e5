"""Head CT (use case `qer`): a series is held until GET /compute or its quiet period, then read as one."""

from __future__ import annotations

import io
import time

import httpx
import pydicom
import pytest

from qure_ray.models.phantoms import head_ct_multiframe, head_ct_series
from tests.integration.conftest import OTHER_SOURCE, SERIES_QUIET_PERIOD_S, Deployed
from tests.integration.test_end_to_end import catalog_table

pytestmark = pytest.mark.integration


def uids(slices: list[bytes]) -> tuple[str, str, list[str]]:
    datasets = [pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True) for data in slices]
    return str(datasets[0].StudyInstanceUID), str(datasets[0].SeriesInstanceUID), [ds.SOPInstanceUID for ds in datasets]


def compute(deployed: Deployed, series_uid: str, *, other: bool = False) -> httpx.Response:
    return httpx.get(f"{deployed.base_url}/compute/{series_uid}", headers=deployed.headers(other=other), timeout=30)


def test_compute_starts_a_series_and_its_result_answers_by_series_and_by_slice(deployed: Deployed) -> None:
    slices = head_ct_series(seed=101, findings={"intracranial_haemorrhage", "midline_shift"}, slices=10)
    study, series, sops = uids(slices)
    upload = deployed.upload(*slices)
    assert upload.status_code == 200 and upload.json()["series_instance_uids"] == [series], upload.text

    assert compute(deployed, "1.2.3.999999").status_code == 404
    assert compute(deployed, "not-a-uid").status_code == 400
    deadline = time.monotonic() + 10  # inside the 15 s quiet period; slices answer "processing" until routed
    while (waiting := deployed.result(series)).json().get("status") == "processing" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert waiting.status_code == 202 and "GET /compute" in waiting.json()["message"], waiting.text
    assert compute(deployed, series, other=True).status_code == 404  # another source's series
    started = compute(deployed, series)
    assert started.status_code == 200 and started.json()["series_instance_uid"] == series, started.text
    assert compute(deployed, series).status_code == 304

    response = deployed.wait_final(series, timeout_s=300)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["usecase"] == "qer" and body["series"]["series_instance_uid"] == series
    assert body["series"]["slices_read"] == 10 and set(body["series"]["slice_scores"]) == set(sops)
    labels = set(body["result"]["scores"])
    assert labels == {"intracranial_haemorrhage", "midline_shift"}
    for label in labels:  # the series score is the maximum over its slices
        assert body["result"]["scores"][label] == max(s[label] for s in body["series"]["slice_scores"].values())
    assert body["model"]["trained"] is True and "synthetic phantoms" in body["model"]["trained_on"]
    assert body["result"]["decisions"] == {"intracranial_haemorrhage": True, "midline_shift": True}
    assert body["triage_status"] == "Critical"

    key_slices = body["series"]["key_slices"]
    files = body["result"]["files"]
    assert 1 <= len(key_slices) <= 2 and set(key_slices) <= set(sops)
    assert len(files["sc"]) == len(key_slices) == len(files["original"])
    assert {"report_pdf", "report_dcm", "report_sr", "sc_full_png", "sc_thumbnail"} <= set(files)
    sc = pydicom.dcmread(io.BytesIO(httpx.get(files["sc"][0], timeout=30).content))
    assert sc.StudyInstanceUID == study and sc.SourceImageSequence[0].ReferencedSOPInstanceUID == key_slices[0]
    sr = pydicom.dcmread(io.BytesIO(httpx.get(files["report_sr"][0], timeout=30).content))
    evidence = {
        item.ReferencedSOPInstanceUID
        for study_item in sr.CurrentRequestedProcedureEvidenceSequence
        for series_item in study_item.ReferencedSeriesSequence
        for item in series_item.ReferencedSOPSequence
    }
    assert evidence == set(key_slices) and sr.StudyInstanceUID == study
    pdf = httpx.get(files["report_pdf"][0], timeout=30)
    assert pdf.headers["content-type"] == "application/pdf" and pdf.content.startswith(b"%PDF")

    by_slice = deployed.result(sops[0])
    assert by_slice.status_code == 200 and by_slice.json()["series"] == body["series"], by_slice.text
    events = [row for row in catalog_table(deployed, "events").to_pylist() if row["sop_uid"] == sops[0]]
    assert [row["state"] for row in sorted(events, key=lambda r: r["event_at"])] == [
        "received", "queued", "processing", "held", "done",
    ]  # fmt: skip
    triggers = [row["trigger"] for row in catalog_table(deployed, "series").to_pylist() if row["series_uid"] == series]
    assert triggers == ["compute"]


def test_a_series_sent_as_one_multi_frame_ct_is_read_frame_by_frame(deployed: Deployed) -> None:
    """An enhanced (legacy converted) CT holds the series in one object: it was refused as one multi-frame slice.
    Each frame is now a slice (`SOPInstanceUID/frames/N`), and the key slice's SC names its frame."""
    data = head_ct_multiframe(seed=404, findings={"intracranial_haemorrhage", "midline_shift"}, slices=8)
    study, series, (sop,) = uids([data])
    assert deployed.upload(data).status_code == 200
    assert compute(deployed, series).status_code == 200
    response = deployed.wait_final(series, timeout_s=300)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["series"]["slices_read"] == 8
    assert set(body["series"]["slice_scores"]) == {f"{sop}/frames/{n}" for n in range(1, 9)}
    assert body["result"]["decisions"] == {"intracranial_haemorrhage": True, "midline_shift": True}
    key_slice = body["series"]["key_slices"][0]
    files = body["result"]["files"]
    assert len(files["original"]) == len(files["sc"]) == len(body["series"]["key_slices"])
    sc = pydicom.dcmread(io.BytesIO(httpx.get(files["sc"][0], timeout=30).content))
    (reference,) = sc.SourceImageSequence
    assert sc.StudyInstanceUID == study
    assert f"{reference.ReferencedSOPInstanceUID}/frames/{reference.ReferencedFrameNumber}" == key_slice
    assert deployed.result(sop).json()["series"] == body["series"]  # the object's own UID answers for the series


def test_a_quiet_series_starts_by_itself(deployed: Deployed) -> None:
    slices = head_ct_series(seed=202, findings=set(), slices=6)
    _, series, sops = uids(slices)
    assert deployed.upload(*slices).status_code == 200
    uploaded_at = time.monotonic()
    response = deployed.wait_final(sops[-1], timeout_s=300)
    assert response.status_code == 200, response.text
    assert time.monotonic() - uploaded_at >= SERIES_QUIET_PERIOD_S - 1  # it waited for the quiet period
    body = response.json()
    assert body["series"]["series_instance_uid"] == series and body["series"]["slices_read"] == 6
    assert body["result"]["decisions"] == {"intracranial_haemorrhage": False, "midline_shift": False}
    assert body["triage_status"] == "Routine"
    assert compute(deployed, series).status_code == 304
    triggers = [row["trigger"] for row in catalog_table(deployed, "series").to_pylist() if row["series_uid"] == series]
    assert triggers == ["quiet period"]


def test_a_source_without_head_ct_is_told_so(deployed: Deployed) -> None:
    slices = head_ct_series(seed=303, findings=set(), slices=2)
    _, series, sops = uids(slices)
    assert deployed.upload(*slices, other=True).status_code == 200
    refused = deployed.wait_final_for(sops[0], other=True)
    message = refused.json()["message"]
    assert refused.status_code == 400 and "qer" in message and OTHER_SOURCE in message, refused.text
    assert compute(deployed, series, other=True).status_code == 200
    series_answer = deployed.wait_final_for(series, other=True)
    assert series_answer.status_code == 400 and "not enabled" in series_answer.json()["message"]
