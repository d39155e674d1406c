"""The whole pipeline under kfp.local (SubprocessRunner, CPU): the sample photos in, a .sog + viewer + report out,
and a notification over a real HTTP webhook, on success and when a middle stage fails (naming the stage and its
error). Secret-looking values in the run's environment must reach neither the outputs nor the logs."""

from __future__ import annotations

import json
import shutil
import subprocess
import zipfile
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import numpy as np
import pytest
from PIL import Image

from splatflow.errors import StageError

# Runs in CI: the smallest settings that still go through every stage (about a minute on an idle 2-core machine).
TINY = {"quality": "tiny", "iterations": 10, "max_splats": 5000, "sh_degree": 1}
# What a careless stage or log line could leak; every task inherits this environment under kfp.local.
FAKE_SECRETS = {"AWS_SECRET_ACCESS_KEY": "fake/Secret+AccessKey-7Qz9Lm2Xv4",
                "SPLATFLOW_SMTP_PASSWORD": "fake-smtp-pw-3e8d1c"}


@pytest.fixture
def secrets_in_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for name, value in FAKE_SECRETS.items():
        monkeypatch.setenv(name, value)
    return FAKE_SECRETS


def _assert_no_secret(folder: Path, captured: str, secrets: dict[str, str]) -> None:
    """No secret value in any file under ``folder`` (reports, manifest, task outputs, logs) or in ``captured``."""
    files = [p for p in folder.rglob("*") if p.is_file()]
    assert files and "Running pipeline" in captured  # the run's logs were captured: the check is not vacuous
    for name, value in secrets.items():
        assert value not in captured, f"{name} leaked into the output"
        for path in files:
            assert value.encode() not in path.read_bytes(), f"{name} leaked into {path}"


@pytest.fixture
def webhook(monkeypatch: pytest.MonkeyPatch, webhook_server: tuple[str, list[dict[str, Any]]]
            ) -> list[dict[str, Any]]:
    """The local webhook (conftest) with SPLATFLOW_WEBHOOK_URL pointing at it; the JSON bodies received."""
    url, received = webhook_server
    for name in ("SPLATFLOW_NOTIFY_TARGET", "SPLATFLOW_NOTIFY_URL", "SPLATFLOW_SMTP_HOST", "SPLATFLOW_SNS_TOPIC_ARN",
                 "SPLATFLOW_NOTIFY_STRICT", "SPLATFLOW_PUBLIC_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SPLATFLOW_WEBHOOK_URL", url)
    return received


def _path(uri: str) -> Path:
    return Path(unquote(urlparse(uri).path))


def _ply_vertex_count(path: Path) -> int:
    with path.open("rb") as fh:
        for raw in fh:
            line = raw.decode("ascii", "replace").strip()
            if line.startswith("element vertex"):
                return int(line.split()[-1])
            if line == "end_header":
                break
    raise AssertionError(f"{path} has no vertex element")


def _lund_12(tmp_path: Path, data_dir: Path) -> Path:
    """A folder named lund with the first 12 sample photos: the smoke run's SfM in half the time of all 29."""
    folder = tmp_path / "photos" / "lund"
    folder.mkdir(parents=True)
    for photo in sorted((data_dir / "photos" / "lund").glob("*.jpg"))[:12]:
        shutil.copyfile(photo, folder / photo.name)
    return folder


