"""`lookup_result`: everything `GET /results/{uid}` answers, gathered in one pass where the catalog lives.

An ingress replica asks the catalog actor once per request (each actor call costs milliseconds of framework
time); the rules for which result answers a uid live here, next to the data they read.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Protocol

from qure_ray.records import UNFINISHED_STATES, InstanceRecord, InstanceState, ResultRecord, slice_of

logger = logging.getLogger(__name__)


class CatalogReader(Protocol):
    def instance(self, source: str, sop_uid: str) -> InstanceRecord | None: ...
    def result(self, source: str, sop_uid: str) -> ResultRecord | None: ...
    def series_instances(self, source: str, series_uid: str) -> list[InstanceRecord]: ...
    def series_started(self, source: str, series_uid: str) -> bool: ...


@dataclass(frozen=True, kw_only=True)
class ResultLookup:
    uid: str
    found: bool
    """Whether the source stored an instance, or a series, with this uid."""
    result: ResultRecord | None = None
    originals: tuple[str, ...] = ()
    """Object keys of the originals the result cites (the instance, or a series' key slices)."""
    state: InstanceState | None = None
    """The instance's state while it has no final one (no result yet)."""
    series_uid: str = ""
    """Set when the answer is about a series (a per-series use case)."""
    series_size: int = 0
    series_started: bool = False
    """The series' computation started, or some of its instances are still on their way."""


def lookup_result(catalog: CatalogReader, source: str, uid: str) -> ResultLookup:
    """The result that answers `uid` (a SOPInstanceUID, or a SeriesInstanceUID of a per-series use case; any
    slice of a per-series use case answers with its series), or what keeps it from being there yet."""
    record = catalog.instance(source, uid)
    if record is not None and record.state is not InstanceState.HELD:
        if not record.state.is_final:
            return ResultLookup(uid=uid, found=True, state=record.state)
        result = catalog.result(source, uid)
        if result is not None:
            return ResultLookup(uid=uid, found=True, result=result, originals=(record.object_key,))
    return _series_lookup(catalog, source, uid, record.series_uid if record is not None else uid)


def lookup_results(catalog: CatalogReader, requests: Iterable[tuple[str, str]]) -> list[ResultLookup | Exception]:
    """`lookup_result` of each (source, uid), for lookups an ingress replica sends together: one that fails
    (a row the code cannot read) answers with its exception and fails only its own request."""
    answers: list[ResultLookup | Exception] = []
    for source, uid in requests:
        try:
            answers.append(lookup_result(catalog, source, uid))
        except Exception as exc:
            logger.exception("GET /results lookup of %s for source %s failed", uid, source)
            answers.append(_portable(exc))
    return answers


def _portable(exc: Exception) -> Exception:
    """`exc`, if it can be rebuilt where the answers are unpickled (the ingress), else a RuntimeError naming it.

    Pickle rebuilds an exception by calling its class with its `args`; a class whose constructor wants other
    arguments (keyword-only ones, say) fails there, and with it every lookup of the batch. qure_ray's own errors
    rebuild (`tests/unit/test_errors.py`); this covers any other library's."""
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")
    return exc


def _series_lookup(catalog: CatalogReader, source: str, uid: str, series_uid: str) -> ResultLookup:
    instances = catalog.series_instances(source, series_uid)
    result = catalog.result(source, series_uid)
    if result is None and not instances:
        return ResultLookup(uid=uid, found=False, series_uid=series_uid)
    answer = ResultLookup(uid=uid, found=True, series_uid=series_uid, series_size=len(instances))
    if result is not None:
        slices = {record.sop_uid: record.object_key for record in instances}
        # one per key slice, in order: two frames of one multi-frame object name it twice
        originals = tuple(slices[sop] for sop, _ in map(slice_of, result.key_slices) if sop in slices)
        return replace(answer, result=result, originals=originals)
    started = catalog.series_started(source, series_uid) or any(r.state in UNFINISHED_STATES for r in instances)
    return replace(answer, series_started=started)
