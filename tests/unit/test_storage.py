"""storage.py against the local S3 server over HTTP (moto server mode) and local paths."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from splatflow import storage
from splatflow.errors import InputError, StorageError

boto3 = pytest.importorskip("boto3")


@pytest.fixture()
def s3(s3_server: dict[str, str], request: pytest.FixtureRequest) -> str:
    """A fresh s3:// prefix per test in the session bucket."""
    return f"s3://{s3_server['bucket']}/{request.node.name}"


def _tree(root: Path) -> dict[str, bytes]:
    files = {
        "meta.json": b'{"version": 2}',
        "means_l.webp": os.urandom(3000),
        "sub/dir/shN_labels.webp": os.urandom(1234),
        "empty.bin": b"",
    }
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return files


def test_parse_uris() -> None:
    loc = storage.parse("s3://bucket/a/b.sog")
    assert (loc.scheme, loc.bucket, loc.key) == ("s3", "bucket", "a/b.sog")
    assert storage.parse("file:///tmp/x%20y").path == Path("/tmp/x y")
    plain = storage.parse("rel/dir")
    assert plain.scheme == "file" and plain.plain and plain.path == Path("rel/dir")
    assert storage.join("s3://b/out/", "/scene/", "run") == "s3://b/out/scene/run"
    for bad in ("gs://b/k", "http://host/x", "s3:///key", "file://otherhost/x", ""):
        with pytest.raises(InputError):
            storage.parse(bad)


@pytest.mark.parametrize("style", ["plain", "file"])
def test_local_round_trip(tmp_path: Path, style: str) -> None:
    src = tmp_path / "src"
    files = _tree(src)
    root = tmp_path / "store"
    base = str(root) if style == "plain" else root.as_uri()
    uris = storage.upload_dir(src, base + "/scene")
    assert len(uris) == len(files)
    listed = storage.list_uris(base + "/scene")
    assert listed == sorted(uris)
    assert all(u.startswith("file://") == (style == "file") for u in listed)
    got = storage.download_prefix(base + "/scene", tmp_path / "back")
    assert {p.relative_to(tmp_path / "back").as_posix(): p.read_bytes() for p in got} == files
    storage.write_bytes(base + "/x/y.json", b"{}")
    assert storage.read_bytes(base + "/x/y.json") == b"{}"
    assert storage.exists(base + "/x/y.json")
    storage.delete(base + "/x/y.json")
    assert not storage.exists(base + "/x/y.json")
    storage.delete(base + "/x/y.json")  # deleting a missing object is fine
    assert storage.presign(base + "/scene/meta.json", 60) == (root / "scene/meta.json").resolve().as_uri()


def test_local_errors(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="does not exist"):
        storage.download(str(tmp_path / "missing"), tmp_path / "x")
    with pytest.raises(StorageError, match="empty or does not exist"):
        storage.download_prefix(str(tmp_path / "missing"), tmp_path / "x")
    with pytest.raises(InputError, match="does not exist"):
        storage.upload(tmp_path / "missing", str(tmp_path / "y"))
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_s3_file_round_trip(s3: str, tmp_path: Path) -> None:
    data = os.urandom(200_000)
    src = tmp_path / "a.sog"
    src.write_bytes(data)
    uri = storage.upload(src, s3 + "/a.sog")
    assert uri == s3 + "/a.sog"
    assert storage.exists(uri) and not storage.exists(s3 + "/nope")
    st = storage.stat(uri)
    assert st == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "etag": st["etag"]}
    assert st["etag"] == hashlib.md5(data).hexdigest()  # a single-part upload: the ETag is the content's MD5
    out = storage.download(uri, tmp_path / "deep" / "b.sog")
    assert out.read_bytes() == data
    assert storage.read_bytes(uri) == data
    storage.delete(uri)
    assert not storage.exists(uri)


def test_s3_folder_round_trip_and_listing(s3: str, tmp_path: Path) -> None:
    files = _tree(tmp_path / "src")
    uris = storage.upload_dir(tmp_path / "src", s3 + "/folder/")
    assert sorted(uris) == sorted(f"{s3}/folder/{rel}" for rel in files)
    # a sibling whose name starts with the same letters is not part of the folder
    storage.write_bytes(s3 + "/folder-2/x", b"x")
    assert storage.list_uris(s3 + "/folder") == sorted(uris)
    got = storage.download_prefix(s3 + "/folder", tmp_path / "back")
    assert {p.relative_to(tmp_path / "back").as_posix(): p.read_bytes() for p in got} == files
    # content types let a browser open a published page straight from the bucket
    head = boto3.client("s3").head_object(Bucket=storage.parse(s3).bucket,
                                          Key=storage.parse(s3 + "/folder/meta.json").key)
    assert head["ContentType"] == "application/json"


def test_s3_bytes_and_presign(s3: str) -> None:
    import urllib.request

    uri = storage.write_bytes(s3 + "/latest.json", b'{"run": 1}', cache_control="no-cache")
    assert storage.read_bytes(uri) == b'{"run": 1}'
    url = storage.presign(uri, 120)
    assert "X-Amz-Expires=120" in url and "/latest.json" in url
    with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 - loopback test server
        assert resp.read() == b'{"run": 1}'
    with pytest.raises(InputError, match="out of range"):
        storage.presign(uri, 0)


