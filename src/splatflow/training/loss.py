"""Training losses: a fast differentiable SSIM for CPU training.

:func:`ssim` computes what ``pytorch_msssim.ssim`` computes (11-tap Gaussian window, sigma 1.5, "valid"
filtering, C1 = 0.01^2, C2 = 0.03^2, the mean of the SSIM map) for (H, W, 3) images in [0, 1]. On CPU tensors the
Gaussian filtering runs in the compiled kernels (:mod:`splatflow.kernels`): torch's depthwise convolution made
SSIM about 70 % of a CPU training step. Elsewhere (CUDA, or no compiler) it calls pytorch_msssim itself.
Training's loss and its report use it; ``splatflow evaluate`` uses pytorch_msssim (:mod:`splatflow.metrics`);
a test keeps the two equal.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

WINDOW = 11
SIGMA = 1.5
C1 = 0.01**2
C2 = 0.03**2


def gaussian_window(size: int = WINDOW, sigma: float = SIGMA) -> Tensor:
    """(size,) normalised 1-D Gaussian taps (pytorch_msssim's window)."""
    x = torch.arange(size, dtype=torch.float32) - size // 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


class _Blur(torch.autograd.Function):
    """Separable "valid" Gaussian filtering of maps (n, H, W) -> (n, H - K + 1, W - K + 1) in the kernels."""

    @staticmethod
    def forward(ctx: Any, maps: Tensor, taps: Tensor) -> Tensor:
        from splatflow import kernels

        x = maps.detach().to(torch.float32).contiguous()
        n, h, w = x.shape
        k = len(taps)
        out = torch.empty(n, h - k + 1, w - k + 1, dtype=torch.float32)
        kernels.load().sf_blur_valid(n, h, w, taps.data_ptr(), k, x.data_ptr(), out.data_ptr(),
                                     torch.get_num_threads())
        ctx.save_for_backward(taps)
        ctx.shape = (n, h, w)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        from splatflow import kernels

        (taps,) = ctx.saved_tensors
        n, h, w = ctx.shape
        g = grad.to(torch.float32).contiguous()
        out = torch.empty(n, h, w, dtype=torch.float32)
        kernels.load().sf_blur_valid_backward(n, h, w, taps.data_ptr(), len(taps), g.data_ptr(), out.data_ptr(),
                                              torch.get_num_threads())
        return out, None


def _fast_ok(a: Tensor) -> bool:
    if a.device.type != "cpu" or a.dtype != torch.float32 or min(a.shape[0], a.shape[1]) < WINDOW:
        return False
    from splatflow import kernels

    return kernels.available()


def ssim(a: Tensor, b: Tensor) -> Tensor:
    """Differentiable mean SSIM of two (H, W, 3) images in [0, 1] (a scalar tensor)."""
    if not _fast_ok(a):
        from pytorch_msssim import ssim as reference

        win = min(WINDOW, a.shape[0], a.shape[1])
        win -= 1 - win % 2  # odd window for images smaller than 11 px
        return reference(a.permute(2, 0, 1)[None], b.permute(2, 0, 1)[None], data_range=1.0, size_average=True,
                         win_size=win)
    x, y = a.permute(2, 0, 1), b.permute(2, 0, 1)
    maps = torch.cat([x, y, x * x, y * y, x * y])                         # (15, H, W)
    mx, my, sxx, syy, sxy = _Blur.apply(maps, gaussian_window()).split(3)
    sx, sy, cxy = sxx - mx * mx, syy - my * my, sxy - mx * my
    cs = (2 * cxy + C2) / (sx + sy + C2)
    lum = (2 * mx * my + C1) / (mx * mx + my * my + C1)
    return (lum * cs).mean()
