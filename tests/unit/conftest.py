"""Unit tests never start Ray: `ray.init` raises here (as Ray's own unit tests do)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _no_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    import ray

    def refuse(*args: object, **kwargs: object) -> None:
        raise RuntimeError("unit tests must not start Ray; put this test under tests/integration")

    monkeypatch.setattr(ray, "init", refuse)


@pytest.fixture(autouse=True)
def _stamp_clock_restored(monkeypatch: pytest.MonkeyPatch) -> None:
    """A test that loads rows stamped ahead moves the catalog's stamp clock (`catalog.now`) ahead for the rest
    of the process; each test starts from where the clock was before it."""
    from qure_ray.storage import catalog

    monkeypatch.setattr(catalog, "_last_timestamp", catalog._last_timestamp)
    monkeypatch.setattr(catalog, "_ahead", catalog._ahead)
