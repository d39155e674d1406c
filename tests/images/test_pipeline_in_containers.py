"""The whole pipeline with every task in its stage image: kfp.local's DockerRunner through a Docker-compatible API
(podman's, in CI), the bundled sample photos, file:// output. Like the SubprocessRunner run (tests/pipeline/
test_local_run.py): a .sog, a viewer page, a run report and a webhook notification; a failing middle stage still
notifies, naming the stage and its error. Each task runs in its own image, as uid 10001, and secret-looking values
in the environment reach neither the outputs nor the logs."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import numpy as np
import pytest
from PIL import Image

from splatflow.spec import STAGE_NAMES as STAGES

ROOT = Path(__file__).resolve().parents[2]
TINY = {"quality": "tiny", "iterations": 10, "max_splats": 5000, "sh_degree": 1}
FAKE_SECRETS = {"AWS_SECRET_ACCESS_KEY": "fake/Secret+AccessKey-7Qz9Lm2Xv4",
                "SPLATFLOW_SMTP_PASSWORD": "fake-smtp-pw-3e8d1c"}
# what the run prints last: the publish result, or the StageError
RUN = """
import json, sys
from splatflow_kfp.pipelines.local import run_local
from splatflow.errors import StageError
a = json.loads(sys.argv[1])
try:
    run = run_local(a["source"], a["output"], runner="docker", verbose=True, **a["params"])
except StageError as exc:
    print("STAGE-ERROR " + str(exc))
    sys.exit(3)
print("PUBLISH " + json.dumps(run.publish))
"""


@pytest.fixture
def webhook(webhook_server: tuple[str, list[dict[str, Any]]]) -> tuple[str, list[dict[str, Any]]]:
    """The local webhook (conftest); the tasks share the host's network, so they reach it."""
    return webhook_server


