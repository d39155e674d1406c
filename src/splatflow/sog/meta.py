"""SOG layout facts: texture sizes, file names, meta.json construction for v2 and v1."""

from __future__ import annotations

import math
from typing import Any

from splatflow import __version__
from splatflow.errors import SogError
from splatflow.sog.webp import WEBP_MAX_SIDE

GENERATOR = f"splatflow {__version__}"
V2_FILES = ("means_l.webp", "means_u.webp", "quats.webp", "scales.webp", "sh0.webp")
SH_FILES = ("shN_centroids.webp", "shN_labels.webp")
CENTROID_WIDTHS = {192: 1, 512: 2, 960: 3}
"""Centroid texture width -> SH bands (64 palette entries per row, K texels each)."""


def texture_size(n: int, fmt: str = "v2") -> tuple[int, int]:
    """(width, height) of the per-splat textures for n splats.

    v2: W = ceil(sqrt(n)/4)*4, H = ceil(n/W/4)*4. v1: a square of side ceil(sqrt(n)) (padded, no splat dropped).
    Raises SogError when a side would exceed the WebP limit of 16383.
    """
    if n <= 0:
        raise SogError("cannot encode zero splats", hint="give a PLY with at least one splat")
    if fmt == "v1":
        w = h = max(1, math.isqrt(n - 1) + 1)
    else:
        w = max(4, math.ceil(math.sqrt(n) / 4) * 4)
        h = max(4, math.ceil(n / w / 4) * 4)
    if max(w, h) > WEBP_MAX_SIDE:
        raise SogError(
            f"{n:,} splats need a {w}x{h} texture, over the WebP limit of {WEBP_MAX_SIDE} per side",
            hint="reduce the splat count (e.g. train with a lower max_splats) before compressing")
    return w, h


def short_floats(values: list[float]) -> list[float]:
    """float32 values as the shortest decimals that read back as the same float32 (``-4.1234570`` rather than
    ``-4.123456954956055``): the same decoded codebook, about half the meta.json bytes."""
    import numpy as np

    return [float(np.format_float_positional(np.float32(v), unique=True, trim="-")) for v in values]


def v2_meta(n: int, means_min: list[float], means_max: list[float], scales_cb: list[float],
            sh0_cb: list[float], sh: dict[str, Any] | None) -> dict[str, Any]:
    """meta.json of SOG v2 (key order as splat-transform writes it)."""
    meta: dict[str, Any] = {
        "version": 2,
        "asset": {"generator": GENERATOR},
        "count": n,
        "means": {"mins": means_min, "maxs": means_max, "files": ["means_l.webp", "means_u.webp"]},
        "scales": {"codebook": scales_cb, "files": ["scales.webp"]},
        "quats": {"files": ["quats.webp"]},
        "sh0": {"codebook": sh0_cb, "files": ["sh0.webp"]},
    }
    if sh is not None:
        meta["shN"] = {"count": sh["count"], "bands": sh["bands"], "codebook": sh["codebook"],
                       "files": list(SH_FILES)}
    return meta


def v1_meta(n: int, means_min: list[float], means_max: list[float], scales_min: list[float],
            scales_max: list[float], sh0_min: list[float], sh0_max: list[float],
            sh: dict[str, Any] | None) -> dict[str, Any]:
    """meta.json of SOGS v1 (the `sogs` tool's keys: shape, dtype, mins, maxs, files)."""
    meta: dict[str, Any] = {
        "means": {"shape": [n, 3], "dtype": "float32", "mins": means_min, "maxs": means_max,
                  "files": ["means_l.webp", "means_u.webp"]},
        "scales": {"shape": [n, 3], "dtype": "float32", "mins": scales_min, "maxs": scales_max,
                   "files": ["scales.webp"]},
        "quats": {"shape": [n, 4], "dtype": "uint8", "encoding": "quaternion_packed", "files": ["quats.webp"]},
        "sh0": {"shape": [n, 1, 4], "dtype": "float32", "mins": sh0_min, "maxs": sh0_max, "files": ["sh0.webp"]},
    }
    if sh is not None:
        meta["shN"] = {"shape": [n, sh["coeffs"] * 3], "dtype": "float32", "mins": sh["min"], "maxs": sh["max"],
                       "quantization": 8, "files": list(SH_FILES)}
    return meta
