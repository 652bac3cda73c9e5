"""The Serve application builder: `serve_config.yaml` imports `qure_ray.app:build_app`.

Its args are the settings of `qure_ray.config` (same names as the environment variables). It wires:

    Ingress ──► CatalogActor ◄── ImageQueue ◄── JobManager ──► ModelDeployment (one per model card)
       └──────────────────────────► ImageQueue      └──► preprocess (Ray task)
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import ray
from ray.serve import Application

from qure_ray.api.dimse import DimseGateway
from qure_ray.api.ingress import Ingress
from qure_ray.config import Settings
from qure_ray.errors import ConfigError
from qure_ray.models.card import CARD_FILE, ModelCard
from qure_ray.models.deployment import ModelDeployment
from qure_ray.models.registry import load_registry
from qure_ray.pipeline.catalog_actor import CatalogActor
from qure_ray.pipeline.image_queue import ImageQueue
from qure_ray.pipeline.job_manager import JobManager
from qure_ray.routing import load_routing

logger = logging.getLogger(__name__)
LOCAL_STATE_DIR = Path(".qure")
MODEL_BATCHES_IN_FLIGHT = 4
"""A model replica takes this many batches' worth of requests at once, so `@serve.batch` can fill a batch
while the previous one runs (Serve only batches what a replica has been handed)."""


def build_app(args: dict[str, Any] | None = None) -> Application:
    """Validate the settings and model cards, then bind every deployment of the platform."""
    settings = Settings.load(args or {}, os.environ)
    if not settings.tokens:
        settings, created = settings.with_dev_token(LOCAL_STATE_DIR)
        if created:
            logger.warning("QURE_TOKENS is unset: generated a dev token in %s", LOCAL_STATE_DIR / "dev-token")
    settings = settings.with_local_secrets_key(LOCAL_STATE_DIR)
    settings, made = settings.with_deployment_url_secret()
    if made:
        logger.warning("QURE_URL_SECRET is unset: asset URLs are signed with a key made for this deploy")
    if not settings.secret_sealer.enabled:
        logger.warning("QURE_SECRETS_KEY is unset: webhook secrets are stored in clear in the catalog")
    models_dir = settings.models_path
    cards = load_registry(models_dir)
    load_routing(settings.routing_path)  # a bad rules file stops the deploy here, with its message
    _check_gpus(settings)
    location = settings.store_location
    catalog = CatalogActor.bind(location, settings.catalog_flush_interval_s)
    queue = ImageQueue.bind(catalog)
    models = {usecase.value: _model_deployment(card, settings) for usecase, card in cards.items()}
    jobs = JobManager.bind(
        catalog=catalog,
        queue=queue,
        models=models,
        location=location,
        models_dir=str(models_dir),
        routing_file=str(settings.routing_path),
        max_concurrent_jobs=settings.max_concurrent_jobs,
        max_attempts=settings.max_attempts,
        series_quiet_period_s=settings.series_quiet_period_s,
        results_base_url=settings.results_base_url,
        webhook_max_attempts=settings.webhook_max_attempts,
        webhook_networks=settings.webhook_networks,
        secret_sealer=settings.secret_sealer,
        task_resources=settings.cpu_worker_resources,
    )
    # resolved here: the ingress routes too (it settles what no use case reads), in its replica's own folder
    ingress_args = {
        **settings.to_args(),
        "QURE_MODELS_DIR": str(models_dir),
        "QURE_ROUTING_FILE": str(settings.routing_path),
    }
    dimse = DimseGateway.bind(ingress_args, catalog=catalog, queue=queue, jobs=jobs) if settings.dimse_port else None
    ingress_options: dict[str, Any] = {
        "max_queued_requests": settings.ingress_max_queued_requests or -1,
        "ray_actor_options": {"num_cpus": 0, "resources": settings.cpu_worker_resources},
        **replicas(settings.ingress_replicas, settings.ingress_max_replicas, target_ongoing_requests=32),
    }
    return Ingress.options(**ingress_options).bind(
        ingress_args, catalog=catalog, queue=queue, jobs=jobs, models=models, dimse=dimse
    )


def _model_deployment(card: ModelCard, settings: Settings) -> Application:
    """One Serve deployment per model card: batching from the card unless the settings override it."""
    batching = card.batching(
        max_batch_size=settings.model_max_batch_size, batch_wait_timeout_s=settings.model_batch_wait_timeout_s
    )
    return ModelDeployment.options(
        name=f"model-{card.name}",
        max_ongoing_requests=batching.max_batch_size * MODEL_BATCHES_IN_FLIGHT,
        ray_actor_options={"num_cpus": settings.model_num_cpus, "num_gpus": settings.model_num_gpus},
        **replicas(
            settings.model_replicas, settings.model_max_replicas, target_ongoing_requests=batching.max_batch_size * 2
        ),
    ).bind(
        str(card.folder / CARD_FILE),
        num_gpus=settings.model_num_gpus,
        max_batch_size=batching.max_batch_size,
        batch_wait_timeout_s=batching.batch_wait_timeout_s,
    )


def replicas(fixed: int, maximum: int, *, target_ongoing_requests: float) -> dict[str, Any]:
    """Serve options for a deployment's replica count: `fixed`, or autoscaling from it up to `maximum`."""
    if maximum > fixed:
        return {
            "autoscaling_config": {
                "min_replicas": fixed,
                "initial_replicas": fixed,
                "max_replicas": maximum,
                "target_ongoing_requests": target_ongoing_requests,
            }
        }
    return {"num_replicas": fixed}


def _check_gpus(settings: Settings) -> None:
    if settings.model_num_gpus > 0 and ray.is_initialized():
        check_gpu_request(
            settings.model_num_gpus,
            available=ray.cluster_resources().get("GPU", 0),
            on_demand=bool(settings.model_gpus_on_demand),
        )


def check_gpu_request(num_gpus: float, *, available: float, on_demand: bool = False) -> None:
    """With GPUs asked for and too few in the cluster, fail now instead of waiting forever to schedule, unless
    the operator says the autoscaler starts GPU nodes on demand (then replicas wait for them, and say so)."""
    if num_gpus <= 0 or available >= num_gpus:
        return
    if on_demand:
        logger.warning(
            "the cluster has %g GPU(s) now; model replicas (%g GPU each) wait for the autoscaler to start GPU "
            "nodes (QURE_MODEL_GPUS_ON_DEMAND=1)", available, num_gpus,
        )  # fmt: skip
        return
    raise ConfigError(
        f"QURE_MODEL_NUM_GPUS: {num_gpus:g} GPU(s) per model replica asked for, but the Ray cluster has "
        f"{available:g} GPU(s) and no CUDA device to give; set QURE_MODEL_NUM_GPUS=0 to run models on CPU, "
        "add GPU worker nodes, or set QURE_MODEL_GPUS_ON_DEMAND=1 when the autoscaler starts them"
    )
