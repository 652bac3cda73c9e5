"""Ray tasks of the workflow: CPU work that runs anywhere on the cluster."""

from __future__ import annotations

import numpy as np
import ray
from numpy.typing import NDArray

from qure_ray.dicom.pixels import prepare_for_model
from qure_ray.storage.object_store import StoreLocation


@ray.remote(num_cpus=0.5, max_retries=0)
def preprocess(location: StoreLocation, object_key: str, size: int, window_mode: str) -> NDArray[np.float32]:
    """Read the original from the object store, decode, window and resize it for the model.

    Returns a float32 `size` x `size` array in [0, 1]; numpy results cross to the model replica zero-copy.
    Retries are the job manager's (it knows which failures are worth retrying).
    """
    data = location.open().get(object_key)
    return prepare_for_model(data, size=size, window_mode=window_mode)
