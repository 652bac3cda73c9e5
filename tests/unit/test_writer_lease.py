"""The catalog's writer lease: one deployment writes a data URI's catalog."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from qure_ray.errors import ObjectChangedError, StorageError
from qure_ray.storage import LocalObjectStore
from qure_ray.storage.writer_lease import LEASE_KEY, STALE_S, LeaseHeldError, LeaseHolder, WriterLease

PROD = LeaseHolder(cluster="10.0.0.5:6379", deployment="SERVE_REPLICA::qure_ray#CatalogActor#", replica="a1")
PROD_NEXT = LeaseHolder(cluster="10.0.0.5:6379", deployment="SERVE_REPLICA::qure_ray#CatalogActor#", replica="b2")
STAGING = LeaseHolder(cluster="10.0.9.9:6379", deployment="SERVE_REPLICA::qure_ray#CatalogActor#", replica="c3")


class Clock:
    """A fake clock; `sleep` advances it, and may let the running holder renew meanwhile."""

    def __init__(self, renewing: WriterLease | None = None, renew_until: float = 0.0) -> None:
        self.now = 1_000.0
        self.renewing, self.renew_until = renewing, renew_until
        self.slept = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.slept += seconds
        if self.renewing is not None and self.now < self.renew_until:
            self.renewing.renew()


def lease(store: LocalObjectStore, holder: LeaseHolder, clock: Clock) -> WriterLease:
    return WriterLease(store, holder, clock=clock, sleep=clock.sleep)


def holder_of(store: LocalObjectStore) -> str:
    return str(json.loads(store.get(LEASE_KEY))["holder"]["replica"])


def test_a_free_data_uri_is_taken_at_once_and_a_rolling_update_takes_over_at_once(tmp_path: Path) -> None:
    store, clock = LocalObjectStore(tmp_path), Clock()
    lease(store, PROD, clock).acquire()
    assert holder_of(store) == "a1" and clock.slept == 0
    lease(store, PROD_NEXT, clock).acquire()  # same deployment, same cluster: the replica it replaces
    assert holder_of(store) == "b2" and clock.slept == 0


def test_a_deployment_of_another_cluster_refuses_while_the_holder_renews(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    clock = Clock()
    running = lease(store, PROD, clock)
    running.acquire()
    clock.renewing, clock.renew_until = running, float("inf")

    with pytest.raises(LeaseHeldError, match=r"written by another deployment \(a1 on Ray cluster 10\.0\.0\.5:6379"):
        lease(store, STAGING, clock).acquire(wait_s=90, poll_s=5)
    assert clock.slept >= 90 and holder_of(store) == "a1"  # it waited, then left the lease alone


def test_a_holder_that_stopped_renewing_is_taken_over_once_stale(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    clock = Clock()
    running = lease(store, PROD, clock)
    running.acquire()
    clock.renewing, clock.renew_until = running, clock.now + 20  # the old cluster goes down 20 s in

    lease(store, STAGING, clock).acquire(wait_s=120, poll_s=5)
    assert holder_of(store) == "c3"
    assert 20 + STALE_S <= clock.slept < 20 + STALE_S + 10


def test_an_unreadable_lease_is_taken(tmp_path: Path) -> None:
    store, clock = LocalObjectStore(tmp_path), Clock()
    store.put(LEASE_KEY, b"{not json")
    lease(store, STAGING, clock).acquire(wait_s=0)
    assert holder_of(store) == "c3"


class AnotherStarterWritesFirst(LocalObjectStore):
    """Between a starter's read of the lease and its write, another deployment's starter takes the lease."""

    def __init__(self, root: Path, other: Callable[[LocalObjectStore], None]) -> None:
        super().__init__(root)
        self.other: Callable[[LocalObjectStore], None] | None = other

    def put_unless_changed(self, key: str, data: bytes, *, version: str | None, media_type: str | None = None) -> str:
        if self.other is not None:
            other, self.other = self.other, None
            other(LocalObjectStore(self.root))
        return super().put_unless_changed(key, data, version=version, media_type=media_type)


def test_of_two_starters_that_both_read_a_free_lease_one_wins(tmp_path: Path) -> None:
    clock = Clock()
    store = AnotherStarterWritesFirst(tmp_path, lambda plain: lease(plain, PROD, clock).acquire(wait_s=0))
    with pytest.raises(LeaseHeldError, match="a1"):
        lease(store, STAGING, clock).acquire(wait_s=0)
    assert holder_of(store) == "a1"


class AlwaysChanged(LocalObjectStore):
    """A store whose every conditional write finds the object changed, and no lease ever appears in it."""

    def put_unless_changed(self, key: str, data: bytes, *, version: str | None, media_type: str | None = None) -> str:
        raise ObjectChangedError(f"{key} changed meanwhile")


def test_a_lease_that_changes_under_every_write_gives_up_at_the_deadline(tmp_path: Path) -> None:
    clock = Clock()
    with pytest.raises(StorageError, match="changed under every write"):
        lease(AlwaysChanged(tmp_path), STAGING, clock).acquire(wait_s=30)
    assert 29.9 <= clock.slept < 31  # it paused between attempts, and stopped at the deadline


def test_a_renewal_never_overwrites_a_lease_taken_since_it_was_read(tmp_path: Path) -> None:
    clock = Clock()
    old = lease(LocalObjectStore(tmp_path), PROD, clock)
    old.acquire()
    store = AnotherStarterWritesFirst(tmp_path, lambda plain: lease(plain, STAGING, clock).acquire(wait_s=0, poll_s=0))
    clock.now += STALE_S + 1  # the old holder stalled past staleness; staging takes over just as it renews
    lease(store, PROD, clock).renew()
    assert holder_of(store) == "c3"


def test_conditional_writes_of_the_local_store(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    first = store.put_unless_changed("control/x.json", b"1", version=None)
    with pytest.raises(ObjectChangedError):
        store.put_unless_changed("control/x.json", b"2", version=None)
    second = store.put_unless_changed("control/x.json", b"3", version=first)
    with pytest.raises(ObjectChangedError):
        store.put_unless_changed("control/x.json", b"4", version=first)
    assert store.get_versioned("control/x.json") == (b"3", second)


class Unreadable(LocalObjectStore):
    """A store that answers nothing (down, or credentials without read access)."""

    def get(self, key: str) -> bytes:
        raise StorageError(f"S3 get of {key!r} failed: AccessDenied")


def test_a_store_that_cannot_be_read_is_an_error_not_a_free_lease(tmp_path: Path) -> None:
    store, clock = Unreadable(tmp_path), Clock()
    LocalObjectStore(tmp_path).put(LEASE_KEY, json.dumps({"holder": PROD.__dict__, "renewed_at": clock.now}).encode())
    with pytest.raises(StorageError, match="AccessDenied"):
        lease(store, STAGING, clock).acquire(wait_s=0)
    assert holder_of(LocalObjectStore(tmp_path)) == "a1"


def test_a_graceful_stop_releases_only_its_own_lease(tmp_path: Path) -> None:
    store, clock = LocalObjectStore(tmp_path), Clock()
    old, new = lease(store, PROD, clock), lease(store, PROD_NEXT, clock)
    old.acquire()
    new.acquire()
    old.renew()  # the replaced replica, still draining, leaves the lease to its successor
    assert holder_of(store) == "b2"
    old.release()  # and stops after its successor took over: the lease stays
    assert holder_of(store) == "b2"
    new.release()
    assert not store.exists(LEASE_KEY)
    lease(store, STAGING, clock).acquire(wait_s=0)  # another deployment may start at once
    assert holder_of(store) == "c3" and clock.slept == 0
