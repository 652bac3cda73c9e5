"""The benchmark report: a tidy table (one row per measurement), the three target ratios, JSON and plots."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

if TYPE_CHECKING:
    from qure_ray.bench.workloads import Timed
    from qure_ray.models.timing import ForwardTiming

TARGETS = {
    "pipeline_efficiency": ("≥", 0.90, "end-to-end images/s at the best concurrency ÷ model-limit images/s"),
    "ingest_vs_orthanc": ("≥", 1.0, "qure_ray (S3) ÷ Orthanc (local disk) instances/s, 2 MB DX, 8 clients"),
    "results_p99_ms": ("≤", 25.0, "GET /results p99 latency at 8 clients, largest catalog"),
    "results_p99_growth": (
        "≤",
        2.0,
        "GET /results p99 at the largest catalog ÷ p99 at the smallest (the target's 1M ÷ 10k rows: a "
        "full run; a quick run measures 100k ÷ 10k)",
    ),
}
PERCENTILE_SAMPLES = {50: 1, 95: 20, 99: 100}
"""The fewest latencies a percentile is reported from: the p99 of 24 samples is their maximum."""
CONTEXT = {
    "ingest_vs_store": "qure_ray ingest ÷ bare S3 PUTs of the same 2 MB instances: the share of the store's rate",
    "store_vs_orthanc": "bare S3 PUTs ÷ Orthanc, 2 MB: the most ingest_vs_orthanc can reach with this store here",
}
"""Ratios that explain the targets' numbers; no target of their own."""


