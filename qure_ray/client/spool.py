"""The gateway's durable spool: every received instance, and how far its work has gone, as files.

    <spool>/
      tmp/                        instances being written (emptied at start: their sender got no success)
      incoming/<SOP>.dcm          received and fsynced; not yet accepted by the platform
      uploaded/<SOP>.dcm          accepted by the platform; its result is awaited
      assets/<result uid>/        a final result's assets, downloaded for forwarding
      forwarded/<result uid>.json the result's assets reached the destination
      done/<SOP>.json             finished: the result's UID and status (the image itself is not kept)
      failed/<SOP>.dcm, .json     refused by the platform or failed in processing; the reason, for an operator

Each step is a rename within one file system (atomic), followed by an fsync of the folder, so a process
killed at any point leaves every instance in exactly one state and the next start resumes from there.
Uploads are idempotent, so redoing `incoming → uploaded` duplicates nothing; a result is forwarded again
only if the process dies between the destination's success and the `forwarded/` record.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from qure_ray.client.errors import ClientConfigError
from qure_ray.dicom.uids import is_valid_uid
from qure_ray.fileio import atomic_write, fsync_dir


class SpoolState(StrEnum):
    INCOMING = "incoming"
    UPLOADED = "uploaded"
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True)
class SpoolItem:
    sop_uid: str
    state: SpoolState
    path: Path


class SpoolLock:
    """One gateway per spool: an exclusive lock on `<spool>/.lock`, held until `release` (or the process ends).
    A second gateway would empty the first's `tmp/` (failing C-STOREs in progress), then upload and forward
    every result twice."""

    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self._file = open(root / ".lock", "a")  # held open for the lock's life
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            self._file.close()
            message = f"another gateway is using the spool {root}; stop it, or give another --spool"
            raise ClientConfigError(message) from exc

    def release(self) -> None:
        self._file.close()  # closing the file releases the lock


class Spool:
    """The spool folder; safe for one receiving thread and one worker thread at a time (others may count)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        for name in ("tmp", "assets", "forwarded", *SpoolState):
            (root / name).mkdir(parents=True, exist_ok=True)
        for leftover in (root / "tmp").iterdir():
            leftover.unlink()
        for stale in (root / "assets").iterdir():  # downloads a crash left behind; fetched again if needed
            shutil.rmtree(stale)

    def receive(self, sop_uid: str, data: bytes) -> Path:
        """Store a received instance durably in `incoming/`; only then may its sender be told it is stored."""
        target = self._path(SpoolState.INCOMING, sop_uid)
        _write_durably(self.root / "tmp", target, data)
        return target

    def items(self, state: SpoolState) -> list[SpoolItem]:
        """The instances in `state`, oldest first."""
        suffix = ".json" if state is SpoolState.DONE else ".dcm"
        aged = [(age, p) for p in (self.root / state).glob(f"*{suffix}") if (age := _mtime_ns(p)) is not None]
        return [SpoolItem(p.stem, state, p) for _, p in sorted(aged, key=lambda item: (item[0], item[1].name))]

    def count(self, state: SpoolState) -> int:
        return len(self.items(state))

    def move(self, sop_uid: str, source: SpoolState, target: SpoolState) -> None:
        os.replace(self._path(source, sop_uid), self._path(target, sop_uid))
        fsync_dir(self.root / target)

    def send_again(self, sop_uid: str) -> None:
        """Back from `uploaded/` to `incoming/`, unless the instance was received again meanwhile: that newer copy
        is the one to upload (linking refuses to replace it, where a rename would not)."""
        uploaded, incoming = self._path(SpoolState.UPLOADED, sop_uid), self._path(SpoolState.INCOMING, sop_uid)
        try:
            os.link(uploaded, incoming)
        except FileExistsError:
            pass
        except OSError:  # a file system without hard links (some network mounts): check, then rename
            if not incoming.exists():
                self.move(sop_uid, SpoolState.UPLOADED, SpoolState.INCOMING)
                return
        else:
            fsync_dir(self.root / SpoolState.INCOMING)
        uploaded.unlink()
        fsync_dir(self.root / SpoolState.UPLOADED)

    def finish(self, sop_uid: str, source: SpoolState, record: dict[str, Any]) -> None:
        """Record the outcome in `done/`, then drop the image."""
        self._record(SpoolState.DONE, sop_uid, record)
        self._path(source, sop_uid).unlink(missing_ok=True)
        fsync_dir(self.root / source)

    def fail(self, sop_uid: str, source: SpoolState, reason: str) -> None:
        """Keep the image in `failed/` with the reason beside it (move it back to incoming/ to retry)."""
        self._record(SpoolState.FAILED, sop_uid, {"reason": reason})
        self.move(sop_uid, source, SpoolState.FAILED)

    def assets_dir(self, result_uid: str) -> Path:
        return self.root / "assets" / _checked(result_uid)

    def is_forwarded(self, result_uid: str) -> bool:
        return (self.root / "forwarded" / f"{_checked(result_uid)}.json").exists()

    def mark_forwarded(self, result_uid: str, record: dict[str, Any]) -> None:
        target = self.root / "forwarded" / f"{_checked(result_uid)}.json"
        _write_durably(self.root / "tmp", target, _json(record))
        shutil.rmtree(self.assets_dir(result_uid), ignore_errors=True)

    def _record(self, state: SpoolState, sop_uid: str, record: dict[str, Any]) -> None:
        target = self.root / state / f"{_checked(sop_uid)}.json"
        _write_durably(self.root / "tmp", target, _json({"sop_uid": sop_uid, "at": time.time(), **record}))

    def _path(self, state: SpoolState, sop_uid: str) -> Path:
        return self.root / state / f"{_checked(sop_uid)}.dcm"


def _checked(uid: str) -> str:
    """UIDs become file names: only digits and dots get that far."""
    if not is_valid_uid(uid):
        raise ValueError(f"{uid[:80]!r} is not a DICOM UID; it cannot name a spool file")
    return uid


def _mtime_ns(path: Path) -> int | None:
    """When `path` was last written; None once another thread moved it on after it was listed."""
    try:
        return path.stat().st_mtime_ns
    except FileNotFoundError:
        return None


def _json(record: dict[str, Any]) -> bytes:
    return json.dumps(record, indent=1, sort_keys=True).encode()


def _write_durably(tmp_dir: Path, target: Path, data: bytes) -> None:
    with atomic_write(target, tmp_dir=tmp_dir) as handle:
        handle.write(data)
