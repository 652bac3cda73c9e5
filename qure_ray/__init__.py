"""qure_ray: an open platform for running diagnostic AI on medical images at scale, on Ray Serve."""

__version__ = "0.1.0"
