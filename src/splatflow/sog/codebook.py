"""1-D codebooks: the 256-entry scalar quantizers of SOG v2 (scales, sh0 colours, SH palette coefficients).

A weighted 1-D k-means (Lloyd from weighted-quantile seeds) over a fine histogram of the pooled values, then a
few weighted Lloyd steps on the raw values. (An exact dynamic programme over the histogram, as PlayCanvas does,
measured 10x slower for the same error at 1024 bins.) Runs in torch on the values' device.

Weights say how much an error in each value costs on screen; the encoder passes them so that the 256 entries
go where the picture needs them (see :func:`scale_weights` and :func:`footprint_weights`). Without weights
every value counts the same, which is what PlayCanvas does. The weights are bounded (:func:`bounded_weights`):
no value weighs more than e^CAP_MARGIN times the 99.9th percentile weight, so a few absurd splats (a log-scale
of 20 among splats of -7..-2) cost their own precision, never the scene's.

Infinite values (a log-scale of -inf is a flat splat) get an entry of their own, ``INF_MARGIN`` below (or
above) the finite range, so the JSON codebook stays finite and they decode as e^-20 of the smallest size.
"""

from __future__ import annotations

import math

import torch

DEFAULT_BINS = 8192
_POW = 1.0 / 3.0
"""Seeds sit at quantiles of density^(1/3), the high-resolution optimum for squared error."""
CAP_QUANTILE = 0.999
CAP_MARGIN = 8.0
"""Log weights are capped at their ``CAP_QUANTILE`` quantile + ``CAP_MARGIN`` (a factor e^8 = 2981). The
largest splats of the scenes measured sit within 5 log units of that quantile (scale weights: fruit_drops 1.4,
guitar 1.7, playbot_lod2 2.2, the synthetic 1M scene 4.9), so the cap leaves them alone (a margin of 4 cut the
synthetic scene's render PSNR from 42.1 to 39.3 dB); a log-scale of 20 among -7..-2 is 44 units above it."""
INF_MARGIN = 20.0
"""How far outside the finite range the entry for -inf (+inf) values sits."""


def _weighted_kmeans_1d(x: torch.Tensor, w: torch.Tensor, k: int, iters: int) -> torch.Tensor:
    """Weighted 1-D k-means of M points ``x`` (sorted, float64) with weights ``w`` (M,), M > k.

    Initialised at the weighted quantiles; returns the sorted (k,) float64 centroids.
    """
    m = x.numel()
    cw = torch.cumsum(w.pow(_POW), 0)
    q = (torch.arange(k, dtype=torch.float64, device=x.device) + 0.5) / k * cw[-1]
    idx = torch.unique(torch.searchsorted(cw, q).clamp_(max=m - 1))
    if idx.numel() < k:  # several seeds in one heavy point: spread the rest over the other points
        free = torch.ones(m, dtype=torch.bool, device=x.device)
        free[idx] = False
        cand = torch.nonzero(free).flatten()
        need = k - idx.numel()
        pick = torch.linspace(0, cand.numel() - 1, need, device=x.device).round().long()
        idx = torch.sort(torch.cat([idx, cand[pick]]))[0]
    cb = x[idx]
    for _ in range(iters):
        new = _weighted_means(x, w, cb)
        if torch.equal(new, cb):
            break
        cb = new
    return cb


def _weighted_means(x: torch.Tensor, w: torch.Tensor, cb: torch.Tensor) -> torch.Tensor:
    """One weighted Lloyd step: the weighted mean of the values ``x`` (M,) nearest to each entry of the sorted
    ``cb`` (k,) (an entry with no weight stays); returns the new sorted (k,) float64 codebook."""
    k = cb.shape[0]
    lab = assign_1d(x, cb)
    sw = torch.zeros(k, dtype=torch.float64, device=x.device).index_add_(0, lab, w)
    sx = torch.zeros(k, dtype=torch.float64, device=x.device).index_add_(0, lab, w * x)
    return torch.sort(torch.where(sw > 0, sx / sw.clamp_min(1e-300), cb.double()))[0]


