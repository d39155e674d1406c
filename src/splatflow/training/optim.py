"""Optimizers of the splat parameters: one Adam per parameter (the layout gsplat's strategies expect), the 3DGS
learning rates, the boost of short runs and the decay of the position learning rate."""

from __future__ import annotations

import math

import torch

from splatflow.training.strategy import Optimizers, Params

__all__ = ["LR", "lr_boost", "make_optimizers", "means_lr", "set_lr"]

# learning rates of the 3DGS paper / gsplat; means are scaled by the scene size and decay 100x over the run
LR = {"means": 1.6e-4, "scales": 5e-3, "quats": 1e-3, "opacities": 5e-2, "sh0": 2.5e-3, "shN": 2.5e-3 / 20}


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


def means_lr(step: int, iterations: int, scene_scale: float, boost: float) -> float:
    """The position learning rate at ``step``: the 3DGS rate times the scene size and ``boost``, decaying
    exponentially to 1/100 of that at the end of the run."""
    return LR["means"] * boost * scene_scale * 0.01 ** (step / iterations)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set the learning rate of every parameter group of ``optimizer``."""
    for group in optimizer.param_groups:
        group["lr"] = lr
