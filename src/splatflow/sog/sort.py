"""Splat order on the texture grid: Morton (Z-order) and PLAS (Parallel Linear Assignment Sorting).

Both return a permutation ``order`` (N,) int64: texel i holds splat ``order[i]``. The texture is W texels wide
and filled row by row, so PLAS sorts on a W-wide grid of the full rows (R = N // W) and the few splats of the
last partial row (fewer than W) follow in Morton order: no splat is dropped and any N works.
"""

from __future__ import annotations

import itertools

import torch

PERMS4 = torch.tensor(list(itertools.permutations(range(4))), dtype=torch.int64)  # (24, 4)


def _part1by2(v: torch.Tensor) -> torch.Tensor:
    """Spread the low 21 bits of ``v`` (int64) so that two zero bits follow each bit."""
    v = v & 0x1FFFFF
    v = (v | (v << 32)) & 0x1F00000000FFFF
    v = (v | (v << 16)) & 0x1F0000FF0000FF
    v = (v | (v << 8)) & 0x100F00F00F00F00F
    v = (v | (v << 4)) & 0x10C30C30C30C30C3
    v = (v | (v << 2)) & 0x1249249249249249
    return v


def morton_codes(points: torch.Tensor, bits: int = 21) -> torch.Tensor:
    """(N,) int64 Morton codes of (N, 3) points, quantized to ``bits`` per axis over their bounding box."""
    lo = points.min(0).values
    span = (points.max(0).values - lo).clamp_min(1e-12)
    q = ((points - lo) / span * ((1 << bits) - 1)).round().long()
    return _part1by2(q[:, 0]) | (_part1by2(q[:, 1]) << 1) | (_part1by2(q[:, 2]) << 2)


def morton_order(points: torch.Tensor) -> torch.Tensor:
    """(N,) permutation sorting (N, 3) points along the 3-D Z-order curve (stable)."""
    return torch.argsort(morton_codes(points), stable=True)


def _grid_morton(h: int, w: int, device: torch.device) -> torch.Tensor:
    """(h*w,) flat texel indices of an h x w grid in 2-D Z-order (a space-filling start layout for PLAS)."""
    y, x = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
    code = torch.zeros(h * w, dtype=torch.int64, device=device)
    for b in range(16):
        code |= ((x.reshape(-1) >> b) & 1) << (2 * b)
        code |= ((y.reshape(-1) >> b) & 1) << (2 * b + 1)
    return torch.argsort(code, stable=True)


def _box_blur(grid: torch.Tensor, r: int) -> torch.Tensor:
    """Box filter of half-width r over an (H, W, C) grid, wrapping in x and mirroring in y."""
    h, w, _ = grid.shape
    dev = grid.device
    rx, ry = min(r, w - 1), min(r, h - 1)
    if rx > 0:
        xi = torch.arange(-rx - 1, w + rx, device=dev) % w
        c = torch.cumsum(grid[:, xi], dim=1)
        grid = (c[:, 2 * rx + 1:] - c[:, : w]) / (2 * rx + 1)
    if ry > 0:
        yi = torch.arange(-ry - 1, h + ry, device=dev)
        period = 2 * (h - 1) if h > 1 else 1
        yi = yi % period
        yi = torch.where(yi >= h, period - yi, yi)
        c = torch.cumsum(grid[yi], dim=0)
        grid = (c[2 * ry + 1:] - c[: h]) / (2 * ry + 1)
    return grid


def blur(grid: torch.Tensor, radius: float) -> torch.Tensor:
    """Approximate Gaussian blur (three box passes) with a footprint of about ``radius`` texels."""
    r = max(1, int(round(radius / 2)))
    for _ in range(3):
        grid = _box_blur(grid, r)
    return grid


