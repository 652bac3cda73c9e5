"""The gateway: its spool state machine survives a crash at any step; its SCP spools before answering."""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE

from qure_ray.client import NotFound, ProcessingFailed, QureClient, UploadRefused
from qure_ray.client.errors import ClientConfigError, ForwardError, ServerError
from qure_ray.client.files import DicomFile
from qure_ray.client.forward import Destination, DimseDestination
from qure_ray.client.gateway import Gateway, GatewayWorker
from qure_ray.client.models import FileOutcome, Result, ResultStatus, SeriesInfo, UploadReport
from qure_ray.client.spool import Spool, SpoolState
from qure_ray.dicom.synthetic import DX_FOR_PRESENTATION, chest_dx
from tests.unit.client_platform import SOURCE, TOKEN, running_platform, storage_scp

PACS = DimseDestination(ae_title="PACS", host="127.0.0.1", port=104)


class Crash(BaseException):
    """The process dies here (not an error any step handles)."""


def dataset_of(data: bytes) -> pydicom.Dataset:
    return pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)


@dataclass
class FakePlatform:
    """The platform and the PACS as the worker sees them, counting what would be duplicated."""

    crash_after: str = ""
    pending: set[str] = field(default_factory=set)
    failing: set[str] = field(default_factory=set)
    unreadable: set[str] = field(default_factory=set)
    """UIDs whose result request fails with a 5xx the client cannot read as a result."""
    series_results: bool = False
    forward_fails: bool = False
    upload_fails: bool = False
    resent_during_upload: Callable[[], None] | None = None
    """Runs while an upload is in flight: a modality sending an instance again."""
    asked: Counter[str] = field(default_factory=Counter)
    """UID → how many times its result was asked for."""
    uploads: int = 0
    stored: dict[str, str] = field(default_factory=dict)
    """SOPInstanceUID → SeriesInstanceUID."""
    created: Counter[str] = field(default_factory=Counter)
    forwarded: Counter[str] = field(default_factory=Counter)
    """Result UID → how many times its assets reached the PACS."""

    def _maybe_crash(self, step: str) -> None:
        if self.crash_after == step:
            self.crash_after = ""
            raise Crash(step)

    def upload_files(self, files: Sequence[DicomFile]) -> UploadReport:
        self.uploads += 1
        if self.upload_fails:
            raise ServerError("an internal error", status=500)
        outcomes = []
        for file in files:
            ds = dataset_of(file.read())
            sop, series = str(ds.SOPInstanceUID), str(ds.SeriesInstanceUID)
            is_new = sop not in self.stored
            self.stored[sop] = series
            self.created[sop] += is_new
            accepted = ds.get("PatientID") != "REFUSE-ME"
            outcomes.append(
                FileOutcome(path=file.path, sop_uid=sop, series_uid=series, study_uid="", accepted=accepted,
                            created=is_new, message="stored" if accepted else "refused: a test refusal")
            )  # fmt: skip
        report = UploadReport(files=tuple(outcomes))
        if self.resent_during_upload is not None:
            self.resent_during_upload()
            self.resent_during_upload = None
        self._maybe_crash("upload")
        if not report.accepted:
            raise UploadRefused(report)
        return report

    def result(self, uid: str) -> Result:
        self.asked[uid] += 1
        if uid not in self.stored:
            raise NotFound(uid, "unknown")
        if uid in self.failing:
            raise ProcessingFailed(uid, "the model failed")
        if uid in self.unreadable:
            raise ServerError("an internal error", status=500)
        if uid in self.pending:
            return Result(uid=uid, status=ResultStatus.PENDING, message="queued", state="queued")
        series = None
        if self.series_results:
            slices = {sop: {"bleed": 0.9} for sop, s in self.stored.items() if s == self.stored[uid]}
            series = SeriesInfo(series_instance_uid=self.stored[uid], slices_read=len(slices), key_slices=(uid,),
                                slice_scores=slices)  # fmt: skip
        files = {"sc": (f"https://qure.test/assets/{uid}/sc.dcm",), "report_pdf": ("https://qure.test/r.pdf",)}
        return Result(uid=uid, status=ResultStatus.DONE, message="ready", files=files, series=series)

    def download(self, result: Result, directory: Path, *, kinds: Iterable[str] | None = None) -> dict[str, list[Path]]:
        assert kinds is not None and "report_pdf" not in kinds  # only what a PACS shows is fetched
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "sc.dcm").write_bytes(b"sc of " + result.result_uid.encode())
        self._maybe_crash("download")
        return {"sc": [directory / "sc.dcm"]}

    def forward(
        self, paths: Iterable[Path], destination: str | Destination, *, headers: Mapping[str, str] | None = None
    ) -> list[str]:
        paths = list(paths)
        assert destination == PACS and [p.name for p in paths] == ["sc.dcm"]
        if self.forward_fails:
            raise ForwardError("PACS", "association rejected")
        self.forwarded[paths[0].parent.name] += 1
        self._maybe_crash("forward")
        return ["1.2.3"]


