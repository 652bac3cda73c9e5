"""`ObjectStore`: where DICOM originals, assets and catalog segments live — a local folder or S3.

Both backends write atomically (a reader sees the whole object or none) and translate their own errors
into `StorageError` (`ObjectMissingError` for a key that holds nothing). `open_object_store(data_uri,
endpoint_url)` picks the backend from the URI.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from qure_ray.errors import ObjectChangedError, ObjectMissingError, StorageError
from qure_ray.fileio import atomic_write
from qure_ray.storage.presign import Credentials, UrlPresigner

MISSING_OBJECT_CODES = ("NoSuchKey", "404", "NotFound")
CHANGED_OBJECT_CODES = ("PreconditionFailed", "412", "ConditionalRequestConflict")


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    modified_at: float
    """Seconds since the epoch."""


class ObjectStore(Protocol):
    """Keys are `/`-separated relative paths built by `qure_ray.storage.keys`."""

    def put(self, key: str, data: bytes, *, media_type: str | None = None, sha256: str | None = None) -> None:
        """Store `data` whole under `key`. `sha256` (hex), when the caller has it, spares hashing it again."""
        ...

    def get(self, key: str) -> bytes: ...
    def get_versioned(self, key: str) -> tuple[bytes, str]:
        """The object and a tag of this version of it, for `put_unless_changed`."""
        ...

    def put_unless_changed(
        self, key: str, data: bytes, *, version: str | None, media_type: str | None = None, sha256: str | None = None
    ) -> str:
        """Compare-and-set: store `data` only if the object still has `version` (None: only if there is none);
        returns the new version's tag, or raises `ObjectChangedError`. For control objects (the writer lease)
        and originals (written once), where two writers must not both win."""
        ...

    def exists(self, key: str) -> bool: ...
    def list_keys(self, prefix: str, *, start_after: str | None = None) -> list[str]:
        """Keys under `prefix` in lexicographic order, only those after `start_after` when given."""
        ...

    def list_objects(self, prefix: str) -> list[ObjectInfo]: ...
    def delete(self, key: str) -> None: ...
    def describe(self) -> str: ...
    def presigned_urls(self, keys: list[str], *, expires_s: int) -> list[str] | None:
        """Per key, a URL anyone can GET until it expires; None when the backend has none (local folder)."""
        ...


@dataclass(frozen=True)
class StoreLocation:
    """Enough to open the same store in another process (a Ray task or actor)."""

    data_uri: str
    endpoint_url: str | None = None

    def open(self) -> ObjectStore:
        return open_object_store(self.data_uri, endpoint_url=self.endpoint_url)


def open_object_store(data_uri: str, *, endpoint_url: str | None = None) -> ObjectStore:
    if data_uri.startswith("s3://"):
        bucket, _, prefix = data_uri[5:].partition("/")
        return S3ObjectStore(bucket=bucket, prefix=prefix, endpoint_url=endpoint_url)
    return LocalObjectStore(Path(data_uri))


class LocalObjectStore:
    """A folder; writes go to a temporary file that is fsynced and renamed into place."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root not in path.parents:
            raise StorageError(f"object key {key!r} would leave the store root")
        return path

    def put(self, key: str, data: bytes, *, media_type: str | None = None, sha256: str | None = None) -> None:
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_write(path) as handle:
                handle.write(data)
        except OSError as exc:
            raise StorageError(f"writing {key!r} to {self.root} failed: {exc}") from exc

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError as exc:
            raise ObjectMissingError(f"object {key!r} does not exist in {self.root}") from exc
        except OSError as exc:
            raise StorageError(f"reading {key!r} from {self.root} failed: {exc}") from exc

    def get_versioned(self, key: str) -> tuple[bytes, str]:
        data = self.get(key)
        return data, hashlib.sha256(data).hexdigest()

    def put_unless_changed(
        self, key: str, data: bytes, *, version: str | None, media_type: str | None = None, sha256: str | None = None
    ) -> str:
        """Compared and written under an exclusive lock on the key's folder (processes of one machine)."""
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            fcntl.flock(folder, fcntl.LOCK_EX)
            try:
                current: str | None = self.get_versioned(key)[1]
            except ObjectMissingError:
                current = None
            if current != version:
                raise ObjectChangedError(f"object {key!r} in {self.root} changed since it was read")
            self.put(key, data, media_type=media_type)
            return hashlib.sha256(data).hexdigest()
        finally:
            os.close(folder)  # releases the lock

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list_keys(self, prefix: str, *, start_after: str | None = None) -> list[str]:
        return [info.key for info in self.list_objects(prefix) if start_after is None or info.key > start_after]

    def list_objects(self, prefix: str) -> list[ObjectInfo]:
        base = self.root / prefix
        folder = base if prefix.endswith("/") else base.parent
        if not folder.is_dir():
            return []
        infos = []
        for path in folder.rglob("*"):
            if path.is_file() and not path.name.startswith(".tmp-"):
                key = path.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    stat = path.stat()
                    infos.append(ObjectInfo(key, stat.st_size, stat.st_mtime))
        return sorted(infos, key=lambda info: info.key)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def describe(self) -> str:
        return str(self.root)

    def presigned_urls(self, keys: list[str], *, expires_s: int) -> list[str] | None:
        return None


