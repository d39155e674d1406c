"""The `compress` stage: a 3DGS PLY -> a web-ready SOG (v2 .sog bundle or folder, or SOGS v1), with a report."""

from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path
from typing import Any

from splatflow.devices import resolve_device
from splatflow.errors import DependencyMissing, InputError, PlyError, SogError
from splatflow.evaluate import attribute_errors, render_fidelity
from splatflow.fsutil import atomic_path, check_output
from splatflow.io.ply import read_ply
from splatflow.options import RUN_OPTIONS
from splatflow.sog import meta as sogmeta
from splatflow.sog import webp
from splatflow.sog.bundle import write_files
from splatflow.sog.decode import decode_files
from splatflow.sog.encode import FORMATS, SORTS, encode_cloud

log = logging.getLogger(__name__)
_VERTEX = re.compile(rb"^element\s+vertex\s+(\d+)\s*$", re.M)


PLY_HEADER_MAX = 1 << 20
"""The longest PLY header read (1 MiB: headers with long comment blocks pass, a file without one is refused)."""


def ply_vertex_count(path: Path) -> int:
    """The splat count declared in a PLY header (read without loading the data); PlyError if there is none."""
    if path.is_dir():
        raise PlyError(f"{path} is a folder, not a PLY file", hint="give the .ply file itself (e.g. DIR/splats.ply)")
    if not path.is_file():
        raise PlyError(f"{path}: no such file", hint="check the path")
    with open(path, "rb") as fh:
        head = fh.read(PLY_HEADER_MAX)
    end = head.find(b"end_header")
    m = _VERTEX.search(head[: end if end >= 0 else len(head)])
    if not head.startswith(b"ply") or m is None:
        raise PlyError(f"{path} is not a 3DGS PLY (no 'element vertex' in its header)",
                       hint="give a 3DGS .ply file as written by a 3DGS trainer")
    if end < 0:
        raise PlyError(f"{path}: the PLY header does not end within {PLY_HEADER_MAX // 1024} KiB",
                       hint="the file is truncated or not a PLY")
    return int(m.group(1))


def report_path(out: Path) -> Path:
    """Where the report of ``out`` goes: ``<out>.report.json`` beside it (never inside the SOG set)."""
    return out.with_name(out.name + ".report.json")


MIN_MAX_BYTES = 1024
"""The smallest byte limit ``--max-bytes`` takes (meta.json alone is a few hundred bytes)."""


def _check_arguments(format: str, sort: str, sh_bands: int | None, target_psnr: float | None,
                     max_bytes: int | None = None) -> float | None:
    """SogError for an unusable format, sort, SH band count, target PSNR or byte limit; the target PSNR (None
    when off)."""
    if max_bytes is not None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < MIN_MAX_BYTES:
            raise SogError(f"--max-bytes {max_bytes} is not a byte count of at least {MIN_MAX_BYTES}",
                           hint="give the largest file size you accept in bytes, e.g. 500000")
        if target_psnr:
            raise SogError("--max-bytes and --target-psnr ask for two different things",
                           hint="give one: a PSNR to keep (smallest file) or a size to fit (best picture)")
        if format != "v2":
            raise SogError("--max-bytes writes SOG v2 only", hint="drop --format v1")
    if format not in FORMATS:
        raise SogError(f"unknown format {format!r}", hint=f"use one of {', '.join(FORMATS)}")
    if sort not in SORTS:
        raise SogError(f"unknown sort {sort!r}", hint=f"use one of {', '.join(SORTS)}")
    if sh_bands is not None and not 0 <= sh_bands <= 3:
        raise SogError(f"--sh-bands {sh_bands} is out of range", hint="use 0, 1, 2 or 3")
    if target_psnr is None or target_psnr <= 0:
        return None
    try:
        RUN_OPTIONS["target_psnr"].check(target_psnr)    # the pipeline's own range, one definition
    except InputError as exc:
        raise SogError(f"--{exc.message.replace('_', '-', 1)}", hint=exc.hint) from None
    if format != "v2":
        raise SogError("--target-psnr writes SOG v2 only", hint="drop --format v1")
    return float(target_psnr)


def _check_paths(ply: Path, out: Path, format: str, overwrite: bool) -> int:
    """The output path free (or ``overwrite``), not the input, and the input a PLY whose declared splat count
    fits the format's textures; returns that count. Reads the header only."""
    check_output(out, overwrite=overwrite)
    if out.resolve() == ply.resolve():
        raise SogError(f"output {out} is the input file", hint="choose another output path")
    declared = ply_vertex_count(ply)
    if declared == 0:
        raise PlyError(f"{ply} contains zero splats", hint="export a trained scene with at least one splat")
    sogmeta.texture_size(declared, format)          # refuse oversized scenes before reading them
    return declared


