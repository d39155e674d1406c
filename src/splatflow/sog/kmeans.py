"""The SH palette: k-means of the (N, D) higher-order SH rows into k <= 65,536 centroids, in torch.

A flat k-means with 65,536 centroids costs N x k x D multiply-adds per Lloyd step (5.9 TFLOP for 1M SH3 splats),
far too much for a CPU. We use a two-level (hierarchical) k-means instead: k1 ~ sqrt(k) coarse clusters, then
each coarse cluster is split into a share of the k centroids proportional to its number of points. Every step
is a small dense k-means (matrix products), so the same code runs on CPU and CUDA; randomness comes from one
seeded CPU generator so both devices draw the same samples.
"""

from __future__ import annotations

import math

import torch


def palette_size(n: int) -> int:
    """PlayCanvas's palette size for n splats: min(64, 2^floor(log2(n/1024))) * 1024, and never more than n."""
    if n <= 0:
        return 0
    p = min(64.0, 2.0 ** math.floor(math.log2(n / 1024))) * 1024 if n >= 1024 else 1024.0
    return int(min(n, p))


def is_palette(distinct: int, n: int) -> bool:
    """True when ``n`` rows with ``distinct`` distinct values are a palette already (a scene decoded from a SOG):
    they repeat, and there are no more of them than PlayCanvas's palette for ``n`` splats holds."""
    return distinct < n and distinct <= palette_size(n)


def _sq_dists(x: torch.Tensor, c: torch.Tensor, c_sq: torch.Tensor) -> torch.Tensor:
    """(n, k) squared distances up to the per-row constant |x|^2 (enough for argmin)."""
    return c_sq[None, :] - 2.0 * (x @ c.T)


