"""`qure-ray upload | results | gateway`: the client library on the command line.

`add_commands(subparsers)` registers the commands on the `qure-ray` parser and `run(args)` runs one,
returning the exit status: 0 when everything succeeded, 1 when anything failed (a refused file, a failed
or timed-out result, a download or forward error), 2 for a usage or configuration error. Failures print
one line starting with `error:` on stderr; `--json` prints one JSON document on stdout instead of the
table (with `"ok"` and `"error"` in it), and no progress bars.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from tqdm import tqdm

from qure_ray.client.api import DEFAULT_URL, QureClient
from qure_ray.client.errors import (
    ClientConfigError,
    DownloadError,
    ForwardError,
    NotFound,
    ProcessingFailed,
    QureClientError,
    UploadRefused,
    WaitTimeout,
)
from qure_ray.client.forward import parse_ae_address, parse_destination
from qure_ray.client.gateway import Gateway
from qure_ray.client.models import PACS_KINDS, FileOutcome, Result, UploadProgress, UploadReport

COMMANDS = frozenset({"upload", "results", "gateway"})
DEFAULT_TIMEOUT_S = 600.0
_RESULT_ERRORS = (ProcessingFailed, WaitTimeout, NotFound, DownloadError, ForwardError)


def add_commands(subparsers: Any) -> None:
    """Register `upload`, `results` and `gateway` on an `add_subparsers()` object."""
    connection = argparse.ArgumentParser(add_help=False)
    group = connection.add_argument_group("platform")
    group.add_argument("--url", help=f"platform URL (default: $QURE_URL, else {DEFAULT_URL})")
    group.add_argument("--token", help="API token (default: $QURE_TOKEN; prefer the variable: flags show in ps)")
    group.add_argument("--source", help="your source, as the token was issued for (default: $QURE_SOURCE)")

    upload = subparsers.add_parser(
        "upload", parents=[connection], help="upload DICOM files, folders or zips; optionally wait, download, forward"
    )
    upload.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="DICOM files, folders, .zip archives")
    upload.add_argument("--wait", action="store_true", help="wait for every result (implied by --download/--forward)")
    upload.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds to wait for all results")
    upload.add_argument("--download", type=Path, metavar="DIR", help="download each result's assets into DIR/<uid>/")
    upload.add_argument(
        "--forward", metavar="DEST", help="send the DICOM assets to a PACS: DICOMweb URL or AE@host:port"
    )
    upload.add_argument("--json", action="store_true", help="print one JSON document instead of the table")

    results = subparsers.add_parser("results", parents=[connection], help="show the result of a SOP or Series UID")
    results.add_argument("uid", help="SOPInstanceUID, or SeriesInstanceUID for head CT")
    results.add_argument("--wait", action="store_true", help="wait until it is final")
    results.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S)
    results.add_argument("--json", action="store_true", help="print the result as JSON")

    gateway = subparsers.add_parser(
        "gateway", parents=[connection], help="run a C-STORE SCP that sends to the platform and forwards results"
    )
    gateway.add_argument(
        "--listen", required=True, metavar="AE@HOST:PORT", help="AE title and address (host: 127.0.0.1)"
    )
    gateway.add_argument("--spool", required=True, type=Path, metavar="DIR", help="durable spool folder")
    gateway.add_argument("--forward", required=True, metavar="DEST", help="DICOMweb URL or AE@host:port for results")
    gateway.add_argument("--calling-aes", default="", metavar="AE1,AE2", help="accept only these calling AE titles")


def run(args: argparse.Namespace) -> int:
    """Run the command `args.command` (one of `COMMANDS`); the exit status."""
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)  # its debug output can include data sets
    if getattr(args, "json", False):
        logging.getLogger("qure_ray.client").setLevel(logging.WARNING)
    try:
        if args.command == "upload":
            return _upload(args)
        if args.command == "results":
            return _results(args)
        if args.command == "gateway":
            return _gateway(args)
    except ClientConfigError as exc:
        return _fail(args, f"configuration error: {exc}", status=2)
    except QureClientError as exc:
        return _fail(args, f"error: {exc}")
    except OSError as exc:  # this machine's side: a full or unwritable --download folder, a port in use
        return _fail(args, f"error: {exc.strerror or exc} ({exc.filename or type(exc).__name__})")
    raise ValueError(f"{args.command!r} is not a client command; these are {sorted(COMMANDS)}")


def main(argv: Sequence[str] | None = None) -> int:
    """The client commands alone (`python -m qure_ray.client.commands upload ...`)."""
    parser = argparse.ArgumentParser(prog="qure-ray", description="the qure_ray client")
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run(args)


# -- upload ------------------------------------------------------------------------------------------


@dataclass
class _Row:
    """One result of an upload: what came back, or what went wrong."""

    uid: str
    result: Result | None = None
    error: str = ""
    downloaded: dict[str, list[Path]] = field(default_factory=dict)
    forwarded: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        r = self.result
        return {
            "uid": self.uid,
            "result_uid": r.result_uid if r else None,
            "status": r.status.value if r else "error",
            "triage_status": r.triage_status.value if r and r.triage_status else None,
            "usecase": r.usecase if r else None,
            "positives": r.positives if r else [],
            "scores": r.scores if r else {},
            "message": r.message if r else self.error,
            "files": {kind: list(urls) for kind, urls in r.files.items()} if r else {},
            "downloaded": {kind: [str(p) for p in paths] for kind, paths in self.downloaded.items()},
            "forwarded": self.forwarded,
            "error": self.error or None,
        }


def _upload(args: argparse.Namespace) -> int:
    quiet = bool(args.json)
    wait = args.wait or args.download is not None or args.forward is not None
    destination = parse_destination(args.forward) if args.forward else None
    report: UploadReport | None = None
    rows: list[_Row] = []
    try:
        with _client(args) as client:
            with _upload_bar(quiet) as on_progress:
                report = client.upload(args.paths, on_progress=on_progress)
            if wait:
                rows = _wait_all(client, report.accepted, timeout_s=args.timeout, quiet=quiet)
            if args.download is not None or destination is not None:
                with tempfile.TemporaryDirectory(prefix="qure-assets-") as scratch:
                    root = args.download if args.download is not None else Path(scratch)
                    for row in _progress(rows, quiet, desc="download", unit="result"):
                        _deliver(client, row, root, destination)
    except UploadRefused as exc:
        report = exc.report
        return _finish(args, report, rows, f"error: {exc}")
    except ClientConfigError:
        raise
    except QureClientError as exc:
        return _finish(args, report, rows, f"error: {exc}")
    problems = [f"{f.path}: {f.message}" for f in (report.refused if report else ())]
    problems += [f"{row.uid}: {row.error}" for row in rows if row.error]
    error = f"error: {len(problems)} problem(s); first: {problems[0]}" if problems else None
    return _finish(args, report, rows, error)


def _wait_all(client: QureClient, accepted: Sequence[FileOutcome], *, timeout_s: float, quiet: bool) -> list[_Row]:
    """Wait for each accepted SOPInstanceUID, once per series where a result is per series (head CT)."""
    deadline = time.monotonic() + timeout_s
    covered: set[str] = set()
    rows: list[_Row] = []
    unique = list({f.sop_uid: f for f in accepted}.values())
    with tqdm(total=len(unique), desc="results", unit="result", file=sys.stderr, disable=quiet) as bar:
        for outcome in unique:
            if outcome.series_uid not in covered:
                try:
                    result = client.wait(
                        outcome.sop_uid, timeout_s=max(0.0, deadline - time.monotonic()), series_uid=outcome.series_uid
                    )
                except _RESULT_ERRORS as exc:
                    rows.append(_Row(outcome.sop_uid, error=str(exc)))
                else:
                    if result.series is not None:
                        covered.add(result.series.series_instance_uid)
                    rows.append(_Row(outcome.sop_uid, result))
            bar.update(1)
    return rows


def _deliver(client: QureClient, row: _Row, root: Path, destination: Any) -> None:
    if row.result is None or not row.result.files:
        return
    try:
        row.downloaded = client.download(row.result, root / row.result.result_uid)
        if destination is not None:
            paths = [path for kind in PACS_KINDS for path in row.downloaded.get(kind, [])]
            row.forwarded = client.forward(paths, destination)
    except _RESULT_ERRORS as exc:
        row.error = str(exc)


def _finish(args: argparse.Namespace, report: UploadReport | None, rows: list[_Row], error: str | None) -> int:
    if args.json:
        document = {
            "ok": error is None,
            "error": error,
            "uploaded": [asdict(f) for f in report.files] if report else [],
            "skipped": [asdict(s) for s in report.skipped] if report else [],
            "results": [row.to_json() for row in rows],
        }
        print(json.dumps(document, indent=2))
    else:
        _print_summary(report, rows)
    if error:
        print(error, file=sys.stderr)
        return 1
    return 0


def _print_summary(report: UploadReport | None, rows: list[_Row]) -> None:
    if report is not None:
        created = sum(f.created for f in report.accepted)
        print(
            f"uploaded {len(report.accepted)} file(s) ({created} new, {len(report.accepted) - created} already "
            f"stored), {len(report.refused)} refused, {len(report.skipped)} skipped as not DICOM"
        )
        for refused in report.refused:
            print(f"  refused {refused.path}: {refused.message}")
    if not rows:
        return
    table = [("UID", "STATUS", "TRIAGE", "POSITIVES", "FILES")]
    for row in rows:
        r = row.result
        files = (
            sum(map(len, row.downloaded.values())) if row.downloaded else sum(map(len, r.files.values())) if r else 0
        )
        where = f" in {next(iter(row.downloaded.values()))[0].parent}" if row.downloaded else ""
        forwarded = f", {len(row.forwarded)} forwarded" if row.forwarded else ""
        table.append(
            (
                r.result_uid if r else row.uid,
                r.status.value if r else "error",
                r.triage_status.value if r and r.triage_status else "-",
                ", ".join(r.positives) if r and r.positives else "-",
                f"{files}{where}{forwarded}" + (f"  ({row.error})" if row.error else ""),
            )
        )
    widths = [max(len(line[i]) for line in table) for i in range(4)]
    for line in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=False)) + "  " + line[4])


# -- results -----------------------------------------------------------------------------------------


def _results(args: argparse.Namespace) -> int:
    with _client(args) as client:
        result = client.wait(args.uid, timeout_s=args.timeout) if args.wait else client.result(args.uid)
    if args.json:
        print(json.dumps({**_Row(args.uid, result).to_json(), "raw": result.raw}, indent=2))
        return 0
    print(f"{result.uid}: {result.status.value} ({result.message})")
    if result.status.is_final:
        triage = result.triage_status.value if result.triage_status else "-"
        print(f"  usecase {result.usecase or '-'}, triage {triage}, positives: {', '.join(result.positives) or 'none'}")
        if result.findings:
            print(f"  findings: {result.findings}")
        if result.series is not None:
            print(f"  series {result.series.series_instance_uid}: {result.series.slices_read} slices read")
        if result.model is not None:
            print(f"  model {result.model.name} {result.model.version} (trained: {result.model.trained})")
        for kind, urls in result.files.items():
            print(f"  {kind}: {len(urls)} file(s)")
    return 0


# -- gateway -----------------------------------------------------------------------------------------


def _gateway(args: argparse.Namespace) -> int:
    listen = parse_ae_address(args.listen)
    destination = parse_destination(args.forward)
    calling = [title.strip() for title in args.calling_aes.split(",") if title.strip()]
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = signal.signal(signal.SIGTERM, on_signal)  # before listening: a stop may come at once
    try:
        with _client(args) as client:
            gateway = Gateway(
                listen=listen, spool_dir=args.spool, destination=destination, client=client, calling_aes=calling
            )
            gateway.start()
            try:
                print(f"gateway {listen.ae_title} on {listen.host}:{gateway.port}; stop with Ctrl-C", file=sys.stderr)
                while not stop.wait(1.0):
                    pass
            except KeyboardInterrupt:
                pass
            finally:
                gateway.stop()
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0


# -- shared ------------------------------------------------------------------------------------------


@contextmanager
def _client(args: argparse.Namespace) -> Iterator[QureClient]:
    client = QureClient(args.url, args.token, args.source)
    try:
        yield client
    finally:
        client.close()


@contextmanager
def _upload_bar(quiet: bool) -> Iterator[Any]:
    """A byte progress bar (MB/s, ETA) fed by the client's `on_progress`, sized at its first report."""
    bar: tqdm[Any] | None = None

    def on_progress(progress: UploadProgress) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=progress.bytes_total, desc="upload", unit="B", unit_scale=True, unit_divisor=1024,
                       file=sys.stderr, disable=quiet)  # fmt: skip
        bar.update(progress.bytes_done - bar.n)
        bar.set_postfix_str(f"{progress.files_done}/{progress.files_total} files")

    try:
        yield on_progress
    finally:
        if bar is not None:
            bar.close()


def _progress(items: list[_Row], quiet: bool, **options: Any) -> Iterator[_Row]:
    yield from tqdm(items, file=sys.stderr, disable=quiet or not items, **options)


def _fail(args: argparse.Namespace, message: str, *, status: int = 1) -> int:
    if getattr(args, "json", False):
        print(json.dumps({"ok": False, "error": message}, indent=2))
    print(message, file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
