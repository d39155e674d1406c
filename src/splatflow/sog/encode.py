"""PLY splats -> SOG v2 / SOGS v1 file set, in torch: one code path for CPU and CUDA.

Steps: order the splats on the texture grid (PLAS or Morton), quantize every attribute (16-bit log positions,
smallest-three quaternions, 1-D codebooks for scales and colours, a k-means palette for the higher SH), lay the
results out as RGBA textures and encode them as lossless WebP in parallel threads.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from splatflow.devices import resolve_device
from splatflow.frames import nearest_frame
from splatflow.gaussians import SH_COEFFS, GaussianCloud
from splatflow.sog import meta as sogmeta
from splatflow.sog import webp
from splatflow.sog.bundle import meta_bytes
from splatflow.sog.codebook import bounded_weights, footprint_weights, quantize_1d, scale_weights
from splatflow.sog.kmeans import clustered_palette_cap, kmeans_palette, palette_size
from splatflow.sog.sort import grid_order, sort_features

log = logging.getLogger(__name__)

FORMATS = ("v2", "v1")
SORTS = ("plas", "morton")
_QUAT_OTHERS = torch.tensor([[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2]], dtype=torch.int64)


@dataclass(frozen=True)
class Precision:
    """How finely each attribute is stored (the defaults are SOG's full precision: the default output).

    Coarser settings give textures with fewer distinct values, which lossless WebP stores in fewer bytes: the
    rounding step (in code units, >= 1, may be fractional) of the 16-bit positions (``position_step``, on the
    axis with the widest range; see :func:`position_steps`), of the
    8-bit smallest-three quaternion components (``quat_step``) and of the 8-bit alpha (``alpha_step``; 0 and 255
    stay exact); the number of distinct entries the 256-entry codebooks use for ``scale_entries``,
    ``color_entries`` and ``sh_entries``; the SH ``palette`` size (None: PlayCanvas's size for the splat count).
    ``short_floats`` (on by default) writes the codebooks in meta.json as the shortest decimals of their float32
    values (lossless: the same decoded values, about half the meta.json). ``canonical_rotation`` (on by default)
    stores each splat in the frame nearest the identity among the 24 that describe the same Gaussian
    (:func:`splatflow.frames.nearest_frame`): its quaternion codes span a narrower range and the largest component
    is always w, which saves about a fifth of the rotation texture at the same rounding error (the same picture);
    off, the source's frames are kept. With ``keep_exact_rotations``, a rotation that the codes store exactly
    already (a scene decoded from a SOG) keeps its frame, since turning it would round it again (the smaller-file
    search may give that up)."""

    position_step: float = 1.0
    quat_step: float = 1.0
    alpha_step: float = 1.0
    scale_entries: int = 256
    color_entries: int = 256
    sh_entries: int = 256
    palette: int | None = None
    short_floats: bool = True
    canonical_rotation: bool = True
    keep_exact_rotations: bool = True

    def is_full(self) -> bool:
        """True for SOG's full precision (the default output)."""
        return self == Precision()


FULL = Precision()


def _round_step(q: torch.Tensor, step: float, top: int) -> torch.Tensor:
    """Integer codes ``q`` (int64 in 0..top) moved to the nearest multiple of ``step`` (rounded to an integer,
    clamped to top; codes 0 and top kept)."""
    if step <= 1.0:
        return q
    out = (torch.round(q.double() / step) * step).round().clamp_(0, top).long()
    return torch.where(q >= top, q, out)


MAX_POSITION_STEP = 256.0
"""The coarsest rounding of a 16-bit position code: the high byte stays exact."""


def position_steps(spans: torch.Tensor, pr: Precision) -> list[float]:
    """The rounding step of each axis's 16-bit position codes, given the (3,) log-position ranges ``spans``.

    ``pr.position_step`` applies to the axis with the widest range. The codes of each axis span its own range,
    so a narrower axis has finer steps in scene units: there the step is scaled by the ratio of the ranges (to
    the nearest power of two, at most MAX_POSITION_STEP), which evens out the precision in scene units. Full
    precision (a step of 1) stays 1 on every axis."""
    if pr.position_step <= 1.0:
        return [1.0, 1.0, 1.0]
    span = spans.double().clamp_min(1e-12)
    ratio = torch.exp2(torch.round(torch.log2(span.max() / span)))
    return [min(MAX_POSITION_STEP, pr.position_step * float(r)) for r in ratio]


def _floats(cb: torch.Tensor, pr: Precision) -> list[float]:
    """A codebook for meta.json: its float32 values, as the shortest decimals with ``pr.short_floats``."""
    values = cb.tolist()
    return sogmeta.short_floats(values) if pr.short_floats else values


def _padded(cb: torch.Tensor, k: int = 256) -> torch.Tensor:
    """A codebook of fewer than k entries padded to k with its largest one (sorted order kept)."""
    return cb if cb.numel() >= k else torch.cat([cb, cb[-1:].expand(k - cb.numel())])


@dataclass
class Encoded:
    """The result of :func:`encode_cloud`: the file set and how it was made."""

    files: dict[str, bytes]
    """name -> bytes, meta.json first."""
    order: np.ndarray
    """(N,) int64: texel i holds source splat order[i]."""
    meta: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)
    device: str = "cpu"


def _rgba(values: torch.Tensor, w: int, h: int, alpha: torch.Tensor | None = None) -> np.ndarray:
    """(h, w, 4) uint8 image with the (N, C<=4) uint8 ``values`` in texel order; valid texels get ``alpha``
    (or 255) where C < 4; padding texels stay zero."""
    n, c = values.shape
    img = torch.zeros((w * h, 4), dtype=torch.uint8, device=values.device)
    img[:n, :c] = values
    if c < 4:
        img[:n, 3] = 255 if alpha is None else alpha
    return img.cpu().numpy().reshape(h, w, 4)


V1_LOGIT = 7.0
"""SOGS v1 stores opacity logits linearly: +-inf becomes at least this far out (alpha 0.9991, 8-bit level 255)."""


def _clamp_infinite(x: torch.Tensor, floor: float | None = None, ceil: float | None = None) -> torch.Tensor:
    """``x`` with -inf / +inf replaced by the smallest / largest finite value (extended to ``floor`` / ``ceil``
    when given); all non-finite: zeros."""
    fin = torch.isfinite(x)
    if bool(fin.all()):
        return x
    if not bool(fin.any()):
        return torch.zeros_like(x)
    lo, hi = x[fin].min(), x[fin].max()
    if floor is not None:
        lo = lo.clamp(max=floor)
    if ceil is not None:
        hi = hi.clamp(min=ceil)
    return torch.where(torch.isneginf(x), lo, torch.where(torch.isposinf(x), hi, x))


def _u8(x: torch.Tensor) -> torch.Tensor:
    return x.round().clamp_(0, 255).to(torch.uint8)


def _lin_quant(x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, levels: int) -> torch.Tensor:
    """round(levels * (x - lo) / (hi - lo)) as int64 (0 where hi == lo); x in float64 for precision."""
    span = (hi - lo)
    q = torch.where(span > 0, (x - lo) / torch.where(span > 0, span, 1.0) * levels, torch.zeros_like(x))
    return q.round().clamp_(0, levels).long()


def log_transform(v: torch.Tensor) -> torch.Tensor:
    """sign(v) * ln(1 + |v|), the position transform of SOG."""
    return torch.sign(v) * torch.log1p(v.abs())


def _smallest_three(q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(N, 4) quaternions (w, x, y, z; zero: the identity) -> the component left out (N,) int64, the unrounded
    8-bit codes (0..255) of the other three (N, 3), the left-out one made positive, and whether the codes store
    the rotation exactly (N,) bool.

    The left-out component is the largest, unless leaving out another one gives codes within 1e-3 of integers in
    0..255: a rotation decoded from a SOG (the decoder computes the left-out component from the other three, which
    can make it smaller than one of them) is then stored with the same codes again. A float rotation from
    training lands on such codes with odds of about 1e-8."""
    norm = q.norm(dim=1, keepdim=True)
    ident = torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=q.dtype, device=q.device).expand_as(q)
    qn = torch.where(norm > 0, q / norm.clamp_min(1e-30), ident)
    # a component's code (+-v sqrt(1/2) + 1/2) 255 is an integer when v 255 sqrt(1/2) is one plus a half,
    # whatever the sign: on the grid per component, then exact for m when the other three are
    half = qn.abs() * (255 * math.sqrt(0.5))
    grid = ((half - half.floor() - 0.5).abs() < 1e-3) & (half < 127.5 + 1e-3)
    count = grid.sum(1, keepdim=True)
    exact_m = (count - grid.long()) == 3
    exact = exact_m.any(1)
    m = torch.where(exact, exact_m.long().argmax(1), qn.abs().argmax(1))
    sign = torch.where(qn.gather(1, m[:, None]) < 0, -1.0, 1.0)
    others = (qn * sign).gather(1, _QUAT_OTHERS.to(q.device)[m])
    return m, (others * math.sqrt(2) * 0.5 + 0.5) * 255, exact


def pack_quats(q: torch.Tensor, step: float = 1.0) -> torch.Tensor:
    """(N, 4) quaternions (w, x, y, z) -> (N, 4) uint8 smallest-three packing (A = 252 + left-out index), each
    component's 8-bit code rounded to a multiple of ``step`` (see :func:`_smallest_three`)."""
    m, codes, _ = _smallest_three(q)
    out = torch.empty((q.shape[0], 4), dtype=torch.uint8, device=q.device)
    out[:, :3] = _round_step(codes.round().clamp_(0, 255).long(), step, 255).to(torch.uint8)
    out[:, 3] = (252 + m).to(torch.uint8)
    return out


def stored_exactly(q: torch.Tensor) -> torch.Tensor:
    """(N,) bool: the (N, 4) rotations that SOG's 8-bit codes store exactly, as in a scene decoded from a SOG."""
    return _smallest_three(q)[2]


def rotation_frames(quats: torch.Tensor, log_scales: torch.Tensor,
                    pr: Precision) -> tuple[torch.Tensor, torch.Tensor]:
    """The frames the encoder stores: (N, 4) quaternions and (N, 3) log-scales from the source's (N, 4) and
    (N, 3), per ``pr.canonical_rotation`` and ``pr.keep_exact_rotations``."""
    if not pr.canonical_rotation:
        return quats, log_scales
    q, s = nearest_frame(quats, log_scales)
    if not pr.keep_exact_rotations:
        return q, s
    keep = stored_exactly(quats)[:, None]
    return torch.where(keep, quats, q), torch.where(keep, log_scales, s)


PaletteCache = dict[Any, tuple[torch.Tensor, torch.Tensor]]
"""SH palettes by content: (digest of the SH rows and weights, shape, palette size, seed, device) ->
(centroids, labels)."""


def _palette(shn: torch.Tensor, weights: torch.Tensor, seed: int,
             size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """SH palette of (N, K, 3) coefficients (in texel order), k-means weighted by ``weights`` (N,): centroids
    (k, K, 3) and labels (N,) int64.

    Centroids are renumbered in order of first use along the texels, so neighbouring splats get nearby labels
    and neighbouring palette entries hold similar SH: both textures compress better.
    """
    n, k_coeffs, _ = shn.shape
    k_pal = palette_size(n) if size is None else max(1, min(size, palette_size(n)))
    cen, lab = kmeans_palette(shn.reshape(n, k_coeffs * 3), k_pal, weights=weights, seed=seed,
                              cap=clustered_palette_cap(n))
    k = cen.shape[0]
    first = torch.full((k,), n, dtype=torch.int64, device=lab.device)
    first.scatter_reduce_(0, lab, torch.arange(n, device=lab.device), reduce="amin")
    perm = torch.argsort(first, stable=True)              # new index -> old index
    rank = torch.empty_like(perm)
    rank[perm] = torch.arange(k, device=perm.device)
    return cen[perm].reshape(-1, k_coeffs, 3), rank[lab]


def _centroid_image(idx: torch.Tensor) -> np.ndarray:
    """(k, K, 3) uint8 codebook indices -> the (ceil(k/64), 64*K, 4) centroid texture (A = 255)."""
    k, kc, _ = idx.shape
    rows = math.ceil(k / 64)
    img = torch.zeros((rows * 64, kc, 4), dtype=torch.uint8, device=idx.device)
    img[:k, :, :3] = idx
    img[:k, :, 3] = 255
    return img.reshape(rows, 64, kc, 4).reshape(rows, 64 * kc, 4).cpu().numpy()


def _sh_textures(shn: torch.Tensor, wts: torch.Tensor, format: str, bands: int, pr: Precision, seed: int,
                 size: tuple[int, int], lap: Callable[[str], None],
                 cache: PaletteCache | None = None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The higher-SH textures (labels, centroids) and meta.json's ``shN`` entry for (N, K, 3) ``shn`` in texel
    order, the palette's k-means (or merge) weighted by the splats' on-screen ``wts`` (N,); ``cache`` keeps
    palettes by content, so a caller encoding the same splats at other precisions clusters them once."""
    w, h = size
    images: dict[str, np.ndarray] = {}
    if cache is None:
        cen, lab = _palette(shn, wts, seed, pr.palette)
    else:
        digest = hashlib.blake2b(digest_size=16)
        for t in (shn, wts):
            digest.update(t.contiguous().cpu().numpy().tobytes())
        key = (digest.hexdigest(), tuple(shn.shape), pr.palette, seed, str(shn.device))
        if key not in cache:
            cache[key] = _palette(shn, wts, seed, pr.palette)
        cen, lab = cache[key]
    lap("kmeans")
    lab_px = torch.stack([(lab & 0xFF), (lab >> 8)], 1).to(torch.uint8)
    images["shN_labels.webp"] = _rgba(lab_px, w, h)
    if format == "v2":
        # each centroid weighs what its members weigh on screen
        cen_w = torch.zeros(cen.shape[0], dtype=torch.float64, device=cen.device).index_add_(0, lab, wts)
        sh_cb, cen_idx = quantize_1d(cen, pr.sh_entries, weights=cen_w[:, None, None])
        sh_cb = _padded(sh_cb)
        sh_info: dict[str, Any] = {"count": int(cen.shape[0]), "bands": bands, "codebook": _floats(sh_cb, pr)}
    else:
        lo, hi = cen.min().double(), cen.max().double()
        cen_idx = _lin_quant(cen.double(), lo, hi, 255).to(torch.uint8)
        sh_info = {"coeffs": shn.shape[1], "min": float(lo), "max": float(hi)}
    images["shN_centroids.webp"] = _centroid_image(cen_idx)
    lap("codebooks")
    return images, sh_info


def _scale_colour_textures(scales: torch.Tensor, sh0: torch.Tensor, opac: torch.Tensor, wts: torch.Tensor,
                           format: str, pr: Precision, size: tuple[int, int],
                           bounds: tuple[torch.Tensor, torch.Tensor], sh_info: dict[str, Any] | None
                           ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The scales and sh0 (colour + alpha) textures and the whole meta.json for the (N, 3) log-scales, (N, 3)
    DC colours and (N,) opacity logits in texel order; ``bounds`` are the log-position ranges (3,), (3,)."""
    w, h = size
    n = scales.shape[0]
    mins, maxs = bounds
    images: dict[str, np.ndarray] = {}
    alpha = _round_step(_u8(torch.sigmoid(opac.double()) * 255).long(), pr.alpha_step, 255).to(torch.uint8)
    if format == "v2":
        s_cb, s_idx = quantize_1d(scales, pr.scale_entries, weights=scale_weights(scales, opac))
        c_cb, c_idx = quantize_1d(sh0, pr.color_entries, weights=wts[:, None])
        s_cb, c_cb = _padded(s_cb), _padded(c_cb)
        images["scales.webp"] = _rgba(s_idx, w, h)
        images["sh0.webp"] = _rgba(torch.cat([c_idx, alpha[:, None]], 1), w, h)
        meta = sogmeta.v2_meta(n, mins.tolist(), maxs.tolist(), _floats(s_cb, pr), _floats(c_cb, pr), sh_info)
    else:
        # v1 stores linear 8-bit ranges, no codebook: a flat axis (-inf) takes the smallest finite log-scale, a
        # fully opaque (transparent) splat an opacity logit of at least V1_LOGIT (at most -V1_LOGIT)
        s64 = _clamp_infinite(scales.double())
        opac = _clamp_infinite(opac.double(), floor=-V1_LOGIT, ceil=V1_LOGIT)
        smin, smax = s64.min(0).values, s64.max(0).values
        images["scales.webp"] = _rgba(_lin_quant(s64, smin, smax, 255).to(torch.uint8), w, h)
        c4 = torch.cat([sh0.double(), opac.double()[:, None]], 1)
        cmin, cmax = c4.min(0).values, c4.max(0).values
        images["sh0.webp"] = _rgba(_lin_quant(c4, cmin, cmax, 255).to(torch.uint8), w, h)
        meta = sogmeta.v1_meta(n, mins.tolist(), maxs.tolist(), smin.tolist(), smax.tolist(), cmin.tolist(),
                               cmax.tolist(), sh_info)
    return images, meta


def encode_cloud(cloud: GaussianCloud, *, format: str = "v2", sort: str = "morton", sh_bands: int | None = None,
                 device: str = "auto", webp_method: int = webp.DEFAULT_METHOD,
                 webp_quality: int = webp.DEFAULT_QUALITY, seed: int = 0, threads: int | None = None,
                 precision: Precision = FULL, palette_cache: PaletteCache | None = None,
                 screen_weights: np.ndarray | None = None) -> Encoded:
    """Encode a cloud as a SOG file set; see the module docstring.

    The cloud must hold valid splats only (:meth:`GaussianCloud.invalid_mask`): opacity +-inf is alpha 255 / 0,
    a log-scale of -inf (flat) gets a codebook entry of its own (v2), a zero quaternion is the identity.
    ``precision`` (v2) stores the attributes more coarsely for smaller files (default: full precision).
    ``palette_cache`` (any dict, kept by the caller) reuses the SH palette of splats encoded before.
    ``screen_weights`` (N,), in the cloud's order: what each splat weighs on screen, measured (e.g.
    :func:`splatflow.sog.reduce.contribution`), in place of the alpha x area estimate for the colour codebook, the
    SH palette (its k-means, or the merge of a palette that is one already) and the SH codebook.
    """
    pr = precision
    if format not in FORMATS:
        raise ValueError(f"unknown format {format!r} (v2 or v1)")
    if sort not in SORTS:
        raise ValueError(f"unknown sort {sort!r} (plas or morton)")
    dev = resolve_device(device)
    if threads:
        torch.set_num_threads(threads)
    n = len(cloud)
    w, h = sogmeta.texture_size(n, format)
    bands = cloud.sh_degree if sh_bands is None else min(sh_bands, cloud.sh_degree)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal t0
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        now = time.perf_counter()
        timings[name] = round(timings.get(name, 0.0) + now - t0, 4)
        t0 = now

    t = cloud.to_torch(dev)
    lap("load")
    feats = t["means"] if sort == "morton" else sort_features(t["means"], t["scales"], t["sh0"], t["opacities"])
    order = grid_order(feats, w, sort, seed=seed)
    lap("sort")
    means = t["means"][order].double()
    scales, sh0, opac = t["scales"][order], t["sh0"][order], t["opacities"][order]
    quats = t["quats"][order]
    quats, scales = rotation_frames(quats, scales, pr)
    kc = SH_COEFFS[bands]
    shn = t["shN"][order][:, :kc] if kc else None

    images: dict[str, np.ndarray] = {}
    lm = log_transform(means)
    mins, maxs = lm.min(0).values, lm.max(0).values
    qm = _lin_quant(lm, mins, maxs, 65535)
    qm = torch.stack([_round_step(qm[:, a], st, 65535) for a, st in enumerate(position_steps(maxs - mins, pr))], 1)
    images["means_l.webp"] = _rgba((qm & 0xFF).to(torch.uint8), w, h)
    images["means_u.webp"] = _rgba((qm >> 8).to(torch.uint8), w, h)
    images["quats.webp"] = _rgba(pack_quats(quats, pr.quat_step), w, h)
    lap("pack")

    # (N,): how much of the picture each splat's colour reaches
    if screen_weights is None:
        wts = footprint_weights(scales, opac)
    else:
        wts = bounded_weights(torch.log(torch.as_tensor(screen_weights, dtype=torch.float64, device=dev)[order]))
    sh_info: dict[str, Any] | None = None
    if kc:
        assert shn is not None
        sh_images, sh_info = _sh_textures(shn, wts, format, bands, pr, seed, (w, h), lap, palette_cache)
        images.update(sh_images)
    attr_images, meta = _scale_colour_textures(scales, sh0, opac, wts, format, pr, (w, h), (mins, maxs), sh_info)
    images.update(attr_images)
    lap("codebooks")
    names = [f for key in ("means", "scales", "quats", "sh0", "shN") if key in meta for f in meta[key]["files"]]
    blobs = webp.encode_many({nm: images[nm] for nm in names}, method=webp_method, quality=webp_quality,
                             threads=threads or os.cpu_count())
    lap("webp")
    files = {"meta.json": meta_bytes(meta), **blobs}
    return Encoded(files=files, order=order.cpu().numpy(), meta=meta, timings=timings, device=str(dev))

