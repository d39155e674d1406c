"""Benchmark of splatflow.render: time and peak memory per view, the compiled cpu backend against the torch one.

Rows (each measured in a fresh subprocess, so peak RSS belongs to that row alone; 2 threads unless noted):
- synthetic SH-3 scenes (bench/make_synthetic.py) of 1k, 10k, 100k and 1M splats at 256x192: forward and
  forward+backward (what a CPU training step pays), cpu and torch backends (torch skipped where it takes minutes),
  the 100k row on 1 thread too; 100k and 1M at 512x512 (peak memory: target <= 2 GB for 1M);
- playbot_lod2.ply (125,000 real splats, SH 2) at 256x256, both backends, forward and forward+backward;
- on a CUDA machine the gsplat and torch backends, and the PSNR between them (> 40 dB expected).
The markdown gives each cpu row its speed-up over the torch row of the same scene, size and pass (same run).

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
sys.path.insert(0, str(Path(__file__).resolve().parent))


def machine() -> dict[str, Any]:
    """The machine description shared by the benchmarks (bench/machine.py) with the render stack's versions."""
    from machine import machine_info

    return machine_info(("splatflow", "torch", "numpy", "pytorch-msssim", "gsplat"))


def _cloud(path: str):  # -> GaussianCloud
    """A PLY path, or ``synthetic:N`` for N synthetic SH-3 splats (made in memory, deterministic)."""
    if path.startswith("synthetic:"):
        from make_synthetic import synthetic_cloud  # bench/make_synthetic.py

        return synthetic_cloud(int(path.split(":", 1)[1]), 3, seed=0)
    from splatflow.io.ply import read_ply

    return read_ply(path)


