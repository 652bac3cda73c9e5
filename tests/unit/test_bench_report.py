"""The benchmark report's ratios, targets and context, from hand-made measurements."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from qure_ray.bench.report import CONTEXT, TARGETS, BenchReport
from qure_ray.bench.workloads import Timed


def _report() -> BenchReport:
    report = BenchReport(machine={"cpus": 2}, config={"concurrencies": (1, 8)})
    report.add("model limit", "qxr", "images/s", 100.0)
    report.add_timed("end to end", "1 clients", Timed([1.0, 1.0], wall_s=2.0))
    report.add_timed("end to end", "8 clients", Timed([1.0] * 8, wall_s=0.5))  # 16 images/s
    report.add_timed("end to end", "16 clients", Timed([2.0] * 16, wall_s=2.0))  # 8 images/s: past saturation
    ingest = {"store limit (S3 PUT)": 40, "ingest qure_ray (S3)": 10, "ingest Orthanc (local disk)": 50}
    for benchmark, per_s in ingest.items():
        timed = Timed([0.1] * per_s, wall_s=1.0, bytes_sent=per_s * 2_000_000)
        report.add_timed(benchmark, "large 2 MB", timed, throughput_unit="instances/s")
    report.add_timed("results lookup", "10000 rows", Timed([0.020] * 150, wall_s=1.0),
                     throughput_unit="requests/s", latencies=True)  # fmt: skip
    report.add_timed("results lookup", "100000 rows", Timed([0.030] * 150, wall_s=1.0),
                     throughput_unit="requests/s", latencies=True)  # fmt: skip
    return report


def test_ratios_come_from_the_best_concurrency_the_2_mb_ingest_and_the_largest_catalog() -> None:
    ratios = _report().ratios()
    assert ratios["pipeline_efficiency"] == 0.16  # 8 clients' 16 images/s, not the last concurrency's 8
    assert ratios["ingest_vs_orthanc"] == 0.2
    assert ratios["results_p99_ms"] == pytest.approx(30.0)
    assert ratios["results_p99_growth"] == 1.5
    assert _report().met() == {
        "pipeline_efficiency": False, "ingest_vs_orthanc": False, "results_p99_ms": False, "results_p99_growth": True,
    }  # fmt: skip


def test_context_places_ingest_between_the_store_and_orthanc() -> None:
    assert _report().context() == {"ingest_vs_store": 0.25, "store_vs_orthanc": 0.8}


def test_json_and_summary_carry_every_ratio(tmp_path: Path) -> None:
    report = _report()
    report.to_json(tmp_path / "out.json")
    document = json.loads((tmp_path / "out.json").read_text())
    assert set(document["ratios"]) == set(TARGETS) and set(document["context"]) == set(CONTEXT)
    assert document["met"]["results_p99_growth"] is True
    summary = report.summary()
    assert "results_p99_growth = " in summary and "(target ≤ 2: met)" in summary
    assert "store_vs_orthanc = 0.8" in summary
    store_line = next(line for line in summary.splitlines() if line.startswith("store limit (S3 PUT) / large 2 MB"))
    assert store_line.split()[-2:] == ["instances/s", "40"]


def test_a_percentile_of_too_few_samples_is_not_reported() -> None:
    """The p99 of 24 latencies is their maximum: null, with the sample count beside it."""
    report = _report()
    assert report.value("end to end", "8 clients", "samples") == 8
    assert report.value("end to end", "8 clients", "p50 ms") == 1000.0
    assert all(math.isnan(report.value("end to end", "8 clients", f"p{q} ms")) for q in (95, 99))
    assert report.value("results lookup", "10000 rows", "p99 ms") == pytest.approx(20.0)
