"""QureClient against the real qure_ray app (in-memory platform) served over HTTP on loopback."""

from __future__ import annotations

import asyncio
import io
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest

from qure_ray.client import (
    AsyncQureClient,
    AuthenticationError,
    ClientConfigError,
    ComputeStatus,
    InputError,
    NotFound,
    ProcessingFailed,
    QureClient,
    ResultStatus,
    UploadRefused,
)
from qure_ray.config import Settings
from qure_ray.dicom.synthetic import chest_dx
from qure_ray.records import TriageStatus
from tests.unit.client_platform import SOURCE, TOKEN, MemoryPlatform, running_platform


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[tuple[MemoryPlatform, str]]:
    with running_platform(tmp_path / "platform") as served:
        yield served


@pytest.fixture
def client(platform: tuple[MemoryPlatform, str]) -> Iterator[QureClient]:
    with QureClient(platform[1], TOKEN, SOURCE) as qure:
        yield qure


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def sop_of(data: bytes) -> str:
    return str(pydicom.dcmread(io.BytesIO(data)).SOPInstanceUID)


def test_a_folder_with_a_zip_uploads_every_dicom_and_reports_the_rest(
    client: QureClient, platform: tuple[MemoryPlatform, str], tmp_path: Path
) -> None:
    images = [chest_dx(seed=i, size=64) for i in range(3)]
    folder = tmp_path / "study"
    write(folder / "a.dcm", images[0])
    write(folder / "nested" / "b", images[1])  # no suffix: found by its DICM magic
    write(folder / "notes.txt", b"not an image")
    with zipfile.ZipFile(folder / "more.zip", "w") as archive:
        archive.writestr("c.dcm", images[2])
        archive.writestr("readme.md", "hello")

    report = client.upload([folder])

    assert sorted(f.sop_uid for f in report.accepted) == sorted(map(sop_of, images))
    assert all(f.created for f in report.files) and not report.refused
    assert {Path(s.path).name for s in report.skipped} == {"notes.txt", "more.zip!readme.md"}
    assert any(f.path.endswith("more.zip!c.dcm") for f in report.files)
    assert all(platform[0].enqueued[sop_of(data)] == 1 for data in images)

    again = client.upload([folder])
    assert [f.created for f in again.files] == [False, False, False]
    assert all("already stored" in f.message for f in again.files)
    assert all(platform[0].enqueued[sop_of(data)] == 1 for data in images)


def test_refusals_are_per_file_and_all_refused_raises(client: QureClient, tmp_path: Path) -> None:
    good = write(tmp_path / "good.dcm", chest_dx(seed=7, size=64))
    bad = write(tmp_path / "bad.dcm", b"x" * 300)  # named directly: sent, so the platform says what is wrong
    report = client.upload([good, bad])
    assert [f.accepted for f in report.files] == [True, False]
    refused = report.refused[0]
    assert refused.path == str(bad) and refused.code == "not-dicom" and "'DICM'" in refused.message
    with pytest.raises(UploadRefused) as caught:
        report.raise_for_refused()
    assert str(bad) in str(caught.value)

    with pytest.raises(UploadRefused) as none:
        client.upload([bad])
    assert none.value.report.refused[0].path == str(bad)


def test_a_request_too_large_for_the_platform_is_split_and_a_file_too_large_alone_is_refused(
    client: QureClient, platform: tuple[MemoryPlatform, str], tmp_path: Path
) -> None:
    """A 413 for a whole request (the platform's, or a proxy's, body limit) must not refuse or stall the rest."""
    small = [write(tmp_path / f"s{i}.dcm", chest_dx(seed=20 + i, size=64)) for i in range(3)]
    big = write(tmp_path / "big.dcm", chest_dx(seed=30, size=256))
    limit = 3 * small[0].stat().st_size
    assert big.stat().st_size > limit
    served = platform[0]
    served.settings = Settings.load({**served.settings.to_args(), "QURE_MAX_REQUEST_BYTES": limit}, {})

    report = client.upload([*small, big])

    assert [f.path for f in report.accepted] == list(map(str, small))
    assert [(f.path, f.code) for f in report.refused] == [(str(big), "too-large")]
    assert "HTTP 413" in report.refused[0].message
    assert all(served.enqueued[sop_of(path.read_bytes())] == 1 for path in small)


def test_nothing_to_upload_and_missing_paths_are_input_errors(client: QureClient, tmp_path: Path) -> None:
    write(tmp_path / "only.txt", b"text")
    with pytest.raises(InputError, match="no DICOM file found"):
        client.upload([tmp_path])
    with pytest.raises(InputError, match="does not exist"):
        client.upload([tmp_path / "missing"])


