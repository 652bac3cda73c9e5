"""The one exception hierarchy of qure_ray.

Foreign errors (pydicom, botocore, Ray) are translated into these at the module that calls the
foreign library; the HTTP layer maps them to responses in one place (`qure_ray.api.errors`).

    QureError
     ├── ConfigError            a setting, model card or config file is invalid (stops start-up)
     ├── AuthError              401: missing or unknown token
     │    └── ForbiddenError    403: Source header missing or not the token's source
     ├── InvalidInstanceError   4xx: an uploaded object is not an acceptable DICOM instance
     ├── BadRequestError        400: the request itself is malformed (not one instance's fault)
     ├── NotFoundError          404: unknown UID, or one that belongs to another source
     ├── OverloadedError        503: the queue is full (backpressure), retry later
     ├── StorageError           the object store or catalog failed (5xx, retried by the pipeline)
     └── ModelError             a model could not be loaded or run
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class QureError(Exception):
    """Base class of every error qure_ray raises on purpose.

    Errors cross processes pickled (a Ray task's error reaches its caller so; so does a client error in a
    process pool). Pickle's default rebuilds an exception as `cls(*args)`, which fails for every subclass whose
    constructor takes other arguments than the message it passes on (Ray then hands over an
    `UnserializableException` instead). So every subclass is rebuilt from its `args` and attributes, without
    calling its constructor."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_error, (type(self), self.args, self.__dict__))


def _rebuild_error(cls: type[QureError], args: tuple[Any, ...], state: dict[str, Any]) -> QureError:
    error = cls.__new__(cls, *args)  # BaseException.__new__ sets `args`; the constructor is not called
    error.__dict__.update(state)
    return error


class ConfigError(QureError):
    """A setting, model card or configuration file is invalid."""


class AuthError(QureError):
    """The request has no valid token (HTTP 401)."""


class ForbiddenError(AuthError):
    """The token is valid but the Source header is missing or is not the token's (HTTP 403)."""


@dataclass(frozen=True)
class Violation:
    """One broken validation rule: its code, the tag it concerns and a message saying how to fix it."""

    code: str
    tag: str
    message: str
    http_status: int = 400
    failure_reason: int = 0xC000
    """The DICOM failure reason (PS3.18 Table I.2-2) a STOW-RS reply or a C-STORE status reports."""


class InvalidInstanceError(QureError):
    """An uploaded object is not an acceptable DICOM instance."""

    def __init__(self, violation: Violation) -> None:
        super().__init__(violation.message)
        self.violation = violation

    @property
    def code(self) -> str:
        return self.violation.code

    @property
    def http_status(self) -> int:
        return self.violation.http_status


class BadRequestError(QureError):
    """The request is malformed as a whole (wrong content type, no files, broken multipart body)."""

    def __init__(self, message: str, *, http_status: int = 400) -> None:
        super().__init__(message)
        self.http_status = http_status


class OverloadedError(QureError):
    """The queue is over its configured depth: nothing more is accepted until it drains (HTTP 503)."""

    def __init__(self, *, queue_depth: int, max_queue_depth: int, retry_after_s: int = 10) -> None:
        super().__init__(
            f"the processing queue holds {queue_depth} instances (limit {max_queue_depth}); "
            f"nothing was stored, retry after {retry_after_s} s"
        )
        self.queue_depth = queue_depth
        self.max_queue_depth = max_queue_depth
        self.retry_after_s = retry_after_s


class NotFoundError(QureError):
    """The UID is unknown to the caller's source."""


class StorageError(QureError):
    """The object store or the catalog failed; the operation may be retried."""


class ObjectMissingError(StorageError):
    """The object store holds no object under the key (it never existed, or it was deleted)."""


class ObjectChangedError(StorageError):
    """A conditional write found the object not as the writer last read it (written or created meanwhile)."""


class ModelError(QureError):
    """A model could not be loaded (bad weights, wrong device) or failed to run."""
