"""The one place stage image names are computed: ``<registry>/splatflow-<stage>:<tag>``.

Registry and tag are chosen at compile time (when the component modules are imported) from the environment,
which the Makefile fills from its ``REGISTRY`` / ``IMAGE_TAG`` variables:

- ``SPLATFLOW_REGISTRY`` (default ``ghcr.io/splatflow``),
- ``SPLATFLOW_IMAGE_TAG`` (default: the short git commit of this checkout, else ``latest``).

It also says how each image is built (:func:`build_spec`): which Dockerfile (``images/cpu.Dockerfile`` or
``images/gpu.Dockerfile``) and which splatflow extras; ``images/build.py`` (``make images``) builds exactly
:func:`all_images` from it. This module imports no kfp, so the image builder and the manifests tests can use it too.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from functools import cache
from pathlib import Path

STAGES: tuple[str, ...] = ("ingest", "sfm", "train", "compress", "publish", "notify")
GPU_STAGES: tuple[str, ...] = ("train", "compress")
CPU_DOCKERFILE = "images/cpu.Dockerfile"
GPU_DOCKERFILE = "images/gpu.Dockerfile"
#: the splatflow extras each stage's image installs (tests/unit/test_images.py checks that they cover every module
#: the stage imports): every stage records its failure under output_uri (storage); ingest decodes videos and HEIC
#: photos (av, pillow-heif: sfm); compress renders the SOG against the PLY for its report (render)
EXTRAS: dict[str, tuple[str, ...]] = {
    "ingest": ("sfm", "storage"),
    "sfm": ("sfm", "storage"),
    "train": ("train", "storage"),
    "compress": ("render", "storage"),
    "publish": ("storage",),
    "notify": ("storage",),
}
DEFAULT_REGISTRY = "ghcr.io/splatflow"
_REPO = Path(__file__).resolve().parents[1]
# Docker reference grammar, simplified: a registry host[:port] with an optional path; a tag of 1-128 chars.
_REGISTRY_RE = re.compile(r"^[a-z0-9]+([._-][a-z0-9]+)*(:[0-9]+)?(/[a-z0-9]+([._-][a-z0-9]+)*)*$")
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


@cache
def git_commit(repo: Path = _REPO) -> str | None:
    """The short commit of ``repo`` (``None`` outside a git checkout or without git)."""
    try:
        out = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short=12", "HEAD"],
                             capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def registry() -> str:
    """The image registry (``SPLATFLOW_REGISTRY``), validated; no trailing slash."""
    value = os.environ.get("SPLATFLOW_REGISTRY", "").strip().rstrip("/") or DEFAULT_REGISTRY
    if not _REGISTRY_RE.match(value):
        raise ValueError(f"SPLATFLOW_REGISTRY={value!r} is not a valid image registry "
                         "(expected e.g. 123456789012.dkr.ecr.eu-west-1.amazonaws.com or registry.local:5000/team)")
    return value


def tag() -> str:
    """The image tag (``SPLATFLOW_IMAGE_TAG``, else the git commit, else ``latest``), validated."""
    value = os.environ.get("SPLATFLOW_IMAGE_TAG", "").strip() or git_commit() or "latest"
    if not _TAG_RE.match(value):
        raise ValueError(f"SPLATFLOW_IMAGE_TAG={value!r} is not a valid image tag "
                         "(letters, digits, '_', '.', '-'; at most 128 characters)")
    return value


def image_for(stage: str) -> str:
    """The image of one stage, e.g. ``ghcr.io/splatflow/splatflow-train:3c4b782a1b2c``."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; the stages are {', '.join(STAGES)}")
    return f"{registry()}/splatflow-{stage}:{tag()}"


def all_images() -> dict[str, str]:
    """stage -> image, for every stage."""
    return {stage: image_for(stage) for stage in STAGES}


@dataclass(frozen=True)
class BuildSpec:
    """How one stage image is built: ``dockerfile`` (relative to the repo root) with ``--build-arg STAGE=stage
    --build-arg EXTRAS=extras``, tagged ``image``."""

    stage: str
    image: str
    dockerfile: str
    extras: tuple[str, ...]

    @property
    def gpu(self) -> bool:
        return self.dockerfile == GPU_DOCKERFILE


def build_spec(stage: str, *, cpu_only: bool = False) -> BuildSpec:
    """The build of ``stage``'s image; ``cpu_only``: the GPU stages from the CPU Dockerfile too (local and CI runs
    on a machine without CUDA, under the same image names)."""
    gpu = stage in GPU_STAGES and not cpu_only
    return BuildSpec(stage=stage, image=image_for(stage), dockerfile=GPU_DOCKERFILE if gpu else CPU_DOCKERFILE,
                     extras=EXTRAS[stage])


def build_specs(*, cpu_only: bool = False) -> list[BuildSpec]:
    """Every stage's build, in pipeline order."""
    return [build_spec(stage, cpu_only=cpu_only) for stage in STAGES]


if __name__ == "__main__":  # `python -m components.images` prints "stage image dockerfile extras", one line a stage
    import sys

    for _spec in build_specs(cpu_only="--cpu" in sys.argv[1:]):
        print(_spec.stage, _spec.image, _spec.dockerfile, ",".join(_spec.extras))
