"""3D Gaussian Splat rasterizer: one interface, two backends.

:func:`rasterize` takes splats in gsplat's conventions (linear scales, opacities in [0, 1], SH coefficients
``(N, (deg+1)**2, 3)``, an OpenCV world-to-camera ``viewmat``, pinhole ``K``) and returns ``(rgb (H, W, 3),
alpha (H, W, 1))``. Backends:

- ``"gsplat"``: gsplat's CUDA rasterizer (``gsplat.rasterization``); needs the ``train`` extra and a CUDA device.
- ``"torch"``: a pure-torch implementation that runs on CPU (and CUDA) and is differentiable with respect to
  every splat input. It follows gsplat's "classic" mode step by step: EWA projection of the 3-D covariance with
  the 0.3-pixel low-pass dilation, the opacity-aware 3-sigma screen box, SH evaluation up to degree 3 with the
  gsplat/INRIA constants (``colour = max(SH(dir) + 0.5, 0)``, ``dir`` from the camera centre to the splat),
  depth-sorted front-to-back compositing per tile with gsplat's constants (alpha clamped at 0.999, splats
  with alpha < 1/255 skipped, a pixel stops at transmittance <= 1e-4, pixel centres at +0.5).
- ``"cpu"``: the torch backend's computation step for step -- projection, screen box, SH colour, a stable depth
  sort, binning and compositing, forward and backward -- in compiled, multi-threaded C++
  (:mod:`splatflow.kernels`; 16-pixel tiles, the backward pass walking each pixel's splats in reverse); float32.
  4-15x faster than ``"torch"`` in bench/results/render-cpu.md (an idle 2-core machine).
- ``"auto"``: gsplat when the tensors are on CUDA and gsplat imports; on CPU the ``"cpu"`` backend when its
  kernels build or load, else torch.

Memory stays bounded: compositing walks all tiles together in chunks of splats whose size adapts so one chunk
holds at most ``SAMPLES_PER_CHUNK`` (tile, splat, pixel) samples; tiles whose pixels are all opaque drop out early.

:func:`render_cloud` renders a :class:`~splatflow.gaussians.GaussianCloud` from a
:class:`~splatflow.cameras.Camera` into a numpy image for evaluation.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from splatflow.devices import resolve_device as resolve_device  # the one resolver (re-exported: sog.reduce)
from splatflow.errors import DependencyMissing, InputError

if TYPE_CHECKING:
    from splatflow.cameras import Camera
    from splatflow.gaussians import GaussianCloud

log = logging.getLogger(__name__)

TILE = 4
"""Tile edge in pixels of the torch backend (gsplat uses 16 on CUDA; the image does not depend on it, and
small tiles waste fewer samples on CPU)."""
EPS2D = 0.3
"""Low-pass dilation added to the projected 2-D covariance (pixels squared)."""
ALPHA_MIN = 1.0 / 255.0
"""Splats whose alpha at a pixel is below this are skipped there."""
ALPHA_MAX = 0.999
"""Alpha is clamped to this (gsplat's constant; the INRIA code uses 0.99)."""
T_MIN = 1e-4
"""A pixel stops compositing when its transmittance would drop to this or below (that splat is excluded)."""
MIN_DEPTH = 1e-3
"""Camera depth below which the projection's Jacobian is clamped (such splats are culled: ``near`` >= this)."""
SAMPLES_PER_CHUNK = 1 << 22
"""At most this many (tile, splat, pixel) samples are evaluated at once by the torch backend (~16 MB per
float32 buffer), which bounds its memory independently of the number of splats."""

# Real spherical harmonics constants, those of gsplat and the INRIA 3DGS code (Sloan's fast evaluation).
SH_C0 = 0.28209479177387814
SH_C1 = 0.4886025119029199
SH_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
SH_C3 = (-0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154,
         -0.4570457994644658, 1.445305721320277, -0.5900435899266435)


# ---------------------------------------------------------------------------------------------- building blocks
def quat_to_rotmat(quats: Tensor) -> Tensor:
    """(N, 4) quaternions (w, x, y, z), any norm -> (N, 3, 3) rotation matrices (a zero quaternion gives I)."""
    q = quats / quats.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    q = torch.where(quats.norm(dim=-1, keepdim=True) > 0, q, q.new_tensor([1.0, 0.0, 0.0, 0.0]))
    w, x, y, z = q.unbind(-1)
    r = torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], dim=-1)
    return r.reshape(quats.shape[:-1] + (3, 3))


def covariance_3d(quats: Tensor, scales: Tensor) -> Tensor:
    """(N, 4) quaternions and (N, 3) linear scales -> (N, 3, 3) world covariances R S S^T R^T."""
    m = quat_to_rotmat(quats) * scales[:, None, :]
    return m @ m.transpose(-1, -2)


