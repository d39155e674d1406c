"""Benchmark of splatflow.render: time and peak memory per view.

Rows (each measured in a fresh subprocess, so peak RSS belongs to that row alone):
- playbot_lod2.ply (125,000 splats, SH 2) at 256x256 and 512x512, torch backend, forward only, 1 and 2 threads;
- the same at 256x256 with a backward pass (what the CPU training path pays per view);
- a synthetic 1,000,000-splat SH-3 scene (bench/make_synthetic.py) at 512x512: bounded memory;
- on a CUDA machine also the gsplat backend, and the PSNR between the torch and gsplat renders (> 40 dB expected).

    python bench/render.py                 # every row for this machine
    python bench/render.py --views 2       # fewer views per row

Writes bench/results/render-<cpu|cuda>.json and .md (machine, versions, load average: the shared machine's
load changes timings a lot, so it is recorded per row).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
WORK = ROOT / "bench" / "work" / "render"
PLAYBOT = ROOT.parent / "shared" / "data" / "splats" / "playbot_lod2.ply"
SYNTHETIC = ROOT / "bench" / "work" / "codec" / "synthetic_1m_sh3.ply"
TARGET_S = 10.0  # per 256x256 view of playbot_lod2 on the 2-core CPU
sys.path.insert(0, str(Path(__file__).resolve().parent))


def machine() -> dict[str, Any]:
    """The machine description shared by the benchmarks (bench/machine.py) with the render stack's versions."""
    from machine import machine_info

    return machine_info(("splatflow", "torch", "numpy", "torchmetrics", "pytorch-msssim", "gsplat"))


def one(path: str, size: int, views: int, backend: str, device: str, threads: int, backward: bool) -> dict:
    """Render ``views`` orbit views of ``path`` (in this process) and measure them."""
    import torch

    from splatflow.cameras import orbit_cameras
    from splatflow.io.ply import read_ply
    from splatflow.render import cloud_tensors, rasterize

    torch.set_num_threads(threads)
    cloud = read_ply(path)
    cams = orbit_cameras(cloud, views, size, size)
    t = cloud_tensors(cloud, device)
    if backward:
        for k in ("means", "quats", "scales", "opacities", "colors"):
            t[k].requires_grad_(True)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    seconds, coverage = [], []
    for cam in cams:
        vm = torch.tensor(cam.viewmat, device=device)
        K = torch.tensor(cam.K, device=device)
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.set_grad_enabled(backward):
            rgb, alpha = rasterize(t["means"], t["quats"], t["scales"], t["opacities"], t["colors"], vm, K, size,
                                   size, sh_degree=cloud.sh_degree, backend=backend)
            if backward:
                rgb.mean().backward()
        if device == "cuda":
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - t0)
        coverage.append(float(alpha.mean()))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    row = {"file": Path(path).name, "splats": len(cloud), "size": f"{size}x{size}", "backend": backend,
           "device": device, "threads": threads, "pass": "forward+backward" if backward else "forward",
           "views": views, "seconds_per_view": round(sum(seconds) / len(seconds), 3),
           "seconds_max": round(max(seconds), 3), "coverage": round(sum(coverage) / len(coverage), 3),
           "peak_rss_bytes": peak, "rss_before_render_bytes": base_rss,
           "load_average": round(os.getloadavg()[0], 2)}
    if device == "cuda":
        row["peak_cuda_bytes"] = torch.cuda.max_memory_allocated()
    return row


def backend_psnr(path: str, size: int, views: int) -> dict:
    """PSNR between the torch and gsplat backends' renders of the same views (CUDA only)."""
    from splatflow.cameras import orbit_cameras
    from splatflow.io.ply import read_ply
    from splatflow.metrics import psnr
    from splatflow.render import cloud_tensors, render_cloud

    cloud = read_ply(path)
    t = cloud_tensors(cloud, "cuda")
    vals = [psnr(render_cloud(cloud, c, backend="torch", device="cuda", tensors=t),
                 render_cloud(cloud, c, backend="gsplat", device="cuda", tensors=t))
            for c in orbit_cameras(cloud, views, size, size)]
    return {"file": Path(path).name, "size": f"{size}x{size}", "views": views,
            "psnr_torch_vs_gsplat_db": [round(v, 2) for v in vals], "min_db": round(min(vals), 2)}


