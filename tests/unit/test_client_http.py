"""Retries, backoff and download checks, driven by scripted HTTP answers (httpx.MockTransport)."""

from __future__ import annotations

import email.utils
import random
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from qure_ray.client import (
    AuthenticationError,
    BatchLimits,
    DownloadError,
    QureClient,
    Result,
    ResultStatus,
    RetryPolicy,
    ServerBusy,
)
from qure_ray.client._http import retry_after_s
from qure_ray.dicom.synthetic import chest_dx
from tests.unit.client_platform import PDF, png_bytes

BASE = "http://qure.test"
FAST = RetryPolicy(max_attempts=4, base_delay_s=0.001, max_delay_s=0.002)
Handler = Callable[[httpx.Request], httpx.Response]


def scripted(*answers: httpx.Response | Exception) -> tuple[Handler, list[httpx.Request]]:
    """A handler that gives `answers` in turn (an exception is raised as a transport error) and records requests."""
    queue: Iterator[httpx.Response | Exception] = iter(answers)
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answer = next(queue)
        if isinstance(answer, Exception):
            raise answer
        return answer

    return handle, seen


def client_for(handler: Handler, *, retry: RetryPolicy = FAST) -> QureClient:
    return QureClient(BASE, "tok", "site", retry=retry, transport=httpx.MockTransport(handler))


def accepted(*fields: str) -> httpx.Response:
    messages = {
        name: {"message": "stored and queued", "created": True, "metadata": {"SOPInstanceUID": f"1.2.{i}"}}
        for i, name in enumerate(fields)
    }
    return httpx.Response(200, json={"message": "ok", "status": 200, "messages": messages})


@pytest.fixture
def dicom_file(tmp_path: Path) -> Path:
    path = tmp_path / "x.dcm"
    path.write_bytes(chest_dx(seed=1, size=32))
    return path


def test_503_with_retry_after_then_success_is_one_upload(dicom_file: Path) -> None:
    handler, seen = scripted(
        httpx.Response(503, headers={"Retry-After": "0"}, json={"message": "busy"}), accepted("file0")
    )
    with client_for(handler) as client:
        report = client.upload([dicom_file])
    assert len(seen) == 2 and report.accepted[0].sop_uid == "1.2.0"
    assert seen[0].headers["Authorization"] == "Token tok" and seen[0].headers["Source"] == "site"
    assert seen[0].headers["content-type"].startswith("multipart/form-data")


def test_connection_errors_and_429_are_retried(dicom_file: Path) -> None:
    handler, seen = scripted(
        httpx.ConnectError("refused"), httpx.ReadTimeout("slow"), httpx.Response(429), accepted("file0")
    )
    with client_for(handler) as client:
        assert client.upload([dicom_file]).accepted
    assert len(seen) == 4


def test_retries_run_out_into_server_busy(dicom_file: Path) -> None:
    handler, seen = scripted(*[httpx.Response(503) for _ in range(4)])
    with client_for(handler) as client, pytest.raises(ServerBusy) as caught:
        client.upload([dicom_file])
    assert caught.value.attempts == 4 and "HTTP 503" in str(caught.value) and len(seen) == 4


def test_401_is_not_retried(dicom_file: Path) -> None:
    handler, seen = scripted(httpx.Response(401, json={"message": "the API token is not valid"}))
    with client_for(handler) as client, pytest.raises(AuthenticationError, match="token is not valid"):
        client.upload([dicom_file])
    assert len(seen) == 1


def test_retry_after_is_honoured(dicom_file: Path) -> None:
    handler, _ = scripted(httpx.Response(503, headers={"Retry-After": "1"}), accepted("file0"))
    started = time.monotonic()
    with client_for(handler) as client:
        client.upload([dicom_file])
    assert time.monotonic() - started >= 1.0


def test_batches_split_by_count_with_unique_field_names(tmp_path: Path) -> None:
    for i in range(5):
        (tmp_path / f"{i}.dcm").write_bytes(chest_dx(seed=i, size=32))
    fields: list[list[str]] = []

    def handle(request: httpx.Request) -> httpx.Response:
        body = request.read().decode("latin-1")
        names = re.findall(r'form-data; name="([^"]+)"', body)
        fields.append(names)
        return accepted(*names)

    client = QureClient(BASE, "tok", "site", batch=BatchLimits(max_files=2), transport=httpx.MockTransport(handle))
    with client:
        report = client.upload([tmp_path])
    assert fields == [["file0", "file1"], ["file0", "file1"], ["file0"]] and len(report.files) == 5


