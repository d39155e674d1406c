"""The SOG file set as a folder (meta.json + images) or a single ``.sog`` ZIP, as the PlayCanvas engine reads it.

The ZIP: meta.json first and DEFLATEd where that makes it smaller (its codebooks are text; the engine, the
supersplat viewer and splat-transform inflate such entries), the images STORED (WebP is compressed already), no
archive comment (the engine expects the end record exactly 22 bytes from the end), no zip64 (a SOG is far below
4 GiB).
"""

from __future__ import annotations

import io
import json
import math
import zipfile
import zlib
from pathlib import Path
from typing import Any

from splatflow.errors import SogError
from splatflow.fsutil import atomic_path
from splatflow.limits import parse_json, read_limited


def meta_bytes(meta: dict[str, Any]) -> bytes:
    """meta.json bytes: compact JSON, NaN/Inf refused (the engine cannot read them)."""
    return json.dumps(meta, separators=(",", ":"), allow_nan=False).encode()


def _deflates(data: bytes) -> bool:
    """True when raw DEFLATE (level 9) stores ``data`` in fewer bytes."""
    co = zlib.compressobj(9, zlib.DEFLATED, -15)
    return len(co.compress(data) + co.flush()) < len(data)


def write_zip(path: Path | io.BytesIO, files: dict[str, bytes]) -> None:
    """Write ``files`` (name -> bytes, meta.json first) as a ZIP at ``path`` (a temporary path, or a buffer): meta.json
    DEFLATEd when that is smaller, everything else STORED."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=False) as zf:
        for name, data in files.items():
            info = zipfile.ZipInfo(name, date_time=(2025, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED if name == "meta.json" and _deflates(data) else \
                zipfile.ZIP_STORED
            info.external_attr = 0o644 << 16
            zf.writestr(info, data, compresslevel=9)


def zip_size(files: dict[str, bytes]) -> int:
    """The exact bytes of the ZIP :func:`write_zip` writes for ``files``."""
    buf = io.BytesIO()
    write_zip(buf, files)
    return buf.getbuffer().nbytes


def zip_overhead(names: list[str]) -> int:
    """The most bytes a ZIP of :func:`write_zip` adds to its members' data: a 30-byte local header and a
    46-byte central-directory entry per member, each with the name, and the 22-byte end record (a DEFLATEd
    meta.json only ever takes fewer bytes than its text)."""
    return 22 + sum(76 + 2 * len(name.encode()) for name in names)


def write_files(out: Path, files: dict[str, bytes]) -> Path:
    """Write the file set atomically: ``out`` ending in .sog -> one ZIP, else a folder of files."""
    if out.suffix.lower() == ".sog":
        with atomic_path(out) as tmp:
            write_zip(tmp, files)
    else:
        with atomic_path(out, directory=True) as tmp:
            for name, data in files.items():
                (tmp / name).write_bytes(data)
    return out


MAX_META_BYTES = 1 << 20
"""Largest meta.json read (a real one is 1-20 KB: three 256-entry codebooks at most)."""
MAX_MEMBERS = 64
"""Most entries a .sog ZIP may hold (a SOG has 6-8 files)."""
MAX_SPLATS = 16383 * 16383
"""The most splats a SOG can hold: a WebP side is at most 16383 texels."""
MAX_CENTROID_PIXELS = 960 * 1024
"""The largest SH centroid texture: 65,536 palette entries of 15 texels (SH degree 3), 64 per row."""
FILE_COUNTS = {"means": 2, "scales": 1, "quats": 1, "sh0": 1, "shN": 2}
"""How many files each meta.json entry names."""


def splat_count(meta: dict[str, Any]) -> int:
    """The splat count a meta.json declares (v2 ``count``, v1 ``means.shape[0]``); SogError unless it is a whole
    number from 1 to MAX_SPLATS."""
    v2 = meta.get("version") == 2
    if not v2 and "version" in meta:
        raise SogError(f"meta.json: unsupported SOG version {meta['version']!r}", hint="splatflow reads v1 and v2")
    try:
        raw = meta["count"] if v2 else meta["means"]["shape"][0]
    except (KeyError, IndexError, TypeError) as exc:
        raise SogError("meta.json has no splat count", hint="the meta.json is damaged") from exc
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise SogError(f"meta.json: the splat count {raw!r} is not a whole number", hint="the meta.json is damaged")
    if raw <= 0:
        raise SogError(f"meta.json: splat count is {raw}", hint="the SOG set holds no splat")
    if raw > MAX_SPLATS:
        raise SogError(f"meta.json declares {raw:,} splats, more than a SOG can hold ({MAX_SPLATS:,})",
                       hint="the meta.json is damaged or hostile")
    return raw


def max_texture_pixels(n: int) -> int:
    """The most texels a per-splat texture of ``n`` splats may have: every layout writers use (v2's multiple-of-4
    sides, v1's padded square, a fixed width) fits, a texture far larger than its splats does not."""
    return n + 64 * (math.isqrt(n) + 1) + 16384


def max_member_bytes(n: int) -> int:
    """The largest file a SOG of ``n`` splats can hold: a lossless WebP of its largest texture (at most ~4 bytes
    per texel plus headers)."""
    return 5 * max(max_texture_pixels(n), MAX_CENTROID_PIXELS) + (1 << 20)


def read_files(path: Path) -> tuple[dict[str, Any], dict[str, bytes], int]:
    """Read a SOG set from a .sog ZIP, a meta.json or a folder: (meta, name -> bytes of every file meta names,
    total bytes of the set on disk).

    Every read is bounded before it happens: meta.json by MAX_META_BYTES (and its nesting), the ZIP by
    MAX_MEMBERS entries, each file by :func:`max_member_bytes` of the count meta.json declares (a ZIP entry by
    the size it declares). Anything else is a SogError naming the file.
    """
    if not path.exists():
        raise SogError(f"{path}: no such file or folder", hint="check the path")
    if path.is_dir():
        path = path / "meta.json"
        if not path.is_file():
            raise SogError(f"{path.parent} has no meta.json", hint="give a SOG folder, its meta.json or a .sog file")
    if zipfile.is_zipfile(path):
        return _read_zip(path)
    if path.suffix.lower() == ".sog":
        raise SogError(f"{path} is not a .sog bundle (not a ZIP file)", hint="copy the file again, or compress again")
    _check_looks_like_json(path)
    meta_raw = read_limited(path, MAX_META_BYTES, "meta.json", error=SogError, hint=META_HINT)
    meta = _parse_meta(meta_raw, path)
    base = path.parent
    limit = max_member_bytes(splat_count(meta))
    blobs = {}
    for n in file_names(meta):
        f = base / n
        if not f.is_file():
            raise SogError(f"{path} names {n}, which is missing beside it", hint="copy the whole SOG folder")
        blobs[n] = read_limited(f, limit, "SOG file", error=SogError, hint=BOMB_HINT)
    return meta, blobs, len(meta_raw) + sum(len(b) for b in blobs.values())


META_HINT = "a SOG meta.json is a few KB; this is not one"
BOMB_HINT = "a SOG of this many splats cannot hold it: the file is damaged or hostile"


def _check_looks_like_json(path: Path) -> None:
    """A meta.json is JSON text: name what the file is instead (a JPEG given to decompress ...)."""
    with open(path, "rb") as f:
        head = f.read(64).lstrip()
    if head.startswith((b"{", b"[")):
        return
    what = "binary data" if b"\0" in head else "text"
    try:
        from PIL import Image

        with Image.open(path) as im:
            what = f"a {im.format} image"
    except Exception:  # not an image: "binary data" / "text" it is
        pass
    raise SogError(f"{path} is {what}, not a SOG", hint="give a .sog bundle, a SOG folder or its meta.json "
                                                         "(as written by `splatflow compress` or splat-transform)")


def _read_zip(path: Path) -> tuple[dict[str, Any], dict[str, bytes], int]:
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            if len(infos) > MAX_MEMBERS:
                raise SogError(f"{path} has {len(infos):,} entries; a SOG has at most {MAX_MEMBERS}",
                               hint="this is not a SOG bundle")
            by_name = {i.filename: i for i in infos}
            if "meta.json" not in by_name:
                raise SogError(f"{path} has no meta.json entry", hint="this is not a SOG bundle")
            meta = _parse_meta(_read_member(zf, by_name["meta.json"], MAX_META_BYTES, path), path)
            wanted = file_names(meta)
            missing = [n for n in wanted if n not in by_name]
            if missing:
                raise SogError(f"{path} lacks {', '.join(missing)}", hint="the bundle is incomplete")
            limit = max_member_bytes(splat_count(meta))
            blobs = {n: _read_member(zf, by_name[n], limit, path) for n in wanted}
    except zipfile.BadZipFile as exc:
        raise SogError(f"{path} is not a valid .sog (ZIP) file: {exc}", hint="copy the file again") from exc
    except (OSError, EOFError, NotImplementedError, RuntimeError) as exc:  # truncated, unknown method, encrypted
        raise SogError(f"{path}: cannot read the bundle ({exc})", hint="copy the file again") from exc
    return meta, blobs, path.stat().st_size


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int, path: Path) -> bytes:
    """One ZIP entry, refused before reading when it declares more than ``limit`` bytes (zipfile never reads
    past the declared size, and checks the CRC)."""
    if info.file_size > limit:
        raise SogError(f"{path}: entry {info.filename} declares {info.file_size:,} bytes, more than the "
                       f"{limit:,} this SOG can hold", hint=BOMB_HINT)
    data = zf.read(info)
    if len(data) > limit:  # pragma: no cover - zipfile stops at the declared size
        raise SogError(f"{path}: entry {info.filename} is larger than it declares", hint=BOMB_HINT)
    return data