def test_wait_returns_a_typed_result_and_download_writes_checked_files(
    platform: tuple[MemoryPlatform, str], tmp_path: Path
) -> None:
    memory, base_url = platform
    memory.pending_polls = 1  # the first look answers 202
    data = chest_dx(seed=11, size=64)
    with QureClient(base_url, TOKEN, SOURCE) as client:
        report = client.upload([write(tmp_path / "x.dcm", data)])
        sop = report.accepted[0].sop_uid
        assert client.result(sop).status is ResultStatus.PENDING
        result = client.wait(sop, timeout_s=30)
        assert result.status is ResultStatus.DONE and result.uid == sop == result.result_uid
        assert result.triage_status is TriageStatus.CRITICAL and result.positives == ["nodule"]
        assert result.scores["nodule"] == pytest.approx(0.91) and result.usecase == "qxr"
        assert result.model is not None and result.model.name == "stand-in" and result.model.trained is False
        assert "Nodule" in result.findings and result.series is None
        assert set(result.files) >= {"sc", "report_sr", "report_dcm", "report_pdf", "sc_full_png", "original"}

        assets = client.download(result, tmp_path / "out")
    assert {kind: [p.name for p in paths] for kind, paths in assets.items()} == {
        "sc": ["sc.dcm"], "report_sr": ["report_sr.dcm"], "report_dcm": ["report_pdf.dcm"],
        "report_pdf": ["report.pdf"], "sc_full_png": ["sc_full.png"], "original": [f"{sop}.dcm"],
    }  # fmt: skip
    assert assets["original"][0].read_bytes() == data
    assert pydicom.dcmread(assets["report_dcm"][0]).MIMETypeOfEncapsulatedDocument == "application/pdf"
    assert not list((tmp_path / "out").glob(".*"))  # no partial files left behind


def test_failed_unknown_and_bad_credentials_raise(platform: tuple[MemoryPlatform, str], tmp_path: Path) -> None:
    memory, base_url = platform
    data = chest_dx(seed=12, size=64)
    memory.fail.add(sop_of(data))
    with QureClient(base_url, TOKEN, SOURCE) as client:
        client.upload([write(tmp_path / "x.dcm", data)])
        with pytest.raises(ProcessingFailed, match="crashed three times"):
            client.wait(sop_of(data), timeout_s=10)
        with pytest.raises(NotFound):
            client.result("1.2.3.4.5")
        with pytest.raises(InputError, match="not a DICOM UID"):
            client.result("../etc")
    with QureClient(base_url, "wrong-token", SOURCE) as stranger, pytest.raises(AuthenticationError) as caught:
        stranger.upload([tmp_path / "x.dcm"])
    assert caught.value.status == 401 and "QURE_TOKEN" in str(caught.value)


def test_a_head_ct_series_is_started_by_wait_and_answers_once_for_the_series(
    client: QureClient, tmp_path: Path
) -> None:
    series = "1.2.826.0.1.3680043.10.999.501"
    slices = [chest_dx(seed=20 + i, size=64, modality="CT", body_part="HEAD", series_uid=series) for i in range(3)]
    report = client.upload([write(tmp_path / f"{i}.dcm", data) for i, data in enumerate(slices)])
    first = report.accepted[0]
    held = client.result(first.sop_uid)
    assert held.status is ResultStatus.PENDING and held.state == "held"
    result = client.wait(first.sop_uid, series_uid=first.series_uid, timeout_s=30)  # calls GET /compute itself
    assert result.series is not None and result.result_uid == series
    assert result.series.slices_read == 3 and set(result.series.slice_scores) == {f.sop_uid for f in report.files}
    assert client.compute(series) is ComputeStatus.ALREADY_STARTED
    with pytest.raises(NotFound):
        client.compute("1.2.3.999")


def test_the_async_client_is_the_same_implementation(platform: tuple[MemoryPlatform, str], tmp_path: Path) -> None:
    path = write(tmp_path / "x.dcm", chest_dx(seed=30, size=64))

    async def round_trip() -> ResultStatus:
        async with AsyncQureClient(platform[1], TOKEN, SOURCE) as client:
            report = await client.upload([path])
            return (await client.wait(report.accepted[0].sop_uid, timeout_s=10)).status

    assert asyncio.run(round_trip()) is ResultStatus.DONE


def test_settings_come_from_the_environment_and_the_token_is_not_shown(tmp_path: Path) -> None:
    env = {"QURE_URL": "http://qure.example:8000/", "QURE_TOKEN": "sekrit", "QURE_SOURCE": "site-x"}
    client = QureClient(environ=env)
    try:
        assert client.aio.settings.base_url == "http://qure.example:8000"
        assert "sekrit" not in repr(client) + repr(client.aio.settings)
    finally:
        client.close()
    with pytest.raises(ClientConfigError, match="QURE_TOKEN"):
        QureClient(environ={})


def test_wait_outlasts_a_platform_that_fails_for_a_while(platform: tuple[MemoryPlatform, str], tmp_path: Path) -> None:
    """A restart or a rolling update answers 5xx for a moment; a wait of minutes must not end there."""
    memory, base_url = platform
    real_lookup, failures = memory.lookup_result, [2]

    async def flaky(source: str, uid: str) -> object:
        if failures[0]:
            failures[0] -= 1
            raise RuntimeError("the catalog is restarting")
        return await real_lookup(source, uid)

    memory.lookup_result = flaky  # type: ignore[method-assign]
    with QureClient(base_url, TOKEN, SOURCE) as client:
        sop = client.upload([write(tmp_path / "x.dcm", chest_dx(seed=12, size=64))]).accepted[0].sop_uid
        assert client.wait(sop, timeout_s=60).status is ResultStatus.DONE
    assert failures == [0]
