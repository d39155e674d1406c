"""Pieces the components and the local runner use (all in the core library but the image names): presets, scene
names, image names, KFP's final status, task outputs, the published run read back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from splatflow import spec as images
from splatflow.errors import InputError
from splatflow.presets import PRESETS, preset
from splatflow.stages.notify import final_status
from splatflow.stages.publish import published_run, scene_name
from splatflow.tasks import task_output


def test_train_options_cap_the_budget_by_the_preset() -> None:
    from splatflow.presets import train_options

    cpu = PRESETS["cpu"]
    assert cpu.max_splats is not None and max(cpu.resolution, 0) >= 256  # the CPU preset trains at >= 256 px
    assert train_options("cpu", 0, 1_000_000) == {"iterations": cpu.iterations, "resolution": cpu.resolution,
                                                  "max_splats": cpu.max_splats,
                                                  "background_points": cpu.background_points}
    assert train_options("cpu", 10, 5000)["max_splats"] == 5000  # under the ceiling: the run's own budget
    assert train_options("cpu", 10, 5000)["iterations"] == 10
    assert train_options("standard", 0, 2_000_000)["max_splats"] == 2_000_000  # GPU presets: no ceiling


def test_presets_map_quality_to_resolution_and_iterations() -> None:
    assert list(PRESETS) == ["tiny", "cpu", "preview", "standard", "high"]
    assert preset("standard") == {"max_side": 1600, "resolution": 1600, "iterations": 7000,  # the stage defaults
                                  "max_splats": None, "background_points": 0}
    assert preset(" High ")["iterations"] == 30000
    assert preset("preview", 1234)["iterations"] == 1234  # iterations > 0 overrides the preset
    steps = [preset(q)["iterations"] for q in PRESETS]
    assert steps == sorted(steps)
    with pytest.raises(InputError, match="unknown quality preset 'ultra'") as err:
        preset("ultra")
    assert "tiny, cpu, preview, standard, high" in str(err.value.hint)
    with pytest.raises(InputError, match="iterations must be 0"):
        preset("tiny", -5)


@pytest.mark.parametrize(("uri", "scene"), [
    ("s3://bucket/scans/Lund Cathedral.zip", "lund-cathedral"),
    ("s3://bucket/photos/lund/", "lund"),
    ("file:///data/photos/lund", "lund"),
    ("/home/me/Garden%20Walk.MP4", "garden-walk"),
    ("relative/dir/Kitchen_2024", "kitchen-2024"),
    ("s3://only-bucket", "only-bucket"),
    ("s3://b/%%%/", "scene"),
])
def test_scene_names_are_url_safe(uri: str, scene: str) -> None:
    assert scene_name(uri) == scene


def test_final_status_maps_kfp_states_and_keeps_the_error() -> None:
    assert final_status("SUCCEEDED", None, "exit-handler-1") == {"status": "succeeded", "error": None}
    assert final_status("FAILED", "Task exit-handler-1 failed.", "exit-handler-1") == {
        "status": "failed", "error": "Task exit-handler-1 failed."}
    assert final_status("CANCELLED", "", "exit-handler-1") == {
        "status": "canceled", "error": "pipeline task exit-handler-1 ended in state CANCELLED"}
    assert final_status("", None, None)["status"] == "failed"  # an unknown state is never reported as success


def test_task_outputs_carry_no_none_or_nan() -> None:
    """kfp.local aborts the whole run (notify included) when an output parameter holds None."""
    report = {"splats": 3, "resumed_from_step": None, "psnr": float("nan"), "ok": True, "path": Path("/x/y.ply"),
              "timings": {"a": 1.5, "b": None}, "images": ["1.jpg", None, 2], "ratio": float("inf")}
    assert task_output(report) == {"splats": 3, "ok": True, "path": "/x/y.ply", "timings": {"a": 1.5},
                                   "images": ["1.jpg", 2]}
    from kfp.compiler.pipeline_spec_builder import to_protobuf_value

    to_protobuf_value(task_output(report))  # what kfp.local does with it: must not raise


def test_image_names_come_from_registry_and_tag(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPLATFLOW_REGISTRY", "registry.local:5000/team/")
    monkeypatch.setenv("SPLATFLOW_IMAGE_TAG", "v1.2")
    assert images.image_for("train") == "registry.local:5000/team/splatflow-train:v1.2"
    assert set(images.all_images()) == set(images.STAGE_NAMES)
    monkeypatch.delenv("SPLATFLOW_IMAGE_TAG")
    commit = images.git_commit()
    assert images.tag() == (commit or "latest")
    monkeypatch.setenv("SPLATFLOW_IMAGE_TAG", "bad tag")
    with pytest.raises(ValueError, match="not a valid image tag"):
        images.image_for("sfm")
    monkeypatch.setenv("SPLATFLOW_IMAGE_TAG", "ok")
    monkeypatch.setenv("SPLATFLOW_REGISTRY", "Bad Registry")
    with pytest.raises(ValueError, match="not a valid image registry"):
        images.image_for("sfm")
    with pytest.raises(ValueError, match="unknown stage 'render'"):
        images.image_for("render")


def test_published_run_reads_back_what_publish_wrote(tmp_path: Path) -> None:
    import zipfile

    from splatflow.stages.publish import publish

    sog = tmp_path / "splats.sog"  # publish checks what it publishes: a real SOG (PlayCanvas's, zipped)
    ref = Path(__file__).resolve().parents[2] / "data" / "sog-reference" / "playbot-lod3-v2"
    with zipfile.ZipFile(sog, "w") as zf:
        for f in sorted(ref.iterdir(), key=lambda f: f.name != "meta.json"):
            if f.suffix in (".json", ".webp"):
                zf.write(f, f.name)
    out = (tmp_path / "out").as_uri()
    assert published_run(out, "lund", "run-1") is None  # nothing published yet
    result = publish(out, scene="lund", run_id="run-1", files={"sog": sog},
                     reports={"compress": {"splats": 7, "bytes": 22, "seconds": 1.5}}, viewer=False)
    report = published_run(out, "lund", "run-1")
    assert report is not None
    assert report["manifest_uri"] == result["manifest_uri"]
    assert report["content_uri"] == result["content_uri"]
    assert report["summary"]["splats"] == 7
    assert set(report["urls"]) == set(result["urls"])


def test_local_runner_rejects_a_missing_source_and_a_used_output(tmp_path: Path) -> None:
    from splatflow_kfp.pipelines.local import LocalRun, run_local, summary_lines

    with pytest.raises(InputError, match="does not exist"):
        run_local(tmp_path / "nope", tmp_path / "out")
    used = tmp_path / "used"
    used.mkdir()
    (used / "x").write_text("keep me")
    with pytest.raises(InputError, match="exists and is not empty"):
        run_local(tmp_path, used)
    assert (used / "x").read_text() == "keep me"
    run = LocalRun(output=tmp_path, pipeline_root=tmp_path / "pipeline-root", seconds=3.0, publish={
        "content_uri": (tmp_path / "lund" / "r" / "lund.sog").as_uri(),
        "viewer_uri": (tmp_path / "lund" / "r" / "index.html").as_uri(),
        "manifest_uri": (tmp_path / "lund" / "r" / "manifest.json").as_uri(), "summary": {"splats": 5},
        "urls": {"reports/train.json": (tmp_path / "lund" / "r" / "reports" / "train.json").as_uri()}})
    text = "\n".join(summary_lines(run))
    assert str(tmp_path / "lund" / "r" / "lund.sog") in text and "train.json" in text
    assert json.dumps({"splats": 5}) in text


def test_splatflow_run_reports_bad_input_with_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from splatflow.cli import main
    from splatflow_kfp.pipelines.local import default_output

    assert main(["run", str(tmp_path / "no-photos-here"), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "error: source" in err and "does not exist" in err and "hint:" in err
    assert not (tmp_path / "out").exists()  # nothing created for a run that cannot start
    assert default_output().parent == Path("runs") and default_output("x").name[:2] == "20"


def test_local_runs_check_their_parameters_before_starting(tmp_path: Path) -> None:
    from splatflow_kfp.pipelines.local import run_local

    for kwargs, said in (({"quality": "ultra"}, "quality 'ultra' is not one of"),
                         ({"sh_degree": 5}, "sh_degree 5 is out of range"),
                         ({"max_splats": 0}, "max_splats 0 is out of range"),
                         ({"target_psnr": 150.0}, "target_psnr 150.0 is out of range"),
                         ({"notify_target": "https://hooks.example.com/x"}, "notify_target holds a URL")):
        with pytest.raises(InputError, match=said):
            run_local(tmp_path, tmp_path / "out", **kwargs)  # type: ignore[arg-type]
        assert not (tmp_path / "out").exists()
