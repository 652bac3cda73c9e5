"""The model sweep: the bare forward pass timed across batch sizes, its suggested batch size, and its report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from qure_ray.bench import BenchConfig, BenchReport, run_model_sweep
from qure_ray.bench.runner import add_model_sweep
from qure_ray.client.cli import main
from qure_ray.models import load_card, timing
from qure_ray.models.timing import ForwardTiming, suggested_batch_size, sweep_batch_sizes, sweep_input
from qure_ray.paths import SHIPPED_MODELS_DIR
from tests.unit.fresh_imports import loaded_by_importing

CARD = load_card(SHIPPED_MODELS_DIR / "qxr-densenet" / "model.yaml")
TINY = BenchConfig(sweep_batch_sizes=(1, 3), sweep_seconds=0.05)


def _timing(batch_size: int, images_per_s: float) -> ForwardTiming:
    """One batch whose wall time gives `images_per_s`."""
    seconds = batch_size / images_per_s
    return ForwardTiming(batch_size=batch_size, batch_seconds=(seconds,), wall_s=seconds)


def test_a_timing_counts_images_not_batches() -> None:
    measured = ForwardTiming(batch_size=4, batch_seconds=(0.010, 0.020, 0.030, 0.040), wall_s=0.1)
    assert measured.images_per_s == pytest.approx(160.0) and measured.batches == 4
    assert measured.batch_ms(50) == pytest.approx(25.0)
    assert measured.batch_ms(100) == pytest.approx(40.0)
    for bad in ({"batch_size": 0}, {"batch_seconds": ()}, {"wall_s": 0.0}):
        with pytest.raises(ValueError, match="a timing needs"):
            ForwardTiming(**{"batch_size": 4, "batch_seconds": (0.01,), "wall_s": 0.01, **bad})  # type: ignore[arg-type]


def test_the_suggestion_is_the_smallest_batch_near_the_best_throughput() -> None:
    timings = [_timing(1, 100), _timing(2, 180), _timing(4, 290), _timing(8, 300), _timing(16, 305)]
    assert suggested_batch_size(timings) == 4  # 290 ≥ 0.95 of 305, 180 is not
    assert suggested_batch_size(timings, near_best=1.0) == 16
    assert suggested_batch_size(list(reversed(timings))) == 4  # the order measured does not matter
    with pytest.raises(ValueError, match="no timings"):
        suggested_batch_size([])


def test_the_sweep_runs_the_served_forward_pass_at_each_batch_size() -> None:
    image = sweep_input(CARD)
    assert image.shape == (CARD.input.size, CARD.input.size) and image.min() >= 0 and image.max() <= 1
    timings = sweep_batch_sizes(CARD, image, batch_sizes=(1, 3), seconds_each=0.05)
    assert [measured.batch_size for measured in timings] == [1, 3]
    for measured in timings:
        assert measured.batches >= 1 and measured.wall_s >= sum(measured.batch_seconds)
        assert measured.peak_allocated_mb is None and measured.peak_reserved_mb is None  # CUDA only
    with pytest.raises(ValueError, match="at least one batch size"):
        sweep_batch_sizes(CARD, image, batch_sizes=(), seconds_each=0.05)


def test_the_sweep_stops_at_the_first_batch_size_the_gpu_has_no_memory_for(monkeypatch: pytest.MonkeyPatch) -> None:
    real = timing.time_forward

    def out_of_memory_from_4(*args: object, batch_size: int, seconds: float) -> ForwardTiming:
        if batch_size >= 4:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        return real(*args, batch_size=batch_size, seconds=seconds)  # type: ignore[arg-type]

    monkeypatch.setattr(timing, "time_forward", out_of_memory_from_4)
    timings = sweep_batch_sizes(CARD, sweep_input(CARD), batch_sizes=(1, 2, 4, 8), seconds_each=0.02)
    assert [measured.batch_size for measured in timings] == [1, 2]


def test_the_report_holds_each_batch_size_and_the_suggestion(tmp_path: Path) -> None:
    report = BenchReport(machine={}, config={})
    add_model_sweep(report, CARD, sweep_input(CARD), TINY)
    assert list(report.sweeps) == [CARD.name] and list(report.sweeps[CARD.name]) == [1, 3]
    metrics = {(row["variant"], row["metric"]) for row in report.rows}
    assert {(f"{CARD.name} batch 3", m) for m in ("images/s", "batch p50 ms", "batch p99 ms", "batches")} <= metrics
    assert report.value("model sweep", CARD.name, "suggested batch size") in (1, 3)
    summary = report.summary()
    assert "suggested batch size" in summary
    assert "pipeline_efficiency = nan (target ≥ 0.9: not measured in this run)" in summary
    assert [path.name for path in report.plot(tmp_path)] == ["model_sweep.png"]
    assert (tmp_path / "model_sweep.png").stat().st_size > 0


def test_a_sweep_needs_batch_sizes() -> None:
    for sizes in ((), (0, 4)):
        with pytest.raises(ValueError, match="sweep_batch_sizes"):
            BenchConfig(sweep_batch_sizes=sizes)


def test_the_sweep_alone_covers_every_card_and_the_cli_writes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    report = run_model_sweep(TINY)
    assert set(report.sweeps) == {"qxr-densenet", "qer-densenet"}
    import qure_ray.bench

    monkeypatch.setattr(qure_ray.bench, "run_model_sweep", lambda config: report)
    assert main(["bench", "--model-sweep", "--json", str(tmp_path / "sweep.json")]) == 0
    document = json.loads((tmp_path / "sweep.json").read_text())
    suggestions = [row for row in document["results"] if row["metric"] == "suggested batch size"]
    assert {row["variant"] for row in suggestions} == {"qxr-densenet", "qer-densenet"}
    assert document["ratios"]["pipeline_efficiency"] is None and document["met"]["pipeline_efficiency"] is None
    assert "NaN" not in (tmp_path / "sweep.json").read_text()  # strict JSON for jq and friends


def test_the_bare_machine_entry_point_sweeps_every_card(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert timing.main(["--batch-sizes", "1,2", "--seconds", "0.05", "--json", str(tmp_path / "gpu.json")]) == 0
    document = json.loads((tmp_path / "gpu.json").read_text())
    assert set(document["cards"]) == {"qxr-densenet", "qer-densenet"}
    for card in document["cards"].values():
        assert [row["batch_size"] for row in card["timings"]] == [1, 2]
        assert all(row["batches"] >= 1 for row in card["timings"])
        assert card["suggested_batch_size"] in (1, 2)
    assert "qxr-densenet on " in capsys.readouterr().out
    for bad in ("0,4", "a", ""):
        with pytest.raises(SystemExit):
            timing.main(["--batch-sizes", bad])
    assert "positive whole numbers" in capsys.readouterr().err


def test_the_timing_module_imports_no_platform_dependencies() -> None:
    """`benchmarks/gpu_sweep.sh` runs it on a CUDA machine that has torch but not Ray, boto3 or the rest."""
    heavy = ("ray", "boto3", "aiohttp", "highdicom", "duckdb", "pyarrow", "starlette", "httpx", "cryptography")
    assert loaded_by_importing("qure_ray.models.timing", heavy) == []


def test_the_bare_pass_can_be_timed_with_a_replica_s_thread_count() -> None:
    """A CPU replica gets its num_cpus of threads from Ray; the model limit is timed the same way."""
    import torch

    from qure_ray.models.timing import cpu_threads

    before = torch.get_num_threads()
    other = 2 if before == 1 else 1  # a change on any machine
    with cpu_threads(other):
        assert torch.get_num_threads() == other
    with cpu_threads(None):
        assert torch.get_num_threads() == before
    assert torch.get_num_threads() == before
