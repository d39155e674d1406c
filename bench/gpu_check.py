"""`make gpu-check`: every GPU acceptance check of the project in one command (about 5-8 minutes on one H100/H200).

Checks (each recorded even when another fails; the exit code is 1 when any check fails or misses its bar):
1. render  -- playbot_lod2 from 4 orbit views at 256 px: gsplat (CUDA) vs the torch backend (CUDA) vs the
              compiled cpu backend; PSNR between each pair (bars: gsplat/torch >= 40 dB, cpu/torch >= 60 dB).
2. train   -- lund (29 photos when ../shared has them, else the 12 bundled) at full size (1024 px), 7,000 gsplat
              steps: time, peak GPU memory, held-out and training-view PSNR/SSIM, splats, the contact sheet.
3. codec   -- the synthetic 1M-splat SH-3 scene compressed on CUDA: seconds, bytes, peak GPU memory.
4. agree   -- playbot_lod2 compressed on CPU and on CUDA: size ratio, render PSNR of each decoded SOG against
              the source and of the two against each other (bar: CUDA within 0.5 dB of CPU, sizes within 2 %).

    python bench/gpu_check.py                 # on a CUDA machine -> bench/results/gpu-check-gpu.json and .md
    python bench/gpu_check.py --dry-run       # on CPU, the same code at toy size -> bench/work/gpu-check/

The dry run (CI runs it) swaps CUDA for the CPU, gsplat for the torch backend, lund for a synthetic SfM scene
and the 1M scene for 3,000 splats, so a mistake in this script shows up before device time is spent on it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "bench" / "results"
sys.path.insert(0, str(Path(__file__).resolve().parent))


def _splat_file(name: str) -> Path:
    for base in (SHARED / "splats", ROOT / "data" / "splats"):
        if (base / name).exists():
            return base / name
    raise FileNotFoundError(f"{name} is in neither ../shared/data/splats nor data/splats")


def _psnr(a: Any, b: Any) -> float:
    from splatflow.metrics import finite_db, psnr

    return finite_db(psnr(a, b))


def check_render(cfg: dict[str, Any]) -> dict[str, Any]:
    """PSNR between the backends' renders of the same views."""
    import torch

    from splatflow.cameras import orbit_cameras
    from splatflow.io.ply import read_ply
    from splatflow.render import cloud_tensors, render_cloud

    cloud = read_ply(_splat_file(cfg["render_file"]))
    cams = orbit_cameras(cloud, cfg["views"], cfg["size"], cfg["size"])
    dev = cfg["device"]
    t_dev, t_cpu = cloud_tensors(cloud, dev), cloud_tensors(cloud, "cpu")
    rows, seconds = [], {}
    for cam in cams:
        imgs = {}
        for name, backend, tensors, device in ((cfg["fast_backend"], cfg["fast_backend"], t_dev, dev),
                                               ("torch", "torch", t_dev, dev), ("cpu", "cpu", t_cpu, "cpu")):
            start = time.perf_counter()
            imgs[name] = render_cloud(cloud, cam, backend=backend, device=device, tensors=tensors)
            if device == "cuda":
                torch.cuda.synchronize()
            seconds.setdefault(name, []).append(time.perf_counter() - start)
        fast = cfg["fast_backend"]
        rows.append({"view": cam.name, f"{fast}_vs_torch_db": _psnr(imgs[fast], imgs["torch"]),
                     "cpu_vs_torch_db": _psnr(imgs["cpu"], imgs["torch"]),
                     f"{fast}_vs_cpu_db": _psnr(imgs[fast], imgs["cpu"]), "coverage": float(imgs["torch"].mean())})
    fast = cfg["fast_backend"]
    worst_fast = min(r[f"{fast}_vs_torch_db"] for r in rows)
    worst_cpu = min(r["cpu_vs_torch_db"] for r in rows)
    return {"file": cfg["render_file"], "splats": len(cloud), "size": cfg["size"], "views": rows,
            "seconds_per_view": {k: round(sum(v) / len(v), 4) for k, v in seconds.items()},
            "ok": worst_fast >= 40.0 and worst_cpu >= 60.0,
            "bars": {f"{fast}_vs_torch_db": ">= 40", "cpu_vs_torch_db": ">= 60"}}


