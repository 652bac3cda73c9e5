"""The client's exceptions: one hierarchy, each carrying what happened as data and saying what to do.

    QureError                      (qure_ray.errors)
     └── QureClientError           anything the client raises on purpose
          ├── ClientConfigError    no token/source/URL, or a destination that cannot be parsed
          ├── InputError           a path that does not exist, a zip that cannot be read, a bad UID
          ├── AuthenticationError  401/403: the token or the Source header is wrong
          ├── RequestError         another 4xx: the request itself was refused (message from the server)
          ├── UploadRefused        no file of an upload was accepted (per-file messages in `report`)
          ├── ServerBusy           503/429/connection errors, still so after every retry
          ├── ServerError          an unexpected 5xx
          ├── ProtocolError        a reply this client cannot read (client and platform versions differ?)
          ├── NotFound             404: the platform knows no such UID for this source
          ├── ProcessingFailed     the platform gave up on an image (its result is `failed`)
          ├── WaitTimeout          a result was still pending when the wait ran out
          ├── DownloadError        an asset's reply was not the file it should be
          ├── ForwardError         the PACS refused, or could not be reached for, an instance
          └── WebhookSignatureError  a webhook's signature header is missing, wrong or expired

Foreign errors (httpx, pynetdicom, OSError) are translated where the client calls those libraries.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qure_ray.errors import QureError

if TYPE_CHECKING:
    from qure_ray.client.models import UploadReport


class QureClientError(QureError):
    """Base class of every error the client raises on purpose."""


class ClientConfigError(QureClientError):
    """The client is not configured well enough to make a request."""


class InputError(QureClientError):
    """An argument is unusable: a path that does not exist, a zip that cannot be read, a string that is not a UID."""


class AuthenticationError(QureClientError):
    """The platform refused the credentials (HTTP 401 or 403)."""

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(f"{message} (HTTP {status}); check QURE_TOKEN and QURE_SOURCE, or --token and --source")
        self.status = status


class RequestError(QureClientError):
    """The platform refused the request with a 4xx other than 401/403/404."""

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(f"{message} (HTTP {status})")
        self.status = status


class UploadRefused(QureClientError):
    """No file of an upload was accepted; `report.refused` says why for each file."""

    def __init__(self, report: UploadReport) -> None:
        reasons = "; ".join(f"{f.path}: {f.message}" for f in report.refused[:3])
        more = f" (and {len(report.refused) - 3} more)" if len(report.refused) > 3 else ""
        super().__init__(f"no file was accepted: {reasons}{more}")
        self.report = report


class ServerBusy(QureClientError):
    """The platform stayed busy or unreachable through every retry."""

    def __init__(self, what: str, *, attempts: int, last: str) -> None:
        super().__init__(
            f"{what} failed after {attempts} attempts (last: {last}); the platform is busy or unreachable, "
            "try again later"
        )
        self.attempts = attempts
        self.last = last


class ServerError(QureClientError):
    """The platform answered an unexpected 5xx."""

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(f"the platform failed: {message} (HTTP {status}); retry, or report it if it persists")
        self.status = status


class ProtocolError(QureClientError):
    """The platform's reply is not the shape this client knows; its message names the field."""

    def __init__(self, message: str) -> None:
        super().__init__(f"{message}; the platform may be newer than this client, upgrade qure_ray")


class NotFound(QureClientError):
    """The platform knows no instance or series with this UID for this source."""

    def __init__(self, uid: str, message: str) -> None:
        super().__init__(f"{uid}: {message}")
        self.uid = uid


class ProcessingFailed(QureClientError):
    """The platform could not process the image; re-uploading the same content will not help."""

    def __init__(self, uid: str, reason: str) -> None:
        super().__init__(f"{uid}: {reason}")
        self.uid = uid
        self.reason = reason


class WaitTimeout(QureClientError):
    """The result was still pending when the wait ran out."""

    def __init__(self, uid: str, *, waited_s: float, last_message: str) -> None:
        super().__init__(
            f"{uid} is still pending after {waited_s:.0f} s ({last_message}); wait longer (--timeout) or ask "
            "again later with `qure-ray results`"
        )
        self.uid = uid
        self.waited_s = waited_s


class DownloadError(QureClientError):
    """An asset could not be downloaded, or what came back is not the file it should be."""

    def __init__(self, url: str, problem: str) -> None:
        super().__init__(f"{_without_query(url)}: {problem}; ask for the result again to get fresh URLs and retry")
        self.url = url
        self.problem = problem


class ForwardError(QureClientError):
    """The destination PACS refused some instances or could not be reached."""

    def __init__(self, destination: str, problem: str, *, failed: list[str] | None = None) -> None:
        super().__init__(f"forwarding to {destination} failed: {problem}")
        self.destination = destination
        self.failed = failed or []


class WebhookSignatureError(QureClientError, ValueError):
    """A webhook's `X-Qure-Signature` header is missing, malformed, does not match, or is too old.

    Also a `ValueError`, as it was before the client had its own hierarchy."""


def _without_query(url: str) -> str:
    """URLs of assets carry signatures in their query; messages and logs show them without it."""
    return url.split("?", 1)[0]
