"""The bare forward pass, timed: the model limit, and its throughput across batch sizes.

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
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from qure_ray.models.card import ModelCard
from qure_ray.models.inference import predict_batch
from qure_ray.models.network import load_network
from qure_ray.models.registry import load_registry

SHIPPED_MODELS = Path(__file__).resolve().parents[2] / "models"
DEFAULT_BATCH_SIZES = (1, 2, 4, 8, 16, 32)

NEAR_BEST = 0.95
"""A batch size is as good as the best one when its images/s reach this share of the best."""


@dataclass(frozen=True)
class ForwardTiming:
    """`batch_size`-image batches run back to back: each batch's seconds, and the wall time of them all."""

    batch_size: int
    batch_seconds: list[float]
    wall_s: float
    peak_memory_mb: float | None = None
    """CUDA only: the most memory torch's allocator held during these batches."""

    @property
    def images_per_s(self) -> float:
        return self.batch_size * len(self.batch_seconds) / self.wall_s if self.wall_s else 0.0

    def batch_ms(self, q: float) -> float:
        return float(np.percentile(self.batch_seconds, q) * 1000)


def serving_device() -> torch.device:
    """The device a replica with a GPU gets, else the CPU: what the model limit is measured on."""
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
    device's work, as a replica's does."""
    batch = [image] * batch_size
    predict_batch(network, card, batch, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    timings: list[float] = []
    started = time.perf_counter()
    while not timings or time.perf_counter() - started < seconds:
        before = time.perf_counter()
        predict_batch(network, card, batch, device)
        timings.append(time.perf_counter() - before)
    wall = time.perf_counter() - started
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return ForwardTiming(batch_size, timings, wall, peak)


def model_limit(card: ModelCard, image: NDArray[np.float32], *, batch_size: int, seconds: float) -> float:
    """Images/s of the bare forward pass (scores + CAMs, as served) at the serving batch size, in a loop."""
    device = serving_device()
    return time_forward(
        load_network(card, device), card, image, device, batch_size=batch_size, seconds=seconds
    ).images_per_s


def sweep_batch_sizes(
    card: ModelCard, image: NDArray[np.float32], *, batch_sizes: Sequence[int], seconds_each: float
) -> list[ForwardTiming]:
    """One timing per batch size, in the order given, with one network on the serving device."""
    device = serving_device()
    network = load_network(card, device)
    return [time_forward(network, card, image, device, batch_size=size, seconds=seconds_each) for size in batch_sizes]


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="the bare forward pass of every model card across batch sizes")
    parser.add_argument("--models-dir", type=Path, default=SHIPPED_MODELS, help="folder of model cards")
    parser.add_argument("--batch-sizes", default=",".join(map(str, DEFAULT_BATCH_SIZES)), help="comma-separated")
    parser.add_argument("--seconds", type=float, default=3.0, help="per batch size")
    parser.add_argument("--json", type=Path, default=None, help="write the timings here")
    args = parser.parse_args(argv)
    batch_sizes = [int(size) for size in args.batch_sizes.split(",")]
    device = serving_device()
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    cards: dict[str, object] = {}
    for card in load_registry(args.models_dir).values():
        timings = sweep_batch_sizes(card, sweep_input(card), batch_sizes=batch_sizes, seconds_each=args.seconds)
        rows = [
            {"batch_size": t.batch_size, "images_per_s": round(t.images_per_s, 1),
             "batch_p50_ms": round(t.batch_ms(50), 2), "batch_p99_ms": round(t.batch_ms(99), 2),
             "peak_memory_mb": t.peak_memory_mb}
            for t in timings
        ]  # fmt: skip
        cards[card.name] = {"suggested_batch_size": suggested_batch_size(timings), "timings": rows}
        print(f"{card.name} on {device_name}: suggested batch size {suggested_batch_size(timings)}")
        for row in rows:
            print("  " + "  ".join(f"{key} {value}" for key, value in row.items()))
    document = {"device": device_name, "torch": torch.__version__, "cards": cards}
    if args.json is not None:
        args.json.write_text(json.dumps(document, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