def _sfm_input(cfg: dict[str, Any], work: Path) -> tuple[Path, str]:
    if cfg["dry_run"]:
        from splatflow.training.synthetic import make_synthetic_sfm

        out = work / "synthetic-sfm"
        if not out.exists():
            make_synthetic_sfm(out, n_splats=300, n_points=150, n_cameras=9, size=48, seed=1)
        return out, "synthetic (9 views, 48 px)"
    from splatflow.stages.sfm import sfm

    lund29 = SHARED / "photos" / "lund" / "images"
    photos, name = (lund29, "lund-29") if lund29.exists() else (ROOT / "data" / "photos" / "lund", "lund-12")
    out = work / f"sfm-{name}-{cfg['train_resolution']}"
    if not (out / "sfm-report.json").exists():
        sfm(photos, out, max_side=cfg["train_resolution"], overwrite=True)
    return out, name


def check_train(cfg: dict[str, Any], work: Path) -> dict[str, Any]:
    """gsplat training at full size: time, memory, PSNR/SSIM, splats."""
    from splatflow.stages.train import train

    start = time.perf_counter()
    sfm_dir, name = _sfm_input(cfg, work)
    sfm_seconds = time.perf_counter() - start
    out = work / "train"
    if out.exists():
        shutil.rmtree(out)
    report = train(sfm_dir, out, iterations=cfg["train_steps"], resolution=cfg["train_resolution"],
                   device=cfg["device"], max_splats=cfg["max_splats"], resume=False, keep_checkpoints=False)
    sheet = RESULTS / f"gpu-check-contact-sheet{cfg['suffix']}.png" if not cfg["dry_run"] else work / "sheet.png"
    shutil.copyfile(out / report["contact_sheet"], sheet)
    keys = ("iterations", "splats", "psnr_test", "ssim_test", "psnr_train", "ssim_train", "psnr_test_initial",
            "seconds", "seconds_per_iteration", "peak_memory_bytes", "peak_memory_kind", "backend", "strategy",
            "resolution", "densification")
    return {"set": name, "sfm_seconds": round(sfm_seconds, 1), **{k: report.get(k) for k in keys},
            "contact_sheet": str(sheet.relative_to(ROOT) if sheet.is_relative_to(ROOT) else sheet),
            "ok": report["psnr_train"] is not None and report["psnr_train"] > report["psnr_test_initial"]}


def _synthetic(cfg: dict[str, Any], work: Path) -> Path:
    from make_synthetic import synthetic_cloud  # bench/make_synthetic.py

    from splatflow.io.ply import write_ply

    path = work / f"synthetic-{cfg['codec_splats']}-sh3.ply"
    if not path.exists():
        write_ply(synthetic_cloud(cfg["codec_splats"], 3, seed=0), path)
    return path


def check_codec(cfg: dict[str, Any], work: Path) -> dict[str, Any]:
    """The codec on the accelerator for the large SH-3 scene."""
    import torch

    from splatflow.stages.compress import compress

    ply = _synthetic(cfg, work)
    out = work / "codec.sog"
    if cfg["device"] == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    report = compress(ply, out, device=cfg["device"], overwrite=True)
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() if cfg["device"] == "cuda" else None
    return {"splats": cfg["codec_splats"], "device": cfg["device"], "seconds": round(seconds, 2),
            "bytes": out.stat().st_size, "peak_gpu_memory_bytes": peak,
            "report_seconds": report.get("seconds"), "ok": out.stat().st_size > 0}


def check_agreement(cfg: dict[str, Any], work: Path) -> dict[str, Any]:
    """CPU and accelerator encodings of the same file: size and render fidelity agree."""
    from splatflow.cameras import orbit_cameras
    from splatflow.io.ply import read_ply
    from splatflow.render import render_cloud
    from splatflow.sog.decode import read_sog
    from splatflow.stages.compress import compress

    src_path = _splat_file(cfg["agree_file"])
    src = read_ply(src_path)
    cams = orbit_cameras(src, 4, 128, 128)
    out: dict[str, Any] = {"file": cfg["agree_file"], "splats": len(src)}
    decoded = {}
    for key, dev in (("cpu", "cpu"), ("accel", cfg["device"])):  # the dry run compares the CPU with itself
        path = work / f"agree-{key}.sog"
        compress(src_path, path, device=dev, overwrite=True)
        decoded[key] = read_sog(path)[0]
        out[f"{key}_bytes"] = path.stat().st_size
        out[f"{key}_psnr_db"] = round(sum(_psnr(render_cloud(decoded[key], c, backend="cpu"),
                                                render_cloud(src, c, backend="cpu")) for c in cams) / len(cams), 3)
    out["accel_vs_cpu_render_db"] = round(sum(_psnr(render_cloud(decoded["accel"], c, backend="cpu"),
                                                    render_cloud(decoded["cpu"], c, backend="cpu"))
                                              for c in cams) / len(cams), 3)
    out["size_ratio"] = round(out["accel_bytes"] / out["cpu_bytes"], 4)
    out["ok"] = abs(out["size_ratio"] - 1) <= 0.02 and out["accel_psnr_db"] >= out["cpu_psnr_db"] - 0.5
    return out


