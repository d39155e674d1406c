"""The one place stage image names are computed: ``<registry>/splatflow-<stage>:<tag>``.

Registry and tag are chosen at compile time (when the component modules are imported) from the environment,
which the Makefile fills from its ``REGISTRY`` / ``IMAGE_TAG`` variables:

- ``SPLATFLOW_REGISTRY`` (default ``ghcr.io/splatflow``),
- ``SPLATFLOW_IMAGE_TAG`` (default: the short git commit of this checkout, else ``latest``).

This module imports no kfp, so the image builder and the manifests tests can use it too.
"""

from __future__ import annotations

import os
import re
import subprocess
from functools import cache
from pathlib import Path

STAGES: tuple[str, ...] = ("ingest", "sfm", "train", "compress", "publish", "notify")
GPU_STAGES: tuple[str, ...] = ("train", "compress")
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


if __name__ == "__main__":  # `python -m components.images` prints one "stage image" line per stage
    for _stage, _image in all_images().items():
        print(_stage, _image)
