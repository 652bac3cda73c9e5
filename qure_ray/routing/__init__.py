"""Use-case routing: rules as data (DICOM tags + request Source → use case) and image usability."""

from qure_ray.routing.rules import InstanceFacts, Router, RoutingDecision, RoutingTable, load_routing

__all__ = ["InstanceFacts", "Router", "RoutingDecision", "RoutingTable", "load_routing"]
