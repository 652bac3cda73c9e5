"""The real qure_ray Starlette app over an in-memory platform, served by uvicorn on 127.0.0.1:0 — for client tests.

Uploads go through the real multipart parsing, validation and Qure-style reply; results, compute and signed
asset URLs through the real routes. Only the pipeline is simulated: an instance is finished (result and
assets written to a local object store) the `pending_polls + 1`-th time it is looked up, and CT instances
are held per series until `GET /compute`, then finished as one per-series result.
"""

from __future__ import annotations

import io
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from PIL import Image
from pydicom.uid import Comprehensive3DSRStorage, EncapsulatedPDFStorage, SecondaryCaptureImageStorage, generate_uid
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from starlette.types import ASGIApp

from qure_ray.api.app import create_app
from qure_ray.config import Settings
from qure_ray.dicom.part10 import new_dataset, to_bytes
from qure_ray.records import (
    InstanceRecord,
    InstanceState,
    ModelInfo,
    ResultRecord,
    SeriesStart,
    TriageStatus,
    UseCase,
    Webhook,
)
from qure_ray.routing import Router
from qure_ray.storage import LocalObjectStore
from qure_ray.storage.catalog import Batch
from qure_ray.storage.lookup import ResultLookup, lookup_result

TOKEN, SOURCE = "client-test-token", "client-site"
PDF = b"%PDF-1.4\n% a stand-in report\n%%EOF\n"


