"""`make run`: the whole platform on this machine — a local Ray, Serve on 127.0.0.1, data in ./.qure.

Ray is kept on loopback: `RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0` makes it bind its services to 127.0.0.1
(it must be in the environment before Ray starts its processes).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import httpx

from qure_ray.config import LOCAL_SERVE_ENVIRONMENT, Settings

logger = logging.getLogger(__name__)
APP_NAME = "qure_ray"
READY_TIMEOUT_S = 600.0
MIN_LOCAL_CPUS = 4
"""Ray's logical CPUs on a local run: one model replica per use case holds one each, and preprocessing and
output tasks need room beside them even on a 2-core machine (the OS shares the real cores)."""


def loopback_ray_environment(serve_environment: Mapping[str, str] = LOCAL_SERVE_ENVIRONMENT) -> None:
    """Environment for a Ray started by this process; what the caller's environment already sets wins."""
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    for name, value in serve_environment.items():
        os.environ.setdefault(name, value)


def run_local(settings: Settings, *, state_dir: Path = Path(".qure")) -> None:
    """Start Ray, Serve and the app; print the URL and the dev token; block until interrupted."""
    loopback_ray_environment()
    import ray
    from ray import serve

    from qure_ray.app import build_app

    settings, created = settings.with_dev_token(state_dir)
    settings = settings.with_local_secrets_key(state_dir)  # beside the data; a key made in `state_dir` is kept
    ray.init(
        include_dashboard=False,
        namespace=APP_NAME,
        logging_level=logging.WARNING,
        num_cpus=max(MIN_LOCAL_CPUS, os.cpu_count() or 1),
    )

    def start() -> None:
        serve.start(http_options={"host": settings.http_host, "port": settings.http_port})
        serve.run(build_app(settings.to_args()), name=APP_NAME, route_prefix="/", blocking=False)
        base = f"http://{settings.http_authority}"
        _wait_ready(f"{base}/ready")
        _announce(settings, base, state_dir, created)

    run_until_stopped(start, drain=serve.shutdown, stop=ray.shutdown)


def run_until_stopped(start: Callable[[], None], *, drain: Callable[[], None], stop: Callable[[], None]) -> None:
    """`start`, then block until Ctrl-C or SIGTERM (see `stop_on_sigterm`), also while starting; then `drain`
    and `stop`, whatever happened. A second signal cuts the drain short (Serve waits for in-flight work), but
    `stop` still runs. Call it after `ray.init` (see `stop_on_sigterm`)."""
    stop_on_sigterm()
    try:
        start()
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        sys.stdout.write("stopping...\n")
        sys.stdout.flush()
    finally:
        try:
            drain()
        except KeyboardInterrupt:
            sys.stdout.write("stopping at once (second signal)\n")
        stop()


def _announce(settings: Settings, base: str, state_dir: Path, created: str | None) -> None:
    out = sys.stdout
    out.write(f"\nqure_ray is ready on {base} (data: {settings.store_location.data_uri})\n")
    if created:
        out.write(f"dev token for source 'dev' (kept in {state_dir / 'dev-token'}): {created}\n")
    token_file = state_dir / "dev-token"
    if token_file.exists() and settings.tokens.source_of(token_file.read_text().strip()):
        out.write(
            f'try: curl -H "Authorization: Token $(cat {token_file})" -H "Source: dev" '
            f"-F file=@image.dcm {base}/studies\n"
        )
    out.write("Ctrl-C (or SIGTERM) stops it; accepted instances resume at the next start.\n")
    out.flush()


def stop_on_sigterm() -> None:
    """Make SIGTERM (what `docker stop`, systemd and process supervisors send) raise KeyboardInterrupt, as
    Ctrl-C does, so that both end in the graceful stop: Serve draining the job manager, the catalog releasing
    its writer lease. Ray's driver installs a SIGTERM handler that prints a stack trace and aborts; this one
    replaces it, so call it after `ray.init`."""
    signal.signal(signal.SIGTERM, _interrupt)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _wait_ready(url: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the platform did not become ready within {READY_TIMEOUT_S:.0f}s ({url})")
