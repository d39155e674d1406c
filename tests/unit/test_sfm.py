"""SfM stage: the model and report of a real reconstruction (12 lund photos, shared by the session), read back by
an independent COLMAP binary reader and checked geometrically; bad input fails cleanly."""

from __future__ import annotations

import json
import shutil
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pytest
from PIL import Image

from splatflow.cli import main
from splatflow.errors import ImageError, InputError, OutputExistsError, SfmError

pycolmap = pytest.importorskip("pycolmap")
from splatflow.stages.sfm import sfm  # noqa: E402

PHOTOS = Path(__file__).resolve().parents[2] / "data" / "photos" / "lund"
NAMES = [f"{i:02d}.jpg" for i in range(1, 13)]


# ---------------------------------------------------------------------------- an independent COLMAP reader
def _read(f: BinaryIO, fmt: str) -> tuple[Any, ...]:
    return struct.unpack("<" + fmt, f.read(struct.calcsize("<" + fmt)))


def _records(path: Path, read_one: Callable[[BinaryIO], tuple[int, dict[str, Any]]]) -> dict[int, dict[str, Any]]:
    """A COLMAP .bin file: a uint64 count, then that many records, then nothing."""
    with open(path, "rb") as f:
        (n,) = _read(f, "Q")
        out = dict(read_one(f) for _ in range(n))
        assert f.read() == b"", f"trailing bytes in {path.name}"
    return out


def _camera(f: BinaryIO) -> tuple[int, dict[str, Any]]:
    cam_id, model_id, width, height = _read(f, "iiQQ")
    assert model_id == 1, f"camera {cam_id}: model {model_id}, expected PINHOLE (1)"
    return cam_id, {"width": width, "height": height, "params": np.array(_read(f, "4d"))}


def _image(f: BinaryIO) -> tuple[int, dict[str, Any]]:
    image_id, *qt, cam_id = _read(f, "i7di")
    name = b""
    while (c := f.read(1)) != b"\0":
        name += c
    (m,) = _read(f, "Q")
    pts = np.frombuffer(f.read(24 * m), dtype=[("x", "<f8"), ("y", "<f8"), ("id", "<i8")])
    return image_id, {"q": np.array(qt[:4]), "t": np.array(qt[4:]), "camera_id": cam_id, "name": name.decode(),
                      "xy": np.stack([pts["x"], pts["y"]], 1), "point_ids": pts["id"]}


def _point(f: BinaryIO) -> tuple[int, dict[str, Any]]:
    pid, x, y, z, r, g, b, err, length = _read(f, "Q3d3BdQ")
    track = np.frombuffer(f.read(8 * length), dtype="<i4").reshape(-1, 2)
    return pid, {"xyz": np.array([x, y, z]), "rgb": (r, g, b), "error": err, "track": track}


def read_model(sparse: Path) -> tuple[dict[int, dict[str, Any]], dict[int, dict[str, Any]], dict[int, dict[str, Any]]]:
    """cameras (id: width, height, PINHOLE params), images (id: q (w,x,y,z), t (3,), camera_id, name, xy (N, 2),
    point_ids (N,)) and points (id: xyz (3,), rgb, error, track (M, 2) of (image_id, point2D_idx))."""
    return (_records(sparse / "cameras.bin", _camera), _records(sparse / "images.bin", _image),
            _records(sparse / "points3D.bin", _point))


def rotation(q: np.ndarray) -> np.ndarray:
    w, x, y, z = q / np.linalg.norm(q)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                     [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                     [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])


