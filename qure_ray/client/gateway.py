"""The on-site gateway: a C-STORE SCP beside the PACS that sends images to the platform and results back.

    modality / PACS ──C-STORE──▶ Gateway SCP ──▶ spool/incoming ──upload──▶ platform
                                                  spool/uploaded ──result, download──▶ forward ──▶ PACS
                                                  spool/done | failed

An instance is written durably into the spool (`qure_ray.client.spool`) before its C-STORE is answered
with success; a worker thread then moves it along. A gateway killed at any point and started again on the
same spool finishes the work. Head-CT series start on the platform by its quiet period (the gateway cannot
know when a modality has sent the last slice).

In tests, `Gateway(...).start()` on port 0 picks a free port (`gateway.port`); `start_worker=False` only
receives, so a later gateway on the same spool can be shown to resume.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pydicom import dcmread
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer

from qure_ray.client.errors import NotFound, ProcessingFailed, QureClientError, ServerBusy, UploadRefused
from qure_ray.client.files import DicomFile
from qure_ray.client.forward import Destination, DimseDestination
from qure_ray.client.models import PACS_KINDS, Result, ResultStatus, UploadReport
from qure_ray.client.spool import Spool, SpoolItem, SpoolLock, SpoolState
from qure_ray.dicom.standards import SUPPORTED_TRANSFER_SYNTAXES
from qure_ray.dicom.uids import is_valid_uid

logger = logging.getLogger(__name__)
SUCCESS, OUT_OF_RESOURCES, CANNOT_UNDERSTAND = 0x0000, 0xA700, 0xC000
MAX_UPLOAD_PER_STEP = 500
MAX_RETRY_DELAY_S = 300.0


class PlatformClient(Protocol):
    """What the worker needs of the platform; `QureClient` is one."""

    def upload_files(self, files: Sequence[DicomFile]) -> UploadReport: ...
    def result(self, uid: str) -> Result: ...
    def download(
        self, result: Result, directory: Path, *, kinds: Iterable[str] | None = None
    ) -> dict[str, list[Path]]: ...
    def forward(
        self, paths: Iterable[Path], destination: str | Destination, *, headers: Mapping[str, str] | None = None
    ) -> list[str]: ...


@dataclass(frozen=True, kw_only=True)
class StepSummary:
    uploaded: int = 0
    finished: int = 0
    failed: int = 0
    pending: int = 0


@dataclass
class GatewayWorker:
    """Moves spooled instances along, one `step()` at a time; any step may be the last before a crash."""

    spool: Spool
    client: PlatformClient
    destination: Destination
    destination_headers: Mapping[str, str] = field(default_factory=dict)
    retry_base_s: float = 2.0
    _retry_at: dict[str, tuple[int, float]] = field(default_factory=dict, repr=False)
    """Result UID (the SOPInstanceUID, or a head-CT result's SeriesInstanceUID) → (failed deliveries so far, when
    to try again): a refusing destination is not hammered, and a series is not fetched again once per slice."""
    _upload_retry: tuple[int, float] = (0, 0.0)
    """(failed upload requests in a row, when to try again): a failing platform does not hold up results."""
    _series: dict[str, str] = field(default_factory=dict, repr=False)
    """SOPInstanceUID → SeriesInstanceUID of uploaded instances, read once from their files."""

    def step(self) -> StepSummary:
        uploaded, refused = self._upload()
        finished, failed, pending = self._collect()
        return StepSummary(uploaded=uploaded, finished=finished, failed=failed + refused, pending=pending)

    def _upload(self) -> tuple[int, int]:
        """Upload what the spool received. A request that fails as a whole (the platform answers 5xx, is busy
        or unreachable) is tried again after a growing pause, and never keeps `_collect` from running."""
        items = self.spool.items(SpoolState.INCOMING)[:MAX_UPLOAD_PER_STEP]
        if not items or self._upload_retry[1] > time.monotonic():
            return 0, 0
        files = {str(item.path): item for item in items}
        versions = {path: _version(item.path) for path, item in files.items()}
        try:
            report = self.client.upload_files([DicomFile(item.path, item.path.stat().st_size) for item in items])
        except UploadRefused as exc:
            report = exc.report
        except QureClientError as exc:
            failures = self._upload_retry[0] + 1
            delay = self._backoff(failures)
            self._upload_retry = (failures, time.monotonic() + delay)
            logger.error("uploading %d instance(s) failed (%s); retrying in %.0f s", len(items), exc, delay)
            return 0, 0
        self._upload_retry = (0, 0.0)
        accepted = refused = 0
        for outcome in report.files:
            item = files[outcome.path]
            if _version(item.path) != versions[outcome.path]:
                continue  # received again while it was sent: the new content is uploaded next step
            if outcome.accepted:
                self.spool.move(item.sop_uid, SpoolState.INCOMING, SpoolState.UPLOADED)
                accepted += 1
            else:
                logger.warning("the platform refused %s: %s", item.sop_uid, outcome.message)
                self.spool.fail(item.sop_uid, SpoolState.INCOMING, f"refused by the platform: {outcome.message}")
                refused += 1
        return accepted, refused

    def _collect(self) -> tuple[int, int, int]:
        """Ask for the result of each uploaded instance; a final one is forwarded and its instances finished.
        Within a series, asking stops at the first pending answer (a head-CT series finishes all at once)."""
        finished = failed = pending = 0
        waiting_series: set[str] = set()
        done: set[str] = set()
        for item in self.spool.items(SpoolState.UPLOADED):
            series = self._series.get(item.sop_uid) or self._series.setdefault(item.sop_uid, _series_uid(item))
            deferred = self._deferred(item.sop_uid) or self._deferred(series)  # an X-ray's result, or a series'
            if item.sop_uid in done or series in waiting_series or deferred:
                pending += item.sop_uid not in done
                continue
            try:
                result = self.client.result(item.sop_uid)
            except ProcessingFailed as exc:
                self.spool.fail(item.sop_uid, SpoolState.UPLOADED, f"processing failed: {exc.reason}")
                failed += 1
                continue
            except NotFound:  # the platform lost it (its data was reset): send it again
                logger.warning("the platform no longer knows %s; uploading it again", item.sop_uid)
                self.spool.send_again(item.sop_uid)
                continue
            except ServerBusy as exc:  # busy or unreachable through every retry: no use asking for the rest now
                logger.error("asking for results failed (%s); asking again next step", exc)
                return finished, failed, pending + 1
            except QureClientError as exc:  # this answer only (a 5xx, a reply this client cannot read): the rest
                self._defer(item.sop_uid, exc)  # go on, or one result would hold up every later one for good
                pending += 1
                continue
            if not result.status.is_final:
                waiting_series.add(series)
                pending += 1
                continue
            covered = self._deliver(result, item)
            done |= covered
            finished += len(covered)
        return finished, failed, pending

    def _deliver(self, result: Result, item: SpoolItem) -> set[str]:
        """Forward a final result's DICOM assets (once), then finish every spooled instance it covers."""
        key = result.result_uid
        if result.status is not ResultStatus.UNSUPPORTED and not self.spool.is_forwarded(key):
            try:
                assets = self.client.download(result, self.spool.assets_dir(key), kinds=PACS_KINDS)
                paths = [path for kind in PACS_KINDS for path in assets.get(kind, [])]
                stored = self.client.forward(paths, self.destination, headers=self.destination_headers)
            except (QureClientError, OSError) as exc:  # OSError: the spool's disk (full, unwritable)
                self._defer(key, exc)
                return set()
            self.spool.mark_forwarded(key, {"status": result.status.value, "forwarded": stored})
            logger.info(
                "result %s (%s): %d instance(s) forwarded to %s", key, result.status, len(stored), self.destination
            )
        self._retry_at.pop(key, None)
        covered = {item.sop_uid, *(result.series.slice_scores if result.series else ())}
        record = {"result_uid": key, "status": result.status.value, "message": result.message}
        for sop in covered & {i.sop_uid for i in self.spool.items(SpoolState.UPLOADED)}:
            self.spool.finish(sop, SpoolState.UPLOADED, record)
            self._series.pop(sop, None)
        return covered

    def _backoff(self, failures: int) -> float:
        """The pause after `failures` failures in a row: doubling from `retry_base_s`, at most 5 minutes."""
        return min(MAX_RETRY_DELAY_S, self.retry_base_s * 2 ** (failures - 1))

    def _deferred(self, result_uid: str) -> bool:
        return self._retry_at.get(result_uid, (0, 0.0))[1] > time.monotonic()

    def _defer(self, result_uid: str, exc: Exception) -> None:
        failures = self._retry_at.get(result_uid, (0, 0.0))[0] + 1
        delay = self._backoff(failures)
        self._retry_at[result_uid] = (failures, time.monotonic() + delay)
        logger.error("reading or delivering the result of %s failed (%s); retrying in %.0f s", result_uid, exc, delay)