def png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), (200, 30, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def output_instance(sop_class: str, study_uid: str, *, pdf: bool = False) -> bytes:
    """A minimal DICOM output in the source's study (SC, SR or Encapsulated PDF), enough for a PACS to store."""
    ds = new_dataset(sop_class, generate_uid())
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientID = "PHANTOM-0001"
    ds.Modality = "DOC" if pdf else "OT"
    if pdf:
        ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
        ds.EncapsulatedDocument = PDF + b"\n" * (len(PDF) % 2)
    return to_bytes(ds)


@dataclass
class MemoryPlatform:
    settings: Settings
    store: LocalObjectStore
    router: Router
    pending_polls: int = 0
    instances: dict[str, InstanceRecord] = field(default_factory=dict)
    results: dict[str, ResultRecord] = field(default_factory=dict)
    started: set[str] = field(default_factory=set)
    lookups: Counter[str] = field(default_factory=Counter)
    enqueued: Counter[str] = field(default_factory=Counter)
    """SOPInstanceUID → how often it was stored and queued: more than once would be a duplicate."""
    fail: set[str] = field(default_factory=set)
    """SOPInstanceUIDs whose processing fails."""
    logged: list[dict[str, Any]] = field(default_factory=list)
    """`ingest_log` rows written."""

    async def find_instance(self, source: str, sop_uid: str) -> InstanceRecord | None:
        record = self.instance(source, sop_uid)
        if record is not None and record.state is InstanceState.QUEUED:
            self.lookups[sop_uid] += 1
            if self.lookups[sop_uid] > self.pending_polls:
                self._finish(record)
                record = self.instances[sop_uid]
        return record

    async def lookup_result(self, source: str, uid: str) -> ResultLookup:
        await self.find_instance(source, uid)  # finishes it when its time has come
        return lookup_result(self, source, uid)

    def instance(self, source: str, sop_uid: str) -> InstanceRecord | None:
        return self.instances.get(sop_uid) if source == SOURCE else None

    def result(self, source: str, sop_uid: str) -> ResultRecord | None:
        return self.results.get(sop_uid) if source == SOURCE else None

    async def instances_of_series(self, source: str, series_uid: str) -> list[InstanceRecord]:
        return self.series_instances(source, series_uid)

    def series_instances(self, source: str, series_uid: str) -> list[InstanceRecord]:
        return [r for r in self.instances.values() if r.series_uid == series_uid and source == SOURCE]

    def series_started(self, source: str, series_uid: str) -> bool:
        return series_uid in self.started

    async def start_series(self, source: str, series_uid: str) -> SeriesStart:
        slices = self.series_instances(source, series_uid)
        if not slices:
            return SeriesStart.UNKNOWN
        if series_uid in self.started:
            return SeriesStart.ALREADY_STARTED
        self.started.add(series_uid)
        per_slice = {r.sop_uid: {"bleed": 0.1 + 0.8 * (i == 1)} for i, r in enumerate(slices)}
        scores = {"bleed": max(s["bleed"] for s in per_slice.values())}
        self.results[series_uid] = self._result(series_uid, slices[0], UseCase.QER, scores, per_slice)
        for record in slices:
            self.instances[record.sop_uid] = _with_state(record, InstanceState.DONE)
        return SeriesStart.STARTED

    async def record_and_enqueue(self, record: InstanceRecord) -> bool:
        if self._recorded(record):
            return False
        self.enqueued[record.sop_uid] += 1
        held = record.modality == "CT"
        self.instances[record.sop_uid] = _with_state(record, InstanceState.HELD if held else InstanceState.QUEUED)
        return True

    async def record_settled(self, record: InstanceRecord, result: ResultRecord) -> bool:
        if self._recorded(record):
            return False
        self.instances[record.sop_uid] = _with_state(record, result.state)
        self.results[record.sop_uid] = result
        return True

    def _recorded(self, record: InstanceRecord) -> bool:
        """As the catalog's `Unrecorded` condition: this content is the instance's already."""
        known = self.instances.get(record.sop_uid)
        return known is not None and known.sha256 == record.sha256

    async def log_ingest(self, batch: Batch) -> None:
        self.logged.extend(batch.rows.get("ingest_log", []))

    async def check_capacity(self) -> None:
        pass

    async def webhook(self, source: str) -> Webhook | None:
        return None

    async def set_webhook(self, source: str, url: str, secret: str, *, active: bool) -> None:
        raise NotImplementedError("webhooks are not part of the client tests")

    async def ready(self) -> bool:
        return True

    def _finish(self, record: InstanceRecord) -> None:
        if record.sop_uid in self.fail:
            self.results[record.sop_uid] = ResultRecord(
                source=SOURCE, sop_uid=record.sop_uid, usecase=UseCase.QXR, state=InstanceState.FAILED,
                reason="the model replica crashed three times",
            )  # fmt: skip
            self.instances[record.sop_uid] = _with_state(record, InstanceState.FAILED)
            return
        self.results[record.sop_uid] = self._result(
            record.sop_uid, record, UseCase.QXR, {"nodule": 0.91, "effusion": 0.12}
        )
        self.instances[record.sop_uid] = _with_state(record, InstanceState.DONE)

    def _result(
        self,
        uid: str,
        source: InstanceRecord,
        usecase: UseCase,
        scores: dict[str, float],
        slices: dict[str, dict[str, float]] | None = None,
    ) -> ResultRecord:
        prefix = f"assets/{SOURCE}/{uid}"
        files = {
            "sc": ("sc.dcm", output_instance(SecondaryCaptureImageStorage, source.study_uid)),
            "report_sr": ("report_sr.dcm", output_instance(Comprehensive3DSRStorage, source.study_uid)),
            "report_dcm": ("report_pdf.dcm", output_instance(EncapsulatedPDFStorage, source.study_uid, pdf=True)),
            "report_pdf": ("report.pdf", PDF),
            "sc_full_png": ("sc_full.png", png_bytes()),
        }
        for name, data in files.values():
            self.store.put(f"{prefix}/{name}", data)
        decisions = {label: score > 0.5 for label, score in scores.items()}
        return ResultRecord(
            source=SOURCE,
            sop_uid=uid,
            usecase=usecase,
            state=InstanceState.DONE,
            triage_status=TriageStatus.CRITICAL if any(decisions.values()) else TriageStatus.ROUTINE,
            scores=scores,
            decisions=decisions,
            model=ModelInfo(name="stand-in", version="0", trained=False),
            assets={kind: [f"{prefix}/{name}"] for kind, (name, _) in files.items()},
            slices=slices or {},
        )


def _with_state(record: InstanceRecord, state: InstanceState) -> InstanceRecord:
    return InstanceRecord(**{**record.__dict__, "state": state})


def memory_platform(tmp_path: Path, **options: object) -> MemoryPlatform:
    settings = Settings.load({"QURE_TOKENS": f"{TOKEN}:{SOURCE}", "QURE_DATA_URI": str(tmp_path)}, {})
    router = Router.load(settings.routing_path, settings.models_path)
    return MemoryPlatform(settings, LocalObjectStore(tmp_path), router, **options)  # type: ignore[arg-type]


@contextmanager
def serve(app: ASGIApp) -> Iterator[str]:
    """Serve `app` with uvicorn on a free loopback port, in a thread; yields its base URL."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)


@contextmanager
def running_platform(tmp_path: Path, **options: object) -> Iterator[tuple[MemoryPlatform, str]]:
    platform = memory_platform(tmp_path, **options)
    with serve(create_app(platform)) as base_url:  # type: ignore[arg-type]
        yield platform, base_url


@dataclass
class StorageScp:
    """A pynetdicom C-STORE SCP standing in for a PACS; `received` holds what it stored."""

    port: int
    received: dict[str, str] = field(default_factory=dict)
    """SOPInstanceUID → SOPClassUID."""
    status: int = 0x0000


@contextmanager
def storage_scp(
    *, ae_title: str = "PACS", status: int = 0x0000, calling_aes: list[str] | None = None
) -> Iterator[StorageScp]:
    ae = AE(ae_title=ae_title)
    for context in AllStoragePresentationContexts:
        ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
    if calling_aes:
        ae.require_calling_aet = calling_aes
    scp = StorageScp(port=0, status=status)

    def on_store(event: Any) -> int:
        if scp.status == 0x0000:
            scp.received[str(event.request.AffectedSOPInstanceUID)] = str(event.request.AffectedSOPClassUID)
        return scp.status

    server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    assert server is not None
    scp.port = int(server.server_address[1])
    try:
        yield scp
    finally:
        server.shutdown()
