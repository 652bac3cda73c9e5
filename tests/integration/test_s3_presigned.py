"""Pre-signed asset URLs against a real S3 server (SeaweedFS checks SigV4 signatures)."""

from __future__ import annotations

import httpx
import pytest

from qure_ray.bench.services import S3_KEYS, S3Server
from qure_ray.storage.object_store import S3ObjectStore


def test_a_presigned_url_gets_the_object_and_nothing_else(s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in S3_KEYS.items():
        monkeypatch.setenv(name, value)
    store = S3ObjectStore(bucket=s3.bucket, prefix="presign", endpoint_url=s3.endpoint_url)
    store.put("assets/dev/1.2.3/report one+ü.pdf", b"%PDF-1.7 report")
    store.put("assets/dev/1.2.3/other.pdf", b"%PDF-1.7 other")
    url = store.presigned_url("assets/dev/1.2.3/report one+ü.pdf", expires_s=60)
    assert url is not None and "X-Amz-Signature=" in url
    assert httpx.get(url, timeout=10).content == b"%PDF-1.7 report"

    tampered = url.replace("report%20one%2B%C3%BC.pdf", "other.pdf", 1)
    assert tampered != url
    assert httpx.get(tampered, timeout=10).status_code == 403
    assert httpx.get(url.replace("X-Amz-Expires=60", "X-Amz-Expires=600"), timeout=10).status_code == 403
