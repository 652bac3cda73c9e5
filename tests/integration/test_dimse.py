"""A modality sends with DIMSE C-STORE (dcmtk's storescu) straight into qure_ray's SCP."""

from __future__ import annotations

import io
import shutil
import subprocess
from pathlib import Path

import pydicom
import pydicom.data
import pytest

from qure_ray.dicom.synthetic import chest_dx
from tests.integration.conftest import DIMSE_CALLING_AE, SOURCE, Deployed

pytestmark = pytest.mark.integration
STORESCU = shutil.which("storescu")


def storescu(deployed: Deployed, calling_ae: str, *files: Path) -> subprocess.CompletedProcess[str]:
    assert STORESCU, "dcmtk's storescu is missing: .ci/run installs dcmtk"
    command = [STORESCU, "-v", "-aet", calling_ae, "-aec", "QURE_RAY", "127.0.0.1", str(deployed.dimse_port)]
    return subprocess.run([*command, *map(str, files)], capture_output=True, text=True, timeout=120, check=False)


def test_storescu_sends_a_chest_dx_that_reaches_a_result(deployed: Deployed, tmp_path: Path) -> None:
    data = chest_dx(seed=500, size=128)
    path = tmp_path / "chest.dcm"
    path.write_bytes(data)
    ds = pydicom.dcmread(io.BytesIO(data))
    sent = storescu(deployed, DIMSE_CALLING_AE, path)
    assert sent.returncode == 0, sent.stdout + sent.stderr
    assert deployed.wait_final(ds.SOPInstanceUID).status_code == 200
    stored = deployed.store.get(f"dicom/{SOURCE}/{ds.StudyInstanceUID}/{ds.SeriesInstanceUID}/{ds.SOPInstanceUID}.dcm")
    assert pydicom.dcmread(io.BytesIO(stored)).SOPInstanceUID == ds.SOPInstanceUID


def test_unknown_calling_ae_is_refused_and_nothing_is_stored(deployed: Deployed, tmp_path: Path) -> None:
    data = chest_dx(seed=501, size=64)
    path = tmp_path / "chest.dcm"
    path.write_bytes(data)
    sent = storescu(deployed, "INTRUDER", path)
    assert sent.returncode != 0
    assert "Association Rejected" in sent.stdout + sent.stderr
    study = pydicom.dcmread(io.BytesIO(data)).StudyInstanceUID
    assert deployed.store.list_keys(f"dicom/{SOURCE}/{study}/") == []


def test_refused_instance_gets_the_rule_as_c_store_status(deployed: Deployed) -> None:
    sr = Path(pydicom.data.__file__).parent / "test_files" / "test-SR.dcm"
    sent = storescu(deployed, DIMSE_CALLING_AE, sr)
    output = sent.stdout + sent.stderr
    assert "Refused: SOPClassNotSupported" in output or "0x0122" in output, output
