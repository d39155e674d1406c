"""Benchmark of the ingest + sfm stages: SfM time per step and registered fraction for the sample photo sets at
several image sizes, on this machine's CPU.

    python bench/sfm.py                      # lund-12 (bundled) and lund-29 (../shared/data) at 800 and 1600 px
    python bench/sfm.py --sets lund-12 --sizes 800

Writes bench/results/sfm-cpu.json and bench/results/sfm-cpu.md (machine, versions, one row per run).
The lund photos are 1024x768, so "1600 px" runs them at their native size.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from machine import machine_info

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("splatflow", "pycolmap", "numpy", "pillow", "pillow-heif", "av")
SETS = {
    "lund-12": ROOT / "data" / "photos" / "lund",
    "lund-29": ROOT.parent / "shared" / "data" / "photos" / "lund" / "images",
}


def run(name: str, photos: Path, size: int, max_features: int, work: Path) -> dict[str, Any]:
    from splatflow.errors import SfmError
    from splatflow.stages.ingest import ingest
    from splatflow.stages.sfm import sfm

    base = work / f"{name}-{size}"
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    t = time.monotonic()
    ing = ingest(str(photos), base / "ingest", max_side=size)
    ingest_s = time.monotonic() - t
    try:
        rep = sfm(base / "ingest", base / "sfm", max_side=size, max_features=max_features)
        failed = None
    except SfmError as exc:
        rep, failed = exc.report, exc.message
    row = {
        "set": name, "max_side": size, "max_features": max_features, "images": len(ing["kept"]),
        "image_size": next(iter(ing["images"].values()))["width"], "ingest_s": round(ingest_s, 2),
        "registered": rep.get("registered"), "total": rep.get("total"),
        "registered_fraction": round(rep["registered"] / rep["total"], 4) if rep.get("total") else None,
        "points": rep.get("points"), "mean_reprojection_error": rep.get("mean_reprojection_error"),
        "mean_track_length": rep.get("mean_track_length"), "matcher": rep.get("matcher"),
        "attempts": rep.get("attempts"), "timings": rep.get("timings"), "failed": failed,
    }
    shutil.rmtree(base, ignore_errors=True)
    return row


def markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [
        "# SfM benchmark (ingest + sfm, pycolmap on CPU)", "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {(m['memory_bytes'] or 0) / 2**30:.0f} GiB; {m['platform']}; "
        f"load average at start {', '.join(f'{x:.1f}' for x in m['load_average_at_start'])} (a shared machine: "
        "times are upper bounds).",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()) + f"; Python {m['python']}.",
        f"Date: {result['date']}. Command: `{result['command']}`.", "",
        "| set | max side | features | image width | registered | points | reproj. err (px) | track length "
        "| extract s | match s | map s (all passes) | undistort s | SfM total s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["runs"]:
        t = r["timings"] or {}
        mapping = sum(v for k, v in t.items() if k.startswith("map") or k.endswith("fallback"))
        lines.append(
            f"| {r['set']} | {r['max_side']} | {r['max_features']} | {r['image_size']} | "
            f"{r['registered']}/{r['total']} ({r['registered_fraction']:.0%}) | {r['points']} | "
            f"{r['mean_reprojection_error']} | {r['mean_track_length']} | {t.get('extract')} | {t.get('match')} | "
            f"{mapping:.1f} | {t.get('undistort')} | {t.get('total')} |")
    lines += ["", "Mapping passes per run (the fallback ladder): "
              + "; ".join(f"{r['set']}@{r['max_side']}: "
                          + ", ".join(f"{a['step']} {a['registered']}" for a in r["attempts"] or [])
                          for r in result["runs"]), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", default="lund-12,lund-29", help="comma-separated: " + ", ".join(SETS))
    parser.add_argument("--sizes", default="800,1600", help="comma-separated max image sides")
    parser.add_argument("--max-features", type=int, default=8192, help="SIFT features per image (default 8192)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results", help="results folder")
    parser.add_argument("--work", type=Path, default=ROOT / "bench" / "work" / "sfm", help="scratch folder")
    args = parser.parse_args(argv)
    result: dict[str, Any] = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                              "command": " ".join(["python", "bench/sfm.py", *(argv or sys.argv[1:])]),
                              "machine": machine_info(PACKAGES), "runs": []}
    for name in args.sets.split(","):
        photos = SETS[name]
        if not photos.is_dir():
            print(f"skipping {name}: {photos} is not present", file=sys.stderr)
            continue
        for size in (int(s) for s in args.sizes.split(",")):
            row = run(name, photos, size, args.max_features, args.work)
            print(json.dumps({k: row[k] for k in ("set", "max_side", "registered", "total", "timings")}), flush=True)
            result["runs"].append(row)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "sfm-cpu.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "sfm-cpu.md").write_text(markdown(result))
    print(f"wrote {args.out / 'sfm-cpu.json'} and {args.out / 'sfm-cpu.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