class S3ObjectStore:
    """A bucket and prefix on S3 or an S3-compatible server (path-style addressing)."""

    def __init__(self, *, bucket: str, prefix: str = "", endpoint_url: str | None = None, session: Any = None) -> None:
        """`session`: a `boto3.Session`; by default one with the environment's credentials (or role, profile)."""
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        session = session or boto3.Session()
        self._client: Any = session.client(
            "s3",
            endpoint_url=endpoint_url,
            config=Config(
                # the signature need not hash each body again: puts carry their checksum (see `put`)
                s3={"addressing_style": "path", "payload_signing_enabled": False},
                retries={"max_attempts": 5, "mode": "standard"},
                max_pool_connections=32,
                # no CRC32 of every body on top (a core's worth at ingest rates): puts carry their SHA-256
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ),
        )
        self._presigner = UrlPresigner(
            self._client.meta.endpoint_url, self._client.meta.region_name, lambda: _current_credentials(session)
        )

    def _call(self, what: str, key: str, fn: Any, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(Bucket=self.bucket, **kwargs)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in MISSING_OBJECT_CODES:
                raise ObjectMissingError(f"S3 {what} of {key!r} in bucket {self.bucket!r}: no such object") from exc
            if code in CHANGED_OBJECT_CODES:
                raise ObjectChangedError(f"S3 {what} of {key!r} in bucket {self.bucket!r}: changed meanwhile") from exc
            raise StorageError(f"S3 {what} of {key!r} in bucket {self.bucket!r} failed: {code} {exc}") from exc
        except BotoCoreError as exc:
            raise StorageError(f"S3 {what} of {key!r} in bucket {self.bucket!r} failed: {exc}") from exc

    def put(self, key: str, data: bytes, *, media_type: str | None = None, sha256: str | None = None) -> None:
        """The body's SHA-256 goes in the signed `x-amz-checksum-sha256` header and S3 refuses a body that
        does not match it (BadDigest), so botocore need not hash the body again for the signature."""
        digest = bytes.fromhex(sha256) if sha256 else hashlib.sha256(data).digest()
        extra = {"ContentType": media_type} if media_type else {}
        self._call(
            "put", key, self._client.put_object, Key=self.prefix + key, Body=data,
            ChecksumSHA256=base64.b64encode(digest).decode(), **extra,
        )  # fmt: skip

    def get(self, key: str) -> bytes:
        return self.get_versioned(key)[0]

    def get_versioned(self, key: str) -> tuple[bytes, str]:
        response = self._call("get", key, self._client.get_object, Key=self.prefix + key)
        return bytes(response["Body"].read()), str(response["ETag"])

    def put_unless_changed(
        self, key: str, data: bytes, *, version: str | None, media_type: str | None = None, sha256: str | None = None
    ) -> str:
        """S3's conditional writes (`If-None-Match: *`, `If-Match: <ETag>`; AWS, MinIO, Ceph, SeaweedFS).
        A store that ignores them writes unconditionally."""
        condition = {"IfNoneMatch": "*"} if version is None else {"IfMatch": version}
        extra = {"ContentType": media_type} if media_type else {}
        digest = bytes.fromhex(sha256) if sha256 else hashlib.sha256(data).digest()  # as in `put`
        response = self._call(
            "conditional put", key, self._client.put_object, Key=self.prefix + key, Body=data,
            ChecksumSHA256=base64.b64encode(digest).decode(), **condition, **extra,
        )  # fmt: skip
        return str(response["ETag"])

    def exists(self, key: str) -> bool:
        try:
            self._call("head", key, self._client.head_object, Key=self.prefix + key)
            return True
        except ObjectMissingError:
            return False

    def list_keys(self, prefix: str, *, start_after: str | None = None) -> list[str]:
        return [info.key for info in self.list_objects(prefix, start_after=start_after)]

    def list_objects(self, prefix: str, *, start_after: str | None = None) -> list[ObjectInfo]:
        infos: list[ObjectInfo] = []
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"Prefix": self.prefix + prefix}
            if start_after is not None:
                kwargs["StartAfter"] = self.prefix + start_after
            if token:
                kwargs["ContinuationToken"] = token
            page = self._call("list", prefix, self._client.list_objects_v2, **kwargs)
            for item in page.get("Contents", []):
                key = item["Key"][len(self.prefix) :]
                infos.append(ObjectInfo(key, int(item["Size"]), item["LastModified"].timestamp()))
            if not page.get("IsTruncated"):
                return sorted(infos, key=lambda info: info.key)
            token = page.get("NextContinuationToken")

    def delete(self, key: str) -> None:
        self._call("delete", key, self._client.delete_object, Key=self.prefix + key)

    def describe(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def presigned_urls(self, keys: list[str], *, expires_s: int) -> list[str] | None:
        return self._presigner.urls(self.bucket, [self.prefix + key for key in keys], expires_s=expires_s)


def _current_credentials(session: Any) -> Credentials:
    """The session's credentials now (botocore refreshes temporary ones before they expire)."""
    found = session.get_credentials()
    if found is None:
        raise StorageError("no S3 credentials (AWS_ACCESS_KEY_ID, a profile or an instance role) to sign URLs with")
    frozen = found.get_frozen_credentials()
    return Credentials(frozen.access_key, frozen.secret_key, frozen.token)
