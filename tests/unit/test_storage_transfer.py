"""storage.py under load and faults: a 50 MB multipart round trip read back by an independent client (minio),
and a TCP proxy in front of the local S3 server that answers 503 / drops / cuts connections for the first
attempts — the transfers are retried and the data arrives intact."""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from splatflow import storage
from splatflow.errors import StorageError

boto3 = pytest.importorskip("boto3")
minio = pytest.importorskip("minio")


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _minio_client(s3_server: dict[str, str]) -> minio.Minio:
    host = s3_server["endpoint"].removeprefix("http://")
    return minio.Minio(host, access_key=s3_server["AWS_ACCESS_KEY_ID"],
                       secret_key=s3_server["AWS_SECRET_ACCESS_KEY"], secure=False, region=s3_server["region"])


def test_multipart_50mb_round_trip_with_independent_reader(s3_server: dict[str, str], tmp_path: Path) -> None:
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(50 * 1024 * 1024))
    want = _sha(src)
    bucket = s3_server["bucket"]
    uri = storage.upload(src, f"s3://{bucket}/multipart/big.bin")

    head = boto3.client("s3").head_object(Bucket=bucket, Key="multipart/big.bin")
    assert head["ContentLength"] == src.stat().st_size
    assert head["ETag"].strip('"').endswith("-7"), head["ETag"]  # 8 MiB parts: a 7-part upload
    assert head["Metadata"]["sha256"] == want

    back = storage.download(uri, tmp_path / "back.bin")
    assert _sha(back) == want

    client = _minio_client(s3_server)
    stat = client.stat_object(bucket, "multipart/big.bin")
    assert stat.size == src.stat().st_size
    assert stat.metadata["x-amz-meta-sha256"] == want
    client.fget_object(bucket, "multipart/big.bin", str(tmp_path / "minio.bin"))
    assert _sha(tmp_path / "minio.bin") == want


def test_folder_written_by_boto3_is_read_by_minio(s3_server: dict[str, str], tmp_path: Path) -> None:
    files = {"meta.json": b'{"version": 2}', "a/b.webp": os.urandom(5000), "a/c.webp": os.urandom(7)}
    for rel, data in files.items():
        (tmp_path / "src" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "src" / rel).write_bytes(data)
    bucket = s3_server["bucket"]
    storage.upload_dir(tmp_path / "src", f"s3://{bucket}/minio-folder")
    client = _minio_client(s3_server)
    names = sorted(o.object_name for o in client.list_objects(bucket, prefix="minio-folder/", recursive=True))
    assert names == sorted(f"minio-folder/{rel}" for rel in files)
    for rel, data in files.items():
        resp = client.get_object(bucket, f"minio-folder/{rel}")
        try:
            assert resp.read() == data
        finally:
            resp.close()
            resp.release_conn()


# ---------------------------------------------------------------------------- fault-injecting proxy
class FaultProxy:
    """A TCP proxy to the S3 server. Connection number i gets ``plan[i]``, later ones pass through.

    "503" answers an S3 SlowDown error and closes; "403" an AccessDenied error; "drop" closes right after the
    request head; "cut" forwards but closes after the first 64 KiB of the answer (a connection lost mid-download).
    """

    def __init__(self, upstream: str, plan: list[str]) -> None:
        host, port = upstream.removeprefix("http://").split(":")
        self.upstream = (host, int(port))
        self.plan = list(plan)
        self.applied: list[str] = []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(32)
        self.endpoint = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                mode = self.plan.pop(0) if self.plan else "pass"
                self.applied.append(mode)
            threading.Thread(target=self._handle, args=(conn, mode), daemon=True).start()

    @staticmethod
    def _read_head(conn: socket.socket) -> bytes:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
        return data

    def _handle(self, conn: socket.socket, mode: str) -> None:
        try:
            if mode in ("503", "403", "drop"):
                head = self._read_head(conn)
                if mode in ("503", "403"):
                    lines = head.split(b"\r\n\r\n")[0].lower().split(b"\r\n")
                    length = next((int(x.split(b":")[1]) for x in lines if x.startswith(b"content-length:")), 0)
                    if b"expect: 100-continue" not in head.lower():
                        got = len(head.split(b"\r\n\r\n", 1)[1])
                        while got < length:
                            chunk = conn.recv(min(65536, length - got))
                            if not chunk:
                                break
                            got += len(chunk)
                    if mode == "503":
                        status = b"503 Slow Down"
                        body = b"<Error><Code>SlowDown</Code><Message>Reduce your request rate.</Message></Error>"
                    else:
                        status = b"403 Forbidden"
                        body = b"<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>"
                    if head.startswith(b"HEAD "):
                        body = b""
                    conn.sendall(b"HTTP/1.1 %s\r\nContent-Type: application/xml\r\n"
                                 b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (status, len(body), body))
                return
            up = socket.create_connection(self.upstream)
            limit = 64 * 1024 if mode == "cut" else None
            t = threading.Thread(target=self._pipe, args=(conn, up, None), daemon=True)
            t.start()
            self._pipe(up, conn, limit)
            t.join(timeout=5)
            up.close()
        except OSError:
            pass
        finally:
            conn.close()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket, limit: int | None) -> None:
        sent = 0
        try:
            while True:
                chunk = src.recv(65536)
                if not chunk:
                    break
                if limit is not None and sent + len(chunk) > limit:
                    dst.sendall(chunk[: limit - sent])
                    break
                dst.sendall(chunk)
                sent += len(chunk)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture()
