from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from qure_ray.api.asset_urls import AssetSigner
from qure_ray.config import Settings
from qure_ray.errors import ForbiddenError

KEY = "assets/site-a/1.2.3/report.pdf"


def parts(url: str) -> tuple[str, str, str]:
    split = urlsplit(url)
    query = parse_qs(split.query)
    return split.path.removeprefix("/assets/"), query["expires"][0], query["signature"][0]


def test_signed_url_verifies_until_it_expires() -> None:
    signer = AssetSigner(b"k" * 32, expiry_s=60)
    url = signer.sign("http://127.0.0.1:8000/", KEY, now_s=1000)
    assert url.startswith("http://127.0.0.1:8000/assets/assets/site-a/")
    key, expires, signature = parts(url)
    signer.verify(key, expires, signature, now_s=1059)
    with pytest.raises(ForbiddenError, match="expired"):
        signer.verify(key, expires, signature, now_s=1061)


@pytest.mark.parametrize("tamper", ["key", "expires", "signature", "secret"])
def test_altered_urls_are_refused(tamper: str) -> None:
    signer = AssetSigner(b"k" * 32, expiry_s=60)
    key, expires, signature = parts(signer.sign("http://h", KEY, now_s=1000))
    if tamper == "key":
        key = key.replace("site-a", "site-b")
    elif tamper == "expires":
        expires = str(int(expires) + 3600)
    elif tamper == "signature":
        signature = signature[:-1] + ("0" if signature[-1] != "0" else "1")
    else:
        signer = AssetSigner(b"other-secret", expiry_s=60)
    with pytest.raises(ForbiddenError, match="signature"):
        signer.verify(key, expires, signature, now_s=1000)


def test_signing_key_follows_the_tokens_unless_set() -> None:
    a = Settings.load({"QURE_TOKENS": "token-aaaa:site-a"}, {})
    b = Settings.load({"QURE_TOKENS": "token-bbbb:site-a"}, {})
    assert a.url_signing_key != b.url_signing_key
    fixed = Settings.load({"QURE_TOKENS": "token-aaaa:site-a", "QURE_URL_SECRET": "s3cret-value"}, {})
    assert "s3cret-value" not in repr(fixed) and fixed.url_signing_key != a.url_signing_key
