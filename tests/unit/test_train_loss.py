"""The training loss's fast SSIM equals pytorch_msssim's, value and gradient, on real photos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from splatflow import kernels
from splatflow.metrics import ssim_tensor as ssim


@pytest.mark.skipif(not kernels.available(), reason="no C++ compiler: the fast path cannot build")
@pytest.mark.parametrize("size", [(96, 128), (11, 40), (190, 256)])
def test_fast_ssim_matches_pytorch_msssim(data_dir: Path, size: tuple[int, int]) -> None:
    from pytorch_msssim import ssim as reference

    h, w = size
    with Image.open(data_dir / "photos" / "lund" / "03.jpg") as im:
        photo = torch.from_numpy(np.asarray(im.convert("RGB").resize((w, h)), dtype=np.float32) / 255.0)
    noisy = (photo + 0.1 * torch.randn(photo.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    a = noisy.clone().requires_grad_(True)
    b = noisy.clone().requires_grad_(True)
    mine = ssim(a, photo)
    ref = reference(b.permute(2, 0, 1)[None], photo.permute(2, 0, 1)[None], data_range=1.0, size_average=True)
    assert 0.1 < float(ref.detach()) < 0.95
    assert abs(float(mine.detach()) - float(ref.detach())) < 1e-5
    mine.backward()
    ref.backward()
    assert float((a.grad - b.grad).norm() / b.grad.norm()) < 1e-4
