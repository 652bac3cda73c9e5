"""Upgrades: `serve deploy` of a new config version while work is in flight loses nothing accepted.

Runs late (it redeploys the shared deployment twice: to the new version and back).
"""

from __future__ import annotations

import io
import re
from collections import Counter
from pathlib import Path

import pydicom
import pytest
import yaml

from qure_ray.dicom.synthetic import chest_dx
from tests.integration.conftest import Deployed
from tests.integration.services import wait_healthy
from tests.integration.test_end_to_end import catalog_table

pytestmark = pytest.mark.integration


def new_version(deployed: Deployed, tmp_path: Path) -> Path:
    """The same application with changed settings: the catalog actor, the job manager and the models get new
    replicas."""
    config = yaml.safe_load(deployed.config_path.read_text())
    args = config["applications"][0]["args"]
    args["QURE_MAX_CONCURRENT_JOBS"] = 8
    args["QURE_MODEL_BATCH_WAIT_TIMEOUT_S"] = 0.03
    args["QURE_CATALOG_FLUSH_INTERVAL_S"] = 0.03
    path = tmp_path / "serve_config_v2.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def sop_of(data: bytes) -> str:
    return str(pydicom.dcmread(io.BytesIO(data)).SOPInstanceUID)


def catalog_log_lines(deployed: Deployed) -> list[str]:
    logs = deployed.cluster.temp_dir.rglob("replica_*CatalogActor*.log")
    return [line for path in logs for line in path.read_text(errors="replace").splitlines()]


def test_the_running_catalog_merges_its_segments(deployed: Deployed) -> None:
    """Every group commit writes small segments; the deployed catalog actor merges them while it runs (by now
    the suite has written hundreds: a full tier of 16 similar ones is merged within a minute)."""
    merged = [line for line in catalog_log_lines(deployed) if re.search(r"merged \d+ events segments", line)]
    assert merged, "the catalog actor never merged its events segments"


def test_a_config_update_mid_processing_finishes_every_accepted_instance(deployed: Deployed, tmp_path: Path) -> None:
    before = [chest_dx(seed=700 + i, size=128) for i in range(8)]
    assert deployed.upload(*before[:4]).status_code == 200
    assert deployed.upload(*before[4:]).status_code == 200

    upgraded = deployed.cluster.serve("deploy", str(new_version(deployed, tmp_path)))
    assert upgraded.returncode == 0, upgraded.stderr
    during = [chest_dx(seed=720 + i, size=128) for i in range(4)]
    assert deployed.upload(*during).status_code == 200  # accepted while replicas are replaced

    sops = [sop_of(data) for data in before + during]
    codes = {sop: deployed.wait_final(sop, timeout_s=300).status_code for sop in sops}
    assert codes == dict.fromkeys(sops, 200)
    done = Counter(row["sop_uid"] for row in catalog_table(deployed, "results").to_pylist() if row["state"] == "done")
    # once each: the new job manager starts only after the old one has drained (no second run of its work)
    assert {sop: done[sop] for sop in sops} == dict.fromkeys(sops, 1)

    restored = deployed.cluster.serve("deploy", str(deployed.config_path))  # back to the shared test config
    assert restored.returncode == 0, restored.stderr
    wait_healthy(deployed.base_url)
    after = chest_dx(seed=740, size=128)
    assert deployed.upload(after).status_code == 200
    assert deployed.wait_final(sop_of(after)).status_code == 200
