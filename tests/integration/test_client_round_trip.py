"""The partner's round trip with a real PACS (Orthanc): images reach qure_ray, results come back into the study.

(a) Orthanc pushes a study by DICOMweb; `QureClient` waits, downloads and forwards SC, SR and the
    Encapsulated PDF back by STOW-RS. (b) A modality (dcmtk's storescu) sends to the on-site gateway, which
    uploads, waits and forwards; a gateway stopped after receipt is finished by the next one, exactly once.
(c) `qure-ray upload DIR --wait --download OUT --forward URL --json` does the same from the command line.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pydicom
import pytest
from pydicom.uid import Comprehensive3DSRStorage, EncapsulatedPDFStorage, SecondaryCaptureImageStorage, generate_uid

from qure_ray.client import PACS_KINDS, QureClient, ResultStatus, commands
from qure_ray.client.forward import DicomWebDestination, DimseDestination
from qure_ray.client.gateway import Gateway
from qure_ray.client.spool import SpoolState
from qure_ray.dicom.synthetic import chest_dx
from tests.integration.conftest import SOURCE, TOKEN, Deployed
from tests.integration.services import OrthancServer, orthanc

pytestmark = pytest.mark.integration
OUTPUT_CLASSES = [SecondaryCaptureImageStorage, Comprehensive3DSRStorage, EncapsulatedPDFStorage]
GATEWAY_AE = "QURE_GATEWAY"
WAIT_S = 300.0


@pytest.fixture(scope="module")
def pacs(deployed: Deployed, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancServer]:
    peers = {"qure": {"Url": f"{deployed.base_url}/", "HttpHeaders": deployed.headers()}}
    with orthanc(tmp_path_factory.mktemp("orthanc-round-trip"), peers=peers) as server:
        yield server


@pytest.fixture
def client(deployed: Deployed) -> Iterator[QureClient]:
    with QureClient(deployed.base_url, TOKEN, SOURCE) as qure:
        yield qure


def sop_of(data: bytes) -> str:
    return str(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).SOPInstanceUID)


def study_in_pacs(pacs: OrthancServer, study_uid: str) -> dict[str, str]:
    """SOPInstanceUID → SOPClassUID of every instance Orthanc holds in the study (QIDO-RS)."""
    response = httpx.get(f"{pacs.base_url}/dicom-web/studies/{study_uid}/instances", timeout=30)
    if response.status_code == 204 or not response.content.strip():
        return {}
    response.raise_for_status()
    return {item["00080018"]["Value"][0]: item["00080016"]["Value"][0] for item in response.json()}


def outputs_in(held: dict[str, str]) -> list[str]:
    return sorted(sop_class for sop_class in held.values() if sop_class in OUTPUT_CLASSES)


def test_a_study_pushed_from_orthanc_gets_its_results_back_in_the_same_study(
    deployed: Deployed, pacs: OrthancServer, client: QureClient, tmp_path: Path
) -> None:
    study = generate_uid()
    instances = [chest_dx(seed=1300 + i, size=128, study_uid=study) for i in range(2)]
    orthanc_studies = {pacs.upload(data)["ParentStudy"] for data in instances}
    pushed = httpx.post(
        f"{pacs.base_url}/dicom-web/servers/qure/stow", json={"Resources": list(orthanc_studies)}, timeout=120
    )
    assert pushed.status_code == 200, pushed.text

    forwarded: list[str] = []
    for data in instances:
        result = client.wait(sop_of(data), timeout_s=WAIT_S)
        assert result.status is ResultStatus.DONE, result.message
        assets = client.download(result, tmp_path / result.uid, kinds=[*PACS_KINDS, "report_pdf"])
        assert set(assets) == {*PACS_KINDS, "report_pdf"}
        assert assets["report_pdf"][0].read_bytes().startswith(b"%PDF-")
        forwarded += client.forward(
            [path for kind in PACS_KINDS for path in assets[kind]], f"{pacs.base_url}/dicom-web"
        )

    held = study_in_pacs(pacs, study)
    assert set(forwarded) <= set(held) and {sop_of(data) for data in instances} <= set(held)
    assert outputs_in(held) == sorted(OUTPUT_CLASSES * 2)  # QIDO within the study: the outputs are in it


def storescu(port: int, *files: Path) -> None:
    binary = shutil.which("storescu")
    assert binary, "dcmtk's storescu is missing: run scripts/install-test-peers"
    sent = subprocess.run(
        [binary, "-aet", "MODALITY1", "-aec", GATEWAY_AE, "127.0.0.1", str(port), *map(str, files)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert sent.returncode == 0, sent.stdout + sent.stderr


def gateway_for(client: QureClient, pacs: OrthancServer, spool: Path, *, start_worker: bool = True) -> Gateway:
    return Gateway(
        listen=DimseDestination(ae_title=GATEWAY_AE, host="127.0.0.1", port=0),
        spool_dir=spool,
        destination=DicomWebDestination(f"{pacs.base_url}/dicom-web"),
        client=client,
        calling_aes=["MODALITY1"],
        poll_interval_s=0.5,
        start_worker=start_worker,
    )


def modality_files(folder: Path, study: str, seeds: range) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for seed in seeds:
        path = folder / f"{seed}.dcm"
        path.write_bytes(chest_dx(seed=seed, size=128, study_uid=study))
        paths.append(path)
    return paths


def test_the_gateway_takes_c_store_and_puts_results_into_the_pacs(
    deployed: Deployed, pacs: OrthancServer, client: QureClient, tmp_path: Path
) -> None:
    study = generate_uid()
    files = modality_files(tmp_path / "modality", study, range(1400, 1402))
    with gateway_for(client, pacs, tmp_path / "spool") as gateway:
        storescu(gateway.port, *files)
        assert gateway.wait_idle(timeout_s=WAIT_S), "the gateway did not finish"
        assert gateway.spool.count(SpoolState.DONE) == 2 and gateway.spool.count(SpoolState.FAILED) == 0
    assert outputs_in(study_in_pacs(pacs, study)) == sorted(OUTPUT_CLASSES * 2)


def test_a_gateway_stopped_after_receipt_is_finished_by_the_next_exactly_once(
    deployed: Deployed, pacs: OrthancServer, client: QureClient, tmp_path: Path
) -> None:
    study = generate_uid()
    files = modality_files(tmp_path / "modality", study, range(1500, 1503))
    spool = tmp_path / "spool"
    with gateway_for(client, pacs, spool, start_worker=False) as receiver:
        storescu(receiver.port, *files)  # answered success: on disk, nothing uploaded yet
        assert receiver.spool.count(SpoolState.INCOMING) == 3
    assert study_in_pacs(pacs, study) == {}

    with gateway_for(client, pacs, spool) as restarted:
        assert restarted.wait_idle(timeout_s=WAIT_S), "the restarted gateway did not finish"
    done = [json.loads(item.path.read_text()) for item in restarted.spool.items(SpoolState.DONE)]
    assert sorted(record["sop_uid"] for record in done) == sorted(sop_of(p.read_bytes()) for p in files)
    assert Counter(record["status"] for record in done) == Counter({"done": 3})
    assert len(list((spool / "forwarded").iterdir())) == 3  # one delivery per result
    assert outputs_in(study_in_pacs(pacs, study)) == sorted(OUTPUT_CLASSES * 3)
    originals = deployed.store.list_keys(f"dicom/{SOURCE}/{study}/")
    assert len(originals) == 3


def test_the_cli_uploads_a_folder_waits_downloads_and_forwards(
    deployed: Deployed, pacs: OrthancServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    study = generate_uid()
    folder = tmp_path / "study"
    modality_files(folder, study, range(1600, 1602))
    (folder / "README.txt").write_text("not DICOM: skipped")
    out = tmp_path / "out"
    status = commands.main(
        [
            "upload", str(folder), "--wait", "--download", str(out), "--forward", f"{pacs.base_url}/dicom-web",
            "--json", "--timeout", str(WAIT_S), "--url", deployed.base_url, "--token", TOKEN, "--source", SOURCE,
        ]
    )  # fmt: skip
    captured = capsys.readouterr()
    assert status == 0, captured.err
    document = json.loads(captured.out)
    assert document["ok"] and len(document["uploaded"]) == 2 and len(document["skipped"]) == 1
    for row in document["results"]:
        assert row["status"] == "done" and len(row["forwarded"]) == 3
        for kind in (*PACS_KINDS, "report_pdf", "sc_full_png", "original"):
            (path,) = row["downloaded"][kind]
            assert Path(path).parent == out / row["uid"] and Path(path).stat().st_size > 0
    assert outputs_in(study_in_pacs(pacs, study)) == sorted(OUTPUT_CLASSES * 2)
