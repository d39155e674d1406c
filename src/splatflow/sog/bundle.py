"""The SOG file set as a folder (meta.json + images) or a single ``.sog`` ZIP, as the PlayCanvas engine reads it.

The ZIP: entries STORED, meta.json first, no archive comment (the engine expects the end record exactly 22 bytes
from the end), no zip64 (a SOG is far below 4 GiB).
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

from splatflow.errors import SogError
from splatflow.fsutil import atomic_path


def meta_bytes(meta: dict[str, Any]) -> bytes:
    """meta.json bytes: compact JSON, NaN/Inf refused (the engine cannot read them)."""
    return json.dumps(meta, separators=(",", ":"), allow_nan=False).encode()


def write_zip(path: Path, files: dict[str, bytes]) -> None:
    """Write ``files`` (name -> bytes, meta.json first) as a STORED ZIP at ``path`` (a temporary path)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=False) as zf:
        for name, data in files.items():
            info = zipfile.ZipInfo(name, date_time=(2025, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_STORED
            info.external_attr = 0o644 << 16
            zf.writestr(info, data)


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


def read_files(path: Path) -> tuple[dict[str, Any], dict[str, bytes], int]:
    """Read a SOG set from a .sog ZIP, a meta.json or a folder: (meta, name -> bytes of every file meta names,
    total bytes of the set on disk)."""
    if not path.exists():
        raise SogError(f"{path}: no such file or folder", hint="check the path")
    if path.is_dir():
        path = path / "meta.json"
        if not path.exists():
            raise SogError(f"{path.parent} has no meta.json", hint="give a SOG folder, its meta.json or a .sog file")
    if path.suffix.lower() == ".sog" or zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as zf:
                names = set(zf.namelist())
                if "meta.json" not in names:
                    raise SogError(f"{path} has no meta.json entry", hint="this is not a SOG bundle")
                meta = _parse_meta(zf.read("meta.json"), path)
                wanted = _file_names(meta)
                missing = [n for n in wanted if n not in names]
                if missing:
                    raise SogError(f"{path} lacks {', '.join(missing)}", hint="the bundle is incomplete")
                blobs = {n: zf.read(n) for n in wanted}
        except zipfile.BadZipFile as exc:
            raise SogError(f"{path} is not a valid .sog (ZIP) file: {exc}", hint="copy the file again") from exc
        return meta, blobs, path.stat().st_size
    meta_raw = path.read_bytes()
    meta = _parse_meta(meta_raw, path)
    base = path.parent
    blobs = {}
    for n in _file_names(meta):
        f = base / n
        if not f.is_file():
            raise SogError(f"{path} names {n}, which is missing beside it", hint="copy the whole SOG folder")
        blobs[n] = f.read_bytes()
    return meta, blobs, len(meta_raw) + sum(len(b) for b in blobs.values())


def _parse_meta(raw: bytes, path: Path) -> dict[str, Any]:
    try:
        meta = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SogError(f"{path}: meta.json is not valid JSON ({exc})", hint="the SOG set is damaged") from exc
    if not isinstance(meta, dict) or "means" not in meta:
        raise SogError(f"{path}: meta.json has no 'means' entry", hint="this is not a SOG v1/v2 meta.json")
    return meta


def _file_names(meta: dict[str, Any]) -> list[str]:
    names: list[str] = []
    for key in ("means", "scales", "quats", "sh0", "shN"):
        entry = meta.get(key)
        if entry is None:
            if key == "shN":
                continue
            raise SogError(f"meta.json has no {key!r} entry", hint="this is not a complete SOG meta.json")
        files = entry.get("files") if isinstance(entry, dict) else None
        if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
            raise SogError(f"meta.json entry {key!r} has no file list", hint="the meta.json is damaged")
        for f in files:
            if "/" in f or "\\" in f or f.startswith("."):
                raise SogError(f"meta.json names an unsafe file path {f!r}", hint="file names must be plain names")
        names += files
    return names