def test_delays_grow_with_jitter_and_follow_retry_after() -> None:
    policy = RetryPolicy(base_delay_s=1, max_delay_s=8)
    rng = random.Random(0)
    delays = [policy.delay_s(n, retry_after_s=None, rng=rng) for n in range(1, 7)]
    assert all(2 ** (n - 1) / 2 <= d <= 2 ** (n - 1) for n, d in zip(range(1, 5), delays, strict=False))
    assert all(4 <= d <= 8 for d in delays[4:])
    assert 30 <= policy.delay_s(1, retry_after_s=30, rng=rng) <= 33
    assert policy.delay_s(1, retry_after_s=10_000, rng=rng) <= policy.max_retry_after_s * 1.1


def test_retry_after_as_date_or_seconds() -> None:
    now = time.time()
    date = email.utils.formatdate(now + 20, usegmt=True)
    assert 18 <= (retry_after_s(httpx.Response(503, headers={"Retry-After": date}), now_s=now) or 0) <= 21
    assert retry_after_s(httpx.Response(503, headers={"Retry-After": "7"})) == 7
    assert retry_after_s(httpx.Response(503)) is None


# -- downloads ---------------------------------------------------------------------------------------------


def result_with(files: dict[str, list[str]]) -> Result:
    return Result(uid="1.2.3", status=ResultStatus.DONE, message="", files={k: tuple(v) for k, v in files.items()})


def serving(body: bytes, content_type: str, **headers: str) -> tuple[Handler, list[httpx.Request]]:
    return scripted(httpx.Response(200, content=body, headers={"Content-Type": content_type, **headers}))


def test_download_refuses_a_wrong_content_type_and_leaves_nothing(tmp_path: Path) -> None:
    handler, _ = serving(b"<html>login</html>", "text/html")
    with client_for(handler) as client, pytest.raises(DownloadError, match="expected 'application/pdf'") as caught:
        client.download(result_with({"report_pdf": [f"{BASE}/assets/a/report.pdf?signature=s3cr3t"]}), tmp_path)
    assert "s3cr3t" not in str(caught.value)  # signed URLs are shown without their query
    assert list(tmp_path.iterdir()) == []


def test_download_refuses_a_truncated_body(tmp_path: Path) -> None:
    handler, _ = serving(PDF[:10], "application/pdf", **{"Content-Length": str(len(PDF))})
    with client_for(handler) as client, pytest.raises(DownloadError, match="truncated"):
        client.download(result_with({"report_pdf": [f"{BASE}/assets/report.pdf"]}), tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_download_refuses_an_empty_body_and_a_body_of_another_format(tmp_path: Path) -> None:
    empty, _ = serving(b"", "image/png")
    with client_for(empty) as client, pytest.raises(DownloadError, match="empty"):
        client.download(result_with({"sc_full_png": [f"{BASE}/a/sc_full.png"]}), tmp_path)
    lying, _ = serving(PDF, "image/png")
    with client_for(lying) as client, pytest.raises(DownloadError, match=r"not a \.png"):
        client.download(result_with({"sc_full_png": [f"{BASE}/a/sc_full.png"]}), tmp_path)


def test_untyped_s3_objects_pass_when_the_bytes_match_and_get_no_platform_credentials(tmp_path: Path) -> None:
    handler, seen = serving(png_bytes(), "binary/octet-stream")
    with client_for(handler) as client:
        paths = client.download(
            result_with({"sc_full_png": ["https://s3.example/b/sc_full.png?X-Amz-Signature=x"]}), tmp_path
        )
    assert paths["sc_full_png"][0].read_bytes() == png_bytes()
    assert "authorization" not in seen[0].headers and "source" not in seen[0].headers


def test_download_picks_kinds_and_refuses_odd_names(tmp_path: Path) -> None:
    handler, seen = serving(PDF, "application/pdf")
    files = {"report_pdf": [f"{BASE}/a/report.pdf"], "sc_full_png": [f"{BASE}/a/sc_full.png"]}
    with client_for(handler) as client:
        assert list(client.download(result_with(files), tmp_path, kinds=["report_pdf"])) == ["report_pdf"]
        assert seen[0].headers["Authorization"] == "Token tok"  # the platform's own /assets URL
        with pytest.raises(DownloadError, match="file name"):
            client.download(result_with({"x": [f"{BASE}/a/..%2F..%2Fevil.sh"]}), tmp_path)


def test_an_original_listed_once_per_key_frame_is_fetched_once(tmp_path: Path) -> None:
    """Two key slices that are frames of one enhanced CT list its original twice (`files.original` runs parallel
    to `key_slices`): fetched once, named for both."""
    handler, seen = serving(PDF, "application/pdf")
    url = f"{BASE}/a/report.pdf"
    with client_for(handler) as client:
        paths = client.download(result_with({"report_pdf": [url, url]}), tmp_path)
    assert len(seen) == 1 and paths["report_pdf"] == [tmp_path / "report.pdf"] * 2
