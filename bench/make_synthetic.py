"""Write a deterministic synthetic 3DGS scene (default: 1,000,000 splats, SH degree 3) for the codec benchmark.

Usage: python bench/make_synthetic.py OUT.ply [--splats N] [--sh-degree D] [--seed S]

The scene mimics a trained one: splats on a few hundred noisy surface patches, log-scales around -4 with
per-patch offsets, colours and SH that vary smoothly over each patch, opacities spread over (0, 1).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from splatflow.gaussians import SH_COEFFS, GaussianCloud
from splatflow.io.ply import write_ply


def synthetic_cloud(n: int, sh_degree: int = 3, seed: int = 0, patches: int = 400) -> GaussianCloud:
    """A reproducible (same seed -> same values) cloud of ``n`` splats; see the module docstring."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(0.0, 3.0, (patches, 3))
    normals = rng.normal(size=(patches, 3))
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    t1 = np.cross(normals, [0.0, 0.0, 1.0])
    t1 /= np.maximum(np.linalg.norm(t1, axis=1, keepdims=True), 1e-9)
    t2 = np.cross(normals, t1)
    pid = rng.integers(0, patches, n)
    uv = rng.uniform(-1.0, 1.0, (n, 2)) * rng.uniform(0.3, 1.5, (patches, 1))[pid]
    means = centers[pid] + uv[:, :1] * t1[pid] + uv[:, 1:] * t2[pid] + rng.normal(0, 0.01, (n, 3)) * normals[pid]
    scales = rng.normal(-4.0, 0.6, (n, 3)) + rng.normal(0, 0.8, (patches, 1))[pid]
    scales[:, 2] -= 1.5  # flat along the normal
    base = rng.uniform(-1.5, 1.5, (patches, 3))
    grad = rng.normal(0, 0.5, (patches, 2, 3))
    sh0 = base[pid] + np.einsum("nk,nkc->nc", uv, grad[pid]) + rng.normal(0, 0.05, (n, 3))
    k = SH_COEFFS[sh_degree]
    band_decay = np.repeat(np.array([0.25, 0.12, 0.06]), [3, 5, 7])[:k]
    sh_patch = rng.normal(0, 1, (patches, k, 3)) * band_decay[None, :, None]
    shN = sh_patch[pid] * (1 + 0.3 * uv[:, :1, None]) + rng.normal(0, 0.02, (n, k, 3))
    quats = rng.normal(size=(n, 4))
    opac = rng.normal(1.0, 2.5, n)
    f32 = np.float32
    return GaussianCloud(means=means.astype(f32), scales=scales.astype(f32), quats=quats.astype(f32),
                         opacities=opac.astype(f32), sh0=sh0.astype(f32), shN=shN.astype(f32))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--splats", type=int, default=1_000_000)
    ap.add_argument("--sh-degree", type=int, default=3, choices=[0, 1, 2, 3])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    write_ply(synthetic_cloud(args.splats, args.sh_degree, args.seed), args.out)
    print(f"{args.out}: {args.splats:,} splats, SH degree {args.sh_degree}")


if __name__ == "__main__":
    main()