def test_s3_tampered_object_is_detected(s3: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An object whose bytes no longer match the recorded SHA-256 is refused after the retries."""
    loc = storage.parse(s3 + "/t.bin")
    boto3.client("s3").put_object(Bucket=loc.bucket, Key=loc.key, Body=b"evil",
                                  Metadata={"sha256": hashlib.sha256(b"good").hexdigest()})
    monkeypatch.setenv("SPLATFLOW_S3_TRANSFER_ATTEMPTS", "1")
    with pytest.raises(StorageError, match="SHA-256"):
        storage.download(str(loc), tmp_path / "t.bin")
    with pytest.raises(StorageError, match="SHA-256"):
        storage.read_bytes(str(loc))
    assert not (tmp_path / "t.bin").exists()


def test_s3_clear_errors(s3_server: dict[str, str], s3: str, tmp_path: Path,
                         monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(StorageError, match="no such object") as err:
        storage.download(s3 + "/missing.sog", tmp_path / "m")
    assert err.value.hint and "key" in err.value.hint
    assert not (tmp_path / "m").exists()
    with pytest.raises(StorageError, match="bucket 'no-such-bucket' does not exist") as err:
        storage.download("s3://no-such-bucket/x", tmp_path / "m")
    assert "aws s3 mb" in (err.value.hint or "")
    with pytest.raises(StorageError, match="does not exist"):
        storage.exists("s3://no-such-bucket/x")
    with pytest.raises(StorageError, match="does not exist"):
        storage.write_bytes("s3://no-such-bucket/x", b"1")
    with pytest.raises(StorageError, match="empty or does not exist"):
        storage.download_prefix(s3 + "/nothing-here", tmp_path / "n")


def test_s3_bad_endpoint(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    monkeypatch.setenv("SPLATFLOW_S3_MAX_ATTEMPTS", "1")
    with pytest.raises(StorageError, match="cannot be reached") as err:
        storage.read_bytes("s3://b/k")
    assert "AWS_ENDPOINT_URL" in (err.value.hint or "")


def test_object_uris_need_a_key(s3_server: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for bad in (f"s3://{s3_server['bucket']}", f"s3://{s3_server['bucket']}/", f"s3://{s3_server['bucket']}/dir/"):
        with pytest.raises(InputError, match="not an object"):
            storage.read_bytes(bad)
        with pytest.raises(InputError, match="not an object"):
            storage.write_bytes(bad, b"x")
    monkeypatch.setenv("SPLATFLOW_S3_MULTIPART_MB", "1")
    (tmp_path / "f").write_bytes(b"x")
    with pytest.raises(InputError, match="minimum part size"):
        storage.upload(tmp_path / "f", f"s3://{s3_server['bucket']}/f")


def test_irsa_web_identity_through_the_default_chain(s3_server: dict[str, str], monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: Path) -> None:
    """EKS IRSA: no keys in the environment, only a web identity token and a role; boto3's default chain trades
    them for temporary credentials at STS (here the local server's STS, via AWS_ENDPOINT_URL)."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    token = tmp_path / "token"
    token.write_text("eyJhbGciOiJSUzI1NiJ9.e30.c2ln")  # the projected service-account token
    monkeypatch.setenv("AWS_WEB_IDENTITY_TOKEN_FILE", str(token))
    monkeypatch.setenv("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/splatflow-pipeline")
    monkeypatch.setenv("AWS_ROLE_SESSION_NAME", "splatflow-test")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    uri = f"s3://{s3_server['bucket']}/irsa/x.json"
    storage.write_bytes(uri, b"{}")
    assert storage.read_bytes(uri) == b"{}"
    creds = storage.client()._request_signer._credentials
    assert creds.method == "assume-role-with-web-identity"
    assert creds.access_key != s3_server["AWS_ACCESS_KEY_ID"]


def test_checksum_headers_off_for_custom_endpoints(s3_server: dict[str, str], monkeypatch: pytest.MonkeyPatch,
                                                  tmp_path: Path) -> None:
    """S3-compatible servers (MinIO, Ceph, SeaweedFS) often refuse botocore's default CRC headers: with a custom
    endpoint they are sent only when required, unless the standard AWS variable asks for them."""
    cfg = storage.client().meta.config
    assert (cfg.request_checksum_calculation, cfg.response_checksum_validation) == ("when_required",) * 2
    monkeypatch.setenv("AWS_REQUEST_CHECKSUM_CALCULATION", "when_supported")
    assert storage.client().meta.config.request_checksum_calculation == "when_supported"
    (tmp_path / "a").write_bytes(b"abc" * 1000)
    uri = storage.upload(tmp_path / "a", f"s3://{s3_server['bucket']}/crc/a")  # and it still works with them
    assert storage.read_bytes(uri) == b"abc" * 1000
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    monkeypatch.delenv("AWS_REQUEST_CHECKSUM_CALCULATION")
    assert storage.client().meta.config.request_checksum_calculation == "when_supported"  # AWS: the default


# ---------------------------------------------------------------------------- bucket reachability, endpoint scoping
def test_check_bucket(s3_server: dict[str, str], monkeypatch: pytest.MonkeyPatch, denying_endpoint: str) -> None:
    """A pipeline root names a bucket, maybe a prefix, rarely an object: each form is checked with a HEAD on the
    bucket; a missing bucket, denied access and an unreachable endpoint each get their own message and fix."""
    bucket = s3_server["bucket"]
    for uri in (f"s3://{bucket}", f"s3://{bucket}/", f"s3://{bucket}/pipeline-root/", f"s3://{bucket}/a/b.json"):
        assert storage.check_bucket(uri) == s3_server["endpoint"], uri
    with pytest.raises(StorageError, match="bucket 'no-such-bucket-x' does not exist at http://127.0.0.1") as err:
        storage.check_bucket("s3://no-such-bucket-x/root/")
    assert "aws s3 mb s3://no-such-bucket-x" in (err.value.hint or "")
    with pytest.raises(InputError, match="not an s3:// URI"):
        storage.check_bucket("/tmp/pipeline-root")

    monkeypatch.setenv("SPLATFLOW_S3_MAX_ATTEMPTS", "1")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", denying_endpoint)
    with pytest.raises(StorageError, match="access denied") as err:
        storage.check_bucket(f"s3://{bucket}/root")
    assert "s3:ListBucket" in (err.value.hint or "") and denying_endpoint in err.value.message
    import socket

    with socket.socket() as s:  # bound, never listening: connections are refused
        s.bind(("127.0.0.1", 0))
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{s.getsockname()[1]}")
        with pytest.raises(StorageError, match="cannot be reached") as err:
            storage.check_bucket(f"s3://{bucket}")
    assert "AWS_ENDPOINT_URL_S3" in (err.value.hint or "")
    assert s3_server["AWS_SECRET_ACCESS_KEY"] not in str(err.value)


def test_endpoint_is_scoped_per_service(monkeypatch: pytest.MonkeyPatch) -> None:
    """S3 takes AWS_ENDPOINT_URL_S3, then AWS_ENDPOINT_URL; SNS never takes the S3 one (MinIO storage with AWS
    SNS notifications), only AWS_ENDPOINT_URL_SNS or the global AWS_ENDPOINT_URL."""
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL_SNS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://minio.local:9000")
    assert storage.client("s3").meta.endpoint_url == "http://minio.local:9000"
    assert storage.endpoint_url() == "http://minio.local:9000" and storage.endpoint_url("sns") is None
    assert storage.client("sns", region="us-west-2").meta.endpoint_url == "https://sns.us-west-2.amazonaws.com"
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://everything.local:4566")
    assert storage.client("s3").meta.endpoint_url == "http://minio.local:9000"  # the S3-only one wins
    assert storage.client("sns", region="us-west-2").meta.endpoint_url == "http://everything.local:4566"
    monkeypatch.setenv("AWS_ENDPOINT_URL_SNS", "http://sns.local:4575")
    assert storage.client("sns", region="us-west-2").meta.endpoint_url == "http://sns.local:4575"
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3")
    assert storage.client("s3").meta.endpoint_url == "http://everything.local:4566"


def test_list_objects_sizes_limit_and_selected_download(s3: str, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    files = _tree(src)
    storage.upload_dir(src, s3)
    listed = storage.list_objects(s3)
    assert [(storage.relative_name(o.uri, s3), o.size) for o in listed] == sorted(
        (rel, len(data)) for rel, data in files.items())
    assert [o.uri for o in listed] == storage.list_uris(s3)
    # S3 listings carry each object's ETag (the content's MD5 for these single-part uploads); files carry none
    assert {storage.relative_name(o.uri, s3): o.etag for o in listed} == {
        rel: hashlib.md5(data).hexdigest() for rel, data in files.items()}
    local = storage.list_objects(str(src))
    assert {Path(o.uri).relative_to(src).as_posix(): o.size for o in local} == {k: len(v) for k, v in files.items()}
    with pytest.raises(InputError, match="more than 3 objects"):
        storage.list_objects(s3, max_count=3)
    with pytest.raises(InputError, match="more than 2 objects"):
        storage.list_objects(str(src), max_count=2)
    assert len(storage.list_objects(s3, max_count=4)) == 4
    pick = [o.uri for o in listed if o.uri.endswith(".webp")]
    got = storage.download_prefix(s3, tmp_path / "dl", only=pick)
    assert sorted(p.relative_to(tmp_path / "dl").as_posix() for p in got) == ["means_l.webp", "sub/dir/shN_labels.webp"]
    assert sorted(p.name for p in (tmp_path / "dl").rglob("*") if p.is_file()) == ["means_l.webp", "shN_labels.webp"]
    with pytest.raises(InputError, match="not below"):
        storage.download_prefix(s3 + "/sub", tmp_path / "dl2", only=[listed[0].uri])
