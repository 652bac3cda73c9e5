"""Which replicas of this Serve deployment are alive: for the singletons (catalog, job manager) that a
rolling update runs twice for a while, the new replica starting while the old one drains.

Serve names each replica's actor `SERVE_REPLICA::<app>#<deployment>#<replica id>` in its namespace.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import ray
from ray import serve

SERVE_NAMESPACE = "serve"
UNKNOWN = "(unknown)"

logger = logging.getLogger(__name__)


def this_replica() -> str:
    return serve.get_replica_context().replica_id.to_full_id_str()


def deployment_of(replica: str) -> str:
    """`SERVE_REPLICA::<app>#<deployment>#` of a replica's actor name: the prefix all its replicas share."""
    return replica[: replica.rindex("#") + 1]


def other_replicas(actor_names: Iterable[str], own: str) -> list[str]:
    """Replicas of `own`'s deployment (same application, same deployment) other than `own`. Another
    application's replicas do not count: it must have its own `QURE_DATA_URI`."""
    deployment = deployment_of(own)
    return sorted(name for name in actor_names if name.startswith(deployment) and name != own)


def live_other_replicas(own: str) -> list[str]:
    """The other live replicas of `own`'s deployment; when Ray cannot say, assume one is (ask again later)."""
    try:
        named = ray.util.list_named_actors(all_namespaces=True)
    except Exception as exc:
        logger.warning("could not list Serve's replicas, assuming another one: %s", exc)
        return [UNKNOWN]
    return other_replicas((actor["name"] for actor in named if actor["namespace"] == SERVE_NAMESPACE), own)
