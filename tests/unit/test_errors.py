"""Errors cross Ray calls pickled: each of qure_ray's own must come back as the same type with its fields."""

from __future__ import annotations

import pickle

import pytest

from qure_ray.dicom.validation import Rules
from qure_ray.errors import BadRequestError, InvalidInstanceError, OverloadedError, QureError, StorageError
from qure_ray.storage.writer_lease import LeaseHeldError

SAMPLES: list[QureError] = [
    OverloadedError(queue_depth=12, max_queue_depth=10, retry_after_s=7),
    BadRequestError("no boundary", http_status=415),
    InvalidInstanceError(Rules.NOT_DICOM.value.violation("no 'DICM' prefix")),
    StorageError("S3 put failed"),
    LeaseHeldError("another deployment writes this catalog"),
]


@pytest.mark.parametrize("error", SAMPLES, ids=lambda error: type(error).__name__)
def test_an_error_survives_pickling_with_its_type_and_fields(error: QureError) -> None:
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error) and str(copy) == str(error)
    assert vars(copy) == vars(error)


def test_a_task_that_finds_bad_pixel_data_reaches_the_job_manager_as_invalid_instance() -> None:
    """What the job manager gets when `preprocess` raises: it records UNUSABLE with the reason, not retried,
    only when the cause comes back as InvalidInstanceError (before, unpickling it raised AttributeError)."""
    from ray import cloudpickle
    from ray.exceptions import RayTaskError

    cause = Rules.UNREADABLE.value.fail("pixel data could not be decoded")
    error = RayTaskError("preprocess", "traceback", cause).as_instanceof_cause()
    copy = cloudpickle.loads(cloudpickle.dumps(error))
    assert isinstance(copy.cause, InvalidInstanceError) and copy.cause.code == cause.code
    assert str(copy.cause) == str(cause)
