"""One COLMAP model rule (splatflow.cameras.colmap_model_dir) for `evaluate --cameras` and `train`: the layouts
one accepts the other accepts, and what one refuses the other refuses with the same message."""

from __future__ import annotations

import shutil
from pathlib import Path

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
