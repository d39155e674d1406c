"""What the server stored: uploads carry a SHA-256 checksum (x-amz-checksum-sha256), an endpoint that refuses
those headers still works, verify_stored sees the stored bytes (not the client's description of them), and the
conditional writes behind publish's lock have one winner. Against the local S3 server over HTTP (moto), through a
proxy where a fault is needed, and on local folders."""

from __future__ import annotations

import base64
import hashlib
import os
import threading
from pathlib import Path

import pytest
from s3_proxy import NOT_IMPLEMENTED, Request, s3_proxy

from splatflow import storage


def _b64(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


@pytest.fixture
def base(s3_server: dict[str, str], request: pytest.FixtureRequest) -> str:
    return f"s3://{s3_server['bucket']}/{request.node.name}"


def test_uploads_send_their_sha256(base: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   s3_server: dict[str, str]) -> None:
    monkeypatch.setenv("SPLATFLOW_S3_MULTIPART_MB", "5")
    small, big = os.urandom(1000), os.urandom(11 << 20)
    (tmp_path / "big.bin").write_bytes(big)
    with s3_proxy(s3_server["endpoint"]) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        storage.write_bytes(f"{base}/small.bin", small)
        storage.upload(tmp_path / "big.bin", f"{base}/big.bin")
    puts = [r for r in proxy.seen if r.method == "PUT"]
    single = next(r for r in puts if r.path.endswith("/small.bin"))
    assert single.headers["x-amz-checksum-sha256"] == _b64(small)
    parts = [r for r in puts if "partNumber=" in r.path]
    assert len(parts) == 3 and all(r.headers["x-amz-checksum-sha256"] == _b64(r.body) for r in parts)
    assert storage.read_bytes(f"{base}/small.bin") == small


def test_an_endpoint_that_refuses_checksum_headers_still_works(base: str, monkeypatch: pytest.MonkeyPatch,
                                                               s3_server: dict[str, str],
                                                               caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(storage, "_no_checksum", set())

    def refuse(req: Request) -> tuple[int, bytes] | None:
        return NOT_IMPLEMENTED if "x-amz-checksum-sha256" in req.headers else None

    with s3_proxy(s3_server["endpoint"]) as proxy:
        proxy.hook = refuse
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        storage.write_bytes(f"{base}/a.bin", b"first")
        storage.write_bytes(f"{base}/b.bin", b"second")  # learned: no refused attempt this time
        assert storage.read_bytes(f"{base}/a.bin") == b"first"
    refused = [r for r in proxy.seen if r.method == "PUT" and "x-amz-checksum-sha256" in r.headers]
    assert len(refused) == 1 and "refused SHA-256 checksum headers" in caplog.text
    monkeypatch.setenv("SPLATFLOW_S3_CHECKSUM", "off")
    assert storage._checksum_args() == {}


def test_verify_stored_reads_what_the_server_holds(base: str, tmp_path: Path, s3_server: dict[str, str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import boto3

    data = os.urandom(3000)
    digest = hashlib.sha256(data).hexdigest()
    uri = storage.write_bytes(f"{base}/x.bin", data)
    assert storage.verify_stored(uri, digest, len(data))
    # the same metadata (the writer's claim) over different bytes: stat believes it, verify_stored does not
    key = storage.parse(uri).key
    tampered = bytearray(data)
    tampered[100] ^= 1
    boto3.client("s3").put_object(Bucket=s3_server["bucket"], Key=key, Body=bytes(tampered),
                                  Metadata={"sha256": digest})
    assert {k: v for k, v in storage.stat(uri).items() if k != "etag"} == {"size": len(data), "sha256": digest}
    assert not storage.verify_stored(uri, digest, len(data))
    # trusting the server's checksums (as on AWS): a multipart object's composite checksum is recomputed locally
    monkeypatch.setenv("SPLATFLOW_S3_MULTIPART_MB", "5")
    monkeypatch.setenv("SPLATFLOW_S3_TRUST_CHECKSUMS", "1")
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(12 << 20))
    uri = storage.upload(big, f"{base}/big.bin")
    assert storage.verify_stored(uri, storage.sha256_file(big), big.stat().st_size, local_path=big)
    assert not storage.verify_stored(uri, "0" * 64, big.stat().st_size, local_path=big)
    # local files are hashed
    local = tmp_path / "l.bin"
    local.write_bytes(data)
    assert storage.verify_stored(str(local), digest, len(data))
    local.write_bytes(bytes(tampered))
    assert not storage.verify_stored(str(local), digest, len(data))


@pytest.mark.parametrize("where", ["s3", "local"])
def test_create_object_has_one_winner(where: str, base: str, tmp_path: Path) -> None:
    root = base if where == "s3" else str(tmp_path / "locks")
    uri = f"{root}/run.lock"
    results: list[bool] = []
    barrier = threading.Barrier(8)

    def race(i: int) -> None:
        barrier.wait()
        results.append(storage.create_object(uri, f"writer {i}".encode()))

    threads = [threading.Thread(target=race, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 7 + [True]
    body = storage.read_bytes(uri)
    assert body.startswith(b"writer ")
    # replace only with the current tag
    found = storage.read_tagged(uri)
    assert found is not None and found[0] == body
    new_tag = storage.replace_object(uri, b"renewed", found[1])
    assert new_tag and storage.read_bytes(uri) == b"renewed"
    assert storage.replace_object(uri, b"stale writer", found[1]) is None
    assert storage.read_bytes(uri) == b"renewed"
    storage.delete(uri)
    assert storage.read_tagged(uri) is None and storage.replace_object(uri, b"x", new_tag) is None
    if where == "local":
        assert [p.name for p in (tmp_path / "locks").iterdir()] == []  # no temporary file left


def test_listings_skip_files_being_written(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text("{}")
    (tmp_path / ".a.json.x1y2.partial").write_text("{")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / ".b.old").write_text("")
    assert storage.list_uris(str(tmp_path)) == [str(tmp_path / "a.json")]
