"""Forwarding to a PACS: C-STORE to a real pynetdicom SCP, STOW-RS to the real qure_ray app; destination parsing."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import Comprehensive3DSRStorage, EncapsulatedPDFStorage, SecondaryCaptureImageStorage

from qure_ray.client import (
    AsyncQureClient,
    ClientConfigError,
    DicomWebDestination,
    DimseDestination,
    ForwardError,
    QureClient,
)
from qure_ray.client.forward import forward_dimse, parse_destination
from qure_ray.dicom.synthetic import DX_FOR_PRESENTATION, chest_dx
from tests.unit.client_platform import SOURCE, TOKEN, output_instance, running_platform, storage_scp

STUDY = "1.2.826.0.1.3680043.10.999.900"


def assets(folder: Path) -> list[Path]:
    """An SC, an SR and an Encapsulated PDF of one study, plus a PNG that must not be sent."""
    folder.mkdir(parents=True, exist_ok=True)
    made = {
        "sc.dcm": output_instance(SecondaryCaptureImageStorage, STUDY),
        "report_sr.dcm": output_instance(Comprehensive3DSRStorage, STUDY),
        "report_pdf.dcm": output_instance(EncapsulatedPDFStorage, STUDY, pdf=True),
        "sc_full.png": b"\x89PNG\r\n\x1a\n",
    }
    for name, data in made.items():
        (folder / name).write_bytes(data)
    return [folder / name for name in made]


def sop(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("http://pacs:8042/dicom-web/", DicomWebDestination("http://pacs:8042/dicom-web")),
        ("PACS@10.0.0.5:104", DimseDestination(ae_title="PACS", host="10.0.0.5", port=104)),
        (
            "PACS@pacs.local:11112?calling=GATEWAY",
            DimseDestination(ae_title="PACS", host="pacs.local", port=11112, calling_ae="GATEWAY"),
        ),
        ("PACS@4242", DimseDestination(ae_title="PACS", host="127.0.0.1", port=4242)),
    ],
)
def test_destinations_parse(text: str, expected: object) -> None:
    assert parse_destination(text) == expected


@pytest.mark.parametrize("text", ["pacs:104", "PACS@host", "PACS@host:99999", "A_TITLE_LONGER_THAN_16@h:1", "http://"])
def test_bad_destinations_say_how_to_write_one(text: str) -> None:
    with pytest.raises(ClientConfigError):
        parse_destination(text)


def test_c_store_sends_the_dicom_assets_to_a_pacs(tmp_path: Path) -> None:
    files = assets(tmp_path)
    with storage_scp() as pacs, QureClient("http://unused", "t", "s") as client:
        stored = client.forward(files, f"PACS@127.0.0.1:{pacs.port}?calling=QURE_TEST")
    dicom = [p for p in files if p.suffix == ".dcm"]
    assert sorted(stored) == sorted(map(sop, dicom))
    assert sorted(pacs.received.values()) == sorted(
        [SecondaryCaptureImageStorage, Comprehensive3DSRStorage, EncapsulatedPDFStorage]
    )


def test_c_store_failures_name_the_status_and_a_rejected_association_says_why(tmp_path: Path) -> None:
    files = [p for p in assets(tmp_path) if p.suffix == ".dcm"]
    with storage_scp(status=0xA700) as pacs, pytest.raises(ForwardError) as refused:
        forward_dimse(files, DimseDestination(ae_title="PACS", host="127.0.0.1", port=pacs.port))
    assert len(refused.value.failed) == 3 and all("0xA700" in item for item in refused.value.failed)
    with storage_scp(calling_aes=["ONLY_ME"]) as pacs, pytest.raises(ForwardError, match="rejected"):
        forward_dimse(files, DimseDestination(ae_title="PACS", host="127.0.0.1", port=pacs.port))


@pytest.mark.parametrize("warning", [0x0001, 0x0107, 0x0116, 0xB000, 0xB00F])
def test_a_c_store_warning_means_stored(tmp_path: Path, warning: int) -> None:
    """PS3.7 C.4.2.1.4: the PACS stored it and says something about it; counted as a failure, it was sent again
    every few minutes for ever."""
    files = [p for p in assets(tmp_path) if p.suffix == ".dcm"]
    with storage_scp(status=warning) as pacs:
        stored = forward_dimse(files, DimseDestination(ae_title="PACS", host="127.0.0.1", port=pacs.port))
    assert sorted(stored) == sorted(map(sop, files))


def test_stow_rs_forwards_and_reports_the_failed_sop_sequence(tmp_path: Path) -> None:
    image = tmp_path / "image.dcm"
    image.write_bytes(chest_dx(seed=3, size=64, study_uid=STUDY))
    sr = assets(tmp_path / "out")[1]
    auth = {"Authorization": f"Token {TOKEN}", "Source": SOURCE}
    with running_platform(tmp_path / "pacs") as (pacs, url), QureClient("http://unused", "t", "s") as client:
        assert client.forward([image], f"{url}/", headers=auth) == [sop(image)]
        assert pacs.instances[sop(image)].sop_class_uid == DX_FOR_PRESENTATION
        with pytest.raises(ForwardError) as caught:  # qure_ray takes images only: the SR is refused (0x0122)
            client.forward([sr], url, headers=auth)
    assert caught.value.failed == [f"{sop(sr)} (FailureReason 0x0122)"]


def test_the_async_client_forwards_by_c_store_without_blocking_its_loop(tmp_path: Path) -> None:
    files = assets(tmp_path)

    async def forward(port: int) -> list[str]:
        async with AsyncQureClient("http://unused", "t", "s") as client:
            return await client.forward(files, DimseDestination(ae_title="PACS", host="127.0.0.1", port=port))

    with storage_scp() as pacs:
        assert len(asyncio.run(forward(pacs.port))) == 3
