"""`ModelDeployment`: one Serve deployment per model card; each replica loads its model once.

Requests carry one preprocessed image; `@serve.batch` groups concurrent requests into one forward pass.
Keep `max_ongoing_requests` >= `max_batch_size` x concurrent batches, or batches never fill.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import numpy as np
import ray
import torch
from numpy.typing import NDArray
from ray import serve

from qure_ray import metrics
from qure_ray.config import BACKGROUND_LOGGING
from qure_ray.models.card import load_card
from qure_ray.models.inference import predict_batch, select_device, warm_up
from qure_ray.models.network import load_network
from qure_ray.records import Prediction
from qure_ray.replica_logging import log_to_replica_file

logger = logging.getLogger(__name__)


@serve.deployment(ray_actor_options={"num_cpus": 1}, logging_config=BACKGROUND_LOGGING, health_check_period_s=10)
class ModelDeployment:
    def __init__(self, card_path: str, *, num_gpus: float, max_batch_size: int, batch_wait_timeout_s: float) -> None:
        log_to_replica_file()
        self.card = load_card(Path(card_path))
        assigned = ray.get_runtime_context().get_accelerator_ids().get("GPU", [])
        self.device = select_device(num_gpus=num_gpus, cuda_available=torch.cuda.is_available())
        self.network = load_network(self.card, self.device)
        warm_up(self.network, self.card, self.device, max_batch_size=max_batch_size)
        self.predict.set_max_batch_size(max_batch_size)  # type: ignore[attr-defined]
        self.predict.set_batch_wait_timeout_s(batch_wait_timeout_s)  # type: ignore[attr-defined]
        self.batch_sizes: list[int] = []
        logger.info(
            "model %s %s loaded on %s (GPUs assigned: %s), batch size %d",
            self.card.name,
            self.card.version,
            self.device,
            assigned,
            max_batch_size,
        )

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.02)
    async def predict(self, images: list[NDArray[np.float32]]) -> list[Prediction]:
        self.batch_sizes.append(len(images))
        del self.batch_sizes[:-1000]
        tags = {"model": self.card.name}
        metrics.histogram("qure_model_batch_size").observe(len(images), tags=tags)
        started = time.perf_counter()
        predictions = await asyncio.to_thread(predict_batch, self.network, self.card, images, self.device)
        metrics.histogram("qure_model_inference_seconds").observe(time.perf_counter() - started, tags=tags)
        return predictions

    async def info(self) -> dict[str, object]:
        return {
            "name": self.card.name,
            "version": self.card.version,
            "trained": self.card.trained,
            "device": str(self.device),
            "recent_batch_sizes": list(self.batch_sizes[-50:]),
        }
