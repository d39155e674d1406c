"""Which technology for the CPU rasterizer's hot loop? Measured on the same inputs.

The hot loop is the forward compositing: per 16-pixel tile, front-to-back alpha compositing of the tile's
depth-sorted splats (gsplat conventions: alpha = min(0.999, opacity * exp(-sigma)), skipped below 1/255, a
pixel stops before its transmittance would reach 1e-4, pixel centres at +0.5). Rows, per scene and thread count:

- ``cpp``: splatflow's compiled kernel as it is (``sf_forward``, C++ loaded with ctypes), composite only, and
  ``rasterize(backend="cpu")`` end to end (projection + depth order + binning + compositing);
- ``numba``: the same compositing written here in Numba (``@njit(parallel=True, fastmath=False, cache=True)``,
  prange over tiles) on the same binned inputs (the C++ ``sf_depth_order``/``sf_bin_count``/``sf_bin_fill``),
  in two variants: ``numba-poly`` (branch-free, the C++ kernel's polynomial exp; the like-for-like port) and
  ``numba-libm`` (idiomatic: ``math.exp`` and early ``continue``); each image is checked against the C++ one;
- ``torch``: the pure-torch reference backend (its own binning + compositing, and end to end), and
  ``torch.compile`` of its compositing when that compiles (separate process with a time limit);
- build / first-use cost of each route: the C++ library via ``python -m splatflow.kernels build --force``, a
  trivial torch ``cpp_extension.load_inline`` (the floor of that route), Numba's first-call JIT and its cached
  second process, and NVIDIA Warp's CPU backend (import + compile of a trivial kernel).

Scenes: ../shared/data/splats/playbot_lod2.ply (125,000 splats, SH 2) and a synthetic 100,000-splat SH-3 scene
(bench/make_synthetic.py's generator, seed 0), one orbit camera at 256x192; 1 and 2 threads. Each row is the
median of several repetitions, wall and process CPU seconds, with the 1-minute load average. The machine is
shared: absolute times move with the load; ratios within one run are what count.

    python bench/raster_tech.py            # everything, ~10 minutes on a busy 2-core machine
    python bench/raster_tech.py --quick    # fewer repetitions, no torch.compile

Writes bench/results/raster-tech.json and raster-tech.md. Caches (Numba, kernels, Warp, torch extensions) go to
temporary folders, nothing is written into the repository besides the results.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
PLAYBOT = ROOT.parent / "shared" / "data" / "splats" / "playbot_lod2.ply"
WIDTH, HEIGHT = 256, 192
TILE = 16
SYNTHETIC_SPLATS = 100_000
sys.path.insert(0, str(Path(__file__).resolve().parent))

# ---------------------------------------------------------------------------------------------- the Numba port
# float32 constants: numba types a module-level numpy scalar as a compile-time constant of its dtype, so the
# arithmetic below stays in float32 like the C++ kernel's (a Python float literal would promote it to float64).
F0, F05, F1 = np.float32(0.0), np.float32(0.5), np.float32(1.0)
ALPHA_MIN, ALPHA_MAX, T_MIN = np.float32(1.0 / 255.0), np.float32(0.999), np.float32(1e-4)
LOG2E, LN2_HI, LN2_LO = np.float32(1.4426950408889634), np.float32(0.693145751953125), np.float32(1.428606765330187e-06)
EXP_LO = np.float32(-87.0)
P6, P5, P4, P3 = np.float32(1.0 / 720.0), np.float32(1.0 / 120.0), np.float32(1.0 / 24.0), np.float32(1.0 / 6.0)
MAGIC = np.float32(12582912.0)  # 1.5 * 2^23: adding and subtracting it rounds to an integer

try:  # the Numba rows are skipped (and say so) where numba is not installed
    from llvmlite import ir
    from numba import njit, prange, types
    from numba.extending import intrinsic
except ImportError:  # pragma: no cover
    njit = None

if njit is not None:
    # module level, not in a closure: Numba's on-disk cache (cache=True) only hits for functions it can find
    # again by module and name with the same globals
    @intrinsic
    def _bits_as_f32(typingctx: Any, x: Any) -> Any:  # int32 -> float32, same bits (a free LLVM bitcast)
        def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
            return builder.bitcast(args[0], ir.FloatType())
        return types.float32(types.int32), codegen

    @njit(inline="always", fastmath=False, cache=True)
    def exp_nonpos(x: float) -> float:
        """exp(x) for float32 x <= 0: the C++ kernel's degree-6 polynomial, 2^n built in the exponent bits."""
        tiny = x < EXP_LO
        x = EXP_LO if tiny else x
        n = (x * LOG2E + MAGIC) - MAGIC
        r = (x - n * LN2_HI) - n * LN2_LO
        p = P6
        p = p * r + P5
        p = p * r + P4
        p = p * r + P3
        p = p * r + F05
        p = p * r + F1
        p = p * r + F1
        scale = _bits_as_f32(np.int32((np.int32(n) + np.int32(127)) << np.int32(23)))
        return F0 if tiny else p * scale

    @njit(parallel=True, fastmath=False, cache=True)
    def composite_poly(means2d: np.ndarray, radii: np.ndarray, conics: np.ndarray, opac: np.ndarray,
                       colors: np.ndarray, isect: np.ndarray, offsets: np.ndarray, width: int, height: int,
                       tiles_x: int, tiles_y: int, out_rgb: np.ndarray, out_t: np.ndarray) -> None:
        """Front-to-back compositing, one tile per prange iteration, branch-free per pixel row (as the C++)."""
        ts = 16
        for t in prange(tiles_x * tiles_y):
            x0 = (t % tiles_x) * ts
            y0 = (t // tiles_x) * ts
            T = np.ones((ts, ts), np.float32)
            acc = np.zeros((3, ts, ts), np.float32)
            done = np.zeros((ts, ts), np.bool_)
            px = np.empty(ts, np.float32)
            for c in range(ts):
                px[c] = np.float32(x0 + c) + F05
            for y in range(ts):
                for c in range(ts):
                    done[y, c] = x0 + c >= width or y0 + y >= height
            start, end = offsets[t], offsets[t + 1]
            for k in range(start, end):
                if (k - start) % 16 == 0 and done.all():  # every 16 splats: stop when every pixel has
                    break
                i = isect[k]
                mx, my = means2d[i, 0], means2d[i, 1]
                ha, cb, hc = F05 * conics[i, 0], conics[i, 1], F05 * conics[i, 2]
                o = opac[i]
                cr, cg, cbl = colors[i, 0], colors[i, 1], colors[i, 2]
                ry = radii[i, 1]
                lo = max(0, int(math.ceil(my - ry - F05)) - y0)
                hi = min(ts - 1, int(math.floor(my + ry - F05)) - y0)
                for y in range(lo, hi + 1):
                    dy = my - (np.float32(y0 + y) + F05)
                    cdy = cb * dy
                    qy = hc * dy * dy
                    for c in range(ts):
                        dx = mx - px[c]
                        sigma = dx * (ha * dx) + dx * cdy + qy
                        sigma = sigma if sigma > F0 else F0
                        a = o * exp_nonpos(-sigma)
                        a = a if a < ALPHA_MAX else ALPHA_MAX
                        tc = T[y, c]
                        valid = (a >= ALPHA_MIN) & (not done[y, c])
                        nt = tc * (F1 - a)
                        stop = valid & (nt <= T_MIN)
                        inc = valid & (not stop)
                        w = a * tc if inc else F0
                        acc[0, y, c] += w * cr
                        acc[1, y, c] += w * cg
                        acc[2, y, c] += w * cbl
                        T[y, c] = nt if inc else tc
                        done[y, c] = done[y, c] | stop
            for y in range(min(ts, height - y0)):
                for c in range(min(ts, width - x0)):
                    out_rgb[y0 + y, x0 + c, 0] = acc[0, y, c]
                    out_rgb[y0 + y, x0 + c, 1] = acc[1, y, c]
                    out_rgb[y0 + y, x0 + c, 2] = acc[2, y, c]
                    out_t[y0 + y, x0 + c] = T[y, c]

    @njit(parallel=True, fastmath=False, cache=True)
    def composite_libm(means2d: np.ndarray, radii: np.ndarray, conics: np.ndarray, opac: np.ndarray,
                       colors: np.ndarray, isect: np.ndarray, offsets: np.ndarray, width: int, height: int,
                       tiles_x: int, tiles_y: int, out_rgb: np.ndarray, out_t: np.ndarray) -> None:
        """The same compositing written plainly: ``math.exp`` and per-pixel branches."""
        ts = 16
        for t in prange(tiles_x * tiles_y):
            x0 = (t % tiles_x) * ts
            y0 = (t // tiles_x) * ts
            T = np.ones((ts, ts), np.float32)
            acc = np.zeros((ts, ts, 3), np.float32)
            done = np.zeros((ts, ts), np.bool_)
            n_live = 0
            for y in range(ts):
                for c in range(ts):
                    if x0 + c >= width or y0 + y >= height:
                        done[y, c] = True
                    else:
                        n_live += 1
            for k in range(offsets[t], offsets[t + 1]):
                if n_live == 0:
                    break
                i = isect[k]
                mx, my = means2d[i, 0], means2d[i, 1]
                a_, b_, c_ = conics[i, 0], conics[i, 1], conics[i, 2]
                o = opac[i]
                ry = radii[i, 1]
                lo = max(0, int(math.ceil(my - ry - F05)) - y0)
                hi = min(ts - 1, int(math.floor(my + ry - F05)) - y0)
                for y in range(lo, hi + 1):
                    dy = my - (np.float32(y0 + y) + F05)
                    for c in range(ts):
                        if done[y, c]:
                            continue
                        dx = mx - (np.float32(x0 + c) + F05)
                        sigma = F05 * (a_ * dx * dx + c_ * dy * dy) + b_ * dx * dy
                        if sigma < F0:
                            sigma = F0
                        a = min(o * math.exp(-sigma), ALPHA_MAX)
                        if a < ALPHA_MIN:
                            continue
                        nt = T[y, c] * (F1 - a)
                        if nt <= T_MIN:
                            done[y, c] = True
                            n_live -= 1
                            continue
                        w = a * T[y, c]
                        for ch in range(3):
                            acc[y, c, ch] += w * colors[i, ch]
                        T[y, c] = nt
            for y in range(min(ts, height - y0)):
                for c in range(min(ts, width - x0)):
                    for ch in range(3):
                        out_rgb[y0 + y, x0 + c, ch] = acc[y, c, ch]
                    out_t[y0 + y, x0 + c] = T[y, c]


def numba_kernels() -> dict[str, Any]:
    """The Numba kernels by name (JIT-compiled, or loaded from Numba's cache, on their first call)."""
    if njit is None:
        raise RuntimeError("numba is not installed (pip install numba)")
    return {"poly": composite_poly, "libm": composite_libm}


# ---------------------------------------------------------------------------------------------- inputs
def load_scene(name: str) -> tuple[Any, Any]:
    """(cloud, camera): ``playbot_lod2`` from ../shared/data or ``synthetic_100k`` (seed 0), one orbit view."""
    from splatflow.cameras import orbit_cameras
    from splatflow.io.ply import read_ply

    if name == "playbot_lod2":
        cloud = read_ply(PLAYBOT)
    else:
        from make_synthetic import synthetic_cloud

        cloud = synthetic_cloud(SYNTHETIC_SPLATS, 3, seed=0)
    return cloud, orbit_cameras(cloud, 1, WIDTH, HEIGHT)[0]


def binned_inputs(t: dict[str, Any], vm: Any, K: Any, sh_degree: int) -> dict[str, Any]:
    """The compositing's inputs as splatflow's cpu backend builds them: ``_CpuProject`` (per-splat projection,
    screen box, SH colour), the C++ depth order and tile binning. Returns float32/int numpy arrays: means2d
    (L, 2), radii (L, 2), conics (L, 3), opac (L,), colors (L, 3), isect (P,) int32 splat ids per tile in depth
    order, offsets (T+1,) int64, plus ``pairs`` P and ``visible`` M."""
    import torch

    from splatflow import kernels
    from splatflow.render import _CpuProject, _depth_order, _ptr

    lib = kernels.load()
    with torch.no_grad():
        means2d, conics, colors, depths, radii, visible = _CpuProject.apply(
            t["means"], t["quats"], t["scales"], t["opacities"], t["colors"], vm, K, WIDTH, HEIGHT, sh_degree,
            0.01, 1e10)
        order = _depth_order(depths, visible)
        tiles_x, tiles_y = -(-WIDTH // TILE), -(-HEIGHT // TILE)
        counts = torch.empty(tiles_x * tiles_y, dtype=torch.int64)
        m2, rad = means2d.contiguous(), radii.contiguous()
        total = lib.sf_bin_count(len(order), _ptr(order), _ptr(m2), _ptr(rad), TILE, tiles_x, tiles_y, _ptr(counts))
        offsets = torch.zeros(tiles_x * tiles_y + 1, dtype=torch.int64)
        torch.cumsum(counts, 0, out=offsets[1:])
        isect = torch.empty(max(1, total), dtype=torch.int32)
        lib.sf_bin_fill(len(order), _ptr(order), _ptr(m2), _ptr(rad), TILE, tiles_x, tiles_y, _ptr(offsets),
                        _ptr(isect))
    f = lambda x: np.ascontiguousarray(x.detach().numpy())  # noqa: E731
    return {"means2d": f(m2), "radii": f(rad), "conics": f(conics), "opac": f(t["opacities"].float()),
            "colors": f(colors), "isect": f(isect), "offsets": f(offsets), "tiles_x": tiles_x, "tiles_y": tiles_y,
            "pairs": int(total), "visible": len(order)}


def cpp_composite(b: dict[str, Any], threads: int) -> tuple[np.ndarray, np.ndarray]:
    """splatflow's ``sf_forward`` on the binned inputs: rgb (H, W, 3), transmittance (H, W)."""
    from splatflow import kernels

    lib = kernels.load()
    rgb = np.empty((HEIGHT, WIDTH, 3), np.float32)
    trans = np.empty((HEIGHT, WIDTH), np.float32)
    used = np.empty((HEIGHT, WIDTH), np.int32)
    p = lambda a: a.ctypes.data  # noqa: E731
    rc = lib.sf_forward(p(b["means2d"]), p(b["radii"]), p(b["conics"]), p(b["opac"]), p(b["colors"]), p(b["isect"]),
                        p(b["offsets"]), WIDTH, HEIGHT, TILE, b["tiles_x"], b["tiles_y"], None, p(rgb), p(trans),
                        p(used), threads)
    if rc != 0:
        raise RuntimeError(f"sf_forward returned {rc}")
    return rgb, trans


def numba_composite(variant: str, b: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """The Numba port (``variant`` "poly" or "libm") on the binned inputs: rgb (H, W, 3), transmittance (H, W)."""
    rgb = np.empty((HEIGHT, WIDTH, 3), np.float32)
    trans = np.empty((HEIGHT, WIDTH), np.float32)
    numba_kernels()[variant](b["means2d"], b["radii"], b["conics"], b["opac"], b["colors"], b["isect"],
                             b["offsets"], WIDTH, HEIGHT, b["tiles_x"], b["tiles_y"], rgb, trans)
    return rgb, trans


def timed(fn: Callable[[], Any], reps: int, warmup: int = 1) -> dict[str, Any]:
    """Median (and min/max) wall and process-CPU seconds of ``reps`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    wall, cpu = [], []
    for _ in range(reps):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return {"reps": reps, "wall_s": statistics.median(wall), "wall_min_s": min(wall), "wall_max_s": max(wall),
            "cpu_s": statistics.median(cpu), "load_average": round(os.getloadavg()[0], 2)}


def _max_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max())


# ---------------------------------------------------------------------------------------------- runtime rows
def _runtime_scene(name: str, threads: int, fast_reps: int, slow_reps: int) -> dict[str, Any]:
    """The runtime rows and image agreement of one scene (see :func:`runtime`)."""
    import torch

    from splatflow.render import _composite_visible, _visible_splats, cloud_tensors, rasterize

    cloud, cam = load_scene(name)
    t = cloud_tensors(cloud)
    vm = torch.tensor(cam.viewmat, dtype=torch.float32)
    K = torch.tensor(cam.K, dtype=torch.float32)
    deg = cloud.sh_degree
    b = binned_inputs(t, vm, K, deg)
    ref_rgb, ref_t = cpp_composite(b, threads)
    scene: dict[str, Any] = {"scene": name, "splats": len(cloud), "sh_degree": deg, "size": f"{WIDTH}x{HEIGHT}",
                             "visible": b["visible"], "tile_pairs": b["pairs"],
                             "coverage": round(float(1 - ref_t.mean()), 4), "rows": {}, "agreement": {}}
    rows, agree = scene["rows"], scene["agreement"]
    with torch.no_grad():
        # agreement with the C++ image (rgb and transmittance, max abs difference)
        e2e = rasterize(t["means"], t["quats"], t["scales"], t["opacities"], t["colors"], vm, K, WIDTH, HEIGHT,
                        sh_degree=deg, backend="cpu")
        agree["cpp_rasterize_vs_cpp_composite"] = _max_diff(e2e[0].numpy(), ref_rgb)
        for v in ("poly", "libm"):
            rgb, tr = numba_composite(v, b)
            agree[f"numba_{v}_rgb"] = _max_diff(rgb, ref_rgb)
            agree[f"numba_{v}_transmittance"] = _max_diff(tr, ref_t)
        fast: dict[str, Callable[[], Any]] = {
            "cpp composite (sf_forward)": lambda: cpp_composite(b, threads),
            "numba-poly composite": lambda: numba_composite("poly", b),
            "numba-libm composite": lambda: numba_composite("libm", b),
            "cpp projection+order+binning": lambda: binned_inputs(t, vm, K, deg),
            "cpp rasterize end-to-end": lambda: rasterize(t["means"], t["quats"], t["scales"], t["opacities"],
                                                          t["colors"], vm, K, WIDTH, HEIGHT, sh_degree=deg,
                                                          backend="cpu"),
        }
        samples: dict[str, list[tuple[float, float]]] = {k: [] for k in fast}
        for fn in fast.values():
            fn()  # warm-up
        for _ in range(fast_reps):
            for k, fn in fast.items():
                c0, t0 = time.process_time(), time.perf_counter()
                fn()
                samples[k].append((time.perf_counter() - t0, time.process_time() - c0))
        load = round(os.getloadavg()[0], 2)
        for k, s in samples.items():
            wall = [w for w, _ in s]
            rows[k] = {"reps": fast_reps, "wall_s": statistics.median(wall), "wall_min_s": min(wall),
                       "wall_max_s": max(wall), "cpu_s": statistics.median(c for _, c in s), "load_average": load}
        # the torch reference: its own binning (4-pixel tiles) + compositing, and end to end
        vis = _visible_splats(t["means"], t["quats"], t["scales"], t["opacities"], t["colors"], vm, K, WIDTH,
                              HEIGHT, deg, 0.01, 1e10, None)
        trgb, talpha = _composite_visible(vis, WIDTH, HEIGHT, None)
        agree["torch_rgb"] = _max_diff(trgb.numpy(), ref_rgb)
        agree["torch_transmittance"] = _max_diff(1 - talpha[..., 0].numpy(), ref_t)
        rows["torch composite (binning+compositing)"] = timed(
            lambda: _composite_visible(vis, WIDTH, HEIGHT, None), slow_reps)
        rows["torch rasterize end-to-end"] = timed(
            lambda: rasterize(t["means"], t["quats"], t["scales"], t["opacities"], t["colors"], vm, K, WIDTH,
                              HEIGHT, sh_degree=deg, backend="torch"), slow_reps)
    print(f"[{threads} threads] {name}: " + ", ".join(f"{k} {r['wall_s']:.4f}s" for k, r in rows.items()),
          file=sys.stderr, flush=True)
    return scene


def runtime(threads: int, fast_reps: int, slow_reps: int) -> dict[str, Any]:
    """Every runtime row of both scenes at ``threads`` threads (this process). The fast rows (C++ and Numba
    compositing) are timed interleaved, one call of each per round, so the shared machine's load swings hit them
    alike."""
    import numba
    import torch

    torch.set_num_threads(threads)
    numba.set_num_threads(threads)
    out: dict[str, Any] = {"threads": threads,
                           "scenes": [_runtime_scene(name, threads, fast_reps, slow_reps)
                                      for name in ("playbot_lod2", "synthetic_100k")]}
    out["numba_threading_layer"] = numba.threading_layer()
    return out


def _compile_scene(name: str, compiled: Callable[..., Any], reps: int) -> dict[str, Any]:
    """First call (compilation) and steady state of ``compiled`` on one scene, with eager for comparison."""
    import torch

    from splatflow.render import _composite_visible, _visible_splats, cloud_tensors

    cloud, cam = load_scene(name)
    t = cloud_tensors(cloud)
    vm = torch.tensor(cam.viewmat, dtype=torch.float32)
    K = torch.tensor(cam.K, dtype=torch.float32)
    with torch.no_grad():
        vis = _visible_splats(t["means"], t["quats"], t["scales"], t["opacities"], t["colors"], vm, K, WIDTH,
                              HEIGHT, cloud.sh_degree, 0.01, 1e10, None)
        ref = _composite_visible(vis, WIDTH, HEIGHT, None)
        t0 = time.perf_counter()
        got = compiled(vis, WIDTH, HEIGHT, None)
        first = time.perf_counter() - t0
        print(f"[torch.compile] {name}: first call {first:.1f}s", file=sys.stderr, flush=True)
        row = timed(lambda: compiled(vis, WIDTH, HEIGHT, None), reps)
        eager = timed(lambda: _composite_visible(vis, WIDTH, HEIGHT, None), reps)
    return {"scene": name, "first_call_s": first, "compiled": row, "eager": eager,
            "max_abs_diff_vs_eager": _max_diff(got[0].numpy(), ref[0].numpy())}


def torch_compile_rows(threads: int, reps: int) -> dict[str, Any]:
    """``torch.compile`` (default inductor) of the torch backend's compositing (``_composite_visible``): time of
    the first call (compilation) per scene, then the steady state, and its agreement with eager."""
    import torch
    from torch._dynamo.utils import counters

    from splatflow.render import _composite_visible

    torch.set_num_threads(threads)
    compiled = torch.compile(_composite_visible)
    out: dict[str, Any] = {"threads": threads, "target": "splatflow.render._composite_visible",
                           "scenes": [_compile_scene(name, compiled, reps) for name in ("playbot_lod2",
                                                                                      "synthetic_100k")]}
    out["dynamo_counters"] = {k: {str(a).splitlines()[0]: b for a, b in v.items()} for k, v in counters.items()
                              if k in ("graph_break", "stats", "recompiles", "unique_graphs")}
    return out


# ---------------------------------------------------------------------------------------------- first-use costs
def numba_first_use() -> dict[str, Any]:
    """The first call of each Numba kernel in this process, on a tiny input: a JIT compilation, or a load from
    NUMBA_CACHE_DIR when a previous process filled it (the first kernel also starts Numba's threading layer)."""
    out: dict[str, Any] = {}
    n = 4
    rng = np.random.default_rng(0)
    b = {"means2d": (rng.uniform(0, 16, (n, 2))).astype(np.float32), "radii": np.full((n, 2), 8, np.float32),
         "conics": np.tile(np.float32([0.1, 0.0, 0.1]), (n, 1)), "opac": np.full(n, 0.5, np.float32),
         "colors": np.full((n, 3), 0.5, np.float32), "isect": np.arange(n, dtype=np.int32),
         "offsets": np.array([0, n], np.int64), "tiles_x": 1, "tiles_y": 1}
    for v in ("poly", "libm"):
        t0 = time.perf_counter()
        kern = numba_kernels()[v]
        rgb = np.empty((16, 16, 3), np.float32)
        tr = np.empty((16, 16), np.float32)
        kern(b["means2d"], b["radii"], b["conics"], b["opac"], b["colors"], b["isect"], b["offsets"], 16, 16, 1, 1,
             rgb, tr)
        out[f"first_call_{v}_s"] = time.perf_counter() - t0
    return out


def numba_vector_width() -> int:
    """The widest <N x float> vector type in the poly kernel's LLVM IR (1: not vectorised)."""
    import re

    ir_text = "\n".join(composite_poly.inspect_llvm().values())
    widths = [int(w) for w in re.findall(r"<(\d+) x float>", ir_text)]
    return max(widths, default=1)


def _run(cmd: list[str], env: dict[str, str] | None = None, timeout: float = 600) -> dict[str, Any]:
    """Run ``cmd`` (a fresh process); its wall seconds, exit status and the last line of its output."""
    t0 = time.perf_counter()
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=timeout,
                             env={**os.environ, **(env or {})})
    except subprocess.TimeoutExpired:
        return {"ok": False, "wall_s": time.perf_counter() - t0, "error": f"did not finish in {timeout:.0f} s"}
    wall = time.perf_counter() - t0
    lines = (res.stdout or "").strip().splitlines()
    err = [ln for ln in (res.stderr or "").strip().splitlines() if ln.strip()]
    return {"ok": res.returncode == 0, "wall_s": wall, "rc": res.returncode, "stdout_last": lines[-1] if lines else "",
            "error": None if res.returncode == 0 else (err[-1] if err else f"exit {res.returncode}")}


_PY_BASE = "import time; t0 = time.perf_counter(); "
_LOAD_INLINE = _PY_BASE + (
    "import torch; t1 = time.perf_counter(); from torch.utils.cpp_extension import load_inline; "
    "import sys; m = load_inline('sf_trivial', cpp_sources='torch::Tensor add1(torch::Tensor x) { return x + 1; }', "
    "functions=['add1'], build_directory=sys.argv[1], verbose=False); assert int(m.add1(torch.zeros(1))[0]) == 1; "
    "import json; print(json.dumps({'import_torch_s': t1 - t0, 'load_inline_s': time.perf_counter() - t1}))")
_WARP = """import json, sys, time
t0 = time.perf_counter()
import warp as wp
t1 = time.perf_counter()
wp.config.kernel_cache_dir = sys.argv[1]
wp.config.quiet = True
wp.init()
t2 = time.perf_counter()


@wp.kernel
def add1(a: wp.array(dtype=float)):
    i = wp.tid()
    a[i] = a[i] + 1.0


a = wp.zeros(8, dtype=float, device="cpu")
t3 = time.perf_counter()
wp.launch(add1, dim=8, inputs=[a], device="cpu")
wp.synchronize()
t4 = time.perf_counter()
assert float(a.numpy()[0]) == 1.0
print(json.dumps({"import_s": t1 - t0, "init_s": t2 - t1, "first_launch_s": t4 - t3, "version": wp.config.version}))
"""
_NUMBA_FIRST = (
    "import json, sys, time; t0 = time.perf_counter(); import numba; t1 = time.perf_counter(); "
    "sys.path.insert(0, 'bench'); import raster_tech as rt; r = rt.numba_first_use(); r['import_numba_s'] = t1 - t0; "
    "r['vector_width'] = rt.numba_vector_width() if sys.argv[1] == 'cold' else None; print(json.dumps(r))")


def first_use_costs(tmp: Path) -> dict[str, Any]:
    """Build / first-use cost of each route, each in fresh processes with its cache in ``tmp``."""
    py = sys.executable
    out: dict[str, Any] = {}
    base = _run([py, "-c", "import splatflow.kernels"])
    out["python_import_splatflow_kernels"] = base
    kd = str(tmp / "kernels")
    out["cpp_ctypes_build"] = _run([py, "-m", "splatflow.kernels", "build", "--force"], {"SPLATFLOW_KERNEL_DIR": kd})
    out["cpp_ctypes_cached_load"] = _run(
        [py, "-c", "import time; t0 = time.perf_counter(); from splatflow import kernels; kernels.load(); "
                   "print(time.perf_counter() - t0)"], {"SPLATFLOW_KERNEL_DIR": kd})
    print(f"cpp build {out['cpp_ctypes_build']['wall_s']:.1f}s", file=sys.stderr, flush=True)
    ext = str(tmp / "torch_ext")
    os.makedirs(ext, exist_ok=True)
    out["torch_cpp_extension_load_inline_cold"] = _run([py, "-c", _LOAD_INLINE, ext])
    out["torch_cpp_extension_load_inline_cached"] = _run([py, "-c", _LOAD_INLINE, ext])
    print(f"load_inline {out['torch_cpp_extension_load_inline_cold']['wall_s']:.1f}s", file=sys.stderr, flush=True)
    nb = {"NUMBA_CACHE_DIR": str(tmp / "numba")}
    out["numba_cold"] = _run([py, "-c", _NUMBA_FIRST, "cold"], nb)
    out["numba_cached"] = _run([py, "-c", _NUMBA_FIRST, "cached"], nb)
    print(f"numba cold {out['numba_cold']['wall_s']:.1f}s", file=sys.stderr, flush=True)
    wd = str(tmp / "warp")
    script = tmp / "warp_trivial.py"  # Warp reads a kernel's source from its file: no `python -c`
    script.write_text(_WARP)
    out["warp_cpu_cold"] = _run([py, str(script), wd])
    out["warp_cpu_cached"] = _run([py, str(script), wd])
    for v in out.values():
        try:
            v["reported"] = json.loads(v.get("stdout_last") or "null")
        except json.JSONDecodeError:
            v["reported"] = v.get("stdout_last")
    return out


# ---------------------------------------------------------------------------------------------- report
def machine() -> dict[str, Any]:
    """The machine description shared by the benchmarks (bench/machine.py) with the versions measured."""
    from machine import machine_info

    return machine_info(("splatflow", "torch", "numpy", "numba", "llvmlite", "warp-lang", "ninja"))


def _fmt(s: float | None) -> str:
    if s is None:
        return "-"
    return f"{s * 1000:.1f} ms" if s < 1 else f"{s:.2f} s"


def _markdown(rep: dict[str, Any]) -> str:
    m = rep["machine"]
    v = m["versions"]
    lines = ["# CPU rasterizer technology benchmark (forward compositing)", "",
             f"Machine: {m['cpu']}, {m['cores']} cores, shared with other agents' work (1-min load average "
             f"{m['load_average_at_start'][0]:.1f} at start, per row below): absolute times swing with the load, "
             "the ratios within one run are what count. torch " + str(v.get("torch")) + ", numba "
             + str(v.get("numba")) + ", numpy " + str(v.get("numpy")) + ", warp-lang " + str(v.get("warp-lang"))
             + f", g++ {rep['compiler']}; CPU SIMD: {' '.join(rep.get('cpu_simd_flags', [])) or '?'}. "
             + f"One orbit view at {WIDTH}x{HEIGHT}, 16-pixel tiles (torch: 4), "
             "median of the repetitions; CPU = process CPU seconds (all threads). The C++ and Numba compositing "
             "rows run on identical binned inputs (splatflow's C++ projection, depth order and binning) and are "
             "timed interleaved.", "",
             "## Runtime", "",
             "| scene | threads | row | median wall | min wall | CPU | wall / cpp composite | CPU / cpp composite "
             "| load |",
             "|---|---|---|---|---|---|---|---|---|"]
    for run in rep["runtime"]:
        for sc in run["scenes"]:
            base = sc["rows"]["cpp composite (sf_forward)"]
            for name, r in sc["rows"].items():
                lines.append(f"| {sc['scene']} ({sc['splats']:,}) | {run['threads']} | {name} | {_fmt(r['wall_s'])} "
                             f"| {_fmt(r['wall_min_s'])} | {_fmt(r['cpu_s'])} | {r['wall_s'] / base['wall_s']:.2f}x "
                             f"| {r['cpu_s'] / base['cpu_s']:.2f}x | {r['load_average']} |")
    tc = rep.get("torch_compile")
    if tc:
        if tc.get("ok"):
            for sc in tc["result"]["scenes"]:
                lines.append(f"| {sc['scene']} | {tc['result']['threads']} | torch.compile composite (first call "
                             f"{_fmt(sc['first_call_s'])}) | {_fmt(sc['compiled']['wall_s'])} | "
                             f"{_fmt(sc['compiled']['wall_min_s'])} | {_fmt(sc['compiled']['cpu_s'])} | eager "
                             f"{_fmt(sc['eager']['wall_s'])} in that process | | {sc['compiled']['load_average']} |")
        else:
            lines.append(f"| - | - | torch.compile composite | failed: {tc.get('error')} | | | | | |")
    lines += ["", "Image agreement with the C++ kernel (max abs difference, rgb / transmittance): " + "; ".join(
        f"{sc['scene']}: numba-poly {sc['agreement']['numba_poly_rgb']:.1e} / "
        f"{sc['agreement']['numba_poly_transmittance']:.1e}, numba-libm {sc['agreement']['numba_libm_rgb']:.1e} / "
        f"{sc['agreement']['numba_libm_transmittance']:.1e}, torch backend {sc['agreement']['torch_rgb']:.1e} / "
        f"{sc['agreement']['torch_transmittance']:.1e}"
        for sc in rep["runtime"][0]["scenes"]) + ".", ""]
    fu = rep["first_use"]
    lines += ["## Build / first-use cost (fresh processes, empty caches in a temp dir)", "",
              "| route | cold | cached (second process) | note |", "|---|---|---|---|"]

    def cell(r: dict[str, Any], key: str | None = None) -> str:
        if not r.get("ok"):
            return f"failed: {r.get('error')}"
        if key and isinstance(r.get("reported"), dict):
            return _fmt(r["reported"][key])
        return _fmt(r["wall_s"]) + " (process)"

    lines.append(f"| python + import splatflow.kernels (baseline) | {cell(fu['python_import_splatflow_kernels'])} | | "
                 "subtract from the process rows |")
    lines.append(f"| C++ via ctypes (`python -m splatflow.kernels build --force`) | {cell(fu['cpp_ctypes_build'])} | "
                 f"{cell(fu['cpp_ctypes_cached_load'])} | g++ -O3 -march=native, no torch headers |")
    lines.append(f"| torch cpp_extension.load_inline, trivial function | "
                 f"{cell(fu['torch_cpp_extension_load_inline_cold'], 'load_inline_s')} | "
                 f"{cell(fu['torch_cpp_extension_load_inline_cached'], 'load_inline_s')} | load_inline call only "
                 f"(import torch excluded); {rep['ninja_note']} |")
    nc, nw = fu["numba_cold"], fu["numba_cached"]
    if nc.get("ok") and isinstance(nc.get("reported"), dict):
        r0, r1 = nc["reported"], nw.get("reported") or {}
        lines.append(f"| Numba JIT, poly kernel | {_fmt(r0['first_call_poly_s'])} | "
                     f"{_fmt(r1.get('first_call_poly_s'))} | first call; import numba {_fmt(r0['import_numba_s'])}; "
                     f"LLVM IR vector width {r0.get('vector_width')} floats |")
        lines.append(f"| Numba JIT, libm kernel | {_fmt(r0['first_call_libm_s'])} | "
                     f"{_fmt(r1.get('first_call_libm_s'))} | first call |")
    else:
        lines.append(f"| Numba | {cell(nc)} | | |")
    wc, ww = fu["warp_cpu_cold"], fu["warp_cpu_cached"]
    if wc.get("ok") and isinstance(wc.get("reported"), dict):
        lines.append(f"| NVIDIA Warp CPU, trivial kernel | {_fmt(wc['reported']['first_launch_s'])} | "
                     f"{_fmt((ww.get('reported') or {}).get('first_launch_s'))} | first launch (kernel build); "
                     f"import {_fmt(wc['reported']['import_s'])}, init {_fmt(wc['reported']['init_s'])} |")
    else:
        lines.append(f"| NVIDIA Warp CPU | {cell(wc)} | | |")
    lines += ["", "## Conclusion", "", rep.get("conclusion", "(see the JSON)"), ""]
    return "\n".join(lines)


def _conclusion(rep: dict[str, Any]) -> str:
    """One paragraph of the measured facts, every number from this run."""
    def ratios(row: str, key: str) -> list[float]:
        return [sc["rows"][row][key] / sc["rows"]["cpp composite (sf_forward)"][key]
                for run in rep["runtime"] for sc in run["scenes"]]

    def rng(vals: list[float], digits: int = 2) -> str:
        return f"{min(vals):.{digits}f}-{max(vals):.{digits}f}x"

    scenes = [sc for run in rep["runtime"] for sc in run["scenes"]]
    loads = [r["load_average"] for sc in scenes for r in sc["rows"].values()]
    diff = max(max(sc["agreement"]["numba_poly_rgb"], sc["agreement"]["numba_libm_rgb"]) for sc in scenes)
    fu = rep["first_use"]

    def got(row: str, key: str) -> float:
        r = fu[row].get("reported")
        return float(r[key]) if fu[row].get("ok") and isinstance(r, dict) and key in r else float("nan")

    poly = "numba-poly composite"
    libm = "numba-libm composite"
    text = (f"On a 2-core machine shared with other agents (1-min load {min(loads):.1f}-{max(loads):.1f} during the "
            f"rows, so absolute times are inflated and noisy), on identical binned inputs of 2 scenes x 1 and 2 "
            f"threads: the Numba port that mirrors the C++ kernel (branch-free pixel rows, the same polynomial exp, "
            f"vectorised by LLVM to {fu['numba_cold'].get('reported', {}).get('vector_width')}-float vectors) took "
            f"{rng(ratios(poly, 'wall_s'))} the C++ kernel's median wall time ({rng(ratios(poly, 'cpu_s'))} its "
            f"CPU time); a plain Numba version (math.exp, per-pixel branches) took {rng(ratios(libm, 'wall_s'))} "
            f"({rng(ratios(libm, 'cpu_s'))} CPU); both reproduce the C++ image to {diff:.1e} (max abs). The torch "
            f"reference backend's binning+compositing took "
            f"{rng(ratios('torch composite (binning+compositing)', 'wall_s'), 0)} the C++ compositing.")
    tc = rep.get("torch_compile")
    if tc and tc.get("ok"):
        res = tc["result"]
        st = res["dynamo_counters"].get("stats", {})
        gb = sum(res["dynamo_counters"].get("graph_break", {}).values())
        speed = " / ".join(f"{sc['compiled']['wall_s'] / sc['eager']['wall_s']:.2f}x" for sc in res["scenes"])
        text += (" torch.compile of that compositing works on this CPU-only torch: first calls "
                 + " / ".join(f"{sc['first_call_s']:.0f} s" for sc in res["scenes"])
                 + f" ({st.get('unique_graphs')} graphs, {gb} graph breaks: .item() and data-dependent shapes), "
                 f"then {speed} its eager time in the same process.")
    elif tc:
        text += f" torch.compile of that compositing failed: {tc.get('error')}."
    sizes = rep.get("installed_mib", {})
    text += (f" First-use cost: the C++ library builds in {fu['cpp_ctypes_build']['wall_s']:.1f} s (the whole "
             f"`python -m splatflow.kernels build --force` process; no torch headers); a trivial torch "
             f"cpp_extension.load_inline takes {got('torch_cpp_extension_load_inline_cold', 'load_inline_s'):.0f} s "
             f"(the floor of that route; cached "
             f"{got('torch_cpp_extension_load_inline_cached', 'load_inline_s'):.2f} s); Numba's first call "
             f"JIT-compiles the poly kernel in {got('numba_cold', 'first_call_poly_s'):.1f} s (cached second "
             f"process {got('numba_cached', 'first_call_poly_s'):.2f} s; import numba "
             f"{got('numba_cold', 'import_numba_s'):.2f} s; numba+llvmlite install "
             f"{sizes.get('numba+llvmlite', float('nan')):.0f} MiB); Warp's CPU backend ")
    if fu["warp_cpu_cold"].get("ok"):
        text += (f"compiles a trivial kernel in {got('warp_cpu_cold', 'first_launch_s'):.1f} s (cached "
                 f"{got('warp_cpu_cached', 'first_launch_s') * 1000:.0f} ms; install "
                 f"{sizes.get('warp-lang', float('nan')):.0f} MiB).")
    else:
        text += f"failed: {fu['warp_cpu_cold'].get('error')}."
    return text


def installed_mib() -> dict[str, float]:
    """Disk size (MiB) of the installed Numba (+ llvmlite) and Warp packages."""
    import importlib.util

    def size(mod: str) -> float:
        spec = importlib.util.find_spec(mod)
        if spec is None or not spec.submodule_search_locations:
            return float("nan")
        root = Path(next(iter(spec.submodule_search_locations)))
        return sum(f.stat().st_size for f in root.rglob("*") if f.is_file()) / 2**20

    return {"numba+llvmlite": size("numba") + size("llvmlite"), "warp-lang": size("warp")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer repetitions, no torch.compile")
    ap.add_argument("--runtime", type=int, metavar="THREADS", help=argparse.SUPPRESS)
    ap.add_argument("--torch-compile", type=int, metavar="THREADS", help=argparse.SUPPRESS)
    ap.add_argument("--reps", type=int, default=40, help="rounds of the fast rows (default 40)")
    ap.add_argument("--slow-reps", type=int, default=3, help="repetitions of the torch rows (default 3)")
    ap.add_argument("--compile-timeout", type=float, default=300.0, help="seconds allowed for torch.compile")
    args = ap.parse_args()
    if args.runtime:
        print(json.dumps(runtime(args.runtime, args.reps, args.slow_reps)))
        return 0
    if args.torch_compile:
        print(json.dumps(torch_compile_rows(args.torch_compile, args.slow_reps)))
        return 0

    if not PLAYBOT.exists():
        print(f"missing {PLAYBOT} (../shared/data)", file=sys.stderr)
        return 2
    if njit is None:
        print("numba is not installed: pip install numba", file=sys.stderr)
        return 2
    reps, slow = (5, 2) if args.quick else (args.reps, args.slow_reps)
    t_start = time.perf_counter()
    rep: dict[str, Any] = {"machine": machine(), "size": f"{WIDTH}x{HEIGHT}", "tile": TILE}
    cxx = subprocess.run(["g++", "--version"], capture_output=True, text=True)
    rep["compiler"] = cxx.stdout.splitlines()[0].split()[-1] if cxx.returncode == 0 else None
    import shutil

    ninja = shutil.which("ninja")  # what torch.utils.cpp_extension runs (PATH; the venv's bin is not on it here)
    rep["installed_mib"] = installed_mib()
    cpu_flags = (Path("/proc/cpuinfo").read_text().split("flags", 1)[-1].split("\n", 1)[0].split()
                 if Path("/proc/cpuinfo").exists() else [])
    rep["cpu_simd_flags"] = sorted(f for f in cpu_flags if f.startswith(("avx", "fma", "sse4")))
    rep["ninja_note"] = (f"ninja {subprocess.run([ninja, '--version'], capture_output=True, text=True).stdout.strip()}"
                         f" at {ninja}" if ninja else "ninja missing")
    with tempfile.TemporaryDirectory(prefix="raster-tech-") as tmpdir:
        tmp = Path(tmpdir)
        env = {"NUMBA_CACHE_DIR": str(tmp / "numba-runtime")}
        rep["first_use"] = first_use_costs(tmp)
        rep["runtime"] = []
        for threads in (1, 2):
            r = _run([sys.executable, __file__, "--runtime", str(threads), "--reps", str(reps), "--slow-reps",
                      str(slow)], env)
            if not r["ok"]:
                raise RuntimeError(f"runtime rows at {threads} threads failed: {r['error']}")
            rep["runtime"].append(json.loads(r["stdout_last"]))
            print(f"runtime {threads} threads done ({time.perf_counter() - t_start:.0f}s)", file=sys.stderr,
                  flush=True)
        if not args.quick:
            r = _run([sys.executable, __file__, "--torch-compile", "2", "--slow-reps", str(slow)],
                     {"TORCHINDUCTOR_CACHE_DIR": str(tmp / "inductor")}, timeout=args.compile_timeout)
            r["wall_s_including_process"] = r.pop("wall_s")
            if r["ok"]:
                r["result"] = json.loads(r["stdout_last"])
            rep["torch_compile"] = r
    rep["total_s"] = time.perf_counter() - t_start
    rep["load_average_at_end"] = os.getloadavg()
    rep["conclusion"] = _conclusion(rep)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "raster-tech.json").write_text(json.dumps(rep, indent=2) + "\n")
    (RESULTS / "raster-tech.md").write_text(_markdown(rep))
    print(_markdown(rep))
    return 0


if __name__ == "__main__":
    sys.exit(main())
