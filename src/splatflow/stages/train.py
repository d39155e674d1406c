"""Training stage: SfM output in, a trained 3D Gaussian Splat (INRIA PLY) and a report out.

One loop serves both paths:

- **GPU** (``device="cuda"``): gsplat's ``rasterization`` and its ``DefaultStrategy`` / ``MCMCStrategy``.
- **CPU** (``device="cpu"``, small scenes): ``splatflow.render.rasterize(backend="torch")`` and the torch
  strategies of :mod:`splatflow.training.strategy`; gsplat is never imported.

Both respect ``max_splats`` (an initial cloud over budget is downsampled and reported; growth stops at the budget),
raise the SH degree one band every ``sh_interval`` steps, hold out every ``test_every``-th image for PSNR/SSIM,
write a checkpoint every ``checkpoint_every`` steps and on SIGTERM, and resume from the newest checkpoint when run
again on the same ``out_dir`` -- or, with ``checkpoint_uri`` (``s3://`` or ``file://``), in any new pod, since
checkpoints are mirrored there. Outputs: ``out_dir/splats.ply``, ``out_dir/train-report.json``, and
``out_dir/checkpoints/`` unless ``keep_checkpoints=False`` (the pipeline: the model artifact then holds only the
PLY and the report).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import resource
import signal
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from splatflow.errors import DependencyMissing, EnvironmentProblem, InputError, TrainError
from splatflow.fsutil import atomic_path, reclaim_sigterm
from splatflow.gaussians import SH_C0, GaussianCloud
from splatflow.io.ply import write_ply
from splatflow.progress import is_interactive, progress
from splatflow.training.checkpoint import CheckpointStore
from splatflow.training.contact_sheet import SheetRow, write_contact_sheet
from splatflow.training.loss import ssim as ssim_loss
from splatflow.training.scene import Scene, View, load_scene, model_dir
from splatflow.training.strategy import CpuDefaultStrategy, CpuMCMCStrategy, Optimizers, Params

log = logging.getLogger(__name__)

STRATEGIES = ("default", "mcmc")
REPORT = "train-report.json"
PLY = "splats.ply"
CONTACT_SHEET = "contact-sheet.png"
SSIM_WEIGHT = 0.2
# learning rates of the 3DGS paper / gsplat; means are scaled by the scene size and decay 100x over the run
LR = {"means": 1.6e-4, "scales": 5e-3, "quats": 1e-3, "opacities": 5e-2, "sh0": 2.5e-3, "shN": 2.5e-3 / 20}
MCMC_OPACITY_REG = 0.01
MCMC_SCALE_REG = 0.01
NEVER = 2**62
"""A step count no run reaches (disables a periodic action of gsplat's strategy that we do ourselves)."""


# ---------------------------------------------------------------------------- options
def _resolve_device(device: str) -> torch.device:
    if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
        raise InputError(f"unknown device {device!r}", hint="use auto, cpu or cuda")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise EnvironmentProblem("device cuda was requested but CUDA is not available",
                                 hint="run on a GPU node, or pass --device cpu for a small scene")
    return torch.device(device)


def _schedule(iterations: int, sh_degree: int, sh_interval: int | None) -> dict[str, int]:
    """Step numbers of the refinement and SH schedules; the 3DGS values, compressed for short runs."""
    refine_start = min(500, iterations // 10)
    refine_every = min(100, max(10, iterations // 20))
    return {
        "sh_interval": sh_interval if sh_interval else max(1, min(1000, iterations // (2 * sh_degree + 2))),
        "refine_start": refine_start,
        "refine_every": refine_every,
        "refine_stop": min(15_000, int(0.8 * iterations)),
        # opacity resets only for runs long enough to recover from them (3DGS: every 3000 of 30000 steps)
        "reset_every": 3000 if iterations >= 6000 else iterations + 1,
    }


def _fingerprint(sfm_dir: Path, config: dict[str, Any]) -> str:
    """A hash of the SfM model files and every option that changes the result: a checkpoint resumes only a
    run with the same fingerprint."""
    h = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
    mdir = model_dir(sfm_dir)
    for name in ("cameras.bin", "images.bin", "points3D.bin"):
        p = mdir / name
        if p.exists():
            h.update(p.read_bytes())
    return h.hexdigest()


# ---------------------------------------------------------------------------- splats
def init_params(points: np.ndarray, colors: np.ndarray, *, sh_degree: int, init_opacity: float,
                scene_scale: float, device: torch.device) -> Params:
    """Splats from SfM points (P, 3) with colours (P, 3) in [0, 1]: isotropic scales from the mean distance to the
    3 nearest neighbours, identity rotations, opacity ``init_opacity``, SH degree 0 = the point colour."""
    pts = torch.as_tensor(points, dtype=torch.float32)
    n = len(pts)
    if n > 1:
        k = min(4, n)
        d2 = torch.empty(n)
        for i in range(0, n, 2048):
            block = torch.cdist(pts[i:i + 2048], pts).pow(2)
            d2[i:i + 2048] = block.topk(k, largest=False).values[:, 1:].mean(dim=1)
        dist = d2.clamp_min(1e-10).sqrt()
    else:
        dist = torch.full((n,), 0.01 * scene_scale)
    k_rest = (sh_degree + 1) ** 2 - 1
    tensors = {
        "means": pts,
        "scales": torch.log(dist)[:, None].repeat(1, 3),
        "quats": torch.tensor([1.0, 0.0, 0.0, 0.0]).repeat(n, 1),
        "opacities": torch.full((n,), math.log(init_opacity / (1 - init_opacity))),
        "sh0": ((torch.as_tensor(colors, dtype=torch.float32) - 0.5) / SH_C0)[:, None, :],
        "shN": torch.zeros((n, k_rest, 3)),
    }
    return {k: torch.nn.Parameter(v.to(device).contiguous()) for k, v in tensors.items()}


def background_shell(scene: Scene, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` points (count, 3) spread evenly over a sphere around the scene, far behind its SfM points, with
    grey colours (count, 3).

    SfM finds no points in the sky or on distant, textureless background, so the optimiser paints them with
    splats close to the cameras: the large "floaters" that hang in front of every held-out view. Splats
    that start on a far shell give the sky a place to be instead. The radius is twice the 95th percentile of
    the SfM points' distance from their median, and at least three times the camera spread."""
    centre = np.median(scene.points, axis=0)
    far = float(np.percentile(np.linalg.norm(scene.points - centre, axis=1), 95)) if len(scene.points) else 1.0
    radius = max(2.0 * far, 3.0 * scene.scene_scale)
    i = np.arange(count) + 0.5  # a Fibonacci sphere: even coverage without randomness in the spacing
    phi = np.arccos(1.0 - 2.0 * i / count)
    theta = np.pi * (1.0 + 5**0.5) * i + np.random.default_rng(seed).uniform(0, 2 * np.pi)
    dirs = np.stack([np.cos(theta) * np.sin(phi), np.sin(theta) * np.sin(phi), np.cos(phi)], -1)
    return (centre + radius * dirs).astype(np.float32), np.full((count, 3), 0.5, dtype=np.float32)


def viewer_camera(scene: Scene) -> dict[str, list[float]]:
    """Where the published viewer opens: the pose of the training photo nearest the middle of the capture,
    ``position`` (its centre) and ``target`` (a point ahead of it, at the median depth of the SfM points it sees),
    in SfM world coordinates. A capture from inside a scene is best seen from where it was taken."""
    views = scene.train or scene.test
    centres = [(-(v.viewmat[:3, :3].T @ v.viewmat[:3, 3])).cpu().numpy() for v in views]
    mid = np.mean(centres, axis=0)
    i = int(np.argmin([np.linalg.norm(c - mid) for c in centres]))
    forward = views[i].viewmat[2, :3].cpu().numpy()            # the camera's +z axis in the world
    depths = (scene.points - centres[i]) @ forward
    ahead = depths[depths > 0]
    distance = float(np.median(ahead)) if len(ahead) else scene.scene_scale
    target = centres[i] + forward * distance
    return {"position": [round(float(x), 6) for x in centres[i]], "target": [round(float(x), 6) for x in target]}


def lr_boost(iterations: int) -> float:
    """Learning-rate factor of a short run: the 3DGS rates are tuned for thousands of steps, so a run of fewer
    than 7000 steps scales them by sqrt(7000 / iterations), at most 10 (1.0 from 7000 steps on)."""
    return float(min(10.0, max(1.0, math.sqrt(7000 / iterations))))


def make_optimizers(params: Params, scene_scale: float, boost: float = 1.0) -> Optimizers:
    """One Adam per parameter (the layout gsplat's strategies expect), 3DGS learning rates times ``boost``.

    On CPU the fused implementation (one kernel per step, about 6x faster than the default there); CUDA keeps
    torch's default, the one gsplat's strategies are tested with."""
    fused = all(p.device.type == "cpu" for p in params.values())
    return {name: torch.optim.Adam([p], lr=LR[name] * boost * (scene_scale if name == "means" else 1.0), eps=1e-15,
                                   fused=True if fused else None)
            for name, p in params.items()}


def to_cloud(params: Mapping[str, torch.Tensor]) -> GaussianCloud:
    """The trained splats as a GaussianCloud (log scales, opacity logits, unit quaternions)."""
    with torch.no_grad():
        quats = torch.nn.functional.normalize(params["quats"], dim=-1)
        return GaussianCloud.from_torch({
            "means": params["means"], "scales": params["scales"], "quats": quats,
            "opacities": params["opacities"], "sh0": params["sh0"][:, 0, :], "shN": params["shN"],
        })


# ---------------------------------------------------------------------------- rendering
class Renderer:
    """Renders the splats of ``params`` from one view through :func:`splatflow.render.rasterize`: the gsplat
    backend on CUDA; on CPU the compiled ``"cpu"`` backend (the ``"torch"`` reference when the kernels cannot be
    built, or when asked for); gsplat is then never imported."""

    def __init__(self, device: torch.device, backend: str = "auto") -> None:
        from splatflow.render import BACKENDS, rasterize, resolve_backend

        if backend not in BACKENDS:
            raise InputError(f"unknown render backend {backend!r}", hint=f"use one of: {', '.join(BACKENDS)}")
        if device.type == "cuda" and backend not in ("auto", "gsplat"):
            raise InputError(f"render backend {backend!r} does not train on CUDA", hint="use --backend auto")
        if device.type != "cuda" and backend == "gsplat":
            raise InputError("the gsplat backend needs CUDA", hint="use --device cuda, or --backend auto on CPU")
        self.device = device
        self.gsplat = device.type == "cuda"
        self._backend = "gsplat" if self.gsplat else resolve_backend(backend, device)
        if self.gsplat:
            try:
                import gsplat  # noqa: F401
                from gsplat.cuda._backend import _C  # the compiled kernels (built on first import if nvcc exists)
            except ImportError as exc:
                raise DependencyMissing("gsplat is not installed: GPU training needs it",
                                        hint="pip install 'splatflow[train]' (CUDA), or pass --device cpu") from exc
            if _C is None:
                raise DependencyMissing("gsplat's CUDA kernels are not built and cannot be compiled here",
                                        hint="use the splatflow train image (gsplat compiled for sm_75..sm_90), "
                                             "install gsplat with a CUDA toolkit, or pass --device cpu")
        self._rasterize = rasterize

    @property
    def backend(self) -> str:
        return self._backend

    def __call__(self, params: Params, view: View, sh_degree: int) -> tuple[torch.Tensor, dict[str, Any]]:
        """(H, W, 3) image and the projection info in gsplat's layout (``means2d`` (1, N, 2), ``radii`` ...)."""
        colors = torch.cat([params["sh0"], params["shN"][:, : (sh_degree + 1) ** 2 - 1]], dim=1)
        info: dict[str, Any] = {}
        img, _alpha = self._rasterize(
            params["means"], params["quats"], params["scales"].exp(), torch.sigmoid(params["opacities"]), colors,
            view.viewmat, view.K, view.width, view.height, sh_degree=sh_degree, backend=self.backend, info=info)
        return img, info


def screen_grad(info: dict[str, Any], means: torch.Tensor, view: View) -> tuple[torch.Tensor, torch.Tensor]:
    """Image-plane gradient norm (N,) of each splat in gsplat's units (pixel gradient times half the image size,
    as gsplat's DefaultStrategy measures it) and the visibility mask (N,) (``radii`` > 0), after ``backward``.

    Read from the renderer's ``info["means2d"]`` (1, N, 2) when it holds a gradient; otherwise derived from the
    gradient of the world means (N, 3) (``means.grad``) by the pinhole Jacobian, d pixel / d camera xy = f / z.
    """
    visible = (info["radii"][0] > 0).all(dim=-1)
    half = torch.tensor([view.width / 2, view.height / 2], device=means.device)
    grad2d = info["means2d"].grad
    if grad2d is not None:
        return (grad2d[0] * half).norm(dim=-1), visible
    if means.grad is None:  # nothing was visible
        return torch.zeros(len(means), device=means.device), visible
    R, t = view.viewmat[:3, :3], view.viewmat[:3, 3]
    z = (means.detach() @ R[2] + t[2]).clamp_min(1e-6)[:, None]
    g_cam = means.grad @ R.T
    f = torch.stack([view.K[0, 0], view.K[1, 1]])
    return (g_cam[:, :2] * z / f * half).norm(dim=-1), visible


def evaluate(render: Renderer, params: Params, views: list[View], sh_degree: int,
             sheet: list[SheetRow] | None = None, seen: torch.Tensor | None = None) -> dict[str, float | None]:
    """Mean PSNR (dB) and SSIM over ``views`` of the clamped renders; None for an empty list. With ``sheet``, a
    :class:`SheetRow` per view (photo, render, PSNR) is appended to it; with ``seen`` (N,) bool, the splats a view
    draws (screen box not empty) are marked in it."""
    if not views:
        return {"psnr": None, "ssim": None}
    psnrs, ssims = [], []
    with torch.no_grad():
        for v in views:
            img, info = render(params, v, sh_degree)
            if seen is not None:
                seen |= (info["radii"][0] > 0).all(dim=-1)
            img = img.clamp(0, 1)
            mse = torch.mean((img - v.image) ** 2).clamp_min(1e-10)
            psnrs.append(float(-10 * torch.log10(mse)))
            ssims.append(float(ssim_loss(img, v.image)))
            if sheet is not None:
                sheet.append(SheetRow(v.name, v.image.cpu().numpy(), img.cpu().numpy(), psnrs[-1]))
    return {"psnr": round(float(np.mean(psnrs)), 4), "ssim": round(float(np.mean(ssims)), 5)}


# ---------------------------------------------------------------------------- preemption
@contextlib.contextmanager
def _sigterm_flag() -> Iterator[dict[str, bool]]:
    """Catch SIGTERM (pod preemption) as a flag the loop checks after each step; restore the old handler after."""
    flag = {"stop": False}
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum: int, _frame: Any) -> None:
        log.warning("SIGTERM received: saving a checkpoint and stopping")
        flag["stop"] = True

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGTERM, old)


def _peak_memory(device: torch.device) -> tuple[int, str]:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device)), "cuda_max_memory_allocated"
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024, "process_max_rss"


# ---------------------------------------------------------------------------- the stage
def train(sfm_dir: Path, out_dir: Path, *, iterations: int = 7000, max_splats: int = 1_000_000, sh_degree: int = 3,
          strategy: str = "default", device: str = "auto", resolution: int = 1600, test_every: int = 8,
          sh_interval: int | None = None, checkpoint_every: int = 1000, resume: bool = True,
          checkpoint_uri: str | None = None, keep_checkpoints: bool = True, seed: int = 0,
          backend: str = "auto", background_points: int = 0) -> dict[str, Any]:
    """Train 3D Gaussian Splats on an SfM folder; write ``out_dir/splats.ply`` and ``out_dir/train-report.json``.

    ``resolution`` is the longest image side used (images are downscaled, never upscaled); ``sh_interval`` the
    steps between SH bands (default: the degree is reached by mid-run, at most every 1000 steps);
    ``resume=False`` discards checkpoints of an earlier run in ``out_dir`` (and in ``checkpoint_uri``);
    ``checkpoint_uri`` mirrors the checkpoints to storage so a retry on another machine resumes;
    ``keep_checkpoints=False`` deletes them (local and mirrored) once the PLY and report are written.
    Returns the report (see module doc).
    """
    if strategy not in STRATEGIES:
        raise InputError(f"unknown strategy {strategy!r}", hint=f"use one of {', '.join(STRATEGIES)}")
    if iterations < 1:
        raise InputError(f"iterations must be at least 1 (got {iterations})", hint="pass --iterations 7000")
    if max_splats < 1:
        raise InputError(f"max-splats must be at least 1 (got {max_splats})", hint="pass --max-splats 1000000")
    if not 0 <= sh_degree <= 3:
        raise InputError(f"sh-degree must be 0..3 (got {sh_degree})", hint="pass --sh-degree 3")
    if resolution < 8:
        raise InputError(f"resolution must be at least 8 px (got {resolution})", hint="pass --resolution 1600")
    if checkpoint_every < 1:
        raise InputError(f"checkpoint-every must be at least 1 (got {checkpoint_every})")
    dev = _resolve_device(device)
    sfm_dir, out_dir = Path(sfm_dir), Path(out_dir)
    started = time.monotonic()
    scene = load_scene(sfm_dir, resolution=resolution, test_every=test_every, device=dev)
    reclaim_sigterm()  # load_scene imports pycolmap, which hands SIGTERM to glog (a kill without cleanup)
    if not scene.train:
        raise InputError(f"{sfm_dir}: no training image left after holding out every {test_every}th image",
                         hint="use more images or --test-every 0")
    if not out_dir.parent.exists():
        raise InputError(f"output folder {out_dir.parent} does not exist", hint="create it first")
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"output {out_dir} is a file, not a folder", hint="choose a folder path for OUT_DIR")
    render = Renderer(dev, backend)  # fails early when gsplat is missing on CUDA
    sched = _schedule(iterations, sh_degree, sh_interval)
    config = {"iterations": iterations, "max_splats": max_splats, "sh_degree": sh_degree, "strategy": strategy,
              "resolution": resolution, "test_every": test_every, "seed": seed, "backend": render.backend,
              "background_points": background_points, **sched}
    fingerprint = _fingerprint(sfm_dir, config)
    boost = lr_boost(iterations)
    store = CheckpointStore(out_dir / "checkpoints", checkpoint_uri)

    # ------------------------------------------------------------------ initial splats (budget)
    initial_points = len(scene.points)
    points, colors = scene.points, scene.colors
    downsampled = initial_points > max_splats
    if downsampled:
        keep = np.sort(np.random.default_rng(seed).choice(initial_points, max_splats, replace=False))
        points, colors = points[keep], colors[keep]
        log.warning("the SfM cloud has %d points, over the budget of %d splats: randomly downsampled to %d",
                    initial_points, max_splats, max_splats)

    if background_points > 0:  # a shell for the sky and the far background (see background_shell)
        shell, shell_colors = background_shell(scene, background_points, seed)
        points, colors = np.concatenate([points, shell]), np.concatenate([colors, shell_colors])
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    init_opacity = 0.5 if strategy == "mcmc" else 0.1
    params = init_params(points, colors, sh_degree=sh_degree, init_opacity=init_opacity,
                         scene_scale=scene.scene_scale, device=dev)
    optimizers = make_optimizers(params, scene.scene_scale, boost)
    strat, strat_state = _make_strategy(strategy, render.gsplat, max_splats, sched, scene.scene_scale)

    start_step, resumed_from, elapsed_before = 0, None, 0.0
    initial: dict[str, Any] = {}
    ckpt = store.load_latest(map_location="cpu") if resume else None
    if not resume:
        store.clear()
    if ckpt is not None:
        if ckpt.get("fingerprint") != fingerprint:
            raise InputError(f"{out_dir} holds checkpoints of a different run (other SfM input or options)",
                             hint="use a new output folder, or pass --no-resume to start over")
        params = {k: torch.nn.Parameter(v.to(dev)) for k, v in ckpt["params"].items()}
        optimizers = make_optimizers(params, scene.scene_scale, boost)
        for k, opt in optimizers.items():
            opt.load_state_dict(ckpt["optimizers"][k])
        strat_state = {k: v.to(dev) if isinstance(v, torch.Tensor) else v
                       for k, v in ckpt["strategy_state"].items()}
        gen.set_state(ckpt["generator"])
        torch.set_rng_state(ckpt["torch_rng"])
        if dev.type == "cuda" and ckpt.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(ckpt["cuda_rng"], dev)
        start_step = resumed_from = int(ckpt["step"])
        elapsed_before = float(ckpt.get("elapsed", 0.0))
        initial = dict(ckpt["initial"])
        log.info("resuming from the checkpoint of step %d", start_step)
    else:
        t = evaluate(render, params, scene.test, 0)
        initial = {"psnr_test_initial": t["psnr"], "ssim_test_initial": t["ssim"]}
        log.info("initial point cloud: held-out PSNR %s dB", t["psnr"])
    out_dir.mkdir(exist_ok=True)

    def snapshot(step: int) -> None:
        store.save(step, {
            "fingerprint": fingerprint,
            "params": {k: v.detach().cpu() for k, v in params.items()},
            "optimizers": {k: o.state_dict() for k, o in optimizers.items()},
            "strategy_state": strat_state,
            "generator": gen.get_state(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(dev) if dev.type == "cuda" else None,
            "elapsed": elapsed_before + time.monotonic() - loop_start,
            "initial": initial,
        })

    # ------------------------------------------------------------------ the loop
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    if render.gsplat:
        _check_gsplat_sanity(strat, params, optimizers)
    loop_start = time.monotonic()
    events: dict[str, int] = {}
    n_train = len(scene.train)
    lr_means0 = LR["means"] * boost * scene.scene_scale
    last_log = loop_start
    interactive = is_interactive()
    with _sigterm_flag() as flag:
        for step in progress(range(start_step, iterations), total=iterations - start_step, desc="train",
                             every=math.inf):
            if flag["stop"]:
                snapshot(step)
                raise TrainError(f"training stopped by SIGTERM at step {step} of {iterations}; a checkpoint was saved",
                                 hint="run the same command again to resume")
            epoch, pos = divmod(step, n_train)
            order = torch.randperm(n_train, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
            view = scene.train[int(order[pos])]
            sh_now = min(step // sched["sh_interval"], sh_degree)
            lr_means = lr_means0 * 0.01 ** (step / iterations)
            for group in optimizers["means"].param_groups:
                group["lr"] = lr_means

            img, info = render(params, view, sh_now)
            l1 = torch.abs(img - view.image).mean()
            loss = (1 - SSIM_WEIGHT) * l1 + SSIM_WEIGHT * (1 - ssim_loss(img, view.image))
            if strategy == "mcmc":
                loss = loss + MCMC_OPACITY_REG * torch.sigmoid(params["opacities"]).mean() \
                    + MCMC_SCALE_REG * params["scales"].exp().mean()
            if not torch.isfinite(loss):
                raise TrainError(f"the loss became {float(loss)} at step {step}",
                                 hint="the SfM scene may be degenerate; check the sfm report")
            if render.gsplat and strategy == "default":
                strat.step_pre_backward(params, optimizers, strat_state, step, info)
            elif strategy == "default" and info["means2d"].requires_grad:
                info["means2d"].retain_grad()
            loss.backward()
            if not render.gsplat and strategy == "default":
                g2d, vis = screen_grad(info, params["means"], view)
                info = {"grad2d": g2d, "visible": vis}
            for opt in optimizers.values():
                opt.step()
                opt.zero_grad(set_to_none=True)
            changed = _strategy_step(strat, strategy, render.gsplat, params, optimizers, strat_state, step, info,
                                     gen, lr_means, max_splats)
            for k, v in changed.items():
                events[k] = events.get(k, 0) + v
            done = step + 1
            if done % checkpoint_every == 0 and done < iterations:
                snapshot(done)
            now = time.monotonic()
            if not interactive and now - last_log >= 10:  # a terminal shows the progress bar instead
                last_log = now
                log.info("step %d/%d  loss %.4f  splats %d  SH %d", done, iterations, float(loss.detach()),
                         len(params["means"]), sh_now)
        if start_step < iterations or ckpt is None:
            snapshot(iterations)
    loop_seconds = time.monotonic() - loop_start

    # ------------------------------------------------------------------ evaluate, export, report
    final_sh = min((iterations - 1) // sched["sh_interval"], sh_degree)
    sheet: list[SheetRow] = []
    test = evaluate(render, params, scene.test, final_sh, sheet)
    train_sheet: list[SheetRow] = []
    seen = torch.zeros(len(params["means"]), dtype=torch.bool, device=dev)
    trained = evaluate(render, params, scene.train, final_sh, train_sheet, seen)
    if not sheet:  # nothing held out: show a few training views instead
        sheet = train_sheet[:: max(1, len(train_sheet) // 3)][:3]
    with atomic_path(out_dir / CONTACT_SHEET) as tmp:
        write_contact_sheet(sheet, tmp, title=f"{'held-out' if scene.test else 'training'} views: photo | "
                                               f"render after {iterations} steps")
    peak, peak_kind = _peak_memory(dev)
    # a splat no training view draws was never fitted to anything (e.g. the far side of the background shell,
    # still grey): it only clutters the scene seen from elsewhere, so it is not exported
    unseen = int((~seen).sum())
    cloud, invalid = to_cloud({k: v[seen] for k, v in params.items()}).drop_invalid()
    if invalid:  # the PLY must load everywhere (the codec refuses NaN): never export a broken splat
        log.warning("%d trained splats had NaN/Inf values and were left out of the PLY", invalid)
    write_ply(cloud, out_dir / PLY)
    report: dict[str, Any] = {
        "iterations": iterations,
        "splats": len(cloud),
        "dropped_invalid": invalid,
        "dropped_unseen": unseen,
        "psnr_test": test["psnr"],
        "ssim_test": test["ssim"],
        "psnr_train": trained["psnr"],
        "ssim_train": trained["ssim"],
        **initial,
        "psnr_test_gain": (round(test["psnr"] - initial["psnr_test_initial"], 4)
                           if test["psnr"] is not None and initial.get("psnr_test_initial") is not None else None),
        "seconds": round(elapsed_before + time.monotonic() - started, 3),
        "seconds_per_iteration": round(loop_seconds / max(1, iterations - start_step), 5),
        "peak_memory_bytes": peak,
        "peak_memory_kind": peak_kind,
        "device": str(dev),
        "backend": render.backend,
        "strategy": strategy,
        "max_splats": max_splats,
        "initial_points": initial_points,
        "initial_splats": len(points),
        "downsampled": downsampled,
        "sh_degree": sh_degree,
        "sh_degree_reached": final_sh,
        "resolution": [scene.train[0].width, scene.train[0].height],
        "source_resolution": list(scene.source_size),
        "images_train": len(scene.train),
        "images_test": [v.name for v in scene.test],
        "scene_scale": round(scene.scene_scale, 6),
        "schedule": sched,
        "lr_boost": round(boost, 4),
        "densification": events,
        "resumed_from_step": resumed_from,
        "seed": seed,
        "ply": PLY,
        "contact_sheet": CONTACT_SHEET,
        "viewer_camera": viewer_camera(scene),
    }
    with atomic_path(out_dir / REPORT) as tmp:
        tmp.write_text(json.dumps(report, indent=2))
    if not keep_checkpoints:
        store.clear()
    log.info("trained %d splats in %.1f s: held-out PSNR %s dB (from %s)", len(cloud), report["seconds"],
             test["psnr"], initial.get("psnr_test_initial"))
    return report


def _make_strategy(strategy: str, gsplat: bool, max_splats: int, sched: dict[str, int],
                   scene_scale: float) -> tuple[Any, dict[str, Any]]:
    """The densification strategy of the path (gsplat's on CUDA, ours on CPU) and its state."""
    common = {"refine_start_iter": sched["refine_start"], "refine_stop_iter": sched["refine_stop"],
              "refine_every": sched["refine_every"]}
    strat: Any
    if gsplat:
        from gsplat.strategy import DefaultStrategy, MCMCStrategy

        if strategy == "mcmc":
            strat = MCMCStrategy(cap_max=max_splats, **common)
        else:
            # opacity resets are ours (see _strategy_step): gsplat 1.5.3's own test,
            # `step % reset_every == 0 & step > 0`, parses as a chained comparison that is never true
            strat = DefaultStrategy(reset_every=NEVER, **common)
            strat.splatflow_reset_every = sched["reset_every"]
            strat.splatflow_grow_grad2d = strat.grow_grad2d  # restored under the budget (see _strategy_step)
    elif strategy == "mcmc":
        strat = CpuMCMCStrategy(cap_max=max_splats, **common)
    else:
        strat = CpuDefaultStrategy(cap_max=max_splats, reset_every=sched["reset_every"], **common)
    if gsplat and strategy == "mcmc":  # gsplat's MCMCStrategy.initialize_state takes no scene scale
        return strat, strat.initialize_state()
    return strat, strat.initialize_state(scene_scale=scene_scale)


def _check_gsplat_sanity(strat: Any, params: Params, optimizers: Optimizers) -> None:
    """gsplat's own check that the parameters and optimizers have the layout its strategy needs."""
    strat.check_sanity(params, optimizers)


def _strategy_step(strat: Any, strategy: str, gsplat: bool, params: Params, optimizers: Optimizers,
                   state: dict[str, Any], step: int, info: dict[str, Any], gen: torch.Generator, lr: float,
                   max_splats: int) -> dict[str, int]:
    """One post-backward densification step; on gsplat's default strategy the budget is enforced afterwards by
    pruning the least opaque splats (gsplat's DefaultStrategy has no cap of its own)."""
    if not gsplat:
        if strategy == "mcmc":
            return dict(strat.step_post_backward(params, optimizers, state, step, info, gen, lr))
        return dict(strat.step_post_backward(params, optimizers, state, step, info, gen))
    if strategy == "mcmc":
        strat.step_post_backward(params, optimizers, state, step, info, lr=lr)
        return {}
    from gsplat.strategy.ops import remove, reset_opa

    # at the budget, no growth: a refine step could otherwise nearly double the splats (and the GPU memory)
    # before the pruning below brings them back
    strat.grow_grad2d = math.inf if len(params["means"]) >= max_splats else strat.splatflow_grow_grad2d
    strat.step_post_backward(params, optimizers, state, step, info, packed=False)
    events: dict[str, int] = {}
    if 0 < step < strat.refine_stop_iter and step % strat.splatflow_reset_every == 0:
        reset_opa(params, optimizers, state, value=strat.prune_opa * 2.0)
        events["opacity_resets"] = 1
    n = len(params["means"])
    if n <= max_splats:
        return events

    order = torch.argsort(params["opacities"].detach())
    mask = torch.zeros(n, dtype=torch.bool, device=order.device)
    mask[order[: n - max_splats]] = True
    remove(params, optimizers, state, mask)
    return {**events, "pruned_over_budget": n - max_splats}
