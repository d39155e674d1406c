"""Benchmark of the local pipeline run (`splatflow run`): wall time of the whole kfp.local run on the bundled
29-photo sample with the `splatflow run` defaults (the cpu preset), each stage's own seconds (from its report),
what kfp.local adds around them (one Python process per task, executor input/output, artifact copies), the CPU
time of the whole run and the load average (a machine shared with other jobs gives upper bounds).

    python bench/pipeline.py                      # the `splatflow run` defaults (quality cpu)
    python bench/pipeline.py --quality tiny       # the one-minute smoke run
    python bench/pipeline.py --iterations 10      # what the CI test runs

Writes bench/results/pipeline-local.json and bench/results/pipeline-local.md (machine, versions, the run).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
sys.path.insert(0, str(Path(__file__).resolve().parent))


def run(iterations: int, quality: str) -> dict[str, Any]:
    """One local run in a temporary folder; seconds overall, per stage, and the kfp.local overhead."""
    from splatflow_kfp.pipelines.local import LOCAL_DEFAULTS, run_local

    settings = {**LOCAL_DEFAULTS, "quality": quality, "iterations": iterations}
    os.environ.pop("SPLATFLOW_WEBHOOK_URL", None)  # no notification channel: notify runs and sends nothing
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        start, load0 = time.perf_counter(), os.getloadavg()
        result = run_local(ROOT / "data" / "photos" / "lund", Path(tmp) / "run", **settings)
        wall = time.perf_counter() - start
        import resource

        children = resource.getrusage(resource.RUSAGE_CHILDREN)  # the task processes
        cpu_seconds = round(children.ru_utime + children.ru_stime, 1)
        stages: dict[str, float] = {}
        for name in ("ingest", "sfm", "train", "compress"):  # each stage's own time, from its published report
            rep = json.loads(Path(result.urls[f"reports/{name}.json"].removeprefix("file://")).read_text())
            stages[name] = round(float(rep.get("seconds") or rep.get("timings", {}).get("total", 0.0)), 1)
        stages["publish"] = round(float(result.publish.get("seconds", 0.0)), 1)
    summary = result.publish.get("summary", {})
    return {"settings": settings, "wall_seconds": round(wall, 1), "stage_seconds": stages,
            "task_cpu_seconds": cpu_seconds, "load_average_start": load0, "load_average_end": os.getloadavg(),
            "kfp_local_overhead_seconds": round(wall - sum(stages.values()), 1),
            "splats": summary.get("splats"), "bytes": summary.get("bytes"), "psnr": summary.get("psnr"),
            "psnr_source": summary.get("psnr_source")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=0, help="training steps (0: the preset's)")
    parser.add_argument("--quality", default="cpu")
    args = parser.parse_args()
    from machine import machine_info  # bench/machine.py: CPU, cores, memory, load, platform, versions

    info = machine_info(("splatflow", "kfp", "kfp-kubernetes", "torch", "pycolmap"))
    result = {"machine": info, "run": run(args.iterations, args.quality)}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "pipeline-local.json").write_text(json.dumps(result, indent=2) + "\n")
    r = result["run"]
    lines = ["# Local pipeline run (kfp.local SubprocessRunner, CPU)", "",
             f"Machine: {json.dumps(info)} (a busy shared machine runs slower: see load_average_at_start)", "",
             f"Settings: {json.dumps(r['settings'])}", "",
             "| stage | seconds |", "|---|---|",
             *[f"| {k} | {v} |" for k, v in r["stage_seconds"].items()],
             f"| kfp.local overhead (6 task processes, notify, I/O) | {r['kfp_local_overhead_seconds']} |",
             f"| **wall** | **{r['wall_seconds']}** |", "",
             f"CPU time of the task processes: {r['task_cpu_seconds']} s; load average at the start "
             f"{[round(x, 1) for x in r['load_average_start']]}, at the end "
             f"{[round(x, 1) for x in r['load_average_end']]} "
             "(2 cores: a load above 2 means other jobs shared them).", "",
             f"Result: {r['splats']} splats, {r['bytes']} bytes published, PSNR {r['psnr']} ({r['psnr_source']})."]
    (RESULTS / "pipeline-local.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
