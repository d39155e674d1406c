"""One COLMAP model rule (splatflow.cameras.colmap_model_dir) for `evaluate --cameras` and `train`: the layouts
one accepts the other accepts, and what one refuses the other refuses with the same message."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from splatflow.cameras import colmap_cameras, colmap_model_dir
from splatflow.errors import InputError
from splatflow.training.scene import load_scene
from splatflow.training.synthetic import make_synthetic_sfm

pycolmap = pytest.importorskip("pycolmap")


@pytest.fixture(scope="module")
def sfm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_synthetic_sfm(tmp_path_factory.mktemp("sfm") / "scene", n_splats=60, n_points=40, n_cameras=4,
                              size=16, seed=1)


def _layout(sfm: Path, root: Path, where: str, fmt: str) -> Path:
    """A copy of the sfm folder (images/) whose model lies at ``root/where`` in binary or text form."""
    shutil.copytree(sfm / "images", root / "images")
    model = root / where
    model.mkdir(parents=True, exist_ok=True)
    rec = pycolmap.Reconstruction(str(sfm / "sparse" / "0"))
    (rec.write_binary if fmt == "bin" else rec.write_text)(str(model))
    return model


@pytest.mark.parametrize("fmt", ["bin", "txt"])
@pytest.mark.parametrize("where", ["sparse/0", "sparse", "0", "."])
def test_every_layout_is_read_alike_by_evaluate_and_train(sfm: Path, tmp_path: Path, where: str, fmt: str) -> None:
    model = _layout(sfm, tmp_path / "run", where, fmt)
    assert colmap_model_dir(tmp_path / "run") == model
    cams = colmap_cameras(tmp_path / "run")
    scene = load_scene(tmp_path / "run", resolution=16, test_every=0)
    assert [c.name for c in cams] == [v.name for v in scene.train] and len(cams) == 4
    assert colmap_model_dir(model) == model          # the model folder itself is a layout too
    assert len(colmap_cameras(model)) == 4


@pytest.mark.parametrize("missing", ["points3D", "cameras"])
def test_an_incomplete_model_is_refused_alike(sfm: Path, tmp_path: Path, missing: str) -> None:
    model = _layout(sfm, tmp_path / "run", "sparse/0", "bin")
    (model / f"{missing}.bin").unlink()
    _refused_alike(tmp_path / "run", "holds no COLMAP model")


def test_a_missing_folder_is_refused_alike(tmp_path: Path) -> None:
    _refused_alike(tmp_path / "nope", "does not exist")


def _refused_alike(path: Path, match: str) -> None:
    """`evaluate --cameras` and `train` refuse ``path`` with the same InputError, matching ``match``."""
    messages = []
    for read in (colmap_cameras, lambda p: load_scene(p, resolution=16)):
        with pytest.raises(InputError, match=match) as exc:
            read(path)
        messages.append(str(exc.value))
    assert messages[0] == messages[1]


def _rot(axis: str, degrees: float) -> np.ndarray:
    """(3, 3) rotation about the x, y or z axis."""
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    i, j = {"x": (1, 2), "y": (2, 0), "z": (0, 1)}[axis]
    m = np.eye(3)
    m[i, i], m[i, j], m[j, i], m[j, j] = c, -s, s, c
    return m


def _random_rotations(n: int, seed: int) -> np.ndarray:
    """(n, 3, 3) uniformly random rotations (normalised Gaussian quaternions)."""
    import torch

    from splatflow.render import quat_to_rotmat

    q = np.random.default_rng(seed).normal(size=(n, 4))
    return quat_to_rotmat(torch.from_numpy(q)).numpy()


def test_upright_rotation_turns_the_mean_down_axis_onto_y() -> None:
    from splatflow.cameras import upright_rotation

    rng = np.random.default_rng(1)
    world = _random_rotations(1, 2)[0]                                 # COLMAP's arbitrary world
    # level-ish cameras (small tilts, any heading about the true up), seen from that world
    cams = [_rot("y", rng.uniform(0, 360)) @ _rot("x", rng.normal(0, 8)) @ _rot("z", rng.normal(0, 8))
            for _ in range(40)]
    cam_from_world = np.stack([c.T @ world.T for c in cams])           # world -> true world -> camera
    rot, degrees = upright_rotation(cam_from_world)
    np.testing.assert_allclose(rot @ rot.T, np.eye(3), atol=1e-12)
    assert abs(np.linalg.det(rot) - 1.0) < 1e-12 and 0.0 < degrees <= 180.0
    turned = cam_from_world @ rot.T                                    # cameras in the new world
    down = turned[:, 1, :].mean(0)
    np.testing.assert_allclose(down / np.linalg.norm(down), [0, 1, 0], atol=1e-9)
    assert upright_rotation(turned)[1] < 1e-6                          # upright already: no turn
    flipped = turned @ np.diag([1.0, -1.0, -1.0])                      # upside down: a half turn
    assert abs(upright_rotation(flipped)[1] - 180.0) < 1e-6
    # cameras that look every which way agree on no down: the world stays as it is
    assert upright_rotation(_random_rotations(200, 3)) is None
