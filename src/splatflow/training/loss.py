"""The training loss: L1 plus D-SSIM (the 3DGS paper's photometric loss), with the one SSIM of
:mod:`splatflow.metrics` (fast on CPU through the compiled kernels, pytorch_msssim elsewhere)."""

from __future__ import annotations

from torch import Tensor

from splatflow.metrics import ssim_tensor

__all__ = ["SSIM_WEIGHT", "photometric_loss"]

SSIM_WEIGHT = 0.2
"""The weight of D-SSIM against L1 (3DGS: lambda = 0.2)."""


def photometric_loss(render: Tensor, photo: Tensor, ssim_weight: float = SSIM_WEIGHT) -> Tensor:
    """(1 - w) L1 + w (1 - SSIM) of a render (H, W, 3) against the photo (H, W, 3), both in [0, 1]."""
    l1 = (render - photo).abs().mean()
    return (1 - ssim_weight) * l1 + ssim_weight * (1 - ssim_tensor(render, photo))