class CrashingSpool(Spool):
    """Dies right after recording a result as forwarded, before its instances are finished."""

    crash_after_mark = False

    def mark_forwarded(self, result_uid: str, record: dict[str, Any]) -> None:
        super().mark_forwarded(result_uid, record)
        if self.crash_after_mark:
            self.crash_after_mark = False
            raise Crash("mark")


def received(spool: Spool, count: int, **options: Any) -> list[str]:
    sops = []
    for i in range(count):
        data = chest_dx(seed=i, size=32, **options)
        sops.append(str(dataset_of(data).SOPInstanceUID))
        spool.receive(sops[-1], data)
    return sops


def run_until_idle(worker: GatewayWorker, *, steps: int = 5) -> None:
    for _ in range(steps):
        worker.step()
        if not worker.spool.count(SpoolState.INCOMING) and not worker.spool.count(SpoolState.UPLOADED):
            return
    raise AssertionError("the worker did not finish")


@pytest.mark.parametrize("crash_after", ["upload", "download", "forward", "mark"])
def test_a_worker_killed_at_any_step_is_resumed_by_the_next_without_loss_or_duplicates(
    tmp_path: Path, crash_after: str
) -> None:
    platform = FakePlatform(crash_after="" if crash_after == "mark" else crash_after)
    spool = CrashingSpool(tmp_path)
    spool.crash_after_mark = crash_after == "mark"
    sops = received(spool, 3)
    with pytest.raises(Crash):
        run_until_idle(GatewayWorker(spool=spool, client=platform, destination=PACS))

    restarted = Spool(tmp_path)  # a new process on the same folder
    run_until_idle(GatewayWorker(spool=restarted, client=platform, destination=PACS))

    assert sorted(item.sop_uid for item in restarted.items(SpoolState.DONE)) == sorted(sops)
    assert restarted.count(SpoolState.FAILED) == 0 and not list((tmp_path / "assets").iterdir())
    assert all(platform.created[sop] == 1 for sop in sops)  # re-uploads were recognised, never stored twice
    twice = {sops[0]} if crash_after == "forward" else set()  # died between the PACS's success and the record
    assert platform.forwarded == Counter({sop: 2 if sop in twice else 1 for sop in sops})
    assert not list((tmp_path / "done").glob("*.dcm"))  # finished images are not kept


