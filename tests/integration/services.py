"""Real services for integration tests: a `ray start --head` cluster and `serve deploy`; SeaweedFS (S3) and
Orthanc come from `qure_ray.bench.services`, which the benchmarks share.

Everything binds to 127.0.0.1 on free ports; each helper stops what it started.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml

from qure_ray.bench.services import (  # noqa: F401 - re-exported for the tests
    OrthancServer,
    S3Server,
    free_port,
    orthanc,
    seaweedfs,
    service_env,
    wait_for,
)
from qure_ray.local import MIN_LOCAL_CPUS

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class RayCluster:
    dashboard_url: str
    env: dict[str, str]
    temp_dir: Path
    """Ray's session files; every log of every process is under `session_*/logs`."""
    metrics_url: str
    """The head node's Prometheus endpoint (Ray's metrics agent)."""

    def serve_stopped(self) -> bool:
        """Whether Serve's controller is gone. `serve shutdown` only asks (and waits at most 30 s), and a
        `serve deploy` that reaches a controller still draining is ignored."""
        probe = (
            "from ray.dashboard.modules.serve.sdk import ServeSubmissionClient as Client; "
            f"print(Client({self.dashboard_url!r}).get_serve_details()['controller_info'].get('node_id'))"
        )
        result = subprocess.run(
            [sys.executable, "-c", probe], env=self.env, capture_output=True, text=True, timeout=60, check=False
        )
        return result.returncode == 0 and result.stdout.strip() == "None"

    def serve(self, *args: str, timeout_s: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "serve"), *args, "--address", self.dashboard_url] if args[0] != "shutdown"
            else [str(BIN / "serve"), *args, "-y", "--address", self.dashboard_url],
            env=self.env, capture_output=True, text=True, timeout=timeout_s, cwd=REPO, check=False,
        )  # fmt: skip


@contextmanager
def ray_head(workdir: Path) -> Iterator[RayCluster]:
    """`ray start --head` on loopback, with token auth (the cluster's own token: a fresh machine has none in
    ~/.ray, and `ray start` does not make one), its dashboard API on a free port."""
    token = workdir / "auth_token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    env = {**service_env(), "RAY_AUTH_TOKEN_PATH": str(token)}
    dashboard_port, metrics_port = free_port(), free_port()
    temp_dir = workdir / "ray"
    start = [
        str(BIN / "ray"), "start", "--head", f"--port={free_port()}", "--node-ip-address=127.0.0.1",
        "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard_port}",
        f"--ray-client-server-port={free_port()}", "--disable-usage-stats", f"--temp-dir={temp_dir}",
        f"--num-cpus={max(MIN_LOCAL_CPUS, os.cpu_count() or 1)}", f"--metrics-export-port={metrics_port}",
    ]  # fmt: skip
    result = subprocess.run(start, env=env, capture_output=True, text=True, timeout=180, cwd=REPO, check=False)
    assert result.returncode == 0, f"ray start failed:\n{result.stdout}\n{result.stderr}"
    cluster = RayCluster(
        f"http://127.0.0.1:{dashboard_port}", env, temp_dir, f"http://127.0.0.1:{metrics_port}/metrics"
    )
    try:
        yield cluster
    finally:
        subprocess.run([str(BIN / "ray"), "stop", "--force"], env=env, capture_output=True, timeout=120, check=False)


def deploy_config(cluster: RayCluster, workdir: Path, *, args: dict[str, object], http_port: int) -> Path:
    """Write serve_config.yaml with test args and port, and `serve deploy` it."""
    config = yaml.safe_load((REPO / "serve_config.yaml").read_text())
    config["http_options"]["port"] = http_port
    config["applications"][0]["args"].update(args)
    path = workdir / "serve_config.yaml"
    path.write_text(yaml.safe_dump(config))
    result = cluster.serve("deploy", str(path))
    assert result.returncode == 0, f"serve deploy failed:\n{result.stdout}\n{result.stderr}"
    return path


def wait_healthy(base_url: str, *, timeout_s: float = 300) -> None:
    wait_for(
        lambda: httpx.get(f"{base_url}/ready", timeout=10).status_code == 200,
        timeout_s=timeout_s,
        what=f"{base_url}/ready",
    )
