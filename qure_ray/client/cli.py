"""The `qure-ray` command line."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from qure_ray.client import commands as client_commands
from qure_ray.client import model_commands
from qure_ray.errors import ConfigError, QureError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="qure-ray", description="qure_ray: diagnostic AI on Ray Serve")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="run the platform locally (what `make run` does)")
    init = commands.add_parser("init-weights", help="write seeded random weights for a model card")
    init.add_argument("card", type=Path, help="path to models/<name>/model.yaml")
    init.add_argument("--seed", type=int, default=0)
    synth = commands.add_parser("synth", help="write a synthetic chest DX (no patient data) for trying things")
    synth.add_argument("output", type=Path)
    synth.add_argument("--seed", type=int, default=0)
    route = commands.add_parser("route", help="print the use case a DICOM file would be routed to, and why")
    route.add_argument("file", type=Path)
    route.add_argument("--source", required=True)
    route.add_argument("--rules", type=Path, default=None, help="routing YAML (default: the shipped rules)")
    model_commands.add_commands(commands)
    client_commands.add_commands(commands)
    bench = commands.add_parser("bench", help="throughput benchmarks (model limit, end to end, ingest, lookups)")
    bench.add_argument("--quick", action="store_true", help="small sizes (a few minutes); same code paths")
    bench.add_argument("--json", type=Path, default=None, help="write the report (results, ratios, machine) here")
    bench.add_argument("--plots", type=Path, default=None, help="write throughput and latency plots into this folder")
    bench.add_argument(
        "--model-sweep", action="store_true",
        help="only the bare forward pass of every model card across batch sizes, on this machine's GPU or CPU "
        "(no services): the data for serving.max_batch_size",
    )  # fmt: skip
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command in client_commands.COMMANDS:
        return client_commands.run(args)
    try:
        if args.command == "serve":
            from qure_ray.config import Settings
            from qure_ray.local import run_local

            run_local(Settings.load({}, os.environ))
        elif args.command == "synth":
            from qure_ray.dicom.synthetic import chest_dx

            args.output.write_bytes(chest_dx(seed=args.seed))
            print(f"wrote {args.output}")
        elif args.command == "route":
            _route(args.file, source=args.source, rules=args.rules)
        elif args.command == "init-weights":
            _init_weights(args.card, seed=args.seed)
        elif args.command == "models":
            model_commands.run(args)
        elif args.command == "bench":
            _bench(quick=args.quick, json_path=args.json, plots=args.plots, model_sweep=args.model_sweep)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    except QureError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def _bench(*, quick: bool, json_path: Path | None, plots: Path | None, model_sweep: bool) -> None:
    from qure_ray.bench import BenchConfig, run_benchmarks, run_model_sweep

    logging.getLogger().setLevel(logging.WARNING)
    config = BenchConfig.quick() if quick else BenchConfig()
    report = run_model_sweep(config) if model_sweep else run_benchmarks(config)
    print(report.summary())
    if json_path is not None:
        report.to_json(json_path)
        print(f"wrote {json_path}")
    if plots is not None:
        for path in report.plot(plots):
            print(f"wrote {path}")


def _route(path: Path, *, source: str, rules: Path | None) -> None:
    from qure_ray.dicom import read_instance
    from qure_ray.routing import InstanceFacts, load_routing

    metadata = read_instance(path.read_bytes()).metadata
    table = load_routing(rules) if rules else load_routing()
    decision = table.route(InstanceFacts.of(metadata, source=source))
    print(f"{decision.usecase.value}\t{decision.reason}")


def _init_weights(card_path: Path, *, seed: int) -> None:
    """Write seeded random weights next to the card and print the sha256 to put in it."""
    import hashlib

    import yaml

    from qure_ray.models.card import ModelCard
    from qure_ray.models.network import save_seeded_weights

    raw = yaml.safe_load(card_path.read_text())
    raw["weights"]["sha256"] = "0" * 64
    card = ModelCard(**raw, folder=card_path.parent)
    data = save_seeded_weights(card, seed=seed)
    card.weights_path.write_bytes(data)
    print(f"{card.weights_path}: {len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()}")


if __name__ == "__main__":
    sys.exit(main())
