"""`SecretSealer`: webhook secrets encrypted at rest in the catalog (AES-256-GCM under `QURE_SECRETS_KEY`).

The platform must know a partner's webhook secret to sign each delivery, so it cannot keep only a hash. The
catalog is Parquet on S3: whoever can read the bucket must not learn the secrets. The ingress seals a secret
before it is written and the job manager opens it just before signing; the catalog never holds it in clear.

The key is the operator's (`QURE_SECRETS_KEY`), not derived from `QURE_TOKENS`, which change whenever a partner is
added. To rotate it, list the new key first and the old ones after it (`new,old`): secrets are sealed with the
first and opened with whichever key sealed them, and the job manager re-seals every stored secret under the
first key when it starts (`reseal`), after which the old key can be dropped. Each sealed value names its
source as associated data, so it cannot be moved to another source's row.

Without a key, secrets are stored as given (with a warning at start), and `open` reads such values as they are,
so rows written before a key was set keep working.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

SEALED_PREFIX = "sealed:v1:"
MIN_KEY_CHARS = 32
_NONCE_BYTES = 12
_KEY_INFO = b"qure_ray webhook secrets v1"


class SealError(Exception):
    """A sealed secret that none of the keys opens (a key no longer listed, or a damaged value)."""


@dataclass(frozen=True)
class SecretSealer:
    key: str = field(default="", repr=False)
    """`QURE_SECRETS_KEY`: comma-separated keys, the first seals; empty: secrets are stored in clear."""

    @property
    def keys(self) -> list[str]:
        return [part.strip() for part in self.key.split(",") if part.strip()]

    @property
    def enabled(self) -> bool:
        return bool(self.keys)

    def seal(self, secret: str, *, source: str) -> str:
        if not self.enabled:
            return secret
        nonce = os.urandom(_NONCE_BYTES)
        sealed = _cipher(self.keys[0]).encrypt(nonce, secret.encode(), source.encode())
        return SEALED_PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode()

    def open(self, stored: str, *, source: str) -> str:
        """The secret in clear; a value stored before a key was set is returned as it is."""
        if not stored.startswith(SEALED_PREFIX):
            return stored
        if not self.enabled:
            raise SealError("the webhook secret is sealed but QURE_SECRETS_KEY is not set")
        secret = _open_with(self.keys, stored, source)
        if secret is None:
            raise SealError(
                "the webhook secret was sealed with a key QURE_SECRETS_KEY no longer lists (or is damaged); "
                "the source must register its webhook again"
            )
        return secret

    def reseal(self, stored: str, *, source: str) -> str | None:
        """`stored` sealed under the first key, or None when it already is (or no key is set). After a rotation
        (`new,old`) this moves each secret to the new key, so the old one can later be dropped from the list;
        a secret stored in clear before a key was set gets sealed. Raises `SealError` when no key opens it."""
        if not self.enabled:
            return None
        if stored.startswith(SEALED_PREFIX) and _open_with(self.keys[:1], stored, source) is not None:
            return None
        return self.seal(self.open(stored, source=source), source=source)


def _open_with(keys: list[str], stored: str, source: str) -> str | None:
    try:
        raw = base64.urlsafe_b64decode(stored[len(SEALED_PREFIX) :])
    except ValueError:
        return None
    for key in keys:
        try:
            return _cipher(key).decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], source.encode()).decode()
        except (InvalidTag, ValueError):
            continue
    return None


def _cipher(key: str) -> AESGCM:
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_KEY_INFO).derive(key.encode())
    return AESGCM(derived)


CLEAR = SecretSealer()
"""No key: secrets are stored, and read, as given."""
