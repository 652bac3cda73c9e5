from __future__ import annotations

from datetime import UTC, datetime
from unittest import mock
from urllib.parse import parse_qs, quote, urlsplit

import pytest
from botocore.auth import S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials

from qure_ray.storage.presign import Credentials, UrlPresigner

AT = datetime(2026, 11, 28, 13, 5, 9, tzinfo=UTC)


def botocore_url(endpoint: str, region: str, creds: Credentials, bucket: str, key: str, expires_s: int) -> str:
    """The same URL as botocore's own SigV4 query signer makes it."""
    request = AWSRequest(method="GET", url=f"{endpoint}/{bucket}/{quote(key, safe='/~')}")
    auth = S3SigV4QueryAuth(BotoCredentials(creds.access_key, creds.secret_key, creds.token), "s3", region, expires_s)
    with mock.patch("botocore.auth.get_current_datetime", return_value=AT.replace(tzinfo=None)):
        auth.add_auth(request)
    return str(request.url)


def one_url(presigner: UrlPresigner, bucket: str, key: str, *, expires_s: int, now: datetime | None = None) -> str:
    return presigner.urls(bucket, [key], expires_s=expires_s, now=now)[0]


def same_url(ours: str, theirs: str) -> bool:
    """Same address and the same query parameters (botocore orders them differently in the URL)."""
    (a, b) = (urlsplit(ours), urlsplit(theirs))
    return a._replace(query="") == b._replace(query="") and parse_qs(a.query) == parse_qs(b.query)


@pytest.mark.parametrize(
    ("endpoint", "region", "creds", "key"),
    [
        ("http://127.0.0.1:8333", "us-east-1", Credentials("AKIDEXAMPLE", "secret/+="), "assets/dev/1.2.3/sr.dcm"),
        ("https://s3.eu-central-1.amazonaws.com", "eu-central-1", Credentials("AK", "s", "tok/en+="), "a b/ü&=?#.pdf"),
    ],
)
def test_urls_are_what_botocore_signs(endpoint: str, region: str, creds: Credentials, key: str) -> None:
    ours = one_url(UrlPresigner(endpoint, region, lambda: creds), "bucket", key, expires_s=3600, now=AT)
    assert same_url(ours, botocore_url(endpoint, region, creds, "bucket", key, 3600))


def test_several_keys_signed_at_once_are_each_what_botocore_signs() -> None:
    creds = Credentials("AKIDEXAMPLE", "secret/+=", "token")
    keys = ["assets/dev/1.2.3/sc.dcm", "assets/dev/1.2.3/report one+ü.pdf", "dicom/dev/1/2/3.dcm"]
    ours = UrlPresigner("http://127.0.0.1:8333", "us-east-1", lambda: creds).urls("b", keys, expires_s=600, now=AT)
    assert len(ours) == len(keys)
    for url, key in zip(ours, keys, strict=True):
        assert same_url(url, botocore_url("http://127.0.0.1:8333", "us-east-1", creds, "b", key, 600))


def test_the_signing_key_follows_the_day_and_the_credentials() -> None:
    current = [Credentials("AK", "first")]
    presigner = UrlPresigner("http://s3", "us-east-1", lambda: current[0])
    today = one_url(presigner, "b", "k", expires_s=60, now=AT)
    assert one_url(presigner, "b", "k", expires_s=60, now=AT.replace(day=29)) != today.replace("20261128", "20261129")
    current[0] = Credentials("AK", "rotated")
    assert same_url(
        one_url(presigner, "b", "k", expires_s=60, now=AT),
        botocore_url("http://s3", "us-east-1", current[0], "b", "k", 60),
    )


def test_validity_outside_what_s3_accepts_is_refused() -> None:
    presigner = UrlPresigner("http://s3", "us-east-1", lambda: Credentials("AK", "s"))
    for expires_s in (0, 8 * 24 * 3600):
        with pytest.raises(ValueError, match="1 s to 7 days"):
            one_url(presigner, "b", "k", expires_s=expires_s)
