"""Webhook signatures: how the platform signs a notification and how a partner verifies it.

Header `X-Qure-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, b"<t>." + body)>`. The timestamp is
signed with the body, so a captured request cannot be replayed after `tolerance_s`.
"""

from __future__ import annotations

import hashlib
import hmac
import time

SIGNATURE_HEADER = "X-Qure-Signature"


class WebhookSignatureError(ValueError):
    """The notification was not signed with this secret, was altered, or is too old."""


def _digest(body: bytes, secret: str, timestamp: int) -> str:
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def sign(body: bytes, secret: str, timestamp: int) -> str:
    """The `X-Qure-Signature` header value for `body` sent at `timestamp` (unix seconds)."""
    return f"t={timestamp},v1={_digest(body, secret, timestamp)}"


def verify_signature(
    body: bytes, header: str, secret: str, *, tolerance_s: float = 300, now: float | None = None
) -> None:
    """Raise `WebhookSignatureError` unless `header` signs exactly `body` with `secret`, recently enough."""
    fields = dict(part.strip().partition("=")[::2] for part in header.split(",") if "=" in part)
    timestamp, signature = fields.get("t", ""), fields.get("v1", "")
    if not timestamp.isdigit() or not signature:
        raise WebhookSignatureError(f"{SIGNATURE_HEADER} is not 't=<unix seconds>,v1=<hex>'")
    if not hmac.compare_digest(_digest(body, secret, int(timestamp)), signature):
        raise WebhookSignatureError("the signature does not match: wrong secret, or the body was altered")
    if abs((time.time() if now is None else now) - int(timestamp)) > tolerance_s:
        raise WebhookSignatureError(f"the notification is older than {tolerance_s:g} s (or the clocks disagree)")