def _sub(*args: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--one", *args], capture_output=True, text=True,
                         cwd=ROOT, timeout=3600)
    if out.returncode:
        raise RuntimeError(f"bench row {args} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _markdown(report: dict) -> str:
    m = report["machine"]
    lines = [f"# render benchmark ({report['device']})", "",
             f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_bytes'] / 2**30:.0f} GiB"
             + (f", GPU {m['gpu']}" if m.get("gpu") else "") + f"; torch {m['versions']['torch']}, "
             f"gsplat {m['versions'].get('gsplat')}. Orbit views around the dense region (splatflow.cameras). "
             "Peak RSS is the whole process (Python, torch, the cloud); 'load' is the 1-minute load average "
             "when the row finished (a shared machine: a load above the core count slows every row).", "",
             "| file | splats | size | backend | threads | pass | s/view | s max | peak RSS MiB | load |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        lines.append(f"| {r['file']} | {r['splats']:,} | {r['size']} | {r['backend']} ({r['device']}) | "
                     f"{r['threads']} | {r['pass']} | {r['seconds_per_view']} | {r['seconds_max']} | "
                     f"{r['peak_rss_bytes'] / 2**20:.0f} | {r['load_average']} |")
    t = report.get("target")
    if t:
        lines += ["", f"Target: <= {t['seconds']} s per 256x256 view of playbot_lod2 on the CPU; best measured "
                      f"{t['best_seconds']} s ({'met' if t['met'] else 'NOT met'})."]
    if report.get("backend_agreement"):
        a = report["backend_agreement"]
        lines += ["", f"torch vs gsplat backend, {a['file']} {a['size']}: PSNR {a['psnr_torch_vs_gsplat_db']} dB "
                      f"(min {a['min_db']} dB; acceptance > 40 dB)."]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--views", type=int, default=4)
    ap.add_argument("--one", nargs=7, metavar=("PATH", "SIZE", "VIEWS", "BACKEND", "DEVICE", "THREADS", "BACKWARD"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        p, size, views, backend, device, threads, backward = args.one
        print(json.dumps(one(p, int(size), int(views), backend, device, int(threads), backward == "1")))
        return 0

    import torch

    if not PLAYBOT.exists():
        print(f"missing {PLAYBOT} (../shared/data)", file=sys.stderr)
        return 2
    if not SYNTHETIC.exists():
        SYNTHETIC.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, str(ROOT / "bench" / "make_synthetic.py"), str(SYNTHETIC)], check=True)
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    v = str(args.views)
    plan: list[tuple[str, ...]] = []
    if cuda:
        plan += [(str(PLAYBOT), s, v, b, "cuda", "1", "0") for s in ("256", "512") for b in ("torch", "gsplat")]
        plan += [(str(SYNTHETIC), "512", v, b, "cuda", "1", "0") for b in ("torch", "gsplat")]
    else:
        plan += [(str(PLAYBOT), s, v, "torch", "cpu", th, "0") for s in ("256", "512") for th in ("1", "2")]
        plan += [(str(PLAYBOT), "256", v, "torch", "cpu", "1", "1")]
        plan += [(str(SYNTHETIC), "512", "2", "torch", "cpu", "1", "0")]
    rows = []
    for spec in plan:
        rows.append(_sub(*spec))
        print(json.dumps(rows[-1]), flush=True)
    report: dict[str, Any] = {"device": device, "machine": machine(), "rows": rows}
    cpu256 = [r["seconds_per_view"] for r in rows if r["file"] == PLAYBOT.name and r["size"] == "256x256"
              and r["device"] == "cpu" and r["pass"] == "forward"]
    if cpu256:
        report["target"] = {"seconds": TARGET_S, "best_seconds": min(cpu256), "met": min(cpu256) <= TARGET_S}
    if cuda:
        report["backend_agreement"] = backend_psnr(str(PLAYBOT), 256, args.views)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"render-{device}.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / f"render-{device}.md").write_text(_markdown(report))
    print(_markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
