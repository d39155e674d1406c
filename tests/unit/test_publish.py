"""The publish stage: layout, manifest last, latest pointer after it, interrupted publishes, idempotency —
on local folders and on the local S3 server over HTTP."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path
from typing import Any

import pytest

from splatflow import storage
from splatflow.errors import DependencyMissing, InputError, OutputBusyError, OutputExistsError, StorageError
from splatflow.stages import publish as publish_mod
from splatflow.stages.publish import publish, read_latest, read_manifest, run_summary

REPORTS: dict[str, dict[str, Any]] = {
    "train": {"iterations": 7000, "splats": 90854, "psnr_test": 27.1, "ssim_test": 0.88, "seconds": 600.5},
    "compress": {"splats": 90854, "bytes": 1196155, "bytes_per_splat": 13.17, "ratio": 4.25, "seconds": 7.5,
                 "fidelity": {"psnr": 61.2, "ssim": 0.9999, "views": 4, "size": 256}},
}
VIEWER_FILES = {"index.html", "index.js", "index.css", "LICENSE-supersplat-viewer.txt", "settings.json"}


@pytest.fixture()
def sog_dir(sample_sog: Path, tmp_path: Path) -> Path:
    """The sample .sog unpacked: a SOG folder with meta.json + WebP images."""
    out = tmp_path / "sogdir"
    with zipfile.ZipFile(sample_sog) as zf:
        zf.extractall(out)
    return out


def _objects(base: str) -> dict[str, bytes]:
    """Every object under ``base`` with its bytes (relative name -> bytes)."""
    out = {}
    for uri in storage.list_uris(base):
        out[uri[len(base.rstrip("/")) + 1:]] = storage.read_bytes(uri)
    return out


def _check_manifest(base: str, objects: dict[str, bytes]) -> dict[str, Any]:
    manifest = json.loads(objects["manifest.json"])
    listed = manifest["objects"]
    assert set(listed) == set(objects) - {"manifest.json"}
    for rel, entry in listed.items():
        assert entry["bytes"] == len(objects[rel]), rel
        assert entry["sha256"] == hashlib.sha256(objects[rel]).hexdigest(), rel
    return manifest


def test_publish_local_layout(sample_sog: Path, sog_dir: Path, tmp_path: Path, splat_paths: dict[str, Path]) -> None:
    out = tmp_path / "out"
    res = publish(str(out), scene="guitar", run_id="run-1",
                  files={"sog": sample_sog, "meta": sog_dir, "ply": splat_paths["guitar"]}, reports=REPORTS)
    base = str(out / "guitar" / "run-1")
    objects = _objects(base)
    manifest = _check_manifest(base, objects)
    assert set(objects) >= VIEWER_FILES
    assert {"guitar.sog", "guitar.ply", "sog/meta.json", "reports/train.json", "reports/compress.json"} <= set(objects)
    assert objects["guitar.sog"] == sample_sog.read_bytes()
    assert objects["guitar.ply"] == splat_paths["guitar"].read_bytes()
    assert json.loads(objects["reports/compress.json"]) == REPORTS["compress"]
    assert manifest["content"] == "guitar.sog" and manifest["viewer"] == "index.html"
    assert manifest["summary"]["psnr"] == 27.1 and manifest["summary"]["psnr_source"] == "train"
    assert manifest["summary"]["codec_psnr"] == 61.2
    assert manifest["summary"]["total_seconds"] == pytest.approx(608.0)
    # the page names its content and settings itself: no query string needed, nothing outside the folder
    html = objects["index.html"].decode()
    assert '"contentUrl": "guitar.sog"' in html and '"settingsUrl": "settings.json"' in html
    assert "<title>guitar - splatflow</title>" in html
    assert "http://" not in json.dumps(json.loads(objects["settings.json"]))
    settings = json.loads(objects["settings.json"])
    assert settings["version"] == 2 and len(settings["cameras"]) == 1
    latest = read_latest(str(out), "guitar")
    assert latest is not None and latest["run_id"] == "run-1"
    assert res["manifest_uri"] == f"{base}/manifest.json" and res["viewer_uri"] == f"{base}/index.html"
    assert res["objects"] == len(objects) - 1 and res["uploaded"] == res["objects"]
    assert res["urls"]["guitar.sog"] == f"{base}/guitar.sog"


def test_publish_s3_idempotent_and_browsable(s3_server: dict[str, str], sample_sog: Path,
                                             request: pytest.FixtureRequest) -> None:
    import boto3

    out = f"s3://{s3_server['bucket']}/{request.node.name}"
    first = publish(out, scene="guitar", run_id="r1", files={"sog": sample_sog}, reports=REPORTS)
    base = f"{out}/guitar/r1"
    before = _objects(base)
    manifest = _check_manifest(base, before)
    assert manifest["viewer"] == "index.html"
    second = publish(out, scene="guitar", run_id="r1", files={"sog": sample_sog}, reports=REPORTS)
    assert second["uploaded"] == 0 and second["skipped"] == first["objects"]
    assert _objects(base) == before
    assert json.loads(storage.read_bytes(f"{out}/guitar/latest.json"))["manifest_uri"] == f"{base}/manifest.json"
    # a browser opening the page from the bucket gets the right types
    s3 = boto3.client("s3")
    key = storage.parse(f"{base}/index.html").key
    assert s3.head_object(Bucket=s3_server["bucket"], Key=key)["ContentType"].startswith("text/html")
    assert s3.head_object(Bucket=s3_server["bucket"], Key=key.replace("index.html", "index.js"))[
        "ContentType"] == "text/javascript"


class Boom(RuntimeError):
    """The simulated crash."""


def test_interrupted_publish_keeps_previous_latest(s3_server: dict[str, str], sample_sog: Path,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   request: pytest.FixtureRequest) -> None:
    out = f"s3://{s3_server['bucket']}/{request.node.name}"
    publish(out, scene="guitar", run_id="old", files={"sog": sample_sog}, reports=REPORTS)
    old_manifest = storage.read_bytes(f"{out}/guitar/old/manifest.json")
    latest_before = storage.read_bytes(f"{out}/guitar/latest.json")

    real_upload = storage.upload
    calls = {"n": 0}

    def crash_after_three(local_path: Path, uri: str, **kw: Any) -> str:
        calls["n"] += 1
        if calls["n"] > 3:
            raise Boom("killed mid-publish")
        return real_upload(local_path, uri, **kw)

    monkeypatch.setattr(storage, "upload", crash_after_three)
    monkeypatch.setattr(publish_mod, "_PARALLEL", 1)
    with pytest.raises(Boom):
        publish(out, scene="guitar", run_id="new", files={"sog": sample_sog}, reports=REPORTS)
    written = storage.list_uris(f"{out}/guitar/new")
    assert 0 < len(written) <= 3  # half a result on the server ...
    assert not storage.exists(f"{out}/guitar/new/manifest.json")  # ... but never marked complete
    assert read_manifest(out, "guitar", "new") is None
    assert storage.read_bytes(f"{out}/guitar/latest.json") == latest_before
    assert storage.read_bytes(f"{out}/guitar/old/manifest.json") == old_manifest

    # crash between the objects and the manifest: still no manifest, latest unchanged
    monkeypatch.setattr(storage, "upload", real_upload)
    real_write = storage.write_bytes

    def fail_manifest(uri: str, data: bytes, **kw: Any) -> str:
        if uri.endswith("manifest.json"):
            raise StorageError("connection lost", hint="retry")
        return real_write(uri, data, **kw)

    monkeypatch.setattr(storage, "write_bytes", fail_manifest)
    with pytest.raises(StorageError):
        publish(out, scene="guitar", run_id="new", files={"sog": sample_sog}, reports=REPORTS)
    assert not storage.exists(f"{out}/guitar/new/manifest.json")
    assert storage.read_bytes(f"{out}/guitar/latest.json") == latest_before

    # the re-run completes the run, uploading nothing twice, and only then moves latest
    monkeypatch.setattr(storage, "write_bytes", real_write)
    res = publish(out, scene="guitar", run_id="new", files={"sog": sample_sog}, reports=REPORTS)
    assert res["uploaded"] == 0
    assert read_latest(out, "guitar")["run_id"] == "new"  # type: ignore[index]
    _check_manifest(f"{out}/guitar/new", _objects(f"{out}/guitar/new"))


def test_killed_publish_process(s3_server: dict[str, str], sample_sog: Path, tmp_path: Path,
                                request: pytest.FixtureRequest) -> None:
    """A real interruption: `splatflow publish` is SIGKILLed while a large object is on its way."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import boto3

    out = f"s3://{s3_server['bucket']}/{request.node.name}"
    publish(out, scene="big", run_id="old", files={"sog": sample_sog}, reports={}, viewer=False)
    latest_before = storage.read_bytes(f"{out}/big/latest.json")
    big = tmp_path / "big.ply"
    n = (48 << 20) // 12  # a PLY header over random float triples: only its bytes travel (no viewer page)
    big.write_bytes(f"ply\nformat binary_little_endian 1.0\nelement vertex {n}\nproperty float x\n"
                    "property float y\nproperty float z\nend_header\n".encode() + os.urandom(n * 12))
    cmd = [sys.executable, "-m", "splatflow.cli", "publish", out, "--scene", "big", "--run-id", "new",
           "--sog", str(sample_sog), "--ply", str(big), "--no-viewer"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    s3 = boto3.client("s3")
    prefix = storage.parse(f"{out}/big/new/").key
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if s3.list_objects_v2(Bucket=s3_server["bucket"], Prefix=prefix).get("KeyCount", 0):
            break
        time.sleep(0.05)
    assert proc.poll() is None, "publish finished before it could be interrupted"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert storage.list_uris(f"{out}/big/new")  # something was written ...
    assert not storage.exists(f"{out}/big/new/manifest.json")  # ... but the run is not marked complete
    assert storage.read_bytes(f"{out}/big/latest.json") == latest_before
    # the killed writer's lock is still there (it expires unrenewed): a re-run right away is told so, and how
    with pytest.raises(OutputBusyError, match="being published by another process") as busy:
        publish(out, scene="big", run_id="new", files={"sog": sample_sog, "ply": big}, reports={}, viewer=False)
    assert publish_mod.lock_uri(out, "big", "new") in (busy.value.hint or "")
    storage.delete(publish_mod.lock_uri(out, "big", "new"))
    res = publish(out, scene="big", run_id="new", files={"sog": sample_sog, "ply": big}, reports={}, viewer=False)
    assert res["uploaded"] < res["objects"]  # the re-run resumed
    assert read_latest(out, "big")["run_id"] == "new"  # type: ignore[index]
    _check_manifest(f"{out}/big/new", _objects(f"{out}/big/new"))


def test_changed_content_needs_overwrite_and_stale_objects_go(sample_sog: Path, tmp_path: Path,
                                                              splat_paths: dict[str, Path]) -> None:
    out = str(tmp_path / "out")
    publish(out, scene="s", run_id="r", files={"sog": sample_sog, "ply": splat_paths["guitar"]}, reports={})
    assert (tmp_path / "out/s/r/s.ply").exists()
    with pytest.raises(OutputExistsError, match="different content"):
        publish(out, scene="s", run_id="r", files={"sog": sample_sog}, reports={})
    res = publish(out, scene="s", run_id="r", files={"sog": sample_sog}, reports={}, overwrite=True)
    assert not (tmp_path / "out/s/r/s.ply").exists()
    objects = _objects(str(tmp_path / "out/s/r"))
    _check_manifest(str(tmp_path / "out/s/r"), objects)
    assert res["objects"] == len(objects) - 1


def test_file_uri_with_a_space(sample_sog: Path, tmp_path: Path) -> None:
    out = (tmp_path / "my output").as_uri()  # file:///.../my%20output
    first = publish(out, scene="s", run_id="r", files={"sog": sample_sog}, reports=REPORTS)
    again = publish(out, scene="s", run_id="r", files={"sog": sample_sog}, reports=REPORTS)
    assert again["uploaded"] == 0 and again["objects"] == first["objects"]
    run = tmp_path / "my output" / "s" / "r"
    assert (run / "manifest.json").is_file() and (run / "s.sog").read_bytes() == sample_sog.read_bytes()
    assert read_latest(out, "s")["run_id"] == "r"  # type: ignore[index]


def test_meta_folder_only_and_no_viewer(sog_dir: Path, tmp_path: Path) -> None:
    out = str(tmp_path / "out")
    res = publish(out, scene="s", run_id="r", files={"meta": sog_dir / "meta.json"}, reports={}, viewer=False)
    objects = _objects(str(tmp_path / "out/s/r"))
    assert res["viewer_uri"] is None and not VIEWER_FILES & set(objects)
    assert {f"sog/{p.name}" for p in sog_dir.iterdir()} | {"manifest.json"} == set(objects)
    res = publish(str(tmp_path / "out2"), scene="s", run_id="r", files={"meta": sog_dir}, reports={})
    html = (tmp_path / "out2/s/r/index.html").read_text()
    assert '"contentUrl": "sog/meta.json"' in html


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"scene": "../etc"}, "scene"),
    ({"scene": "a b"}, "scene"),
    ({"run_id": ""}, "run id"),
    ({"files": {}}, "needs the compressed scene"),
    ({"files": {"sog": Path("/nonexistent.sog")}}, "does not exist"),
    ({"files": {"sog": None, "splats": Path("x")}}, "unknown file keys"),
    ({"reports": {"bad/name": {}}}, "report name"),
])
def test_bad_input_writes_nothing(sample_sog: Path, tmp_path: Path, kwargs: dict[str, Any], match: str) -> None:
    args: dict[str, Any] = {"scene": "s", "run_id": "r", "files": {"sog": sample_sog}, "reports": {}}
    args.update(kwargs)
    with pytest.raises(InputError, match=match):
        publish(str(tmp_path / "out"), **args)
    assert not (tmp_path / "out").exists()


