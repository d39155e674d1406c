"""The one device resolver (splatflow.devices) and the library functions that use it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from splatflow.devices import resolve_device
from splatflow.errors import EnvironmentProblem, InputError


def test_names() -> None:
    auto = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device(None).type == auto and resolve_device("auto").type == auto
    assert resolve_device("cpu") == torch.device("cpu")
    for bad in ("foo", "CPU", "cuda:", "cuda:x", "mps", ""):
        with pytest.raises(InputError, match="unknown device") as exc:
            resolve_device(bad)
        assert exc.value.exit_code == 2 and "cuda:N" in (exc.value.hint or "")
    if torch.cuda.is_available():
        assert resolve_device("cuda:0") == torch.device("cuda:0")
    else:
        for name in ("cuda", "cuda:0"):
            with pytest.raises(EnvironmentProblem, match="CUDA is not available") as env:
                resolve_device(name)
            assert env.value.exit_code == 3 and "--device cpu" in (env.value.hint or "")


def test_the_library_functions_refuse_an_unknown_device_first(tmp_path: Path) -> None:
    """train, compress, evaluate and render_cloud raise the same InputError (not a torch RuntimeError or a
    ValueError), before looking at their (here missing) input files."""
    from splatflow.cameras import Camera, intrinsics
    from splatflow.evaluate import evaluate
    from splatflow.gaussians import GaussianCloud
    from splatflow.render import render_cloud
    from splatflow.stages.compress import compress
    from splatflow.stages.train import train

    calls = [
        lambda: train(tmp_path / "sfm", tmp_path / "out", device="foo"),
        lambda: compress(tmp_path / "in.ply", tmp_path / "out.sog", device="foo"),
        lambda: evaluate(tmp_path / "a.ply", tmp_path / "b.ply", device="foo"),
    ]
    cloud = GaussianCloud.from_torch({"means": torch.zeros(1, 3), "scales": torch.zeros(1, 3),
                                      "quats": torch.tensor([[1.0, 0, 0, 0]]), "opacities": torch.zeros(1),
                                      "sh0": torch.zeros(1, 3), "shN": torch.zeros(1, 0, 3)})
    cam = Camera(torch.eye(4).numpy(), intrinsics(16, 16), 16, 16)
    calls.append(lambda: render_cloud(cloud, cam, device="foo"))
    for call in calls:
        with pytest.raises(InputError) as exc:
            call()
        assert str(exc.value) == "unknown device 'foo' (use --device auto, cpu, cuda or cuda:N)"
    assert list(tmp_path.iterdir()) == []
