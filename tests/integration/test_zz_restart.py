"""Stopping the whole deployment mid-processing and deploying it again finishes every accepted instance.

Runs after the other integration tests (it restarts the shared deployment).
"""

from __future__ import annotations

import io

import pydicom
import pytest

from qure_ray.dicom.synthetic import chest_dx
from qure_ray.models.phantoms import head_ct_series
from qure_ray.storage.writer_lease import LEASE_KEY
from tests.integration.conftest import Deployed
from tests.integration.services import wait_for, wait_healthy

pytestmark = pytest.mark.integration


def test_restart_mid_processing_finishes_every_accepted_instance(deployed: Deployed) -> None:
    uploads = [chest_dx(seed=100 + i) for i in range(8)]
    sops = [str(pydicom.dcmread(io.BytesIO(data)).SOPInstanceUID) for data in uploads]
    response = deployed.upload(*uploads)
    assert response.status_code == 200 and response.json()["detailed_info"]["created"] == 8
    series = head_ct_series(seed=404, findings=set(), slices=3)  # held, or still queued, when Serve stops
    series_uid = str(pydicom.dcmread(io.BytesIO(series[0])).SeriesInstanceUID)
    assert deployed.upload(*series).status_code == 200

    stopped = deployed.cluster.serve("shutdown")
    assert stopped.returncode == 0, stopped.stderr
    wait_for(deployed.cluster.serve_stopped, timeout_s=300, what="Serve's shutdown")
    assert deployed.store.list_keys(LEASE_KEY) == []  # the catalog actor released its writer lease as it stopped
    redeployed = deployed.cluster.serve("deploy", str(deployed.config_path))
    assert redeployed.returncode == 0, redeployed.stderr
    wait_healthy(deployed.base_url)

    codes = {sop: deployed.wait_final(sop, timeout_s=300).status_code for sop in sops}
    assert codes == dict.fromkeys(sops, 200)
    series_result = deployed.wait_final(series_uid, timeout_s=300)  # started by its quiet period
    assert series_result.status_code == 200 and series_result.json()["series"]["slices_read"] == 3
