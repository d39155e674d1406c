"""Each locally built stage image (`make images-local`): starts as uid 10001, imports what its stage imports, holds
no compiler, pip cache or build sources, has CPU torch, and stays within its size budget."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from splatflow.spec import STAGE_NAMES as STAGES

# tests/unit/test_images.py by path: its import graph of each stage (the same one the static extras test uses)
_spec = importlib.util.spec_from_file_location("splatflow_test_images",
                                               Path(__file__).parents[1] / "unit" / "test_images.py")
assert _spec is not None and _spec.loader is not None
_static = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = _static  # its dataclasses look their module up there
_spec.loader.exec_module(_static)

# The CPU images carry CPU torch (about 1 GB of the image); a CUDA torch by mistake adds several GB
MAX_BYTES = 1_800_000_000
COMPILERS = ("cc", "gcc", "g++", "c++", "clang", "nvcc", "make", "ld", "as")


def _run(engine: str, image: str, script: str, *, user: str | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [engine, "run", "--rm", "--network=none"] + (["--user", user] if user else []) + [image, "sh", "-c", script]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def _stage_modules(stage: str) -> list[str]:
    """Third-party top-level modules that splatflow.stages.<stage> reaches (lazy imports too)."""
    imports = _static._third_party_imports([f"splatflow.stages.{stage}"])
    skip = {name for (s, name) in {**_static.NOT_REACHED, **_static.NOT_REACHED_ON_CPU} if s == stage}
    return sorted(set(imports) - skip)


@pytest.mark.parametrize("stage", STAGES)
def test_image_starts_as_uid_10001_and_imports_its_stage(stage: str, engine: str,
                                                         stage_images: dict[str, str]) -> None:
    modules = _stage_modules(stage)
    assert "numpy" in modules and "torch" in modules  # the import graph is not empty
    names = [f"splatflow_kfp.components.{stage}", f"splatflow.stages.{stage}", *modules]
    check = ("import json, os, torch, importlib; "
             f"[importlib.import_module(m) for m in {names!r}]; "
             "print(json.dumps({'uid': os.getuid(), 'gid': os.getgid(), 'cuda': torch.version.cuda, "
             "'kernel_dir': os.environ.get('SPLATFLOW_KERNEL_DIR'), "
             "'kernel_dir_exists': os.path.isdir(os.environ.get('SPLATFLOW_KERNEL_DIR', '/nonexistent'))}))")
    proc = _run(engine, stage_images[stage], f"splatflow --version && python -c \"{check}\"")
    assert proc.returncode == 0, proc.stderr[-3000:]
    version, facts = proc.stdout.strip().splitlines()[-2:]
    assert version.startswith("splatflow ")
    info = json.loads(facts)
    assert (info["uid"], info["gid"]) == (10001, 10001)
    assert info["cuda"] is None  # the CPU build of torch
    assert info["kernel_dir"] == "/opt/splatflow/kernels" and info["kernel_dir_exists"]


def test_train_image_loads_its_prebuilt_kernels_without_a_compiler(engine: str,
                                                                   stage_images: dict[str, str]) -> None:
    """The CPU train image trains with the compiled rasterizer: the library built in the builder loads (a missing
    or mismatched cache would need a compiler, which the image does not have, and fall back to torch)."""
    check = ("from splatflow import kernels, render; kernels.load(); "
             "print(render.resolve_backend('auto', 'cpu'), kernels.library_path())")
    proc = _run(engine, stage_images["train"], f'python -c "{check}"', user="10001")
    assert proc.returncode == 0, proc.stderr[-3000:]
    backend, path = proc.stdout.split()
    assert backend == "cpu" and path.startswith("/opt/splatflow/kernels/raster_cpu-")


@pytest.mark.parametrize("stage", STAGES)
def test_image_has_no_compilers_caches_or_sources(stage: str, engine: str, stage_images: dict[str, str]) -> None:
    # as root, so that every folder can be searched; -xdev: the image's own file system only. Debian's own wheels
    # for ensurepip (/usr/share/python-wheels, python3-venv's dependencies) belong to the base's python3
    script = ("for c in " + " ".join(COMPILERS) + "; do command -v $c && echo FOUND $c; done; "
              "find / -xdev -path /usr/share/python-wheels -prune -o "
              "\\( -path '*/.cache/pip' -o -name 'pip-ephem-wheel-cache*' -o -name '*.whl' "
              "-o -path /src -o -path /wheels -o -name 'pip-ca' \\) -print; "
              "ls /var/lib/apt/lists | grep -v -e '^lock$' -e '^partial$' -e '^auxfiles$' | sed 's/^/APT /'; "
              "echo done")
    proc = _run(engine, stage_images[stage], script, user="0")
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert lines and lines[-1] == "done", proc.stdout
    assert lines[:-1] == [], f"{stage_images[stage]} holds {lines[:-1]}"


def test_image_sizes(engine: str, stage_images: dict[str, str]) -> None:
    sizes = {}
    for stage, image in stage_images.items():
        out = subprocess.run([engine, "image", "inspect", "--format", "{{.Size}}", image], capture_output=True,
                             text=True, check=True).stdout
        sizes[stage] = int(out.strip())
    print("\n" + "\n".join(f"{stage:9s} {stage_images[stage]:50s} {size / 1e6:7.0f} MB"
                           for stage, size in sizes.items()))
    too_big = {stage: size for stage, size in sizes.items() if size > MAX_BYTES}
    assert not too_big, f"over {MAX_BYTES / 1e9:.1f} GB: {too_big}"
    assert min(sizes.values()) > 300_000_000  # torch is in every image: a tiny image is a broken build
