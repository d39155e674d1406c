"""The splats being trained: initial splats from SfM points, the background shell, and the export to a
:class:`~splatflow.gaussians.GaussianCloud`.

The parameters are a dict of ``torch.nn.Parameter``: ``means`` (N, 3), ``scales`` (N, 3) log, ``quats`` (N, 4),
``opacities`` (N,) logits, ``sh0`` (N, 1, 3), ``shN`` (N, K, 3).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch

from splatflow.gaussians import SH_C0, GaussianCloud
from splatflow.training.scene import Scene
from splatflow.training.strategy import Params

__all__ = ["background_shell", "init_params", "to_cloud"]


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


def to_cloud(params: Mapping[str, torch.Tensor]) -> GaussianCloud:
    """The trained splats as a GaussianCloud (log scales, opacity logits, unit quaternions)."""
    with torch.no_grad():
        quats = torch.nn.functional.normalize(params["quats"], dim=-1)
        return GaussianCloud.from_torch({
            "means": params["means"], "scales": params["scales"], "quats": quats,
            "opacities": params["opacities"], "sh0": params["sh0"][:, 0, :], "shN": params["shN"],
        })
