"""The HTTP layer: routes, auth, error mapping; `create_app(platform)` builds the Starlette app."""

from qure_ray.api.app import create_app
from qure_ray.api.platform import Platform, RayPlatform

__all__ = ["Platform", "RayPlatform", "create_app"]
