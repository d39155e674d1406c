"""One URI-based storage layer for ``s3://bucket/key``, ``file:///path`` and plain paths.

S3 goes through boto3 with the standard AWS configuration only: credentials from the default chain (environment,
shared config, IRSA's ``AWS_WEB_IDENTITY_TOKEN_FILE`` + ``AWS_ROLE_ARN`` on EKS, instance roles), the endpoint
from ``AWS_ENDPOINT_URL_S3``, else ``AWS_ENDPOINT_URL`` (MinIO, SeaweedFS, a local test server) and the region from
``AWS_REGION`` / ``AWS_DEFAULT_REGION``. Other services (SNS for notify) take only their own
``AWS_ENDPOINT_URL_<SERVICE>`` or the global ``AWS_ENDPOINT_URL``, never the S3 one: clusters set the S3-only
variable, so an on-prem store and AWS's SNS work side by side. When a custom endpoint is set, path-style
addressing is used (``http://host/bucket/key``), which every S3-compatible server accepts, and botocore's CRC
checksum headers are sent only where an operation requires them (many S3-compatible servers refuse them); on AWS
the defaults.

Reliability:

- large files go up and down in parts (boto3 ``TransferConfig``; threshold and part size from
  ``SPLATFLOW_S3_MULTIPART_MB``, default 8 MiB);
- every object this module writes carries its SHA-256 in the object metadata (``x-amz-meta-sha256``); downloads
  and reads verify it (and the size, for objects written by others), on top of botocore's CRC checksums;
- uploads also send it as an S3 checksum (``ChecksumAlgorithm=SHA256``: ``x-amz-checksum-sha256``, per part for
  multipart uploads) that AWS S3 and MinIO verify on arrival; an endpoint that refuses the header is learned and
  written to without it (``SPLATFLOW_S3_CHECKSUM=off`` never sends it); :func:`verify_stored` checks the bytes
  the server holds (its own checksum where that can be trusted, else a read-back);
- :func:`create_object` / :func:`replace_object` are conditional writes (``If-None-Match`` / ``If-Match``; a hard
  link / compare-and-rename locally) with one winner, for locks;
- throttling and 5xx answers are retried by botocore (``SPLATFLOW_S3_RETRY_MODE``: ``standard`` (default) or
  ``adaptive``; ``SPLATFLOW_S3_MAX_ATTEMPTS``, default 6; exponential backoff with jitter), and a transfer
  whose connection drops or whose data does not match its checksum is retried as a whole
  (``SPLATFLOW_S3_TRANSFER_ATTEMPTS``, default 3);
- failures raise :class:`~splatflow.errors.StorageError` naming the problem (missing bucket or key, access
  denied, unreachable endpoint, missing credentials) and the fix.

Local writes are atomic (a temporary file renamed into place). Nothing here logs credentials.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import mimetypes
import os
import random
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar
from urllib.parse import unquote, urlparse

from splatflow.errors import DependencyMissing, InputError, SplatflowError, StorageError
from splatflow.fsutil import atomic_path, is_temporary

__all__ = [
    "SHA256_META", "Location", "ObjectInfo", "check_bucket", "client", "content_type", "create_object", "delete",
    "download", "download_prefix", "endpoint_url", "exists", "join", "list_objects", "list_uris", "parse",
    "presign", "read_bytes", "read_tagged", "relative_name", "replace_object", "sha256_file", "stat", "upload",
    "upload_dir", "verify_stored", "write_bytes"
]

log = logging.getLogger("splatflow.storage")
T = TypeVar("T")

SHA256_META = "sha256"
_CHUNK = 1 << 20
_PARALLEL_FILES = 4


# ---------------------------------------------------------------------------- URIs
@dataclass(frozen=True)
class Location:
    """A parsed URI: ``scheme`` is ``"s3"`` (with ``bucket`` and ``key``) or ``"file"`` (with ``path``)."""

    scheme: str
    bucket: str = ""
    key: str = ""
    path: Path | None = None
    plain: bool = False  # a plain path (not a file:// URI): listings answer in the same style

    def __str__(self) -> str:
        if self.scheme == "s3":
            return f"s3://{self.bucket}/{self.key}"
        assert self.path is not None
        return str(self.path) if self.plain else self.path.as_uri()

    def child(self, rel: str) -> Location:
        """The location ``rel`` (a relative POSIX path) below this one, treated as a folder."""
        if self.scheme == "s3":
            return Location("s3", self.bucket, _folder_key(self.key) + rel)
        assert self.path is not None
        return Location("file", path=self.path / rel, plain=self.plain)


def parse(uri: str | os.PathLike[str]) -> Location:
    """Parse ``s3://bucket/key``, ``file:///abs/path`` or a plain path; raise InputError for anything else."""
    text = os.fspath(uri)
    if not text:
        raise InputError("empty storage URI", hint="give s3://bucket/key, file:///path or a local path")
    if text.startswith("s3://"):
        rest = text[5:]
        bucket, _, key = rest.partition("/")
        if not bucket:
            raise InputError(f"URI {text!r} has no bucket name", hint="write it as s3://bucket/key")
        return Location("s3", bucket, key)
    if text.startswith("file:"):
        parsed = urlparse(text)
        if parsed.netloc not in ("", "localhost"):
            raise InputError(f"file URI {text!r} names a host ({parsed.netloc})",
                             hint="write local files as file:///absolute/path")
        return Location("file", path=Path(unquote(parsed.path)))
    scheme = urlparse(text).scheme
    if "://" in text or (scheme and len(scheme) > 1):
        raise InputError(f"unsupported storage URI {text!r}",
                         hint="use s3://bucket/key (AWS or any S3 endpoint), file:///path or a local path")
    return Location("file", path=Path(text), plain=True)


