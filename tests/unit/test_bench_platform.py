"""The bench deploys qure_ray as a deployment runs: Serve's settings must be in place before Serve is imported."""

from __future__ import annotations

import sys
import types

import pytest

from qure_ray.bench.platform import _check_serve_reads
from qure_ray.config import SERVE_ENVIRONMENT

CONSTANTS = "ray.serve._private.constants"


def test_serve_imported_without_the_deployed_settings_stops_the_bench(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, CONSTANTS, types.SimpleNamespace(RAY_SERVE_THROUGHPUT_OPTIMIZED=False))
    with pytest.raises(RuntimeError, match="imported before the benchmark set Serve's environment"):
        _check_serve_reads(SERVE_ENVIRONMENT)


def test_serve_imported_with_them_or_not_yet_is_fine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, CONSTANTS, types.SimpleNamespace(RAY_SERVE_THROUGHPUT_OPTIMIZED=True))
    _check_serve_reads(SERVE_ENVIRONMENT)
    monkeypatch.delitem(sys.modules, CONSTANTS)
    _check_serve_reads(SERVE_ENVIRONMENT)
