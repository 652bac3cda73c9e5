"""Session-wide real services: SeaweedFS, one `ray start --head` cluster, qure_ray deployed with `serve deploy`."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import httpx
import pytest
import yaml

from qure_ray.config import SHIPPED_ROUTING_FILE
from qure_ray.storage.object_store import S3ObjectStore
from tests.integration.services import (
    RayCluster,
    S3Server,
    deploy_config,
    free_port,
    ray_head,
    seaweedfs,
    wait_healthy,
)

TOKEN, SOURCE = "integration-token-a", "site-a"
OTHER_TOKEN, OTHER_SOURCE = "integration-token-b", "site-b"
MAX_QUEUE_DEPTH = 10
DIMSE_CALLING_AE = "MODALITY1"
SERIES_QUIET_PERIOD_S = 15


@dataclass
class Deployed:
    """qure_ray as deployed for the tests, and a small HTTP client for it."""

    base_url: str
    s3: S3Server
    prefix: str
    cluster: RayCluster
    config_path: Path
    dimse_port: int
    args: dict[str, object] = field(default_factory=dict)

    def headers(self, *, other: bool = False) -> dict[str, str]:
        token, source = (OTHER_TOKEN, OTHER_SOURCE) if other else (TOKEN, SOURCE)
        return {"Authorization": f"Token {token}", "Source": source}

    def upload(
        self, *files: bytes, field: str = "file", other: bool = False, wait_when_busy: bool = True
    ) -> httpx.Response:
        """POST /studies as form-data; like a well-behaved client, honours 503 + Retry-After."""
        parts = [(field, (f"{i}.dcm", data, "application/dicom")) for i, data in enumerate(files)]
        deadline = time.monotonic() + 300
        while True:
            response = httpx.post(
                f"{self.base_url}/studies", files=parts, headers=self.headers(other=other), timeout=60
            )
            if response.status_code != 503 or not wait_when_busy or time.monotonic() > deadline:
                return response
            time.sleep(float(response.headers.get("Retry-After", "1")))

    def result(self, uid: str, *, other: bool = False) -> httpx.Response:
        return httpx.get(f"{self.base_url}/results/{uid}", headers=self.headers(other=other), timeout=30)

    def wait_final(self, uid: str, *, timeout_s: float = 180) -> httpx.Response:
        return self.wait_final_for(uid, timeout_s=timeout_s)

    def wait_final_for(self, uid: str, *, other: bool = False, timeout_s: float = 180) -> httpx.Response:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            response = self.result(uid, other=other)
            if response.status_code != 202:
                return response
            time.sleep(0.5)
        raise TimeoutError(f"{uid} still not final after {timeout_s}s: {response.text}")

    @cached_property
    def store(self) -> S3ObjectStore:
        """The platform's data URI as qure_ray itself reads it (originals, assets, catalog segments)."""
        return self.s3.object_store(self.prefix)


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with seaweedfs(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayCluster]:
    with ray_head(tmp_path_factory.mktemp("ray")) as head:
        yield head


@pytest.fixture(scope="session")
def deployed(s3: S3Server, cluster: RayCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployed]:
    port, dimse_port = free_port(), free_port()
    prefix = "platform"
    workdir = tmp_path_factory.mktemp("deploy")
    routing = yaml.safe_load(SHIPPED_ROUTING_FILE.read_text())
    routing["sources"][OTHER_SOURCE] = ["qxr"]  # site-b has not enabled head CT
    routing_file = workdir / "rules.yaml"
    routing_file.write_text(yaml.safe_dump(routing))
    args: dict[str, object] = {
        "QURE_DATA_URI": f"s3://{s3.bucket}/{prefix}",
        "AWS_ENDPOINT_URL": s3.endpoint_url,
        "QURE_TOKENS": f"{TOKEN}:{SOURCE},{OTHER_TOKEN}:{OTHER_SOURCE}",
        "QURE_MAX_INSTANCE_BYTES": 8 * 1024 * 1024,
        "QURE_MAX_QUEUE_DEPTH": MAX_QUEUE_DEPTH,
        "QURE_OVERWRITE_SOURCES": OTHER_SOURCE,
        "QURE_DIMSE_PORT": dimse_port,
        "QURE_DIMSE_CALLING_AES": f"{DIMSE_CALLING_AE}:{SOURCE}",
        "QURE_SERIES_QUIET_PERIOD_S": SERIES_QUIET_PERIOD_S,
        "QURE_ROUTING_FILE": str(routing_file),
        "QURE_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.1/32",  # the test receiver; other inside addresses stay refused
        "QURE_SECRETS_KEY": "integration-test-key-0123456789abcdef",  # webhook secrets sealed in the catalog
    }
    config_path = deploy_config(cluster, workdir, args=args, http_port=port)
    base_url = f"http://127.0.0.1:{port}"
    wait_healthy(base_url)
    yield Deployed(base_url, s3, prefix, cluster, config_path, dimse_port, args)
    cluster.serve("shutdown")
