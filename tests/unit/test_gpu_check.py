"""`make gpu-check` in its CPU dry-run form: the script that spends scarce GPU time runs end to end here first."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_check_dry_run_passes_every_check(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--dry-run", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((tmp_path / "gpu-check-dryrun.json").read_text())
    assert result["dry_run"] is True and result["ok"] is True
    checks = result["checks"]
    assert set(checks) == {"render", "train", "codec", "agree"}
    assert all(c["ok"] and "error" not in c for c in checks.values())
    assert min(v["cpu_vs_torch_db"] for v in checks["render"]["views"]) >= 60
    assert checks["train"]["iterations"] == 30 and checks["train"]["splats"] > 0
    assert checks["train"]["psnr_train"] > checks["train"]["psnr_test_initial"]
    assert checks["codec"]["bytes"] > 0 and checks["agree"]["size_ratio"] == 1.0
    assert (tmp_path / "gpu-check-dryrun.md").read_text().startswith("# GPU check (dry run on CPU)")


def test_gpu_check_without_cuda_says_what_to_do() -> None:
    import pytest
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is present: the real check would start")
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py")], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)
    assert proc.returncode == 3
    assert "needs a CUDA GPU" in proc.stderr and "--dry-run" in proc.stderr