def one(path: str, size: str, views: int, backend: str, device: str, threads: int, backward: bool) -> dict:
    """Render ``views`` orbit views (WxH ``size``) of ``path`` (in this process) after one warm-up render (the
    kernels' first load), and measure them."""
    import torch

    from splatflow.cameras import orbit_cameras
    from splatflow.render import cloud_tensors, rasterize

    torch.set_num_threads(threads)
    cloud = _cloud(path)
    w, h = (int(x) for x in size.split("x"))
    cams = orbit_cameras(cloud, views + 1, w, h)
    t = cloud_tensors(cloud, device)
    if backward:
        for k in ("means", "quats", "scales", "opacities", "colors"):
            t[k].requires_grad_(True)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    seconds, coverage = [], []
    for i, cam in enumerate(cams):
        vm = torch.tensor(cam.viewmat, device=device)
        K = torch.tensor(cam.K, device=device)
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.set_grad_enabled(backward):
            rgb, alpha = rasterize(t["means"], t["quats"], t["scales"], t["opacities"], t["colors"], vm, K, w,
                                   h, sh_degree=cloud.sh_degree, backend=backend)
            if backward:
                rgb.mean().backward()
        if device == "cuda":
            torch.cuda.synchronize()
        if i == 0:
            continue  # warm-up
        seconds.append(time.perf_counter() - t0)
        coverage.append(float(alpha.detach().mean()))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    row = {"file": Path(path).name if not path.startswith("synthetic:") else "synthetic SH3", "splats": len(cloud),
           "size": size, "backend": backend,
           "device": device, "threads": threads, "pass": "forward+backward" if backward else "forward",
           "views": views, "seconds_per_view": round(sorted(seconds)[len(seconds) // 2], 4),
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
             "| scene | splats | size | backend | threads | pass | s/view (median) | s max | vs torch | peak RSS MiB "
             "| load |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    ref = {(r["file"], r["splats"], r["size"], r["pass"], r["threads"]): r["seconds_per_view"]
           for r in report["rows"] if r["backend"] == "torch"}
    for r in report["rows"]:
        base = ref.get((r["file"], r["splats"], r["size"], r["pass"], r["threads"]))
        ratio = f"{base / r['seconds_per_view']:.0f}x faster" if base and r["backend"] != "torch" else ""
        lines.append(f"| {r['file']} | {r['splats']:,} | {r['size']} | {r['backend']} ({r['device']}) | "
                     f"{r['threads']} | {r['pass']} | {r['seconds_per_view']} | {r['seconds_max']} | {ratio} | "
                     f"{r['peak_rss_bytes'] / 2**20:.0f} | {r['load_average']} |")
    for t in report.get("targets", []):
        lines += ["", f"Target: {t['what']} <= {t['limit']} {t['unit']}; measured {t['value']} "
                      f"({'met' if t['met'] else 'NOT met'})."]
    if report.get("backend_agreement"):
        a = report["backend_agreement"]
        lines += ["", f"torch vs gsplat backend, {a['file']} {a['size']}: PSNR {a['psnr_torch_vs_gsplat_db']} dB "
                      f"(min {a['min_db']} dB; acceptance > 40 dB)."]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--views", type=int, default=3)
    ap.add_argument("--one", nargs=7, metavar=("PATH", "SIZE", "VIEWS", "BACKEND", "DEVICE", "THREADS", "BACKWARD"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        p, size, views, backend, device, threads, backward = args.one
        print(json.dumps(one(p, size, int(views), backend, device, int(threads), backward == "1")))
        return 0

    import torch

    if not PLAYBOT.exists():
        print(f"missing {PLAYBOT} (../shared/data)", file=sys.stderr)
        return 2
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    v = str(args.views)
    plan: list[tuple[str, ...]] = []
    if cuda:
        plan += [(str(PLAYBOT), s, v, b, "cuda", "1", "0") for s in ("256x256", "512x512") for b in ("torch", "gsplat")]
        plan += [("synthetic:1000000", "512x512", v, b, "cuda", "1", "0") for b in ("torch", "gsplat")]
    else:
        for n in (1_000, 10_000, 100_000, 1_000_000):
            for bwd in ("0", "1"):
                plan.append((f"synthetic:{n}", "256x192", v, "cpu", "cpu", "2", bwd))
                if n <= 100_000 or bwd == "0":  # torch fwd+bwd of 1M splats takes minutes a view
                    plan.append((f"synthetic:{n}", "256x192", "2" if n > 10_000 else v, "torch", "cpu", "2", bwd))
        plan += [("synthetic:100000", "256x192", v, b, "cpu", "1", "1") for b in ("cpu", "torch")]
        plan += [(f"synthetic:{n}", "512x512", v, "cpu", "cpu", "2", "1") for n in (100_000, 1_000_000)]
        plan += [(str(PLAYBOT), "256x256", v, b, "cpu", "2", bwd) for b in ("cpu", "torch") for bwd in ("0", "1")]
    rows = []
    for spec in plan:
        rows.append(_sub(*spec))
        print(json.dumps(rows[-1]), flush=True)
    report: dict[str, Any] = {"device": device, "machine": machine(), "rows": rows}
    targets = []
    for r in rows:
        if (r["backend"], r["splats"], r["size"], r["pass"], r["threads"]) == ("cpu", 100_000, "256x192",
                                                                                "forward+backward", 2):
            targets.append({"what": "cpu forward+backward, 100k SH3 splats at 256x192, 2 threads", "unit": "s",
                            "limit": 0.1, "value": r["seconds_per_view"], "met": r["seconds_per_view"] <= 0.1})
        if (r["backend"], r["splats"], r["size"]) == ("cpu", 1_000_000, "512x512"):
            mib = round(r["peak_rss_bytes"] / 2**20)
            targets.append({"what": f"peak memory, cpu {r['pass']}, 1M splats at 512x512", "unit": "MiB",
                            "limit": 2048, "value": mib, "met": mib <= 2048})
    report["targets"] = targets
    if cuda:
        report["backend_agreement"] = backend_psnr(str(PLAYBOT), 256, args.views)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"render-{device}.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / f"render-{device}.md").write_text(_markdown(report))
    print(_markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
