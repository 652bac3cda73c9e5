"""The bare forward pass, timed (`time_forward`: the bench's model limit), and its throughput across batch sizes.

The sweep is the data behind a card's `serving.max_batch_size`: images/s rise with the batch until the device
is busy, while each batch (and each request waiting for one to fill) takes longer. `suggested_batch_size`
picks the smallest batch within a few percent of the best throughput. Runs on the serving device (CUDA when
torch sees one), through `predict_batch`, the replica's own code path (fp16 autocast, channels_last on CUDA).

`python -m qure_ray.models.timing --json FILE` sweeps every shipped card with nothing but torch, torchvision,
numpy, PyYAML, pydantic and pydicom imported: the GPU check a bare CUDA machine can run
(`benchmarks/gpu_sweep.sh`). `qure-ray bench --model-sweep` runs the same sweep into a benchmark report.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from qure_ray.models.card import ModelCard
from qure_ray.models.inference import predict_batch
from qure_ray.models.network import load_network
from qure_ray.models.registry import load_registry
from qure_ray.paths import SHIPPED_MODELS_DIR

logger = logging.getLogger(__name__)
DEFAULT_BATCH_SIZES = (1, 2, 4, 8, 16, 32)
NEAR_BEST = 0.95
"""A batch size is as good as the best one when its images/s reach this share of the best."""


@dataclass(frozen=True, kw_only=True)
class ForwardTiming:
    """`batch_size`-image batches run back to back: each batch's seconds, and the wall time of them all."""

    batch_size: int
    batch_seconds: tuple[float, ...]
    wall_s: float
    peak_allocated_mb: float | None = None
    """CUDA only: the most memory torch's tensors (weights, activations) held during these batches."""
    peak_reserved_mb: float | None = None
    """CUDA only: the most memory torch's caching allocator held from the GPU; add the CUDA context (a few
    hundred MB) for what a replica needs, e.g. when replicas share a GPU (`QURE_MODEL_NUM_GPUS` below 1)."""

    def __post_init__(self) -> None:
        if self.batch_size < 1 or not self.batch_seconds or self.wall_s <= 0:
            raise ValueError(f"a timing needs batch_size ≥ 1, timed batches and wall time; got {self}")

    @property
    def batches(self) -> int:
        """How many batches were timed: at large batch sizes p99 rests on only a few."""
        return len(self.batch_seconds)

    @property
    def images_per_s(self) -> float:
        return self.batch_size * self.batches / self.wall_s

    def batch_ms(self, q: float) -> float:
        return float(np.percentile(self.batch_seconds, q) * 1000)


