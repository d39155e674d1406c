"""Image fidelity and size metrics: the one PSNR and the one SSIM of splatflow, file sizes, bytes per splat.

Images are numpy or torch arrays (H, W, C) with values in [0, 1]. Training (its loss and its report), ``splatflow
evaluate``, the compress report's fidelity and the benchmarks all measure with these two functions.

- :func:`psnr`: 10 log10(range^2 / MSE) over every pixel and channel, in float64 (``inf`` for identical images).
- :func:`ssim` / :func:`ssim_tensor`: what ``pytorch_msssim.ssim`` computes (11-tap Gaussian window, sigma 1.5,
  "valid" filtering, C1 = 0.01^2, C2 = 0.03^2, the mean of the SSIM map). On CPU float32 images the Gaussian
  filtering runs in the compiled kernels (:mod:`splatflow.kernels`; torch's depthwise convolution made SSIM about
  70 % of a CPU training step); elsewhere (CUDA, or no compiler) pytorch_msssim itself computes it. A test keeps
  the two equal, value and gradient.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from splatflow.errors import DependencyMissing, InputError

__all__ = ["MAX_PSNR", "bytes_per_splat", "finite_db", "gaussian_window", "path_bytes", "psnr", "ssim",
           "ssim_tensor"]

MAX_PSNR = 100.0
"""Finite stand-in for the PSNR of identical images in JSON reports (JSON has no infinity)."""
WINDOW = 11
SIGMA = 1.5
C1 = 0.01**2
C2 = 0.03**2


def _as_tensor(img: np.ndarray | Tensor) -> Tensor:
    """(H, W, C) image -> the same as a torch tensor (a tensor stays on its device)."""
    t = torch.as_tensor(np.asarray(img)) if isinstance(img, np.ndarray) else img.detach()
    if t.ndim != 3:
        raise InputError(f"expected an image (H, W, C), got shape {tuple(t.shape)}")
    return t


def _check_pair(a: np.ndarray | Tensor, b: np.ndarray | Tensor) -> None:
    if tuple(a.shape) != tuple(b.shape):
        raise InputError(f"images differ in shape: {tuple(a.shape)} and {tuple(b.shape)}",
                         hint="render both from the same camera and size")


def psnr(a: np.ndarray | Tensor, b: np.ndarray | Tensor, *, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB of two (H, W, C) images; ``inf`` when they are identical."""
    _check_pair(a, b)
    x, y = _as_tensor(a), _as_tensor(b)
    mse = float(torch.mean((x.to(torch.float64) - y.to(device=x.device, dtype=torch.float64)) ** 2))
    return math.inf if mse == 0.0 else 10.0 * math.log10(data_range**2 / mse)


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


def ssim_tensor(a: Tensor, b: Tensor, *, data_range: float = 1.0) -> Tensor:
    """Differentiable mean SSIM of two (H, W, C) float images (a scalar tensor); images smaller than 11 px use
    the largest odd window that fits."""
    if not (_fast_ok(a) and data_range == 1.0):
        try:
            from pytorch_msssim import ssim as reference
        except ImportError as exc:
            raise DependencyMissing("SSIM needs pytorch-msssim", hint="pip install 'splatflow[render]'") from exc
        win = min(WINDOW, a.shape[0], a.shape[1])
        win -= 1 - win % 2  # odd window for images smaller than 11 px
        return reference(a.permute(2, 0, 1)[None], b.permute(2, 0, 1)[None], data_range=data_range,
                         size_average=True, win_size=win)
    c = a.shape[2]
    x, y = a.permute(2, 0, 1), b.to(a).permute(2, 0, 1)
    maps = torch.cat([x, y, x * x, y * y, x * y])                         # (5 C, H, W)
    mx, my, sxx, syy, sxy = _Blur.apply(maps, gaussian_window()).split(c)
    sx, sy, cxy = sxx - mx * mx, syy - my * my, sxy - mx * my
    cs = (2 * cxy + C2) / (sx + sy + C2)
    lum = (2 * mx * my + C1) / (mx * mx + my * my + C1)
    return (lum * cs).mean()


def ssim(a: np.ndarray | Tensor, b: np.ndarray | Tensor, *, data_range: float = 1.0) -> float:
    """Structural similarity of two (H, W, C) images (1.0 when identical); sides must be >= 11 pixels."""
    _check_pair(a, b)
    if min(a.shape[0], a.shape[1]) < WINDOW:
        raise InputError(f"SSIM needs images of at least 11x11 pixels, got {a.shape[1]}x{a.shape[0]}",
                         hint="render larger views (--size)")
    x, y = _as_tensor(a).float(), _as_tensor(b).float()
    with torch.no_grad():
        return float(ssim_tensor(x, y.to(x.device), data_range=data_range))


def finite_db(value: float, cap: float = MAX_PSNR) -> float:
    """A PSNR for JSON: ``inf`` (identical images) becomes ``cap``, other values are rounded to 0.001 dB."""
    return cap if not np.isfinite(value) else round(min(value, cap), 3)


def path_bytes(path: str | os.PathLike[str]) -> int:
    """Bytes on disk of a file, or of every file under a folder (a SOG folder: meta.json + images)."""
    p = Path(path)
    if p.is_file():
        return p.stat().st_size
    if p.is_dir():
        return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    raise InputError(f"{p} does not exist", hint="check the path")


def bytes_per_splat(nbytes: int, splats: int) -> float:
    """Storage cost per splat, rounded to 0.001 byte; InputError for an empty cloud."""
    if splats <= 0:
        raise InputError("bytes per splat of an empty cloud", hint="the file holds no splats")
    return round(nbytes / splats, 3)
