"""SOG v2 / SOGS v1 file set -> GaussianCloud (numpy), and the attribute errors of a decoded cloud."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from splatflow.errors import SogError
from splatflow.gaussians import GaussianCloud, logit
from splatflow.sog import webp
from splatflow.sog.bundle import read_files
from splatflow.sog.meta import CENTROID_WIDTHS

_QUAT_OTHERS = np.array([[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2]])


def _pixels(img: np.ndarray, n: int, name: str) -> np.ndarray:
    """The first n texels (n, 4) of an (H, W, 4) image; SogError if it is too small."""
    flat = img.reshape(-1, 4)
    if flat.shape[0] < n:
        raise SogError(f"{name} has {flat.shape[0]} texels for {n} splats", hint="the SOG set is damaged")
    return flat[:n]


def _num(x: Any, what: str, length: int | None = None) -> np.ndarray:
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise SogError(f"meta.json: {what} is not numeric", hint="the meta.json is damaged") from exc
    if length is not None and arr.shape != (length,):
        raise SogError(f"meta.json: {what} should have {length} values, has shape {arr.shape}",
                       hint="the meta.json is damaged")
    if not np.isfinite(arr).all():
        raise SogError(f"meta.json: {what} holds NaN/Inf or null", hint="the meta.json is damaged")
    return arr


def unpack_quats(px: np.ndarray) -> np.ndarray:
    """(N, 4) uint8 smallest-three packing -> (N, 4) float32 unit quaternions (w, x, y, z); bad tags -> identity."""
    tag = px[:, 3].astype(np.int64) - 252
    ok = (tag >= 0) & (tag <= 3)
    m = np.where(ok, tag, 0)
    abc = (px[:, :3].astype(np.float64) / 255.0 * 2.0 - 1.0) / math.sqrt(2.0)
    q = np.zeros((px.shape[0], 4), np.float64)
    np.put_along_axis(q, _QUAT_OTHERS[m], abc, axis=1)
    big = np.sqrt(np.maximum(0.0, 1.0 - (abc * abc).sum(1)))
    np.put_along_axis(q, m[:, None], big[:, None], axis=1)
    q[~ok] = (1.0, 0.0, 0.0, 0.0)
    return q.astype(np.float32)


def _means(meta: dict[str, Any], imgs: dict[str, np.ndarray], n: int) -> np.ndarray:
    m = meta["means"]
    lo = _pixels(imgs[m["files"][0]], n, m["files"][0]).astype(np.float64)
    hi = _pixels(imgs[m["files"][1]], n, m["files"][1]).astype(np.float64)
    q = (lo[:, :3] + hi[:, :3] * 256.0) / 65535.0
    mins, maxs = _num(m["mins"], "means.mins", 3), _num(m["maxs"], "means.maxs", 3)
    v = mins + (maxs - mins) * q
    return (np.sign(v) * np.expm1(np.abs(v))).astype(np.float32)


def _codebook(entry: dict[str, Any], key: str) -> np.ndarray:
    cb = _num(entry.get("codebook"), f"{key}.codebook")
    if cb.shape != (256,):
        raise SogError(f"meta.json: {key}.codebook has {cb.size} entries, expected 256", hint="the meta is damaged")
    return cb.astype(np.float32)


def decode_files(meta: dict[str, Any], blobs: dict[str, bytes]) -> tuple[GaussianCloud, str]:
    """Decode a SOG set given its meta and file bytes: (cloud in texel order, kind ``sog-v2`` or ``sog-v1``)."""
    v2 = meta.get("version") == 2
    if not v2 and "version" in meta:
        raise SogError(f"meta.json: unsupported SOG version {meta['version']!r}", hint="splatflow reads v1 and v2")
    try:
        n = int(meta["count"] if v2 else meta["means"]["shape"][0])
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise SogError("meta.json has no splat count", hint="the meta.json is damaged") from exc
    if n <= 0:
        raise SogError(f"meta.json: splat count is {n}", hint="the SOG set holds no splat")
    imgs = {name: webp.decode(data, name) for name, data in blobs.items()}
    means = _means(meta, imgs, n)
    quats = unpack_quats(_pixels(imgs[meta["quats"]["files"][0]], n, "quats"))
    sc_px = _pixels(imgs[meta["scales"]["files"][0]], n, "scales")
    c_px = _pixels(imgs[meta["sh0"]["files"][0]], n, "sh0")
    if v2:
        scales = _codebook(meta["scales"], "scales")[sc_px[:, :3]]
        sh0 = _codebook(meta["sh0"], "sh0")[c_px[:, :3]]
        opac = logit(c_px[:, 3].astype(np.float32) / 255.0)
    else:
        smin, smax = _num(meta["scales"]["mins"], "scales.mins", 3), _num(meta["scales"]["maxs"], "scales.maxs", 3)
        scales = (smin + (smax - smin) * sc_px[:, :3] / 255.0).astype(np.float32)
        cmin, cmax = _num(meta["sh0"]["mins"], "sh0.mins", 4), _num(meta["sh0"]["maxs"], "sh0.maxs", 4)
        c4 = cmin + (cmax - cmin) * c_px / 255.0
        sh0, opac = c4[:, :3].astype(np.float32), c4[:, 3].astype(np.float32)
    shn = np.zeros((n, 0, 3), np.float32)
    if meta.get("shN"):
        shn = _decode_sh(meta, imgs, n, v2)
    cloud = GaussianCloud(means=means, scales=scales.astype(np.float32), quats=quats,
                          opacities=np.asarray(opac, np.float32), sh0=sh0.astype(np.float32), shN=shn)
    return cloud, "sog-v2" if v2 else "sog-v1"


def _decode_sh(meta: dict[str, Any], imgs: dict[str, np.ndarray], n: int, v2: bool) -> np.ndarray:
    entry = meta["shN"]
    cen = imgs[entry["files"][0]]
    rows, width = cen.shape[:2]
    bands = CENTROID_WIDTHS.get(width)
    if bands is None:
        raise SogError(f"shN centroid texture is {width} wide; expected 192, 512 or 960", hint="the SOG is damaged")
    if v2 and entry.get("bands") not in (None, bands):
        raise SogError(f"meta.json says {entry.get('bands')} SH bands, the centroid texture holds {bands}",
                       hint="the SOG set is damaged")
    kc = width // 64
    idx = cen.reshape(rows * 64, kc, 4)[:, :, :3]                     # (palette slots, K, 3)
    if v2:
        values = _codebook(entry, "shN")[idx]
    else:
        lo, hi = float(_num(entry["mins"], "shN.mins")), float(_num(entry["maxs"], "shN.maxs"))
        values = (lo + (hi - lo) * idx / 255.0).astype(np.float32)
    lab_px = _pixels(imgs[entry["files"][1]], n, "shN_labels").astype(np.int64)
    labels = lab_px[:, 0] | (lab_px[:, 1] << 8)
    count = int(entry.get("count", values.shape[0])) if v2 else values.shape[0]
    if labels.max() >= min(count, values.shape[0]):
        raise SogError(f"shN labels point past the {count}-entry palette", hint="the SOG set is damaged")
    return values[labels].astype(np.float32)


def read_sog(path: str | os.PathLike[str]) -> tuple[GaussianCloud, int, str]:
    """Read a .sog bundle, a meta.json or a SOG folder: (cloud, total bytes of the set, ``sog-v2``|``sog-v1``)."""
    meta, blobs, nbytes = read_files(Path(path))
    cloud, kind = decode_files(meta, blobs)
    return cloud, nbytes, kind
