"""The compiled CPU kernels: built once and cached per source, flags and CPU; never at import; a clear error and
the torch fallback where no compiler exists."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from splatflow import kernels

needs_compiler = pytest.mark.skipif(kernels.compiler() is None, reason="no C++ compiler on this machine")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPLATFLOW_KERNEL")}
    env.update(extra)
    return env


@needs_compiler
def test_build_is_cached_by_source_and_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPLATFLOW_KERNEL_DIR", str(tmp_path))
    first = kernels.build()
    assert first.parent == tmp_path and first.is_file()
    assert first.stat().st_mode & 0o777 == 0o755  # readable by every user (an image's cache is built by root)
    stamp = first.stat().st_mtime_ns
    assert kernels.build() == first and first.stat().st_mtime_ns == stamp  # found, not rebuilt
    monkeypatch.setenv("SPLATFLOW_KERNEL_ARCH", "x86-64-v2" if os.uname().machine == "x86_64" else "armv8-a")
    other = kernels.library_path()
    assert other != first  # other flags, another library
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".build-")] == []  # no temp file left


def test_import_neither_builds_nor_loads_the_kernels(tmp_path: Path) -> None:
    code = ("import sys, splatflow, splatflow.cli, splatflow.render\n"
            "assert 'splatflow.kernels' not in sys.modules, 'kernels imported'\n"
            "import os; assert not os.listdir(sys.argv[1]), 'something was built'\n")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=120,
                          env=_env(SPLATFLOW_KERNEL_DIR=str(tmp_path)))
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_no_compiler_is_a_clear_error_and_rendering_falls_back_to_torch(tmp_path: Path) -> None:
    code = (
        "import logging, torch; logging.basicConfig(level=logging.WARNING)\n"
        "from splatflow import render\n"
        "assert render.resolve_backend('auto', 'cpu') == 'torch'\n"
        "n = 5; rgb, a = render.rasterize(torch.randn(n, 3) + torch.tensor([0, 0, 4.0]), torch.randn(n, 4), "
        "torch.full((n, 3), 0.3), torch.full((n,), 0.8), torch.rand(n, 3), torch.eye(4), "
        "torch.tensor([[20.0, 0, 16], [0, 20.0, 12], [0, 0, 1]]), 32, 24, sh_degree=None)\n"
        "assert float(a.max()) > 0\n"
        "try:\n"
        "    render.rasterize(torch.zeros(1, 3), torch.ones(1, 4), torch.ones(1, 3), torch.ones(1), "
        "torch.ones(1, 3), torch.eye(4), torch.eye(3), 8, 8, sh_degree=None, backend='cpu')\n"
        "except Exception as e:\n"
        "    print('ERR', type(e).__name__, e)\n"
    )
    env = _env(SPLATFLOW_KERNEL_DIR=str(tmp_path), CXX="/nonexistent/c++", PATH="/nonexistent")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "no C++ compiler found" in proc.stderr and "apt-get install g++" in proc.stderr  # warned once
    assert proc.stderr.count("no C++ compiler found") == 1
    assert "ERR DependencyMissing no C++ compiler found" in proc.stdout  # asked for by name: the error itself


def test_cli_build_and_info(tmp_path: Path) -> None:
    env = _env(SPLATFLOW_KERNEL_DIR=str(tmp_path))
    info = subprocess.run([sys.executable, "-m", "splatflow.kernels", "info"], capture_output=True, text=True,
                          timeout=60, env=env)
    assert info.returncode == 0 and "not built" in info.stdout and str(tmp_path) in info.stdout
    bad = subprocess.run([sys.executable, "-m", "splatflow.kernels", "build"], capture_output=True, text=True,
                         timeout=60, env={**env, "CXX": "/nonexistent/c++", "PATH": "/nonexistent"})
    assert bad.returncode == 3 and "error: no C++ compiler found" in bad.stderr and "hint:" in bad.stderr
    assert not any(tmp_path.iterdir())
    if kernels.compiler() is not None:
        ok = subprocess.run([sys.executable, "-m", "splatflow.kernels", "build"], capture_output=True, text=True,
                            timeout=300, env=env)
        assert ok.returncode == 0, ok.stderr
        assert Path(ok.stdout.strip()).is_file() and Path(ok.stdout.strip()).parent == tmp_path