def _run_in_containers(source: Path, output: Path, docker_host: str, webhook_url: str) -> tuple[int, str]:
    """``run_local(..., runner="docker")`` in a fresh process (the image names are fixed when the components are
    imported: SPLATFLOW_REGISTRY/SPLATFLOW_IMAGE_TAG from `make test-images`); (exit code, stdout + stderr)."""
    env = {name: value for name, value in os.environ.items()
           if not name.startswith(("SPLATFLOW_NOTIFY", "SPLATFLOW_SMTP", "SPLATFLOW_SNS", "SPLATFLOW_PUBLIC"))}
    env.update(FAKE_SECRETS, DOCKER_HOST=docker_host, SPLATFLOW_WEBHOOK_URL=webhook_url,
               PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT)]))
    proc = subprocess.run([sys.executable, "-c", RUN, json.dumps({"source": str(source), "output": str(output),
                                                                   "params": TINY})],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    return proc.returncode, re.sub(r"\x1b\[[0-9;]*m", "", proc.stdout + proc.stderr)


def _images_by_task(log: str) -> dict[str, str]:
    """task -> the image kfp.local's DockerRunner ran it in (``Executing task 'x'`` ... ``Found image 'y'``)."""
    found: dict[str, str] = {}
    task = None
    for line in log.splitlines():
        if m := re.search(r"Executing task '([\w-]+)'", line):
            task = m.group(1)
        elif (m := re.search(r"Found image '([^']+)'", line)) and task:
            found[task] = m.group(1)
            task = None
    return found


def _path(uri: str) -> Path:
    return Path(unquote(urlparse(uri).path))


def _assert_no_secret(folder: Path, log: str) -> None:
    files = [p for p in folder.rglob("*") if p.is_file()]
    assert files and "Executing task" in log  # the check is not vacuous
    for name, value in FAKE_SECRETS.items():
        assert value not in log, f"{name} leaked into the log"
        for path in files:
            assert value.encode() not in path.read_bytes(), f"{name} leaked into {path}"


def test_whole_pipeline_runs_in_the_stage_images(tmp_path: Path, data_dir: Path, docker_host: str,
                                                 stage_images: dict[str, str],
                                                 webhook: tuple[str, list[dict[str, Any]]]) -> None:
    url, received = webhook
    photos = tmp_path / "photos" / "lund"  # the first 12 sample photos: the smoke run's SfM in half the time
    photos.mkdir(parents=True)
    for photo in sorted((data_dir / "photos" / "lund").glob("*.jpg"))[:12]:
        photos.joinpath(photo.name).write_bytes(photo.read_bytes())
    code, log = _run_in_containers(photos, tmp_path / "run", docker_host, url)
    assert code == 0, log[-6000:]
    publish = json.loads(log.split("PUBLISH ", 1)[1].splitlines()[0])

    # every task ran in its own stage image
    assert _images_by_task(log) == {**stage_images, "ingest-fingerprint": stage_images["ingest"]}, log[-6000:]
    assert set(stage_images) == set(STAGES)

    sog = _path(publish["content_uri"])
    assert sog.suffix == ".sog" and sog.stat().st_size > 0
    assert sog.parent.parent == tmp_path / "run" / "lund"
    manifest = json.loads(_path(publish["manifest_uri"]).read_text())
    assert manifest["run_id"] == sog.parent.name
    assert sorted(p.stem for p in (sog.parent / "reports").glob("*.json")) == ["compress", "ingest", "sfm", "train"]
    with zipfile.ZipFile(sog) as zf:
        bundle = {name: zf.read(name) for name in zf.namelist()}
    assert "meta.json" in bundle and {p.name: p.read_bytes() for p in (sog.parent / "sog").iterdir()} == bundle
    train_report = json.loads((sog.parent / "reports" / "train.json").read_text())
    assert train_report["iterations"] == TINY["iterations"] and train_report["device"] == "cpu"
    assert _path(publish["viewer_uri"]).is_file()
    assert 0 < manifest["summary"]["splats"] <= TINY["max_splats"]
    if os.getuid() == 0:  # a rootful engine maps container uids 1:1 (rootless engines shift them)
        owners = {p.stat().st_uid for p in sog.parent.rglob("*")} | {sog.stat().st_uid}
        assert owners == {10001}, f"published files owned by {owners}, not the images' user"

    # the exit handler (in the notify image) reached the webhook on the host
    assert len(received) == 1
    text = json.dumps(received[0])
    assert received[0]["text"].endswith("splatflow: lund published") and "failed" not in text.lower()
    assert manifest["run_id"] in text and sog.name in text
    assert not list((tmp_path / "run").glob(".splatflow/runs/*/failed/*.json"))
    _assert_no_secret(tmp_path / "run", log + json.dumps(received))


def test_a_failing_task_in_a_container_still_notifies_with_its_stage_and_error(
        tmp_path: Path, docker_host: str, stage_images: dict[str, str],
        webhook: tuple[str, list[dict[str, Any]]]) -> None:
    """Sharp but unrelated images pass ingest and make sfm fail inside its container: notify (in its own image)
    still runs and names sfm and the stage's own error."""
    url, received = webhook
    photos = tmp_path / "noise"
    photos.mkdir()
    rng = np.random.default_rng(7)
    for i in range(4):
        Image.fromarray((rng.random((240, 320, 3)) * 255).astype(np.uint8)).save(photos / f"n{i}.jpg", quality=90)

    code, log = _run_in_containers(photos, tmp_path / "run", docker_host, url)
    assert code == 3 and "STAGE-ERROR" in log and "failed at sfm" in log.split("STAGE-ERROR", 1)[1], log[-6000:]
    ran = _images_by_task(log)
    assert ran == {**{stage: stage_images[stage] for stage in ("ingest", "sfm", "notify")},
                   "ingest-fingerprint": stage_images["ingest"]}, ran

    assert len(received) == 1
    message = received[0]
    assert message["text"].endswith("splatflow: noise failed at sfm")
    failure = message["blocks"][-1]["text"]["text"]
    assert failure.startswith("*Failed stage:* sfm\n```SfmError: structure from motion registered ")
    assert not list((tmp_path / "run").glob("*/*/manifest.json")), "a failed run must not publish"
    (record,) = (tmp_path / "run").glob(".splatflow/runs/*/failed/*.json")
    assert record.name == "sfm.json" and json.loads(record.read_text())["stage"] == "sfm"
    _assert_no_secret(tmp_path / "run", log + json.dumps(received))
