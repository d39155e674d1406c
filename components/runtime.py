"""Helpers that component bodies call inside the stage image: quality presets, scene names, the final status.

This module imports neither kfp nor anything heavy, so it runs in every stage image and in plain unit tests.
The quality presets live here and only here: the pipeline parameter ``quality`` names one, and the ingest, sfm
and train components look their settings up with :func:`preset`.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import unquote, urlparse


@dataclass(frozen=True)
class Preset:
    """Settings one quality preset stands for.

    ``max_side``: the longest image side kept by ingest and used by sfm (px); ``resolution``: the longest side of
    the training images (px); ``iterations``: training steps.
    """

    max_side: int
    resolution: int
    iterations: int


PRESETS: dict[str, Preset] = {
    # CPU smoke run (CI, `make run-local`): minutes on a laptop, a recognisable but rough scene.
    "tiny": Preset(max_side=640, resolution=128, iterations=30),
    # a quick look on a GPU node
    "preview": Preset(max_side=1200, resolution=800, iterations=3000),
    # the stage defaults (docs/STAGES.md)
    "standard": Preset(max_side=1600, resolution=1600, iterations=7000),
    # the full 3DGS schedule
    "high": Preset(max_side=2400, resolution=2400, iterations=30000),
}
DEFAULT_QUALITY = "standard"


def preset(quality: str, iterations: int = 0) -> dict[str, int]:
    """The settings of preset ``quality``; ``iterations`` > 0 overrides the preset's training steps."""
    key = quality.strip().lower()
    if key not in PRESETS:
        from splatflow.errors import InputError

        raise InputError(f"unknown quality preset {quality!r}",
                         hint=f"use one of: {', '.join(PRESETS)}")
    if iterations < 0:
        from splatflow.errors import InputError

        raise InputError(f"iterations must be 0 (use the preset's) or positive, got {iterations}",
                         hint="pass iterations=0 to train for the preset's number of steps")
    out = asdict(PRESETS[key])
    if iterations:
        out["iterations"] = int(iterations)
    return out


def scene_name(source_uri: str) -> str:
    """A short, URL-safe scene name from a source URI: ``s3://b/scans/Lund Cathedral.zip`` -> ``lund-cathedral``."""
    parsed = urlparse(source_uri)
    path = unquote(parsed.path if parsed.scheme in ("file", "s3", "http", "https") else source_uri)
    parts = [p for p in re.split(r"[\\/]+", path) if p]
    stem = parts[-1] if parts else (parsed.netloc or "scene")
    for suffix in (".zip", ".mp4", ".mov", ".m4v", ".avi", ".mkv", ".webm", ".tar", ".gz"):
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
    slug = re.sub(r"[^a-z0-9]+", "-", stem.lower()).strip("-")
    return slug[:63] or "scene"


def task_output(value: Any) -> Any:
    """A stage report made safe as a KFP output parameter: ``None`` and non-finite numbers dropped, paths and
    other objects as strings (KFP's protobuf conversion rejects ``None``; kfp.local then aborts the run)."""
    if isinstance(value, dict):
        return {str(k): task_output(v) for k, v in value.items() if _keep(v)}
    if isinstance(value, list | tuple):
        return [task_output(v) for v in value if _keep(v)]
    return value if isinstance(value, bool | int | float | str) else str(value)


def _keep(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and not math.isfinite(value))


# KFP's final states (PipelineTaskFinalStatus.state) -> the status words the notify stage takes.
_STATES = {"SUCCEEDED": "succeeded", "FAILED": "failed", "CANCELED": "canceled", "CANCELLED": "canceled"}


def final_status(state: str, error_message: str | None, task_name: str | None) -> dict[str, Any]:
    """Translate KFP's final status into notify's ``status`` and ``error``.

    KFP reports the state of the exit handler's group, not which stage inside it failed; the error names what
    KFP knows (the group task and its message) and points at the run's logs for the stage's own error.
    """
    status = _STATES.get((state or "").upper(), "failed")
    if status == "succeeded":
        return {"status": status, "error": None}
    detail = (error_message or "").strip() or f"pipeline task {task_name or '?'} ended in state {state or '?'}"
    return {"status": status, "error": detail}


def published_report(output_uri: str, scene: str, run_id: str, *, source_uri: str, succeeded: bool) -> dict[str, Any]:
    """What notify reports about a run: where it came from and, when publish completed, what it published.

    The exit task cannot take the body's outputs (KFP), so the published run is read back from ``output_uri``
    by its manifest (present only when publish completed). Returns ``scene``, ``run_id``, ``source_uri``,
    ``output_uri`` and, when published, ``manifest_uri``, ``viewer_uri``, ``content_uri``, ``urls``, ``summary``.
    """
    report: dict[str, Any] = {"scene": scene, "run_id": run_id, "source_uri": source_uri, "output_uri": output_uri}
    if not succeeded:
        return report
    from splatflow import storage
    from splatflow.stages.publish import MANIFEST, read_manifest

    manifest = read_manifest(output_uri, scene, run_id)
    if manifest is None:
        return report
    base = storage.join(output_uri, scene, run_id)
    report.update({
        "manifest_uri": storage.join(base, MANIFEST),
        "viewer_uri": storage.join(base, manifest["viewer"]) if manifest.get("viewer") else None,
        "content_uri": storage.join(base, manifest["content"]) if manifest.get("content") else None,
        "urls": {rel: storage.join(base, rel) for rel in manifest.get("objects", {})},
        "summary": manifest.get("summary", {}),
    })
    return report