def project(means: Tensor, covars: Tensor, viewmat: Tensor, K: Tensor, width: int, height: int, *,
            eps2d: float = EPS2D) -> dict[str, Tensor]:
    """EWA perspective projection of N Gaussians into one pinhole camera (gsplat's ``persp_proj``).

    ``means`` (N, 3) world, ``covars`` (N, 3, 3) world, ``viewmat`` (4, 4) world-to-camera (OpenCV: x right,
    y down, z forward), ``K`` (3, 3). Returns ``means2d`` (N, 2) pixels (pixel centres at +0.5), ``depths``
    (N,) camera z, ``cov2d`` (N, 2, 2) including the ``eps2d`` dilation, ``conics`` (N, 3) the upper triangle
    (a, b, c) of its inverse, and ``det`` (N,) its determinant. The Jacobian is evaluated with the camera-space
    position clamped to 1.3x the field of view, as gsplat and the INRIA code do.
    """
    R, t = viewmat[:3, :3], viewmat[:3, 3]
    mc = means @ R.T + t
    cc = R @ covars @ R.T
    tx, ty, tz = mc.unbind(-1)
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    tan_fovx, tan_fovy = 0.5 * width / fx, 0.5 * height / fy
    lim_xp, lim_xn = (width - cx) / fx + 0.3 * tan_fovx, cx / fx + 0.3 * tan_fovx
    lim_yp, lim_yn = (height - cy) / fy + 0.3 * tan_fovy, cy / fy + 0.3 * tan_fovy
    # splats at or behind the camera plane are culled later (depth <= near); their depth is clamped here so
    # that the Jacobian stays finite: otherwise their gradients, zero by the culling, become 0 * inf = NaN
    tzs = tz.clamp_min(MIN_DEPTH)
    jx = tzs * torch.clamp(tx / tzs, min=-lim_xn, max=lim_xp)
    jy = tzs * torch.clamp(ty / tzs, min=-lim_yn, max=lim_yp)
    zero = torch.zeros_like(tz)
    J = torch.stack([fx / tzs, zero, -fx * jx / tzs**2, zero, fy / tzs, -fy * jy / tzs**2], -1).reshape(-1, 2, 3)
    cov2d = J @ cc @ J.transpose(-1, -2)
    cov2d = cov2d + eps2d * torch.eye(2, dtype=cov2d.dtype, device=cov2d.device)
    det = cov2d[:, 0, 0] * cov2d[:, 1, 1] - cov2d[:, 0, 1] * cov2d[:, 1, 0]
    # a degenerate or overflowing cov2d (culled: det <= 0 or not finite) divides by 1 instead, so no inf or NaN
    # reaches the backward pass through the branch torch.where does not pick
    ok = torch.isfinite(det) & (det > 1e-10)
    dets = torch.where(ok, det, torch.ones_like(det))
    safe = torch.where(ok[:, None, None], cov2d, torch.zeros_like(cov2d))
    conics = torch.stack([safe[:, 1, 1] / dets, -0.5 * (safe[:, 0, 1] + safe[:, 1, 0]) / dets,
                          safe[:, 0, 0] / dets], -1)
    means2d = torch.stack([fx * tx / tzs + cx, fy * ty / tzs + cy], -1)
    return {"means2d": means2d, "depths": tz, "cov2d": cov2d, "conics": conics, "det": det}


def eval_sh(degree: int, coeffs: Tensor, dirs: Tensor) -> Tensor:
    """SH colour: ``coeffs`` (N, K, 3) with K >= (degree+1)**2, ``dirs`` (N, 3) viewing directions (any length,
    from the camera centre towards the splat) -> (N, 3) ``sum_k basis_k(dir) * coeffs_k`` (without the +0.5)."""
    need = (degree + 1) ** 2
    if coeffs.shape[1] < need:
        raise InputError(f"SH degree {degree} needs {need} coefficients per channel, the splats have "
                         f"{coeffs.shape[1]}", hint="pass the splats' own sh_degree (or a lower one)")
    out = SH_C0 * coeffs[:, 0]
    if degree == 0:
        return out
    d = dirs / dirs.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    x, y, z = (d[:, i : i + 1] for i in range(3))
    out = out - SH_C1 * y * coeffs[:, 1] + SH_C1 * z * coeffs[:, 2] - SH_C1 * x * coeffs[:, 3]
    if degree == 1:
        return out
    xx, yy, zz, xy, yz, xz = x * x, y * y, z * z, x * y, y * z, x * z
    out = (out + SH_C2[0] * xy * coeffs[:, 4] + SH_C2[1] * yz * coeffs[:, 5]
           + SH_C2[2] * (2 * zz - xx - yy) * coeffs[:, 6] + SH_C2[3] * xz * coeffs[:, 7]
           + SH_C2[4] * (xx - yy) * coeffs[:, 8])
    if degree == 2:
        return out
    return (out + SH_C3[0] * y * (3 * xx - yy) * coeffs[:, 9] + SH_C3[1] * xy * z * coeffs[:, 10]
            + SH_C3[2] * y * (4 * zz - xx - yy) * coeffs[:, 11]
            + SH_C3[3] * z * (2 * zz - 3 * xx - 3 * yy) * coeffs[:, 12]
            + SH_C3[4] * x * (4 * zz - xx - yy) * coeffs[:, 13] + SH_C3[5] * z * (xx - yy) * coeffs[:, 14]
            + SH_C3[6] * x * (xx - 3 * yy) * coeffs[:, 15])


def camera_center(viewmat: Tensor) -> Tensor:
    """(3,) world position of the camera of a (4, 4) world-to-camera matrix: -R^T t."""
    return -viewmat[:3, :3].T @ viewmat[:3, 3]


