"""Use-case rules: DICOM tags → use case."""

from qure_ray.routing.usecases import RoutingDecision, route

__all__ = ["RoutingDecision", "route"]