def proxy_factory(s3_server: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[type]:
    made: list[FaultProxy] = []

    def make(plan: list[str]) -> FaultProxy:
        proxy = FaultProxy(s3_server["endpoint"], plan)
        made.append(proxy)
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
        return proxy

    yield make  # type: ignore[misc]
    for proxy in made:
        proxy.close()


def test_faults_are_retried_and_data_is_intact(s3_server: dict[str, str], proxy_factory, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPLATFLOW_S3_MULTIPART_MB", "5")
    src = tmp_path / "f.bin"
    src.write_bytes(os.urandom(12 * 1024 * 1024))  # 3 parts of 5 MiB
    want = _sha(src)
    bucket = s3_server["bucket"]
    uri = f"s3://{bucket}/faults/f.bin"

    up = proxy_factory(["503", "drop", "503"])
    storage.upload(src, uri)
    assert up.applied[:3] == ["503", "drop", "503"]

    down = proxy_factory(["cut", "503", "drop", "cut"])
    storage.download(uri, tmp_path / "back.bin")
    assert down.applied[:4] == ["cut", "503", "drop", "cut"]
    assert _sha(tmp_path / "back.bin") == want

    small = proxy_factory(["drop", "503"])
    storage.write_bytes(f"s3://{bucket}/faults/s.json", b'{"a": 1}')
    assert storage.read_bytes(f"s3://{bucket}/faults/s.json") == b'{"a": 1}'
    assert small.applied[:2] == ["drop", "503"]

    # read back directly from the server, past the proxy: what was stored is intact
    direct = boto3.client("s3", endpoint_url=s3_server["endpoint"])
    body = direct.get_object(Bucket=bucket, Key="faults/f.bin")["Body"].read()
    assert hashlib.sha256(body).hexdigest() == want


def test_persistent_503_gives_a_clear_error(s3_server: dict[str, str], proxy_factory,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPLATFLOW_S3_MAX_ATTEMPTS", "2")
    monkeypatch.setenv("SPLATFLOW_S3_RETRY_MODE", "adaptive")
    proxy_factory(["503"] * 20)
    with pytest.raises(StorageError, match="kept failing") as err:
        storage.write_bytes(f"s3://{s3_server['bucket']}/faults/never.json", b"{}")
    assert "SPLATFLOW_S3_MAX_ATTEMPTS" in (err.value.hint or "")
    assert storage.client().meta.config.retries["mode"] == "adaptive"


def test_access_denied_is_clear_and_not_retried(s3_server: dict[str, str], proxy_factory, tmp_path: Path) -> None:
    proxy = proxy_factory(["403"] * 10)
    uri = f"s3://{s3_server['bucket']}/private/x.bin"
    with pytest.raises(StorageError, match="access denied") as err:
        storage.read_bytes(uri)
    assert "s3:GetObject" in (err.value.hint or "")
    assert len(proxy.applied) == 1  # a 403 is an answer, not a fault: no retries
    with pytest.raises(StorageError, match="access denied"):
        storage.download(uri, tmp_path / "x.bin")  # HEAD first: a 403 with no body
    assert not (tmp_path / "x.bin").exists()