def _parse_meta(raw: bytes, path: Path) -> dict[str, Any]:
    meta = parse_json(raw, f"{path}: meta.json", max_bytes=MAX_META_BYTES, error=SogError, hint=META_HINT)
    if not isinstance(meta, dict) or "means" not in meta:
        raise SogError(f"{path}: meta.json has no 'means' entry", hint="this is not a SOG v1/v2 meta.json")
    return meta


def file_names(meta: dict[str, Any]) -> list[str]:
    names: list[str] = []
    absent = [key for key in FILE_COUNTS if key != "shN" and meta.get(key) is None]
    if absent:
        raise SogError(f"meta.json has no {absent[0]!r} entry", hint="this is not a complete SOG meta.json")
    for key, count in FILE_COUNTS.items():
        entry = meta.get(key)
        if entry is None:
            continue
        files = entry.get("files") if isinstance(entry, dict) else None
        if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
            raise SogError(f"meta.json entry {key!r} has no file list", hint="the meta.json is damaged")
        if len(files) != count:
            raise SogError(f"meta.json entry {key!r} names {len(files)} files; it must name {count}",
                           hint="the meta.json is damaged")
        for f in files:
            if not f or "/" in f or "\\" in f or f.startswith(".") or f == "meta.json":
                raise SogError(f"meta.json names an unsafe file path {f!r}", hint="file names must be plain names")
        names += files
    return names
