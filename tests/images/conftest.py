"""Fixtures for the image tests (tests/images): the locally built stage images, run with podman or docker.

These tests run only with SPLATFLOW_IMAGES=1, which `make test-images` sets after building the images
(`make images-local`); elsewhere they skip with that reason. With SPLATFLOW_IMAGES=1 a missing engine or image
is a failure, not a skip. The images are the ones src/splatflow/spec.py names under SPLATFLOW_REGISTRY and
SPLATFLOW_IMAGE_TAG (the Makefile's LOCAL_REGISTRY and LOCAL_TAG).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip the image tests at collection unless SPLATFLOW_IMAGES=1: a skip in a fixture would come after the
    session fixtures that look for the images (pytest sets up wider-scoped fixtures first)."""
    if os.environ.get("SPLATFLOW_IMAGES") == "1":
        return
    skip = pytest.mark.skip(reason="image test: run `make test-images` (builds the stage images, sets "
                                   "SPLATFLOW_IMAGES=1)")
    for item in items:
        if Path(str(item.fspath)).is_relative_to(Path(__file__).parent):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def engine() -> str:
    """``podman`` or ``docker`` (``ENGINE`` wins), whichever built the images."""
    if os.environ.get("SPLATFLOW_IMAGES") != "1":
        pytest.skip("image test: run `make test-images` (builds the stage images, sets SPLATFLOW_IMAGES=1)")
    chosen = os.environ.get("ENGINE") or ("podman" if shutil.which("podman") else "docker")
    assert shutil.which(chosen), f"{chosen} is not installed (make podman-setup)"
    return chosen


@pytest.fixture(scope="session")
def stage_images(engine: str) -> dict[str, str]:
    """stage -> image, every one present in the engine."""
    from splatflow.spec import all_images

    images = all_images()
    for image in images.values():
        proc = subprocess.run([engine, "image", "inspect", image], capture_output=True, text=True)
        assert proc.returncode == 0, f"{image} is not built: make images-local"
    return images


@pytest.fixture(scope="session")
def docker_host(engine: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Docker-compatible API for the docker SDK (kfp.local's DockerRunner): ``DOCKER_HOST`` if set, else docker's
    own socket, else ``podman system service`` on a socket of its own for this session."""
    if os.environ.get("DOCKER_HOST"):
        yield os.environ["DOCKER_HOST"]
        return
    if engine == "docker":
        yield "unix:///var/run/docker.sock"
        return
    sock = tmp_path_factory.mktemp("podman") / "podman.sock"
    service = subprocess.Popen(["podman", "system", "service", "--time=0", f"unix://{sock}"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while not sock.exists():
            assert service.poll() is None, f"podman system service failed: {service.stderr.read().decode()[-2000:]}"
            assert time.monotonic() < deadline, "podman system service did not open its socket in 30 s"
            time.sleep(0.2)
        yield f"unix://{sock}"
    finally:
        service.terminate()
        try:
            service.wait(timeout=20)
        except subprocess.TimeoutExpired:
            service.kill()
            service.wait()
