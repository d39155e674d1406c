"""What `pip install .` puts into site-packages: the project's own two packages, nothing with a generic name."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_wheel_holds_only_splatflow_and_splatflow_kfp(tmp_path: Path) -> None:
    """The wheel `pip install .` builds: top-level packages splatflow (the core) and splatflow_kfp (the KFP layer),
    no `components` or `pipelines` (names of other PyPI distributions); the files the stages read at run time
    (the kernels' source, the viewer settings, the example parameters) are inside."""
    tree = tmp_path / "tree"  # a copy: an in-tree build would leave build/ and *.egg-info in the checkout
    shutil.copytree(ROOT / "src", tree / "src", ignore=shutil.ignore_patterns("*.egg-info", "__pycache__", "assets",
                                                                               "*.so"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, tree / name)
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(tmp_path), str(tree)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (wheel,) = tmp_path.glob("splatflow-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/", 1)[0] for n in names}
    assert {t for t in top if not t.endswith(".dist-info")} == {"splatflow", "splatflow_kfp"}, top
    for needed in ("splatflow/kernels/raster_cpu.cpp", "splatflow/viewer/default-settings.json",
                   "splatflow_kfp/pipelines/params.example.yaml", "splatflow_kfp/components/train.py",
                   "splatflow/spec.py", "splatflow/options.py"):
        assert needed in names, needed
    assert not [n for n in names if "/tests/" in n or n.startswith(("components/", "pipelines/"))]
