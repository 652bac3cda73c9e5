from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from qure_ray.replica_logging import PACKAGE_LOGGER, SERVE_LOGGER, log_to_replica_file


class Recorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def serve_log() -> Iterator[Recorder]:
    """A stand-in for the file handler Serve puts on its logger in a replica; both loggers restored after."""
    serve, package = logging.getLogger(SERVE_LOGGER), logging.getLogger(PACKAGE_LOGGER)
    saved = [(logger, logger.handlers[:], logger.level, logger.propagate) for logger in (serve, package)]
    recorder = Recorder()
    serve.handlers = [recorder]
    serve.setLevel(logging.INFO)
    yield recorder
    for logger, handlers, level, propagate in saved:
        logger.handlers, logger.propagate = handlers, propagate
        logger.setLevel(level)


def test_qure_ray_info_records_reach_the_replica_s_serve_log_once(serve_log: Recorder) -> None:
    logging.getLogger("qure_ray.pipeline.job_manager").info("before: dropped by the root logger's level")
    assert serve_log.records == []

    log_to_replica_file()
    log_to_replica_file()  # a second deployment in the same process: still one copy of each record
    logging.getLogger("qure_ray.pipeline.job_manager").info("instance %s of %s: %s", "1.2.3", "site-a", "done")
    logging.getLogger("qure_ray.storage.catalog").debug("below Serve's level")
    logging.getLogger("botocore").info("not ours")

    assert [record.getMessage() for record in serve_log.records] == ["instance 1.2.3 of site-a: done"]
    assert serve_log.records[0].name == "qure_ray.pipeline.job_manager"
