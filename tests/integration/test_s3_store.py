"""`S3ObjectStore` against a real S3 server (SeaweedFS checks signatures and checksums)."""

from __future__ import annotations

import hashlib

import boto3
import httpx
import pytest

from qure_ray.bench.services import S3Server
from qure_ray.errors import ObjectChangedError, ObjectMissingError, StorageError
from qure_ray.records import InstanceState
from qure_ray.storage.catalog import Batch, Catalog, event_row
from qure_ray.storage.object_store import S3ObjectStore


@pytest.fixture
def store(s3: S3Server) -> S3ObjectStore:
    return s3.object_store("store-test")


def test_a_put_whose_body_does_not_match_its_sha256_is_refused(store: S3ObjectStore) -> None:
    data = b"DICM" * 1000
    store.put("dicom/a.dcm", data, media_type="application/dicom", sha256=hashlib.sha256(data).hexdigest())
    store.put("dicom/b.dcm", data)  # hashed by the store itself
    assert store.get("dicom/a.dcm") == store.get("dicom/b.dcm") == data
    with pytest.raises(StorageError, match="BadDigest"):
        store.put("dicom/c.dcm", data, sha256=hashlib.sha256(b"other bytes").hexdigest())
    assert not store.exists("dicom/c.dcm")


def test_a_missing_key_is_told_apart_from_other_failures(store: S3ObjectStore, s3: S3Server) -> None:
    with pytest.raises(ObjectMissingError):
        store.get("dicom/never-written.dcm")
    wrong_secret = boto3.Session(aws_access_key_id="qure-test", aws_secret_access_key="wrong", region_name="us-east-1")
    denied = S3ObjectStore(bucket=s3.bucket, prefix="store-test", endpoint_url=s3.endpoint_url, session=wrong_secret)
    with pytest.raises(StorageError) as refused:
        denied.get("dicom/never-written.dcm")
    assert not isinstance(refused.value, ObjectMissingError)


def test_conditional_writes_let_one_of_two_writers_win(store: S3ObjectStore) -> None:
    first = store.put_unless_changed("control/lease.json", b"a", version=None)
    with pytest.raises(ObjectChangedError):
        store.put_unless_changed("control/lease.json", b"b", version=None)  # a second writer that saw none
    second = store.put_unless_changed("control/lease.json", b"c", version=first)
    with pytest.raises(ObjectChangedError):
        store.put_unless_changed("control/lease.json", b"d", version=first)  # a writer that read the old one
    assert store.get_versioned("control/lease.json") == (b"c", second)


def test_a_presigned_url_gets_the_object_and_nothing_else(store: S3ObjectStore) -> None:
    store.put("assets/dev/1.2.3/report one+ü.pdf", b"%PDF-1.7 report")
    store.put("assets/dev/1.2.3/other.pdf", b"%PDF-1.7 other")
    urls = store.presigned_urls(["assets/dev/1.2.3/report one+ü.pdf", "assets/dev/1.2.3/other.pdf"], expires_s=60)
    assert urls is not None and len(urls) == 2 and all("X-Amz-Signature=" in url for url in urls)
    url = urls[0]
    assert httpx.get(urls[1], timeout=10).content == b"%PDF-1.7 other"
    assert httpx.get(url, timeout=10).content == b"%PDF-1.7 report"

    tampered = url.replace("report%20one%2B%C3%BC.pdf", "other.pdf", 1)
    assert tampered != url
    assert httpx.get(tampered, timeout=10).status_code == 403
    assert httpx.get(url.replace("X-Amz-Expires=60", "X-Amz-Expires=600"), timeout=10).status_code == 403


def test_a_catalog_on_s3_merges_its_segments_and_loads_the_same_rows(s3: S3Server, store: S3ObjectStore) -> None:
    on_s3 = s3.object_store("merge-test")  # `store` set the keys
    catalog = Catalog(on_s3)
    for i in range(12):
        catalog.commit(Batch({"events": [event_row("site-a", f"1.2.3.{i}", InstanceState.DONE)]}))
    assert len(on_s3.list_keys("catalog/events/")) == 12
    assert catalog.merge_segments("events", fan_in=4) == 12
    assert len(on_s3.list_keys("catalog/events/")) < 4
    assert Catalog(on_s3).states() == {"done": 12}
