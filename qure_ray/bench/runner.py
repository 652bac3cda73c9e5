"""One call runs every benchmark on this machine and returns a `BenchReport` (see `qure_ray.bench`)."""

from __future__ import annotations

import functools
import io
import logging
import os
import platform as host
import secrets
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import torch
from numpy.typing import NDArray
from pydicom.uid import generate_uid

from qure_ray.bench import workloads
from qure_ray.bench.inbox import ResultInbox
from qure_ray.bench.platform import RunningPlatform, platform, seed_results
from qure_ray.bench.report import BenchReport
from qure_ray.bench.services import orthanc, seaweedfs
from qure_ray.config import Settings
from qure_ray.dicom.pixels import prepare_for_model
from qure_ray.dicom.synthetic import chest_dx
from qure_ray.models.card import ModelCard
from qure_ray.models.inference import select_device
from qure_ray.models.network import load_network
from qure_ray.models.phantoms import (
    CHEST_FINDINGS,
    HEAD_CT_FINDINGS,
    chest_phantom,
    head_ct_multiframe,
    head_ct_series,
    to_dicom,
)
from qure_ray.models.registry import load_registry
from qure_ray.models.timing import (
    cpu_threads,
    suggested_batch_size,
    sweep_batch_sizes,
    sweep_input,
    time_forward,
)
from qure_ray.records import UseCase

logger = logging.getLogger(__name__)
INGEST_CLIENTS = 8
LOOKUP_CLIENTS = 8
LOOKUP_WARM_UP = 300
"""Untimed lookups on each fresh platform first: its first rounds are its slowest (see README)."""


@dataclass(frozen=True)
class BenchConfig:
    model_seconds: float = 20.0
    concurrencies: tuple[int, ...] = (1, 4, 8, 16)
    images_per_client: int = 8
    small_instances: int = 400
    large_instances: int = 200
    series_concurrencies: tuple[int, ...] = (1, 4)
    series_per_client: int = 2
    series_slices: int = 32
    """Slices of each head CT series (512 x 512, 16-bit: 0.5 MB each), sent as that many instances or as one
    multi-frame object."""
    lookup_rows: tuple[int, ...] = (10_000, 100_000, 1_000_000)
    lookup_requests: int = 2000
    sweep_batch_sizes: tuple[int, ...] = (1, 2, 4, 8, 16, 32)
    sweep_seconds: float = 3.0
    """Per batch size of the model sweep (the bare forward pass across batch sizes)."""
    settings: dict[str, Any] = field(default_factory=dict)
    """QURE_* settings of the platform under test (e.g. QURE_MODEL_MAX_BATCH_SIZE)."""

    def __post_init__(self) -> None:
        if not self.sweep_batch_sizes or min(self.sweep_batch_sizes) < 1:
            raise ValueError(f"sweep_batch_sizes must be positive batch sizes, got {self.sweep_batch_sizes}")

    @classmethod
    def quick(cls) -> BenchConfig:
        """Small enough for CI (about 4 minutes on 2 cores, most of it starting platforms); same code paths as
        the full run. A thousand lookups per catalog size, so that p99 is not the third-slowest request."""
        return cls(
            model_seconds=5.0, concurrencies=(1, 8), images_per_client=3, small_instances=64, large_instances=48,
            series_concurrencies=(2,), series_per_client=1, series_slices=16,
            lookup_rows=(10_000, 100_000), lookup_requests=1000, sweep_batch_sizes=(1, 4, 16), sweep_seconds=1.0,
        )  # fmt: skip


def phantom_images(count: int, *, seed: int) -> list[tuple[str, bytes]]:
    """(SOPInstanceUID, DICOM bytes) of chest phantoms, about a third with a finding."""
    images: list[tuple[str, bytes]] = []
    for i in range(count):
        findings = {CHEST_FINDINGS[i % len(CHEST_FINDINGS)]} if i % 3 == 0 else set()
        sop_uid = generate_uid()
        images.append((sop_uid, to_dicom(chest_phantom(seed=seed + i, findings=findings, size=512), sop_uid=sop_uid)))
    return images


