"""Cameras: the .npz camera file, COLMAP models written by pycolmap, the automatic orbit, and bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from splatflow.cameras import (
    Camera,
    colmap_cameras,
    dense_region,
    load_cameras,
    npz_cameras,
    orbit_cameras,
    parse_size,
)
from splatflow.errors import InputError
from splatflow.gaussians import SH_C0, GaussianCloud, logit
from splatflow.io.ply import read_ply
from splatflow.render import render_cloud


@pytest.fixture(scope="module")
def garden(data_dir: Path) -> Path:
    return data_dir / "cameras" / "test_garden.npz"


def _write_colmap(cams: list[Camera], folder: Path) -> Path:
    """A COLMAP sparse model with one PINHOLE camera and one registered image per camera, via pycolmap."""
    pycolmap = pytest.importorskip("pycolmap")
    rec = pycolmap.Reconstruction()
    for i, c in enumerate(cams, start=1):
        cam = pycolmap.Camera.create_from_model_name(i, "PINHOLE", float(c.K[0, 0]), c.width, c.height)
        cam.params = [c.K[0, 0], c.K[1, 1], c.K[0, 2], c.K[1, 2]]
        rec.add_camera_with_trivial_rig(cam)
        pose = pycolmap.Rigid3d(pycolmap.Rotation3d(c.viewmat[:3, :3].astype(np.float64)),
                                c.viewmat[:3, 3].astype(np.float64))
        rec.add_image_with_trivial_frame(pycolmap.Image(name=f"img_{i:02d}.jpg", camera_id=i, image_id=i), pose)
    model = folder / "sparse" / "0"
    model.mkdir(parents=True)
    rec.write_binary(str(model))
    return folder


def test_npz_cameras(garden: Path) -> None:
    cams = npz_cameras(garden)
    data = np.load(garden)
    assert len(cams) == 3 and {(c.width, c.height) for c in cams} == {(648, 420)}
    np.testing.assert_array_equal(cams[1].K, data["Ks"][1])
    np.testing.assert_array_equal(cams[2].viewmat, data["viewmats"][2])
    # the camera centre is where the view matrix maps to the origin
    c = cams[0]
    np.testing.assert_allclose(c.viewmat[:3, :3] @ c.center + c.viewmat[:3, 3], 0, atol=1e-5)


def test_colmap_model_round_trip(garden: Path, tmp_path: Path) -> None:
    cams = npz_cameras(garden)
    folder = _write_colmap(cams, tmp_path / "sfm")
    for path in (folder, folder / "sparse" / "0"):  # the sfm output folder or the model folder itself
        back = colmap_cameras(path)
        assert [c.name for c in back] == ["img_01.jpg", "img_02.jpg", "img_03.jpg"]
        for a, b in zip(cams, back, strict=True):
            np.testing.assert_allclose(b.viewmat, a.viewmat, atol=1e-6)
            np.testing.assert_allclose(b.K, a.K, atol=1e-4)
            assert (b.width, b.height) == (648, 420)
    half = load_cameras(folder, views=2, size=(324, 210))
    assert len(half) == 2 and (half[0].width, half[0].height) == (324, 210)
    np.testing.assert_allclose(half[0].K[:2], cams[0].K[:2] / 2, rtol=1e-6)


def test_real_cameras_see_the_garden_points(garden: Path) -> None:
    """The npz holds the garden's SfM points: as small splats they must fill a good part of each real view."""
    data = np.load(garden)
    pts = data["means3d"][::8].astype(np.float32)
    rgb = data["colors"][::8].astype(np.float32) / 255.0
    n = len(pts)
    cloud = GaussianCloud(means=pts, scales=np.full((n, 3), np.log(0.02), np.float32),
                          quats=np.tile(np.array([1, 0, 0, 0], np.float32), (n, 1)),
                          opacities=logit(np.full(n, 0.9, np.float32)), sh0=(rgb - 0.5) / SH_C0)
    cam = load_cameras(garden, views=1, size=(162, 105))[0]
    img = render_cloud(cloud, cam, with_alpha=True)
    assert img[..., 3].mean() > 0.3
    # the splats carry the points' colours: the rendered mean colour is close to theirs
    seen = img[..., 3] > 0.9
    assert np.abs(img[seen, :3].mean(0) - rgb.mean(0)).max() < 0.15


def test_orbit_looks_at_the_dense_region(data_dir: Path) -> None:
    cloud = read_ply(data_dir / "splats" / "fruit_drops_minimal.ply")
    center, radius = dense_region(cloud)
    cams = orbit_cameras(cloud, 5, 64, 48)
    assert [c.name for c in cams] == [f"orbit_{i:03d}" for i in range(5)]
    dists = [float(np.linalg.norm(c.center - center)) for c in cams]
    np.testing.assert_allclose(dists, dists[0], rtol=1e-5)
    assert dists[0] > radius
    for c in cams:
        p = c.K @ (c.viewmat[:3, :3] @ center + c.viewmat[:3, 3])
        np.testing.assert_allclose(p[:2] / p[2], [32, 24], atol=1e-3)  # the centre is in the middle of the view
        assert c.center @ np.array([0, -1, 0]) > center @ np.array([0, -1, 0])  # above it (world up is -y)
    with pytest.raises(InputError, match="orbit views"):
        orbit_cameras(cloud, 0)


def test_dense_region_ignores_far_outliers() -> None:
    rng = np.random.default_rng(0)
    pts = np.concatenate([rng.normal(size=(900, 3)) * 0.5, rng.normal(size=(100, 3)) * 200]).astype(np.float32)
    n = len(pts)
    cloud = GaussianCloud(means=pts, scales=np.zeros((n, 3), np.float32),
                          quats=np.tile(np.array([1, 0, 0, 0], np.float32), (n, 1)),
                          opacities=np.zeros(n, np.float32), sh0=np.zeros((n, 3), np.float32))
    center, radius = dense_region(cloud)
    assert np.linalg.norm(center) < 0.3 and radius < 3.0


def test_bad_camera_input(tmp_path: Path, garden: Path) -> None:
    bad = tmp_path / "bad.npz"
    np.savez(bad, viewmats=np.zeros((2, 4, 4)))
    with pytest.raises(InputError, match="lacks the keys Ks, width, height"):
        npz_cameras(bad)
    (tmp_path / "junk.npz").write_text("not numpy")
    with pytest.raises(InputError, match="not a readable .npz"):
        npz_cameras(tmp_path / "junk.npz")
    with pytest.raises(InputError, match="holds no COLMAP model"):
        colmap_cameras(tmp_path)
    with pytest.raises(InputError, match="do not exist"):
        load_cameras(tmp_path / "missing")
    (tmp_path / "cams.txt").write_text("x")
    with pytest.raises(InputError, match="not a camera source"):
        load_cameras(tmp_path / "cams.txt")
    with pytest.raises(InputError, match="NaN or Inf"):
        Camera(np.full((4, 4), np.nan), np.eye(3), 10, 10, "nan")
    with pytest.raises(InputError, match="focal length"):
        Camera(np.eye(4), np.zeros((3, 3)), 10, 10, "flat")


def test_parse_size() -> None:
    assert parse_size("256x128") == (256, 128)
    assert parse_size("64X64") == (64, 64)
    for text in ("256", "0x10", "axb", "10x10x10"):
        with pytest.raises(InputError, match="image size"):
            parse_size(text)
