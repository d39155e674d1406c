"""Shared test fixtures: sample data, a local S3-compatible server over HTTP, the reference SOG reader.

Markers: ``slow`` tests run only with SPLATFLOW_SLOW=1 (or ``-m slow``); ``gpu`` tests need CUDA;
``cluster`` tests need what they name: ``cluster`` (or ``cluster(needs="kube")``) a kube context (a KUBECONFIG
file or ~/.kube/config), ``cluster(needs="kfp")`` KFP_HOST. Skips say exactly why.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"
SHARED_DATA = ROOT.parent / "shared" / "data"
LUND_12 = sorted((DATA / "photos" / "lund").glob("*.jpg"))[:12]
"""The first 12 of the 29 bundled lund photos (800 px): the SfM tests' set (a reconstruction in under a minute)."""


CLUSTER_NEEDS = ("kube", "kfp")


def cluster_skip_reason(needs: str, env: Mapping[str, str], home: Path) -> str | None:
    """Why a ``cluster`` test that needs ``needs`` ("kube": a kube context; "kfp": KFP_HOST) cannot run here, or
    None when it can."""
    if needs not in CLUSTER_NEEDS:
        raise ValueError(f"cluster(needs={needs!r}): use one of {CLUSTER_NEEDS}")
    if needs == "kfp":
        return None if env.get("KFP_HOST") else "needs a Kubeflow Pipelines API: set KFP_HOST"
    configs = [Path(p) for p in env.get("KUBECONFIG", "").split(os.pathsep) if p] or [home / ".kube" / "config"]
    if any(p.is_file() for p in configs):
        return None
    return f"needs a kube context: no kubeconfig at {os.pathsep.join(map(str, configs))} (set KUBECONFIG)"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    markexpr = config.getoption("-m") or ""
    run_slow = os.environ.get("SPLATFLOW_SLOW") == "1" or "slow" in markexpr
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except Exception:  # pragma: no cover - torch is a core dependency
        has_cuda = False
    for item in items:
        if "slow" in item.keywords and not run_slow:
            item.add_marker(pytest.mark.skip(reason="slow test: set SPLATFLOW_SLOW=1 to run it"))
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU"))
        cluster = item.get_closest_marker("cluster")
        if cluster is not None:
            reason = cluster_skip_reason(cluster.kwargs.get("needs", "kube"), os.environ, Path.home())
            if reason:
                item.add_marker(pytest.mark.skip(reason=reason))


def data_file(rel: str) -> Path:
    """A sample file: from the repo's data/ if bundled, else from ../shared/data; skip if neither has it."""
    for base in (DATA, SHARED_DATA):
        p = base / rel
        if p.exists():
            return p
    pytest.skip(f"sample file {rel} is not in data/ or ../shared/data")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The repo's bundled sample data folder."""
    return DATA


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (larger real files); tests that need it skip when it is absent."""
    if not SHARED_DATA.exists():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA


@pytest.fixture(scope="session")
def splat_paths() -> dict[str, Path]:
    """name -> path of every real splat PLY available (bundled ones always, shared ones when present)."""
    out = {p.stem: p for p in sorted((DATA / "splats").glob("*.ply"))}
    if (SHARED_DATA / "splats").exists():
        out.update({p.stem: p for p in sorted((SHARED_DATA / "splats").glob("*.ply")) if p.stem not in out})
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def s3_server() -> Iterator[dict[str, str]]:
    """A local S3-compatible server over HTTP (moto server mode), with a bucket.

    Yields {"endpoint": "http://127.0.0.1:PORT", "bucket": NAME, "region": ...}; sets the standard AWS
    environment variables (dummy credentials, AWS_ENDPOINT_URL) for the session so code under test reaches it
    exactly as it would reach MinIO.
    """
    boto3 = pytest.importorskip("boto3")
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    env = {
        "AWS_ACCESS_KEY_ID": "testing-access-key",
        "AWS_SECRET_ACCESS_KEY": "testing-secret-key",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
    }
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    bucket = "splatflow-test"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
    try:
        yield {"endpoint": endpoint, "bucket": bucket, "region": "us-east-1", **env}
    finally:
        server.stop()
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="session")
def splat_transform() -> Path:
    """Path of PlayCanvas's `splat-transform` CLI (npm, installed by `make install` / .ci/run)."""
    found = ROOT / "node_modules" / ".bin" / "splat-transform"
    if not found.exists():
        which = shutil.which("splat-transform")
        if which is None:
            pytest.fail("splat-transform not installed: run `npm ci` (make install does it)")
        found = Path(which)
    out = subprocess.run([str(found), "--version"], capture_output=True, text=True, check=True)
    assert "3.10.2" in out.stdout + out.stderr, out.stdout
    return found


@pytest.fixture(scope="session")
def sample_sog(splat_transform: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small real .sog (data/splats/guitar.ply, 90,854 splats, SH degree 0) written by PlayCanvas's own
    splat-transform: a publish / viewer fixture independent of our codec (about 8 s, once per session)."""
    out = tmp_path_factory.mktemp("sample-sog") / "guitar.sog"
    subprocess.run([str(splat_transform), "-q", str(DATA / "splats" / "guitar.ply"), str(out)], check=True,
                   capture_output=True, timeout=300)
    return out


@pytest.fixture(scope="session")
def lund_sfm(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, object]]:
    """One SfM run shared by the session: the first 12 bundled lund photos plus one truncated JPEG (which must be
    skipped and reported), at 800 px and 4096 features, one thread (about 15-60 s). Returns (sfm folder, report); the
    folder has the layout `splatflow sfm` writes: images/ (undistorted), sparse/0/*.bin, sfm-report.json."""
    pytest.importorskip("pycolmap")
    from splatflow.stages.sfm import sfm

    src = tmp_path_factory.mktemp("lund") / "photos"
    src.mkdir()
    for photo in LUND_12:
        shutil.copyfile(photo, src / photo.name)
    data = (src / "05.jpg").read_bytes()
    (src / "13_truncated.jpg").write_bytes(data[: len(data) // 2])
    out = src.parent / "sfm"
    # one thread: a reproducible reconstruction. With all threads, about one run in four on these photos registers
    # the first image (01.jpg, the end of the street) far off the camera path, which
    # test_points_reproject_into_the_undistorted_images catches (a known SfM weakness: README, Ingest and SfM)
    return out, sfm(src, out, max_side=800, max_features=4096, num_threads=1)


@pytest.fixture
def denying_endpoint() -> Iterator[str]:
    """The URL of an S3-like HTTP endpoint that answers every request 403 (a bucket this user may not read)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def _deny(self) -> None:
            self.send_response(403)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_HEAD = do_GET = _deny  # noqa: N815 - http.server's names

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def webhook_server() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A local Slack-compatible webhook on 127.0.0.1: yields (its URL, the JSON bodies received so far)."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            received.append(json.loads(body))
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hooks/test", received
    finally:
        server.shutdown()
        server.server_close()
