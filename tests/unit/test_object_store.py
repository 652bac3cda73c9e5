from __future__ import annotations

from pathlib import Path

import pytest

from qure_ray.errors import StorageError
from qure_ray.storage import LocalObjectStore, asset_key, dicom_key
from qure_ray.storage.keys import dicom_key_parts


def test_local_store_round_trip_list_delete(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    key = dicom_key("site-a", "1.2", "1.2.3", "1.2.3.4")
    assert key == "dicom/site-a/1.2/1.2.3/1.2.3.4.dcm"
    store.put(key, b"abc")
    assert store.get(key) == b"abc" and store.exists(key)
    assert store.list_keys("dicom/site-a/") == [key]
    assert store.list_keys("dicom/site-b/") == []
    store.delete(key)
    assert not store.exists(key)
    with pytest.raises(StorageError, match="does not exist"):
        store.get(key)


@pytest.mark.parametrize(
    ("source", "uid"),
    [("site-a", "../../etc"), ("..", "1.2"), ("a/b", "1.2"), ("site-a", "1.02"), ("site-a", "1." + "2" * 70)],
)
def test_keys_refuse_anything_but_uids_and_sources(source: str, uid: str) -> None:
    with pytest.raises(StorageError, match="refusing"):
        dicom_key(source, uid, "1.2", "1.2")


def test_a_dicom_key_reads_back_as_its_parts() -> None:
    assert dicom_key_parts(dicom_key("site-a", "1.2", "1.2.3", "1.2.3.4")) == ("site-a", "1.2", "1.2.3", "1.2.3.4")
    for other in ("assets/site-a/1.2.3/sr.dcm", "dicom/site-a/1.2/1.2.3.dcm", "dicom/site-a/1.2/1.2.3/1.2.3.4.png"):
        assert dicom_key_parts(other) is None


def test_asset_names_cannot_escape(tmp_path: Path) -> None:
    with pytest.raises(StorageError):
        asset_key("site-a", "1.2", "../x")
    store = LocalObjectStore(tmp_path / "root")
    with pytest.raises(StorageError, match="leave the store root"):
        store.put("../outside", b"x")


def test_listing_can_start_after_a_key(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    for name in ("a", "b", "c"):
        store.put(f"catalog/x/{name}", b"1")
    assert store.list_keys("catalog/x/", start_after="catalog/x/a") == ["catalog/x/b", "catalog/x/c"]
    assert store.list_keys("catalog/x/", start_after="catalog/x/c") == []
    assert store.list_keys("catalog/x/") == ["catalog/x/a", "catalog/x/b", "catalog/x/c"]
