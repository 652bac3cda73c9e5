"""`AsyncQureClient` (the implementation) and `QureClient` (the same, blocking): the partner's side of the API.

    async with AsyncQureClient("https://qure.example.org", token, "site-a") as client:
        report = await client.upload(["study/"])              # files, folders, zips; batched, retried
        result = await client.wait(report.accepted[0].sop_uid)
        assets = await client.download(result, Path("out"))   # kind → paths, checked and written atomically
        await client.forward(assets["sc"], "PACS@10.0.0.5:104")

`QureClient` runs each of these on a private event loop, so it must not be called from inside a running
loop (use `AsyncQureClient` there) nor from several threads at once.

The platform's token and Source go only to the platform: asset URLs on another host (pre-signed S3 URLs)
are fetched without them, and a PACS gets only the headers given to `forward`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from http import HTTPStatus
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import Any, Self, TypedDict, TypeVar, Unpack
from urllib.parse import unquote, urlsplit

import httpx

from qure_ray.client import _http
from qure_ray.client._http import RetryPolicy
from qure_ray.client.errors import (
    ClientConfigError,
    DownloadError,
    InputError,
    NotFound,
    ProcessingFailed,
    ProtocolError,
    RequestError,
    ServerBusy,
    ServerError,
    UploadRefused,
    WaitTimeout,
)
from qure_ray.client.files import DicomFile, batches, find_dicom, is_part10
from qure_ray.client.forward import (
    Destination,
    DicomWebDestination,
    dicom_files,
    forward_dimse,
    forward_stow,
    parse_destination,
)
from qure_ray.client.models import (
    ComputeStatus,
    FileOutcome,
    Result,
    ResultStatus,
    SkippedFile,
    UploadProgress,
    UploadReport,
)
from qure_ray.dicom.uids import is_valid_uid
from qure_ray.fileio import atomic_write
from qure_ray.media_types import DICOM_MEDIA_TYPE, MEDIA_TYPES
from qure_ray.records import InstanceState

logger = logging.getLogger(__name__)
T = TypeVar("T")
DEFAULT_URL = "http://127.0.0.1:8000"
UNTYPED = frozenset({"", "application/octet-stream", "binary/octet-stream"})
"""Content types of a store that was not told the type; then the bytes themselves must show the format."""
CHUNK_BYTES = 1024 * 1024


@dataclass(frozen=True, kw_only=True)
class BatchLimits:
    """How many files, and bytes, one `POST /studies` carries (the platform's own limits are higher)."""

    max_files: int = 50
    max_bytes: int = 64 * 1024 * 1024


@dataclass(frozen=True, kw_only=True)
class PollPolicy:
    """How `wait` polls a pending result: growing from `initial_interval_s` to `max_interval_s`, never sooner
    than the platform's `Retry-After`."""

    initial_interval_s: float = 0.5
    max_interval_s: float = 10.0


DEFAULT_RETRY, DEFAULT_POLL, DEFAULT_BATCH = RetryPolicy(), PollPolicy(), BatchLimits()


@dataclass(frozen=True, kw_only=True)
class ClientSettings:
    """Where and as whom the client talks; each value from its argument, else from the environment."""

    base_url: str
    token: str = field(repr=False)
    source: str

    @classmethod
    def resolve(
        cls, base_url: str | None, token: str | None, source: str | None, environ: Mapping[str, str]
    ) -> ClientSettings:
        url = base_url or environ.get("QURE_URL") or DEFAULT_URL
        token = token or environ.get("QURE_TOKEN", "")
        source = source or environ.get("QURE_SOURCE", "")
        if not url.startswith(("http://", "https://")):
            raise ClientConfigError(f"the platform URL {url!r} must start with http:// or https://")
        if not token:
            raise ClientConfigError("no API token: pass token= (--token) or set QURE_TOKEN")
        if not source:
            raise ClientConfigError("no source: pass source= (--source) or set QURE_SOURCE to your token's source")
        return cls(base_url=url.rstrip("/"), token=token, source=source)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Token {self.token}", "Source": self.source}


class ClientOptions(TypedDict, total=False):
    """The keyword options of `AsyncQureClient`, which `QureClient` passes on."""

    timeout_s: float
    retry: RetryPolicy
    poll: PollPolicy
    batch: BatchLimits
    transport: httpx.AsyncBaseTransport | None
    environ: Mapping[str, str] | None


class AsyncQureClient:
    """The platform's API for partners: upload, results, compute, download, forward."""

    def __init__(
        self,
        base_url: str | None = None,
        token: str | None = None,
        source: str | None = None,
        *,
        timeout_s: float = 60.0,
        retry: RetryPolicy = DEFAULT_RETRY,
        poll: PollPolicy = DEFAULT_POLL,
        batch: BatchLimits = DEFAULT_BATCH,
        transport: httpx.AsyncBaseTransport | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.settings = ClientSettings.resolve(base_url, token, source, os.environ if environ is None else environ)
        self.retry, self.poll, self.batch = retry, poll, batch
        self._rng = random.Random()
        self._api = httpx.AsyncClient(
            base_url=self.settings.base_url, headers=self.settings.headers, timeout=timeout_s, transport=transport
        )
        self._plain = httpx.AsyncClient(timeout=timeout_s, transport=transport)
        """For asset URLs on other hosts and for DICOMweb destinations: no platform credentials."""

    def __repr__(self) -> str:
        return f"AsyncQureClient({self.settings.base_url!r}, source={self.settings.source!r})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._api.aclose()
        await self._plain.aclose()

    # -- upload -----------------------------------------------------------------------------------------

    async def upload(
        self, paths: Iterable[str | Path], *, on_progress: Callable[[UploadProgress], None] | None = None
    ) -> UploadReport:
        """Upload the DICOM files in `paths` (files, folders recursively, zips), several per request.

        Non-DICOM files in folders and zips are skipped and listed in `report.skipped`. Raises `InputError`
        when nothing to upload was found, `UploadRefused` when no file was accepted (partial refusals are
        in `report.refused`; `report.raise_for_refused()` makes them an error too).
        """
        paths = list(paths)
        found, skipped = await asyncio.to_thread(find_dicom, paths)
        if not found:
            note = f"; {len(skipped)} file(s) skipped as not DICOM" if skipped else ""
            raise InputError(f"no DICOM file found in {', '.join(map(str, paths))}{note}")
        return await self.upload_files(found, skipped=skipped, on_progress=on_progress)

    async def upload_files(
        self,
        files: Sequence[DicomFile],
        *,
        skipped: Sequence[SkippedFile] = (),
        on_progress: Callable[[UploadProgress], None] | None = None,
    ) -> UploadReport:
        """Upload files already found (see `upload`)."""
        progress = UploadProgress(
            files_done=0, files_total=len(files), bytes_done=0, bytes_total=sum(f.size_bytes for f in files)
        )
        outcomes: list[FileOutcome] = []
        limits = self.batch
        for group in batches(files, lambda f: f.size_bytes, max_items=limits.max_files, max_bytes=limits.max_bytes):
            outcomes += await self._upload_splitting(group)
            progress = UploadProgress(
                files_done=progress.files_done + len(group),
                files_total=progress.files_total,
                bytes_done=progress.bytes_done + sum(f.size_bytes for f in group),
                bytes_total=progress.bytes_total,
            )
            if on_progress is not None:
                on_progress(progress)
        report = UploadReport(files=tuple(outcomes), skipped=tuple(skipped))
        if not report.accepted:
            raise UploadRefused(report)
        return report

    async def _upload_splitting(self, group: Sequence[DicomFile]) -> list[FileOutcome]:
        """One request for `group`, or, when it is too large for the platform or a proxy before it (413), one per
        half in turn, down to one file: a file too large alone is refused, and the rest are still sent."""
        try:
            return await self._upload_batch(group)
        except RequestError as exc:
            if exc.status != HTTPStatus.REQUEST_ENTITY_TOO_LARGE:
                raise
            if len(group) == 1:
                return [FileOutcome.refused(group[0].path, str(exc), code="too-large")]
        middle = len(group) // 2
        return await self._upload_splitting(group[:middle]) + await self._upload_splitting(group[middle:])

    async def _upload_batch(self, group: Sequence[DicomFile]) -> list[FileOutcome]:
        contents = await asyncio.to_thread(lambda: [f.read() for f in group])
        fields = {f"file{index}": file for index, file in enumerate(group)}
        parts = [
            (name, (file.name, data, DICOM_MEDIA_TYPE))
            for (name, file), data in zip(fields.items(), contents, strict=True)
        ]
        response = await self._send(self._api, "POST", "/studies", what=f"upload of {len(group)} file(s)", files=parts)
        body = _json_object(response)
        messages = body.get("messages")
        if not isinstance(messages, dict):  # not a per-file answer: the request as a whole was refused
            raise _http.error_for(response)
        outcomes = []
        for name, file in fields.items():
            entry = messages.get(name)
            if not isinstance(entry, dict):
                raise ProtocolError(f"the upload reply has no `messages.{name}` for {file.path}")
            outcomes.append(FileOutcome.from_reply(file.path, entry))
        return outcomes

    # -- results --------------------------------------------------------------------------------------

    async def result(self, uid: str) -> Result:
        """The result of a SOPInstanceUID, or (head CT) a SeriesInstanceUID, as it stands now.

        PENDING (202), DONE (200), UNUSABLE (206) and UNSUPPORTED (400: no use case, or not enabled for the
        source) are results; a failed image raises `ProcessingFailed`, an unknown UID `NotFound`.
        """
        response = await self._get(f"/results/{_checked_uid(uid)}")
        body = _json_object(response)
        status = {202: ResultStatus.PENDING, 200: ResultStatus.DONE, 206: ResultStatus.UNUSABLE}.get(
            response.status_code
        )
        if response.status_code == 400 and body.get("state") == InstanceState.UNSUPPORTED.value:
            status = ResultStatus.UNSUPPORTED
        if response.status_code == 500 and body.get("state") == InstanceState.FAILED.value:
            raise ProcessingFailed(uid, str(body.get("message", "processing failed")))
        if status is None:
            raise _http.error_for(response, uid=uid)
        return Result.parse(uid, status, body, retry_after_s=_http.retry_after_s(response))

    async def wait(
        self, uid: str, *, timeout_s: float = 600.0, series_uid: str | None = None, start_held: bool = True
    ) -> Result:
        """Poll `result(uid)` until it is final; raise `WaitTimeout` after `timeout_s`.

        A head-CT series waits (`held`) until `GET /compute` or its quiet period; with `start_held` the wait
        starts it by calling `compute(series_uid or uid)` once (give `series_uid` when `uid` is a slice).
        """
        started = time.monotonic()
        interval_s = self.poll.initial_interval_s
        computed = not start_held
        while True:
            try:
                result = await self.result(uid)
            except (ServerBusy, ServerError) as exc:  # a restart or a rolling update: a wait outlasts it
                if time.monotonic() - started >= timeout_s:
                    raise
                logger.warning("asking for %s failed (%s); asking again", uid, exc)
                await asyncio.sleep(min(self.poll.max_interval_s, interval_s))
                interval_s = min(self.poll.max_interval_s, interval_s * 1.5)
                continue
            if result.status.is_final:
                return result
            if not computed and result.state == InstanceState.HELD.value:
                computed = True
                try:
                    await self.compute(series_uid or uid)
                except NotFound:
                    logger.info("%s waits for its series; its quiet period will start it", uid)
            remaining = timeout_s - (time.monotonic() - started)
            if remaining <= 0:
                raise WaitTimeout(uid, waited_s=timeout_s, last_message=result.message)
            await asyncio.sleep(min(remaining, max(interval_s, result.retry_after_s or 0.0)))
            interval_s = min(self.poll.max_interval_s, interval_s * 1.5)

    async def compute(self, series_uid: str) -> ComputeStatus:
        """Start a head-CT series now (`GET /compute`), once all its slices are uploaded."""
        response = await self._get(f"/compute/{_checked_uid(series_uid)}")
        if response.status_code == 200:
            return ComputeStatus.STARTED
        if response.status_code == 304:
            return ComputeStatus.ALREADY_STARTED
        raise _http.error_for(response, uid=series_uid)

    # -- assets ---------------------------------------------------------------------------------------

    async def download(
        self, result: Result, directory: Path, *, kinds: Iterable[str] | None = None
    ) -> dict[str, list[Path]]:
        """Download the result's assets (of `kinds`, default all) into `directory`: kind → paths.

        Each reply must have the file's Content-Type (or an untyped one, when the bytes show the format),
        a Content-Length equal to what arrived, and must not be empty; files appear whole or not at all.
        """
        wanted = None if kinds is None else set(kinds)
        directory.mkdir(parents=True, exist_ok=True)
        paths: dict[str, list[Path]] = {}
        fetched: set[str] = set()  # key frames of one multi-frame object list its original once per frame
        for kind, urls in result.files.items():
            if wanted is not None and kind not in wanted:
                continue
            for url in urls:
                target = directory / _asset_name(url)
                if url not in fetched:
                    await self._fetch(url, target)
                    fetched.add(url)
                paths.setdefault(kind, []).append(target)
        return paths

    async def _fetch(self, url: str, target: Path) -> None:
        expected = MEDIA_TYPES[target.suffix]
        own = _same_origin(url, self.settings.base_url)
        client = self._api if own else self._plain
        response = await self._send(client, "GET", url, what=f"download of {target.name}", stream=True)
        try:
            with atomic_write(target) as handle:
                head = await _check_and_copy(response, url, expected, handle)
                if not _looks_like(head, target.suffix):
                    raise DownloadError(url, f"the body is not a {target.suffix} file ({expected})")
        finally:
            await response.aclose()

    async def forward(
        self, paths: Iterable[Path], destination: str | Destination, *, headers: Mapping[str, str] | None = None
    ) -> list[str]:
        """Send the `.dcm` files among `paths` to a PACS (DICOMweb URL or `AE@host:port`); the SOPInstanceUIDs
        stored. `headers` go to a DICOMweb destination (its own credentials). Raises `ForwardError`."""
        target = parse_destination(destination) if isinstance(destination, str) else destination
        files = dicom_files(paths)
        if isinstance(target, DicomWebDestination):
            extra = dict(headers or {})
            return await forward_stow(self._plain, files, target, retry=self.retry, rng=self._rng, headers=extra)
        return await asyncio.to_thread(forward_dimse, files, target)

    # -- HTTP -------------------------------------------------------------------------------------------

    async def _get(self, path: str) -> httpx.Response:
        return await self._send(self._api, "GET", path, what=f"GET {path}")

    async def _send(
        self, client: httpx.AsyncClient, method: str, url: str, *, what: str, stream: bool = False, **request: Any
    ) -> httpx.Response:
        make = partial(client.build_request, method, url, **request)
        return await _http.send(client, make, what=what, policy=self.retry, rng=self._rng, stream=stream)


class QureClient:
    """`AsyncQureClient`, blocking: each method runs the async one on this client's own event loop."""

    def __init__(
        self,
        base_url: str | None = None,
        token: str | None = None,
        source: str | None = None,
        **options: Unpack[ClientOptions],
    ) -> None:
        self.aio = AsyncQureClient(base_url, token, source, **options)
        self._runner = asyncio.Runner()

    def __repr__(self) -> str:
        return f"QureClient({self.aio.settings.base_url!r}, source={self.aio.settings.source!r})"

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._run(self.aio.aclose())
        self._runner.close()

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self._runner.run(coroutine)

    def upload(
        self, paths: Iterable[str | Path], *, on_progress: Callable[[UploadProgress], None] | None = None
    ) -> UploadReport:
        return self._run(self.aio.upload(paths, on_progress=on_progress))

    def upload_files(
        self,
        files: Sequence[DicomFile],
        *,
        skipped: Sequence[SkippedFile] = (),
        on_progress: Callable[[UploadProgress], None] | None = None,
    ) -> UploadReport:
        return self._run(self.aio.upload_files(files, skipped=skipped, on_progress=on_progress))

    def result(self, uid: str) -> Result:
        return self._run(self.aio.result(uid))

    def wait(
        self, uid: str, *, timeout_s: float = 600.0, series_uid: str | None = None, start_held: bool = True
    ) -> Result:
        return self._run(self.aio.wait(uid, timeout_s=timeout_s, series_uid=series_uid, start_held=start_held))

    def compute(self, series_uid: str) -> ComputeStatus:
        return self._run(self.aio.compute(series_uid))

    def download(self, result: Result, directory: Path, *, kinds: Iterable[str] | None = None) -> dict[str, list[Path]]:
        return self._run(self.aio.download(result, directory, kinds=kinds))

    def forward(
        self, paths: Iterable[Path], destination: str | Destination, *, headers: Mapping[str, str] | None = None
    ) -> list[str]:
        return self._run(self.aio.forward(paths, destination, headers=headers))


for _name in ("upload", "upload_files", "result", "wait", "compute", "download", "forward"):
    getattr(QureClient, _name).__doc__ = getattr(AsyncQureClient, _name).__doc__


def _checked_uid(uid: str) -> str:
    if not is_valid_uid(uid):
        raise InputError(f"{uid[:80]!r} is not a DICOM UID (digits and dots, at most 64 characters)")
    return uid


def _json_object(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _same_origin(url: str, base_url: str) -> bool:
    a, b = urlsplit(url), urlsplit(base_url)
    return (a.scheme, a.netloc) == (b.scheme, b.netloc)


def _asset_name(url: str) -> str:
    """The file name an asset URL ends with (`sc.dcm`, `report.pdf`, `<SOPInstanceUID>.dcm`), checked."""
    name = PurePosixPath(unquote(urlsplit(url).path)).name
    if name.startswith(".") or PurePosixPath(name).suffix not in MEDIA_TYPES:
        raise DownloadError(url, f"the URL does not end in a {', '.join(MEDIA_TYPES)} file name")
    return name


async def _check_and_copy(response: httpx.Response, url: str, expected: str, handle: Any) -> bytes:
    """Check the status and Content-Type, copy the body into `handle`, check its size; its first bytes."""
    if response.status_code != 200:
        await response.aread()
        raise DownloadError(url, f"HTTP {response.status_code}: {_http.message_of(response)}")
    content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != expected and content_type not in UNTYPED:
        raise DownloadError(url, f"the reply is {content_type!r}, expected {expected!r}")
    head = b""
    size = 0
    try:
        async for chunk in response.aiter_bytes(CHUNK_BYTES):
            if len(head) < 132:
                head += chunk[:132]
            size += len(chunk)
            handle.write(chunk)
    except httpx.TransportError as exc:
        raise DownloadError(url, f"the connection broke after {size} bytes ({type(exc).__name__})") from exc
    declared = response.headers.get("content-length")
    arrived = response.num_bytes_downloaded if "content-encoding" in response.headers else size
    if declared is not None and declared.isdigit() and int(declared) != arrived:
        raise DownloadError(url, f"truncated: {arrived} of {declared} bytes arrived")
    if size == 0:
        raise DownloadError(url, "the file is empty")
    return head


def _looks_like(head: bytes, suffix: str) -> bool:
    if suffix == ".dcm":
        return is_part10(head)
    if suffix == ".pdf":
        return head.startswith(b"%PDF-")
    return head.startswith(b"\x89PNG\r\n\x1a\n")
