"""Errors cross processes pickled (Ray tasks, process pools): each of qure_ray's own must come back as the same
type with its message and fields."""

from __future__ import annotations

import pickle

import pytest

from qure_ray.client import errors as client
from qure_ray.client.models import FileOutcome, UploadReport
from qure_ray.dicom.validation import Rules
from qure_ray.errors import BadRequestError, InvalidInstanceError, OverloadedError, QureError, StorageError
from qure_ray.storage.writer_lease import LeaseHeldError

SAMPLES: list[QureError] = [
    OverloadedError(queue_depth=12, max_queue_depth=10, retry_after_s=7),
    BadRequestError("no boundary", http_status=415),
    InvalidInstanceError(Rules.NOT_DICOM.value.violation("no 'DICM' prefix")),
    StorageError("S3 put failed"),
    LeaseHeldError("another deployment writes this catalog"),
    client.AuthenticationError("token refused", status=401),
    client.DownloadError("http://x/a.dcm", "404"),
    client.ForwardError("PACS@h:104", "association refused", failed=["1.2.3"]),
    client.NotFound("1.2.3", "unknown uid"),
    client.ProcessingFailed("1.2.3", "unreadable"),
    client.ServerBusy("upload", attempts=3, last="503"),
    client.WaitTimeout("1.2.3", waited_s=30.0, last_message="queued"),
    client.WebhookSignatureError("bad signature"),
]


@pytest.mark.parametrize("error", SAMPLES, ids=lambda error: type(error).__name__)
def test_an_error_survives_pickling_with_its_type_and_fields(error: QureError) -> None:
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error) and str(copy) == str(error) and copy.args == error.args
    assert vars(copy) == vars(error)


def test_an_upload_refusal_keeps_its_report() -> None:
    refused = FileOutcome(path="a.dcm", sop_uid="", series_uid="", study_uid="", accepted=False, created=False,
                          message="not DICOM", code="not-dicom")  # fmt: skip
    report = UploadReport(files=(refused,))
    copy = pickle.loads(pickle.dumps(client.UploadRefused(report)))
    assert isinstance(copy, client.UploadRefused) and copy.report == report and "not DICOM" in str(copy)


def test_a_task_that_finds_bad_pixel_data_reaches_the_job_manager_as_invalid_instance() -> None:
    """What the job manager gets when `preprocess` raises: it records UNUSABLE with the reason, not retried,
    only when the cause comes back as InvalidInstanceError (before, Ray answered UnserializableException)."""
    from ray import cloudpickle
    from ray.exceptions import RayTaskError

    cause = Rules.UNREADABLE.value.fail("pixel data could not be decoded")
    error = RayTaskError("preprocess", "traceback", cause).as_instanceof_cause()
    copy = cloudpickle.loads(cloudpickle.dumps(error))
    assert isinstance(copy.cause, InvalidInstanceError) and copy.cause.code == cause.code
    assert str(copy.cause) == str(cause)
