"""The published viewer page in a real headless Chromium (Debian's chromium, software WebGL via SwiftShader):
the page loads the published .sog from its own folder, draws a non-blank picture with the scene framed by the
fitted camera, and fetches nothing from anywhere else. Served two ways: a plain HTTP server on the published
folder (a .sog written by our codec), and the S3 bucket itself (a .sog written by PlayCanvas's splat-transform;
the objects' Content-Types must let a browser run the page)."""

from __future__ import annotations

import contextlib
import functools
import http.server
import io
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import pytest

from splatflow.stages.publish import publish

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--no-sandbox", "--headless"]
SIZE = {"width": 480, "height": 360}


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    playwright = pytest.importorskip("playwright.sync_api")
    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is not installed: apt-get install -y chromium (.ci/run does it)")
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def our_sog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The guitar sample compressed by OUR codec (Morton order: the fast path, same format), so the browser test
    runs the chain compress -> publish -> PlayCanvas's viewer end to end."""
    from splatflow.stages.compress import compress

    out = tmp_path_factory.mktemp("ours") / "guitar.sog"
    compress(ROOT / "data" / "splats" / "guitar.ply", out, sort="morton", drop_invalid=True)
    return out


@pytest.fixture(scope="module")
def published(our_sog: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Our .sog published to a local folder (the viewer camera fitted to its decoded splats); the run folder."""
    out = tmp_path_factory.mktemp("published")
    publish(str(out), scene="guitar", run_id="run-1", files={"sog": our_sog}, reports={})
    return out / "guitar" / "run-1"


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass


@contextlib.contextmanager
def _serving(folder: Path) -> Iterator[str]:
    """``folder`` on a loopback HTTP server; yields its base URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture()
def served(published: Path) -> Iterator[str]:
    """The run folder on a loopback HTTP server; yields its base URL."""
    with _serving(published) as url:
        yield url


def _render(browser: Any, url: str) -> tuple[np.ndarray, list[str], list[str]]:
    """Open ``url``, wait for the viewer's first drawn frame, screenshot. Returns (H, W, 3) uint8 pixels, every
    requested URL and every failed response (status >= 400) other than the favicon."""
    from PIL import Image

    page = browser.new_page(viewport=SIZE)
    requests: list[str] = []
    failed: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.on("response", lambda r: failed.append(f"{r.status} {r.url}")
            if r.status >= 400 and not r.url.endswith("/favicon.ico") else None)
    # the viewer calls window.firstFrame() once the first frame with the splats is rendered
    page.add_init_script("window.__firstFrame = 0; window.firstFrame = () => { window.__firstFrame = 1; };")
    try:
        page.goto(url)
        page.wait_for_function("window.__firstFrame === 1", timeout=45_000)
        page.wait_for_timeout(1500)  # let the sort settle on the software rasterizer
        png = page.screenshot()
    finally:
        page.close()
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")), requests, failed


def _check_picture(pixels: np.ndarray) -> None:
    """A real picture of a framed object: many colours, a textured object (not a flat shape), neither a speck nor
    filling the view, centred and wholly inside the frame (the fitted camera)."""
    colours = len(np.unique(pixels.reshape(-1, 3), axis=0))
    assert colours > 1000, f"only {colours} distinct colours: blank or flat frame"
    lit = pixels.max(axis=2) > 24  # the default background is black
    coverage = lit.mean()
    assert 0.005 < coverage < 0.9, f"object covers {coverage:.1%} of the frame"
    assert pixels[lit].std() > 10, "the object is one flat colour"
    ys, xs = np.nonzero(lit)
    cy, cx = ys.mean() / pixels.shape[0], xs.mean() / pixels.shape[1]
    assert 0.25 < cx < 0.75 and 0.2 < cy < 0.8, f"object centred at ({cx:.2f}, {cy:.2f})"
    rows = np.nonzero(lit.sum(axis=1) >= 3)[0]  # rows/columns with a few lit pixels: stray floaters do not count
    cols = np.nonzero(lit.sum(axis=0) >= 3)[0]
    h, w = lit.shape
    assert rows[0] > 0 and rows[-1] < h - 1 and cols[0] > 0 and cols[-1] < w - 1, "the object is cut by the frame"


def test_viewer_page_draws_the_scene(browser: Any, served: str) -> None:
    # ?webgl: SwiftShader has no WebGPU; ?noui&noanim: a still frame at the fitted camera; ?content= as documented
    pixels, requests, failed = _render(browser, f"{served}/index.html?webgl&noui&noanim&content=guitar.sog")
    _check_picture(pixels)
    assert not failed, failed
    hosts = {urlparse(u).netloc for u in requests if not u.startswith(("blob:", "data:"))}
    assert hosts == {urlparse(served).netloc}, f"the page fetched from elsewhere: {hosts}"
    assert any(u.endswith("/guitar.sog") for u in requests) and any(u.endswith("/settings.json") for u in requests)


def test_viewer_page_from_the_bucket(browser: Any, s3_server: dict[str, str], sample_sog: Path) -> None:
    """Published to S3 and opened straight from the (local) S3 endpoint with a public-read policy on the prefix,
    with no content parameter (the page's bootstrap names its content): the module scripts only run when the
    objects carry JavaScript/CSS/HTML Content-Types."""
    import boto3

    bucket = s3_server["bucket"]
    res = publish(f"s3://{bucket}/browser", scene="guitar", run_id="r", files={"sog": sample_sog}, reports={})
    policy = {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
        "Resource": f"arn:aws:s3:::{bucket}/browser/*"}]}
    boto3.client("s3").put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy))
    try:
        url = f"{s3_server['endpoint']}/{bucket}/browser/guitar/r/index.html?webgl&noui&noanim"
        assert res["viewer_uri"] == f"s3://{bucket}/browser/guitar/r/index.html"
        pixels, requests, failed = _render(browser, url)
    finally:
        boto3.client("s3").delete_bucket_policy(Bucket=bucket)
    assert not failed, failed
    assert any(u.endswith("/browser/guitar/r/guitar.sog") for u in requests)
    _check_picture(pixels)


