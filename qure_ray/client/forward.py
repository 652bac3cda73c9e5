"""Forwarding DICOM files to a PACS: DICOMweb STOW-RS, or DIMSE C-STORE with pynetdicom.

A destination is written as text, the same on the command line and in code:

- `http(s)://host[:port]/path` — a DICOMweb root; files are POSTed to `{root}/studies` as
  `multipart/related; type="application/dicom"` and the `application/dicom+json` reply is checked for a
  `FailedSOPSequence`.
- `AE@host:port` (optionally `AE@host:port?calling=MYAE`) — a C-STORE SCP; one association, a presentation
  context per SOP class of the files (Secondary Capture, Comprehensive 3D SR and Encapsulated PDF always
  offered), each C-STORE status checked.

Only `.dcm` files are forwarded; others given are ignored (see `dicom_files`).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
from pydicom import dcmread
from pydicom.errors import InvalidDicomError
from pydicom.uid import (
    Comprehensive3DSRStorage,
    EncapsulatedPDFStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    SecondaryCaptureImageStorage,
)
from pynetdicom import AE
from pynetdicom.status import STATUS_SUCCESS, STATUS_WARNING, code_to_category

from qure_ray.client import _http
from qure_ray.client.errors import ClientConfigError, ForwardError, ServerBusy
from qure_ray.client.files import batches
from qure_ray.dicom.multipart import dicom_multipart
from qure_ray.dicom.stow import read_store_response

logger = logging.getLogger(__name__)
DEFAULT_CALLING_AE = "QURE_CLIENT"
DEFAULT_HOST = "127.0.0.1"
OUTPUT_SOP_CLASSES = (SecondaryCaptureImageStorage, Comprehensive3DSRStorage, EncapsulatedPDFStorage)
MAX_CONTEXTS = 128  # PS3.8: presentation context IDs are the odd numbers 1..255
STOW_MAX_FILES, STOW_MAX_BYTES = 100, 64 * 1024 * 1024


@dataclass(frozen=True)
class DicomWebDestination:
    url: str
    """The DICOMweb root, without a trailing slash."""

    def __str__(self) -> str:
        return self.url


@dataclass(frozen=True, kw_only=True)
class DimseDestination:
    ae_title: str
    host: str
    port: int
    calling_ae: str = DEFAULT_CALLING_AE

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


Destination = DicomWebDestination | DimseDestination


def parse_destination(text: str) -> Destination:
    """`http(s)://...` → DICOMweb; `AE@host:port[?calling=AE]` → DIMSE. Raises `ClientConfigError`."""
    if text.startswith(("http://", "https://")):
        if not urlsplit(text).netloc:
            raise ClientConfigError(f"{text!r} has no host; write the DICOMweb root, e.g. http://pacs:8042/dicom-web")
        return DicomWebDestination(text.rstrip("/"))
    return parse_ae_address(text)


def parse_ae_address(text: str, *, default_host: str = DEFAULT_HOST) -> DimseDestination:
    """`AE@host:port`, `AE@port` (host `default_host`), with an optional `?calling=AE` for the calling title."""
    address, _, query = text.partition("?")
    ae_title, at, host_port = address.partition("@")
    host, colon, port = host_port.rpartition(":")
    if not colon:
        host, port = "", host_port
    calling = parse_qs(query).get("calling", [DEFAULT_CALLING_AE])[0]
    if not at or not port.isdigit() or int(port) > 65535:
        raise ClientConfigError(
            f"{text!r} is neither a DICOMweb URL (http://...) nor a DIMSE address; write AE@host:port, "
            "e.g. PACS@10.0.0.5:104 (add ?calling=MYAE to choose the calling AE title)"
        )
    for title in (ae_title, calling):
        if not 1 <= len(title) <= 16 or "\\" in title or not title.isprintable():
            raise ClientConfigError(f"AE title {title!r} in {text!r} must be 1 to 16 printable characters")
    host = host.strip("[]") or default_host
    return DimseDestination(ae_title=ae_title, host=host, port=int(port), calling_ae=calling)


def dicom_files(paths: Iterable[Path]) -> list[Path]:
    """The `.dcm` files among `paths` (assets also include PNG and PDF, which a PACS does not take)."""
    return [path for path in paths if path.suffix.lower() == ".dcm"]


async def forward_stow(
    client: httpx.AsyncClient,
    paths: Sequence[Path],
    destination: DicomWebDestination,
    *,
    retry: _http.RetryPolicy,
    rng: random.Random,
    headers: dict[str, str] | None = None,
) -> list[str]:
    """STOW-RS the files in batches; the SOPInstanceUIDs stored. Raises `ForwardError`."""
    stored: list[str] = []
    for batch in batches(paths, lambda p: p.stat().st_size, max_items=STOW_MAX_FILES, max_bytes=STOW_MAX_BYTES):
        body, content_type = dicom_multipart([path.read_bytes() for path in batch])
        request_headers = {
            **(headers or {}),
            "Content-Type": content_type,
            "Accept": "application/dicom+json",
        }
        make = partial(
            client.build_request, "POST", f"{destination.url}/studies", content=body, headers=request_headers
        )
        try:
            response = await _http.send(
                client,
                make,
                what=f"STOW-RS to {destination}",
                policy=retry,
                rng=rng,
            )
        except ServerBusy as exc:
            raise ForwardError(str(destination), str(exc)) from exc
        stored += _check_stow_reply(response, destination, [_header(path, destination)[2] for path in batch])
    return stored


def _check_stow_reply(response: httpx.Response, destination: DicomWebDestination, sent: list[str]) -> list[str]:
    failed = [f"{uid} (FailureReason 0x{reason:04X})" for uid, reason in read_store_response(response.content).failed]
    if failed or response.status_code not in (200, 202):
        problem = f"HTTP {response.status_code}: {_http.message_of(response)}"
        count = len(failed) or len(sent)
        raise ForwardError(str(destination), f"{count} instance(s) not stored ({problem})", failed=failed)
    return sent


def forward_dimse(paths: Sequence[Path], destination: DimseDestination, *, timeout_s: float = 60.0) -> list[str]:
    """C-STORE the files over one association (blocking); the SOPInstanceUIDs stored. Raises `ForwardError`."""
    if not paths:
        return []
    headers = {path: _header(path, destination) for path in paths}
    contexts: dict[str, set[str]] = {sop_class: set() for sop_class in OUTPUT_SOP_CLASSES}
    for sop_class, transfer_syntax, _ in headers.values():
        contexts.setdefault(sop_class, set()).add(transfer_syntax)
    if len(contexts) > MAX_CONTEXTS:
        raise ForwardError(str(destination), f"the files have {len(contexts)} SOP classes; send at most {MAX_CONTEXTS}")
    ae = AE(ae_title=destination.calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout_s
    for sop_class, syntaxes in contexts.items():
        ae.add_requested_context(sop_class, sorted(syntaxes | {ExplicitVRLittleEndian, ImplicitVRLittleEndian}))
    association = ae.associate(destination.host, destination.port, ae_title=destination.ae_title)
    if not association.is_established:
        reason = "rejected" if association.is_rejected else "aborted or not answered"
        raise ForwardError(
            str(destination),
            f"the association was {reason}; check the called AE title, host, port and that the PACS knows the "
            f"calling AE title {destination.calling_ae!r}",
        )
    stored: list[str] = []
    failed: list[str] = []
    try:
        for path, (sop_class, _, sop_uid) in headers.items():
            outcome = _c_store(association, path, sop_class)
            (failed if outcome else stored).append(f"{sop_uid} ({outcome})" if outcome else sop_uid)
    finally:
        association.release()
    if failed:
        raise ForwardError(str(destination), f"{len(failed)} of {len(paths)} instance(s) not stored", failed=failed)
    return stored


def _header(path: Path, destination: Destination) -> tuple[str, str, str]:
    """(SOPClassUID, TransferSyntaxUID, SOPInstanceUID) of a Part 10 file."""
    try:
        ds = dcmread(path, stop_before_pixels=True)
        return str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID), str(ds.SOPInstanceUID)
    except (InvalidDicomError, OSError, AttributeError) as exc:
        raise ForwardError(str(destination), f"{path} is not a readable DICOM Part 10 file: {exc}") from exc


def _c_store(association: Any, path: Path, sop_class: str) -> str:
    """Send one file; '' when stored, else what went wrong."""
    try:
        status = association.send_c_store(dcmread(path))
    except ValueError as exc:  # pynetdicom: no accepted presentation context fits the data set
        return f"the PACS accepted no presentation context for SOP class {sop_class}: {exc}"
    except (RuntimeError, OSError) as exc:
        return f"the association broke: {exc}"
    if "Status" not in status:
        return "no C-STORE response (timeout or connection lost)"
    code = int(status.Status)
    category = code_to_category(code)  # PS3.7 C.4.2.1.4: a warning (0x0001, 0x0107, 0x0116, 0xBxxx) was stored
    if category == STATUS_WARNING:
        logger.warning("the PACS stored %s with warning status 0x%04X", path.name, code)
        return ""
    return "" if category == STATUS_SUCCESS else f"C-STORE status 0x{code:04X}"
