"""Training stage: SfM output in, a trained 3D Gaussian Splat (INRIA PLY) and a report out.

One loop serves both paths:

- **GPU** (``device="cuda"``): gsplat's ``rasterization`` and its ``DefaultStrategy`` / ``MCMCStrategy``.
- **CPU** (``device="cpu"``, small scenes): ``splatflow.render.rasterize`` (the compiled ``"cpu"`` or the
  ``"torch"`` backend) and the torch strategies of :mod:`splatflow.training.strategy`; gsplat is never imported.

This module is the stage's contract: its inputs (options checked, the device, the SfM folder), the budget
(``max_splats``), resuming, and the outputs and report. The trainer itself is :mod:`splatflow.training`: the loop
and run state (``loop``), the optimizers (``optim``), the renderer adapter and view evaluation
(``render_adapter``), the densification strategies behind one interface (``strategies``), the checkpoints
(``checkpoint``), the splats (``splats``) and the scene (``scene``).

Both respect ``max_splats`` (an initial cloud over budget is downsampled and reported; growth stops at the budget),
raise the SH degree one band every ``sh_interval`` steps, hold out every ``test_every``-th image for PSNR/SSIM,
write a checkpoint every ``checkpoint_every`` steps and on SIGTERM, and resume from the newest checkpoint when run
again on the same ``out_dir`` -- or, with ``checkpoint_uri`` (``s3://`` or ``file://``), in any new pod, since
checkpoints are mirrored there. Outputs: ``out_dir/splats.ply``, ``out_dir/train-report.json``, and
``out_dir/checkpoints/`` unless ``keep_checkpoints=False`` (the pipeline: the model artifact then holds only the
PLY and the report).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from splatflow.cameras import colmap_model_dir, colmap_model_files
from splatflow.devices import resolve_device
from splatflow.errors import InputError
from splatflow.fsutil import atomic_path, reclaim_sigterm
from splatflow.io.ply import write_ply
from splatflow.options import DEFAULT_MAX_SPLATS, STAGE_OPTIONS, check_options
from splatflow.presets import DEFAULT_QUALITY, MAX_SH_DEGREE, PRESETS
from splatflow.spec import stage as stage_spec
from splatflow.training.checkpoint import CheckpointStore
from splatflow.training.contact_sheet import SheetRow, write_contact_sheet
from splatflow.training.loop import LoopConfig, RunState, peak_memory, restore, run_loop, snapshot
from splatflow.training.optim import lr_boost, make_optimizers
from splatflow.training.render_adapter import Renderer, evaluate
from splatflow.training.scene import Scene, load_scene, viewer_camera
from splatflow.training.splats import background_shell, init_params, to_cloud
from splatflow.training.strategies import STRATEGIES, Strategy, make_strategy, schedule

__all__ = ["CONTACT_SHEET", "DEFAULT_ITERATIONS", "PLY", "REPORT", "STRATEGIES", "train"]

log = logging.getLogger(__name__)

_FILES = stage_spec("train").files  # the file names inside the stage's output (splatflow.spec)
REPORT, PLY, CONTACT_SHEET = _FILES["report"], _FILES["ply"], _FILES["contact_sheet"]
#: training steps when none are given (``iterations`` 0): the standard preset's
DEFAULT_ITERATIONS = PRESETS[DEFAULT_QUALITY].iterations
_O = STAGE_OPTIONS["train"]


# ---------------------------------------------------------------------------- inputs
def _check_scene_and_output(scene: Scene, sfm_dir: Path, out_dir: Path, test_every: int) -> None:
    """InputError when no training view is left or the output folder cannot be made."""
    if not scene.train:
        raise InputError(f"{sfm_dir}: no training image left after holding out every {test_every}th image",
                         hint="use more images or --test-every 0")
    if not out_dir.parent.exists():
        raise InputError(f"output folder {out_dir.parent} does not exist", hint="create it first")
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"output {out_dir} is a file, not a folder", hint="choose a folder path for OUT_DIR")


def _fingerprint(sfm_dir: Path, config: dict[str, Any]) -> str:
    """A hash of the SfM model files and every option that changes the result: a checkpoint resumes only a
    run with the same fingerprint."""
    h = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
    for p in colmap_model_files(colmap_model_dir(sfm_dir)):
        h.update(p.read_bytes())
    return h.hexdigest()


# ---------------------------------------------------------------------------- budget
def _initial_points(scene: Scene, max_splats: int, background_points: int, seed: int
                    ) -> tuple[np.ndarray, np.ndarray, bool]:
    """The points (P, 3) and colours (P, 3) the splats start from: the SfM cloud, randomly downsampled to
    ``max_splats`` when over it (then True), plus ``background_points`` on the background shell."""
    initial = len(scene.points)
    points, colors = scene.points, scene.colors
    downsampled = initial > max_splats
    if downsampled:
        keep = np.sort(np.random.default_rng(seed).choice(initial, max_splats, replace=False))
        points, colors = points[keep], colors[keep]
        log.warning("the SfM cloud has %d points, over the budget of %d splats: randomly downsampled to %d",
                    initial, max_splats, max_splats)
    if background_points > 0:  # a shell for the sky and the far background (see background_shell)
        shell, shell_colors = background_shell(scene, background_points, seed)
        points, colors = np.concatenate([points, shell]), np.concatenate([colors, shell_colors])
    return points, colors, downsampled


def _start(store: CheckpointStore, resume: bool, fingerprint: str, out_dir: Path, scene: Scene,
           render: Renderer, strategy: Strategy, points: np.ndarray, colors: np.ndarray, *, mcmc: bool,
           sh_degree: int, seed: int, boost: float) -> tuple[RunState, bool]:
    """The run state to train from: the newest checkpoint of this run when ``resume`` (then True), else fresh
    splats with their held-out PSNR/SSIM at step 0 (``resume=False`` deletes older checkpoints first)."""
    torch.manual_seed(seed)
    ckpt = store.load_latest(map_location="cpu") if resume else None
    if not resume:
        store.clear()
    if ckpt is not None:
        run = restore(ckpt, fingerprint, str(out_dir), render.device, scene.scene_scale, boost)
        strategy.initialize(run.params, run.optimizers, scene.scene_scale)  # checks the layout; state restored
        log.info("resuming from the checkpoint of step %d", run.step)
        return run, True
    params = init_params(points, colors, sh_degree=sh_degree, init_opacity=0.5 if mcmc else 0.1,
                         scene_scale=scene.scene_scale, device=render.device)
    optimizers = make_optimizers(params, scene.scene_scale, boost)
    state = strategy.initialize(params, optimizers, scene.scene_scale)
    run = RunState(params, optimizers, state, torch.Generator().manual_seed(seed))
    t = evaluate(render, params, scene.test, 0)
    run.initial = {"psnr_test_initial": t["psnr"], "ssim_test_initial": t["ssim"]}
    log.info("initial point cloud: held-out PSNR %s dB", t["psnr"])
    return run, False


# ---------------------------------------------------------------------------- the stage
def train(sfm_dir: Path, out_dir: Path, *, iterations: int = DEFAULT_ITERATIONS, max_splats: int = DEFAULT_MAX_SPLATS,
          sh_degree: int = MAX_SH_DEGREE,
          strategy: str = _O["strategy"].default, device: str = "auto", resolution: int = _O["resolution"].default,
          test_every: int = _O["test_every"].default, sh_interval: int | None = None,
          checkpoint_every: int = _O["checkpoint_every"].default, resume: bool = True,
          checkpoint_uri: str | None = None, keep_checkpoints: bool = True, seed: int = 0,
          backend: str = "auto", background_points: int = 0) -> dict[str, Any]:
    """Train 3D Gaussian Splats on an SfM folder; write ``out_dir/splats.ply`` and ``out_dir/train-report.json``.

    ``iterations`` 0 means the default (:data:`DEFAULT_ITERATIONS`, the standard preset's), as in the pipeline;
    ``resolution`` is the longest image side used (images are downscaled, never upscaled); ``sh_interval`` the
    steps between SH bands (default: the degree is reached by mid-run, at most every 1000 steps);
    ``resume=False`` discards checkpoints of an earlier run in ``out_dir`` (and in ``checkpoint_uri``);
    ``checkpoint_uri`` mirrors the checkpoints to storage so a retry on another machine resumes;
    ``keep_checkpoints=False`` deletes them (local and mirrored) once the PLY and report are written.
    Returns the report (see module doc).
    """
    check_options("train", strategy=strategy, iterations=iterations, max_splats=max_splats, sh_degree=sh_degree,
                  resolution=resolution, test_every=test_every, checkpoint_every=checkpoint_every)
    iterations = iterations or DEFAULT_ITERATIONS
    dev = resolve_device(device)
    sfm_dir, out_dir = Path(sfm_dir), Path(out_dir)
    started = time.monotonic()
    scene = load_scene(sfm_dir, resolution=resolution, test_every=test_every, device=dev)
    reclaim_sigterm()  # load_scene imports pycolmap, which hands SIGTERM to glog (a kill without cleanup)
    _check_scene_and_output(scene, sfm_dir, out_dir, test_every)
    render = Renderer(dev, backend)  # fails early when gsplat is missing on CUDA
    sched = schedule(iterations, sh_degree, sh_interval)
    config = {"iterations": iterations, "max_splats": max_splats, "sh_degree": sh_degree, "strategy": strategy,
              "resolution": resolution, "test_every": test_every, "seed": seed, "backend": render.backend,
              "background_points": background_points, **sched}
    fingerprint = _fingerprint(sfm_dir, config)
    boost = lr_boost(iterations)
    store = CheckpointStore(out_dir / "checkpoints", checkpoint_uri)
    points, colors, downsampled = _initial_points(scene, max_splats, background_points, seed)
    strat = make_strategy(strategy, render.gsplat, max_splats, sched)
    run, resumed = _start(store, resume, fingerprint, out_dir, scene, render, strat, points, colors,
                          mcmc=strategy == "mcmc", sh_degree=sh_degree, seed=seed, boost=boost)
    start_step, elapsed_before = run.step, run.elapsed
    out_dir.mkdir(exist_ok=True)

    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    loop_start = time.monotonic()
    cfg = LoopConfig(iterations=iterations, sh_degree=sh_degree, sh_interval=sched["sh_interval"],
                     checkpoint_every=checkpoint_every, seed=seed, scene_scale=scene.scene_scale, boost=boost)
    events = run_loop(render, strat, run, scene.train, cfg,
                      lambda step: snapshot(store, run, step, fingerprint,
                                            elapsed_before + time.monotonic() - loop_start),
                      save_at_end=start_step < iterations or not resumed)
    loop_seconds = time.monotonic() - loop_start

    report = _finish(render, run, scene, out_dir, iterations=iterations, sh_degree=sh_degree,
                     sh_interval=sched["sh_interval"])
    report.update({
        "seconds": round(elapsed_before + time.monotonic() - started, 3),
        "seconds_per_iteration": round(loop_seconds / max(1, iterations - start_step), 5),
        "device": str(dev), "backend": render.backend, "strategy": strategy, "max_splats": max_splats,
        "initial_points": len(scene.points), "initial_splats": len(points), "downsampled": downsampled,
        "sh_degree": sh_degree, "schedule": sched, "lr_boost": round(boost, 4), "densification": events,
        "resumed_from_step": start_step if resumed else None, "seed": seed,
    })
    report = {k: report[k] for k in REPORT_KEYS}
    with atomic_path(out_dir / REPORT) as tmp:
        tmp.write_text(json.dumps(report, indent=2))
    if not keep_checkpoints:
        store.clear()
    log.info("trained %d splats in %.1f s: held-out PSNR %s dB (from %s)", report["splats"], report["seconds"],
             report["psnr_test"], run.initial.get("psnr_test_initial"))
    return report


# ---------------------------------------------------------------------------- outputs and report
REPORT_KEYS = (
    "iterations", "splats", "dropped_invalid", "dropped_unseen", "psnr_test", "ssim_test", "psnr_train",
    "ssim_train", "psnr_test_initial", "ssim_test_initial", "psnr_test_gain", "seconds", "seconds_per_iteration",
    "peak_memory_bytes", "peak_memory_kind", "device", "backend", "strategy", "max_splats", "initial_points",
    "initial_splats", "downsampled", "sh_degree", "sh_degree_reached", "resolution", "source_resolution",
    "images_train", "images_test", "scene_scale", "schedule", "lr_boost", "densification", "resumed_from_step",
    "seed", "ply", "contact_sheet", "viewer_camera",
)
"""The keys of train-report.json, in the order written."""


def _finish(render: Renderer, run: RunState, scene: Scene, out_dir: Path, *, iterations: int, sh_degree: int,
            sh_interval: int) -> dict[str, Any]:
    """Evaluate the trained splats (held-out and training views), write the contact sheet and the PLY (only the
    splats a training view draws, no NaN/Inf), and return the report's entries about them."""
    final_sh = min((iterations - 1) // sh_interval, sh_degree)
    sheet: list[SheetRow] = []
    test = evaluate(render, run.params, scene.test, final_sh, sheet)
    train_sheet: list[SheetRow] = []
    seen = torch.zeros(len(run.params["means"]), dtype=torch.bool, device=render.device)
    trained = evaluate(render, run.params, scene.train, final_sh, train_sheet, seen)
    if not sheet:  # nothing held out: show a few training views instead
        sheet = train_sheet[:: max(1, len(train_sheet) // 3)][:3]
    with atomic_path(out_dir / CONTACT_SHEET) as tmp:
        write_contact_sheet(sheet, tmp, title=f"{'held-out' if scene.test else 'training'} views: photo | "
                                               f"render after {iterations} steps")
    peak, peak_kind = peak_memory(render.device)
    # a splat no training view draws was never fitted to anything (e.g. the far side of the background shell,
    # still grey): it only clutters the scene seen from elsewhere, so it is not exported
    unseen = int((~seen).sum())
    cloud, invalid = to_cloud({k: v[seen] for k, v in run.params.items()}).drop_invalid()
    if invalid:  # the PLY must load everywhere (the codec refuses NaN): never export a broken splat
        log.warning("%d trained splats had NaN/Inf values and were left out of the PLY", invalid)
    write_ply(cloud, out_dir / PLY)
    initial = run.initial
    return {
        "iterations": iterations, "splats": len(cloud), "dropped_invalid": invalid, "dropped_unseen": unseen,
        "psnr_test": test["psnr"], "ssim_test": test["ssim"], "psnr_train": trained["psnr"],
        "ssim_train": trained["ssim"], **initial,
        "psnr_test_gain": (round(test["psnr"] - initial["psnr_test_initial"], 4)
                           if test["psnr"] is not None and initial.get("psnr_test_initial") is not None else None),
        "peak_memory_bytes": peak, "peak_memory_kind": peak_kind, "sh_degree_reached": final_sh,
        "resolution": [scene.train[0].width, scene.train[0].height], "source_resolution": list(scene.source_size),
        "images_train": len(scene.train), "images_test": [v.name for v in scene.test],
        "scene_scale": round(scene.scene_scale, 6), "ply": PLY, "contact_sheet": CONTACT_SHEET,
        "viewer_camera": viewer_camera(scene),
    }
