"""`splatflow evaluate`: how faithful a candidate splat file (a decoded SOG, another PLY) is to its source.

Both clouds are rendered from the same cameras (COLMAP, a ``.npz`` camera file, or an automatic orbit around
the source's dense region) and compared per view with PSNR and SSIM; when the splat counts match, an attribute
error table (position, log-scale, colour in 8-bit levels, opacity, rotation angle, higher SH) is added, with the
candidate's splats matched to the source's by index, by nearest position (the codec reorders splats), or by an
explicit permutation (see :func:`match_splats`).

The source is compared whole: fully opaque splats (opacity +inf) and flat ones (a log-scale of -inf) are valid
splats and stay; only splats that cannot be drawn (NaN, an infinite position...) are left out, and the log says
how many.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

import numpy as np
import torch

from splatflow.cameras import Camera, load_cameras
from splatflow.devices import resolve_device
from splatflow.errors import DependencyMissing, InputError
from splatflow.frames import nearest_frame, unit_quats
from splatflow.fsutil import atomic_path
from splatflow.gaussians import GaussianCloud
from splatflow.info import load_any
from splatflow.metrics import MAX_PSNR, bytes_per_splat, finite_db, psnr, ssim

log = logging.getLogger(__name__)

MIN_COVERAGE = 1e-3
"""A view whose source render has a mean alpha below this sees (almost) nothing and is left out."""


def load_splats(path: str | os.PathLike[str]) -> tuple[GaussianCloud, int, str]:
    """(cloud, bytes on disk, kind) of a ``.ply``, a ``.sog`` bundle, or a SOG ``meta.json`` / folder.

    Invalid splats (NaN, an infinite position, size, rotation or SH value) are dropped since they cannot be
    rendered; the caller sees the count change. Fully opaque and flat splats are valid and kept.
    """
    cloud, nbytes, kind = load_any(path)
    what = cloud.invalid_summary()
    cloud, dropped = cloud.drop_invalid()
    if dropped:
        log.warning("%s: dropped %d invalid splats (%s)", path, dropped, what)
    return cloud, nbytes, kind


# ------------------------------------------------------------------------------------------- attribute errors
def match_splats(source: GaussianCloud, candidate: GaussianCloud, how: str = "auto", *,
                 candidate_kind: str = "ply") -> tuple[np.ndarray, dict]:
    """Index (N,) into ``source`` for each candidate splat, and a description of the matching.

    ``how``: ``"index"`` (same order), ``"nearest"`` (nearest source position, a KD-tree), or ``"auto"``, which
    pairs by index only where the candidate is known to keep the source's order, by construction:

    - a SOG (``candidate_kind`` ``sog-v2``/``sog-v1``) stores splats in its own texel order: nearest, always;
    - a PLY in the source's order (a copy written from it, shifted or quantized: its median splat lies about as
      close to its index partner as to its nearest source splat) is paired by index, except the splats whose
      index partner is far off (more than 4x the median displacement) while another source splat is nearer:
      those parts of the file were reordered and are paired by nearest position;
    - any other PLY (shuffled, sorted): nearest.

    The description says ``method`` (``index``, ``nearest`` or ``mixed``), and for nearest pairs how many were
    paired that way (``nearest_pairs``) and the fraction of distinct source splats (``unique_fraction``).
    """
    n = len(source)
    if len(candidate) != n:
        raise InputError(f"cannot match {len(candidate)} candidate splats to {n} source splats")
    if how not in ("auto", "index", "nearest"):
        raise InputError(f"unknown matching {how!r}", hint="use auto, index or nearest")
    if how == "index":
        return np.arange(n), {"method": "index"}
    try:
        from scipy.spatial import cKDTree
    except ImportError as exc:
        raise DependencyMissing("matching splats by position needs scipy", hint="pip install 'splatflow[render]'"
                                ) from exc
    src_m, cand_m = source.means.astype(np.float64), candidate.means.astype(np.float64)
    dist, idx = cKDTree(src_m).query(cand_m, k=1)
    idx = np.asarray(idx, dtype=np.int64)
    if how == "auto" and not candidate_kind.startswith("sog"):
        lo, hi = source.bounds()
        floor = 1e-6 * (float(np.linalg.norm(hi - lo)) or 1.0)
        disp = np.linalg.norm(cand_m - src_m, axis=1)
        typical = float(np.median(disp))
        if typical <= max(4.0 * float(np.median(dist)), 1e3 * floor):  # the file is (mostly) in source order
            moved = (disp > max(4.0 * typical, floor)) & (dist < disp)
            if not moved.any():
                return np.arange(n), {"method": "index"}
            idx = np.where(moved, idx, np.arange(n))
            return idx, {"method": "mixed", "nearest_pairs": int(moved.sum()),
                         "unique_fraction": round(len(np.unique(idx)) / n, 6)}
    return idx, {"method": "nearest", "nearest_pairs": n, "unique_fraction": round(len(np.unique(idx)) / n, 6)}


def _stats(values: np.ndarray, unit: str) -> dict[str, Any]:
    v = np.abs(values.astype(np.float64).ravel())
    if v.size == 0:
        return {"mean": 0.0, "p99": 0.0, "max": 0.0, "unit": unit}
    return {"mean": float(f"{v.mean():.6g}"), "p99": float(f"{np.quantile(v, 0.99):.6g}"),
            "max": float(f"{v.max():.6g}"), "unit": unit}


def attribute_errors(source: GaussianCloud, candidate: GaussianCloud,
                     index: np.ndarray | None = None) -> dict[str, dict]:
    """Per-attribute absolute errors (mean, p99, max) of ``candidate[i]`` against ``source[index[i]]`` (``index``
    None: the same order).

    Rows: ``position`` (distance, scene units), ``log_scale`` (natural log, per axis), ``color`` (base colour
    0.5 + C0 * sh0 in 8-bit levels, per channel), ``opacity`` (alpha in 8-bit levels), ``rotation`` (angle between
    the frames in degrees, the candidate's taken nearest the source's among the 24 that describe its Gaussian;
    ``log_scale`` follows that frame's axes), ``sh_rest`` (higher-order coefficients over the bands both have, if any).
    """
    src = source if index is None else source.subset(index)
    if len(src) != len(candidate):
        raise InputError(f"cannot compare {len(candidate)} splats with {len(src)}")
    # the candidate's frame nearest the source's (q and -q, and the 24 cube turns with their relabelled scales,
    # are the same Gaussian: an encoder may store any of them, see splatflow.frames)
    qa_t = unit_quats(torch.from_numpy(src.quats.astype(np.float64)))
    qb_t, sb_t = nearest_frame(torch.from_numpy(candidate.quats.astype(np.float64)),
                               torch.from_numpy(candidate.scales.astype(np.float64)), qa_t)
    qa, qb, sb = qa_t.numpy(), qb_t.numpy(), sb_t.numpy()
    angle = 4.0 * np.arctan2(np.linalg.norm(qa - qb, axis=1), np.linalg.norm(qa + qb, axis=1))  # stable near 0
    # a log-scale of -inf (a flat axis) is compared by being flat or not: the candidate is flat where it is -inf
    # too or at least 10 log units below the source's smallest finite one (SOG stores it 20 below); the row
    # covers the finite pairs and counts the flat axes that a side lost or gained (``flat_mismatch``)
    sa = src.scales.astype(np.float64)
    both = np.isfinite(sa) & np.isfinite(sb)
    log_scale = _stats((sb - sa)[both], "log units")
    if not both.all():
        fin_min = float(sa[np.isfinite(sa)].min()) if np.isfinite(sa).any() else 0.0
        flat_a, flat_b = np.isneginf(sa), np.isneginf(sb) | (sb <= fin_min - 10.0)
        log_scale["flat_mismatch"] = int((flat_a != flat_b).sum())
        log_scale["flat_axes"] = int(flat_a.sum())
    rows = {
        "position": _stats(np.linalg.norm(candidate.means - src.means, axis=1), "scene units"),
        "log_scale": log_scale,
        "color": _stats((candidate.colors() - src.colors()) * 255.0, "8-bit levels"),
        "opacity": _stats((candidate.alphas() - src.alphas()) * 255.0, "8-bit levels"),
        "rotation": _stats(np.degrees(angle), "degrees"),
    }
    k = min(src.shN.shape[1], candidate.shN.shape[1])
    if k:
        rows["sh_rest"] = _stats(candidate.shN[:, :k] - src.shN[:, :k], "SH coefficient")
    return rows


# ------------------------------------------------------------------------------------------- evaluation
def compare_renders(source: GaussianCloud, candidate: GaussianCloud, cameras: list[Camera], *,
                    backend: str = "auto", device: str | None = None,
                    background: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> tuple[list[dict[str, Any]], list[str]]:
    """Render both clouds from every camera: (per-view PSNR/SSIM/coverage rows, names of the cameras that see
    nothing of the source). InputError when no camera sees the source."""
    from splatflow.render import cloud_tensors, render_cloud

    dev = resolve_device(device)
    ts, tc = cloud_tensors(source, dev), cloud_tensors(candidate, dev)
    per_view: list[dict[str, Any]] = []
    blind: list[str] = []
    for cam in cameras:
        a = render_cloud(source, cam, backend=backend, device=str(dev), background=background, tensors=ts,
                         with_alpha=True)
        coverage = float(a[..., 3].mean())
        if coverage < MIN_COVERAGE:
            blind.append(cam.name)
            continue
        b = render_cloud(candidate, cam, backend=backend, device=str(dev), background=background, tensors=tc)
        value = psnr(a[..., :3], b)
        per_view.append({"camera": cam.name, "psnr": finite_db(value), "ssim": round(ssim(a[..., :3], b), 6),
                         "coverage": round(coverage, 4)})
        log.info("view %s: PSNR %.2f dB, SSIM %.4f", cam.name, value, per_view[-1]["ssim"])
    if not per_view:
        raise InputError(f"none of the {len(cameras)} cameras sees the source splats",
                         hint="the cameras must be in the splats' coordinate frame (the sfm output the splats "
                              "were trained from); omit --cameras to orbit the scene instead")
    return per_view, blind


def render_fidelity(source: GaussianCloud, candidate: GaussianCloud, *, views: int = 4, size: int = 256,
                    device: str | None = None) -> dict[str, Any]:
    """Mean/min PSNR (dB) and mean SSIM of ``candidate`` against ``source`` over an orbit of ``views`` square
    ``size``-pixel views around the source's dense region (what the compress report and the codec benchmark
    carry)."""
    from splatflow.cameras import orbit_cameras

    rows, _ = compare_renders(source, candidate, orbit_cameras(source, views=views, width=size, height=size),
                              device=device)
    return {"psnr": round(float(np.mean([r["psnr"] for r in rows])), 3), "psnr_min": min(r["psnr"] for r in rows),
            "ssim": round(float(np.mean([r["ssim"] for r in rows])), 6), "views": len(rows), "size": size}


def evaluate(source: str | os.PathLike[str], candidate: str | os.PathLike[str], *,
             cameras: str | os.PathLike[str] | list[Camera] | None = None, views: int = 8,
             size: tuple[int, int] | None = None, backend: str = "auto", device: str | None = None,
             background: tuple[float, float, float] = (0.0, 0.0, 0.0), match: str = "auto",
             permutation: np.ndarray | None = None, json_out: str | os.PathLike[str] | None = None
             ) -> dict[str, Any]:
    """Render ``source`` and ``candidate`` from the same cameras and compare them; returns the report.

    ``cameras``: a ``.npz``, a COLMAP model folder, a list of :class:`Camera`, or None (an orbit of ``views``
    around the source). ``size`` (W, H) rescales the cameras. ``match`` / ``permutation`` pair the splats for
    the attribute table (``permutation[i]`` = the source index of candidate splat i). PSNR of identical views is
    infinite; the report stores it as ``MAX_PSNR`` (100 dB) since JSON has no infinity. ``json_out`` writes the
    report there atomically.
    """
    t0 = time.monotonic()
    resolve_device(device)  # a bad --device fails first, with the one device error
    src, src_bytes, _ = load_splats(source)
    cand, cand_bytes, cand_kind = load_splats(candidate)
    notes: list[str] = []
    if src.sh_degree != cand.sh_degree:
        notes.append(f"SH degree differs: source {src.sh_degree}, candidate {cand.sh_degree}; each is rendered "
                     f"with its own bands, so view-dependent colour counts in the PSNR"
                     + ("; sh_rest compares the common bands" if min(src.sh_degree, cand.sh_degree) else ""))
    cams = cameras if isinstance(cameras, list) else load_cameras(cameras, src, views=views, size=size)
    if isinstance(cameras, list) and size is not None:
        cams = [c.resized(*size) for c in cams]
    per_view, blind = compare_renders(src, cand, cams, backend=backend, device=device, background=background)
    if blind:
        notes.append(f"{len(blind)} of {len(cams)} cameras see nothing of the source and were left out: "
                     + ", ".join(blind[:5]) + (" ..." if len(blind) > 5 else ""))
    report: dict[str, Any] = {
        "source": str(source), "candidate": str(candidate), "candidate_kind": cand_kind,
        "splats": {"source": len(src), "candidate": len(cand)},
        "sh_degree": {"source": src.sh_degree, "candidate": cand.sh_degree},
        "bytes": {"source": src_bytes, "candidate": cand_bytes},
        "bytes_per_splat": {"source": bytes_per_splat(src_bytes, len(src)),
                            "candidate": bytes_per_splat(cand_bytes, len(cand))},
        "cameras": {"source": "orbit" if cameras is None else ("list" if isinstance(cameras, list) else str(cameras)),
                    "count": len(cams), "used": len(per_view), "width": cams[0].width, "height": cams[0].height},
        "psnr": round(float(np.mean([v["psnr"] for v in per_view])), 3),
        "psnr_min": min(v["psnr"] for v in per_view),
        "ssim": round(float(np.mean([v["ssim"] for v in per_view])), 6),
        "identical": all(v["psnr"] >= MAX_PSNR for v in per_view),
        "views": per_view,
        "attributes": None,
        "match": None,
    }
    if len(src) != len(cand):
        notes.append(f"splat counts differ (source {len(src):,}, candidate {len(cand):,}): renders are compared, "
                     "the attribute table is skipped")
    else:
        if permutation is not None:
            index = np.asarray(permutation, dtype=np.int64)
            if index.shape != (len(src),) or index.min() < 0 or index.max() >= len(src):
                raise InputError(f"the permutation must hold {len(src)} source indices in [0, {len(src)})")
            how: dict[str, Any] = {"method": "permutation"}
        else:
            index, how = match_splats(src, cand, match, candidate_kind=cand_kind)
        if how.get("unique_fraction", 1.0) < 0.99:
            notes.append(f"nearest-position matching paired only {how['unique_fraction']:.1%} of the splats "
                         "one-to-one; the attribute errors are approximate")
        report["attributes"] = attribute_errors(src, cand, index)
        report["match"] = how
    report["notes"] = notes
    report["seconds"] = round(time.monotonic() - t0, 3)
    for note in notes:
        log.warning("%s", note)
    if json_out is not None:
        with atomic_path(json_out) as tmp:
            tmp.write_text(json.dumps(report, indent=2) + "\n")
    return report


def format_report(report: dict[str, Any]) -> str:
    """The report as the text table `splatflow evaluate` prints."""
    lines = [f"{report['source']}  vs  {report['candidate']} ({report['candidate_kind']})",
             f"  splats      {report['splats']['source']:,} vs {report['splats']['candidate']:,}   "
             f"bytes/splat {report['bytes_per_splat']['source']} vs {report['bytes_per_splat']['candidate']}",
             f"  cameras     {report['cameras']['used']} of {report['cameras']['count']} "
             f"({report['cameras']['source']}, {report['cameras']['width']}x{report['cameras']['height']})",
             "  view                        PSNR dB    SSIM"]
    for v in report["views"]:
        shown = "inf" if v["psnr"] >= MAX_PSNR else f"{v['psnr']:.2f}"
        lines.append(f"  {v['camera'][:26]:26s} {shown:>9s}  {v['ssim']:.4f}")
    mean = "inf" if report["identical"] else f"{report['psnr']:.2f}"
    lines.append(f"  {'mean':26s} {mean:>9s}  {report['ssim']:.4f}")
    if report["attributes"]:
        lines.append(f"  attribute errors (matched by {report['match']['method']})       mean        p99        max")
        for name, r in report["attributes"].items():
            lines.append(f"  {name:12s} {r['unit']:>15s} {r['mean']:>12.5g} {r['p99']:>10.5g} {r['max']:>10.5g}")
    lines += [f"  note: {n}" for n in report["notes"]]
    return "\n".join(lines)

