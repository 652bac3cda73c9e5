"""`ingest` over the in-memory platform: what is stored, queued or settled."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import time
from pathlib import Path

import pydicom
import pytest

from qure_ray.api.ingest import ingest
from qure_ray.dicom.synthetic import chest_dx, to_bytes
from qure_ray.errors import StorageError
from qure_ray.records import InstanceState, UseCase
from tests.unit.client_platform import SOURCE, MemoryPlatform, memory_platform


def sop_of(data: bytes) -> str:
    return str(pydicom.dcmread(io.BytesIO(data)).SOPInstanceUID)


def test_an_image_no_use_case_reads_is_stored_and_settled_without_the_queue(tmp_path: Path) -> None:
    platform = memory_platform(tmp_path)
    abdomen, chest = chest_dx(seed=1, modality="CT", body_part="ABDOMEN", view_position=""), chest_dx(seed=2)
    outcomes = [asyncio.run(ingest(platform, source=SOURCE, field="f", data=data)) for data in (abdomen, chest)]

    assert [o.created for o in outcomes] == [True, True]
    assert outcomes[0].message.startswith("stored; not processed: no use case for Modality CT")
    assert platform.enqueued == {sop_of(chest): 1}
    assert platform.instances[sop_of(abdomen)].state is InstanceState.UNSUPPORTED
    result = platform.results[sop_of(abdomen)]
    assert result.usecase is UseCase.UNSUPPORTED and "ABDOMEN" in result.reason
    assert len(list(tmp_path.rglob("*.dcm"))) == 2  # both originals are stored


def two_contents_of_one_uid(seed: int) -> tuple[bytes, bytes, str]:
    """Two instances with the same UIDs and other pixels, and the key of their original."""
    first = chest_dx(seed=seed)
    ds, other = pydicom.dcmread(io.BytesIO(first)), pydicom.dcmread(io.BytesIO(chest_dx(seed=seed + 1)))
    other.StudyInstanceUID, other.SeriesInstanceUID = ds.StudyInstanceUID, ds.SeriesInstanceUID
    other.SOPInstanceUID = other.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    key = f"dicom/{SOURCE}/{ds.StudyInstanceUID}/{ds.SeriesInstanceUID}/{ds.SOPInstanceUID}.dcm"
    return first, to_bytes(other), key


def test_an_original_another_upload_stored_first_is_never_overwritten(tmp_path: Path) -> None:
    """Two uploads of one UID in flight together: the first to store wins, as if the other came after it."""
    platform = memory_platform(tmp_path)
    winner, loser, key = two_contents_of_one_uid(seed=3)
    platform.store.put(key, winner)  # stored by the winner, whose catalog row has not landed yet

    outcome = asyncio.run(ingest(platform, source=SOURCE, field="f", data=loser))
    assert outcome.violation is not None and outcome.violation.code == "duplicate-conflict"
    assert platform.store.get(key) == winner and platform.enqueued == {}

    again = asyncio.run(ingest(platform, source=SOURCE, field="f", data=winner))  # the same content: recorded
    assert again.created and platform.enqueued == {sop_of(winner): 1}
    assert platform.store.get(key) == winner


def test_the_second_of_two_uploads_of_the_same_content_at_once_is_a_duplicate(tmp_path: Path) -> None:
    """Both find no record (the first has not recorded yet when the second looks) and both store the same bytes;
    the catalog records only the first, and the second is answered as a duplicate, not queued again."""

    class LookingTooEarly(MemoryPlatform):
        async def find_instance(self, source: str, sop_uid: str) -> None:
            return None

    plain = memory_platform(tmp_path)
    platform = LookingTooEarly(plain.settings, plain.store, plain.router)
    chest = chest_dx(seed=9)
    first, second = (asyncio.run(ingest(platform, source=SOURCE, field="f", data=chest)) for _ in range(2))

    assert first.created and not second.created and second.accepted
    assert second.message == "already stored with the same content; not processed again"
    assert platform.enqueued == {sop_of(chest): 1}
    assert [row["outcome"] for row in platform.logged] == ["duplicate"]


def test_a_conditional_create_that_meets_an_unfinished_one_tries_again(tmp_path: Path) -> None:
    """S3 answers 409 to the second of two conditional writes in flight together; the first may yet fail."""
    from qure_ray.errors import ObjectChangedError
    from qure_ray.storage import LocalObjectStore

    class RacingStore(LocalObjectStore):
        raced = False

        def put_unless_changed(self, key: str, data: bytes, **options: object) -> str:
            if not self.raced:
                self.raced = True
                raise ObjectChangedError("409 ConditionalRequestConflict")  # and nothing is there to read
            return super().put_unless_changed(key, data, **options)  # type: ignore[arg-type]

    platform = memory_platform(tmp_path)
    platform.store = RacingStore(tmp_path)
    data = chest_dx(seed=7)
    outcome = asyncio.run(ingest(platform, source=SOURCE, field="f", data=data))
    assert outcome.created and platform.enqueued == {sop_of(data): 1}


def platform_with_an_hour_old_orphan(tmp_path: Path, *, seed: int) -> tuple[MemoryPlatform, bytes, bytes, str]:
    """A platform whose store holds an original no catalog row names, an hour old; that original, another
    content of its UID, and its key."""
    platform = memory_platform(tmp_path)
    orphan, other, key = two_contents_of_one_uid(seed=seed)
    platform.store.put(key, orphan)
    hour_ago = time.time() - 3600
    os.utime(tmp_path / key, (hour_ago, hour_ago))
    return platform, orphan, other, key


def test_an_orphaned_original_gives_way_to_an_upload_with_other_content(tmp_path: Path) -> None:
    """An upload that failed after storing its original left it without a catalog row, and its sender was never
    told it was stored: past reconciliation's grace period, a new upload of that UID replaces it."""
    platform, _, upload, key = platform_with_an_hour_old_orphan(tmp_path, seed=5)

    outcome = asyncio.run(ingest(platform, source=SOURCE, field="f", data=upload))
    assert outcome.created and outcome.violation is None
    assert platform.store.get(key) == upload and platform.enqueued == {sop_of(upload): 1}
    assert platform.instances[sop_of(upload)].sha256 == hashlib.sha256(upload).hexdigest()


