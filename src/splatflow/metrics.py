"""Image fidelity and size metrics: PSNR (torchmetrics), SSIM (pytorch-msssim), file sizes, bytes per splat.

Images are numpy or torch arrays (H, W, 3) with values in [0, 1]. Both metric libraries are in the ``render``
extra; SSIM is the usual 11x11 Gaussian window (sigma 1.5), the one the training stage reports.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from splatflow.errors import DependencyMissing, InputError

MAX_PSNR = 100.0
"""Finite stand-in for the PSNR of identical images in JSON reports (JSON has no infinity)."""


def _as_batch(img: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(H, W, C) image -> (1, C, H, W) float32 tensor."""
    t = torch.as_tensor(np.asarray(img) if isinstance(img, np.ndarray) else img.detach().cpu())
    if t.ndim != 3:
        raise InputError(f"expected an image (H, W, C), got shape {tuple(t.shape)}")
    return t.float().permute(2, 0, 1)[None].contiguous()


def _check_pair(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> None:
    if tuple(a.shape) != tuple(b.shape):
        raise InputError(f"images differ in shape: {tuple(a.shape)} and {tuple(b.shape)}",
                         hint="render both from the same camera and size")


def psnr(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor, *, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB of two (H, W, C) images; ``inf`` when they are identical."""
    _check_pair(a, b)
    try:
        from torchmetrics.functional.image import peak_signal_noise_ratio
    except ImportError as exc:
        raise DependencyMissing("PSNR needs torchmetrics", hint="pip install 'splatflow[render]'") from exc
    return float(peak_signal_noise_ratio(_as_batch(a), _as_batch(b), data_range=data_range))


def ssim(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor, *, data_range: float = 1.0) -> float:
    """Structural similarity of two (H, W, C) images (1.0 when identical); sides must be >= 11 pixels."""
    _check_pair(a, b)
    if min(a.shape[0], a.shape[1]) < 11:
        raise InputError(f"SSIM needs images of at least 11x11 pixels, got {a.shape[1]}x{a.shape[0]}",
                         hint="render larger views (--size)")
    try:
        from pytorch_msssim import ssim as _ssim
    except ImportError as exc:
        raise DependencyMissing("SSIM needs pytorch-msssim", hint="pip install 'splatflow[render]'") from exc
    return float(_ssim(_as_batch(a), _as_batch(b), data_range=data_range, size_average=True))


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
