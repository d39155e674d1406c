"""The `compress` stage: a 3DGS PLY -> a web-ready SOG (v2 .sog bundle or folder, or SOGS v1), with a report."""

from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path
from typing import Any

from splatflow.errors import DependencyMissing, PlyError, SogError
from splatflow.evaluate import attribute_errors, render_fidelity
from splatflow.fsutil import atomic_path, check_output
from splatflow.io.ply import read_ply
from splatflow.sog import meta as sogmeta
from splatflow.sog.bundle import write_files
from splatflow.sog.decode import decode_files
from splatflow.sog.encode import FORMATS, SORTS, encode_cloud

log = logging.getLogger(__name__)
_VERTEX = re.compile(rb"^element\s+vertex\s+(\d+)\s*$", re.M)


def ply_vertex_count(path: Path) -> int:
    """The splat count declared in a PLY header (read without loading the data); PlyError if there is none."""
    if not path.is_file():
        raise PlyError(f"{path}: no such file", hint="check the path")
    with open(path, "rb") as fh:
        head = fh.read(64 * 1024)
    end = head.find(b"end_header")
    m = _VERTEX.search(head[: end if end >= 0 else len(head)])
    if not head.startswith(b"ply") or m is None:
        raise PlyError(f"{path} is not a 3DGS PLY (no 'element vertex' in its header)",
                       hint="give a 3DGS .ply file as written by a 3DGS trainer")
    return int(m.group(1))


def report_path(out: Path) -> Path:
    """Where the report of ``out`` goes: ``<out>.report.json`` beside it (never inside the SOG set)."""
    return out.with_name(out.name + ".report.json")


def compress(ply: Path, out: Path, *, format: str = "v2", sort: str = "morton", sh_bands: int | None = None,
             device: str = "auto", overwrite: bool = False, drop_invalid: bool = False,
             webp_method: int | None = None, webp_quality: int | None = None, seed: int = 0,
             fidelity_views: int = 0) -> dict[str, Any]:
    """Compress ``ply`` to ``out`` (``name.sog`` = one ZIP, anything else = a folder of meta.json + WebP).

    The report's ``fidelity`` compares renders of the decoded SOG with renders of the source PLY over an orbit
    of ``fidelity_views`` 256-pixel views (PSNR, SSIM), on the codec's device; with 0 views (the default: it
    costs more than the encoding itself on a CPU) it is ``None``. The pipeline's compress task asks for 4.

    ``sort`` defaults to ``morton``: on playbot_lod2 (125k, SH2) PLAS measured a 2.4% larger file (the high
    position bytes compress far better in Z-order) at 75x the sort time; ``plas`` stays available.
    Checks the arguments, the output path and the texture-size limit before any work; writes atomically;
    returns (and writes beside ``out``) the report: splats, bytes, bytes_per_splat, ratio, seconds, errors,
    fidelity.
    """
    start = time.perf_counter()
    ply, out = Path(ply), Path(out)
    if format not in FORMATS:
        raise SogError(f"unknown format {format!r}", hint=f"use one of {', '.join(FORMATS)}")
    if sort not in SORTS:
        raise SogError(f"unknown sort {sort!r}", hint=f"use one of {', '.join(SORTS)}")
    if sh_bands is not None and not 0 <= sh_bands <= 3:
        raise SogError(f"--sh-bands {sh_bands} is out of range", hint="use 0, 1, 2 or 3")
    check_output(out, overwrite=overwrite)
    if out.resolve() == ply.resolve():
        raise SogError(f"output {out} is the input file", hint="choose another output path")
    declared = ply_vertex_count(ply)
    if declared == 0:
        raise PlyError(f"{ply} contains zero splats", hint="export a trained scene with at least one splat")
    sogmeta.texture_size(declared, format)          # refuse oversized scenes before reading them
    cloud = read_ply(ply, on_invalid="drop" if drop_invalid else "error")
    enc = encode_cloud(cloud, format=format, sort=sort, sh_bands=sh_bands, device=device,
                       **({"webp_method": webp_method} if webp_method is not None else {}),
                       **({"webp_quality": webp_quality} if webp_quality is not None else {}), seed=seed)
    meta = json.loads(enc.files["meta.json"])
    decoded, _ = decode_files(meta, {k: v for k, v in enc.files.items() if k != "meta.json"})
    source = cloud.subset(enc.order).with_sh_degree(decoded.sh_degree)
    errors = attribute_errors(source, decoded)
    fidelity = None
    if fidelity_views > 0:
        t_fid = time.perf_counter()
        try:
            fidelity = render_fidelity(source, decoded, views=fidelity_views, device=enc.device)
            fidelity["seconds"] = round(time.perf_counter() - t_fid, 3)
        except DependencyMissing as exc:
            log.warning("render fidelity skipped: %s", exc)
    write_files(out, enc.files)
    nbytes = out.stat().st_size if out.is_file() else sum(f.stat().st_size for f in out.iterdir())
    seconds = time.perf_counter() - start
    report: dict[str, Any] = {
        "input": str(ply), "output": str(out), "format": format, "sort": sort, "device": enc.device,
        "splats": len(cloud), "dropped_invalid": declared - len(cloud), "sh_bands": decoded.sh_degree,
        "bytes": nbytes, "bytes_per_splat": round(nbytes / len(cloud), 4),
        "ratio": round(ply.stat().st_size / nbytes, 3), "seconds": round(seconds, 3),
        "codec_seconds": round(seconds - (fidelity or {}).get("seconds", 0.0), 3), "timings": enc.timings,
        "errors": errors, "fidelity": fidelity,
        "files": {k: len(v) for k, v in enc.files.items()},
    }
    with atomic_path(report_path(out)) as tmp:
        tmp.write_text(json.dumps(report, indent=2))
    log.info("compressed %s -> %s: %d splats, %d bytes in %.1f s", ply, out, len(cloud), nbytes, seconds)
    return report
