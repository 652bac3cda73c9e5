"""Throughput benchmarks ML engineers run in one call (or `qure-ray bench`, or benchmarks/throughput.ipynb).

    from qure_ray.bench import BenchConfig, run_benchmarks
    report = run_benchmarks(BenchConfig.quick())
    print(report.summary()); report.table(); report.plot(Path("plots")); report.to_json(Path("out.json"))

On this machine, in one run: the bare model forward pass (model limit, and across batch sizes), uploads
through results with C concurrent clients (end to end; each learns of its result from the platform's webhook),
head CT series through their result (as instances and as one multi-frame object: series/s, slices/s, latency),
bare S3 PUTs of the ingest payloads (store limit), uploads only of 0.5 MB and 2 MB instances against qure_ray on
S3 (SeaweedFS) and against Orthanc's STOW-RS on local disk (the peer), and `GET /results` latency with 10k-1M
result rows in the catalog. Data comes from the phantom generator. Needs `.[bench]` (or `.[dev]`) and Debian's
orthanc + orthanc-dicomweb.
`run_model_sweep` (or `qure-ray bench --model-sweep`) times only the forward pass, of every card: it needs
torch and no services.
"""

from qure_ray.bench.report import CONTEXT, TARGETS, BenchReport
from qure_ray.bench.runner import BenchConfig, run_benchmarks, run_model_sweep

__all__ = ["CONTEXT", "TARGETS", "BenchConfig", "BenchReport", "run_benchmarks", "run_model_sweep"]