CHECKS: dict[str, Callable[..., dict[str, Any]]] = {
    "render": lambda cfg, work: check_render(cfg), "train": check_train, "codec": check_codec,
    "agree": check_agreement,
}


def config(dry_run: bool) -> dict[str, Any]:
    """Sizes of every check: the real ones, or toy ones on the CPU for the dry run."""
    if dry_run:
        return {"dry_run": True, "device": "cpu", "fast_backend": "torch", "render_file": "fruit_drops_minimal.ply",
                "views": 2, "size": 64, "train_steps": 30, "train_resolution": 48, "max_splats": 2000,
                "codec_splats": 3000, "agree_file": "fruit_drops_minimal.ply", "suffix": "-dryrun"}
    return {"dry_run": False, "device": "cuda", "fast_backend": "gsplat", "render_file": "playbot_lod2.ply",
            "views": 4, "size": 256, "train_steps": 7000, "train_resolution": 1024, "max_splats": 1_000_000,
            "codec_splats": 1_000_000, "agree_file": "playbot_lod2.ply", "suffix": "-gpu"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    ap.add_argument("--dry-run", action="store_true", help="CPU, toy sizes (what CI runs)")
    ap.add_argument("--only", nargs="*", choices=list(CHECKS), default=list(CHECKS), help="run only these checks")
    ap.add_argument("--out", type=Path, default=None, help="results folder (default: bench/results, or "
                                                           "bench/work/gpu-check for the dry run)")
    args = ap.parse_args(argv)
    import torch

    if not args.dry_run and not torch.cuda.is_available():
        print("error: gpu-check needs a CUDA GPU (none is visible)\nhint: run it on a GPU machine, or pass "
              "--dry-run (make gpu-check DRY_RUN=1) to try the same code on the CPU at toy size", file=sys.stderr)
        return 3
    from machine import machine_info  # bench/machine.py

    cfg = config(args.dry_run)
    work = ROOT / "bench" / "work" / "gpu-check"
    work.mkdir(parents=True, exist_ok=True)
    out_dir = args.out or (work if args.dry_run else RESULTS)
    out_dir.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"machine": machine_info(("splatflow", "torch", "gsplat", "pycolmap", "numpy")),
                              "dry_run": args.dry_run, "config": cfg, "checks": {}}
    total = time.perf_counter()
    for name in args.only:
        start = time.perf_counter()
        print(f"==> {name}", flush=True)
        try:
            row = CHECKS[name](cfg, work)
        except Exception as exc:  # record it and go on: the other checks still tell something
            row = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-4000:]}
        row["check_seconds"] = round(time.perf_counter() - start, 1)
        result["checks"][name] = row
        print(json.dumps({k: v for k, v in row.items() if k != "traceback"}, default=str), flush=True)
    result["seconds"] = round(time.perf_counter() - total, 1)
    result["ok"] = all(r["ok"] for r in result["checks"].values())
    stem = f"gpu-check{cfg['suffix']}"
    (out_dir / f"{stem}.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    lines = [f"# GPU check ({'dry run on CPU' if args.dry_run else 'CUDA'})", "",
             f"Machine: {result['machine'].get('cpu')}, GPU {result['machine'].get('gpu')}; "
             f"{result['seconds']} s in all; all passed: {result['ok']}.", ""]
    for name, row in result["checks"].items():
        lines.append(f"## {name} ({'ok' if row['ok'] else 'FAILED'}, {row['check_seconds']} s)")
        lines += [f"- {k}: {v}" for k, v in row.items() if k not in ("ok", "check_seconds", "traceback")]
        lines.append("")
    (out_dir / f"{stem}.md").write_text("\n".join(lines))
    print(f"{'all checks passed' if result['ok'] else 'SOME CHECKS FAILED'}: {out_dir / stem}.json "
          f"({result['seconds']} s)")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
