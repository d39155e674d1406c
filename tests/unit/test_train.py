"""The training stage on CPU, end to end on a tiny synthetic SfM scene: outputs, budget, resume after SIGTERM,
bad input. The scene (a coloured blob seen by 7 cameras at 32 px) is rendered by splatflow.render and written
as a COLMAP model with pycolmap, in the layout `splatflow sfm` writes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from splatflow.cli import main
from splatflow.errors import InputError, TrainError
from splatflow.io.ply import read_ply
from splatflow.stages.train import train
from splatflow.training.synthetic import make_synthetic_sfm

pycolmap = pytest.importorskip("pycolmap")

ITERS = 20
OPTS: dict[str, Any] = {"iterations": ITERS, "max_splats": 400, "resolution": 32, "checkpoint_every": 8,
                        "sh_degree": 1, "device": "cpu"}


@pytest.fixture(scope="module")
def tiny_sfm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_synthetic_sfm(tmp_path_factory.mktemp("sfm") / "scene", n_splats=250, n_points=120, n_cameras=7,
                              size=32, seed=3)


@pytest.fixture(scope="module")
def full_run(tiny_sfm: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("train") / "out"
    return out, train(tiny_sfm, out, **OPTS)


def test_outputs_report_and_ply(full_run: tuple[Path, dict[str, Any]]) -> None:
    out, report = full_run
    assert json.loads((out / "train-report.json").read_text()) == report
    for key in ("iterations", "splats", "psnr_test", "ssim_test", "psnr_train", "ssim_train", "psnr_test_initial",
                "seconds", "peak_memory_bytes"):
        assert report[key] is not None, key
    assert report["iterations"] == ITERS and report["backend"] == "cpu" and report["device"] == "cpu"
    assert report["images_test"] == ["view_04.png"]  # every 8th of 7 views from the 4th: one interior view
    assert report["resolution"] == [32, 32]
    assert report["peak_memory_bytes"] > 50 << 20
    # training improves on the initial point cloud, on held-out and on training views
    assert report["psnr_test"] > report["psnr_test_initial"] + 3.0
    assert report["psnr_train"] > report["psnr_test_initial"] + 3.0
    assert 0 < report["ssim_test"] <= 1
    cloud = read_ply(out / "splats.ply", on_invalid="error")
    assert len(cloud) == report["splats"] <= OPTS["max_splats"]
    # the contact sheet: one row (the held-out view), photo and render side by side under a title strip
    from PIL import Image

    assert report["contact_sheet"] == "contact-sheet.png"
    assert report["dropped_unseen"] >= 0
    # the viewer opens at a training photo's pose, looking ahead of it
    cam = report["viewer_camera"]
    pos, target = np.array(cam["position"]), np.array(cam["target"])
    assert np.linalg.norm(target - pos) > 0
    with Image.open(out / "contact-sheet.png") as sheet:
        assert sheet.format == "PNG" and sheet.size == (2 * 320 + 3, 18 + 320 + 18)
        px = np.asarray(sheet.convert("RGB"), dtype=np.float32)
    photo, rendered = px[36:, :320], px[36:, 323:]
    assert photo.std() > 5 and rendered.std() > 5  # both halves hold a picture
    assert np.abs(photo - rendered).mean() < 60  # of the same view
    assert cloud.sh_degree == 1
    assert np.allclose(np.linalg.norm(cloud.quats, axis=1), 1.0, atol=1e-5)
    assert report["splats"] != report["initial_splats"] or report["densification"]
    assert report["dropped_invalid"] == 0


def test_ply_is_read_by_splat_transform(full_run: tuple[Path, dict[str, Any]], splat_transform: Path,
                                        tmp_path: Path) -> None:
    out, report = full_run
    csv = tmp_path / "splats.csv"
    subprocess.run([str(splat_transform), "-q", str(out / "splats.ply"), str(csv)], check=True, timeout=120)
    lines = csv.read_text().splitlines()
    header = lines[0].split(",")
    assert len(lines) - 1 == report["splats"]
    ours = read_ply(out / "splats.ply")
    rows = np.array([[float(v) for v in ln.split(",")] for ln in lines[1:]], np.float32)
    for name, col in (("x", ours.means[:, 0]), ("opacity", ours.opacities), ("scale_0", ours.scales[:, 0])):
        assert np.allclose(rows[:, header.index(name)], col, rtol=1e-5, atol=1e-6), name


def test_rerun_on_a_finished_run_resumes_without_training(full_run: tuple[Path, dict[str, Any]],
                                                           tiny_sfm: Path) -> None:
    out, report = full_run
    again = train(tiny_sfm, out, **OPTS)
    assert again["resumed_from_step"] == ITERS
    assert again["splats"] == report["splats"] and again["psnr_test"] == report["psnr_test"]


def _preempted_run(tiny_sfm: Path, out: Path, watch: Path, **extra: Any) -> list[int]:
    """Run training and SIGTERM it (like the kubelet) as soon as the first periodic checkpoint exists in ``watch``;
    returns the checkpoint steps found there. Checks the stop: exit code 4, no outputs, handler restored."""
    stop = threading.Event()

    def preempt() -> None:
        while not stop.is_set():
            if watch.is_dir() and any(watch.glob("step-*.pt")):
                os.kill(os.getpid(), signal.SIGTERM)
                return
            time.sleep(0.02)

    watcher = threading.Thread(target=preempt, daemon=True)
    watcher.start()
    try:
        with pytest.raises(TrainError, match="SIGTERM") as exc:
            train(tiny_sfm, out, **OPTS, **extra)
    finally:
        stop.set()
        watcher.join()
    assert exc.value.exit_code == 4
    assert not (out / "splats.ply").exists() and not (out / "train-report.json").exists()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is restored
    steps = sorted(int(p.stem.split("-")[1]) for p in watch.glob("step-*.pt"))
    assert steps and 8 <= steps[-1] < ITERS
    return steps


def _same_result(resumed: dict[str, Any], full: dict[str, Any]) -> None:
    assert resumed["splats"] == full["splats"]
    assert abs(resumed["psnr_test"] - full["psnr_test"]) < 0.1
    assert abs(resumed["psnr_train"] - full["psnr_train"]) < 0.1


def test_resume_after_sigterm_matches_an_uninterrupted_run(full_run: tuple[Path, dict[str, Any]], tiny_sfm: Path,
                                                           tmp_path: Path) -> None:
    """SIGTERM (pod preemption) after the first checkpoint: a checkpoint is saved, the run stops with exit 4, and
    running the same command again ends where an uninterrupted run ends."""
    out = tmp_path / "out"
    steps = _preempted_run(tiny_sfm, out, out / "checkpoints")
    resumed = train(tiny_sfm, out, **OPTS)
    assert resumed["resumed_from_step"] == steps[-1]
    _same_result(resumed, full_run[1])


def test_a_retry_in_a_new_pod_resumes_from_the_s3_mirror(full_run: tuple[Path, dict[str, Any]], tiny_sfm: Path,
                                                          tmp_path: Path, s3_server: dict[str, str]) -> None:
    """A KFP retry runs in a new pod with an empty disk: with --checkpoint-uri the checkpoints are mirrored to S3
    (the local S3 server over HTTP), the retry fetches the newest one and ends like an uninterrupted run; with
    keep_checkpoints=False nothing is left behind, locally or in the bucket."""
    from splatflow import storage

    mirror = f"s3://{s3_server['bucket']}/runs/retry-test/checkpoints"
    first_pod = tmp_path / "pod1" / "model"
    first_pod.parent.mkdir()
    _preempted_run(tiny_sfm, first_pod, first_pod / "checkpoints", checkpoint_uri=mirror)
    mirrored = [storage.relative_name(u, mirror) for u in storage.list_uris(mirror)]
    assert mirrored and len(mirrored) <= 2 and all(m.startswith("step-") for m in mirrored)
    newest = max(int(m[5:12]) for m in mirrored)

    second_pod = tmp_path / "pod2" / "model"
    second_pod.parent.mkdir()
    resumed = train(tiny_sfm, second_pod, **OPTS, checkpoint_uri=mirror, keep_checkpoints=False)
    assert resumed["resumed_from_step"] == newest
    _same_result(resumed, full_run[1])
    assert sorted(p.name for p in second_pod.iterdir()) == ["contact-sheet.png", "splats.ply", "train-report.json"]
    assert storage.list_uris(mirror) == []


def test_checkpoints_of_another_run_are_refused(full_run: tuple[Path, dict[str, Any]], tiny_sfm: Path) -> None:
    out, _ = full_run
    with pytest.raises(InputError, match="different run") as exc:
        train(tiny_sfm, out, **{**OPTS, "sh_degree": 0})
    assert "--no-resume" in (exc.value.hint or "")


def test_budget_smaller_than_the_initial_cloud_downsamples(tiny_sfm: Path, tmp_path: Path,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", logger="splatflow.stages.train"):
        report = train(tiny_sfm, tmp_path / "out", **{**OPTS, "iterations": 6, "max_splats": 50, "strategy": "mcmc"})
    assert any("120 points, over the budget of 50 splats" in r.getMessage() and "downsampled" in r.getMessage()
               for r in caplog.records)
    assert report["downsampled"] is True
    assert report["initial_points"] == 120 and report["initial_splats"] == 50
    assert report["splats"] <= 50
    assert len(read_ply(tmp_path / "out" / "splats.ply")) == report["splats"]


# ---------------------------------------------------------------------------- bad input
def _write_model(path: Path, *, points: bool, registered: bool) -> Path:
    rec = pycolmap.Reconstruction()
    cam = pycolmap.Camera.create_from_model_name(1, "PINHOLE", 20.0, 16, 16)
    rec.add_camera_with_trivial_rig(cam)
    image = pycolmap.Image(name="a.png", camera_id=1, image_id=1)
    if registered:
        rec.add_image_with_trivial_frame(image, pycolmap.Rigid3d())
    else:
        rec.add_image_with_trivial_frame(image)
    if points:
        rec.add_point3D(np.array([0.0, 0.0, 3.0]), pycolmap.Track(), np.array([200, 10, 10], np.uint8))
    (path / "sparse" / "0").mkdir(parents=True)
    (path / "images").mkdir()
    from PIL import Image

    Image.new("RGB", (16, 16), (90, 90, 90)).save(path / "images" / "a.png")
    rec.write_binary(str(path / "sparse" / "0"))
    return path


@pytest.mark.parametrize(("points", "registered", "message"), [
    (False, True, "no 3D points"),
    (True, False, "zero registered images"),
])
def test_unusable_sfm_models_are_refused(tmp_path: Path, points: bool, registered: bool, message: str) -> None:
    sfm = _write_model(tmp_path / "sfm", points=points, registered=registered)
    with pytest.raises(InputError, match=message) as exc:
        train(sfm, tmp_path / "out", **OPTS)
    assert "splatflow sfm" in (exc.value.hint or "")
    assert not (tmp_path / "out").exists()  # nothing written for bad input


def test_missing_folder_and_images_and_bad_options(tmp_path: Path, tiny_sfm: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        train(tmp_path / "nope", tmp_path / "out", **OPTS)
    with pytest.raises(InputError, match="no COLMAP model"):
        train(tmp_path, tmp_path / "out", **OPTS)
    with pytest.raises(InputError, match="strategy"):
        train(tiny_sfm, tmp_path / "out", **{**OPTS, "strategy": "magic"})
    with pytest.raises(InputError, match="max_splats 0 is out of range"):
        train(tiny_sfm, tmp_path / "out", **{**OPTS, "max_splats": 0})
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="is a file"):
        train(tiny_sfm, tmp_path / "file", **OPTS)
    sfm = _write_model(tmp_path / "sfm", points=True, registered=True)
    (sfm / "images" / "a.png").unlink()
    with pytest.raises(InputError, match="missing"):
        train(sfm, tmp_path / "out", **OPTS)
    assert not (tmp_path / "out").exists()


def test_cli_reports_bad_input_with_exit_code_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sfm = _write_model(tmp_path / "sfm", points=False, registered=True)
    code = main(["train", str(sfm), str(tmp_path / "out"), "--device", "cpu", "--iterations", "5"])
    err = capsys.readouterr().err
    assert code == 2
    assert "error:" in err and "no 3D points" in err and "hint:" in err


def test_the_cpu_path_runs_where_gsplat_cannot_be_imported(tiny_sfm: Path, tmp_path: Path) -> None:
    """gsplat needs CUDA; a CPU-only install may not have it at all: CPU training must not import it."""
    code = (
        "import sys; sys.modules['gsplat'] = None\n"  # any `import gsplat` now raises ImportError
        "from pathlib import Path\n"
        "from splatflow.stages.train import train\n"
        f"r = train(Path({str(tiny_sfm)!r}), Path({str(tmp_path / 'out')!r}), iterations=6, max_splats=400, "
        "resolution=32, sh_degree=1, device='cpu')\n"
        "assert not [m for m in sys.modules if m.startswith('gsplat.')]\n"
        "print('backend', r['backend'], r['splats'])\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "backend cpu" in proc.stdout
    assert (tmp_path / "out" / "splats.ply").is_file()


def test_a_nan_splat_never_reaches_the_ply(tiny_sfm: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import splatflow.stages.train as train_mod

    real = train_mod.to_cloud

    def poisoned(params: Any) -> Any:
        cloud = real(params)
        cloud.means[0] = np.nan
        return cloud

    monkeypatch.setattr(train_mod, "to_cloud", poisoned)
    report = train(tiny_sfm, tmp_path / "out", **{**OPTS, "iterations": 4})
    assert report["dropped_invalid"] == 1
    cloud = read_ply(tmp_path / "out" / "splats.ply", on_invalid="error")  # loads: no NaN inside
    assert len(cloud) == report["splats"]


def test_splats_no_training_view_draws_are_not_exported(tiny_sfm: Path, tmp_path: Path) -> None:
    """The far side of the background shell is behind every camera: those splats stay as initialised (grey)
    and are left out of the PLY, counted in the report."""
    report = train(tiny_sfm, tmp_path / "out", **{**OPTS, "iterations": 6, "max_splats": 2000},
                   background_points=300)
    assert report["dropped_unseen"] > 0
    cloud = read_ply(tmp_path / "out" / "splats.ply")
    assert len(cloud) == report["splats"]
    assert report["splats"] + report["dropped_unseen"] + report["dropped_invalid"] >= 300
