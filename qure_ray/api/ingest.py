"""Ingest of one uploaded object: validate → store the original → record it in the catalog → enqueue.

Nothing of a refused object is stored. An object is visible (catalog row, queued) only after it is on
the object store; the same content under the same UID is accepted again without new work. An instance that
no use case reads (a knee radiograph, a CT of the abdomen: most of what a PACS forwards) is settled here, as
`unsupported` with the routing's reason, in the same catalog write that records it: the queue, the job
manager and two more catalog writes never see it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from qure_ray import metrics
from qure_ray.api.platform import Platform
from qure_ray.dicom import InstanceMetadata, read_instance
from qure_ray.dicom.instance import identify
from qure_ray.dicom.validation import Rules
from qure_ray.errors import InvalidInstanceError, ObjectChangedError, ObjectMissingError, StorageError, Violation
from qure_ray.media_types import DICOM_MEDIA_TYPE
from qure_ray.records import IngestOutcomeKind, InstanceRecord, InstanceState, ResultRecord, UseCase
from qure_ray.routing import InstanceFacts
from qure_ray.storage.catalog import ingest_log_row, now
from qure_ray.storage.keys import dicom_key
from qure_ray.storage.reconcile import DEFAULT_GRACE_S as ORPHAN_GRACE_S
from qure_ray.storage.reconcile import modified_at

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class IngestOutcome:
    field: str
    created: bool
    message: str
    metadata: InstanceMetadata | None = None
    violation: Violation | None = None
    identity: tuple[str, str] = ("", "")
    """(SOPClassUID, SOPInstanceUID) of a refused object, when they could be read."""

    @property
    def sop_class_uid(self) -> str:
        return self.metadata.sop_class_uid if self.metadata else self.identity[0]

    @property
    def sop_uid(self) -> str:
        return self.metadata.sop_uid if self.metadata else self.identity[1]

    @property
    def accepted(self) -> bool:
        return self.violation is None

    def to_reply(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "message": self.message,
            "created": self.created,
            "metadata": self.metadata.to_reply() if self.metadata else {},
        }
        if self.violation:
            entry["error"] = {
                "code": self.violation.code,
                "tag": self.violation.tag,
                "status": self.violation.http_status,
            }
        return entry


def refused(field: str, violation: Violation, data: bytes = b"") -> IngestOutcome:
    return IngestOutcome(
        field, False, violation.message, violation=violation, identity=identify(data) if data else ("", "")
    )


def count_outcome(source: str, outcome: IngestOutcome, size_bytes: int) -> None:
    """Upload metrics: every object any edge received, once, with what became of it."""
    label = "refused" if outcome.violation else "stored" if outcome.created else "duplicate"
    metrics.count_upload(source, label, size_bytes)
    if outcome.violation:
        metrics.count_failure("ingest", outcome.violation.code)


AfterParse = Callable[[str], Awaitable[None]]
"""Awaited with the SOPInstanceUID once an upload is parsed and before anything is looked up or stored: a request
of several parts orders its parts of one UID by it (`api.uploads`)."""


async def ingest(
    platform: Platform,
    *,
    source: str,
    field: str,
    data: bytes,
    expected_study: str | None = None,
    after_parse: AfterParse | None = None,
) -> IngestOutcome:
    """Validate, store and enqueue one object. `expected_study`: the StudyInstanceUID the URL names."""
    outcome = await _ingest(
        platform, source=source, field=field, data=data, expected_study=expected_study, after_parse=after_parse
    )
    count_outcome(source, outcome, len(data))
    return outcome


async def _ingest(
    platform: Platform,
    *,
    source: str,
    field: str,
    data: bytes,
    expected_study: str | None,
    after_parse: AfterParse | None,
) -> IngestOutcome:
    try:
        parsed = await asyncio.to_thread(read_instance, data, max_bytes=platform.settings.max_instance_bytes)
    except InvalidInstanceError as exc:
        # not the field's name: it is the client's, and a PACS export's file names can hold a patient's name
        logger.info("refused an upload from source %s: %s", source, exc.code)
        return refused(field, exc.violation, data)
    metadata = parsed.metadata
    if expected_study is not None and metadata.study_uid != expected_study:
        violation = Rules.STUDY_MISMATCH.value.violation(f"{metadata.study_uid} differs from {expected_study}")
        return IngestOutcome(field, False, violation.message, metadata, violation)
    if after_parse is not None:
        await after_parse(metadata.sop_uid)
    existing = await platform.find_instance(source, metadata.sop_uid)
    if existing is not None and existing.sha256 == metadata.sha256:
        return await _duplicate(platform, source, field, metadata)
    if existing is not None and not platform.settings.may_overwrite(source):
        return await _conflict(platform, source, field, metadata, existing.sha256)
    try:
        async with asyncio.timeout(RECORD_WITHIN_S):
            return await _store_and_record(platform, source, field, data, metadata, existing)
    except TimeoutError as exc:
        raise StorageError(f"storing and recording {metadata.sop_uid} took over {RECORD_WITHIN_S:g} s") from exc


RECORD_WITHIN_S = ORPHAN_GRACE_S / 2
"""The longest an upload may take from writing its original to recording it. Past reconciliation's grace period
an unrecorded original counts as an orphan (replaced by another upload, removed), so an upload stuck that long
must fail (and be sent again), not be told it stored what another upload replaced."""


async def _store_and_record(
    platform: Platform,
    source: str,
    field: str,
    data: bytes,
    metadata: InstanceMetadata,
    existing: InstanceRecord | None,
) -> IngestOutcome:
    """Store the original (new, or over the existing content when the source may overwrite) and record it."""
    may_overwrite = platform.settings.may_overwrite(source)
    key = dicom_key(source, metadata.study_uid, metadata.series_uid, metadata.sop_uid)
    replaced = existing.sha256 if existing is not None else await _store_once(platform, key, data, metadata, source)
    overwrite = False
    if replaced is not None and replaced != metadata.sha256:
        if not may_overwrite:  # another upload of this UID stored other content a moment ago
            return await _conflict(platform, source, field, metadata, replaced)
        overwrite = True
        await asyncio.to_thread(platform.store.put, key, data, media_type=DICOM_MEDIA_TYPE, sha256=metadata.sha256)
    record = InstanceRecord(
        **metadata.to_row(), source=source, object_key=key, received_at=now(), state=InstanceState.QUEUED
    )
    if overwrite:  # logged as the store changed, whether or not the record below lands
        await platform.log_ingest(
            ingest_log_row(source, metadata.sop_uid, IngestOutcomeKind.OVERWRITTEN, metadata.sha256, replaced or "")
        )
    decision = platform.router.route(InstanceFacts.of(metadata, source=source))
    unsupported = decision.usecase is UseCase.UNSUPPORTED
    if unsupported:
        result = ResultRecord.without_model(source, metadata.sop_uid, InstanceState.UNSUPPORTED, decision.reason)
        recorded = await platform.record_settled(record, result)
    else:
        recorded = await platform.record_and_enqueue(record)
    if not recorded:  # another upload of this content recorded it first (both stored the same bytes)
        return await _duplicate(platform, source, field, metadata)
    if unsupported:
        metrics.count_failure("processing", InstanceState.UNSUPPORTED.value)  # as when the job manager settled it
        logger.info("stored %s of source %s (%d bytes), unsupported", metadata.sop_uid, source, metadata.size_bytes)
        return IngestOutcome(field, True, f"stored; not processed: {decision.reason}", metadata)
    logger.info("stored %s of source %s (%d bytes), queued", metadata.sop_uid, source, metadata.size_bytes)
    message = "overwrote the earlier content and queued it again" if overwrite else "stored and queued for processing"
    return IngestOutcome(field, True, message, metadata)


CREATE_ATTEMPTS = 3


async def _store_once(platform: Platform, key: str, data: bytes, metadata: InstanceMetadata, source: str) -> str | None:
    """Store a new original unless its key already holds one: None when stored, else the SHA-256 of the one
    there. That one is another upload's of the same UID, which got there first (two concurrent uploads: without
    the condition both were told "created" and the last write won), or one no catalog row names (an orphan),
    which is replaced, or written afresh when it has this content."""
    for _ in range(CREATE_ATTEMPTS):
        try:
            await asyncio.to_thread(
                platform.store.put_unless_changed,
                key, data, version=None, media_type=DICOM_MEDIA_TYPE, sha256=metadata.sha256,
            )  # fmt: skip
            return None
        except ObjectChangedError:
            try:
                stored, version = await asyncio.to_thread(platform.store.get_versioned, key)
            except ObjectMissingError:  # S3's 409: another conditional write still in progress, or undone
                continue
        stored_sha256 = hashlib.sha256(stored).hexdigest()
        if not await _unrecorded_for(platform, key, source, metadata.sop_uid, stored_sha256 == metadata.sha256):
            return stored_sha256
        try:
            await asyncio.to_thread(
                platform.store.put_unless_changed,
                key, data, version=version, media_type=DICOM_MEDIA_TYPE, sha256=metadata.sha256,
            )  # fmt: skip
        except (ObjectChangedError, ObjectMissingError):  # written again, or reconciled away, meanwhile: look again
            continue
        logger.info("wrote over an unrecorded original of %s of source %s", metadata.sop_uid, source)
        return None
    raise StorageError(f"storing {key} kept meeting another upload of it; try again")


async def _unrecorded_for(platform: Platform, key: str, source: str, sop_uid: str, same_content: bool) -> bool:
    """Whether the original at `key` is an orphan this upload writes over: left by an upload that failed after
    storing it and was never told it was stored, so no catalog row names it.

    - Other content: once older than reconciliation's grace period. Until the hourly reconciliation removes it,
      it would refuse a source that may not overwrite every re-upload. A younger one may be another upload's
      still on its way to the catalog, which must not lose its content.
    - The same content: once well older than an upload may take to record it. Written afresh, it is young again
      when reconciliation checks it once more before deleting it (this upload is about to record it)."""
    written_at = await asyncio.to_thread(modified_at, platform.store, key)
    age_s = RECORD_WITHIN_S + 60 if same_content else ORPHAN_GRACE_S  # a minute past any live upload's deadline
    if written_at is None or written_at > time.time() - age_s:
        return False
    return await platform.find_instance(source, sop_uid) is None


async def _duplicate(platform: Platform, source: str, field: str, metadata: InstanceMetadata) -> IngestOutcome:
    await platform.log_ingest(ingest_log_row(source, metadata.sop_uid, IngestOutcomeKind.DUPLICATE, metadata.sha256))
    return IngestOutcome(field, False, "already stored with the same content; not processed again", metadata)


async def _conflict(
    platform: Platform, source: str, field: str, metadata: InstanceMetadata, stored_sha256: str
) -> IngestOutcome:
    violation = Rules.DUPLICATE_CONFLICT.value.violation(
        f"{metadata.sop_uid} was stored with sha256 {stored_sha256[:12]}..., this upload has {metadata.sha256[:12]}..."
    )
    await platform.log_ingest(
        ingest_log_row(source, metadata.sop_uid, IngestOutcomeKind.CONFLICT, metadata.sha256, stored_sha256)
    )
    return IngestOutcome(field, False, violation.message, metadata, violation)


def qure_reply(outcomes: list[IngestOutcome]) -> tuple[int, dict[str, Any]]:
    """The Qure-style upload reply and its HTTP status: 200 when anything was accepted."""
    accepted = [o for o in outcomes if o.accepted]
    refused = [o for o in outcomes if not o.accepted]
    if accepted:
        status = 200
    else:
        statuses = {o.violation.http_status for o in refused if o.violation}
        status = statuses.pop() if len(statuses) == 1 else 400
    if not refused:
        message = f"{len(accepted)} file(s) accepted"
    elif accepted:
        message = f"{len(accepted)} of {len(outcomes)} file(s) accepted; see messages for the refused ones"
    else:
        message = f"no file accepted: {refused[0].message}" if len(refused) == 1 else "no file accepted; see messages"
    body = {
        "message": message,
        "status": status,
        "messages": {o.field: o.to_reply() for o in outcomes},
        "series_instance_uids": sorted({o.metadata.series_uid for o in accepted if o.metadata}),
        "detailed_info": {
            "received": len(outcomes),
            "accepted": len(accepted),
            "created": sum(o.created for o in accepted),
            "already_stored": sum(not o.created for o in accepted),
            "refused": [
                {"field": o.field, "code": o.violation.code, "message": o.message} for o in refused if o.violation
            ],
        },
    }
    return status, body
