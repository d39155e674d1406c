"""`splatflow info`: what a splat file holds (count, SH degree, bounds, attribute ranges, splats by kind of
non-finite value, size)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from splatflow.errors import InputError
from splatflow.gaussians import GaussianCloud
from splatflow.io.ply import read_ply


def _ranges(arr: np.ndarray) -> dict[str, Any]:
    flat = arr.reshape(len(arr), -1).astype(np.float64)
    finite = np.where(np.isfinite(flat), flat, np.nan)
    if flat.shape[1] == 0:
        return {"min": [], "max": [], "mean": []}
    with np.errstate(all="ignore"):
        return {
            "min": np.nanmin(finite, axis=0).round(6).tolist(),
            "max": np.nanmax(finite, axis=0).round(6).tolist(),
            "mean": np.nanmean(finite, axis=0).round(6).tolist(),
        }


def cloud_summary(cloud: GaussianCloud, *, file_bytes: int | None = None) -> dict[str, Any]:
    """A JSON-ready summary of a cloud: count, SH degree, bounds, per-attribute ranges (finite values), splat
    counts by kind of non-finite value (``kinds``: opaque, transparent and flat are valid; see
    :meth:`GaussianCloud.value_kinds`), invalid splats and non-finite values per attribute."""
    lo, hi = cloud.bounds()
    nonfinite = {k: int((~np.isfinite(v)).sum()) for k, v in cloud.core_arrays.items()}
    kinds = cloud.value_kinds()
    out: dict[str, Any] = {
        "splats": len(cloud),
        "sh_degree": cloud.sh_degree,
        "bounds": {"min": lo.astype(np.float64).round(6).tolist(), "max": hi.astype(np.float64).round(6).tolist()},
        "invalid_splats": kinds["invalid"],
        "kinds": kinds,
        "nonfinite_values": nonfinite,
        "attributes": {
            "means": _ranges(cloud.means),
            "log_scales": _ranges(cloud.scales),
            "opacity_logit": _ranges(cloud.opacities[:, None]),
            "alpha": _ranges(cloud.alphas()[:, None]),
            "sh0": _ranges(cloud.sh0),
            "quat_norm": _ranges(np.linalg.norm(cloud.quats, axis=1)[:, None]),
            **({"sh_rest_rgb": _ranges(cloud.shN.reshape(-1, 3))} if cloud.shN.shape[1] else {}),
        },
        "extras": list(cloud.extras),
    }
    if file_bytes is not None:
        out["file_bytes"] = file_bytes
        out["bytes_per_splat"] = round(file_bytes / max(len(cloud), 1), 3)
    return out


def load_any(path: str | os.PathLike[str]) -> tuple[GaussianCloud, int, str]:
    """Load a splat file of any supported kind, invalid splats included: (cloud, total bytes on disk, kind
    ``ply`` | ``sog-v2`` | ``sog-v1``)."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file or folder", hint="check the path")
    if p.suffix.lower() == ".ply":
        return read_ply(p), p.stat().st_size, "ply"
    if p.suffix.lower() == ".sog" or p.name == "meta.json" or p.is_dir():
        from splatflow.sog.decode import read_sog

        return read_sog(p)
    raise InputError(f"{p}: unknown splat file type", hint="give a .ply, a .sog, or a SOG meta.json / folder")


def info(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Summary of the splat file at ``path`` (see :func:`cloud_summary`), with its kind and path."""
    cloud, nbytes, kind = load_any(path)
    return {"path": str(path), "kind": kind, **cloud_summary(cloud, file_bytes=nbytes)}