def test_missing_viewer_assets_fail_before_writing(sample_sog: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("SPLATFLOW_VIEWER_ASSETS", str(tmp_path / "empty"))
    with pytest.raises(DependencyMissing, match="viewer page's files are missing") as err:
        publish(str(tmp_path / "out"), scene="s", run_id="r", files={"sog": sample_sog}, reports={})
    assert "make install" in (err.value.hint or "")
    assert not (tmp_path / "out").exists()


def test_run_summary() -> None:
    s = run_summary(REPORTS)
    assert s["splats"] == 90854 and s["ratio"] == 4.25 and s["bytes"] == 1196155
    assert s["psnr"] == 27.1 and s["ssim"] == 0.88 and s["ssim_source"] == "train" and s["codec_psnr"] == 61.2
    # an evaluate report (the scene against photos) wins over training's held-out numbers
    assert run_summary({**REPORTS, "evaluate": {"psnr": 25.0}})["psnr_source"] == "evaluate"
    # sfm reports its time as timings.total; counts that went through KFP's task outputs come back as floats
    kfp = run_summary({**REPORTS, "sfm": {"timings": {"extract": 3.0, "total": 40.25}},
                       "compress": {**REPORTS["compress"], "splats": 90854.0, "bytes": 1196155.0}})
    assert kfp["seconds"]["sfm"] == 40.25 and kfp["splats"] == 90854 and isinstance(kfp["splats"], int)
    assert s["seconds"] == {"train": 600.5, "compress": 7.5}
    assert run_summary({}) == {}


def test_cli_publish_then_notify_from_the_manifest(sample_sog: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from splatflow.cli import main

    (tmp_path / "compress.json").write_text(json.dumps(REPORTS["compress"]))
    out = str(tmp_path / "out")
    assert main(["publish", out, "--scene", "guitar", "--run-id", "r1", "--sog", str(sample_sog),
                 "--report", f"compress={tmp_path / 'compress.json'}", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["manifest_uri"] == f"{out}/guitar/r1/manifest.json"
    assert json.loads(Path(result["urls"]["reports/compress.json"]).read_text()) == REPORTS["compress"]
    assert main(["publish", out, "--scene", "guitar", "--run-id", "r2", "--report", "compress"]) == 2
    assert "NAME=PATH" in capsys.readouterr().err
    assert main(["publish", out, "--scene", "guitar", "--run-id", "r2"]) == 2  # nothing to publish
    assert not (tmp_path / "out/guitar/r2").exists()
    # notify reads the manifest as its report (no target configured: nothing sent, exit 0)
    assert main(["notify", "succeeded", "--scene", "guitar", "--report", result["manifest_uri"],
                 "--target", "none"]) == 0
    assert json.loads(capsys.readouterr().out)["channel"] == "none"


def test_the_bundle_and_its_folder_are_published_with_the_manifest_last(sample_sog: Path, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """What the pipeline publishes: the .sog and the same files unpacked under sog/ (meta.json + WebP)."""
    order: list[str] = []
    real_upload, real_write = storage.upload, storage.write_bytes

    def upload(path: Path, uri: str, **kwargs: Any) -> str:
        order.append(uri)
        return real_upload(path, uri, **kwargs)

    def write_bytes(uri: str, data: bytes, **kwargs: Any) -> str:
        order.append(uri)
        return real_write(uri, data, **kwargs)

    monkeypatch.setattr(storage, "upload", upload)
    monkeypatch.setattr(storage, "write_bytes", write_bytes)
    out = str(tmp_path / "out")
    res = publish(out, scene="guitar", run_id="r1", files={"sog": sample_sog}, reports=REPORTS, unpack_sog=True)
    base = f"{out}/guitar/r1"
    objects = _objects(base)
    manifest = _check_manifest(base, objects)
    with zipfile.ZipFile(sample_sog) as zf:
        bundle = {name: zf.read(name) for name in zf.namelist()}
    assert "meta.json" in bundle and any(name.endswith(".webp") for name in bundle)
    assert {rel.removeprefix("sog/"): data for rel, data in objects.items() if rel.startswith("sog/")} == bundle
    assert objects["guitar.sog"] == sample_sog.read_bytes()
    assert manifest["content"] == "guitar.sog"  # the viewer still loads the single file
    assert res["urls"]["sog/meta.json"] == f"{base}/sog/meta.json"
    # every object first, then the manifest, then the latest pointer
    assert order[-2:] == [f"{base}/manifest.json", f"{out}/guitar/latest.json"]
    assert len(order) == res["objects"] + 2
    # deterministic: the same inputs publish the same bytes again (nothing to upload)
    again = publish(out, scene="guitar", run_id="r1", files={"sog": sample_sog}, reports=REPORTS, unpack_sog=True)
    assert again["uploaded"] == 0 and _objects(base) == objects
    with pytest.raises(InputError, match="unpack_sog needs"):
        publish(out, scene="guitar", run_id="r2", files={"sog": sample_sog, "meta": tmp_path}, reports={},
                unpack_sog=True)
