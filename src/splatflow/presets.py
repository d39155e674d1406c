"""Quality presets: what the pipeline parameter ``quality`` stands for.

The ingest, sfm and train components look their settings up with :func:`preset` / :func:`train_options`; the run
options themselves (defaults, ranges, checks) are :mod:`splatflow.options`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, TypedDict

from splatflow.errors import InputError

__all__ = [
    "CPU_BACKGROUND_POINTS", "CPU_ITERATIONS", "CPU_MAX_SPLATS", "DEFAULT_QUALITY", "MAX_SH_DEGREE", "PRESETS",
    "Preset", "TrainOptions", "preset", "train_options"
]


@dataclass(frozen=True)
class Preset:
    """Settings one quality preset stands for.

    ``max_side``: the longest image side kept by ingest and used by sfm (px); ``resolution``: the longest side of
    the training images (px); ``iterations``: training steps; ``max_splats``: a ceiling on the run's splat budget
    (None: the run's ``max_splats`` alone), which keeps a CPU preset's time bounded; ``background_points``: splats
    started on a far shell for the sky (training's ``background_shell``).
    """

    max_side: int
    resolution: int
    iterations: int
    max_splats: int | None = None
    background_points: int = 0


CPU_ITERATIONS = 2500
CPU_MAX_SPLATS = 150_000
CPU_BACKGROUND_POINTS = 4000
PRESETS: dict[str, Preset] = {
    # CPU smoke run (CI): a minute, a few hundred blurry splats -- proves the pipeline runs, not a scene
    "tiny": Preset(max_side=640, resolution=128, iterations=30),
    # laptops and CPU nodes (`make run-local`, `splatflow run`): the compiled CPU rasterizer trains the sample into
    # a recognisable scene in minutes (README: Training on a CPU; bench/results/train-cpu.md)
    "cpu": Preset(max_side=800, resolution=256, iterations=CPU_ITERATIONS, max_splats=CPU_MAX_SPLATS,
                  background_points=CPU_BACKGROUND_POINTS),
    # a quick look on a GPU node
    "preview": Preset(max_side=1200, resolution=800, iterations=3000),
    # the stage defaults (docs/STAGES.md)
    "standard": Preset(max_side=1600, resolution=1600, iterations=7000),
    # the full 3DGS schedule
    "high": Preset(max_side=2400, resolution=2400, iterations=30000),
}
DEFAULT_QUALITY = "standard"
MAX_SH_DEGREE = 3


def preset(quality: str, iterations: int = 0) -> dict[str, Any]:
    """The settings of preset ``quality``; ``iterations`` > 0 overrides the preset's training steps."""
    key = str(quality).strip().lower()
    if key not in PRESETS:
        raise InputError(f"unknown quality preset {quality!r}", hint=f"use one of: {', '.join(PRESETS)}")
    if iterations < 0:
        raise InputError(f"iterations must be 0 (use the preset's) or positive, got {iterations}",
                         hint="pass iterations=0 to train for the preset's number of steps")
    out = asdict(PRESETS[key])
    if iterations:
        out["iterations"] = int(iterations)
    return out


class TrainOptions(TypedDict):
    """What :func:`train_options` hands the training stage."""

    iterations: int
    resolution: int
    max_splats: int
    background_points: int


def train_options(quality: str, iterations: int, max_splats: int) -> TrainOptions:
    """The training stage's options for a run: the preset's steps (unless ``iterations`` > 0), resolution and
    background shell, and the budget ``max_splats`` capped by the preset's ceiling."""
    p = preset(quality, iterations)
    ceiling = p["max_splats"]
    return {"iterations": p["iterations"], "resolution": p["resolution"],
            "max_splats": min(max_splats, ceiling) if ceiling else max_splats,
            "background_points": p["background_points"]}
