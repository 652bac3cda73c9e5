"""`log_to_replica_file`: qure_ray's log records in the replica's Serve log file, beside Serve's own.

Serve writes only its `ray.serve` logger to `logs/serve/replica_<app>_<deployment>_<id>.log` (JSON lines with
the replica and request id). Records of any other logger reach the root logger, which drops INFO (and sends
warnings to stderr, which Serve folds into its logger without their level). Every deployment calls this in
its constructor, so that what qure_ray logs (an instance's final state, catalog loads and merges, webhook
give-ups) is where an operator looks for it. Messages name sources, UIDs and states only, never patient data.
"""

from __future__ import annotations

import logging

PACKAGE_LOGGER = "qure_ray"
SERVE_LOGGER = "ray.serve"


class _ToServeLogger(logging.Handler):
    """Hands each record to Serve's logger, whose handlers add the replica context and write the file."""

    def emit(self, record: logging.LogRecord) -> None:
        logging.getLogger(SERVE_LOGGER).handle(record)


def log_to_replica_file() -> None:
    """Route the `qure_ray` loggers into this replica's Serve log, at Serve's level (INFO by default)."""
    package = logging.getLogger(PACKAGE_LOGGER)
    if not any(isinstance(handler, _ToServeLogger) for handler in package.handlers):
        package.addHandler(_ToServeLogger())
    package.setLevel(logging.getLogger(SERVE_LOGGER).getEffectiveLevel())
    package.propagate = False