# ---------------------------------------------------------------------------- the shared reconstruction
def test_report(lund_sfm: tuple[Path, dict[str, Any]]) -> None:
    out, report = lund_sfm
    assert json.loads((out / "sfm-report.json").read_text()) == report
    assert report["inputs"] == 13 and report["total"] == 12
    assert list(report["skipped"]) == ["13_truncated.jpg"] and "truncated" in report["skipped"]["13_truncated.jpg"]
    assert report["registered"] >= 11, report
    assert report["registered"] + len(report["unregistered"]) == 12
    assert report["matcher"] == "exhaustive"
    assert report["points"] > 300
    assert 0.1 < report["mean_reprojection_error"] < 1.5
    assert report["mean_track_length"] > 2.5
    assert {"extract", "match", "map", "undistort", "total"} <= set(report["timings"])
    assert report["timings"]["total"] >= sum(v for k, v in report["timings"].items() if k != "total") * 0.99
    assert report["attempts"][0]["step"] == "map" and max(a["registered"] for a in report["attempts"]) == \
        report["registered"]
    # one phone, one camera; its focal length stays near the EXIF prior (35 mm equivalent: ~0.97 x width)
    (cam,) = report["cameras"]
    assert (cam["model"], cam["width"], cam["height"]) == ("SIMPLE_RADIAL", 1024, 768)  # the input photos' size
    assert 0.6 * 1024 < cam["params"][0] < 1.4 * 1024, cam


def test_model_layout_read_independently(lund_sfm: tuple[Path, dict[str, Any]]) -> None:
    out, report = lund_sfm
    sparse = out / "sparse" / "0"
    assert {"cameras.bin", "images.bin", "points3D.bin"} <= {p.name for p in sparse.iterdir()}
    cameras, images, points = read_model(sparse)
    registered = sorted(n for n in NAMES if n not in report["unregistered"])
    assert sorted(im["name"] for im in images.values()) == registered
    assert sorted(p.name for p in (out / "images").iterdir()) == registered
    assert len(points) == report["points"]
    for im in images.values():
        cam = cameras[im["camera_id"]]
        with Image.open(out / "images" / im["name"]) as pic:
            assert pic.size == (cam["width"], cam["height"])
        assert max(cam["width"], cam["height"]) <= 800
        fx, fy, cx, cy = cam["params"]
        assert abs(cx - cam["width"] / 2) < 1 and abs(cy - cam["height"] / 2) < 1 and fx > 0 and fy > 0


def test_points_reproject_into_the_undistorted_images(lund_sfm: tuple[Path, dict[str, Any]]) -> None:
    out, report = lund_sfm
    sparse = out / "sparse" / "0"
    cameras, images, points = read_model(sparse)
    errors = []
    for pid, pt in points.items():
        assert len(pt["track"]) >= 2
        for image_id, idx in pt["track"]:
            im = images[int(image_id)]
            assert im["point_ids"][idx] == pid
            fx, fy, cx, cy = cameras[im["camera_id"]]["params"]
            xc = rotation(im["q"]) @ pt["xyz"] + im["t"]
            assert xc[2] > 0, "a point behind the camera that observes it"
            proj = np.array([fx * xc[0] / xc[2] + cx, fy * xc[1] / xc[2] + cy])
            errors.append(np.linalg.norm(proj - im["xy"][idx]))
    mean = float(np.mean(errors))
    assert mean < 1.5 and abs(mean - report["mean_reprojection_error"]) < 0.35 * report["mean_reprojection_error"]
    # the world is turned upright: the photos' mean down axis (camera +y) is the world's +y, so a viewer that
    # assumes y down shows the street level (it was ~60 degrees off in COLMAP's own frame on these photos)
    down = np.mean([rotation(im["q"])[1] for im in images.values()], axis=0)
    np.testing.assert_allclose(down / np.linalg.norm(down), [0.0, 1.0, 0.0], atol=1e-6)
    assert report["upright_degrees"] is not None and 0.0 <= report["upright_degrees"] <= 180.0
    # the photos walk down a street: camera centres move steadily away from the first one
    centres = {im["name"]: -rotation(im["q"]).T @ im["t"] for im in images.values()}
    names = sorted(centres)
    dist = [np.linalg.norm(centres[n] - centres[names[0]]) for n in names]
    assert np.corrcoef(np.arange(len(dist)), dist)[0, 1] > 0.9, dist


