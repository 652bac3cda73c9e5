"""The bench's ingest counts an upload only when the Store Instances Response says it was stored."""

from __future__ import annotations

import json

import pytest

from qure_ray.bench.workloads import _not_stored
from qure_ray.dicom.stow import FailedInstance, StoredInstance, store_instances_response

CT = "1.2.840.10008.5.1.4.1.1.2"
STORED = StoredInstance(CT, "1.2.3.1", "http://pacs/studies/1/series/2/instances/1.2.3.1")
FAILED = FailedInstance(CT, "1.2.3.2", 0xA700)


@pytest.mark.parametrize(
    ("stored", "failed", "not_stored"),
    [([STORED], [], False), ([], [FAILED], True), ([STORED], [FAILED], True), ([STORED, STORED], [], True)],
    ids=["stored", "failed", "stored-and-failed", "two-for-one"],
)
def test_a_response_counts_as_stored_only_with_one_referenced_and_no_failed_instance(
    stored: list[StoredInstance], failed: list[FailedInstance], not_stored: bool
) -> None:
    _, body = store_instances_response(stored, failed, study_url=None)
    assert _not_stored(json.dumps(body)) is not_stored


def test_a_response_that_is_no_store_instances_response_is_not_counted() -> None:
    assert _not_stored("<html>OK</html>") and _not_stored("{}")