def head_ct_studies(count: int, *, slices: int, multi_frame: bool, seed: int) -> list[tuple[str, list[bytes]]]:
    """(SeriesInstanceUID, its instances) of head CT phantoms, about a third with a finding: `slices` instances,
    or one Legacy Converted Enhanced CT of that many frames when `multi_frame`."""
    studies: list[tuple[str, list[bytes]]] = []
    for i in range(count):
        findings = {HEAD_CT_FINDINGS[i % len(HEAD_CT_FINDINGS)]} if i % 3 == 0 else set()
        make = head_ct_multiframe if multi_frame else head_ct_series
        made = make(seed=seed + i, findings=findings, slices=slices, size=512)
        parts = [made] if isinstance(made, bytes) else made
        series_uid = str(pydicom.dcmread(io.BytesIO(parts[0]), stop_before_pixels=True).SeriesInstanceUID)
        studies.append((series_uid, parts))
    return studies


def ingest_instances(count: int, *, size: int, seed: int) -> list[tuple[str, bytes]]:
    """(SOPInstanceUID, DICOM bytes) of DX instances of `size`² 16-bit pixels (512: 0.5 MB, 1024: 2 MB) of a body
    part no use case reads, so the pipeline behind ingest stays idle and the numbers are ingest's own (with no
    webhook registered: each is settled `unsupported` at ingest, a final result a webhook would announce)."""
    uids = [generate_uid() for _ in range(count)]
    return [(uid, chest_dx(size=size, seed=seed + i, body_part="KNEE", sop_uid=uid)) for i, uid in enumerate(uids)]


def run_benchmarks(config: BenchConfig | None = None, *, workdir: Path | None = None) -> BenchReport:
    """Run model limit and sweep, end to end (chest radiographs, then head CT series), store limit, ingest
    (qure_ray and Orthanc) and lookups; return the report."""
    config = config or BenchConfig()
    report = BenchReport(machine=_machine(), config=config.__dict__)
    settings = Settings.load(config.settings, os.environ)  # the platform under test reads the same
    card = load_registry(settings.models_path)[UseCase.QXR]
    batch_size = card.batching(max_batch_size=settings.model_max_batch_size).max_batch_size
    images = phantom_images(sum(config.concurrencies) * (config.images_per_client + 1), seed=10_000)
    image = prepare_for_model(images[0][1], size=card.input.size, windowing=card.preprocessing.windowing)
    # the model replica's device and, on the CPU, its thread count (Ray gives a replica its num_cpus of threads)
    device = select_device(num_gpus=settings.model_num_gpus, cuda_available=torch.cuda.is_available())
    with cpu_threads(int(settings.model_num_cpus) if device.type == "cpu" else None):
        network = load_network(card, device)  # one load (weights hashed, moved to the device): limit and sweep
        windows = [
            time_forward(network, card, image, device, batch_size=batch_size, seconds=config.model_seconds / 3)
            for _ in range(3)
        ]  # the median of three windows: one window on a busy VM once read 91 images/s where the sweep read 251
        report.add("model limit", card.name, "images/s", float(np.median([w.images_per_s for w in windows])))
        add_model_sweep(report, card, image, config, network=network)
    del network
    if device.type == "cuda":
        torch.cuda.empty_cache()  # the platform's replica gets the GPU's memory
    with tempfile.TemporaryDirectory(dir=workdir) as scratch, seaweedfs(Path(scratch) / "s3", bucket="bench") as s3:
        with platform(s3, "end-to-end", **config.settings) as running:
            with ResultInbox(secrets.token_hex(16)) as inbox, running.webhook(inbox.url, inbox.secret):
                offset = 0
                for clients in config.concurrencies:
                    # Warm-up at this concurrency first: Ray grows its pool of task workers to the number of tasks
                    # in flight, and each new worker's start (Python, imports) would be counted as the platform's.
                    warm_up = images[offset : offset + clients]
                    batch = images[offset + clients : offset + clients * (config.images_per_client + 1)]
                    offset += len(warm_up) + len(batch)
                    workloads.end_to_end(
                        running.base_url, warm_up, concurrency=clients, headers=running.headers, inbox=inbox
                    )
                    timed = workloads.end_to_end(
                        running.base_url, batch, concurrency=clients, headers=running.headers, inbox=inbox
                    )
                    report.add_timed("end to end", f"{clients} clients", timed, latencies=True)
                _head_ct_series(report, config, running, inbox)
            for label, size, count in (
                ("small 0.5 MB", 512, config.small_instances),
                ("large 2 MB", 1024, config.large_instances),
            ):
                data = ingest_instances(count, size=size, seed=size * 1000)
                store = s3.object_store(f"store-limit-{size}")  # each size its own keys: PUTs, not overwrites
                timed = workloads.store_puts(store, [payload for _, payload in data], concurrency=INGEST_CLIENTS)
                report.add_timed("store limit (S3 PUT)", label, timed, throughput_unit="instances/s")
                timed = workloads.ingest(
                    f"{running.base_url}/studies", data, concurrency=INGEST_CLIENTS, headers=running.headers
                )
                report.add_timed("ingest qure_ray (S3)", label, timed, throughput_unit="instances/s")
        with orthanc(Path(scratch) / "orthanc", peers={}) as pacs:
            for label, size, count in (
                ("small 0.5 MB", 512, config.small_instances),
                ("large 2 MB", 1024, config.large_instances),
            ):
                data = ingest_instances(count, size=size, seed=size * 1000 + 500_000)
                timed = workloads.ingest(f"{pacs.base_url}/dicom-web/studies", data, concurrency=INGEST_CLIENTS)
                report.add_timed("ingest Orthanc (local disk)", label, timed, throughput_unit="instances/s")
        for rows in config.lookup_rows:
            prefix = f"lookups-{rows}"
            sops = seed_results(s3.object_store(prefix), rows)
            with platform(s3, prefix, **config.settings) as running:
                workloads.lookups(running.base_url, sops, requests=LOOKUP_WARM_UP, concurrency=LOOKUP_CLIENTS,
                                  headers=running.headers, seed=1)  # fmt: skip
                timed = workloads.lookups(running.base_url, sops, requests=config.lookup_requests,
                                          concurrency=LOOKUP_CLIENTS, headers=running.headers)  # fmt: skip
                report.add_timed("results lookup", f"{rows} rows", timed, throughput_unit="requests/s", latencies=True)
    return report