def assign_1d(values: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Index of the nearest entry of a sorted ``codebook`` (k,) for every value; same shape as ``values``, int64."""
    mid = (codebook[1:] + codebook[:-1]) * 0.5
    return torch.bucketize(values.contiguous(), mid.contiguous().to(values.dtype))


def bounded_weights(log_w: torch.Tensor) -> torch.Tensor:
    """exp(log_w - cap), capped at 1, where cap is the ``CAP_QUANTILE`` quantile of the finite ``log_w`` plus
    ``CAP_MARGIN`` (same shape as ``log_w``, float64; -inf -> 0).

    Bounded and robust: however large a few splats' log weights, each weighs at most e^CAP_MARGIN times the
    99.9th percentile splat, so a handful of outliers can never outweigh the rest of the scene.
    """
    lw = log_w.double()
    fin = lw[torch.isfinite(lw)]
    if fin.numel() == 0:
        return torch.ones_like(lw)
    rank = min(fin.numel(), max(1, math.ceil(CAP_QUANTILE * fin.numel())))
    cap = torch.kthvalue(fin.cpu(), rank).values.to(lw.device) + CAP_MARGIN
    return torch.exp((lw - cap).clamp(max=0.0)).nan_to_num(nan=0.0)


def scale_weights(log_scales: torch.Tensor, opacity_logits: torch.Tensor) -> torch.Tensor:
    """(N, 3) weights for the log-scale codebook: alpha * exp(2 * log-scale), bounded (:func:`bounded_weights`).

    A log-scale error d changes the splat's extent along that axis by about exp(s) * d, so these weights make
    the codebook minimise the alpha-weighted squared error of the linear extent, which is what the renderer
    draws. Large, opaque splats get fine steps; tiny or transparent ones, whose size cannot be seen, coarse
    ones. (Measured on fruit_drops and guitar: +9 to +22 dB render PSNR over equal weights for the scales.)
    """
    s = log_scales.double()
    return bounded_weights(torch.nn.functional.logsigmoid(opacity_logits.double())[:, None] + 2.0 * s)


def footprint_weights(log_scales: torch.Tensor, opacity_logits: torch.Tensor) -> torch.Tensor:
    """(N,) weights for colour codebooks: alpha times the splat's area (the product of its two largest
    extents), i.e. how many pixels, and how strongly, a colour error reaches; bounded (:func:`bounded_weights`)."""
    area = torch.topk(log_scales.double(), 2, dim=1).values.sum(1)
    return bounded_weights(torch.nn.functional.logsigmoid(opacity_logits.double()) + area)


def quantize_1d(values: torch.Tensor, k: int = 256, *, weights: torch.Tensor | None = None,
                bins: int = DEFAULT_BINS, lloyd_iters: int = 2,
                hist_iters: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    """Pool ``values`` (any shape, finite) into a sorted k-entry codebook.

    ``weights``: None (all equal) or non-negative, broadcastable to ``values``' shape; the codebook minimises
    the weighted squared error. Returns (codebook (k,) float32, labels: same shape as ``values``, uint8 for
    k <= 256 else int64). Codebook entries beyond the number of distinct values repeat the largest one (any
    decoder reads them).
    """
    flat = values.reshape(-1).float()
    dev = flat.device
    if flat.numel() == 0:
        cb = torch.zeros(k, dtype=torch.float32, device=dev)
        return cb, torch.zeros(values.shape, dtype=torch.uint8, device=dev)
    wflat = (torch.ones_like(flat, dtype=torch.float64) if weights is None
             else torch.broadcast_to(weights.to(dev, torch.float64), values.shape).reshape(-1))
    neg, pos = torch.isneginf(flat), torch.isposinf(flat)
    if bool(neg.any()) or bool(pos.any()):
        return _quantize_with_infinities(flat, wflat, values.shape, k, neg, pos, bins=bins,
                                         lloyd_iters=lloyd_iters, hist_iters=hist_iters)
    if weights is not None and not bool((wflat > 0).any()):
        wflat = torch.ones_like(wflat)  # every weight underflowed: fall back to equal weights
    uniq = torch.unique(flat) if flat.numel() <= 65536 else None
    if uniq is not None and uniq.numel() <= k:
        cb = torch.cat([uniq, uniq[-1:].expand(k - uniq.numel())])
    else:
        lo, hi = flat.min(), flat.max()
        b = ((flat - lo) / (hi - lo).clamp_min(1e-30) * bins).long().clamp_(0, bins - 1)
        cnt = torch.bincount(b, minlength=bins).double()
        occupied = cnt > 0
        f64 = flat.double()
        w = torch.zeros(bins, dtype=torch.float64, device=dev).index_add_(0, b, wflat)
        s = torch.zeros(bins, dtype=torch.float64, device=dev).index_add_(0, b, f64 * wflat)
        # a bin whose values all weigh 0 still holds values: give it a tiny weight at its plain mean (some weight
        # is positive: all-zero weights fell back to equal ones above)
        plain = torch.zeros(bins, dtype=torch.float64, device=dev).index_add_(0, b, f64)
        tiny = w[w > 0].min() * 1e-6
        centers = torch.where(w > 0, s / w.clamp_min(1e-300), plain / cnt.clamp_min(1))[occupied]
        w = torch.where(w > 0, w, tiny.expand_as(w))[occupied]
        if w.numel() <= k:
            cb = centers.float()
            cb = torch.cat([cb, cb[-1:].expand(k - cb.numel())])
        else:
            cb64 = _weighted_kmeans_1d(centers, w, k, hist_iters)
            for _ in range(lloyd_iters):
                cb64 = _weighted_means(f64, wflat, cb64)
            cb = cb64.float()
    labels = assign_1d(flat, cb).reshape(values.shape)
    return cb, labels.to(torch.uint8) if k <= 256 else labels


def _quantize_with_infinities(flat: torch.Tensor, wflat: torch.Tensor, shape: torch.Size, k: int,
                              neg: torch.Tensor, pos: torch.Tensor, **kw: int) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`quantize_1d` of values (M,) some of which are -inf / +inf: the finite ones get k - 1 (or k - 2)
    entries, each infinity present one entry ``INF_MARGIN`` outside the finite range."""
    fin = ~(neg | pos)
    n_inf = int(neg.any()) + int(pos.any())
    if bool(fin.any()):
        cb_f, _ = quantize_1d(flat[fin], k - n_inf, weights=wflat[fin], **kw)
        lo, hi = float(flat[fin].min()), float(flat[fin].max())
    else:
        cb_f, lo, hi = torch.zeros(0, dtype=torch.float32, device=flat.device), 0.0, 0.0
    parts = [cb_f]
    if bool(neg.any()):
        parts.insert(0, torch.tensor([lo - INF_MARGIN], dtype=torch.float32, device=flat.device))
    if bool(pos.any()):
        parts.append(torch.tensor([hi + INF_MARGIN], dtype=torch.float32, device=flat.device))
    cb = torch.cat(parts)
    cb = torch.cat([cb, cb[-1:].expand(k - cb.numel())])
    labels = assign_1d(flat, cb).reshape(shape)
    return cb, labels.to(torch.uint8) if k <= 256 else labels
