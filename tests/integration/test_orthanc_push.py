"""A real PACS (Orthanc) pushes a study to qure_ray with its DICOMweb plugin (STOW-RS client)."""

from __future__ import annotations

import io
from collections.abc import Iterator

import httpx
import pydicom
import pytest

from qure_ray.dicom.synthetic import chest_dx
from tests.integration.conftest import SOURCE, Deployed
from tests.integration.services import OrthancServer, orthanc

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pacs(deployed: Deployed, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancServer]:
    peers = {"qure": {"Url": f"{deployed.base_url}/", "HttpHeaders": deployed.headers()}}
    with orthanc(tmp_path_factory.mktemp("orthanc"), peers=peers) as server:
        yield server


def test_orthanc_pushes_a_study_over_dicomweb(deployed: Deployed, pacs: OrthancServer) -> None:
    study_uid = "1.2.826.0.1.3680043.10.999.77"
    instances = [chest_dx(seed=600 + i, size=128, study_uid=study_uid) for i in range(2)]
    study_ids = {pacs.upload(data)["ParentStudy"] for data in instances}
    assert len(study_ids) == 1
    pushed = httpx.post(
        f"{pacs.base_url}/dicom-web/servers/qure/stow", json={"Resources": list(study_ids)}, timeout=120
    )
    assert pushed.status_code == 200, pushed.text
    for data in instances:
        ds = pydicom.dcmread(io.BytesIO(data))
        assert deployed.wait_final(ds.SOPInstanceUID).status_code == 200
        key = f"dicom/{SOURCE}/{study_uid}/{ds.SeriesInstanceUID}/{ds.SOPInstanceUID}.dcm"
        assert pydicom.dcmread(io.BytesIO(deployed.store.get(key))).SOPInstanceUID == ds.SOPInstanceUID
