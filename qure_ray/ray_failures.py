"""Which failures are the platform's own (Ray restarting an actor, a call timing out) rather than
the work's: a caller that meets one leaves the work to be tried again instead of recording a final failure.

The job manager then leaves the instance unfinished for a queue refill; the DIMSE SCP answers 0xA700 so the
sender keeps the instance. A `RayTaskError` (code in a deployment or task raised) counts only when what it
wraps does: the code's own bug is final. Ray-side: `qure_ray.errors` stays free of Ray for the client.
"""

from __future__ import annotations

from ray.exceptions import RayError, RayTaskError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError, ReplicaUnavailableError

RAY_SIDE: tuple[type[BaseException], ...] = (
    RayError,
    TimeoutError,
    ConnectionError,
    BackPressureError,  # Serve's own, not `RayError`s: a deployment too busy, unavailable or restarting
    DeploymentUnavailableError,
    ReplicaUnavailableError,
)


def is_platform_failure(exc: BaseException, *, also: tuple[type[BaseException], ...] = ()) -> bool:
    """True for Ray's own errors, timeouts and lost connections, and for `also`'s kinds; unwraps a
    `RayTaskError` to what it wraps."""
    kinds = RAY_SIDE + also
    if isinstance(exc, RayTaskError):
        cause = getattr(exc, "cause", None)
        if type(cause) is RayError:  # Ray's stand-in for a cause it could not pickle: the code's own failure
            return False
        return isinstance(cause, kinds)
    return isinstance(exc, kinds)
