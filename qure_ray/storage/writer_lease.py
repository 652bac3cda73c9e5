"""`WriterLease`: one catalog writer per data URI.

The catalog has one writer. Two deployments on one `QURE_DATA_URI` (a second cluster, a `make run` pointed at
the production bucket) would each hold a partial catalog: each answers only what it wrote, and orphan
reconciliation in one removes originals whose rows only the other has. So the catalog actor holds a lease, an
object beside the catalog's tables naming its holder and when it last renewed it, renewed every `RENEW_S`.

A starting catalog actor takes the lease when there is none, when it is stale (not renewed for `STALE_S`: its
holder is gone), or when its holder is the same deployment on the same Ray cluster (a rolling update, a
replica restarted after a crash); one stopped gracefully releases it. Held by anyone else, it waits for the
lease to go stale; still held after `WAIT_S`, it refuses to start, naming the holder. Every write of the lease
is conditional on the object being as it was read (`ObjectStore.put_unless_changed`: S3's `If-None-Match` /
`If-Match`), so of two actors starting at once one wins and the other reads the winner. An S3-compatible store
that ignores those headers would let both win: the lease then stops the common mistake, not the race.
"""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from qure_ray.errors import ObjectChangedError, ObjectMissingError, StorageError
from qure_ray.storage.keys import CATALOG_PREFIX
from qure_ray.storage.object_store import ObjectStore

logger = logging.getLogger(__name__)

LEASE_KEY = f"{CATALOG_PREFIX}writer-lease.json"
RENEW_S = 10.0
STALE_S = 60.0
WAIT_S = STALE_S + 2 * RENEW_S
"""A holder that stopped just before this actor started has gone stale by then."""
POLL_S = 5.0
RETRY_S = 0.2
"""After losing a write to another starter: a moment before reading who won."""


class LeaseHeldError(StorageError):
    """Another deployment writes this data URI's catalog."""


@dataclass(frozen=True)
class LeaseHolder:
    cluster: str
    """The holder's Ray cluster (its GCS address)."""
    deployment: str
    """The Serve application and deployment of the holder (`SERVE_REPLICA::<app>#<deployment>#`)."""
    replica: str
    host: str = socket.gethostname()

    def succeeds(self, other: LeaseHolder) -> bool:
        """Whether this holder may take over from `other` without waiting: the same deployment of one cluster."""
        return self.cluster == other.cluster and self.deployment == other.deployment


@dataclass(frozen=True)
class Lease:
    holder: LeaseHolder
    renewed_at: float
    """Seconds since the epoch, by the holder's clock."""


class WriterLease:
    def __init__(
        self,
        store: ObjectStore,
        holder: LeaseHolder,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.store = store
        self.holder = holder
        self.clock = clock
        self.sleep = sleep

    def read(self) -> tuple[Lease | None, str | None]:
        """The lease as stored (None when there is none, or one we cannot read: another version's) and the
        stored object's version for a conditional write (None: there is no object)."""
        try:
            body, version = self.store.get_versioned(LEASE_KEY)
        except ObjectMissingError:
            return None, None
        try:
            raw = json.loads(body)
            return Lease(LeaseHolder(**raw["holder"]), float(raw["renewed_at"])), version
        except (ValueError, KeyError, TypeError) as exc:
            logger.warning("writer lease unreadable, taking it: %s", exc)
            return None, version

    def acquire(self, *, wait_s: float = WAIT_S, poll_s: float = POLL_S) -> None:
        """Take the lease (see the module's docstring); raise `LeaseHeldError` when another holder keeps it."""
        deadline, lost_a_write = self.clock() + wait_s, False
        while True:
            lease, version = self.read()
            if lease is None or self.holder.succeeds(lease.holder) or self._age(lease) > STALE_S:
                try:
                    self._write(version)
                    return
                except ObjectChangedError:  # another starter wrote it since we read it: see who holds it now
                    if lost_a_write and self.clock() >= deadline:
                        raise StorageError(
                            f"the writer lease at {self.store.describe()} changed under every write for {wait_s:.0f}s"
                        ) from None
                    logger.info("writer lease written by another starter meanwhile: reading it again")
                    lost_a_write = True
                    self.sleep(RETRY_S)
                    continue
            if self.clock() >= deadline:
                holder = lease.holder
                raise LeaseHeldError(
                    f"the catalog at {self.store.describe()} is written by another deployment ({holder.replica} on "
                    f"Ray cluster {holder.cluster}, host {holder.host}; lease renewed {self._age(lease):.0f}s ago): "
                    "stop it or give this deployment its own QURE_DATA_URI"
                )
            logger.warning(
                "catalog at %s is leased by %s on %s (renewed %.0fs ago): waiting for it to go stale",
                self.store.describe(),
                lease.holder.replica,
                lease.holder.cluster,
                self._age(lease),
            )
            self.sleep(poll_s)

    def renew(self) -> None:
        """Write the lease again, unless another holder has taken it meanwhile: never take it back (a replica
        being replaced leaves it to its successor; another deployment's takeover is logged as an error)."""
        lease, version = self.read()
        if lease is not None and lease.holder != self.holder and self._age(lease) <= STALE_S:
            if self.holder.succeeds(lease.holder):
                logger.info("writer lease handed to %s, which replaces this replica", lease.holder.replica)
            else:
                logger.error(
                    "the catalog lease was taken by %s on %s: two deployments write %s",
                    lease.holder.replica,
                    lease.holder.cluster,
                    self.store.describe(),
                )
            return
        try:
            self._write(version)
        except ObjectChangedError:  # taken between our read and our write: the next renewal sees by whom
            logger.info("writer lease changed while renewing it: looking again at the next renewal")

    def release(self) -> None:
        """Remove the lease if this holder still has it (a graceful stop: the next start need not wait)."""
        lease, _ = self.read()
        if lease is not None and lease.holder == self.holder:
            self.store.delete(LEASE_KEY)

    def _write(self, version: str | None) -> None:
        """Write the lease only over the object read as `version` (None: only where there is none)."""
        body = {"holder": asdict(self.holder), "renewed_at": self.clock()}
        self.store.put_unless_changed(
            LEASE_KEY, json.dumps(body).encode(), version=version, media_type="application/json"
        )

    def _age(self, lease: Lease) -> float:
        return self.clock() - lease.renewed_at
