"""The platform under test: qure_ray as `make run` starts it (local Ray + Serve, the same builder), with its
data on S3, and a catalog that can be pre-filled with result rows for lookup benchmarks."""

from __future__ import annotations

import json
import logging
import os
import secrets
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq

from qure_ray.bench.services import S3_KEYS, S3Server, free_port, wait_for
from qure_ray.outputs.assets import AssetKind, asset_name
from qure_ray.records import InstanceState, UseCase
from qure_ray.storage.keys import asset_key, segment_key
from qure_ray.storage.object_store import ObjectStore, StoreLocation
from qure_ray.storage.schema import TABLES

APP_NAME = "qure_ray_bench"
TOKEN, SOURCE = "bench-token-0123456789", "bench"
SEED_STUDY = "1.2.826.0.1.3680043.10.999.1"


@dataclass(frozen=True)
class RunningPlatform:
    base_url: str
    location: StoreLocation

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Token {TOKEN}", "Source": SOURCE}

    @contextmanager
    def webhook(self, url: str, secret: str) -> Iterator[None]:
        """The benchmark's source has a webhook at `url` in the block (`PUT /webhooks`: every final result is
        POSTed there, signed), and none after it (`DELETE /webhooks`), so later workloads carry no deliveries."""
        hooks = f"{self.base_url}/webhooks"
        answer = httpx.put(hooks, json={"url": url, "secret": secret}, headers=self.headers)
        if answer.status_code != 200:
            raise RuntimeError(f"PUT /webhooks answered {answer.status_code}: {answer.text[:300]}")
        try:
            yield
        finally:
            answer = httpx.delete(hooks, headers=self.headers)
            if answer.status_code not in (200, 204):
                raise RuntimeError(f"DELETE /webhooks answered {answer.status_code}: {answer.text[:300]}")


def start_ray() -> None:
    """One local Ray for the whole benchmark run (on loopback, with S3 credentials in its environment)."""
    import ray

    from qure_ray.config import SERVE_ENVIRONMENT
    from qure_ray.local import MIN_LOCAL_CPUS, loopback_ray_environment

    loopback_ray_environment(SERVE_ENVIRONMENT)  # measured as deployed: HAProxy in front of the ingress
    _check_serve_reads(SERVE_ENVIRONMENT)
    # Ingress replicas drain at least 30 s so that load balancers stop sending; nothing sends once a benchmark
    # is done, and each platform's shutdown would otherwise add that wait.
    os.environ.setdefault("RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S", "2")
    os.environ.update({**S3_KEYS, "AWS_DEFAULT_REGION": "us-east-1"})
    if not ray.is_initialized():
        ray.init(
            include_dashboard=False,
            namespace=APP_NAME,
            logging_level=logging.WARNING,
            log_to_driver=False,
            num_cpus=max(MIN_LOCAL_CPUS, os.cpu_count() or 1),
        )


def _check_serve_reads(environment: dict[str, str]) -> None:
    """Serve reads its settings once, when `ray.serve` is first imported, and a handle built in this process
    carries them to the replica that calls through it: imported before `start_ray`, the ingress would call
    the catalog the way Serve's defaults do (Ray actor calls), not as a deployment does (gRPC)."""
    import sys

    constants = sys.modules.get("ray.serve._private.constants")
    wanted = environment.get("RAY_SERVE_THROUGHPUT_OPTIMIZED") == "1"
    if constants is not None and wanted and not constants.RAY_SERVE_THROUGHPUT_OPTIMIZED:
        raise RuntimeError(
            "ray.serve was imported before the benchmark set Serve's environment (qure_ray.config."
            "SERVE_ENVIRONMENT): run the benchmark in a fresh process or kernel, or export those variables first"
        )


@contextmanager
def platform(s3: S3Server, prefix: str, **settings: Any) -> Iterator[RunningPlatform]:
    """qure_ray deployed with `settings` (QURE_* names) over `s3://bucket/prefix`; removed afterwards."""
    start_ray()  # before Serve is imported (see `_check_serve_reads`)
    from ray import serve

    from qure_ray.app import build_app

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    args = {
        "QURE_DATA_URI": f"s3://{s3.bucket}/{prefix}",
        "AWS_ENDPOINT_URL": s3.endpoint_url,
        "QURE_TOKENS": f"{TOKEN}:{SOURCE}",
        "QURE_SECRETS_KEY": secrets.token_urlsafe(32),  # a throwaway catalog's: deployed as a deployment would be
        "QURE_HTTP_PORT": port,
        "QURE_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.1/32",  # the end-to-end clients' `ResultInbox`
        **settings,
    }
    serve.run(build_app(args), name=APP_NAME, route_prefix="/", blocking=False)
    running = RunningPlatform(f"http://127.0.0.1:{port}", StoreLocation(args["QURE_DATA_URI"], s3.endpoint_url))
    try:
        wait_for(lambda: httpx.get(f"{running.base_url}/ready", timeout=10).status_code == 200, timeout_s=600,
                 what="qure_ray /ready")  # fmt: skip
        yield running
    finally:
        serve.shutdown()  # also drains the job manager of work left in the queue (up to its drain timeout)
        _wait_until_serve_is_gone()


