from __future__ import annotations

import pytest

from qure_ray.dicom.uids import is_valid_uid


@pytest.mark.parametrize("uid", ["1.2.840.10008.1.2", "0", "2.25.329800735698586629295641978511506172918"])
def test_valid_uids(uid: str) -> None:
    assert is_valid_uid(uid)


@pytest.mark.parametrize("uid", ["", "1.2\n", "1.02", "1..2", ".1", "1.2.", "1.2/3", "1" * 65, "1.2 ", "../1"])
def test_invalid_uids_never_become_key_components(uid: str) -> None:
    assert not is_valid_uid(uid)  # "1.2\n": a pattern ending in "$" matched before a final newline
