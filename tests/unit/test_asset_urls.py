from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from qure_ray.api.asset_urls import AssetSigner, file_urls
from qure_ray.config import Settings
from qure_ray.errors import ForbiddenError
from qure_ray.storage import LocalObjectStore

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


def test_the_signing_key_is_never_one_a_tenant_can_work_out() -> None:
    """Derived from the token table, the one tenant of a deployment (or the holder of the dev token) could sign
    URLs to any object: another source's originals, the catalog, local secrets."""
    import hashlib

    tokens = "token-aaaa:site-a"
    from_tokens = hashlib.sha256(("qure-asset-urls\n" + tokens).encode()).digest()
    plain = Settings.load({"QURE_TOKENS": tokens}, {})
    assert plain.url_signing_key != from_tokens
    assert plain.url_signing_key == Settings.load({"QURE_TOKENS": "token-bbbb:site-a"}, {}).url_signing_key
    sealed = Settings.load({"QURE_TOKENS": tokens, "QURE_SECRETS_KEY": "k" * 32}, {})
    assert sealed.url_signing_key not in (from_tokens, plain.url_signing_key)
    fixed = Settings.load({"QURE_TOKENS": tokens, "QURE_URL_SECRET": "s3cret-value-of-at-least-32-chars"}, {})
    assert "s3cret-value" not in repr(fixed) and fixed.url_signing_key not in (sealed.url_signing_key, from_tokens)
    deployed, made = plain.with_deployment_url_secret()
    assert made and deployed.url_secret and deployed.url_signing_key != plain.url_signing_key
    assert sealed.with_deployment_url_secret() == (sealed, False)  # the secrets key already keys it


def test_expiry_must_be_a_few_ascii_digits() -> None:
    signer = AssetSigner(b"k", expiry_s=60)
    for expires in ("\u00b2", "1" * 5000, "-5", " 12"):
        with pytest.raises(ForbiddenError):
            signer.verify("assets/a/1.2/x.png", expires, "0" * 64, now_s=0)


class PresigningStore(LocalObjectStore):
    """A store that hands out its own URLs, as S3 does, and records how often it was asked."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.asked: list[list[str]] = []

    def presigned_urls(self, keys: list[str], *, expires_s: int) -> list[str] | None:
        self.asked.append(keys)
        return [f"https://s3.example/{key}?expires={expires_s}" for key in keys]


ASSETS = {"sc": ["assets/s/1/sc.dcm", "assets/s/1/sc_2.dcm"], "report_pdf": ["assets/s/1/report.pdf"]}
ORIGINALS = ["dicom/s/1/2/3.dcm"]


def test_each_kind_gets_its_own_keys_urls_signed_in_one_request_to_the_store(tmp_path: Path) -> None:
    store = PresigningStore(tmp_path)
    signer = AssetSigner(b"k" * 32, expiry_s=60)
    files = file_urls(signer=signer, store=store, base_url="http://h/", assets=ASSETS, original_keys=ORIGINALS)
    assert files == {
        "report_pdf": ["https://s3.example/assets/s/1/report.pdf?expires=60"],
        "sc": ["https://s3.example/assets/s/1/sc.dcm?expires=60", "https://s3.example/assets/s/1/sc_2.dcm?expires=60"],
        "original": ["https://s3.example/dicom/s/1/2/3.dcm?expires=60"],
    }
    assert len(store.asked) == 1


def test_a_local_store_s_urls_are_signed_by_the_ingress(tmp_path: Path) -> None:
    signer = AssetSigner(b"k" * 32, expiry_s=60)
    files = file_urls(
        signer=signer, store=LocalObjectStore(tmp_path), base_url="http://h/", assets=ASSETS, original_keys=ORIGINALS
    )
    assert {kind: [parts(url)[0] for url in urls] for kind, urls in files.items()} == {**ASSETS, "original": ORIGINALS}
