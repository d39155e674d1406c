"""Image helpers for the ingest and sfm stages: safe loading, EXIF orientation, resizing, sharpness and similarity.

Every loader checks the pixel count from the file header *before* decoding, so a decompression bomb (a tiny file
that claims a huge image) is refused without allocating memory. Arrays are ``float32`` grayscale ``(H, W)`` in
0..255 unless stated otherwise.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from splatflow.errors import ImageError
from splatflow.options import MIN_IMAGES, MIN_SIDE

__all__ = [
    "ARCHIVE_SUFFIXES", "DEFAULT_MAX_PIXELS", "HEIC_SUFFIXES", "MIN_IMAGES", "MIN_SIDE", "PHOTO_SUFFIXES",
    "SHARPNESS_SIDE", "THUMB_SIZE", "VIDEO_SUFFIXES", "camera_exif", "difference", "fit_size", "gray",
    "heic_supported", "image_sharpness", "image_suffixes", "load_image", "open_checked", "sharpness", "thumbnail"
]

#: File suffixes read as photos (HEIC/HEIF only when the optional ``pillow-heif`` package is installed).
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png")
HEIC_SUFFIXES = (".heic", ".heif")
VIDEO_SUFFIXES = (".mp4", ".mov", ".m4v", ".avi", ".mkv", ".webm")
ARCHIVE_SUFFIXES = (".zip",)
#: Refuse images with more pixels than this (read from the header, before decoding): 150 MP.
DEFAULT_MAX_PIXELS = 150_000_000
# MIN_SIDE (images smaller than this on their short side carry too little detail for SfM) and MIN_IMAGES (SfM
# needs at least this many overlapping images) live in splatflow.options, whose ranges use them.
#: Grayscale thumbnail size (width, height) for similarity checks, and the side sharpness is measured at.
THUMB_SIZE = (64, 48)
SHARPNESS_SIDE = 640

# Truncated files must fail loudly, never decode to a grey half-image.
ImageFile.LOAD_TRUNCATED_IMAGES = False

_heic: bool | None = None


def heic_supported() -> bool:
    """True when HEIC/HEIF photos can be read (the optional ``pillow-heif`` package registers a Pillow opener)."""
    global _heic
    if _heic is None:
        try:
            from pillow_heif import register_heif_opener

            register_heif_opener()
            _heic = True
        except ImportError:
            _heic = False
    return _heic


def image_suffixes() -> tuple[str, ...]:
    """The photo suffixes readable here (lower case, with the dot)."""
    return PHOTO_SUFFIXES + (HEIC_SUFFIXES if heic_supported() else ())


def open_checked(path: Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open ``path`` lazily (header only) and refuse unreadable files, huge or tiny dimensions.

    Raises ImageError naming the problem. The returned image is not decoded yet.
    """
    if path.suffix.lower() in HEIC_SUFFIXES and not heic_supported():
        raise ImageError(f"{path.name}: HEIC/HEIF is not supported here",
                         hint="pip install pillow-heif, or convert the photos to JPEG")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)
    except Image.DecompressionBombError as exc:
        raise ImageError(f"{path.name}: refused, the header claims an absurd size ({exc})",
                         hint="this looks like a decompression bomb; use real photos") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{path.name}: not a readable image ({type(exc).__name__}: {exc})",
                         hint="remove or re-export the file as JPEG or PNG") from exc
    w, h = im.size
    if w * h > max_pixels:
        im.close()
        raise ImageError(f"{path.name}: {w}x{h} = {w * h:,} pixels is over the limit of {max_pixels:,}",
                         hint="this looks like a decompression bomb; downscale the photo or raise max_pixels")
    if min(w, h) < MIN_SIDE:
        im.close()
        raise ImageError(f"{path.name}: {w}x{h} is too small (short side under {MIN_SIDE} px)",
                         hint="use the original photos, not thumbnails")
    return im


