"""`Ingress`: the Serve deployment that serves the Starlette app over HTTP (N replicas, CPU)."""

from __future__ import annotations

from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.applications import Starlette

from qure_ray.api.app import create_app
from qure_ray.api.platform import RayPlatform
from qure_ray.config import INGRESS_LOGGING
from qure_ray.replica_logging import log_to_replica_file


@serve.deployment(max_ongoing_requests=256, ray_actor_options={"num_cpus": 0}, logging_config=INGRESS_LOGGING)
@serve.ingress()
class Ingress:
    def __init__(
        self,
        settings_args: dict[str, Any],
        *,
        catalog: DeploymentHandle,
        queue: DeploymentHandle,
        jobs: DeploymentHandle,
        models: dict[str, DeploymentHandle],
        dimse: DeploymentHandle | None = None,
    ) -> None:
        log_to_replica_file()
        self.platform = RayPlatform.from_args(
            settings_args,
            catalog=catalog,
            queue=queue,
            jobs=jobs,
            models=models,
            extra_health=[dimse] if dimse is not None else [],
        )

    def __serve_build_asgi_app__(self) -> Starlette:
        return create_app(self.platform)