def test_whole_pipeline_runs_locally_on_the_sample_photos(tmp_path: Path, data_dir: Path, splat_transform: Path,
                                                          webhook: list[dict[str, Any]],
                                                          secrets_in_env: dict[str, str],
                                                          capfd: pytest.CaptureFixture[str]) -> None:
    from splatflow_kfp.pipelines.local import run_local, summary_lines

    run = run_local(_lund_12(tmp_path, data_dir), tmp_path / "run", **TINY)
    out = capfd.readouterr()
    # quiet by default: one line per stage with its time; KFP's executor chatter only in run.log
    stage_lines = [ln for ln in out.out.splitlines() if ln.startswith("  ") and " ... " in ln]
    assert [ln.split()[0] for ln in stage_lines] == ["ingest-fingerprint", "ingest", "sfm", "train", "compress",
                                                     "publish", "notify"]
    assert all(" ... ok (" in ln and ln.endswith(" s)") for ln in stage_lines), stage_lines
    assert "KFP Executor" not in out.out + out.err and len(out.out.splitlines()) < 12
    assert run.log is not None and "KFP Executor" in run.log.read_text() and run.log.parent == tmp_path / "run"
    assert set(run.stages) == {"ingest-fingerprint", "ingest", "sfm", "train", "compress", "publish", "notify"}
    assert run.run_id and run.run_id.startswith("local-")  # the run id the tasks read (SPLATFLOW_RUN_ID)

    sog = _path(run.publish["content_uri"])
    assert sog.suffix == ".sog" and sog.stat().st_size > 0
    assert sog.parent.parent == tmp_path / "run" / "lund"  # <output>/<scene>/<run_id>/
    manifest = json.loads(_path(run.publish["manifest_uri"]).read_text())
    assert manifest["run_id"] == sog.parent.name
    assert sorted(p.stem for p in (sog.parent / "reports").glob("*.json")) == ["compress", "ingest", "sfm", "train"]
    # the SOG is also published as its folder (meta.json + WebP), byte for byte the bundle's files
    with zipfile.ZipFile(sog) as zf:
        bundle = {name: zf.read(name) for name in zf.namelist()}
    folder = {p.name: p.read_bytes() for p in (sog.parent / "sog").iterdir()}
    assert "meta.json" in folder and folder == bundle
    assert {f"sog/{name}" for name in bundle} <= set(manifest["objects"])
    train_report = json.loads((sog.parent / "reports" / "train.json").read_text())
    assert train_report["iterations"] == TINY["iterations"] and train_report["device"] == "cpu"
    assert _path(run.publish["viewer_uri"]).is_file()
    splats = manifest["summary"]["splats"]
    assert 0 < splats <= TINY["max_splats"]

    # PlayCanvas's own reader opens the published .sog and finds every splat
    back = tmp_path / "back.ply"
    proc = subprocess.run([str(splat_transform), str(sog), str(back)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert _ply_vertex_count(back) == splats

    # the exit handler notified, with the outcome and where the result is
    assert len(webhook) == 1
    text = json.dumps(webhook[0])
    assert webhook[0]["text"].endswith("splatflow: lund published") and "failed" not in text.lower()
    assert manifest["run_id"] in text and sog.name in text

    printed = "\n".join(summary_lines(run))
    assert str(sog) in printed and str(_path(run.publish["viewer_uri"])) in printed
    assert str(_path(run.publish["manifest_uri"])) in printed
    assert not list((tmp_path / "run").glob(".splatflow/runs/*/failed/*.json"))  # nothing failed, nothing recorded
    # train mirrored its checkpoints under the run (a retry would resume from them) and removed them when done
    assert not list((tmp_path / "run").rglob("*.pt"))

    _assert_no_secret(tmp_path / "run", out.out + out.err + run.log.read_text() + printed + json.dumps(webhook),
                      secrets_in_env)


def test_a_failing_middle_stage_still_runs_notify_with_the_failure(tmp_path: Path, webhook: list[dict[str, Any]],
                                                                   secrets_in_env: dict[str, str],
                                                                   capfd: pytest.CaptureFixture[str]) -> None:
    """Sharp but unrelated images pass ingest and make sfm fail: the exit handler must still notify, naming sfm
    and its error (KFP itself only says that the exit handler's group failed), and the last lines `splatflow run`
    prints name the stage and its one-line error."""
    from splatflow.cli import main

    photos = tmp_path / "noise"
    photos.mkdir()
    rng = np.random.default_rng(7)
    for i in range(4):
        Image.fromarray((rng.random((240, 320, 3)) * 255).astype(np.uint8)).save(photos / f"n{i}.jpg", quality=90)

    code = main(["run", str(photos), str(tmp_path / "run"), "--quality", TINY["quality"], "--iterations",
                 str(TINY["iterations"]), "--max-splats", str(TINY["max_splats"]), "--sh-degree",
                 str(TINY["sh_degree"])])
    printed = capfd.readouterr()
    assert code == StageError.exit_code
    last = printed.err.strip().splitlines()[-2:]
    assert last[0].startswith("error: the pipeline failed at sfm: SfmError: structure from motion registered "), last
    assert last[1].startswith("hint: the full log is ") and str(tmp_path / "run" / "run.log") in last[1]
    assert "Traceback" not in printed.err and "KFP Executor" not in printed.out + printed.err
    assert [ln.split()[:3] for ln in printed.out.splitlines() if " ... " in ln] == [
        ["ingest-fingerprint", "...", "ok"], ["ingest", "...", "ok"], ["sfm", "...", "FAILED"], ["notify", "...", "ok"]]

    assert len(webhook) == 1
    message = webhook[0]
    assert message["text"].endswith("splatflow: noise failed at sfm")
    text = message["blocks"][-1]["text"]["text"]  # the failure block
    assert text.startswith("*Failed stage:* sfm\n```SfmError: structure from motion registered ")
    assert "images, under the required" in text  # the stage's own one-line error, not KFP's
    assert not list((tmp_path / "run").glob("*/*/manifest.json")), "a failed run must not publish"
    (record,) = (tmp_path / "run").glob(".splatflow/runs/*/failed/*.json")
    assert record.name == "sfm.json" and json.loads(record.read_text())["stage"] == "sfm"
    ran = {p.name for p in (tmp_path / "run" / "pipeline-root").glob("*/*") if p.is_dir()}
    assert {"ingest", "sfm", "notify"} <= ran and not ran & {"train", "compress", "publish"}, ran
    log = (tmp_path / "run" / "run.log").read_text()
    _assert_no_secret(tmp_path / "run", printed.out + printed.err + log + json.dumps(webhook), secrets_in_env)


@pytest.mark.slow
def test_the_local_pipeline_publishes_to_s3(tmp_path: Path, data_dir: Path, s3_server: dict[str, str],
                                            monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]) -> None:
    """`splatflow run SRC s3://bucket/prefix`: the results land in the bucket exactly as in a cluster, the summary
    prints s3:// addresses, and nothing is written to a local folder named after the URI."""
    import boto3

    from splatflow_kfp.pipelines.local import run_local, summary_lines

    for name in ("SPLATFLOW_WEBHOOK_URL", "SPLATFLOW_NOTIFY_TARGET", "SPLATFLOW_PUBLIC_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SPLATFLOW_LINK_EXPIRES", "3600")
    monkeypatch.chdir(tmp_path)
    prefix = "results/local-run"
    run = run_local(_lund_12(tmp_path, data_dir), f"s3://{s3_server['bucket']}/{prefix}", work=tmp_path / "work",
                    **TINY)
    keys = {o["Key"] for page in boto3.client("s3").get_paginator("list_objects_v2").paginate(
        Bucket=s3_server["bucket"], Prefix=prefix) for o in page.get("Contents", [])}
    run_dir = f"{prefix}/lund/{run.run_id}"
    assert {f"{run_dir}/lund.sog", f"{run_dir}/index.html", f"{run_dir}/manifest.json", f"{run_dir}/sog/meta.json",
            f"{prefix}/lund/latest.json"} <= keys, sorted(keys)
    manifest = json.loads(boto3.client("s3").get_object(Bucket=s3_server["bucket"],
                                                         Key=f"{run_dir}/manifest.json")["Body"].read())
    assert {f"{run_dir}/{rel}" for rel in manifest["objects"]} | {f"{run_dir}/manifest.json"} == {
        k for k in keys if k.startswith(run_dir + "/")}
    assert not any(".splatflow/locks" in k for k in keys)  # the publish lock was released
    printed = "\n".join(summary_lines(run))
    assert f"s3://{s3_server['bucket']}/{run_dir}/lund.sog" in printed and "presigned, 3600 s" in printed
    assert not (tmp_path / "s3:").exists() and sorted(p.name for p in (tmp_path / "work").iterdir()) == [
        "pipeline-root", "run.log"]


def test_s3_outputs_are_checked_before_the_run(tmp_path: Path, s3_server: dict[str, str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A missing bucket is said at once (no training first), and nothing local is created for it."""
    from splatflow.errors import StorageError
    from splatflow_kfp.pipelines.local import LocalRun, run_local, summary_lines

    monkeypatch.chdir(tmp_path)
    with pytest.raises(StorageError, match="does not exist"):
        run_local(tmp_path, "s3://no-such-bucket-here/x", work=tmp_path / "work")
    assert list(tmp_path.iterdir()) == []
    base = f"s3://{s3_server['bucket']}/p/lund/r1"
    run = LocalRun(output=f"s3://{s3_server['bucket']}/p", pipeline_root=tmp_path / "pipeline-root",
                   log=tmp_path / "run.log", publish={"content_uri": f"{base}/lund.sog",
                                                      "viewer_uri": f"{base}/index.html",
                                                      "manifest_uri": f"{base}/manifest.json"})
    monkeypatch.delenv("SPLATFLOW_LINK_EXPIRES", raising=False)
    monkeypatch.setenv("SPLATFLOW_PUBLIC_BASE_URL", "https://cdn.example.com/splats")
    text = "\n".join(summary_lines(run))
    assert f"{base}/lund.sog" in text and f"{base}/index.html" in text
    assert "https://cdn.example.com/splats/p/lund/r1/index.html" in text