@dataclass
class BenchReport:
    machine: dict[str, Any]
    config: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list)
    latencies_ms: dict[str, list[float]] = field(default_factory=dict)
    """Per (benchmark, variant): every latency, for the distribution plot."""
    sweeps: dict[str, dict[int, float]] = field(default_factory=dict)
    """Card name → batch size → images/s of the bare forward pass, in the order measured (the sweep plot)."""

    def add(self, benchmark: str, variant: str, unit: str, value: float) -> None:
        self.rows.append({"benchmark": benchmark, "variant": variant, "metric": unit, "value": round(value, 4)})

    def add_timed(
        self, benchmark: str, variant: str, timed: Timed, *, throughput_unit: str = "images/s", latencies: bool = False
    ) -> None:
        self.add(benchmark, variant, throughput_unit, timed.per_s)
        if timed.bytes_sent:
            self.add(benchmark, variant, "MB/s", timed.mb_per_s)
        self.add(benchmark, variant, "samples", timed.count)
        for q, fewest in PERCENTILE_SAMPLES.items():  # too few: not measured (null), not the slowest one or two
            self.add(benchmark, variant, f"p{q} ms", timed.percentile_ms(q) if timed.count >= fewest else math.nan)
        if latencies:
            self.latencies_ms[f"{benchmark}: {variant}"] = [s * 1000 for s in timed.latencies_s]

    def value(self, benchmark: str, variant: str, metric: str) -> float:
        for row in self.rows:
            if (row["benchmark"], row["variant"], row["metric"]) == (benchmark, variant, metric):
                return float(row["value"])
        return math.nan

    def _variants(self, benchmark: str) -> list[str]:
        return list(dict.fromkeys(row["variant"] for row in self.rows if row["benchmark"] == benchmark))

    def ratios(self) -> dict[str, float]:
        end_to_end, lookups = self._variants("end to end"), self._variants("results lookup")
        model = self._model_limit()
        ratios = {
            "pipeline_efficiency": max(self.value("end to end", v, "images/s") for v in end_to_end) / model
            if end_to_end else math.nan,
            "ingest_vs_orthanc": self.value("ingest qure_ray (S3)", "large 2 MB", "instances/s")
            / self.value("ingest Orthanc (local disk)", "large 2 MB", "instances/s"),
            "results_p99_ms": self.value("results lookup", lookups[-1], "p99 ms") if lookups else math.nan,
            "results_p99_growth": self.value("results lookup", lookups[-1], "p99 ms")
            / self.value("results lookup", lookups[0], "p99 ms") if lookups else math.nan,
        }  # fmt: skip
        return {name: round(value, 3) for name, value in ratios.items()}

    def _model_limit(self) -> float:
        variants = self._variants("model limit")
        return self.value("model limit", variants[0], "images/s") if variants else math.nan

    def context(self) -> dict[str, float]:
        store = self.value("store limit (S3 PUT)", "large 2 MB", "instances/s")
        ratios = {
            "ingest_vs_store": self.value("ingest qure_ray (S3)", "large 2 MB", "instances/s") / store,
            "store_vs_orthanc": store / self.value("ingest Orthanc (local disk)", "large 2 MB", "instances/s"),
        }
        return {name: round(value, 3) for name, value in ratios.items()}

    def met(self) -> dict[str, bool]:
        ratios = self.ratios()
        return {
            name: (ratios[name] >= bound if sense == "≥" else ratios[name] <= bound)
            for name, (sense, bound, _) in TARGETS.items()
        }

    def add_sweep_timing(self, card: str, timing: ForwardTiming) -> None:
        """Rows `model sweep / <card> batch <n>`: images/s, batch p50/p99 ms and how many batches they rest
        on, and on CUDA the peak memory allocated and reserved."""
        variant = f"{card} batch {timing.batch_size}"
        self.add("model sweep", variant, "images/s", timing.images_per_s)
        self.add("model sweep", variant, "batch p50 ms", timing.batch_ms(50))
        self.add("model sweep", variant, "batch p99 ms", timing.batch_ms(99))
        self.add("model sweep", variant, "batches", timing.batches)
        for metric, value in (
            ("peak allocated MB", timing.peak_allocated_mb),
            ("peak reserved MB", timing.peak_reserved_mb),
        ):
            if value is not None:
                self.add("model sweep", variant, metric, value)
        self.sweeps.setdefault(card, {})[timing.batch_size] = timing.images_per_s

    def table(self) -> pa.Table:
        return pa.Table.from_pylist(self.rows)

    def to_json(self, path: Path | None = None) -> dict[str, Any]:
        ratios = self.ratios()
        document = {
            "machine": self.machine,
            "config": {k: list(v) if isinstance(v, tuple) else v for k, v in self.config.items()},
            "results": [{**row, "value": _finite(row["value"])} for row in self.rows],
            "ratios": _measured(ratios),
            "targets": {name: f"{sense} {bound}" for name, (sense, bound, _) in TARGETS.items()},
            "met": {name: None if math.isnan(ratios[name]) else met for name, met in self.met().items()},
            "context": _measured(self.context()),
        }
        if path is not None:
            path.write_text(json.dumps(document, indent=2, allow_nan=False))
        return document

    def summary(self) -> str:
        """The table as text, then the ratios against their targets."""
        width = max((len(f"{r['benchmark']} / {r['variant']}") for r in self.rows), default=10)
        metric_width = max((len(r["metric"]) for r in self.rows), default=6)
        lines = [f"{'benchmark / variant':<{width}}  {'metric':<{metric_width}} value"]
        lines += [
            f"{r['benchmark'] + ' / ' + r['variant']:<{width}}  {r['metric']:<{metric_width}} {r['value']:g}"
            for r in self.rows
        ]
        lines.append("")
        met = self.met()
        for name, value in self.ratios().items():
            sense, bound, meaning = TARGETS[name]
            state = "not measured in this run" if math.isnan(value) else "met" if met[name] else "NOT met"
            lines.append(f"{name} = {value:g} (target {sense} {bound:g}: {state}) — {meaning}")
        for name, value in self.context().items():
            if not math.isnan(value):
                lines.append(f"{name} = {value:g} — {CONTEXT[name]}")
        return "\n".join(lines)

    def plot(self, directory: Path) -> list[Path]:
        """In `directory`: model_sweep.png when the run swept batch sizes, and throughput_vs_concurrency.png and
        latency_distribution.png when it measured the platform."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        directory.mkdir(parents=True, exist_ok=True)
        paths = []
        if self.sweeps:
            figure, axis = plt.subplots(figsize=(6, 4))
            for card, points in self.sweeps.items():
                axis.plot(list(points), list(points.values()), marker="o", label=card)
            axis.set(xlabel="batch size", ylabel="images/s", title="Bare forward pass vs batch size")
            axis.set_xscale("log", base=2)
            axis.legend()
            paths.append(directory / "model_sweep.png")
            figure.savefig(paths[-1], dpi=100, bbox_inches="tight")
            plt.close(figure)
        variants = self._variants("end to end")
        if not variants:
            return paths
        clients = [int(v.split()[0]) for v in variants]
        figure, axis = plt.subplots(figsize=(6, 4))
        axis.plot(clients, [self.value("end to end", v, "images/s") for v in variants], marker="o", label="end to end")
        model = self._model_limit()
        axis.axhline(model, linestyle="--", color="grey", label="model limit")
        axis.set(xlabel="concurrent clients", ylabel="images/s", title="Throughput vs concurrency")
        axis.legend()
        paths.append(directory / "throughput_vs_concurrency.png")
        figure.savefig(paths[-1], dpi=100, bbox_inches="tight")
        plt.close(figure)
        figure, axis = plt.subplots(figsize=(6, 4))
        for label, values in self.latencies_ms.items():
            axis.hist(values, bins=30, alpha=0.5, label=label)
        axis.set(xlabel="latency (ms)", ylabel="requests", title="Latency distribution", xscale="log")
        axis.legend(fontsize=7)
        paths.append(directory / "latency_distribution.png")
        figure.savefig(paths[-1], dpi=100, bbox_inches="tight")
        plt.close(figure)
        return paths


def _finite(value: float) -> float | None:
    """JSON has no NaN: what this run did not measure (a ratio, a percentile of nothing) is null."""
    return None if math.isnan(value) else value


def _measured(ratios: dict[str, float]) -> dict[str, float | None]:
    return {name: _finite(value) for name, value in ratios.items()}
