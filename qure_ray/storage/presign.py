"""Pre-signed S3 GET URLs (AWS Signature Version 4, query-string form, path-style), computed directly.

`GET /results` hands out one URL per asset and original: seven per chest X-ray result. botocore's
`generate_presigned_url` spends about 0.4 ms of CPU on each (endpoint rules, event hooks, request objects),
most of a lookup's own work. The signature itself is a few HMACs; the signing key changes once a day.
The algorithm: https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-query-string-auth.html
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import quote, urlsplit

ALGORITHM = "AWS4-HMAC-SHA256"
MAX_EXPIRES_S = 7 * 24 * 3600
"""S3 refuses longer validity for SigV4 URLs."""


@dataclass(frozen=True)
class Credentials:
    access_key: str
    secret_key: str = field(repr=False)
    token: str | None = field(default=None, repr=False)


@dataclass
class UrlPresigner:
    endpoint_url: str
    """Scheme and host (and port) of the S3 endpoint; path-style URLs are built under it."""
    region: str
    credentials: Callable[[], Credentials]
    """Called per URL: refreshable credentials (an instance role, STS) stay current."""
    _keys: dict[tuple[str, str], bytes] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        parts = urlsplit(self.endpoint_url)
        self._origin, self._host, self._base_path = (
            f"{parts.scheme}://{parts.netloc}",
            parts.netloc,
            parts.path.rstrip("/"),
        )

    def urls(self, bucket: str, keys: list[str], *, expires_s: int, now: datetime | None = None) -> list[str]:
        """Per key, a URL that GETs it from `bucket` until `expires_s` seconds after `now`. The credentials, the
        time and the query string are the same for all, so they are worked out once (a chest X-ray result hands
        out seven URLs)."""
        if not 1 <= expires_s <= MAX_EXPIRES_S:
            raise ValueError(f"a pre-signed URL lives 1 s to 7 days, not {expires_s} s")
        credentials = self.credentials()
        moment = (now or datetime.now(UTC)).astimezone(UTC)
        day = f"{moment.year:04d}{moment.month:02d}{moment.day:02d}"  # strftime costs more than all the rest
        stamp = f"{day}T{moment.hour:02d}{moment.minute:02d}{moment.second:02d}Z"
        scope = f"{day}/{self.region}/s3/aws4_request"
        params = {
            "X-Amz-Algorithm": ALGORITHM,
            "X-Amz-Credential": f"{credentials.access_key}/{scope}",
            "X-Amz-Date": stamp,
            "X-Amz-Expires": str(expires_s),
            "X-Amz-SignedHeaders": "host",
        }
        if credentials.token:
            params["X-Amz-Security-Token"] = credentials.token
        query = "&".join(f"{_encode(name)}={_encode(value)}" for name, value in sorted(params.items()))
        signing_key = self._signing_key(credentials.secret_key, day)
        bucket_path = f"{self._base_path}/{_encode(bucket)}/"
        signed = []
        for key in keys:
            path = bucket_path + _encode(key, keep="/")
            canonical = f"GET\n{path}\n{query}\nhost:{self._host}\n\nhost\nUNSIGNED-PAYLOAD"
            to_sign = f"{ALGORITHM}\n{stamp}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
            signature = hmac.digest(signing_key, to_sign.encode(), "sha256").hex()
            signed.append(f"{self._origin}{path}?{query}&X-Amz-Signature={signature}")
        return signed

    def _signing_key(self, secret_key: str, day: str) -> bytes:
        cache_key = (secret_key, day)
        if cache_key not in self._keys:
            self._keys.clear()  # one day's key (per secret) at a time
            signing = f"AWS4{secret_key}".encode()
            for part in (day, self.region, "s3", "aws4_request"):
                signing = hmac.new(signing, part.encode(), hashlib.sha256).digest()
            self._keys[cache_key] = signing
        return self._keys[cache_key]


def _encode(text: str, *, keep: str = "") -> str:
    """SigV4's URI encoding: every byte but A-Z a-z 0-9 - _ . ~ (and `keep`) as %XX."""
    return quote(text, safe=f"-_.~{keep}")
