"""SOG v2 / SOGS v1 file set -> GaussianCloud (numpy), and the attribute errors of a decoded cloud."""

from __future__ import annotations

import io
import math
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from splatflow.errors import SogError
from splatflow.gaussians import GaussianCloud, logit
from splatflow.sog import webp
from splatflow.sog.bundle import (
    BOMB_HINT,
    MAX_CENTROID_PIXELS,
    file_names,
    max_texture_pixels,
    read_files,
    splat_count,
)
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
    """Decode a SOG set given its meta and file bytes: (cloud in texel order, kind ``sog-v2`` or ``sog-v1``).

    Before any image is decoded, meta.json's structure and every image's header (format, size) are checked
    against the splat count (:func:`check_images`), so a small file holding huge images is refused, not decoded.
    """
    v2 = meta.get("version") == 2
    n = splat_count(meta)
    names = file_names(meta)
    missing = [name for name in names if name not in blobs]
    if missing:
        raise SogError(f"the SOG set lacks {', '.join(missing)}", hint="copy the whole SOG set")
    check_images(meta, blobs, n)
    try:
        return _decode(meta, blobs, n, v2)
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        raise SogError(f"meta.json has a missing or malformed entry ({type(exc).__name__}: {exc})",
                       hint="the meta.json is damaged") from exc


def check_images(meta: dict[str, Any], blobs: dict[str, bytes], n: int) -> None:
    """Refuse (SogError) any image that is not a single-frame WebP of a size a SOG of ``n`` splats has: per-splat
    textures with at least n and at most :func:`~splatflow.sog.bundle.max_texture_pixels` texels, the SH
    centroids 192/512/960 texels wide and at most 1024 rows. Reads only the headers (Pillow decodes lazily)."""
    centroids = meta["shN"]["files"][0] if meta.get("shN") else None
    most = max_texture_pixels(n)
    for name in file_names(meta):
        w, h = _image_size(blobs[name], name)
        if name == centroids:
            if w not in CENTROID_WIDTHS or h * 64 > 65536 or w * h > MAX_CENTROID_PIXELS:
                raise SogError(f"{name} is {w}x{h}; SH centroids are 192, 512 or 960 texels wide and at most 1024 "
                               "rows high", hint="the SOG set is damaged or hostile")
        elif w * h < n:
            raise SogError(f"{name} has {w * h:,} texels for {n:,} splats", hint="the SOG set is damaged")
        elif w * h > most:
            raise SogError(f"{name} is {w}x{h} ({w * h:,} texels) for {n:,} splats; a SOG of that many splats "
                           f"has at most {most:,}", hint="the SOG set is damaged or hostile: not decoded")


def _image_size(data: bytes, name: str) -> tuple[int, int]:
    """(width, height) from a WebP header, without decoding; SogError for anything but a one-frame WebP."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the size is checked here
            with Image.open(io.BytesIO(data)) as img:
                fmt, size, frames = img.format, img.size, getattr(img, "n_frames", 1)
    except Image.DecompressionBombError as exc:
        raise SogError(f"{name} is a decompression bomb ({exc})", hint="the SOG set is hostile: not decoded") from exc
    except Exception as exc:  # Pillow raises several types for damaged data
        raise SogError(f"{name} is not a readable image ({exc})", hint="the SOG file set is damaged; export it again")\
            from exc
    if fmt != "WEBP" or frames != 1:
        what = f"a {fmt} image" if fmt != "WEBP" else f"an animated WebP ({frames} frames)"
        raise SogError(f"{name} is {what}; SOG textures are single-frame WebP images", hint="the SOG set is damaged")
    return int(size[0]), int(size[1])


def _decode(meta: dict[str, Any], blobs: dict[str, bytes], n: int, v2: bool) -> tuple[GaussianCloud, str]:
    imgs = {name: webp.decode(blobs[name], name) for name in file_names(meta)}
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


MIN_BYTES_PER_SPLAT = 4.0
"""Above LARGE_SET splats, a SOG read from outside must hold at least this many bytes of image data (WebP
``VP8L``/``VP8``/``ALPH`` chunks: metadata chunks and unused ZIP entries do not count) per splat. Real scenes take
10-25 (the low position bytes alone are close to noise: about 3 bytes per splat), so only a decompression bomb (a
small file declaring many splats over near-empty images) falls under it."""
LARGE_SET = 1 << 19
"""Sets up to this many splats are decoded whatever their size: the most a bomb can cost (``info`` on 524,288
splats with SH degree 3 peaks under 1 GB)."""
_IMAGE_CHUNKS = (b"VP8L", b"VP8 ", b"ALPH")


def image_data_bytes(data: bytes) -> int:
    """Bytes of image data in a WebP file: the sizes of its VP8L/VP8/ALPH chunks (metadata chunks such as EXIF
    or XMP do not count); 0 for anything that is not a RIFF/WebP file."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        return 0
    total, pos = 0, 12
    while pos + 8 <= len(data):
        tag, size = data[pos:pos + 4], int.from_bytes(data[pos + 4:pos + 8], "little")
        if tag in _IMAGE_CHUNKS:
            total += min(size, len(data) - pos - 8)
        pos += 8 + size + (size & 1)
    return total


def read_sog(path: str | os.PathLike[str]) -> tuple[GaussianCloud, int, str]:
    """Read a .sog bundle, a meta.json or a SOG folder: (cloud, total bytes of the set, ``sog-v2``|``sog-v1``).

    Bounded: every read is limited before it happens (:func:`~splatflow.sog.bundle.read_files`), every image
    header is checked against the splat count before decoding, and a set over LARGE_SET splats with fewer than
    MIN_BYTES_PER_SPLAT bytes per splat (a decompression bomb) is refused, so a hostile file costs at most what
    about a million splats cost to decode.
    """
    meta, blobs, nbytes = read_files(Path(path))
    n = splat_count(meta)
    if n > LARGE_SET:
        data = sum(image_data_bytes(blobs[name]) for name in file_names(meta))
        if data < MIN_BYTES_PER_SPLAT * n:
            raise SogError(f"{path} declares {n:,} splats over {data:,} bytes of image data ({data / n:.2f} bytes "
                           f"per splat); real SOG files take 10 or more, so it is not decoded", hint=BOMB_HINT)
    cloud, kind = decode_files(meta, blobs)
    return cloud, nbytes, kind