def plas(features: torch.Tensor, h: int, w: int, *, seed: int = 0, min_block: int = 16,
         shrink: float = 0.95, improve_threshold: float = 1e-4, max_passes: int = 2,
         start_radius: float = 32.0) -> torch.Tensor:
    """PLAS: order (h*w,) int64 placing the rows of ``features`` (h*w, C) on an h x w grid so that neighbours
    are similar. Vectorized swaps of random groups of 4 inside blocks, against a blurred target of the grid,
    for blur radii shrinking by ``shrink`` per step down to 1 (at most ``max_passes`` passes per radius).
    """
    n, ch = features.shape
    assert n == h * w, "PLAS needs exactly h*w items"
    dev = features.device
    gen = torch.Generator().manual_seed(seed)
    perms = PERMS4.to(dev)
    # start: the items in 3-D-like order laid along a 2-D Z-curve (features[:, :3] are positions)
    start = morton_order(features[:, :3])
    order = torch.empty(n, dtype=torch.int64, device=dev)
    order[_grid_morton(h, w, dev)] = start
    grid = features[order]                                           # (n, C) flat, texel-major
    # the 2-D Z-curve start is already coherent at large scales, so the blur radius starts at start_radius
    radius = min(start_radius, max(h, w) / 2.0)
    while radius >= 1.0:
        target = blur(grid.view(h, w, ch), radius).reshape(n, ch)
        block = max(min_block, 2 * int(radius) + 1)
        bh, bw = min(block, h), min(block, w)
        prev = None
        for _ in range(max_passes):
            groups = _groups(h, w, bh, bw, gen, dev)                  # (G, 4) texel indices
            if groups.numel() == 0:
                break
            xg = grid[groups]                                         # (G, 4, C)
            tg = target[groups]
            d = ((xg * xg).sum(2)[:, :, None] + (tg * tg).sum(2)[:, None, :]
                 - 2.0 * torch.bmm(xg, tg.transpose(1, 2)))          # (G, 4 items, 4 texels)
            # cost of permutation p: sum_i d[g, i, p[i]]
            cost = d[:, torch.arange(4, device=dev)[None, :], perms].sum(2)   # (G, 24)
            best = cost.argmin(1)
            dest = torch.gather(groups, 1, perms[best])               # item i of group -> texel dest[g, i]
            flat_dest = dest.reshape(-1)
            grid[flat_dest] = xg.reshape(-1, ch)
            order[flat_dest] = order[groups.reshape(-1)].clone()
            total = float(cost.gather(1, best[:, None]).sum())
            before = float(cost[:, 0].sum())
            gain = (before - total) / max(before, 1e-12)
            if prev is not None and gain < improve_threshold:
                break
            prev = total
        radius *= shrink
    return order


def _groups(h: int, w: int, bh: int, bw: int, gen: torch.Generator, dev: torch.device) -> torch.Tensor:
    """(G, 4) flat texel indices: random groups of 4 inside bh x bw blocks at a random offset (wrapping)."""
    oy = int(torch.randint(0, h, (1,), generator=gen))
    ox = int(torch.randint(0, w, (1,), generator=gen))
    nby, nbx = h // bh, w // bw
    ys = (torch.arange(nby * bh) + oy) % h
    xs = (torch.arange(nbx * bw) + ox) % w
    idx = (ys[:, None] * w + xs[None, :]).view(nby, bh, nbx, bw).permute(0, 2, 1, 3).reshape(nby * nbx, bh * bw)
    perm = torch.randperm(bh * bw, generator=gen)
    m = (bh * bw) // 4 * 4
    return idx[:, perm[:m]].reshape(-1, 4).to(dev)


def sort_features(means: torch.Tensor, scales: torch.Tensor, sh0: torch.Tensor,
                  opacities: torch.Tensor) -> torch.Tensor:
    """(N, 10) PLAS features: positions, log-scales, colours, opacity; each column scaled to [0, 1] over its
    1st..99th percentile (clipped), positions first."""
    # opacity +-inf (alpha 1 or 0) and log-scales of -inf (flat) sort with the most / least extreme finite values
    f = torch.cat([means, scales, sh0, opacities[:, None]], dim=1).float()
    f = torch.nan_to_num(f, posinf=1e30, neginf=-1e30)
    sample = f if f.shape[0] <= 200_000 else f[torch.linspace(0, f.shape[0] - 1, 200_000, device=f.device).long()]
    lo = torch.quantile(sample, 0.01, dim=0)
    hi = torch.quantile(sample, 0.99, dim=0)
    f = ((f - lo) / (hi - lo).clamp_min(1e-12)).clamp_(0, 1)
    weights = torch.tensor([1.0] * 3 + [0.5] * 3 + [1.0] * 3 + [0.5], device=f.device)
    return f * weights


def grid_order(features: torch.Tensor, width: int, method: str, *, seed: int = 0) -> torch.Tensor:
    """Texel order (N,) for ``features`` (N, C) (first 3 columns: positions) on a ``width``-wide texture."""
    n = features.shape[0]
    if method == "morton" or n < 4 * width or width < 8:
        return morton_order(features[:, :3])
    if method != "plas":
        raise ValueError(f"unknown sort {method!r}")
    rows = n // width
    m = rows * width
    base = morton_order(features[:, :3])
    head, tail = base[:m], base[m:]                     # the last < width splats in Z-order fill the last row
    sub = plas(features[head], rows, width, seed=seed)
    return torch.cat([head[sub], tail])


__all__ = ["blur", "grid_order", "morton_codes", "morton_order", "plas", "sort_features"]
