"""Webhook signatures: what the platform signs, a partner verifies; altered, re-keyed or stale ones fail."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from qure_ray.client import QureClientError, WebhookSignatureError, sign, verify_signature

BODY = b'{"uid": "1.2.3", "status": "done"}'
SECRET = "whsec-test"
T = 1_700_000_000


def test_a_fresh_signature_of_the_body_verifies() -> None:
    header = sign(BODY, SECRET, T)
    assert header.startswith(f"t={T},v1=")
    verify_signature(BODY, header, SECRET, now=T + 299)
    verify_signature(BODY, f"{header},v1={'0' * 64}", SECRET, now=T)  # one of several signatures (key rotation)


@pytest.mark.parametrize(
    ("body", "secret", "now", "problem"),
    [
        (BODY + b" ", SECRET, T, "does not match"),
        (BODY, "another-secret", T, "does not match"),
        (BODY, SECRET, T + 301, "tolerance"),
        (BODY, SECRET, T - 301, "tolerance"),
    ],
)
def test_altered_body_wrong_secret_and_stale_signatures_fail(body: bytes, secret: str, now: int, problem: str) -> None:
    with pytest.raises(WebhookSignatureError, match=problem):
        verify_signature(body, sign(BODY, SECRET, T), secret, now=now)


@pytest.mark.parametrize("header", ["", "v1=abc", "t=abc,v1=abc", f"t={T}", f"t={T},t={T},v1=00", "t=\u00b2,v1=00"])
def test_malformed_headers_fail_and_belong_to_the_client_hierarchy(header: str) -> None:
    with pytest.raises(WebhookSignatureError, match="not of the form") as caught:
        verify_signature(BODY, header, SECRET, now=T)
    assert isinstance(caught.value, QureClientError) and isinstance(caught.value, ValueError)


def test_the_tolerance_is_a_keyword() -> None:
    verify_signature(BODY, sign(BODY, SECRET, T), SECRET, tolerance_s=3600, now=T + 3000)
    with pytest.raises(ValueError, match="empty"):
        sign(BODY, "", T)


def test_a_signature_that_is_not_hex_fails_as_a_mismatch() -> None:
    with pytest.raises(WebhookSignatureError, match="does not match"):
        verify_signature(BODY, f"t={T},v1=\u00e9", SECRET, now=T)  # not a TypeError out of compare_digest


def test_an_empty_secret_verifies_nothing() -> None:
    """A receiver whose secret variable is unset must not accept what anyone signs with the empty key."""
    forged = f"t={T},v1={hmac.new(b'', f'{T}.'.encode() + BODY, hashlib.sha256).hexdigest()}"
    with pytest.raises(WebhookSignatureError, match="no webhook secret"):
        verify_signature(BODY, forged, "", now=T)
