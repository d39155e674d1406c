"""Lossless WebP images (Pillow, exact mode) for the SOG textures; encodes run in threads (Pillow frees the GIL)."""

from __future__ import annotations

import io
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

from splatflow.errors import SogError

WEBP_MAX_SIDE = 16383
"""The largest width or height a WebP image can have."""

DEFAULT_METHOD = 4
"""libwebp effort 0..6 (Pillow ``method``); lossless ``quality`` is the companion effort knob."""
DEFAULT_QUALITY = 75


def encode(rgba: np.ndarray, *, method: int = DEFAULT_METHOD, quality: int = DEFAULT_QUALITY) -> bytes:
    """Lossless WebP bytes of an (H, W, 4) or (H, W, 3) uint8 image; ``exact`` keeps RGB under zero alpha."""
    if rgba.dtype != np.uint8 or rgba.ndim != 3 or rgba.shape[2] not in (3, 4):
        raise ValueError(f"expected an (H, W, 3|4) uint8 image, got {rgba.shape} {rgba.dtype}")
    img = Image.fromarray(np.ascontiguousarray(rgba), "RGBA" if rgba.shape[2] == 4 else "RGB")
    buf = io.BytesIO()
    img.save(buf, "WEBP", lossless=True, exact=True, method=method, quality=quality)
    return buf.getvalue()


def encode_many(images: dict[str, np.ndarray], *, method: int = DEFAULT_METHOD, quality: int = DEFAULT_QUALITY,
                threads: int | None = None) -> dict[str, bytes]:
    """Encode name -> image in parallel threads; returns name -> WebP bytes (same keys, same order)."""
    workers = max(1, min(len(images), threads or os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {k: pool.submit(encode, v, method=method, quality=quality) for k, v in images.items()}
        return {k: f.result() for k, f in futures.items()}


def decode(data: bytes, name: str = "image") -> np.ndarray:
    """(H, W, 4) uint8 RGBA pixels of a WebP (or any Pillow-readable) image; SogError if unreadable."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            return np.asarray(img.convert("RGBA"))
    except Exception as exc:  # Pillow raises several types for damaged data
        raise SogError(f"{name} is not a readable image ({exc})", hint="the SOG file set is damaged; export it again")\
            from exc
