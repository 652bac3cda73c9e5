"""`SecretSealer`: webhook secrets sealed for the catalog and opened only with the same key and source."""

from __future__ import annotations

import pytest

from qure_ray.sealing import CLEAR, SealError, SecretSealer

KEY = "an-operator-key-of-at-least-32-characters"


def test_a_sealed_secret_opens_only_with_its_key_and_source() -> None:
    sealer = SecretSealer(KEY)
    sealed = sealer.seal("partner-secret-1234", source="site-a")
    assert "partner-secret" not in sealed and sealed.startswith("sealed:v1:")
    assert sealed != sealer.seal("partner-secret-1234", source="site-a")  # a fresh nonce each time
    assert sealer.open(sealed, source="site-a") == "partner-secret-1234"
    with pytest.raises(SealError, match="no longer lists"):
        SecretSealer(KEY + "-rotated").open(sealed, source="site-a")
    with pytest.raises(SealError):  # moved into another source's row
        sealer.open(sealed, source="site-b")
    with pytest.raises(SealError):
        sealer.open(sealed[:-4] + "AAAA", source="site-a")
    with pytest.raises(SealError, match="not set"):
        CLEAR.open(sealed, source="site-a")


def test_without_a_key_secrets_stay_as_given_and_old_clear_rows_still_open() -> None:
    assert CLEAR.seal("partner-secret-1234", source="site-a") == "partner-secret-1234"
    assert SecretSealer(KEY).open("written-before-a-key-was-set", source="site-a") == "written-before-a-key-was-set"
    assert KEY not in repr(SecretSealer(KEY))


def test_a_rotated_key_seals_with_the_new_key_and_still_opens_the_old_ones() -> None:
    old_key, new_key = KEY, "a-new-operator-key-of-at-least-32-characters"
    sealed_before = SecretSealer(old_key).seal("partner-secret-1234", source="site-a")
    rotating = SecretSealer(f"{new_key}, {old_key}")
    assert rotating.open(sealed_before, source="site-a") == "partner-secret-1234"
    sealed_after = rotating.seal("partner-secret-5678", source="site-a")
    assert SecretSealer(new_key).open(sealed_after, source="site-a") == "partner-secret-5678"
    with pytest.raises(SealError):
        SecretSealer(old_key).open(sealed_after, source="site-a")


def test_reseal_moves_a_secret_to_the_first_key_and_leaves_current_ones_alone() -> None:
    old, new = SecretSealer(KEY), SecretSealer(f"{KEY}-new,{KEY}")
    under_old = old.seal("partner-secret-1234", source="site-a")
    resealed = new.reseal(under_old, source="site-a")
    assert resealed is not None and resealed != under_old
    assert SecretSealer(f"{KEY}-new").open(resealed, source="site-a") == "partner-secret-1234"  # old key droppable
    assert new.reseal(resealed, source="site-a") is None  # already under the first key
    clear = new.reseal("stored-before-a-key-was-set", source="site-a")
    assert clear is not None and new.open(clear, source="site-a") == "stored-before-a-key-was-set"
    assert CLEAR.reseal("stored-in-clear", source="site-a") is None  # no key: nothing to seal with
    with pytest.raises(SealError, match="no longer lists"):
        SecretSealer(f"{KEY}-other").reseal(under_old, source="site-a")