# ---------------------------------------------------------------------------------------------- the torch backend
def _tile_intersections(means2d: Tensor, radii: Tensor, depths: Tensor, tiles_x: int, tiles_y: int,
                        tile: int = TILE) -> tuple[Tensor, Tensor, Tensor]:
    """Pairs (tile, splat) for M visible splats, sorted by tile then depth.

    ``means2d`` (M, 2), ``radii`` (M, 2) pixel half-extents, ``depths`` (M,). Returns ``splat_ids`` (P,),
    ``tile_start`` (T,) and ``tile_end`` (T,) offsets into it for the T = tiles_x * tiles_y tiles.
    """
    dev = means2d.device
    lo = torch.floor((means2d - radii) / tile).long()
    hi = torch.ceil((means2d + radii) / tile).long()
    x0, x1 = lo[:, 0].clamp(0, tiles_x), hi[:, 0].clamp(0, tiles_x)
    y0, y1 = lo[:, 1].clamp(0, tiles_y), hi[:, 1].clamp(0, tiles_y)
    w = (x1 - x0).clamp_min(0)
    counts = w * (y1 - y0).clamp_min(0)
    order = torch.argsort(depths, stable=True)          # front to back
    counts_o = counts[order]
    total = int(counts_o.sum())
    n_tiles = tiles_x * tiles_y
    if total == 0:
        z = torch.zeros(n_tiles, dtype=torch.long, device=dev)
        return torch.zeros(0, dtype=torch.long, device=dev), z, z
    sid = torch.repeat_interleave(order, counts_o)
    first = torch.cumsum(counts_o, 0) - counts_o
    local = torch.arange(total, device=dev) - torch.repeat_interleave(first, counts_o)
    tx = x0[sid] + local % w[sid]
    ty = y0[sid] + torch.div(local, w[sid], rounding_mode="floor")
    tile_ids, perm = torch.sort(ty * tiles_x + tx, stable=True)   # stable: keeps depth order within a tile
    sid = sid[perm]
    per_tile = torch.bincount(tile_ids, minlength=n_tiles)
    end = torch.cumsum(per_tile, 0)
    return sid, end - per_tile, end


