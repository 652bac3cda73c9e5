"""The deployed catalog actor holds its data URI's writer lease: another deployment on the same store refuses."""

from __future__ import annotations

import json
import time

import pytest

from qure_ray.storage.writer_lease import LEASE_KEY, RENEW_S, STALE_S, LeaseHeldError, LeaseHolder, WriterLease
from tests.integration.conftest import Deployed

pytestmark = pytest.mark.integration


def test_the_catalog_actor_renews_its_lease_and_another_deployment_is_refused(
    deployed: Deployed,
) -> None:
    store = deployed.store
    first = json.loads(store.get(LEASE_KEY))
    assert first["holder"]["deployment"].endswith("#CatalogActor#")
    assert first["holder"]["replica"].startswith(first["holder"]["deployment"])
    assert time.time() - first["renewed_at"] < STALE_S
    time.sleep(RENEW_S + 2)
    assert json.loads(store.get(LEASE_KEY))["renewed_at"] > first["renewed_at"]

    staging = LeaseHolder(cluster="10.9.9.9:6379", deployment=first["holder"]["deployment"], replica="staging#1")
    with pytest.raises(LeaseHeldError, match="written by another deployment") as refused:
        WriterLease(store, staging).acquire(wait_s=0)
    assert first["holder"]["replica"] in str(refused.value)
    assert json.loads(store.get(LEASE_KEY))["holder"]["replica"] == first["holder"]["replica"]