def fit_size(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    """``size`` (width, height) scaled down (never up) so that its longest side is at most ``max_side``."""
    w, h = size
    s = min(1.0, max_side / max(w, h))
    return max(1, round(w * s)), max(1, round(h * s))


def load_image(path: Path, *, max_side: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[Image.Image, bytes]:
    """Decode a photo: EXIF orientation applied, RGB, longest side at most ``max_side``.

    Returns the image and a minimal EXIF block (camera make/model and focal length only, orientation removed,
    no GPS or free text) that keeps SfM's focal-length prior valid after resizing. Raises ImageError.
    """
    im = open_checked(path, max_pixels=max_pixels)
    try:
        exif = im.getexif()
        full = im.size
        if im.format == "JPEG":
            # Decode at a reduced DCT scale when the target is much smaller (fast, low memory).
            im.draft("RGB", fit_size(im.size, max_side))
        im.load()
        im = ImageOps.exif_transpose(im)
        im = im.convert("RGB")
        if max(im.size) > max_side:
            im = im.resize(fit_size(im.size, max_side), Image.Resampling.LANCZOS)
        scale = max(im.size) / max(full)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageError(f"{path.name}: the image data is corrupt or truncated ({exc})",
                         hint="remove the file or copy it again from the camera") from exc
    return im, camera_exif(exif, scale)


_CAMERA_TAGS = (0x010F, 0x0110)  # Make, Model
_FOCAL_TAGS = (0x920A, 0xA405)  # FocalLength (mm), FocalLengthIn35mmFilm
_PLANE_TAGS = (0xA20E, 0xA20F)  # FocalPlaneX/YResolution (pixels per unit: scale with the image)
_PLANE_UNIT = 0xA210


def camera_exif(src: Image.Exif, scale: float) -> bytes:
    """The camera-intrinsics subset of ``src`` as EXIF bytes (empty when there is none).

    ``scale`` is new size / original size: focal-plane resolutions are scaled so that focal length in pixels
    stays right after resizing. Drops everything else (GPS, descriptions, maker notes, orientation).
    """
    out = Image.Exif()
    for tag in _CAMERA_TAGS:
        if tag in src:
            out[tag] = src[tag]
    ifd = src.get_ifd(0x8769)
    sub = {tag: ifd[tag] for tag in _FOCAL_TAGS + (_PLANE_UNIT,) if tag in ifd}
    for tag in _PLANE_TAGS:
        if tag in ifd:
            try:
                sub[tag] = float(ifd[tag]) * scale
            except (TypeError, ValueError, ZeroDivisionError):
                continue
    if not sub and not len(out):
        return b""
    if sub:
        out.get_ifd(0x8769).update(sub)
    return out.tobytes()


def gray(im: Image.Image, max_side: int) -> np.ndarray:
    """Grayscale ``(H, W)`` float32 in 0..255 with the longest side at most ``max_side``."""
    g = im.convert("L")
    if max(g.size) > max_side:
        g = g.resize(fit_size(g.size, max_side), Image.Resampling.BILINEAR)
    return np.asarray(g, dtype=np.float32)


def sharpness(g: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian of a grayscale image ``(H, W)``: low means blurred or flat."""
    if g.shape[0] < 3 or g.shape[1] < 3:
        return 0.0
    lap = g[1:-1, :-2] + g[1:-1, 2:] + g[:-2, 1:-1] + g[2:, 1:-1] - 4.0 * g[1:-1, 1:-1]
    return float(lap.var())


def image_sharpness(im: Image.Image) -> float:
    """Sharpness of ``im`` measured at a fixed working size (``SHARPNESS_SIDE``) so values are comparable."""
    return sharpness(gray(im, SHARPNESS_SIDE))


def thumbnail(im: Image.Image) -> np.ndarray:
    """A ``(48, 64)`` float32 grayscale thumbnail (0..255) for near-duplicate checks."""
    return np.asarray(im.convert("L").resize(THUMB_SIZE, Image.Resampling.BILINEAR), dtype=np.float32)


def difference(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two thumbnails (0..255): about 0-2 for the same view, tens for another view."""
    return float(np.abs(a - b).mean())