def test_pending_results_wait_refusals_and_failures_go_to_failed_with_their_reason(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    ok, slow, broken = received(spool, 3)
    refused = received(spool, 1, patient_id="REFUSE-ME")[0]
    platform = FakePlatform(pending={slow}, failing={broken})
    worker = GatewayWorker(spool=spool, client=platform, destination=PACS)
    summary = worker.step()
    assert (summary.uploaded, summary.finished, summary.failed, summary.pending) == (3, 1, 2, 1)
    assert [i.sop_uid for i in spool.items(SpoolState.UPLOADED)] == [slow]
    failed = {
        i.sop_uid: (tmp_path / "failed" / f"{i.sop_uid}.json").read_text() for i in spool.items(SpoolState.FAILED)
    }
    assert (
        set(failed) == {broken, refused} and "the model failed" in failed[broken] and "test refusal" in failed[refused]
    )
    platform.pending.clear()
    run_until_idle(worker)
    assert {i.sop_uid for i in spool.items(SpoolState.DONE)} == {ok, slow}


def test_a_series_result_finishes_every_slice_with_one_forward(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    series = "1.2.826.0.1.3680043.10.999.61"
    sops = received(spool, 4, series_uid=series)
    platform = FakePlatform(series_results=True)
    run_until_idle(GatewayWorker(spool=spool, client=platform, destination=PACS), steps=1)
    assert sorted(i.sop_uid for i in spool.items(SpoolState.DONE)) == sorted(sops)
    assert platform.forwarded == Counter({series: 1})


def test_a_series_whose_forward_fails_waits_as_one_and_is_not_fetched_per_slice(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    sops = received(spool, 20, series_uid="1.2.826.0.1.3680043.10.999.62")
    platform = FakePlatform(series_results=True, forward_fails=True)
    worker = GatewayWorker(spool=spool, client=platform, destination=PACS, retry_base_s=60)
    worker.step()
    worker.step()  # within the pause: nothing is asked or fetched again
    assert sum(platform.asked.values()) == 1 and spool.count(SpoolState.UPLOADED) == len(sops)
    platform.forward_fails = False
    worker._retry_at.clear()  # the pause is over
    run_until_idle(worker)
    assert platform.forwarded == Counter({"1.2.826.0.1.3680043.10.999.62": 1}) and spool.count(SpoolState.DONE) == 20


def test_an_instance_received_again_while_it_is_uploaded_is_uploaded_again(tmp_path: Path) -> None:
    """Its sender was told the new content is stored: it must not be marked uploaded with the old content's."""
    spool = Spool(tmp_path)
    sop = "1.2.826.0.1.3680043.10.999.64"
    spool.receive(sop, chest_dx(seed=64, size=32, sop_uid=sop))
    newer = chest_dx(seed=65, size=32, sop_uid=sop)
    platform = FakePlatform(pending={sop}, resent_during_upload=lambda: spool.receive(sop, newer))
    worker = GatewayWorker(spool=spool, client=platform, destination=PACS)
    worker.step()
    assert spool.count(SpoolState.INCOMING) == 1 and spool.items(SpoolState.INCOMING)[0].path.read_bytes() == newer
    worker.step()
    assert spool.count(SpoolState.UPLOADED) == 1 and platform.uploads == 2


def test_a_failing_upload_pauses_and_never_holds_up_results(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    (first,) = received(spool, 1)
    platform = FakePlatform(pending={first})
    worker = GatewayWorker(spool=spool, client=platform, destination=PACS, retry_base_s=60)
    worker.step()  # the first is uploaded; its result is pending
    spool.receive("1.2.826.0.1.3680043.10.999.63", chest_dx(seed=63, size=32, sop_uid="1.2.826.0.1.3680043.10.999.63"))
    platform.upload_fails, platform.pending = True, set()
    worker.step()
    worker.step()
    assert platform.uploads == 2  # one failed try, then a pause: not a try every step
    assert spool.count(SpoolState.DONE) == 1 and spool.count(SpoolState.INCOMING) == 1  # the result still came


def test_an_instance_the_platform_forgot_is_uploaded_again(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    (sop,) = received(spool, 1)
    platform = FakePlatform(pending={sop})
    worker = GatewayWorker(spool=spool, client=platform, destination=PACS)
    worker.step()
    platform.stored.clear()  # the platform's data was reset
    platform.pending.clear()
    worker.step()
    assert spool.count(SpoolState.INCOMING) == 1
    run_until_idle(worker)
    assert platform.created[sop] == 2 and spool.count(SpoolState.DONE) == 1


def test_a_result_that_cannot_be_read_waits_alone_and_holds_up_no_other(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    stuck, *others = received(spool, 3)  # the oldest first: asked for first on every step
    platform = FakePlatform(unreadable={stuck})
    worker = GatewayWorker(spool=spool, client=platform, destination=PACS, retry_base_s=60)
    worker.step()
    worker.step()  # within its pause: not asked again
    assert {i.sop_uid for i in spool.items(SpoolState.DONE)} == set(others)
    assert [i.sop_uid for i in spool.items(SpoolState.UPLOADED)] == [stuck] and platform.asked[stuck] == 1
    platform.unreadable.clear()
    worker._retry_at.clear()  # the pause is over
    run_until_idle(worker)
    assert spool.count(SpoolState.DONE) == 3


def test_a_copy_received_again_is_not_replaced_when_the_platform_forgot_the_first(tmp_path: Path) -> None:
    """The modality was told the newer copy is stored: the forgotten older one must not overwrite it."""
    spool = Spool(tmp_path)
    sop = "1.2.826.0.1.3680043.10.999.66"
    spool.receive(sop, chest_dx(seed=66, size=32, sop_uid=sop))
    platform = FakePlatform(pending={sop})
    worker = GatewayWorker(spool=spool, client=platform, destination=PACS)
    worker.step()
    newer = chest_dx(seed=67, size=32, sop_uid=sop)
    spool.receive(sop, newer)
    platform.stored.clear()  # the platform's data was reset
    worker._collect()
    assert spool.count(SpoolState.UPLOADED) == 0
    assert [i.path.read_bytes() for i in spool.items(SpoolState.INCOMING)] == [newer]


def test_one_gateway_per_spool(tmp_path: Path) -> None:
    platform = FakePlatform()
    listen = DimseDestination(ae_title="GW", host="127.0.0.1", port=0)
    first = Gateway(listen=listen, spool_dir=tmp_path, destination=PACS, client=platform, start_worker=False)
    spool_file = tmp_path / "tmp" / "1.2.3.dcm.receiving"
    spool_file.write_bytes(b"a C-STORE the first gateway is receiving")
    with pytest.raises(ClientConfigError, match="another gateway is using the spool"):
        Gateway(listen=listen, spool_dir=tmp_path, destination=PACS, client=platform)
    assert spool_file.exists()  # the second did not empty the first's tmp/
    first.start()
    first.stop()
    Gateway(listen=listen, spool_dir=tmp_path, destination=PACS, client=platform).stop()  # free once stopped


def test_partial_receipts_left_by_a_crash_are_discarded(tmp_path: Path) -> None:
    Spool(tmp_path)
    (tmp_path / "tmp" / "1.2.3.dcm.abc").write_bytes(b"half")
    assert Spool(tmp_path).count(SpoolState.INCOMING) == 0 and not list((tmp_path / "tmp").iterdir())
    with pytest.raises(ValueError, match="not a DICOM UID"):
        Spool(tmp_path).receive("../../etc/passwd", b"x")


def test_counting_while_the_worker_moves_an_instance_on_skips_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = Spool(tmp_path)
    spool.receive("1.2.3", b"kept")
    listed = [*(tmp_path / "incoming").glob("*.dcm"), tmp_path / "incoming" / "1.2.4.dcm"]  # 1.2.4 moved on since
    monkeypatch.setattr(Path, "glob", lambda self, pattern: iter(listed))
    assert [item.sop_uid for item in spool.items(SpoolState.INCOMING)] == ["1.2.3"]


def c_store(port: int, datas: list[bytes], *, calling: str = "MODALITY") -> list[int]:
    ae = AE(ae_title=calling)
    ae.add_requested_context(DX_FOR_PRESENTATION, ExplicitVRLittleEndian)
    association = ae.associate("127.0.0.1", port, ae_title="GATEWAY")
    if not association.is_established:
        return []
    try:
        return [int(association.send_c_store(pydicom.dcmread(io.BytesIO(data))).Status) for data in datas]
    finally:
        association.release()


def test_the_scp_spools_before_answering_and_a_new_gateway_finishes_the_work(tmp_path: Path) -> None:
    listen = DimseDestination(ae_title="GATEWAY", host="127.0.0.1", port=0)
    images = [chest_dx(seed=40 + i, size=32) for i in range(2)]
    platform = FakePlatform()
    options: dict[str, Any] = {"listen": listen, "spool_dir": tmp_path, "destination": PACS, "client": platform}
    with Gateway(**options, calling_aes=["MODALITY"], start_worker=False) as receiver:
        assert c_store(receiver.port, images) == [0x0000, 0x0000]
        assert c_store(receiver.port, images, calling="STRANGER") == []  # refused at association
        assert receiver.spool.count(SpoolState.INCOMING) == 2
    for data in images:
        on_disk = (tmp_path / "incoming" / f"{dataset_of(data).SOPInstanceUID}.dcm").read_bytes()
        assert pydicom.dcmread(io.BytesIO(on_disk)).PixelData == pydicom.dcmread(io.BytesIO(data)).PixelData

    with Gateway(**options, poll_interval_s=0.05) as worker:
        assert worker.wait_idle(timeout_s=20)
    assert sorted(platform.forwarded.values()) == [1, 1]


def test_the_gateway_round_trip_against_the_real_app_and_a_pacs(tmp_path: Path) -> None:
    image = chest_dx(seed=50, size=64)
    with (
        running_platform(tmp_path / "platform") as (memory, url),
        storage_scp() as pacs,
        QureClient(url, TOKEN, SOURCE) as client,
    ):
        destination = DimseDestination(ae_title="PACS", host="127.0.0.1", port=pacs.port)
        listen = DimseDestination(ae_title="GATEWAY", host="127.0.0.1", port=0)
        with Gateway(listen=listen, spool_dir=tmp_path / "spool", destination=destination, client=client,
                     poll_interval_s=0.05) as gateway:  # fmt: skip
            assert c_store(gateway.port, [image]) == [0x0000]
            assert gateway.wait_idle(timeout_s=30)
    assert memory.enqueued[str(dataset_of(image).SOPInstanceUID)] == 1
    assert len(pacs.received) == 3  # SC, SR and the Encapsulated PDF; no PNG, no PDF file


def test_a_gateway_that_cannot_listen_frees_its_spool(tmp_path: Path) -> None:
    import socket

    platform = FakePlatform()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = DimseDestination(ae_title="GW", host="127.0.0.1", port=taken.getsockname()[1])
        gateway = Gateway(listen=busy, spool_dir=tmp_path, destination=PACS, client=platform, start_worker=False)
        with pytest.raises(OSError):
            gateway.start()
    listen = DimseDestination(ae_title="GW", host="127.0.0.1", port=0)
    Gateway(listen=listen, spool_dir=tmp_path, destination=PACS, client=platform).stop()  # not "in use"
