"""Prometheus metrics, through `ray.util.metrics`: every node's Ray metrics agent exports them.

Scrape `http://<node>:<metrics-export-port>/metrics` (`ray start --metrics-export-port=...`); Ray prefixes
each name with `ray_` (so `qure_uploads_total` is scraped as `ray_qure_uploads_total`). Labels never carry
PHI: sources, outcomes, states, stages, model names and rule codes only. `METRICS` documents each one
(docs/deploy.md renders it).
"""

from __future__ import annotations

from functools import cache

from ray.util.metrics import Counter, Gauge, Histogram

SECONDS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120]
BATCH_SIZES = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0]

METRICS: dict[str, tuple[str, tuple[str, ...]]] = {
    "qure_uploads_total": ("instances uploaded (any edge), by source and outcome: stored (new or overwritten), "
                           "duplicate (same content again), refused", ("source", "outcome")),
    "qure_upload_bytes_total": ("bytes of those instances, by source and outcome", ("source", "outcome")),
    "qure_queue_depth": ("instances waiting in the ImageQueue (uploads get 503 above QURE_MAX_QUEUE_DEPTH)", ()),
    "qure_instances": ("instances in the catalog by current state (received ... done, failed)", ("state",)),
    "qure_stage_seconds": ("time per workflow stage (queue, preprocess, inference, outputs, slices), by use case",
                           ("stage", "usecase")),
    "qure_model_batch_size": ("images per model forward pass (how full Serve's batches are)", ("model",)),
    "qure_model_inference_seconds": ("time of one batched forward pass", ("model",)),
    "qure_failures_total": ("refused uploads by rule code (stage=ingest), and instances that ended unusable, "
                            "unsupported or failed (stage=processing)", ("stage", "reason")),
    "qure_webhook_deliveries_total": ("webhook attempts by outcome: delivered, retrying, gave_up", ("outcome",)),
    "qure_webhook_delay_seconds": ("time from a result's recording to its webhook's delivery (a 2xx answer), "
                                   "retries included: how late partners learn of results", ()),
}  # fmt: skip


def _tags(name: str) -> tuple[str, ...]:
    return METRICS[name][1]


@cache
def counter(name: str) -> Counter:
    return Counter(name, description=METRICS[name][0], tag_keys=_tags(name))


@cache
def gauge(name: str) -> Gauge:
    return Gauge(name, description=METRICS[name][0], tag_keys=_tags(name))


@cache
def histogram(name: str) -> Histogram:
    boundaries = BATCH_SIZES if name == "qure_model_batch_size" else SECONDS
    return Histogram(name, description=METRICS[name][0], boundaries=boundaries, tag_keys=_tags(name))


def count_upload(source: str, outcome: str, size_bytes: int) -> None:
    counter("qure_uploads_total").inc(1, tags={"source": source, "outcome": outcome})
    if size_bytes > 0:  # Ray's Counter.inc refuses 0: an empty part, or a refusal that read no bytes
        counter("qure_upload_bytes_total").inc(size_bytes, tags={"source": source, "outcome": outcome})


def count_failure(stage: str, reason: str) -> None:
    counter("qure_failures_total").inc(1, tags={"stage": stage, "reason": reason})
