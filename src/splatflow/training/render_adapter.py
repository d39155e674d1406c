"""The renderer of the training loop and the evaluation of views: both go through
:func:`splatflow.render.rasterize` (gsplat on CUDA; on CPU the compiled ``"cpu"`` backend or the ``"torch"``
reference) and measure with the one PSNR/SSIM of :mod:`splatflow.metrics`."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from splatflow.errors import DependencyMissing, InputError
from splatflow.metrics import MAX_PSNR, psnr, ssim_tensor
from splatflow.training.contact_sheet import SheetRow
from splatflow.training.scene import View
from splatflow.training.strategy import Params

__all__ = ["Renderer", "evaluate"]


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
            _require_gsplat_kernels()
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


def _require_gsplat_kernels() -> None:
    """DependencyMissing unless gsplat and its compiled CUDA kernels can be imported."""
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


def evaluate(render: Renderer, params: Params, views: list[View], sh_degree: int,
             sheet: list[SheetRow] | None = None, seen: torch.Tensor | None = None) -> dict[str, float | None]:
    """Mean PSNR (dB, at most ``MAX_PSNR``) and SSIM over ``views`` of the clamped renders; None for an empty
    list. With ``sheet``, a :class:`SheetRow` per view (photo, render, PSNR) is appended to it; with ``seen`` (N,)
    bool, the splats a view draws (screen box not empty) are marked in it."""
    if not views:
        return {"psnr": None, "ssim": None}
    psnrs, ssims = [], []
    with torch.no_grad():
        for v in views:
            img, info = render(params, v, sh_degree)
            if seen is not None:
                seen |= (info["radii"][0] > 0).all(dim=-1)
            img = img.clamp(0, 1)
            psnrs.append(min(psnr(img, v.image), MAX_PSNR))
            ssims.append(float(ssim_tensor(img, v.image)))
            if sheet is not None:
                sheet.append(SheetRow(v.name, v.image.cpu().numpy(), img.cpu().numpy(), psnrs[-1]))
    return {"psnr": round(float(np.mean(psnrs)), 4), "ssim": round(float(np.mean(ssims)), 5)}
