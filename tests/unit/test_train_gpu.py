"""The training stage on CUDA with gsplat (skipped without a GPU): both strategies, the splat budget, the
report and a PLY that reads back. Same synthetic scene as the CPU tests, at a size where gsplat is quick."""

from __future__ import annotations

from pathlib import Path

import pytest

from splatflow.io.ply import read_ply
from splatflow.stages.train import train
from splatflow.training.synthetic import make_synthetic_sfm

pytest.importorskip("pycolmap")


@pytest.fixture(scope="module")
def sfm64(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_synthetic_sfm(tmp_path_factory.mktemp("sfm") / "scene", n_splats=600, n_points=200, n_cameras=12,
                              size=64, seed=5)


@pytest.mark.gpu
@pytest.mark.parametrize("strategy", ["default", "mcmc"])
def test_gsplat_training_respects_the_budget_and_improves(sfm64: Path, tmp_path: Path, strategy: str) -> None:
    pytest.importorskip("gsplat")
    report = train(sfm64, tmp_path / "out", iterations=1500, max_splats=1000, strategy=strategy, device="cuda",
                   resolution=64, checkpoint_every=500)
    assert report["backend"] == "gsplat" and report["device"].startswith("cuda")
    assert report["peak_memory_kind"] == "cuda_max_memory_allocated" and report["peak_memory_bytes"] > 0
    assert report["splats"] <= 1000
    assert report["psnr_test"] > report["psnr_test_initial"] + 6.0
    assert len(read_ply(tmp_path / "out" / "splats.ply", on_invalid="error")) == report["splats"]


@pytest.mark.gpu
def test_gsplat_resumes_from_a_mid_run_checkpoint(sfm64: Path, tmp_path: Path) -> None:
    """gsplat's strategy state and the optimizers survive a checkpoint: drop the final checkpoint of a run so the
    newest is the mid-run one, run again, and end close to the uninterrupted run (gsplat's CUDA kernels are not
    bit-deterministic, hence a tolerance)."""
    pytest.importorskip("gsplat")
    opts = {"iterations": 400, "max_splats": 1000, "device": "cuda", "resolution": 64, "checkpoint_every": 200}
    out = tmp_path / "out"
    full = train(sfm64, out, **opts)
    (out / "checkpoints" / "step-0000400.pt").unlink()
    resumed = train(sfm64, out, **opts)
    assert resumed["resumed_from_step"] == 200
    assert resumed["splats"] <= 1000
    assert abs(resumed["psnr_test"] - full["psnr_test"]) < 0.5
