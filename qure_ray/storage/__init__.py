"""Where data lives: the `ObjectStore` (local folder or S3) and the `Catalog` (DuckDB over Parquet)."""

from qure_ray.storage.catalog import Batch, Catalog, event_row, received_rows
from qure_ray.storage.group_commit import GroupCommitter
from qure_ray.storage.keys import asset_key, catalog_key, dicom_key
from qure_ray.storage.object_store import (
    LocalObjectStore,
    ObjectStore,
    S3ObjectStore,
    StoreLocation,
    open_object_store,
)

__all__ = [
    "Batch",
    "Catalog",
    "GroupCommitter",
    "LocalObjectStore",
    "ObjectStore",
    "S3ObjectStore",
    "StoreLocation",
    "asset_key",
    "catalog_key",
    "dicom_key",
    "event_row",
    "open_object_store",
    "received_rows",
]
