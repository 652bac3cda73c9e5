"""Which failures leave work to be tried again (`is_platform_failure`)."""

from __future__ import annotations

import threading

import pytest
from ray.exceptions import RayActorError, RayError, RayTaskError
from ray.serve.exceptions import BackPressureError

from qure_ray.errors import StorageError
from qure_ray.ray_failures import is_platform_failure


def task_error(cause: BaseException) -> RayTaskError:
    return RayTaskError("preprocess", "Traceback: ...", cause)


@pytest.mark.parametrize(
    "failure",
    [
        RayActorError(),
        TimeoutError(),
        ConnectionError(),
        task_error(ConnectionError("lost")),
        BackPressureError(num_queued_requests=5, max_queued_requests=5),  # Serve's, not a RayError
    ],
)
def test_ray_s_own_failures_timeouts_and_lost_connections_are_the_platform_s(failure: BaseException) -> None:
    assert is_platform_failure(failure)


def test_the_code_s_own_failures_are_final() -> None:
    assert not is_platform_failure(ValueError("a bug"))
    assert not is_platform_failure(task_error(KeyError("a bug in a deployment")))
    assert not is_platform_failure(StorageError("S3 down"))  # the job manager's own attempts retry storage


def test_a_task_error_whose_cause_ray_could_not_pickle_is_the_code_s() -> None:
    unpicklable = task_error(ValueError(threading.Lock()))
    assert type(unpicklable.cause) is RayError  # Ray's stand-in, a RayError like its own failures
    assert not is_platform_failure(unpicklable)


def test_kinds_a_caller_adds_count_bare_or_inside_a_task_error() -> None:
    assert is_platform_failure(StorageError("S3 down"), also=(StorageError,))
    assert is_platform_failure(task_error(StorageError("S3 down")), also=(StorageError,))