def _version(path: Path) -> tuple[int, int] | None:
    """Which file is at `path` now: a re-received instance replaces it (a new inode and time)."""
    try:
        found = path.stat()
    except FileNotFoundError:
        return None
    return found.st_ino, found.st_mtime_ns


def _series_uid(item: SpoolItem) -> str:
    try:
        return str(dcmread(item.path, stop_before_pixels=True, specific_tags=["SeriesInstanceUID"]).SeriesInstanceUID)
    except (OSError, AttributeError, ValueError):
        return item.sop_uid  # unreadable here; the platform accepted it, so ask for it alone


class Gateway:
    """The C-STORE SCP and the worker thread around one spool."""

    def __init__(
        self,
        *,
        listen: DimseDestination,
        spool_dir: Path,
        destination: Destination,
        client: PlatformClient,
        calling_aes: Sequence[str] = (),
        destination_headers: Mapping[str, str] | None = None,
        poll_interval_s: float = 2.0,
        start_worker: bool = True,
    ) -> None:
        self.listen = listen
        self._lock: SpoolLock | None = SpoolLock(spool_dir)  # before `Spool` empties tmp/ and assets/
        try:
            self.spool = Spool(spool_dir)
        except BaseException:
            self._lock.release()
            raise
        self.worker = GatewayWorker(
            spool=self.spool,
            client=client,
            destination=destination,
            destination_headers=dict(destination_headers or {}),
        )
        self.calling_aes = tuple(calling_aes)
        self.poll_interval_s = poll_interval_s
        self.start_worker = start_worker
        self._server: ThreadedAssociationServer | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the gateway is not started")
        return int(self._server.server_address[1])

    def start(self) -> None:
        if self._lock is None:  # started again after a stop
            self._lock = SpoolLock(self.spool.root)
        try:
            self._listen()
        except BaseException:  # the port is taken, say: the spool is free for the next try
            self._lock.release()
            self._lock = None
            raise
        if self.start_worker:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="qure-gateway-worker", daemon=True)
            self._thread.start()

    def _listen(self) -> None:
        ae = AE(ae_title=self.listen.ae_title)
        syntaxes = sorted(SUPPORTED_TRANSFER_SYNTAXES)
        for context in AllStoragePresentationContexts:
            if context.abstract_syntax is not None:
                ae.add_supported_context(context.abstract_syntax, syntaxes)
        ae.add_supported_context(Verification)
        if self.calling_aes:
            ae.require_calling_aet = list(self.calling_aes)
        ae.maximum_pdu_size = 0
        self._server = ae.start_server(
            (self.listen.host, self.listen.port),
            block=False,
            evt_handlers=[(evt.EVT_C_STORE, self._on_c_store), (evt.EVT_C_ECHO, lambda event: SUCCESS)],
        )
        logger.info(
            "gateway %s listening on %s:%d, spool %s, forwarding to %s",
            self.listen.ae_title, self.listen.host, self.port, self.spool.root, self.worker.destination,
        )  # fmt: skip

    def stop(self) -> None:
        """Stop receiving, let the worker finish its current step, and return."""
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> Gateway:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def wait_idle(self, *, timeout_s: float) -> bool:
        """Whether every spooled instance reached `done/` or `failed/` within `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.spool.count(SpoolState.INCOMING) and not self.spool.count(SpoolState.UPLOADED):
                return True
            time.sleep(0.2)
        return False

    def _on_c_store(self, event: Any) -> int:
        """On pynetdicom's thread: success only once the instance is on disk."""
        sop_uid = str(event.request.AffectedSOPInstanceUID)
        if not is_valid_uid(sop_uid):
            return CANNOT_UNDERSTAND
        try:
            self.spool.receive(sop_uid, event.encoded_dataset(include_meta=True))
        except OSError as exc:
            logger.error("cannot spool %s: %s", sop_uid, exc)
            return OUT_OF_RESOURCES
        self._wake.set()
        return SUCCESS

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                summary = self.worker.step()
                if summary.uploaded or summary.finished or summary.failed:
                    logger.info("gateway step: %s", summary)
            except Exception:  # the spool keeps every item; the next step tries again
                logger.exception("gateway step failed; retrying in %.0f s", self.poll_interval_s)
            self._wake.wait(self.poll_interval_s)
            self._wake.clear()