def join(base: str, *parts: str) -> str:
    """Join URI path parts with ``/`` (no duplicate slashes): ``join("s3://b/out", "scene", "x")``."""
    out = base.rstrip("/")
    for part in parts:
        part = part.strip("/")
        if part:
            out = f"{out}/{part}"
    return out


def _folder_key(key: str) -> str:
    return key if not key or key.endswith("/") else key + "/"


def _safe_rel(rel: str, where: str) -> str:
    parts = PurePosixPath(rel).parts
    if not parts or any(p in ("..", "") for p in parts) or rel.startswith("/"):
        raise StorageError(f"refusing object key {rel!r} under {where}: it would escape the target folder",
                           hint="remove objects whose keys contain '..' or start with '/'")
    return rel


# ---------------------------------------------------------------------------- S3 client
def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InputError(f"{name}={raw!r} is not an integer", hint=f"set {name} to a whole number") from None
    if value < 1:
        raise InputError(f"{name}={raw!r} must be at least 1", hint=f"set {name} to 1 or more")
    return value


def endpoint_url(service: str = "s3") -> str | None:
    """The custom endpoint of ``service`` from the standard environment (``AWS_ENDPOINT_URL_<SERVICE>``, else
    ``AWS_ENDPOINT_URL``), or None for AWS itself."""
    name = "AWS_ENDPOINT_URL_" + service.upper().replace("-", "_").replace(" ", "_")
    return os.environ.get(name) or os.environ.get("AWS_ENDPOINT_URL") or None


def _region() -> str | None:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or None


_clients: dict[tuple[object, ...], Any] = {}
_clients_lock = threading.Lock()


def _boto3() -> Any:
    try:
        import boto3
    except ImportError:
        raise DependencyMissing("boto3 is not installed, so s3:// URIs cannot be used",
                                hint="pip install 'splatflow[storage]'") from None
    return boto3


