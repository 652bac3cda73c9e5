"""From upload to assets a PACS can show: every file URL downloads, validates and says the findings."""

from __future__ import annotations

import io
import shutil
import subprocess
from pathlib import Path

import httpx
import pydicom
import pytest

from qure_ray.dicom.synthetic import chest_dx
from tests.integration.conftest import Deployed

pytestmark = pytest.mark.integration
EXPECTED_TYPES = {
    "sc": "application/dicom",
    "report_dcm": "application/dicom",
    "report_sr": "application/dicom",
    "report_pdf": "application/pdf",
    "sc_full_png": "image/png",
    "sc_thumbnail": "image/png",
}


def test_chest_dx_result_files_download_and_validate(deployed: Deployed, tmp_path: Path) -> None:
    data = chest_dx(seed=800, size=256)
    source = pydicom.dcmread(io.BytesIO(data))
    assert deployed.upload(data).status_code == 200
    result = deployed.wait_final(source.SOPInstanceUID)
    assert result.status_code == 200, result.text
    body = result.json()
    files = body["result"]["files"]
    assert set(EXPECTED_TYPES) | {"original"} == set(files)
    assert set(body["timings"]) >= {"queue", "preprocess", "inference", "outputs"}
    for kind, expected in EXPECTED_TYPES.items():
        response = httpx.get(files[kind][0], timeout=30)
        assert response.status_code == 200, (kind, response.text[:200])
        assert response.headers["content-type"].startswith(expected), (kind, response.headers["content-type"])
        path = tmp_path / f"{kind}.bin"
        path.write_bytes(response.content)
        if expected == "application/dicom":
            checked = subprocess.run(
                [shutil.which("dciodvfy") or "dciodvfy", str(path)], capture_output=True, text=True
            )
            errors = [line for line in (checked.stdout + checked.stderr).splitlines() if line.startswith("Error")]
            assert errors == [], (kind, errors)
            ds = pydicom.dcmread(path)
            assert ds.StudyInstanceUID == source.StudyInstanceUID and ds.SeriesInstanceUID != source.SeriesInstanceUID
        if kind == "report_pdf":
            text = subprocess.run(["pdftotext", str(path), "-"], capture_output=True, text=True).stdout
            assert "NOT FOR CLINICAL USE" in text
            for label, decision in body["result"]["decisions"].items():
                if decision:
                    assert label.replace("_", " ").capitalize() in text
    assert httpx.get(files["original"][0], timeout=30).content == data