def assign(x: torch.Tensor, c: torch.Tensor, *, chunk_bytes: int = 64 << 20) -> torch.Tensor:
    """Nearest centroid (n,) int64 of every row of ``x`` (n, D) among ``c`` (k, D), in memory-bounded chunks."""
    c_sq = (c * c).sum(1)
    step = max(1, chunk_bytes // (4 * max(1, c.shape[0])))
    out = torch.empty(x.shape[0], dtype=torch.int64, device=x.device)
    for s in range(0, x.shape[0], step):
        out[s:s + step] = _sq_dists(x[s:s + step], c, c_sq).argmin(1)
    return out


def _sums(x: torch.Tensor, lab: torch.Tensor, k: int, w: torch.Tensor, *,
          chunk: int = 8192) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-centroid weights (k,) and weighted coordinate sums (k, D) of the rows of ``x`` (n, D) with weights
    ``w`` (n,), as one-hot matrix products (scatter-adds are much slower on CPU)."""
    cnt = torch.zeros(k, dtype=x.dtype, device=x.device)
    tot = torch.zeros((k, x.shape[1]), dtype=x.dtype, device=x.device)
    for s in range(0, x.shape[0], chunk):
        oh = torch.nn.functional.one_hot(lab[s:s + chunk], k).to(x.dtype) * w[s:s + chunk, None]
        cnt += oh.sum(0)
        tot += oh.T @ x[s:s + chunk]
    return cnt, tot


def _lloyd(x: torch.Tensor, w: torch.Tensor, k: int, iters: int, gen: torch.Generator) -> torch.Tensor:
    """Weighted Lloyd k-means of ``x`` (n, D) with weights ``w`` (n,), n > k, seeded with k distinct random rows;
    returns (k, D) centroids."""
    n = x.shape[0]
    c = x[torch.randperm(n, generator=gen)[:k].to(x.device)].clone()
    for _ in range(iters):
        lab = assign(x, c)
        cnt, tot = _sums(x, lab, k, w)
        c = torch.where((cnt > 0)[:, None], tot / cnt.clamp_min(1e-30)[:, None], c)
    return c


def _allocate(sizes: torch.Tensor, k: int) -> torch.Tensor:
    """Split k centroids over clusters of ``sizes`` (k1,) in proportion, each in [1, size]; (k1,) int64 on CPU."""
    sizes = sizes.cpu().long()
    share = sizes.double() * (k / sizes.sum().double())
    alloc = torch.minimum(share.floor().long().clamp_min(1), sizes)
    alloc = torch.where(sizes > 0, alloc, torch.zeros_like(alloc))
    # hand out the remaining centroids to the largest remainders that still have room
    while int(alloc.sum()) != k:
        diff = k - int(alloc.sum())
        if diff > 0:
            room = (sizes - alloc).clamp_min(0)
            pri = torch.where(room > 0, share - alloc.double(), torch.full_like(share, -math.inf))
            take = torch.topk(pri, min(diff, int((room > 0).sum()))).indices
            if take.numel() == 0:
                break
            alloc[take] += 1
        else:
            pri = torch.where(alloc > 1, alloc.double() - share, torch.full_like(share, -math.inf))
            take = torch.topk(pri, min(-diff, int((alloc > 1).sum()))).indices
            alloc[take] -= 1
    return alloc


def clustered_palette_cap(n: int) -> int:
    """The most centroids worth clustering ``n`` distinct rows into: a power of two no larger than n / 4, and
    never below 4096 (small scenes keep PlayCanvas's size).

    PlayCanvas's rule gives 65,536 entries from 65,536 splats on, so a trained scene of 80,000 splats got a palette
    of 82 % of its rows: the k-means took 442 s and 8.5 GB there (a busy 2-core machine), for a render PSNR of
    54.10 dB against the PLY; 16,384 entries took 100 s, gave 54.06 dB and a 20 % smaller file (lund, the cpu
    preset's training output; 8,192 entries: 22 s, 51.6 dB)."""
    return max(4096, 2 ** int(math.floor(math.log2(max(n, 4) / 4))))


def kmeans_palette(x: torch.Tensor, k: int, *, weights: torch.Tensor | None = None, iters: int = 10,
                   seed: int = 0, sample_per_centroid: int = 32, batch: int = 16,
                   leaf: int = 256, cap: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Cluster the rows of ``x`` (N, D) float32 into at most ``k`` centroids, minimising the squared error
    weighted by ``weights`` (N,) (None: all rows count the same).

    Returns (centroids (k', D) float32, labels (N,) int64) with k' = min(k, N). Coarse and fine Lloyd steps run on
    a random subsample of at most ``sample_per_centroid`` points per centroid; every point is then assigned to
    the nearest centroid of its coarse cluster. Rows with at most ``k`` distinct values (a scene decoded from a
    SOG) get an exact palette; rows that are a palette already (at most PlayCanvas's palette size of distinct
    rows, fewer than N) shrink to a smaller ``k`` by :func:`merge_palette`, weighted by ``weights``; otherwise
    ``cap`` (if given) limits the centroids clustered.
    """
    n, d = x.shape
    k = min(k, n)
    gen = torch.Generator().manual_seed(seed)
    if k == n:
        return x.clone(), torch.arange(n, device=x.device)
    # few distinct rows (e.g. a scene that was decoded from a SOG): the palette is exact
    probe = x.double() @ torch.randn(d, dtype=torch.float64, generator=gen).to(x.device)
    distinct = torch.unique(probe).numel()
    if distinct <= k or is_palette(distinct, n):
        uniq, inverse = torch.unique(x, dim=0, return_inverse=True)
        if uniq.shape[0] <= k:
            return uniq, inverse
        if is_palette(uniq.shape[0], n):
            # the rows are a palette already and a smaller one is asked for (compress --target-psnr): merge its
            # entries where it costs least rather than cluster the rows anew
            return merge_palette(uniq, inverse, torch.ones(n, device=x.device) if weights is None else weights, k)
    if cap is not None:
        k = min(k, cap)
    w = torch.ones(n, dtype=x.dtype, device=x.device) if weights is None else weights.to(x.device, x.dtype)
    if weights is not None:  # scaled to max 1; every row keeps a little weight (all zero: equal weights)
        w = (w / w.max().clamp_min(1e-30)).clamp_min(1e-12)
    leaves: list[tuple[torch.Tensor, int]] = []
    _split(x, w, torch.arange(n, device=x.device), k, leaves, iters=iters, gen=gen, cap=sample_per_centroid,
           leaf=leaf)
    sizes = torch.tensor([li.numel() for li, _ in leaves])
    ks = torch.tensor([kc for _, kc in leaves])
    order = torch.cat([li for li, _ in leaves])
    starts = torch.cumsum(sizes, 0) - sizes
    cen_off = torch.cumsum(ks, 0) - ks
    centroids = torch.empty((int(ks.sum()), d), dtype=x.dtype, device=x.device)
    labels = torch.empty(n, dtype=torch.int64, device=x.device)
    # leaves of similar size share one padded batch (bmm), so the Python loop runs over a few batches only
    by_size = torch.argsort(sizes, descending=True)
    for b0 in range(0, by_size.numel(), batch):
        ids = by_size[b0: b0 + batch]
        _fine_batch(x, w, order, starts[ids], sizes[ids], ks[ids], cen_off[ids], centroids, labels,
                    iters=iters, gen=gen, cap=sample_per_centroid)
    return centroids, labels


MERGE_CHUNK = 1024
"""Palette entries per block of the nearest-neighbour search in :func:`merge_palette`."""


def _nearest_other(c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For each row of ``c`` (k, D): the index (k,) of the nearest other row and the squared distance (k,)."""
    k = c.shape[0]
    c32 = c.float()
    sq = (c32 * c32).sum(1)
    nn = torch.empty(k, dtype=torch.int64, device=c.device)
    nd = torch.empty(k, dtype=torch.float32, device=c.device)
    for s in range(0, k, MERGE_CHUNK):
        # |x_j|^2 - 2 x_i.x_j in one fused product (|x_i|^2 is added after the argmin)
        d = torch.addmm(sq[None, :], c32[s:s + MERGE_CHUNK], c32.T, alpha=-2.0)
        rows = torch.arange(d.shape[0], device=c.device)
        d[rows, rows + s] = math.inf
        best, idx = d.min(1)
        nd[s:s + MERGE_CHUNK], nn[s:s + MERGE_CHUNK] = best + sq[s:s + MERGE_CHUNK], idx
    return nn, nd.clamp_min(0.0)


def merge_palette(cen: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor,
                  k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Shrink a palette ``cen`` (m, D) with member ``labels`` (N,) and member ``weights`` (N,) to ``k`` < m
    entries by moving the members of the entries that cost least to move (the entry's weight x squared distance
    to its nearest other entry) onto that entry. The surviving entries keep their values, so the palette's
    values stay on the codebook they came from (averaged entries would need a finer SH codebook: measured on
    playbot_lod2, a larger centroid texture than the unmerged palette's). A round moves disjoint entries onto
    entries that keep their members; rounds repeat until ``k`` are left. Returns (centroids (k, D), labels
    (N,))."""
    c = cen.clone()
    w = torch.zeros(c.shape[0], dtype=torch.float64, device=c.device).index_add_(0, labels,
                                                                                  weights.double().to(c.device))
    w = w + 1e-12 * float(w.max().clamp_min(1e-30))        # an unseen entry still merges by distance
    alive = torch.arange(c.shape[0], device=c.device)     # current entry -> row of cen
    owner = torch.arange(c.shape[0], device=c.device)     # row of cen -> the entry it was merged into
    while alive.numel() > k:
        nn, nd = _nearest_other(c[alive])
        need = alive.numel() - k
        is_src = [False] * alive.numel()
        is_dst = [False] * alive.numel()
        nn_list = nn.tolist()
        src: list[int] = []
        dst: list[int] = []
        for i in torch.argsort(w[alive] * nd).tolist():
            j = nn_list[i]
            if is_dst[i] or is_src[j]:         # a target keeps its members; a moved entry takes none
                continue
            is_src[i] = is_dst[j] = True
            src.append(i)
            dst.append(j)
            if len(src) == need:
                break
        si = alive[torch.tensor(src, device=c.device)]
        di = alive[torch.tensor(dst, device=c.device)]
        owner[si] = di
        w.index_add_(0, di, w[si])
        alive = alive[~torch.tensor(is_src, device=c.device)]
    while True:                                         # chains of merges -> the surviving entry
        nxt = owner[owner]
        if torch.equal(nxt, owner):
            break
        owner = nxt
    index = torch.full((c.shape[0],), -1, dtype=torch.int64, device=c.device)
    index[alive] = torch.arange(alive.numel(), device=c.device)
    return c[alive], index[owner[labels]]


def _split(x: torch.Tensor, w: torch.Tensor, idx: torch.Tensor, k: int, out: list[tuple[torch.Tensor, int]], *,
           iters: int, gen: torch.Generator, cap: int, leaf: int) -> None:
    """Split the points ``x[idx]`` into leaves of at most ``leaf`` centroids: appends (point indices, k) to ``out``.

    A node with more than ``leaf`` centroids is clustered into ceil(k / leaf) coarse clusters (Lloyd on a
    subsample), its k centroids are shared out in proportion to the cluster sizes, and each child recurses.
    """
    if k <= leaf or idx.numel() <= k:
        out.append((idx, min(k, idx.numel())))
        return
    k1 = min(math.ceil(k / leaf), idx.numel())
    sample = idx[torch.randperm(idx.numel(), generator=gen)[: k1 * cap].to(idx.device)]
    coarse = _lloyd(x[sample], w[sample], k1, iters, gen) if sample.numel() > k1 else x[sample].clone()
    top = assign(x[idx], coarse)
    sizes = torch.bincount(top, minlength=coarse.shape[0])
    alloc = _allocate(sizes, k)
    order = idx[torch.argsort(top)]
    starts = (torch.cumsum(sizes, 0) - sizes).cpu().tolist()
    for c, (s, n_c, k_c) in enumerate(zip(starts, sizes.cpu().tolist(), alloc.tolist(), strict=True)):
        if k_c > 0:
            if k_c >= k and n_c == idx.numel():  # the coarse step did not split: fall back to a leaf
                out.append((order[s: s + n_c], min(k_c, n_c)))
                continue
            del c
            _split(x, w, order[s: s + n_c], k_c, out, iters=iters, gen=gen, cap=cap, leaf=leaf)


def _fine_batch(x: torch.Tensor, wts: torch.Tensor, order: torch.Tensor, starts: torch.Tensor, sizes: torch.Tensor,
                ks: torch.Tensor, offs: torch.Tensor, centroids: torch.Tensor, labels: torch.Tensor, *,
                iters: int, gen: torch.Generator, cap: int) -> None:
    """Lloyd k-means of B clusters at once (padded to the largest); writes ``centroids`` and ``labels`` in place.

    ``starts``/``sizes``: (B,) slices of ``order`` (point indices sorted by coarse cluster); ``ks``: (B,) centroid
    counts; ``offs``: (B,) first row of each cluster's centroids in ``centroids``.
    """
    dev = x.device
    bsz = ks.numel()
    n_max, k_max = int(sizes.max()), int(ks.max())
    ar = torch.arange(n_max)
    valid = ar[None, :] < sizes[:, None]                                     # (B, n_max)
    pidx = order[(starts[:, None] + ar[None, :].clamp(max=n_max - 1)).clamp(max=order.numel() - 1).to(dev)]
    pidx = torch.where(valid.to(dev), pidx, pidx[:, :1])
    xb = x[pidx]                                                             # (B, n_max, D)
    # seeds: k distinct random members per cluster (random keys, sorted; padded members sort last)
    keys = torch.rand((bsz, n_max), generator=gen) + (~valid).float() * 2
    seed_pos = torch.argsort(keys, dim=1)[:, :k_max].to(dev)
    cb = torch.gather(xb, 1, seed_pos[:, :, None].expand(-1, -1, xb.shape[2])).clone()   # (B, k_max, D)
    cvalid = (torch.arange(k_max)[None, :] < ks[:, None]).to(dev)            # (B, k_max)
    # Lloyd steps on a subsample of at most cap points per centroid (the first points in a random order)
    sub_n = min(n_max, int(ks.max()) * cap)
    sub_pos = torch.argsort(keys, dim=1)[:, :sub_n].to(dev)
    xs = torch.gather(xb, 1, sub_pos[:, :, None].expand(-1, -1, xb.shape[2]))
    svalid = torch.gather(valid.to(dev), 1, sub_pos)
    sw = torch.gather(wts[pidx], 1, sub_pos)                               # (B, n_sub) point weights
    big = torch.finfo(x.dtype).max / 4

    def nearest(pts: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        c_sq = torch.where(cvalid, (c * c).sum(2), torch.full_like(cvalid, big, dtype=c.dtype))
        return torch.argmin(c_sq[:, None, :] - 2.0 * torch.bmm(pts, c.transpose(1, 2)), dim=2)

    w = (svalid.to(x.dtype) * sw)[:, :, None]
    for _ in range(iters):
        oh = torch.nn.functional.one_hot(nearest(xs, cb), k_max).to(x.dtype) * w     # (B, n_sub, k_max)
        cnt = oh.sum(1)                                                              # (B, k_max)
        tot = torch.bmm(oh.transpose(1, 2), xs)                                      # (B, k_max, D)
        cb = torch.where((cnt > 0)[:, :, None], tot / cnt.clamp_min(1e-30)[:, :, None], cb)
    lab = nearest(xb, cb)                                                    # (B, n_max)
    for i in range(bsz):
        n_i, k_i, o = int(sizes[i]), int(ks[i]), int(offs[i])
        centroids[o: o + k_i] = cb[i, :k_i]
        labels[pidx[i, :n_i]] = lab[i, :n_i] + o