def _composite_tiles(active: Tensor, means2d: Tensor, conics: Tensor, log_opac: Tensor, colors: Tensor,
                     splat_ids: Tensor, tile_start: Tensor, tile_end: Tensor, origin: Tensor, tile: int
                     ) -> tuple[Tensor, Tensor, Tensor]:
    """Composite the tiles ``active`` (A,) together; returns their ids (A,) in the order they finished, their
    rgb (A, P, D) and transmittance (A, P), P = tile * tile pixels in row-major order.

    Per chunk of C splats per tile, ``power = log(opacity) - sigma`` is built from per-column and per-row terms
    (a tile has only ``tile`` distinct pixel-centre x and y values) and transmittance is a cumulative product
    carried from chunk to chunk. A tile leaves when its splats run out or all its pixels are opaque.
    """
    dev, dtype = means2d.device, means2d.dtype
    p, d = tile * tile, colors.shape[1]
    offs = torch.arange(tile, device=dev, dtype=dtype) + 0.5                    # pixel centres within a tile
    done_ids: list[Tensor] = []
    done_rgb: list[Tensor] = []
    done_t: list[Tensor] = []
    rgb = colors.new_zeros(len(active), p, d)
    trans = means2d.new_ones(len(active), p)            # transmittance after the splats composited so far
    finished = torch.zeros(len(active), p, dtype=torch.bool, device=dev)
    pos, ends = tile_start[active], tile_end[active]
    while len(active):
        c = max(1, min(int((ends - pos).max()), SAMPLES_PER_CHUNK // (len(active) * p)))
        idx = pos[:, None] + torch.arange(c, device=dev)                        # (A, C)
        valid = idx < ends[:, None]
        g = splat_ids[torch.minimum(idx, ends[:, None] - 1)]                    # (A, C) splat of each slot
        xy = means2d[g] - origin[active][:, None, :]                            # (A, C, 2) mean within the tile
        dx = xy[..., 0, None] - offs                                            # (A, C, tile): mean - pixel x
        dy = xy[..., 1, None] - offs                                            # (A, C, tile): mean - pixel y
        con = conics[g]
        lo = torch.where(valid, log_opac[g], torch.full_like(log_opac[g], -torch.inf))
        row = (lo[..., None] - 0.5 * con[..., 0, None] * dx * dx)[:, :, None, :]   # (A, C, 1, tile) x terms
        col = (-0.5 * con[..., 2, None] * dy * dy)[:, :, :, None]                  # (A, C, tile, 1) y terms
        power = torch.addcmul(row + col, (-con[..., 1, None] * dy)[:, :, :, None], dx[:, :, None, :])
        alpha = torch.exp(power.reshape(len(active), c, p)).clamp_max(ALPHA_MAX)   # (A, C, P)
        alpha = torch.where(alpha >= ALPHA_MIN, alpha, torch.zeros_like(alpha))
        om = 1 - alpha
        after = (trans * ~finished)[:, None, :] * torch.cumprod(om, 1)          # T after each splat
        included = after > T_MIN                                                # a prefix along C
        weight = torch.where(included, alpha * after / om, torch.zeros_like(alpha))
        rgb = rgb + torch.einsum("acp,acd->apd", weight, colors[g])
        count = included.sum(1, keepdim=True)                                   # (A, 1, P)
        last = torch.gather(after, 1, (count - 1).clamp_min(0)).squeeze(1)
        trans = torch.where(count.squeeze(1) > 0, last, trans)
        finished = finished | (after[:, -1, :] <= T_MIN)
        pos = pos + c
        out = (pos >= ends) | finished.all(1)
        if bool(out.any()):
            done_ids.append(active[out])
            done_rgb.append(rgb[out])
            done_t.append(trans[out])
            stay = ~out
            active, rgb, trans, finished, pos, ends = (active[stay], rgb[stay], trans[stay], finished[stay],
                                                       pos[stay], ends[stay])
    if not done_ids:
        return active, rgb, trans
    return torch.cat(done_ids), torch.cat(done_rgb), torch.cat(done_t)


def _composite(means2d: Tensor, conics: Tensor, opac: Tensor, colors: Tensor, splat_ids: Tensor,
               tile_start: Tensor, tile_end: Tensor, tiles_x: int, tiles_y: int, width: int, height: int,
               background: Tensor | None, tile: int = TILE) -> tuple[Tensor, Tensor]:
    """Front-to-back compositing of all tiles, in groups small enough for the sample budget.

    Inputs are per visible splat (M, ...), ``splat_ids`` and ``tile_start``/``tile_end`` from
    :func:`_tile_intersections`; returns rgb (H, W, D) and alpha (H, W, 1).
    """
    dev, dtype = means2d.device, means2d.dtype
    n_tiles, p, d = tiles_x * tiles_y, tile * tile, colors.shape[1]
    tid = torch.arange(n_tiles, device=dev)
    origin = torch.stack([tid % tiles_x, tid // tiles_x], -1).to(dtype) * tile  # (T, 2) tile corners
    log_opac = torch.log(opac.clamp_min(1e-30))
    busy = torch.nonzero(tile_end > tile_start).flatten()
    group = max(1, SAMPLES_PER_CHUNK // (p * 16))      # tiles per group, so that chunks hold >= 16 splats
    full_rgb = colors.new_zeros(n_tiles, p, d)
    full_t = means2d.new_ones(n_tiles, p)
    for i in range(0, len(busy), group):
        ids, rgb, trans = _composite_tiles(busy[i : i + group], means2d, conics, log_opac, colors, splat_ids,
                                           tile_start, tile_end, origin, tile)
        full_rgb = full_rgb.index_put((ids,), rgb)
        full_t = full_t.index_put((ids,), trans)
    if background is not None:
        full_rgb = full_rgb + full_t[..., None] * background.to(dtype)
    # (tiles_y, tiles_x, tile, tile, D) -> (H, W, D)
    img = full_rgb.reshape(tiles_y, tiles_x, tile, tile, d).permute(0, 2, 1, 3, 4)
    img = img.reshape(tiles_y * tile, tiles_x * tile, d)[:height, :width]
    acc = (1 - full_t).reshape(tiles_y, tiles_x, tile, tile).permute(0, 2, 1, 3)
    acc = acc.reshape(tiles_y * tile, tiles_x * tile)[:height, :width, None]
    return img, acc


def _visible_splats(means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, colors: Tensor,
                    viewmat: Tensor, K: Tensor, width: int, height: int, sh_degree: int | None, near: float,
                    far: float, info: dict[str, Any] | None) -> dict[str, Tensor]:
    """The torch backend's per-splat part: projection, the opacity-aware screen box, culling and SH colour,
    differentiable in every input (the cpu backend's ``_CpuProject`` does the same in C++; bench/raster_tech.py
    calls this and :func:`_composite_visible` apart to time the compositing alone). Returns, for the M visible
    splats, ``means2d`` (M, 2), ``conics`` (M, 3), ``opacities`` (M,), ``colors`` (M, D), ``radii`` (M, 2) and
    ``depths`` (M,) (the last two without gradient). Fills ``info`` (gsplat's ``meta`` layout) when given."""
    proj = project(means, covariance_3d(quats, scales), viewmat, K, width, height)
    means2d, depths, cov2d, det = proj["means2d"], proj["depths"], proj["cov2d"], proj["det"]
    with torch.no_grad():
        op = opacities.detach()
        extend = torch.sqrt(2.0 * torch.log(op.clamp_min(ALPHA_MIN) / ALPHA_MIN)).clamp_max(3.33)
        radii = torch.ceil(extend[:, None] * torch.sqrt(torch.diagonal(cov2d.detach(), dim1=-2, dim2=-1)
                                                        .clamp_min(0)))
        m2 = means2d.detach()
        visible = ((depths.detach() > near) & (depths.detach() < far) & (det.detach() > 0) & (op >= ALPHA_MIN)
                   & (m2[:, 0] + radii[:, 0] > 0) & (m2[:, 0] - radii[:, 0] < width)
                   & (m2[:, 1] + radii[:, 1] > 0) & (m2[:, 1] - radii[:, 1] < height)
                   & torch.isfinite(m2).all(-1) & torch.isfinite(radii).all(-1))
        radii = torch.where(visible[:, None], radii, torch.zeros_like(radii))
        vis = torch.nonzero(visible).flatten()
    if info is not None:  # the (1, N, 2) tensor handed out is the one the compositing uses, so it gets grads
        batched = means2d[None]
        means2d = batched[0]
        info.update(means2d=batched, radii=radii.int()[None], depths=depths[None], width=width,
                    height=height, n_cameras=1, visible=visible)
    if sh_degree is None:
        rgb_v = colors[vis]
    else:
        dirs = means[vis] - camera_center(viewmat)
        rgb_v = torch.clamp_min(eval_sh(sh_degree, colors[vis], dirs) + 0.5, 0.0)
    return {"means2d": means2d[vis], "conics": proj["conics"][vis], "opacities": opacities[vis], "colors": rgb_v,
            "radii": radii[vis], "depths": depths.detach()[vis]}


def _rasterize_torch(means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, colors: Tensor,
                     viewmat: Tensor, K: Tensor, width: int, height: int, sh_degree: int | None,
                     background: Tensor | None, near: float, far: float, info: dict[str, Any] | None
                     ) -> tuple[Tensor, Tensor]:
    v = _visible_splats(means, quats, scales, opacities, colors, viewmat, K, width, height, sh_degree, near, far,
                        info)
    return _composite_visible(v, width, height, background)


def _composite_visible(v: dict[str, Tensor], width: int, height: int, background: Tensor | None
                       ) -> tuple[Tensor, Tensor]:
    """The torch backend's binning and compositing of :func:`_visible_splats`' output: rgb (H, W, D), alpha
    (H, W, 1)."""
    tile = TILE
    tiles_x, tiles_y = -(-width // tile), -(-height // tile)
    with torch.no_grad():
        sid, start, end = _tile_intersections(v["means2d"].detach(), v["radii"], v["depths"], tiles_x, tiles_y,
                                              tile)
    return _composite(v["means2d"], v["conics"], v["opacities"], v["colors"], sid, start, end,
                      tiles_x, tiles_y, width, height, background, tile)


# ---------------------------------------------------------------------------------------------- the cpu backend
CPU_TILE = 16
"""Tile edge in pixels of the compiled CPU backend (8 or 16). Measured once with a standalone C driver on
playbot_lod2 at 256 px, one thread: 16 took 13 ms forward + 31 ms backward, 8 took 13 ms + 37 ms (more
intersections to bin and sum); the image does not depend on it (a test)."""


def _ptr(t: Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _f32(t: Tensor) -> Tensor:
    return t.detach().to(torch.float32).contiguous()


class _CpuProject(torch.autograd.Function):
    """Per-splat projection, screen box, culling and SH colour in the compiled kernels, forward and backward
    (:func:`_visible_splats` is the torch reference it follows).

    Inputs: ``means`` (N, 3), ``quats`` (N, 4), ``scales`` (N, 3), ``opacities`` (N,) (no gradient: they only
    size the screen box), ``sh`` (N, K, 3) or None (then no colours), ``viewmat`` (4, 4), ``K`` (3, 3).
    Outputs: ``means2d`` (N, 2), ``conics`` (N, 3), ``colors`` (N, 3) (empty without ``sh``), and without
    gradient ``depths`` (N,), ``radii`` (N, 2) and ``visible`` (N,) bool.
    """

    @staticmethod
    def forward(ctx: Any, means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, sh: Tensor | None,
                viewmat: Tensor, K: Tensor, width: int, height: int, degree: int, near: float, far: float
                ) -> tuple[Tensor, ...]:
        from splatflow import kernels

        lib = kernels.load()
        n = len(means)
        mu, q, sc, op = _f32(means), _f32(quats), _f32(scales), _f32(opacities)
        shc = None if sh is None else _f32(sh)
        vm = _f32(viewmat)
        intr = torch.stack([K[0, 0], K[1, 1], K[0, 2], K[1, 2]]).to(torch.float32).contiguous()
        f32 = torch.float32
        means2d, conics, depths = torch.empty(n, 2, dtype=f32), torch.empty(n, 3, dtype=f32), torch.empty(n, dtype=f32)
        radii = torch.empty(n, 2, dtype=f32)
        colors = torch.empty(n if shc is not None else 0, 3, dtype=f32)
        visible = torch.empty(n, dtype=torch.uint8)
        lib.sf_project_forward(n, _ptr(mu), _ptr(q), _ptr(sc), _ptr(op), _ptr(shc),
                               0 if shc is None else shc.shape[1], degree if shc is not None else -1, _ptr(vm),
                               _ptr(intr), width, height, near, far, EPS2D, _ptr(means2d), _ptr(conics),
                               _ptr(depths), _ptr(radii), _ptr(colors) if shc is not None else None, _ptr(visible),
                               torch.get_num_threads())
        vis = visible.bool()
        ctx.save_for_backward(mu, q, sc, *(() if shc is None else (shc,)), vm, intr, visible)
        ctx.meta = (width, height, degree if shc is not None else -1, shc is not None,
                    means.dtype, quats.dtype, scales.dtype, None if sh is None else sh.dtype)
        ctx.mark_non_differentiable(depths, radii, vis)
        return means2d, conics, colors, depths, radii, vis

    @staticmethod
    def backward(ctx: Any, v_means2d: Tensor, v_conics: Tensor, v_colors: Tensor, *_: Any
                 ) -> tuple[Tensor | None, ...]:
        from splatflow import kernels

        lib = kernels.load()
        width, height, degree, has_sh, dt_m, dt_q, dt_s, dt_sh = ctx.meta
        saved = list(ctx.saved_tensors)
        mu, q, sc = saved[:3]
        shc = saved[3] if has_sh else None
        vm, intr, visible = saved[-3:]
        n = len(mu)
        f32 = torch.float32
        g_m, g_q, g_s = torch.empty(n, 3, dtype=f32), torch.empty(n, 4, dtype=f32), torch.empty(n, 3, dtype=f32)
        g_sh = None if shc is None else torch.empty_like(shc)
        zeros = torch.zeros(n, 3, dtype=f32)
        vc = (_f32(v_colors) if v_colors is not None and v_colors.numel() else zeros) if has_sh else None
        lib.sf_project_backward(n, _ptr(mu), _ptr(q), _ptr(sc), _ptr(shc), 0 if shc is None else shc.shape[1],
                                degree, _ptr(vm), _ptr(intr), width, height, EPS2D, _ptr(visible),
                                _ptr(_f32(v_means2d) if v_means2d is not None else torch.zeros(n, 2)),
                                _ptr(_f32(v_conics) if v_conics is not None else zeros), _ptr(vc), _ptr(g_m),
                                _ptr(g_q), _ptr(g_s), _ptr(g_sh), torch.get_num_threads())
        return (g_m.to(dt_m), g_q.to(dt_q), g_s.to(dt_s), None, None if g_sh is None else g_sh.to(dt_sh),
                None, None, None, None, None, None, None)


class _CpuComposite(torch.autograd.Function):
    """Binning and compositing in the compiled kernels (:mod:`splatflow.kernels`), forward and backward.

    Inputs per splat (L of them): ``means2d`` (L, 2), ``conics`` (L, 3), ``opacities`` (L,), ``colors`` (L, 3),
    ``radii`` (L, 2) (no gradient); ``order`` (M,) the ids of the splats to draw, front to back;
    ``background`` (3,) or None (no gradient). Outputs rgb (H, W, 3) and alpha (H, W, 1), as :func:`_composite`.
    """

    @staticmethod
    def forward(ctx: Any, means2d: Tensor, conics: Tensor, opacities: Tensor, colors: Tensor, radii: Tensor,
                order: Tensor, width: int, height: int, background: Tensor | None, tile: int
                ) -> tuple[Tensor, Tensor]:
        from splatflow import kernels

        lib = kernels.load()
        f32 = torch.float32
        m2, con, op, col, rad = (_f32(t) for t in (means2d, conics, opacities, colors, radii))
        order = order.to(torch.int64).contiguous()
        tiles_x, tiles_y = -(-width // tile), -(-height // tile)
        n_tiles = tiles_x * tiles_y
        counts = torch.empty(n_tiles, dtype=torch.int64)
        total = lib.sf_bin_count(len(order), _ptr(order), _ptr(m2), _ptr(rad), tile, tiles_x, tiles_y, _ptr(counts))
        offsets = torch.zeros(n_tiles + 1, dtype=torch.int64)
        torch.cumsum(counts, 0, out=offsets[1:])
        isect = torch.empty(max(1, total), dtype=torch.int32)
        lib.sf_bin_fill(len(order), _ptr(order), _ptr(m2), _ptr(rad), tile, tiles_x, tiles_y, _ptr(offsets),
                        _ptr(isect))
        bg = None if background is None else _f32(background)
        rgb = torch.empty(height, width, 3, dtype=f32)
        trans = torch.empty(height, width, dtype=f32)
        used = torch.empty(height, width, dtype=torch.int32)
        lib.sf_forward(_ptr(m2), _ptr(rad), _ptr(con), _ptr(op), _ptr(col), _ptr(isect), _ptr(offsets), width,
                       height, tile, tiles_x, tiles_y, _ptr(bg), _ptr(rgb), _ptr(trans), _ptr(used),
                       torch.get_num_threads())
        ctx.save_for_backward(m2, rad, con, op, col, isect, offsets, trans, used, *(() if bg is None else (bg,)))
        ctx.meta = (width, height, tile, tiles_x, tiles_y, means2d.dtype, conics.dtype, opacities.dtype,
                    colors.dtype)
        return rgb.to(colors.dtype), (1.0 - trans)[..., None].to(colors.dtype)

    @staticmethod
    def backward(ctx: Any, grad_rgb: Tensor, grad_alpha: Tensor) -> tuple[Tensor | None, ...]:
        from splatflow import kernels

        lib = kernels.load()
        m2, rad, con, op, col, isect, offsets, trans, used, *rest = ctx.saved_tensors
        bg = rest[0] if rest else None
        width, height, tile, tiles_x, tiles_y, *dtypes = ctx.meta
        m = len(m2)
        f32 = torch.float32
        g_rgb = torch.zeros(height, width, 3, dtype=f32) if grad_rgb is None else _f32(grad_rgb)
        g_alpha = None if grad_alpha is None else _f32(grad_alpha.reshape(height, width))
        g_m2, g_con = torch.empty(m, 2, dtype=f32), torch.empty(m, 3, dtype=f32)
        g_op, g_col = torch.empty(m, dtype=f32), torch.empty(m, 3, dtype=f32)
        lib.sf_backward(m, _ptr(m2), _ptr(rad), _ptr(con), _ptr(op), _ptr(col), _ptr(isect), _ptr(offsets), width,
                        height, tile, tiles_x, tiles_y, _ptr(bg), _ptr(trans), _ptr(used), _ptr(g_rgb),
                        _ptr(g_alpha), _ptr(g_m2), _ptr(g_con), _ptr(g_op), _ptr(g_col), torch.get_num_threads())
        return (g_m2.to(dtypes[0]), g_con.to(dtypes[1]), g_op.to(dtypes[2]), g_col.to(dtypes[3]), None, None, None,
                None, None, None)


def _depth_order(depths: Tensor, visible: Tensor) -> Tensor:
    """(M,) int64 ids of the visible splats front to back, ties in id order (``depths`` (N,), ``visible`` (N,))."""
    from splatflow import kernels

    d = _f32(depths)
    vis = visible.to(torch.uint8).contiguous()
    order = torch.empty(len(d), dtype=torch.int64)
    m = kernels.load().sf_depth_order(len(d), _ptr(d), _ptr(vis), _ptr(order))
    return order[:m]


def _rasterize_cpu(means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, colors: Tensor,
                   viewmat: Tensor, K: Tensor, width: int, height: int, sh_degree: int | None,
                   background: Tensor | None, near: float, far: float, info: dict[str, Any] | None
                   ) -> tuple[Tensor, Tensor]:
    if means.device.type != "cpu":
        raise InputError(f"the cpu backend renders CPU tensors, these are on {means.device}",
                         hint="use backend='gsplat' or 'torch' for CUDA tensors")
    if viewmat.requires_grad or K.requires_grad or (background is not None and background.requires_grad):
        # camera or background gradients: the kernels give none, the reference path does
        return _rasterize_torch(means, quats, scales, opacities, colors, viewmat, K, width, height, sh_degree,
                                background, near, far, info)
    sh = colors if sh_degree is not None else None
    means2d, conics, sh_rgb, depths, radii, visible = _CpuProject.apply(
        means, quats, scales, opacities, sh, viewmat, K, width, height, -1 if sh_degree is None else sh_degree,
        near, far)
    if info is not None:  # the (1, N, 2) tensor handed out is the one the compositing uses, so it gets grads
        batched = means2d[None]
        means2d = batched[0]
        info.update(means2d=batched, radii=radii.int()[None], depths=depths[None], width=width,
                    height=height, n_cameras=1, visible=visible)
    order = _depth_order(depths, visible)
    rgb_in = colors if sh_degree is None else sh_rgb
    return _CpuComposite.apply(means2d, conics, opacities, rgb_in, radii, order, width, height, background,
                               CPU_TILE)


# ---------------------------------------------------------------------------------------------- gsplat backend
def gsplat_available() -> bool:
    """True when gsplat imports and CUDA is available (the gsplat backend can run)."""
    if not torch.cuda.is_available():
        return False
    try:
        import gsplat  # noqa: F401
    except ImportError:
        return False
    return True


def _rasterize_gsplat(means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, colors: Tensor,
                      viewmat: Tensor, K: Tensor, width: int, height: int, sh_degree: int | None,
                      background: Tensor | None, near: float, far: float, info: dict[str, Any] | None
                      ) -> tuple[Tensor, Tensor]:
    try:
        from gsplat import rasterization
    except ImportError as exc:
        raise DependencyMissing("the gsplat render backend needs gsplat",
                                hint="pip install 'splatflow[train]' on a CUDA machine, or use backend='torch'"
                                ) from exc
    if means.device.type != "cuda":
        raise InputError(f"the gsplat backend renders CUDA tensors, these are on {means.device}",
                         hint="move the splats to a CUDA device or use backend='torch'")
    rgb, alpha, meta = rasterization(
        means, quats, scales, opacities, colors, viewmat[None], K[None], width, height,
        near_plane=near, far_plane=far, sh_degree=sh_degree, packed=False,
        backgrounds=None if background is None else background[None])
    if info is not None:
        info.update(meta)
    return rgb[0], alpha[0]


# ---------------------------------------------------------------------------------------------- public interface
def _check_inputs(means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, colors: Tensor,
                  viewmat: Tensor, K: Tensor, width: int, height: int, sh_degree: int | None) -> None:
    n = means.shape[0]
    shapes = {"means": (means, (n, 3)), "quats": (quats, (n, 4)), "scales": (scales, (n, 3)),
              "opacities": (opacities, (n,)), "viewmat": (viewmat, (4, 4)), "K": (K, (3, 3))}
    for name, (t, shape) in shapes.items():
        if tuple(t.shape) != shape:
            raise InputError(f"rasterize: {name} has shape {tuple(t.shape)}, expected {shape}")
    if sh_degree is None:
        if tuple(colors.shape) != (n, 3):
            raise InputError(f"rasterize: colors has shape {tuple(colors.shape)}, expected ({n}, 3) RGB "
                             "when sh_degree is None", hint="pass sh_degree for SH coefficients (N, K, 3)")
    else:
        if sh_degree not in (0, 1, 2, 3):
            raise InputError(f"rasterize: sh_degree {sh_degree} is not supported", hint="use 0, 1, 2 or 3")
        if colors.ndim != 3 or colors.shape[0] != n or colors.shape[2] != 3 or colors.shape[1] < (sh_degree + 1) ** 2:
            raise InputError(f"rasterize: colors has shape {tuple(colors.shape)}, expected ({n}, K>="
                             f"{(sh_degree + 1) ** 2}, 3) SH coefficients for sh_degree {sh_degree}")
    if width <= 0 or height <= 0:
        raise InputError(f"rasterize: image size {width}x{height} is empty", hint="give a positive width and height")


def rasterize(means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, colors: Tensor,
              viewmat: Tensor, K: Tensor, width: int, height: int, *, sh_degree: int | None,
              background: Tensor | None = None, backend: str = "auto", near: float = 0.01, far: float = 1e10,
              info: dict[str, Any] | None = None) -> tuple[Tensor, Tensor]:
    """Render N splats into one pinhole camera.

    ``means`` (N, 3), ``quats`` (N, 4) (w, x, y, z), ``scales`` (N, 3) linear standard deviations,
    ``opacities`` (N,) in [0, 1], ``colors`` (N, K, 3) SH coefficients with K >= (sh_degree+1)**2 (or (N, 3)
    RGB with ``sh_degree=None``), ``viewmat`` (4, 4) world-to-camera (OpenCV), ``K`` (3, 3), ``background``
    (3,) or None (black). Returns rgb (H, W, 3) (not clipped above 1) and alpha (H, W, 1).

    ``backend``: ``"cpu"`` (compiled kernels, CPU tensors), ``"torch"`` (the pure-torch reference),
    ``"gsplat"`` (CUDA) or ``"auto"`` (see :func:`resolve_backend`). With
    ``info`` (a dict) the projection is reported in gsplat's ``meta`` layout: ``means2d`` (1, N, 2), ``radii``
    (1, N, 2), ``depths`` (1, N), ``width``, ``height``, ``n_cameras`` -- so screen-space gradients can be read
    from ``info["means2d"]`` (call ``retain_grad()`` on it before ``backward``).
    """
    _check_inputs(means, quats, scales, opacities, colors, viewmat, K, width, height, sh_degree)
    backend = resolve_backend(backend, means.device)
    dtype = means.dtype
    viewmat = viewmat.to(device=means.device, dtype=dtype)
    K = K.to(device=means.device, dtype=dtype)
    if background is not None:
        background = torch.as_tensor(background, device=means.device, dtype=dtype).reshape(3)
    if backend == "torch":
        return _rasterize_torch(means, quats, scales, opacities, colors, viewmat, K, width, height, sh_degree,
                                background, near, far, info)
    if backend == "cpu":
        return _rasterize_cpu(means, quats, scales, opacities, colors, viewmat, K, width, height, sh_degree,
                              background, near, far, info)
    return _rasterize_gsplat(means, quats, scales, opacities, colors, viewmat, K, width, height, sh_degree,
                             background, near, far, info)


BACKENDS = ("auto", "cpu", "torch", "gsplat")


def resolve_backend(backend: str, device: torch.device | str) -> str:
    """The backend ``"auto"`` stands for on ``device``: gsplat for CUDA tensors when it imports, else the
    compiled ``"cpu"`` backend for CPU tensors when its kernels load, else ``"torch"``. Other names are checked
    and returned as they are."""
    if backend not in BACKENDS:
        raise InputError(f"unknown render backend {backend!r}", hint=f"use one of: {', '.join(BACKENDS)}")
    if backend != "auto":
        return backend
    dev = torch.device(device)
    if dev.type == "cuda":
        return "gsplat" if gsplat_available() else "torch"
    if dev.type == "cpu":
        from splatflow import kernels  # built or found on first call, never at import

        if kernels.available():
            return "cpu"
    return "torch"


def cloud_tensors(cloud: GaussianCloud, device: str | torch.device = "cpu") -> dict[str, Tensor]:
    """The cloud in :func:`rasterize`'s conventions on ``device``: ``means``, ``quats``, ``scales`` (linear),
    ``opacities`` (in [0, 1]), ``colors`` (N, (deg+1)**2, 3) and ``sh_degree`` (an int, not a tensor)."""
    t = cloud.to_torch(device)
    return {
        "means": t["means"], "quats": t["quats"], "scales": torch.exp(t["scales"]),
        "opacities": torch.sigmoid(t["opacities"]),
        "colors": torch.cat([t["sh0"][:, None, :], t["shN"]], 1), "sh_degree": cloud.sh_degree,  # type: ignore[dict-item]
    }


@torch.no_grad()
def render_cloud(cloud: GaussianCloud, camera: Camera, *, backend: str = "auto", device: str | None = None,
                 background: tuple[float, float, float] | None = None, sh_degree: int | None = None,
                 tensors: dict[str, Tensor] | None = None, with_alpha: bool = False) -> np.ndarray:
    """Render ``cloud`` from ``camera``: (H, W, 3) float32 RGB clipped to [0, 1] (with ``with_alpha``,
    (H, W, 4) with the accumulated alpha last).

    ``sh_degree`` renders with fewer SH bands than the cloud has; ``tensors`` reuses :func:`cloud_tensors`
    output when one cloud is rendered from many cameras.
    """
    dev = resolve_device(device)
    t = tensors if tensors is not None else cloud_tensors(cloud, dev)
    deg = cloud.sh_degree if sh_degree is None else sh_degree
    if deg > cloud.sh_degree:
        raise InputError(f"cannot render SH degree {deg}: the splats have degree {cloud.sh_degree}",
                         hint=f"use sh_degree <= {cloud.sh_degree}")
    bg = None if background is None else torch.tensor(background, dtype=torch.float32, device=dev)
    rgb, alpha = rasterize(
        t["means"], t["quats"], t["scales"], t["opacities"], t["colors"],
        torch.as_tensor(camera.viewmat, dtype=torch.float32, device=dev),
        torch.as_tensor(camera.K, dtype=torch.float32, device=dev), camera.width, camera.height,
        sh_degree=deg, background=bg, backend=backend)
    img = rgb.clamp(0.0, 1.0)
    if with_alpha:
        img = torch.cat([img, alpha.clamp(0.0, 1.0)], -1)
    return img.float().cpu().numpy()
