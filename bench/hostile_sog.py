"""Peak memory of `splatflow info` and `splatflow decompress` on hostile SOG files (decompression bombs): the
worst bombs the bounded reader still decodes and the ones it refuses, each in a fresh process (its own peak RSS).

    python bench/hostile_sog.py

Writes bench/results/hostile-sog.json and .md. The target (issue 15): a bomb is refused before decoding or read
within 1.5 GB. The bombs are real files: constant lossless WebPs, whose bytes are the same at any size
(tests/unit/test_sog_hostile.py builds them the same way).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
sys.path.insert(0, str(ROOT / "tests" / "unit"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import machine_info  # noqa: E402
from test_sog_hostile import V2_FILES, constant_webp, v2_meta  # noqa: E402

LIMIT = 1.5e9
_RUN = ("import resource, sys; from splatflow.cli import main; code = main(sys.argv[1:]); "
        "print('PEAK', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, 'CODE', code)")


def _bomb(path: Path, count: int, side: int, sh: bool) -> Path:
    meta = v2_meta(count, sh=sh)
    if sh:
        meta["shN"]["count"] = 65536
    images = {name: constant_webp(side, side) for name in V2_FILES}
    if sh:
        images |= {"shN_labels.webp": constant_webp(side, side), "shN_centroids.webp": constant_webp(960, 1024)}
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("meta.json", json.dumps(meta))
        for name, data in images.items():
            zf.writestr(name, data)
    return path


def _measure(args: list[str]) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-c", _RUN, *args], capture_output=True, text=True, timeout=600,
                          cwd=ROOT, env={"PYTHONPATH": f"{ROOT / 'src'}:{ROOT}", "PATH": "/usr/bin:/bin"})
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("PEAK"))
    _, peak, _, code = line.split()
    return {"peak_bytes": int(peak), "exit": int(code), "error": proc.stderr.strip().splitlines()[0][:160]
            if int(code) else None}


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        cases = [
            ("5 x 12000x12000 WebP, 4 splats (the issue's bomb)", 4, 12000, False),
            ("524,288 splats SH3 over empty images (largest decoded bomb)", 524_288, 728, True),
            ("2,000,000 splats SH3 over empty images", 2_000_000, 1420, True),
            ("268 M splats declared, 16383x16383 images", 16383 * 16383, 16383, False),
        ]
        for name, count, side, sh in cases:
            bomb = _bomb(work / "bomb.sog", count, side, sh)
            for command in ("info", "decompress"):
                args = [command, str(bomb)] + ([str(work / "out.ply"), "--overwrite"] if command == "decompress"
                                                 else [])
                result = _measure(args)
                rows.append({"case": name, "file_bytes": bomb.stat().st_size, "command": command, **result})
                print(rows[-1])
    report = {"machine": machine_info(["numpy", "Pillow"]), "limit_bytes": LIMIT, "rows": rows,
              "all_within_limit": all(r["peak_bytes"] <= LIMIT for r in rows)}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "hostile-sog.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = ["# Hostile SOG files: peak memory (bench/hostile_sog.py)", "",
             f"Machine: {report['machine'].get('cpu')}, {report['machine'].get('cores')} cores; "
             f"Python {report['machine'].get('python')}. Target: refused before decoding or read within 1.5 GB.",
             "", "| bomb | file bytes | command | exit | peak RSS | outcome |", "|---|---|---|---|---|---|"]
    for r in rows:
        outcome = "decoded" if r["exit"] == 0 else f"refused: {r['error']}"
        lines.append(f"| {r['case']} | {r['file_bytes']:,} | {r['command']} | {r['exit']} | "
                     f"{r['peak_bytes'] / 1e6:,.0f} MB | {outcome} |")
    (RESULTS / "hostile-sog.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
