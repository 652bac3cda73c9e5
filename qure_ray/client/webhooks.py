"""Signed webhooks: the one implementation of the signature, used by the platform to sign and by partners to verify.

The platform sends each notification with a header

    X-Qure-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, f"{t}.".encode() + body)>

A receiver checks it with `verify_signature(body, header, secret)` on the raw request body (before any JSON
parsing), which compares in constant time and refuses a timestamp more than `tolerance_s` away from now, so
a captured request cannot be replayed later:

>>> header = sign(b'{"uid": "1.2.3"}', "s3cret", timestamp=1_700_000_000)
>>> header[:15]
't=1700000000,v1'
>>> verify_signature(b'{"uid": "1.2.3"}', header, "s3cret", now=1_700_000_100)
"""

from __future__ import annotations

import hashlib
import hmac
import time

from qure_ray.client.errors import WebhookSignatureError

SIGNATURE_HEADER = "X-Qure-Signature"
SCHEME = "v1"
DEFAULT_TOLERANCE_S = 300


def _digest(body: bytes, secret: str, timestamp: int) -> str:
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def sign(body: bytes, secret: str, timestamp: int | None = None) -> str:
    """The `X-Qure-Signature` header value for `body`, signed at `timestamp` (unix seconds, default now)."""
    if not secret:
        raise ValueError("a webhook secret must not be empty")
    t = int(time.time()) if timestamp is None else int(timestamp)
    return f"t={t},{SCHEME}={_digest(body, secret, t)}"


def verify_signature(
    body: bytes, header: str, secret: str, *, tolerance_s: float = DEFAULT_TOLERANCE_S, now: float | None = None
) -> None:
    """Return when `header` is a valid signature of `body` with `secret`, made within `tolerance_s` of `now`;
    raise `WebhookSignatureError` saying why otherwise. An empty `secret` (an unset variable) verifies nothing."""
    if not secret:
        raise WebhookSignatureError("no webhook secret to verify with: set the secret the webhook was registered with")
    fields: dict[str, list[str]] = {}
    for item in header.split(","):
        key, sep, value = item.strip().partition("=")
        if sep:
            fields.setdefault(key, []).append(value)
    stamps, signatures = fields.get("t", []), fields.get(SCHEME, [])
    if len(stamps) != 1 or not ascii_digits(stamps[0]) or not signatures:
        raise WebhookSignatureError(
            f"the {SIGNATURE_HEADER} header is not of the form t=<unix seconds>,{SCHEME}=<hex HMAC-SHA256>"
        )
    timestamp = int(stamps[0])
    expected = _digest(body, secret, timestamp)
    given = [candidate.encode("utf-8", "replace") for candidate in signatures]  # bytes: any text compares
    if not any(hmac.compare_digest(expected.encode(), candidate) for candidate in given):
        raise WebhookSignatureError(
            "the signature does not match the body: check the webhook secret, and verify the raw body as received"
        )
    age_s = (time.time() if now is None else now) - timestamp
    if abs(age_s) > tolerance_s:
        raise WebhookSignatureError(
            f"the notification was signed {age_s:.0f} s ago, beyond the {tolerance_s:g} s tolerance: a replay, or "
            "clocks that disagree (check NTP on both sides)"
        )


def ascii_digits(text: str) -> bool:
    """`str.isdigit` admits "²" and other digits `int` refuses or reads otherwise."""
    return text.isascii() and text.isdigit()