def _wait_until_serve_is_gone() -> None:
    """`serve.shutdown` waits at most 30 s; the next `serve.start` must not find the old controller still
    draining (it would attach to it and then lose it)."""
    import ray
    from ray.serve._private.constants import SERVE_CONTROLLER_NAME, SERVE_NAMESPACE

    def gone() -> bool:
        try:
            ray.get_actor(SERVE_CONTROLLER_NAME, namespace=SERVE_NAMESPACE)
        except ValueError:
            return True
        return False

    wait_for(gone, timeout_s=300, what="Serve's shutdown")


_SEED_ROWS: dict[str, dict[str, object]] = {
    "instances": {
        "source": SOURCE, "study_uid": SEED_STUDY, "series_uid": f"{SEED_STUDY}.0",
        "sop_class_uid": "1.2.840.10008.5.1.4.1.1.1.1", "modality": "DX", "body_part": "CHEST", "view_position": "PA",
        "series_description": "", "rows": 2048, "columns": 2048, "transfer_syntax": "1.2.840.10008.1.2.1",
        "size_bytes": 8_388_608, "sha256": "0" * 64, "object_key": f"dicom/{SOURCE}/{SEED_STUDY}/seeded.dcm",
    },
    "events": {"source": SOURCE, "state": InstanceState.DONE.value, "reason": ""},
    "results": {
        "source": SOURCE, "usecase": UseCase.QXR.value, "state": InstanceState.DONE.value, "triage_status": "Routine",
        "scores_json": '{"nodule": 0.1}', "decisions_json": '{"nodule": false}', "model_name": "seeded",
        "model_version": "0", "model_trained": False, "model_trained_on": "", "timings_json": "{}", "reason": "",
        "slices_json": "{}",
    },
}  # fmt: skip
"""What every seeded row holds besides its own row_id, SOPInstanceUID and time."""
_PLACEHOLDER_UID = "9.9.9.9"
_SEED_ASSETS_TEMPLATE = json.dumps(
    {kind.value: [asset_key(SOURCE, _PLACEHOLDER_UID, asset_name(kind))] for kind in AssetKind}
)
"""The assets of a chest X-ray result with findings: a lookup answers with a signed URL for each."""


def _seed_assets_json(sop_uid: str) -> str:
    """A result's `assets_json` (made by text replacement: a million rows are seeded in seconds)."""
    return _SEED_ASSETS_TEMPLATE.replace(f"/{_PLACEHOLDER_UID}/", f"/{sop_uid}/")


_TIME_COLUMN = {"instances": "received_at", "events": "event_at", "results": "finished_at"}


def seed_results(store: ObjectStore, rows: int, *, chunk: int = 250_000) -> list[str]:
    """Write `rows` finished instances (instance, `done` event and result rows) straight into the catalog's
    Parquet segments, as a platform that has served that many images would hold; returns their SOP UIDs."""
    sops: list[str] = []
    started = datetime.now(UTC) - timedelta(days=1)
    for offset in range(0, rows, chunk):
        count = min(chunk, rows - offset)
        uids = [f"{SEED_STUDY}.{offset + i + 1}" for i in range(count)]
        times = [started + timedelta(microseconds=offset + i) for i in range(count)]
        for table, template in _SEED_ROWS.items():
            schema = TABLES[table]
            varying = {
                "row_id": pa.array([uuid.uuid4().hex for _ in range(count)]),
                "sop_uid": pa.array(uids),
                _TIME_COLUMN[table]: pa.array(times, schema.field(_TIME_COLUMN[table]).type),
            }
            if table == "results":
                varying["assets_json"] = pa.array([_seed_assets_json(uid) for uid in uids])
            arrays = [
                varying[f.name] if f.name in varying else pa.repeat(pa.scalar(template[f.name], f.type), count)
                for f in schema
            ]
            sink = pa.BufferOutputStream()
            pq.write_table(pa.Table.from_arrays(arrays, schema=schema), sink, compression="zstd")
            store.put(segment_key(table, time.time_ns(), f"seed{offset}"), sink.getvalue().to_pybytes())
        sops += uids
    return sops