def test_an_upload_that_cannot_record_its_original_in_time_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the grace period an unrecorded original counts as an orphan, which another upload may replace: an
    upload stuck that long must not be told it stored it."""
    from qure_ray.api import ingest as ingest_module

    platform = memory_platform(tmp_path)

    async def stuck(record: object) -> None:
        await asyncio.sleep(30)

    platform.record_and_enqueue = stuck  # type: ignore[method-assign]
    monkeypatch.setattr(ingest_module, "RECORD_WITHIN_S", 0.2)
    with pytest.raises(StorageError, match=r"took over 0\.2 s"):
        asyncio.run(ingest(platform, source=SOURCE, field="f", data=chest_dx(seed=9)))


def test_an_orphaned_original_with_the_uploaded_content_is_written_afresh(tmp_path: Path) -> None:
    """Reconciliation checks an orphan's age once more before deleting it: the upload that adopts one makes it
    young again, so it is not deleted under the catalog row about to name it."""
    platform, orphan, _, key = platform_with_an_hour_old_orphan(tmp_path, seed=11)

    outcome = asyncio.run(ingest(platform, source=SOURCE, field="f", data=orphan))
    assert outcome.created and platform.enqueued == {sop_of(orphan): 1}
    assert (tmp_path / key).stat().st_mtime > time.time() - 60 and platform.store.get(key) == orphan


def test_an_orphan_reconciled_away_while_it_is_replaced_is_stored_anew(tmp_path: Path) -> None:
    """Reconciliation deleted the orphan between the look at it and the write over it: S3 answers the
    conditional write 404, and the upload stores its original as new."""
    from qure_ray.errors import ObjectMissingError
    from qure_ray.storage import LocalObjectStore

    platform, _, upload, key = platform_with_an_hour_old_orphan(tmp_path, seed=13)

    class ReconciledMeanwhile(LocalObjectStore):
        def put_unless_changed(self, key: str, data: bytes, **options: object) -> str:
            if options.get("version") is not None:
                self.delete(key)
                raise ObjectMissingError(f"{key} is gone")
            return super().put_unless_changed(key, data, **options)  # type: ignore[arg-type]

    platform.store = ReconciledMeanwhile(tmp_path)
    outcome = asyncio.run(ingest(platform, source=SOURCE, field="f", data=upload))
    assert outcome.created and platform.store.get(key) == upload