@contextmanager
def cpu_threads(count: int | None) -> Iterator[None]:
    """torch's intra-op threads set to `count` for the block (None: left alone). A CPU replica gets its
    `num_cpus` as its thread count from Ray (OMP_NUM_THREADS); timed with every core of the machine, the bare
    pass would be faster than any replica could be."""
    if count is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, count))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def serving_device() -> torch.device:
    """The device a replica with a GPU gets, else the CPU: what the model sweep runs on when no settings say
    (`run_benchmarks` times the model limit on the settings' device, `inference.select_device`)."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def time_forward(
    network: nn.Module,
    card: ModelCard,
    image: NDArray[np.float32],
    device: torch.device,
    *,
    batch_size: int,
    seconds: float,
) -> ForwardTiming:
    """Batches of `image` through `predict_batch` for about `seconds`, after one untimed warm-up batch.

    `predict_batch` copies its scores and heatmaps back to the host, so on CUDA each batch's time includes the
    device's work, as a replica's does. The memory peaks start from an emptied cache, so each batch size
    reports its own."""
    batch = [image] * batch_size
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    predict_batch(network, card, batch, device)
    timings: list[float] = []
    started = time.perf_counter()
    while not timings or time.perf_counter() - started < seconds:
        before = time.perf_counter()
        predict_batch(network, card, batch, device)
        timings.append(time.perf_counter() - before)
    wall = time.perf_counter() - started
    peaks: dict[str, float] = {}
    if device.type == "cuda":
        peaks = {
            "peak_allocated_mb": torch.cuda.max_memory_allocated(device) / 2**20,
            "peak_reserved_mb": torch.cuda.max_memory_reserved(device) / 2**20,
        }
    return ForwardTiming(batch_size=batch_size, batch_seconds=tuple(timings), wall_s=wall, **peaks)


def sweep_batch_sizes(
    card: ModelCard,
    image: NDArray[np.float32],
    *,
    batch_sizes: Sequence[int],
    seconds_each: float,
    network: nn.Module | None = None,
) -> list[ForwardTiming]:
    """One timing per batch size, in the order given, with one network on the serving device (`network`, the
    card's there, or loaded). Stops at the first batch size the GPU has no memory for: the timings before it
    are returned, and it is logged."""
    if not batch_sizes:
        raise ValueError("a sweep needs at least one batch size")
    device = next(network.parameters()).device if network is not None else serving_device()
    network = network or load_network(card, device)
    timings = []
    for size in batch_sizes:
        try:
            timings.append(time_forward(network, card, image, device, batch_size=size, seconds=seconds_each))
        except torch.cuda.OutOfMemoryError:
            logger.warning("%s: batch size %d does not fit in GPU memory; the sweep stops there", card.name, size)
            torch.cuda.empty_cache()
            break
    return timings


def suggested_batch_size(timings: Sequence[ForwardTiming], *, near_best: float = NEAR_BEST) -> int:
    """The smallest batch size whose images/s reach `near_best` of the best: a larger batch past it buys
    little throughput and costs every request latency (the forward pass, and the wait for a batch to fill)."""
    if not timings:
        raise ValueError("no timings to choose a batch size from")
    best = max(timing.images_per_s for timing in timings)
    return min(timing.batch_size for timing in timings if timing.images_per_s >= near_best * best)


def sweep_input(card: ModelCard, *, seed: int = 0) -> NDArray[np.float32]:
    """A model input of the card's size: noise in [0, 1]. A dense network's forward pass costs the same
    whatever the pixels, and noise needs no phantom recipe, so any card can be swept."""
    return np.random.default_rng(seed).random((card.input.size, card.input.size), dtype=np.float32)


def _batch_sizes(text: str) -> list[int]:
    try:
        sizes = [int(size) for size in text.split(",")]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give positive whole numbers separated by commas, e.g. 1,8,32")
    return sizes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="the bare forward pass of every model card across batch sizes")
    parser.add_argument("--models-dir", type=Path, default=SHIPPED_MODELS_DIR, help="folder of model cards")
    parser.add_argument("--batch-sizes", type=_batch_sizes, default=list(DEFAULT_BATCH_SIZES), help="e.g. 1,8,32")
    parser.add_argument("--seconds", type=float, default=3.0, help="per batch size")
    parser.add_argument("--json", type=Path, default=None, help="write the timings here (after each card)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    device = serving_device()
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    cards: dict[str, Any] = {}
    for card in load_registry(args.models_dir).values():
        timings = sweep_batch_sizes(card, sweep_input(card), batch_sizes=args.batch_sizes, seconds_each=args.seconds)
        rows = [
            {"batch_size": t.batch_size, "images_per_s": round(t.images_per_s, 1), "batches": t.batches,
             "batch_p50_ms": round(t.batch_ms(50), 2), "batch_p99_ms": round(t.batch_ms(99), 2),
             "peak_allocated_mb": t.peak_allocated_mb, "peak_reserved_mb": t.peak_reserved_mb}
            for t in timings
        ]  # fmt: skip
        suggestion = suggested_batch_size(timings) if timings else None
        cards[card.name] = {"suggested_batch_size": suggestion, "timings": rows}
        print(f"{card.name} on {device_name}: suggested batch size {suggestion}")
        for row in rows:
            print("  " + "  ".join(f"{key} {value}" for key, value in row.items()))
        if args.json is not None:  # after each card: a run cut short keeps what it measured
            args.json.write_text(
                json.dumps({"device": device_name, "torch": torch.__version__, "cards": cards}, indent=2)
            )
    if args.json is not None:
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