def compress(ply: Path, out: Path, *, format: str = "v2", sort: str = "morton", sh_bands: int | None = None,
             device: str = "auto", overwrite: bool = False, drop_invalid: bool = False,
             webp_method: int | None = None, webp_quality: int | None = None, seed: int = 0,
             fidelity_views: int = 0, target_psnr: float | None = None,
             max_bytes: int | None = None) -> dict[str, Any]:
    """Compress ``ply`` to ``out`` (``name.sog`` = one ZIP, anything else = a folder of meta.json + WebP).

    The report's ``fidelity`` compares renders of the decoded SOG with renders of the source PLY over an orbit
    of ``fidelity_views`` 256-pixel views (PSNR, SSIM), on the codec's device; with 0 views (the default: it
    costs more than the encoding itself on a CPU) it is ``None``. The pipeline's compress task asks for 4.

    ``sort`` defaults to ``morton``: on playbot_lod2 (125k, SH2) PLAS measured a 2.4% larger file (the high
    position bytes compress far better in Z-order) at 75x the sort time; ``plas`` stays available.

    ``target_psnr`` (dB, v2 only; None or 0: off, the default output) writes the smallest file the codec's
    schedule reaches with a render PSNR of at least that much against the source over the report's orbit views
    (``fidelity_views``, at least 4): least visible splats pruned, smaller SH palette, coarser attributes, the
    largest WebP effort (:mod:`splatflow.sog.reduce`). The report's ``target`` says what was dropped, the
    PSNR reached and the steps tried; ``errors`` then cover the kept splats. ``max_bytes`` (v2 only, not with
    ``target_psnr``) is the other way round: the best render PSNR found in at most that many bytes (SogError,
    before anything is written, when the scene cannot be made that small).
    Checks the arguments, the output path and the texture-size limit before any work; writes atomically;
    returns (and writes beside ``out``) the report: splats, bytes, bytes_per_splat, ratio, seconds, errors,
    fidelity.
    """
    start = time.perf_counter()
    ply, out = Path(ply), Path(out)
    target_psnr = _check_arguments(format, sort, sh_bands, target_psnr, max_bytes)
    device = str(resolve_device(device))           # the one device check (unknown name: exit 2), before any work
    declared = _check_paths(ply, out, format, overwrite)
    cloud = read_ply(ply, on_invalid="drop" if drop_invalid else "error")
    target: dict[str, Any] | None = None
    if target_psnr is not None or max_bytes is not None:
        from splatflow.sog.reduce import best_within_bytes, smallest_for_psnr

        fidelity_views = max(fidelity_views, 4)
        opts: dict[str, Any] = {"views": fidelity_views, "device": device, "sort": sort, "seed": seed,
                                "sh_bands": sh_bands}
        if max_bytes is not None:
            enc, keep, target = best_within_bytes(cloud, max_bytes, bundled=out.suffix.lower() == ".sog", **opts)
        else:
            assert target_psnr is not None
            enc, keep, target = smallest_for_psnr(cloud, target_psnr, **opts)
        kept = cloud.subset(keep)
    else:
        enc = encode_cloud(cloud, format=format, sort=sort, sh_bands=sh_bands, device=device, seed=seed,
                           webp_method=webp.DEFAULT_METHOD if webp_method is None else webp_method,
                           webp_quality=webp.DEFAULT_QUALITY if webp_quality is None else webp_quality)
        kept = cloud
    meta = json.loads(enc.files["meta.json"])
    decoded, _ = decode_files(meta, {k: v for k, v in enc.files.items() if k != "meta.json"})
    source = kept.subset(enc.order).with_sh_degree(decoded.sh_degree)
    errors = attribute_errors(source, decoded)
    fidelity = None
    if fidelity_views > 0:
        t_fid = time.perf_counter()
        try:
            # against the whole source (every splat, every band) when splats or bands were dropped to fit
            fidelity = render_fidelity(source if target is None else cloud, decoded, views=fidelity_views,
                                       device=enc.device)
            fidelity["seconds"] = round(time.perf_counter() - t_fid, 3)
        except DependencyMissing as exc:
            log.warning("render fidelity skipped: %s", exc)
    write_files(out, enc.files)
    nbytes = out.stat().st_size if out.is_file() else sum(f.stat().st_size for f in out.iterdir())
    seconds = time.perf_counter() - start
    report: dict[str, Any] = {
        "input": str(ply), "output": str(out), "format": format, "sort": sort, "device": enc.device,
        "splats": len(decoded), "dropped_invalid": declared - len(cloud), "sh_bands": decoded.sh_degree,
        "bytes": nbytes, "bytes_per_splat": round(nbytes / len(decoded), 4),
        "ratio": round(ply.stat().st_size / nbytes, 3), "seconds": round(seconds, 3),
        "codec_seconds": round(seconds - (fidelity or {}).get("seconds", 0.0), 3), "timings": enc.timings,
        "errors": errors, "fidelity": fidelity, "target": target,
        "files": {k: len(v) for k, v in enc.files.items()},
    }
    with atomic_path(report_path(out)) as tmp:
        tmp.write_text(json.dumps(report, indent=2))
    log.info("compressed %s -> %s: %d splats, %d bytes in %.1f s", ply, out, len(decoded), nbytes, seconds)
    return report