def _head_ct_series(report: BenchReport, config: BenchConfig, running: RunningPlatform, inbox: ResultInbox) -> None:
    """Head CT series through their result at each concurrency, as instances and as one multi-frame object: series/s,
    slices/s and latency upload → result 200. Each concurrency warms up on as many series first."""
    for form, multi_frame in (("classic", False), ("multi-frame", True)):
        for clients in config.series_concurrencies:
            studies = head_ct_studies(clients * (config.series_per_client + 1), slices=config.series_slices,
                                      multi_frame=multi_frame, seed=20_000 + clients * 100)  # fmt: skip
            through = functools.partial(
                workloads.series_end_to_end, running.base_url, concurrency=clients, headers=running.headers, inbox=inbox
            )
            through(studies[:clients])  # warm-up
            timed = through(studies[clients:])
            variant = f"{form}, {clients} clients"
            report.add_timed("head CT series end to end", variant, timed, throughput_unit="series/s", latencies=True)
            report.add("head CT series end to end", variant, "slices/s", timed.per_s * config.series_slices)


def run_model_sweep(config: BenchConfig | None = None) -> BenchReport:
    """The model sweep alone, for every card in the registry: no services, so it runs on any machine with
    torch, a GPU one included (`qure-ray bench --model-sweep`)."""
    config = config or BenchConfig()
    report = BenchReport(machine=_machine(), config=config.__dict__)
    settings = Settings.load(config.settings, os.environ)
    for card in load_registry(settings.models_path).values():
        add_model_sweep(report, card, sweep_input(card), config)
    return report


def add_model_sweep(
    report: BenchReport,
    card: ModelCard,
    image: NDArray[np.float32],
    config: BenchConfig,
    *,
    network: torch.nn.Module | None = None,
) -> None:
    """Rows `model sweep / <card> batch <n>` (see `BenchReport.add_sweep_timing`) and the card's suggested
    batch size. `network`: the card's, already on its device (else it is loaded, on a GPU if any)."""
    timings = sweep_batch_sizes(
        card, image, batch_sizes=config.sweep_batch_sizes, seconds_each=config.sweep_seconds, network=network
    )
    for timing in timings:
        report.add_sweep_timing(card.name, timing)
    if timings:  # none when even the smallest batch did not fit in GPU memory (logged)
        report.add("model sweep", card.name, "suggested batch size", suggested_batch_size(timings))


def _machine() -> dict[str, Any]:
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "host": host.node(),
        "cpu": host.processor() or host.machine(),
        "cpus": os.cpu_count(),
        "gpu": gpu,
        "torch": torch.__version__,
        "python": host.python_version(),
    }
