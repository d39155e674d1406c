"""The core library imports no kfp: every module of src/splatflow loads with kfp absent from sys.modules."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "splatflow"


def test_core_library_imports_no_kfp() -> None:
    modules = sorted(
        "splatflow." + ".".join(p.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__")
        for p in SRC.rglob("*.py") if p.name != "__main__.py"
    )
    assert len(modules) > 20 and "splatflow.stages.compress" in modules
    code = ("import importlib, sys\n"
            f"for m in {modules!r}:\n    importlib.import_module(m.removesuffix('.'))\n"
            "bad = sorted(m for m in sys.modules if m == 'kfp' or m.startswith('kfp.'))\n"
            "print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"core modules pulled in kfp: {out.stdout}"
