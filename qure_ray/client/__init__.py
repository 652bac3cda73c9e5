"""The Client API Module: upload DICOM, wait for results, download assets, forward them to a PACS.

`QureClient` (blocking) and `AsyncQureClient` share one implementation; `qure_ray.client.gateway` is the
on-site C-STORE gateway, `qure_ray.client.webhooks` verifies signed webhooks, and `qure_ray.client.commands`
the `qure-ray upload|results|gateway` commands.
"""

from qure_ray.client._http import RetryPolicy
from qure_ray.client.api import AsyncQureClient, BatchLimits, PollPolicy, QureClient
from qure_ray.client.errors import (
    AuthenticationError,
    ClientConfigError,
    DownloadError,
    ForwardError,
    InputError,
    NotFound,
    ProcessingFailed,
    ProtocolError,
    QureClientError,
    RequestError,
    ServerBusy,
    ServerError,
    UploadRefused,
    WaitTimeout,
    WebhookSignatureError,
)
from qure_ray.client.forward import DicomWebDestination, DimseDestination, parse_destination
from qure_ray.client.models import (
    PACS_KINDS,
    ComputeStatus,
    FileOutcome,
    Result,
    ResultStatus,
    SeriesInfo,
    SkippedFile,
    UploadProgress,
    UploadReport,
)
from qure_ray.client.webhooks import sign, verify_signature

__all__ = [
    "PACS_KINDS",
    "AsyncQureClient",
    "AuthenticationError",
    "BatchLimits",
    "ClientConfigError",
    "ComputeStatus",
    "DicomWebDestination",
    "DimseDestination",
    "DownloadError",
    "FileOutcome",
    "ForwardError",
    "InputError",
    "NotFound",
    "PollPolicy",
    "ProcessingFailed",
    "ProtocolError",
    "QureClient",
    "QureClientError",
    "RequestError",
    "Result",
    "ResultStatus",
    "RetryPolicy",
    "SeriesInfo",
    "ServerBusy",
    "ServerError",
    "SkippedFile",
    "UploadProgress",
    "UploadRefused",
    "UploadReport",
    "WaitTimeout",
    "WebhookSignatureError",
    "parse_destination",
    "sign",
    "verify_signature",
]
