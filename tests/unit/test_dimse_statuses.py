"""The C-STORE SCP's answers when the platform, not the instance, fails: 0xA700 (send it again later), never
0x0110, which senders take as final. The deployment runs here on an in-memory platform (integration tests run
it under Serve with storescu)."""

from __future__ import annotations

import asyncio
import io
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pydicom
import pytest
from pynetdicom import AE
from ray.exceptions import RayTaskError

from qure_ray.api import dimse
from qure_ray.config import Settings, parse_calling_aes
from qure_ray.dicom.synthetic import chest_dx
from qure_ray.errors import StorageError
from tests.unit.client_platform import SOURCE, MemoryPlatform, memory_platform


@pytest.fixture
def scp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> Iterator[tuple[MemoryPlatform, int]]:
    """The SCP on a free port; `QURE_DIMSE_CALLING_AES` is CT01 for the source, or the test's parameter."""
    platform = memory_platform(tmp_path)
    calling_aes = getattr(request, "param", f"CT01:{SOURCE}")
    settings = {**platform.settings.to_args(), "QURE_DIMSE_CALLING_AES": calling_aes}  # port 0: any free one
    platform.settings = Settings.load(settings, {})
    monkeypatch.setattr(dimse.RayPlatform, "from_args", staticmethod(lambda *args, **kwargs: platform))
    monkeypatch.setattr(dimse, "log_to_replica_file", lambda: None)
    monkeypatch.setattr(dimse, "STORE_TIMEOUT_S", 2.0)
    monkeypatch.setattr(dimse, "NETWORK_TIMEOUT_S", 3.0)
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()

    async def start() -> Any:
        return dimse.DimseGateway.func_or_class({}, catalog=None, queue=None, jobs=None)

    gateway = asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=30)
    try:
        yield platform, gateway.server.server_address[1]
    finally:
        gateway.server.shutdown()
        loop.call_soon_threadsafe(loop.stop)


def c_store(port: int, data: bytes, *, calling: str = "CT01") -> int:
    ds = pydicom.dcmread(io.BytesIO(data))
    ae = AE(ae_title=calling)
    ae.add_requested_context(ds.SOPClassUID, [ds.file_meta.TransferSyntaxUID])
    association = ae.associate("127.0.0.1", port, ae_title="QURE_RAY")
    assert association.is_established
    try:
        return int(association.send_c_store(ds).Status)
    finally:
        association.release()


def test_a_platform_outage_or_a_slow_ingest_answers_try_later(scp: tuple[MemoryPlatform, int]) -> None:
    platform, port = scp
    assert c_store(port, chest_dx(seed=1, size=32)) == 0x0000

    async def catalog_down(record: Any) -> None:
        raise StorageError("the catalog is unreachable")

    platform.record_and_enqueue = catalog_down  # type: ignore[method-assign]
    assert c_store(port, chest_dx(seed=2, size=32)) == 0xA700

    async def slow(record: Any) -> None:
        await asyncio.sleep(5)

    platform.record_and_enqueue = slow  # type: ignore[method-assign]
    assert c_store(port, chest_dx(seed=3, size=32)) == 0xA700  # past STORE_TIMEOUT_S

    async def defect(record: Any) -> None:
        raise KeyError("a bug")

    platform.record_and_enqueue = defect  # type: ignore[method-assign]
    assert c_store(port, chest_dx(seed=4, size=32)) == 0x0110  # not the platform's weather: a real failure

    async def defect_in_a_deployment(record: Any) -> None:  # what a handle raises when the catalog's code does
        raise RayTaskError("write", "Traceback: ...", ValueError("a bug in the catalog"))

    platform.record_and_enqueue = defect_in_a_deployment  # type: ignore[method-assign]
    assert c_store(port, chest_dx(seed=5, size=32)) == 0x0110  # sent again, it would fail again, for ever


def test_an_association_left_idle_is_closed_by_the_scp(scp: tuple[MemoryPlatform, int]) -> None:
    """A sender that opens an association and then says nothing does not hold a thread of the SCP for ever."""
    _, port = scp
    ae = AE(ae_title="CT01")
    ds = pydicom.dcmread(io.BytesIO(chest_dx(seed=1)))
    ae.add_requested_context(ds.SOPClassUID, [ds.file_meta.TransferSyntaxUID])
    association = ae.associate("127.0.0.1", port, ae_title="QURE_RAY")
    assert association.is_established
    deadline = time.monotonic() + 15
    while association.is_established and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not association.is_established and association.is_aborted


@pytest.mark.parametrize("scp", [f"CT01:{SOURCE}@10.99.0.0/16,CT02:{SOURCE}@127.0.0.0/8"], indirect=True)
def test_a_calling_ae_title_from_outside_its_networks_is_rejected(scp: tuple[MemoryPlatform, int]) -> None:
    """DIMSE has no credentials: where the operator names a sender's network, its AE title alone is not enough."""
    platform, port = scp
    ds = pydicom.dcmread(io.BytesIO(chest_dx(seed=6, size=32)))
    ae = AE(ae_title="CT01")  # listed, but only for 10.99.0.0/16; this test calls from 127.0.0.1
    ae.add_requested_context(ds.SOPClassUID, [ds.file_meta.TransferSyntaxUID])
    association = ae.associate("127.0.0.1", port, ae_title="QURE_RAY")
    assert association.is_rejected and not association.is_established
    assert association.acceptor.primitive.result_source == 0x01 and association.acceptor.primitive.diagnostic == 0x03
    assert c_store(port, chest_dx(seed=7, size=32), calling="CT02") == 0x0000  # its network: stored
    assert len(platform.instances) == 1


def test_a_store_from_outside_the_networks_is_refused_should_the_association_check_fail() -> None:
    """pynetdicom only logs a failure of the association handler and goes on: the store checks again."""
    gateway = SimpleNamespace(callers=parse_calling_aes(f"CT01:{SOURCE}@10.99.0.0/16"))
    event = SimpleNamespace(assoc=SimpleNamespace(requestor=SimpleNamespace(ae_title="CT01", address="127.0.0.1")))
    assert dimse.DimseGateway.func_or_class._on_c_store(gateway, event) == 0x0110