def test_output_exists_is_refused(lund_sfm: tuple[Path, dict[str, Any]], capsys: pytest.CaptureFixture[str]) -> None:
    out, _ = lund_sfm
    with pytest.raises(OutputExistsError):
        sfm(PHOTOS, out)
    assert main(["sfm", str(PHOTOS), str(out)]) == 2
    assert "already exists" in capsys.readouterr().err


# ---------------------------------------------------------------------------- bad input
def test_no_images_one_image_and_bad_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("x")
    with pytest.raises(ImageError, match="no images"):
        sfm(empty, tmp_path / "out")
    one = tmp_path / "one"
    one.mkdir()
    shutil.copy(PHOTOS / "01.jpg", one)
    (one / "02.jpg").write_bytes(b"\xff\xd8\xff garbage")
    with pytest.raises(ImageError, match=r"only 1 usable image\(s\).*1 unreadable: 02.jpg"):
        sfm(one, tmp_path / "out")
    with pytest.raises(InputError, match="does not exist"):
        sfm(tmp_path / "missing", tmp_path / "out")
    with pytest.raises(InputError, match="matcher 'vocab' is not one of"):
        sfm(PHOTOS, tmp_path / "out", matcher="vocab")
    with pytest.raises(InputError, match="min_registered"):
        sfm(PHOTOS, tmp_path / "out", min_registered=0)
    assert main(["sfm", str(empty), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "error: no images" in err and "hint:" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "one"]


def test_images_that_do_not_overlap_fail_with_the_report(tmp_path: Path) -> None:
    src = tmp_path / "noise"
    src.mkdir()
    rng = np.random.default_rng(0)
    for i in range(5):
        Image.fromarray(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)).save(src / f"{i}.png")
    with pytest.raises(SfmError, match="registered 0 of 5 images") as info:  # parents created for it go too
        sfm(src, tmp_path / "runs" / "r1" / "out", max_side=320, max_features=1024)
    report = info.value.report
    assert report["total"] == 5 and report["registered"] == 0
    assert report["unregistered"] == [f"{i}.png" for i in range(5)]
    steps = [a["step"] for a in report["attempts"]]
    assert steps == ["map", "map_relaxed", "guided_fallback"]  # every fallback was tried
    assert info.value.exit_code == 4 and "overlap" in (info.value.hint or "")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["noise"]  # no output, no temporary folders


def test_auto_matcher_choice(tmp_path: Path) -> None:
    from splatflow.stages import sfm as sfm_module

    frames = tmp_path / "frames"
    frames.mkdir()
    assert sfm_module._is_video(frames, ["frame_000001.jpg", "frame_000010.jpg"])
    assert not sfm_module._is_video(frames, ["frame_000001.jpg", "IMG_1.jpg"])
    (tmp_path / "ingest-report.json").write_text(json.dumps({"content": "video"}))
    assert sfm_module._is_video(frames, ["a.jpg"])
    # an ingest output folder is accepted in place of its images/ folder
    (frames / "images").mkdir()
    assert sfm_module._images_folder(frames) == frames / "images"
    assert sfm_module._images_folder(PHOTOS) == PHOTOS


@pytest.mark.slow
def test_all_29_lund_photos_register(shared_data: Path, tmp_path: Path) -> None:
    from splatflow.stages.ingest import ingest

    photos = shared_data / "photos" / "lund" / "images"
    if not photos.is_dir():
        pytest.skip("the 29 lund photos are not in ../shared/data")
    ingest(str(photos), tmp_path / "ingest", max_side=800)
    report = sfm(tmp_path / "ingest", tmp_path / "sfm", max_side=800, max_features=4096)
    assert report["total"] == 29 and report["registered"] >= 27, report
    assert report["mean_reprojection_error"] < 1.5 and report["points"] > 1000