def test_the_engine_draws_turned_frames_as_the_source_frames(browser: Any, tmp_path: Path) -> None:
    """The default output stores each splat in the frame nearest the identity (scales permuted with the axes):
    PlayCanvas's engine draws it as the same scene as an output that keeps the source's frames, while turning
    the frames without permuting the scales (a different scene) shows."""
    from dataclasses import replace

    import torch

    from splatflow.frames import CUBE, qmul
    from splatflow.io.ply import read_ply
    from splatflow.metrics import psnr
    from splatflow.sog.bundle import write_files
    from splatflow.sog.encode import Precision, encode_cloud

    cloud = read_ply(ROOT / "data" / "splats" / "guitar.ply")
    quarter = CUBE[[9]].expand(len(cloud), 4)               # a quarter turn about z
    wrong = replace(cloud, quats=qmul(torch.from_numpy(cloud.quats.astype(np.float64)), quarter).numpy()
                    .astype(np.float32))
    cases = {"turned": (cloud, Precision()), "source": (cloud, Precision(canonical_rotation=False)),
             "wrong": (wrong, Precision(canonical_rotation=False))}
    pixels = {}
    for name, (c, pr) in cases.items():
        sog = write_files(tmp_path / f"{name}.sog", encode_cloud(c, device="cpu", precision=pr).files)
        publish(str(tmp_path / name), scene="guitar", run_id="r", files={"sog": sog}, reports={})
        with _serving(tmp_path / name / "guitar" / "r") as url:
            pixels[name] = _render(browser, f"{url}/index.html?webgl&noui&noanim")[0].astype(np.float32) / 255
    _check_picture((pixels["turned"] * 255).astype(np.uint8))
    same, other = psnr(pixels["turned"], pixels["source"]), psnr(pixels["wrong"], pixels["source"])
    assert same > 55.0 and other < 45.0, (same, other)
