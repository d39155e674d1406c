"""Benchmark of the training stage: time, peak memory, held-out PSNR/SSIM and splat count on the lund photos.

    python bench/train.py      # with CUDA: lund-29 (or lund-12) at full size, 7000 steps, default and mcmc
                               #   -> bench/results/train-gpu-<gpu>.json; without: lund-12, 64 px, 150 steps
    python bench/train.py --device cpu --iterations 300 --resolution 128 --strategies mcmc

The SfM stage runs first (cached under bench/work/). Results: bench/results/train-<cpu|gpu-NAME>.json and .md,
with the machine, the library versions and the load average (the CPU numbers depend on what else runs).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SETS = {
    "lund-12": ROOT / "data" / "photos" / "lund",
    "lund-29": ROOT.parent / "shared" / "data" / "photos" / "lund" / "images",
}
WORK = ROOT / "bench" / "work" / "train"
RESULTS = ROOT / "bench" / "results"


def machine() -> dict[str, Any]:
    """CPU, cores, memory, GPU and library versions."""
    from machine import machine_info  # bench/machine.py

    return machine_info(("splatflow", "torch", "gsplat", "pycolmap", "numpy"))


def sfm_folder(name: str, max_side: int) -> Path:
    """The SfM output of a photo set, computed once and cached under bench/work/train/."""
    from splatflow.stages.sfm import sfm

    out = WORK / f"sfm-{name}-{max_side}"
    if not (out / "sfm-report.json").exists():
        photos = SETS[name]
        if not photos.exists():
            sys.exit(f"photo set {name} is not available at {photos}")
        sfm(photos, out, max_side=max_side, overwrite=True)
    return out


def write_results(kind: str, result: dict[str, Any]) -> None:
    """bench/results/train-KIND.json and .md (rewritten after every run, so a long benchmark keeps its rows)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"train-{kind}.json").write_text(json.dumps(result, indent=2) + "\n")
    m = result["machine"]
    lines = [f"# Training benchmark ({kind})", "",
             f"Machine: {m['cpu']}, {m['cores']} cores, GPU {m['gpu']}; load average at start "
             f"{m['load_average_at_start']}; versions {m['versions']}.", "",
             "| set | strategy | steps | size | splats | held-out PSNR (initial) | SSIM | s | s/step | peak memory |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['set']} | {r['strategy']} | {r['iterations']} | {r['resolution'][0]}x{r['resolution'][1]} "
                     f"| {r['splats']:,} | {r['psnr_test']} ({r['psnr_test_initial']}) | {r['ssim_test']} "
                     f"| {r['seconds']:.0f} | {r['seconds_per_iteration']:.3f} "
                     f"| {r['peak_memory_bytes'] / 2**30:.2f} GiB ({r['peak_memory_kind']}) |")
    (RESULTS / f"train-{kind}.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    import torch

    from splatflow.stages.train import train

    gpu = torch.cuda.is_available()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if gpu else "cpu")
    ap.add_argument("--set", default=None, help="lund-12 or lund-29 (default: lund-29 on a GPU when present)")
    ap.add_argument("--iterations", type=int, default=7000 if gpu else 200)
    ap.add_argument("--resolution", type=int, default=1600 if gpu else 64)
    ap.add_argument("--strategies", nargs="+", default=["default", "mcmc"])
    ap.add_argument("--max-splats", type=int, default=1_000_000)
    ap.add_argument("--sfm-side", type=int, default=1600 if gpu else 512, help="max image side for SfM")
    args = ap.parse_args(argv)
    name = args.set or ("lund-29" if gpu and SETS["lund-29"].exists() else "lund-12")
    sfm_dir = sfm_folder(name, args.sfm_side)
    rows: list[dict[str, Any]] = []
    kind = "cpu" if args.device == "cpu" else "gpu-" + re.sub(r"[^a-z0-9]+", "-", (machine()["gpu"] or "cuda").lower())
    info = machine()
    for strategy in args.strategies:
        out = WORK / f"out-{name}-{args.device}-{strategy}-{args.resolution}-{args.iterations}"
        rep = train(sfm_dir, out, iterations=args.iterations, max_splats=args.max_splats, strategy=strategy,
                    device=args.device, resolution=args.resolution, resume=False,
                    checkpoint_every=max(1000, args.iterations))
        rows.append({"set": name, **{k: rep[k] for k in (
            "strategy", "iterations", "resolution", "splats", "psnr_test", "ssim_test", "psnr_test_initial",
            "psnr_train", "seconds", "seconds_per_iteration", "peak_memory_bytes", "peak_memory_kind", "device",
            "backend", "images_train", "images_test", "densification")},
            "load_average_after": os.getloadavg()})
        print(json.dumps(rows[-1]), flush=True)
        write_results(kind, {"benchmark": "train", "machine": info, "args": vars(args), "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
