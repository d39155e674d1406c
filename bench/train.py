"""Benchmark of the training stage: time, peak memory, held-out PSNR/SSIM and splat count on the lund photos.

    python bench/train.py      # with CUDA: lund-29 at full size, 7000 steps, default and mcmc
                               #   -> bench/results/train-gpu-<gpu>.json
                               # without: the `cpu` preset on the bundled 29 photos (what `splatflow run` trains),
                               #   plus 30 steps with the cpu and the torch backends from the same start (the ratio)
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
    "lund-29": ROOT / "data" / "photos" / "lund",  # bundled: 01-12 at 1024 px, 13-29 at 800 px
    "lund-29-full": ROOT.parent / "shared" / "data" / "photos" / "lund" / "images",
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
             "| set | backend | strategy | steps | size | splats | training-view PSNR | held-out PSNR (initial) | "
             "held-out SSIM | s | s/step | peak memory | load after |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['set']} | {r['backend']} | {r['strategy']} | {r['iterations']} | "
                     f"{r['resolution'][0]}x{r['resolution'][1]} | {r['splats']:,} | {r['psnr_train']} | "
                     f"{r['psnr_test']} ({r['psnr_test_initial']}) | {r['ssim_test']} | {r['seconds']:.0f} | "
                     f"{r['seconds_per_iteration']:.3f} | {r['peak_memory_bytes'] / 2**30:.2f} GiB "
                     f"({r['peak_memory_kind']}) | {r['load_average_after'][0]:.1f} |")
    per = {r["backend"]: r["seconds_per_iteration"] for r in result["rows"] if r.get("role") == "ratio"}
    if "cpu" in per and "torch" in per:
        lines += ["", f"Same start, same 30 steps: the cpu backend took {per['cpu']:.3f} s a step, the torch backend "
                      f"{per['torch']:.3f} s: {per['torch'] / per['cpu']:.1f}x faster (whole step: render, loss, "
                      "backward, Adam, densification)."]
    if result.get("contact_sheet"):
        lines += ["", f"Held-out views of the preset run, photo | render: `{result['contact_sheet']}`."]
    (RESULTS / f"train-{kind}.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    import torch

    from splatflow.stages.train import train

    gpu = torch.cuda.is_available()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if gpu else "cpu")
    ap.add_argument("--set", default=None, help="lund-12 or lund-29 (default: lund-29 on a GPU when present)")
    ap.add_argument("--iterations", type=int, default=None, help="default: 7000 on a GPU, the cpu preset's on CPU")
    ap.add_argument("--resolution", type=int, default=None, help="default: 1600 on a GPU, the cpu preset's on CPU")
    ap.add_argument("--strategies", nargs="+", default=None, help="default: default and mcmc on a GPU, default on CPU")
    ap.add_argument("--max-splats", type=int, default=None)
    ap.add_argument("--sfm-side", type=int, default=1600 if gpu else 800, help="max image side for SfM")
    args = ap.parse_args(argv)
    from splatflow.presets import PRESETS

    cpu_preset = PRESETS["cpu"]
    on_cpu = args.device == "cpu"
    iterations = args.iterations or (cpu_preset.iterations if on_cpu else 7000)
    resolution = args.resolution or (cpu_preset.resolution if on_cpu else 1600)
    max_splats = args.max_splats or (cpu_preset.max_splats or 1_000_000 if on_cpu else 1_000_000)
    strategies = args.strategies or (["default"] if on_cpu else ["default", "mcmc"])
    background = cpu_preset.background_points if on_cpu else 0
    name = args.set or ("lund-29-full" if gpu and SETS["lund-29-full"].exists() else "lund-29")
    sfm_dir = sfm_folder(name, args.sfm_side)
    rows: list[dict[str, Any]] = []
    kind = "cpu" if on_cpu else "gpu-" + re.sub(r"[^a-z0-9]+", "-", (machine()["gpu"] or "cuda").lower())
    info = machine()
    result: dict[str, Any] = {"benchmark": "train", "machine": info, "args": vars(args), "rows": rows}

    def run(strategy: str, steps: int, backend: str, role: str) -> dict[str, Any]:
        out = WORK / f"out-{name}-{args.device}-{backend}-{strategy}-{resolution}-{steps}"
        rep = train(sfm_dir, out, iterations=steps, max_splats=max_splats, strategy=strategy,
                    device=args.device, resolution=resolution, resume=False, backend=backend,
                    checkpoint_every=max(1000, steps), background_points=background)
        rows.append({"set": name, "role": role, **{k: rep[k] for k in (
            "strategy", "iterations", "resolution", "splats", "psnr_test", "ssim_test", "psnr_test_initial",
            "psnr_train", "seconds", "seconds_per_iteration", "peak_memory_bytes", "peak_memory_kind", "device",
            "backend", "images_train", "images_test", "densification")},
            "load_average_after": os.getloadavg()})
        print(json.dumps(rows[-1]), flush=True)
        write_results(kind, result)
        return {"out": out, **rep}

    for strategy in strategies:
        rep = run(strategy, iterations, "auto", "result")
        if on_cpu and strategy == "default":
            sheet = RESULTS / "train-cpu-contact-sheet.jpg"
            from PIL import Image

            with Image.open(rep["out"] / rep["contact_sheet"]) as img:
                img.convert("RGB").save(sheet, quality=85)
            result["contact_sheet"] = str(sheet.relative_to(ROOT))
    if on_cpu:  # the same start, a few steps with each backend: the speed-up of a whole training step
        for backend in ("cpu", "torch"):
            run("default", 30, backend, "ratio")
    write_results(kind, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