def client(service: str = "s3", *, region: str | None = None) -> Any:
    """A boto3 client configured from the standard AWS environment (cached per endpoint/region/credentials).

    Endpoint: ``AWS_ENDPOINT_URL_<SERVICE>`` or ``AWS_ENDPOINT_URL``; region: ``region`` (e.g. from an ARN), else
    ``AWS_REGION`` / ``AWS_DEFAULT_REGION``. Retries: botocore's ``standard`` mode with
    ``SPLATFLOW_S3_MAX_ATTEMPTS`` attempts (throttling, 5xx, connection errors). Path-style addressing when a
    custom endpoint is set.
    """
    boto3 = _boto3()
    from botocore.config import Config

    endpoint = endpoint_url(service)
    region = region or _region() or ("us-east-1" if endpoint else None)
    attempts = _env_int("SPLATFLOW_S3_MAX_ATTEMPTS", 6)
    mode = os.environ.get("SPLATFLOW_S3_RETRY_MODE", "standard")
    if mode not in ("standard", "adaptive"):
        raise InputError(f"SPLATFLOW_S3_RETRY_MODE={mode!r} is not standard or adaptive",
                         hint="adaptive adds client-side rate limiting when S3 throttles; standard is the default")
    # The key identifies the configuration; the identity part only makes a changed environment get a new client.
    who = "\0".join(os.environ.get(k, "") for k in ("AWS_ACCESS_KEY_ID", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE"))
    ident = hashlib.sha256(who.encode()).hexdigest()[:16]
    cache_key = (service, endpoint, region, attempts, mode, ident, os.environ.get("AWS_PROFILE"),
                 os.environ.get("AWS_REQUEST_CHECKSUM_CALCULATION"), os.environ.get("AWS_RESPONSE_CHECKSUM_VALIDATION"))
    with _clients_lock:
        found = _clients.get(cache_key)
        if found is not None:
            return found
        config = Config(
            region_name=region,
            retries={"mode": mode, "total_max_attempts": attempts},
            connect_timeout=_env_int("SPLATFLOW_S3_CONNECT_TIMEOUT", 10),
            read_timeout=_env_int("SPLATFLOW_S3_READ_TIMEOUT", 60),
            s3={"addressing_style": "path"} if endpoint else None,
            max_pool_connections=16,
            signature_version="s3v4" if service == "s3" else None,
            **_checksum_options(endpoint),
        )
        made = boto3.session.Session().client(service, endpoint_url=endpoint, config=config)
        _clients[cache_key] = made
        return made


def _checksum_options(endpoint: str | None) -> dict[str, str]:
    """botocore's flexible checksums (CRC32 headers, on by default since 1.36) for AWS; ``when_required`` for
    other endpoints, many of which (older MinIO, Ceph, SeaweedFS, B2 ...) refuse those headers. The standard
    ``AWS_REQUEST_CHECKSUM_CALCULATION`` / ``AWS_RESPONSE_CHECKSUM_VALIDATION`` variables still win. Integrity
    does not depend on it: every object carries its SHA-256, checked on every read."""
    if not endpoint:
        return {}
    out = {}
    if not os.environ.get("AWS_REQUEST_CHECKSUM_CALCULATION"):
        out["request_checksum_calculation"] = "when_required"
    if not os.environ.get("AWS_RESPONSE_CHECKSUM_VALIDATION"):
        out["response_checksum_validation"] = "when_required"
    return out


def _transfer_config() -> Any:
    from boto3.s3.transfer import TransferConfig

    mib = _env_int("SPLATFLOW_S3_MULTIPART_MB", 8)
    if mib < 5:
        raise InputError(f"SPLATFLOW_S3_MULTIPART_MB={mib} is below S3's minimum part size of 5 MiB",
                         hint="set it to 5 or more (8 is the default)")
    part = mib << 20
    return TransferConfig(multipart_threshold=part, multipart_chunksize=part, max_concurrency=4,
                          num_download_attempts=5, use_threads=True)


_no_checksum: set[str | None] = set()  # endpoints that refused x-amz-checksum-sha256 (learned once per process)


def _checksum_args() -> dict[str, str]:
    """``ChecksumAlgorithm=SHA256`` for uploads: botocore sends the SHA-256 (a header, or a trailer over TLS)
    and a server that supports flexible checksums (AWS S3, MinIO ...) refuses data that does not match it. Off
    with ``SPLATFLOW_S3_CHECKSUM=off``, or for an endpoint that refused it once."""
    if os.environ.get("SPLATFLOW_S3_CHECKSUM", "sha256").strip().lower() in ("off", "none", "0", "false"):
        return {}
    return {} if endpoint_url() in _no_checksum else {"ChecksumAlgorithm": "SHA256"}


def _with_checksum(put: Callable[[dict[str, str]], T]) -> T:
    """Run ``put(checksum args)``; when the server refuses the checksum headers (older S3-compatible stores),
    remember that for its endpoint and put again without them (integrity then rests on publish's read-back)."""
    from botocore.exceptions import ClientError

    sums = _checksum_args()
    try:
        return put(sums)
    except ClientError as exc:
        err = exc.response.get("Error", {})
        code, message = str(err.get("Code", "")), str(err.get("Message", "")).lower()
        refused = code == "NotImplemented" or (code in ("InvalidRequest", "InvalidArgument", "BadRequest")
                                               and "checksum" in message)
        if not sums or not refused:
            raise
    log.warning("the S3 endpoint %s refused SHA-256 checksum headers (%s); uploading without them",
                endpoint_url() or "AWS S3", code)
    _no_checksum.add(endpoint_url())
    return put({})


def _explain(exc: BaseException, loc: Location, action: str) -> StorageError:
    """Turn a botocore exception into a StorageError that names the problem and the fix."""
    from botocore import exceptions as bx

    where = str(loc)
    endpoint = endpoint_url() or "AWS S3"
    if isinstance(exc, bx.NoCredentialsError | bx.PartialCredentialsError):
        return StorageError(f"cannot {action} {where}: no AWS credentials found",
                            hint="set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or IRSA "
                                 "(AWS_ROLE_ARN + AWS_WEB_IDENTITY_TOKEN_FILE) for this pod")
    if isinstance(exc, bx.EndpointConnectionError | bx.ConnectTimeoutError):
        return StorageError(f"cannot {action} {where}: the S3 endpoint {endpoint} cannot be reached",
                            hint="check AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL (scheme, host, port) and the "
                                 "network path to it")
    if isinstance(exc, bx.ClientError):
        err = exc.response.get("Error", {})
        code = str(err.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code == "NoSuchBucket":
            return _missing_bucket(loc, action)
        if code in ("NoSuchKey", "NotFound", "404") or status == 404:
            with contextlib.suppress(Exception):  # HEAD answers carry no code: ask whether the bucket is there
                if not _bucket_exists(loc):
                    return _missing_bucket(loc, action)
            return StorageError(f"cannot {action} {where}: no such object",
                                hint="check the key (and that an earlier stage wrote it)")
        if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken",
                    "TokenRefreshRequired"):
            return StorageError(f"cannot {action} {where}: the credentials were rejected ({code})",
                                hint="check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (or the IRSA role) "
                                     "and that AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL is the server they "
                                     "belong to")
        if code in ("AccessDenied", "AllAccessDisabled", "403", "Forbidden") or status == 403:
            return StorageError(f"cannot {action} {where} at {endpoint}: access denied",
                                hint=f"grant the role/user s3:GetObject, s3:PutObject and s3:ListBucket on "
                                     f"bucket {loc.bucket!r} (IAM policy for IRSA, or the MinIO policy), and "
                                     "check that the credentials belong to this endpoint")
        if code in ("InvalidBucketName",):
            return StorageError(f"cannot {action} {where}: {loc.bucket!r} is not a valid bucket name",
                                hint="bucket names are 3-63 lowercase letters, digits, dots and hyphens")
        if code in ("SlowDown", "Throttling", "ServiceUnavailable", "InternalError") or (status or 0) >= 500:
            return StorageError(f"cannot {action} {where}: the server kept failing ({code or status}) after retries",
                                hint="retry later, or raise SPLATFLOW_S3_MAX_ATTEMPTS")
        message = str(err.get("Message", "")).strip()
        return StorageError(f"cannot {action} {where}: {code or status} {message}".rstrip(),
                            hint="see the S3 error code above")
    if isinstance(exc, bx.BotoCoreError):
        return StorageError(f"cannot {action} {where}: {type(exc).__name__}: {exc}",
                            hint="check AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL and the network, then retry")
    return StorageError(f"cannot {action} {where}: {type(exc).__name__}: {exc}",
                        hint="check the storage endpoint and retry")


def _status(exc: Any) -> int | None:
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return int(status) if status is not None else None


def _bucket_exists(loc: Location) -> bool:
    """HEAD the bucket: False on 404, True when it answers; other errors propagate."""
    from botocore.exceptions import ClientError

    try:
        client().head_bucket(Bucket=loc.bucket)
    except ClientError as exc:
        if _status(exc) == 404:
            return False
        raise
    return True


def _missing_bucket(loc: Location, action: str) -> StorageError:
    return StorageError(f"cannot {action} {loc}: bucket {loc.bucket!r} does not exist at "
                        f"{endpoint_url() or 'AWS S3'}",
                        hint=f"create it (aws s3 mb s3://{loc.bucket}) or fix the bucket name in the URI")


class _ChecksumMismatch(Exception):
    """Downloaded data did not match its recorded SHA-256 or size (retried, then a StorageError)."""


def _retryable_transfer_error(exc: BaseException) -> bool:
    """Errors after which the whole transfer is tried again (a dropped connection mid-stream, bad data)."""
    from botocore import exceptions as bx

    if isinstance(exc, _ChecksumMismatch):
        return True
    if isinstance(exc, bx.EndpointConnectionError | bx.ConnectTimeoutError):
        return False  # a bad endpoint: botocore already retried; repeating only delays the clear error
    if isinstance(exc, bx.ConnectionError | bx.IncompleteReadError | bx.ResponseStreamingError):
        return True
    name = type(exc).__name__
    # s3transfer / urllib3 errors raised from a dropped stream, without importing their private modules
    return name in ("RetriesExceededError", "ProtocolError", "ReadTimeoutError", "IncompleteRead",
                    "ConnectionResetError", "BrokenPipeError")


def _with_retries(action: str, loc: Location, fn: Callable[[], T]) -> T:
    """Run one S3 operation; retry whole transfers after connection drops, map errors to StorageError."""
    attempts = _env_int("SPLATFLOW_S3_TRANSFER_ATTEMPTS", 3)
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except SplatflowError:
            raise
        except Exception as exc:
            if attempt < attempts and _retryable_transfer_error(exc):
                delay = min(8.0, 0.25 * 2 ** attempt) * (0.5 + random.random() / 2)
                log.warning("%s %s: %s; retrying in %.1f s (attempt %d of %d)", action, loc,
                            type(exc).__name__, delay, attempt + 1, attempts)
                time.sleep(delay)
                continue
            if isinstance(exc, _ChecksumMismatch):
                raise StorageError(f"cannot {action} {loc}: {exc}",
                                   hint="the object or the transfer is corrupt; re-upload it and retry") from exc
            raise _explain(exc, loc, action) from exc
    raise AssertionError("unreachable")  # pragma: no cover


# ---------------------------------------------------------------------------- helpers
def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes (streamed in 1 MiB chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def content_type(name: str) -> str:
    """The MIME type for an object name (what browsers need to open the viewer page from a bucket)."""
    ext = PurePosixPath(name).suffix.lower()
    known = {".sog": "application/octet-stream", ".ply": "application/octet-stream", ".webp": "image/webp",
             ".json": "application/json", ".js": "text/javascript", ".mjs": "text/javascript",
             ".css": "text/css", ".html": "text/html; charset=utf-8", ".md": "text/markdown; charset=utf-8"}
    return known.get(ext) or mimetypes.guess_type(name)[0] or "application/octet-stream"


def _object(uri: str) -> Location:
    """Parse a URI that must name one object (an s3:// URI with a key, or a path)."""
    loc = parse(uri)
    if loc.scheme == "s3" and (not loc.key or loc.key.endswith("/")):
        raise InputError(f"{uri!r} names a bucket or folder, not an object",
                         hint="give the full key: s3://bucket/path/to/file")
    return loc


def _local(loc: Location) -> Path:
    assert loc.path is not None
    return loc.path


def _check_source_file(path: Path) -> None:
    if not path.is_file():
        what = "is a folder (use upload_dir)" if path.is_dir() else "does not exist"
        raise InputError(f"cannot upload {path}: it {what}", hint="give the path of an existing file")


@contextlib.contextmanager
def _local_target(path: Path) -> Iterator[Path]:
    """An atomic temporary path for a local destination file (parent folders created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        yield tmp


# ---------------------------------------------------------------------------- public API
def exists(uri: str) -> bool:
    """True when the object (or local file/folder) exists. Errors other than 'not found' raise StorageError."""
    loc = _object(uri)
    if loc.scheme == "file":
        return _local(loc).exists()
    from botocore.exceptions import ClientError

    def head() -> bool:
        try:
            client().head_object(Bucket=loc.bucket, Key=loc.key)
            return True
        except ClientError as exc:
            if _status(exc) != 404:
                raise
        if not _bucket_exists(loc):
            raise _missing_bucket(loc, "check")
        return False

    return _with_retries("check", loc, head)


def stat(uri: str) -> dict[str, Any]:
    """Size and SHA-256 of one object: ``{"size": int, "sha256": str | None, "etag": str}``. S3: the SHA-256
    recorded when this module wrote it (None for objects written by other tools) and the ETag; local files: the
    SHA-256 computed, no ETag."""
    loc = _object(uri)
    if loc.scheme == "file":
        p = _local(loc)
        if not p.is_file():
            raise StorageError(f"{loc} does not exist", hint="check the path (and that an earlier stage wrote it)")
        return {"size": p.stat().st_size, "sha256": sha256_file(p), "etag": ""}
    head = _with_retries("stat", loc, lambda: client().head_object(Bucket=loc.bucket, Key=loc.key))
    return {"size": int(head["ContentLength"]), "sha256": head.get("Metadata", {}).get(SHA256_META),
            "etag": str(head.get("ETag", "")).strip('"')}


def upload(local_path: str | os.PathLike[str], uri: str, *, content_type_: str | None = None) -> str:
    """Copy a local file to ``uri`` (multipart when large); record its SHA-256. Returns the URI written."""
    src = Path(local_path)
    _check_source_file(src)
    loc = _object(uri)
    if loc.scheme == "file":
        dest = _local(loc)
        if dest.is_dir():
            raise StorageError(f"cannot upload to {loc}: it is a folder", hint="give the full file path")
        with _local_target(dest) as tmp:
            shutil.copyfile(src, tmp)
        return str(loc)
    digest = sha256_file(src)
    extra = {"Metadata": {SHA256_META: digest}, "ContentType": content_type_ or content_type(loc.key)}
    size = src.stat().st_size

    def put() -> None:
        _with_checksum(lambda sums: client().upload_file(str(src), loc.bucket, loc.key, ExtraArgs={**extra, **sums},
                                                         Config=_transfer_config()))

    _with_retries("upload to", loc, put)
    log.debug("uploaded %s (%d bytes) to %s", src, size, loc)
    return str(loc)


def download(uri: str, local_path: str | os.PathLike[str]) -> Path:
    """Copy the object at ``uri`` to ``local_path`` atomically, verifying its SHA-256 (or size). Returns the path."""
    loc = _object(uri)
    dest = Path(local_path)
    if loc.scheme == "file":
        src = _local(loc)
        if not src.is_file():
            raise StorageError(f"cannot download {loc}: it does not exist" if not src.exists()
                               else f"cannot download {loc}: it is a folder (use download_prefix)",
                               hint="check the path (and that an earlier stage wrote it)")
        with _local_target(dest) as tmp:
            shutil.copyfile(src, tmp)
        return dest

    def get() -> None:
        c = client()
        head = c.head_object(Bucket=loc.bucket, Key=loc.key)
        want_sha = head.get("Metadata", {}).get(SHA256_META)
        want_size = int(head["ContentLength"])
        with _local_target(dest) as tmp:
            c.download_file(loc.bucket, loc.key, str(tmp), Config=_transfer_config())
            _verify(tmp, want_size, want_sha)

    _with_retries("download", loc, get)
    return dest


def _verify(path: Path, size: int, sha: str | None) -> None:
    got_size = path.stat().st_size
    if got_size != size:
        raise _ChecksumMismatch(f"got {got_size} bytes, the object has {size}")
    if sha:
        got = sha256_file(path)
        if got != sha:
            raise _ChecksumMismatch(f"SHA-256 {got[:12]}... does not match the recorded {sha[:12]}...")


@dataclass(frozen=True)
class ObjectInfo:
    """One object of a listing: its URI (in the listed URI's style), its size in bytes and, on S3, its ETag (a
    content hash for single-part uploads, a hash of the parts' hashes otherwise; empty for local files)."""

    uri: str
    size: int
    etag: str = ""


def list_objects(uri: str, *, max_count: int | None = None) -> list[ObjectInfo]:
    """Every object (file) below ``uri`` treated as a folder, recursively, with its size, sorted by URI.

    ``max_count``: refuse (InputError, before listing further) a folder holding more objects than that.
    """
    loc = parse(uri)

    def too_many() -> InputError:
        return InputError(f"{loc} holds more than {max_count:,} objects",
                          hint="point at a narrower prefix (one scene's photos)")

    if loc.scheme == "file":
        root = _local(loc)
        if not root.exists():
            return []
        if root.is_file():
            return [ObjectInfo(str(loc), root.stat().st_size)]
        found: list[ObjectInfo] = []
        for p in sorted(root.rglob("*")):
            if p.is_file() and not is_temporary(p.name):  # another writer's file in progress is no object yet
                found.append(ObjectInfo(str(Location("file", path=p, plain=loc.plain)), p.stat().st_size))
                if max_count is not None and len(found) > max_count:
                    raise too_many()
        return found
    prefix = _folder_key(loc.key)

    def listing() -> list[ObjectInfo]:
        out: list[ObjectInfo] = []
        for page in client().get_paginator("list_objects_v2").paginate(Bucket=loc.bucket, Prefix=prefix):
            out.extend(ObjectInfo(f"s3://{loc.bucket}/{obj['Key']}", int(obj.get("Size", 0)),
                                  str(obj.get("ETag", "")).strip('"'))
                       for obj in page.get("Contents", []) if not obj["Key"].endswith("/"))
            if max_count is not None and len(out) > max_count:
                raise too_many()
        return sorted(out, key=lambda o: o.uri)

    return _with_retries("list", loc, listing)


def list_uris(uri: str) -> list[str]:
    """Every object (file) below ``uri`` treated as a folder, recursively, sorted; same URI style as the input."""
    return [o.uri for o in list_objects(uri)]


def relative_name(child: str, parent: str) -> str:
    """The POSIX path of ``child`` (a URI from ``list_uris(parent)``) below the folder ``parent``."""
    loc, base = parse(child), parse(parent)
    if loc.scheme == "s3":
        return _safe_rel(loc.key[len(_folder_key(base.key)):], str(base))
    return _local(loc).relative_to(_local(base)).as_posix()


def download_prefix(uri: str, local_dir: str | os.PathLike[str], *, only: list[str] | None = None) -> list[Path]:
    """Copy every object below ``uri`` (a folder/prefix) into ``local_dir``, keeping relative paths.

    ``only``: copy just these URIs (from ``list_objects(uri)``) instead of listing again. Returns the local paths,
    sorted. Raises StorageError when nothing is there.
    """
    loc = parse(uri)
    out_dir = Path(local_dir)
    children = list_uris(uri) if only is None else sorted(only)
    outside = [c for c in children if parse(c).scheme != loc.scheme or not _below(parse(c), loc)]
    if outside:
        raise InputError(f"cannot download {outside[0]} as part of {loc}: it is not below it",
                         hint="pass URIs from list_objects() of the same prefix")
    if loc.scheme == "file" and children == [str(loc)]:
        raise StorageError(f"cannot download folder {loc}: it is a file", hint="use download() for one file")
    if not children:
        raise StorageError(f"nothing to download: {loc} is empty or does not exist",
                           hint="check the prefix (and that an earlier stage wrote it)")
    pairs = [(child, out_dir / relative_name(child, uri)) for child in children]
    with ThreadPoolExecutor(max_workers=_PARALLEL_FILES) as pool:
        paths = list(pool.map(lambda pair: download(*pair), pairs))
    return sorted(paths)


def _below(child: Location, folder: Location) -> bool:
    if child.scheme == "s3":
        return child.bucket == folder.bucket and child.key.startswith(_folder_key(folder.key))
    assert child.path is not None and folder.path is not None
    return child.path == folder.path or folder.path in child.path.parents


def check_bucket(uri: str) -> str:
    """Check that the bucket of ``uri`` (``s3://bucket``, ``s3://bucket/prefix/`` or an object URI) answers to
    this environment's credentials (a HEAD on the bucket: s3:ListBucket). Returns the endpoint used (its URL, or
    ``AWS S3``). Raises InputError for a URI that is not s3://, StorageError naming the problem and its fix for a
    missing bucket, denied access, rejected credentials or an unreachable endpoint."""
    loc = parse(uri)
    if loc.scheme != "s3":
        raise InputError(f"{uri!r} is not an s3:// URI, so it names no bucket",
                         hint="give s3://bucket or s3://bucket/prefix")
    bucket = Location("s3", loc.bucket, "")

    def head() -> None:
        if not _bucket_exists(bucket):
            raise _missing_bucket(bucket, "reach")

    _with_retries("reach", bucket, head)
    return endpoint_url() or "AWS S3"


def upload_dir(local_dir: str | os.PathLike[str], uri: str) -> list[str]:
    """Copy every file below ``local_dir`` to ``uri`` (a folder/prefix), keeping relative paths. Returns the URIs."""
    src = Path(local_dir)
    if not src.is_dir():
        raise InputError(f"cannot upload folder {src}: it is not a folder", hint="give an existing folder")
    files = sorted(p for p in src.rglob("*") if p.is_file())
    loc = parse(uri)
    pairs = [(p, str(loc.child(p.relative_to(src).as_posix()))) for p in files]
    with ThreadPoolExecutor(max_workers=_PARALLEL_FILES) as pool:
        return list(pool.map(lambda pair: upload(*pair), pairs))


def read_bytes(uri: str, *, max_bytes: int | None = None) -> bytes:
    """The whole content of one object, verified against its recorded SHA-256 (or size). ``max_bytes``: refuse
    (InputError, before reading) an object larger than that."""
    loc = _object(uri)
    if loc.scheme == "file":
        p = _local(loc)
        if not p.is_file():
            raise StorageError(f"cannot read {loc}: it does not exist",
                               hint="check the path (and that an earlier stage wrote it)")
        if max_bytes is not None:
            from splatflow.limits import read_limited

            return read_limited(p, max_bytes, "file")
        return p.read_bytes()

    def get() -> bytes:
        resp = client().get_object(Bucket=loc.bucket, Key=loc.key)
        if max_bytes is not None and int(resp["ContentLength"]) > max_bytes:
            resp["Body"].close()
            raise InputError(f"object {loc} is {int(resp['ContentLength']):,} bytes, more than the {max_bytes:,} "
                             "accepted", hint="this is not a file splatflow wrote; check the URI")
        data: bytes = resp["Body"].read()
        if len(data) != int(resp["ContentLength"]):
            raise _ChecksumMismatch(f"got {len(data)} bytes, the object has {resp['ContentLength']}")
        want = resp.get("Metadata", {}).get(SHA256_META)
        if want and hashlib.sha256(data).hexdigest() != want:
            raise _ChecksumMismatch("SHA-256 does not match the recorded one")
        return data

    return _with_retries("read", loc, get)


def write_bytes(uri: str, data: bytes, *, content_type_: str | None = None,
                cache_control: str | None = None) -> str:
    """Write ``data`` as one object (atomically for local files); record its SHA-256. Returns the URI."""
    loc = _object(uri)
    if loc.scheme == "file":
        with _local_target(_local(loc)) as tmp:
            tmp.write_bytes(data)
        return str(loc)
    args: dict[str, Any] = {"Bucket": loc.bucket, "Key": loc.key, "Body": data,
                            "Metadata": {SHA256_META: hashlib.sha256(data).hexdigest()},
                            "ContentType": content_type_ or content_type(loc.key)}
    if cache_control:
        args["CacheControl"] = cache_control
    _with_retries("write", loc, lambda: _with_checksum(lambda sums: client().put_object(**args, **sums)))
    return str(loc)


def presign(uri: str, expires: int = 7 * 24 * 3600) -> str:
    """A URL that reads ``uri`` without credentials for ``expires`` seconds (S3 allows at most 7 days).

    Local paths answer their ``file://`` URI (nothing to sign).
    """
    loc = _object(uri)
    if loc.scheme == "file":
        return _local(loc).resolve().as_uri()
    if not 1 <= expires <= 7 * 24 * 3600:
        raise InputError(f"presigned URL expiry {expires} s is out of range",
                         hint="choose between 1 second and 604800 seconds (7 days)")
    try:
        url: str = client().generate_presigned_url("get_object", Params={"Bucket": loc.bucket, "Key": loc.key},
                                                   ExpiresIn=expires)
    except Exception as exc:
        raise _explain(exc, loc, "presign") from exc
    return url


def delete(uri: str) -> None:
    """Remove one object (or local file); a missing one is not an error."""
    loc = _object(uri)
    if loc.scheme == "file":
        p = _local(loc)
        if p.is_dir():
            raise StorageError(f"cannot delete {loc}: it is a folder", hint="delete the files in it one by one")
        p.unlink(missing_ok=True)
        return
    _with_retries("delete", loc, lambda: client().delete_object(Bucket=loc.bucket, Key=loc.key))


# ---------------------------------------------------------------------------- what the server stored
def _composite_sha256(path: Path, part: int) -> tuple[str, str]:
    """S3's multipart SHA-256 checksum of a file uploaded in ``part``-byte parts (base64 of the SHA-256 of the
    parts' digests, then ``-<parts>``) and the file's own hex SHA-256, in one pass."""
    outer, whole, parts = hashlib.sha256(), hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(part):
            outer.update(hashlib.sha256(chunk).digest())
            whole.update(chunk)
            parts += 1
    return f"{base64.b64encode(outer.digest()).decode()}-{parts}", whole.hexdigest()


def _trust_server_checksums() -> bool:
    """Whether the checksum S3 reports can stand for the stored bytes: on AWS S3 (it verifies the checksum
    sent with the data and computes its own), or where ``SPLATFLOW_S3_TRUST_CHECKSUMS=1`` says the endpoint does
    the same. Other S3-compatible servers may store whatever checksum the client sent, unverified."""
    if os.environ.get("SPLATFLOW_S3_TRUST_CHECKSUMS", "").strip() in ("1", "true", "yes"):
        return True
    return endpoint_url() is None


def verify_stored(uri: str, sha256: str, size: int, *, local_path: Path | None = None) -> bool:
    """Whether the object at ``uri`` holds exactly the bytes with this SHA-256 and size, as the server stored
    them (not as the client described them in the metadata).

    Local files are hashed. On S3 the server's own SHA-256 checksum is used where it can be trusted (AWS S3;
    ``SPLATFLOW_S3_TRUST_CHECKSUMS=1``): the full-object value, or the multipart one computed from
    ``local_path``; elsewhere, or when the server has none, the object is read back and hashed. StorageError
    when it cannot be read.
    """
    loc = _object(uri)
    if loc.scheme == "file":
        p = _local(loc)
        return p.is_file() and p.stat().st_size == size and sha256_file(p) == sha256

    def check() -> bool:
        c = client()
        if _trust_server_checksums():
            head = c.head_object(Bucket=loc.bucket, Key=loc.key, ChecksumMode="ENABLED")
            if int(head["ContentLength"]) != size:
                return False
            stored = head.get("ChecksumSHA256")
            part = _transfer_config().multipart_chunksize
            if stored:
                if stored == base64.b64encode(bytes.fromhex(sha256)).decode():
                    return True
                if local_path is not None and size >= part:
                    composite, whole = _composite_sha256(local_path, part)
                    if stored in (composite, composite.rsplit("-", 1)[0]):
                        return whole == sha256
                if size < part and "-" not in stored:
                    return False  # one part: the server's own SHA-256 of what it stored differs
        # no trusted checksum (or one of a part size we do not know): read the object back
        resp = c.get_object(Bucket=loc.bucket, Key=loc.key)
        h, got = hashlib.sha256(), 0
        for chunk in resp["Body"].iter_chunks(_CHUNK):
            h.update(chunk)
            got += len(chunk)
        return got == size and h.hexdigest() == sha256

    return _with_retries("verify", loc, check)


# ---------------------------------------------------------------------------- conditional writes (locks)
def _precondition_failed(exc: Any) -> bool:
    err = exc.response.get("Error", {})
    return _status(exc) in (409, 412) or str(err.get("Code", "")) in ("PreconditionFailed",
                                                                      "ConditionalRequestConflict")


def _unsupported(exc: Any) -> bool:
    return _status(exc) == 501 or str(exc.response.get("Error", {}).get("Code", "")) == "NotImplemented"


def create_object(uri: str, data: bytes) -> bool:
    """Write ``data`` at ``uri`` only if nothing is there: True when this call created it, False when an object
    already existed. One winner among concurrent callers: S3's conditional write (``If-None-Match: *``), a
    hard link for local files. An S3 endpoint without conditional writes falls back to check-then-write (logged:
    two writers racing within one round trip could then both win)."""
    loc = _object(uri)
    if loc.scheme == "file":
        dest = _local(loc)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".partial", dir=dest.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.chmod(name, 0o644)
            os.link(name, dest)
            return True
        except FileExistsError:
            return False
        finally:
            os.unlink(name)
    from botocore.exceptions import ClientError

    args = {"Bucket": loc.bucket, "Key": loc.key, "Body": data, "ContentType": content_type(loc.key),
            "Metadata": {SHA256_META: hashlib.sha256(data).hexdigest()}}

    def put() -> bool:
        try:
            client().put_object(**args, IfNoneMatch="*")
            return True
        except ClientError as exc:
            if _precondition_failed(exc):
                return False
            if not _unsupported(exc):
                raise
        log.warning("the S3 endpoint %s has no conditional writes; creating %s without one", endpoint_url(), loc)
        if exists(uri):
            return False
        client().put_object(**args)
        return True

    return _with_retries("create", loc, put)


def read_tagged(uri: str) -> tuple[bytes, str] | None:
    """An object's bytes and a tag that changes whenever it is rewritten (the S3 ETag; for local files the
    inode, size and modification time), or None when there is none."""
    loc = _object(uri)
    if loc.scheme == "file":
        p = _local(loc)
        try:
            with open(p, "rb") as f:
                st = os.fstat(f.fileno())
                return f.read(), f"{st.st_ino}-{st.st_size}-{st.st_mtime_ns}"
        except FileNotFoundError:
            return None
    from botocore.exceptions import ClientError

    def get() -> tuple[bytes, str] | None:
        try:
            resp = client().get_object(Bucket=loc.bucket, Key=loc.key)
        except ClientError as exc:
            if _status(exc) == 404:
                return None
            raise
        return resp["Body"].read(), str(resp["ETag"])

    return _with_retries("read", loc, get)


def replace_object(uri: str, data: bytes, tag: str) -> str | None:
    """Overwrite ``uri`` with ``data`` only if it still carries ``tag`` (from :func:`read_tagged` or an earlier
    call): the new tag, or None when someone else rewrote or removed it first. S3: ``If-Match`` (an endpoint
    without it: compare, then write); local: compare, then an atomic rename."""
    loc = _object(uri)
    if loc.scheme == "file":
        current = read_tagged(uri)
        if current is None or current[1] != tag:
            return None
        with _local_target(_local(loc)) as tmp:
            tmp.write_bytes(data)
        now = read_tagged(uri)
        return now[1] if now is not None else None
    from botocore.exceptions import ClientError

    args = {"Bucket": loc.bucket, "Key": loc.key, "Body": data, "ContentType": content_type(loc.key),
            "Metadata": {SHA256_META: hashlib.sha256(data).hexdigest()}}

    def put() -> str | None:
        try:
            return str(client().put_object(**args, IfMatch=tag)["ETag"])
        except ClientError as exc:
            if _precondition_failed(exc) or _status(exc) == 404:
                return None
            if not _unsupported(exc):
                raise
        current = read_tagged(uri)
        if current is None or current[1] != tag:
            return None
        return str(client().put_object(**args)["ETag"])

    return _with_retries("replace", loc, put)
