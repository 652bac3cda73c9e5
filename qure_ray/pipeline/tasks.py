"""Ray tasks of the workflow: CPU work that runs anywhere on the cluster."""

from __future__ import annotations

import functools
from io import BytesIO
from pathlib import Path

import numpy as np
import pydicom
import ray
from numpy.typing import NDArray

from qure_ray.dicom.pixels import Windowing, prepare_for_model, prepare_slices
from qure_ray.models.card import load_card
from qure_ray.outputs.assets import KeyImage, render_assets
from qure_ray.records import ResultRecord
from qure_ray.storage.keys import asset_key
from qure_ray.storage.object_store import ObjectStore, StoreLocation


@functools.lru_cache(maxsize=4)
def _store(location: StoreLocation) -> ObjectStore:
    """One store client per worker process: Ray reuses workers, and a new S3 client costs tens of ms of CPU."""
    return location.open()


@ray.remote(num_cpus=0.5, max_retries=0)
def preprocess(location: StoreLocation, object_key: str, size: int, windowing: Windowing) -> NDArray[np.float32]:
    """Read the original from the object store, decode its first frame, window and resize it for the model.

    Returns a float32 `size` x `size` array in [0, 1] (the job manager checks it is not blank, then sends it on
    to the model replica).
    Retries are the job manager's (it knows which failures are worth retrying).
    """
    return prepare_for_model(_store(location).get(object_key), size=size, windowing=windowing)


@ray.remote(num_cpus=0.5, max_retries=0)
def preprocess_slices(
    location: StoreLocation, object_key: str, size: int, windowing: Windowing
) -> tuple[NDArray[np.float32], dict[int, str]]:
    """`preprocess` for an object of a series read slice by slice: every frame, (frames, size, size), and why any
    could not be read (`prepare_slices`). One read of an enhanced CT for all its slices, not one per slice."""
    return prepare_slices(_store(location).get(object_key), size=size, windowing=windowing)


@ray.remote(num_cpus=0.5, max_retries=0)
def build_outputs(
    location: StoreLocation,
    images: list[tuple[str, int | None, np.ndarray | None]],
    result: ResultRecord,
    card_path: str,
) -> dict[str, list[str]]:
    """Render SC, SR, PDF, encapsulated PDF and PNGs for one result; store them; return kind → keys.

    `images`: (object key of the original, frame number or None, its heatmaps): the image read, or a series' key
    slices (two may be frames of one object: it is read once).
    """
    store = _store(location)
    originals: dict[str, pydicom.Dataset] = {}
    for key, _, _ in images:
        if key not in originals:
            originals[key] = pydicom.dcmread(BytesIO(store.get(key)))
    sources = [KeyImage(originals[key], heatmaps, frame) for key, frame, heatmaps in images]
    card = load_card(Path(card_path))
    keys: dict[str, list[str]] = {}
    for asset in render_assets(sources, result, card):
        key = asset_key(result.source, result.sop_uid, asset.name)
        store.put(key, asset.data, media_type=asset.media_type)
        keys.setdefault(asset.kind.value, []).append(key)
    return keys
