"""Ingest stage: photos, a .zip of photos, a video or an S3 prefix in; a folder of checked, resized images out.

``ingest(source, out_dir)`` writes ``out_dir/images/*.jpg|png`` and ``out_dir/ingest-report.json`` (atomically:
nothing appears at ``out_dir`` unless the whole stage succeeds) and returns the report::

    {"source": str, "source_kind": "folder"|"zip"|"video"|"s3", "content": "photos"|"zip"|"video",
     "kept": [output names], "rejected": {source name: reason}, "images": {output name: {...}},
     "counts": {...}, "max_side": int, "seconds": float}

Safety: archive entries that would escape the folder (``../``, absolute paths, drive letters), symlinks and
encrypted entries refuse the whole archive; archives over ``max_archive_bytes`` (file size or total unpacked size)
are refused; images whose header claims more than ``max_pixels`` pixels are rejected before decoding. An S3 prefix
is listed first: only photos, videos and zips are downloaded (other objects are reported as rejected), and a prefix
holding more than ``max_archive_bytes`` of them, or more than ``MAX_ARCHIVE_ENTRIES`` objects, is refused before
anything is downloaded. A failed run leaves nothing behind, not even the parent folders it created.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import stat
import tempfile
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from PIL import Image

from splatflow import imaging
from splatflow.errors import ImageError, InputError, OutputExistsError
from splatflow.fsutil import atomic_path, cleans_up_on_sigterm, made_parents
from splatflow.options import STAGE_OPTIONS, check_options
from splatflow.progress import progress, step

__all__ = [
    "FLAT", "FRAME_BLUR_RATIO", "FRAME_DUPLICATE", "JPEG_QUALITY", "MAX_ARCHIVE_ENTRIES", "PHOTO_BLUR_RATIO",
    "PHOTO_DUPLICATE", "check_out_dir", "fingerprint", "ingest"
]

log = logging.getLogger(__name__)

#: Two photos closer than this (mean absolute thumbnail difference, 0..255) are near-duplicates.
PHOTO_DUPLICATE = 1.5
#: Two kept video frames closer than this are near-duplicates (the camera did not move).
FRAME_DUPLICATE = 3.0
#: A video frame whose sharpness is under this fraction of the median of the selected frames is blurred.
FRAME_BLUR_RATIO = 0.35
#: Photos are rejected as blurred only when far below the set's median (they were chosen by a person).
PHOTO_BLUR_RATIO = 0.1
#: Sharpness below this (at SHARPNESS_SIDE) means a flat frame: black, white, lens cap.
FLAT = 2.0
#: Most zip entries read, whatever their kind (a guard against archives of millions of tiny files).
MAX_ARCHIVE_ENTRIES = 100_000
JPEG_QUALITY = 95
_O = STAGE_OPTIONS["ingest"]


@dataclass
class _Result:
    """What ingest keeps: output name -> metadata; rejected: source name -> reason."""

    kept: dict[str, dict[str, Any]] = field(default_factory=dict)
    rejected: dict[str, str] = field(default_factory=dict)


@cleans_up_on_sigterm
def ingest(source: str, out_dir: Path, *, max_images: int = _O["max_images"].default,
           max_side: int = _O["max_side"].default, video_frames: int = _O["video_frames"].default,
           max_archive_bytes: int = _O["max_archive_bytes"].default, max_pixels: int = imaging.DEFAULT_MAX_PIXELS,
           overwrite: bool = False) -> dict[str, Any]:
    """Read photos/zip/video/S3 ``source`` into ``out_dir/images`` and write ``out_dir/ingest-report.json``.

    Raises InputError/ImageError for unusable input (nothing is written), StorageError for S3 problems.
    """
    start = time.monotonic()
    source = str(source)
    out_dir = Path(out_dir)
    check_options("ingest", max_images=max_images, max_side=max_side, video_frames=video_frames,
                  max_archive_bytes=max_archive_bytes)
    check_out_dir(out_dir, overwrite=overwrite)
    kind, local = _resolve(source)
    with made_parents(out_dir), \
            tempfile.TemporaryDirectory(prefix=f".{out_dir.name}.work.", dir=out_dir.parent) as work_s, \
            atomic_path(out_dir, directory=True) as tmp:
        work = Path(work_s)
        skipped: dict[str, str] = {}
        if kind == "s3":
            local, skipped = _download(source, work / "s3", max_archive_bytes=max_archive_bytes)
        images = tmp / "images"
        images.mkdir()
        content, result = _ingest_local(local, work, images, max_images=max_images, max_side=max_side,
                                        video_frames=video_frames, max_archive_bytes=max_archive_bytes,
                                        max_pixels=max_pixels)
        result.rejected.update(skipped)
        _check_count(source, result)
        report = {
            "source": source,
            "source_kind": kind,
            "content": content,
            "kept": sorted(result.kept),
            "rejected": result.rejected,
            "images": {k: result.kept[k] for k in sorted(result.kept)},
            "counts": {"kept": len(result.kept), "rejected": len(result.rejected)},
            "max_side": max_side,
            "seconds": round(time.monotonic() - start, 3),
        }
        (tmp / "ingest-report.json").write_text(json.dumps(report, indent=2))
    step(f"ingest: kept {len(result.kept)} images, rejected {len(result.rejected)} -> {out_dir}")
    return report


# ---------------------------------------------------------------------------- source resolution
def check_out_dir(out_dir: Path, *, overwrite: bool) -> None:
    """An existing output folder must be empty (a fresh KFP output path) unless ``overwrite`` (also used by sfm)."""
    if out_dir.exists():
        if not out_dir.is_dir():
            raise OutputExistsError(f"output {out_dir} exists and is not a folder", hint="choose another path")
        if any(out_dir.iterdir()) and not overwrite:
            raise OutputExistsError(f"output folder {out_dir} already exists and is not empty",
                                    hint="pass --overwrite to replace it, or choose another path")


def fingerprint(source: str) -> str:
    """A content fingerprint of what ``ingest(source, ...)`` reads: ``sha256:<hex>`` over the sorted (relative
    name, size, content hash) of every file below ``source`` (a folder, a file, ``file://`` or ``s3://``).

    Local files are hashed (SHA-256); S3 objects are represented by their ETag, which changes with their content.
    The same photos at the same address give the same fingerprint, so the pipeline's ingest task can be cached
    on it; a changed, added, renamed or removed photo gives another. Raises InputError for a missing source.
    """
    from splatflow import storage

    if source.startswith("s3://"):
        objects = storage.list_objects(source, max_count=MAX_ARCHIVE_ENTRIES)
        if not objects and storage.exists(source):  # a single object (a .zip or a video)
            st = storage.stat(source)
            entries = [(PurePosixPath(source).name, st["size"], st["etag"] or st["sha256"] or "")]
        else:
            entries = [(storage.relative_name(o.uri, source), o.size, o.etag) for o in objects]
        if not entries:
            raise InputError(f"nothing under {source}: the prefix is empty or does not exist",
                             hint="check the prefix: s3://bucket/path/ holding the photos, a .zip or a video")
    else:
        _, path = _resolve(source)
        files = [(path.name, path)] if path.is_file() else [(rel, p) for rel, p in _walk(path) if p.is_file()]
        entries = [(rel, p.stat().st_size, storage.sha256_file(p)) for rel, p in files]
    digest = hashlib.sha256()
    for rel, size, content in sorted(entries):
        digest.update(f"{rel}\0{size}\0{content}\n".encode())
    return f"sha256:{digest.hexdigest()}"


def _resolve(source: str) -> tuple[str, Path]:
    """Classify ``source`` as s3 / zip / video / folder; local kinds must exist. Returns (kind, local path)."""
    if source.startswith("s3://"):
        return "s3", Path()
    if source.startswith("file:"):
        from splatflow.storage import parse

        loc = parse(source)
        assert loc.path is not None
        path = loc.path
    elif "://" in source:
        raise InputError(f"unsupported source {source!r}",
                         hint="give a folder, a .zip, a video file, file:///path or s3://bucket/prefix")
    else:
        path = Path(source)
    if not path.exists():
        raise InputError(f"source {source} does not exist", hint="check the path")
    if path.is_dir():
        return "folder", path
    return _file_kind(path), path


def _file_kind(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in imaging.ARCHIVE_SUFFIXES or (suffix not in imaging.VIDEO_SUFFIXES and zipfile.is_zipfile(path)):
        return "zip"
    if suffix in imaging.VIDEO_SUFFIXES:
        return "video"
    if suffix in imaging.image_suffixes():
        return "folder"  # a single photo: handled like a folder of one (and refused as too few)
    raise InputError(f"source {path} is neither a folder, a .zip, a video ({', '.join(imaging.VIDEO_SUFFIXES)}) "
                     "nor a photo", hint="give a folder of photos, a .zip of photos or a video file")


def _download(uri: str, dest: Path, *, max_archive_bytes: int) -> tuple[Path, dict[str, str]]:
    """Download an S3 object (a .zip or a video), or the photos, videos and zips under an S3 prefix, into ``dest``.

    Returns the local path and the objects left out (relative name -> reason). The prefix is listed first: one with
    nothing usable, more than MAX_ARCHIVE_ENTRIES objects or more than ``max_archive_bytes`` of usable ones is
    refused (InputError) before anything is downloaded.
    """
    from splatflow import storage

    name = PurePosixPath(uri[5:]).name
    single = Path(name).suffix.lower() in imaging.ARCHIVE_SUFFIXES + imaging.VIDEO_SUFFIXES
    if single and storage.exists(uri):
        size = storage.stat(uri)["size"]
        if Path(name).suffix.lower() in imaging.ARCHIVE_SUFFIXES and size > max_archive_bytes:
            raise InputError(f"archive {uri} is {size:,} bytes, over the limit of {max_archive_bytes:,}",
                             hint="split it, or raise max_archive_bytes (--max-archive-bytes)")
        step(f"ingest: downloading {uri}")
        return storage.download(uri, dest / name), {}
    objects = storage.list_objects(uri, max_count=MAX_ARCHIVE_ENTRIES)
    if not objects:
        raise InputError(f"nothing under {uri}: the prefix is empty or does not exist",
                         hint="check the prefix: s3://bucket/path/ holding the photos, a .zip or a video")
    wanted = imaging.PHOTO_SUFFIXES + imaging.HEIC_SUFFIXES + imaging.VIDEO_SUFFIXES + imaging.ARCHIVE_SUFFIXES
    keep: list[storage.ObjectInfo] = []
    skipped: dict[str, str] = {}
    for obj in objects:
        rel = storage.relative_name(obj.uri, uri)
        if PurePosixPath(rel).suffix.lower() in wanted:
            keep.append(obj)
        else:
            skipped[rel] = "not a photo, video or zip (not downloaded)"
    if not keep:
        shown = ", ".join(list(skipped)[:5]) + (" ..." if len(skipped) > 5 else "")
        raise InputError(f"no photos, videos or zips under {uri} ({len(skipped)} other object(s): {shown})",
                         hint=f"upload the photos ({', '.join(imaging.PHOTO_SUFFIXES)}), a .zip or a video there")
    total = sum(obj.size for obj in keep)
    if total > max_archive_bytes:
        raise InputError(f"the {len(keep)} photos/videos/zips under {uri} total {total:,} bytes, over the limit of "
                         f"{max_archive_bytes:,}", hint="ingest a smaller set, or raise max_archive_bytes "
                                                        "(--max-archive-bytes)")
    step(f"ingest: downloading {len(keep)} objects ({total:,} bytes) under {uri}")
    storage.download_prefix(uri, dest, only=[obj.uri for obj in keep])
    return dest, skipped


def _ingest_local(local: Path, work: Path, images: Path, *, max_images: int, max_side: int, video_frames: int,
                  max_archive_bytes: int, max_pixels: int) -> tuple[str, _Result]:
    """Dispatch on what ``local`` holds: a zip, a video, or a folder (of photos, or of one zip/video)."""
    if local.is_file():
        kind = _file_kind(local)
        if kind == "zip":
            folder, damaged = _extract_zip(local, work / "zip", max_archive_bytes=max_archive_bytes)
            result = _photos(folder, images, max_images=max_images, max_side=max_side, max_pixels=max_pixels)
            result.rejected.update(damaged)
            return "zip", result
        if kind == "video":
            return "video", _video(local, images, frames=min(video_frames, max_images), max_side=max_side)
        return "photos", _photos_from([(local.name, local)], images, max_images=max_images, max_side=max_side,
                                      max_pixels=max_pixels)
    files = list(_walk(local))
    photo_suffixes = imaging.image_suffixes()
    has_photos = any(p.suffix.lower() in photo_suffixes for _, p in files)
    others = [p for _, p in files if p.suffix.lower() in imaging.VIDEO_SUFFIXES + imaging.ARCHIVE_SUFFIXES]
    if not has_photos and len(others) == 1:
        return _ingest_local(others[0], work, images, max_images=max_images, max_side=max_side,
                             video_frames=video_frames, max_archive_bytes=max_archive_bytes, max_pixels=max_pixels)
    return "photos", _photos(local, images, max_images=max_images, max_side=max_side, max_pixels=max_pixels)


def _walk(root: Path) -> Iterator[tuple[str, Path]]:
    """Every entry below ``root`` as (relative POSIX name, path), sorted; symlinks are yielded, not followed."""
    for p in sorted(root.rglob("*")):
        if p.is_symlink() or p.is_file():
            yield p.relative_to(root).as_posix(), p


# ---------------------------------------------------------------------------- zip archives
def _extract_zip(archive: Path, dest: Path, *, max_archive_bytes: int) -> tuple[Path, dict[str, str]]:
    """Extract a zip's regular files into ``dest`` after checking every entry; refuse the archive on any danger.

    Returns ``dest`` and the damaged entries (name -> reason), which are left out.
    """
    size = archive.stat().st_size
    if size > max_archive_bytes:
        raise InputError(f"archive {archive.name} is {size:,} bytes, over the limit of {max_archive_bytes:,}",
                         hint="split it, or raise max_archive_bytes (--max-archive-bytes)")
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        raise InputError(f"{archive.name} is not a readable zip archive ({exc})", hint="re-create the archive") from exc
    with zf:
        infos = zf.infolist()
        if len(infos) > MAX_ARCHIVE_ENTRIES:
            raise InputError(f"archive {archive.name} has {len(infos):,} entries (limit {MAX_ARCHIVE_ENTRIES:,})",
                             hint="put only the photos in the archive")
        total = 0
        for info in infos:
            _check_entry(archive.name, info)
            total += info.file_size
        if total > max_archive_bytes:
            raise InputError(f"archive {archive.name} unpacks to {total:,} bytes, over the limit of "
                             f"{max_archive_bytes:,} (a zip bomb?)", hint="raise max_archive_bytes if it is real")
        dest.mkdir(parents=True)
        written = 0
        damaged: dict[str, str] = {}
        for info in infos:
            if info.is_dir():
                continue
            target = dest.joinpath(*PurePosixPath(_entry_name(info)).parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                with zf.open(info) as src, open(target, "wb") as out:
                    while chunk := src.read(1 << 20):
                        written += len(chunk)
                        if written > max_archive_bytes:
                            raise InputError(f"archive {archive.name} unpacks to more than {max_archive_bytes:,} "
                                             "bytes (its sizes lie)", hint="re-create the archive")
                        out.write(chunk)
            except (zipfile.BadZipFile, OSError, EOFError) as exc:
                target.unlink(missing_ok=True)
                damaged[info.filename] = f"damaged archive entry ({exc})"
    return dest, damaged


_DRIVE = re.compile(r"^[A-Za-z]:")


def _entry_name(info: zipfile.ZipInfo) -> str:
    """The entry's path with Windows separators (written by some old zip tools) turned into '/'."""
    return info.filename.replace("\\", "/")


def _check_entry(archive: str, info: zipfile.ZipInfo) -> None:
    name = info.filename
    parts = PurePosixPath(_entry_name(info)).parts
    if name.startswith(("/", "\\")) or _DRIVE.match(name) or ".." in parts:
        raise InputError(f"archive {archive} refused: entry {name!r} would be written outside the target folder "
                         "(zip slip)", hint="re-create the archive with plain relative paths")
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        raise InputError(f"archive {archive} refused: entry {name!r} is a symbolic link",
                         hint="re-create the archive without links (zip without -y)")
    if info.flag_bits & 0x1:
        raise InputError(f"archive {archive} refused: entry {name!r} is encrypted",
                         hint="re-create the archive without a password")


# ---------------------------------------------------------------------------- photos
def _photos(folder: Path, images: Path, *, max_images: int, max_side: int, max_pixels: int) -> _Result:
    """Photos of a folder (recursively); other files are reported as rejected."""
    candidates: list[tuple[str, Path]] = []
    result = _Result()
    suffixes = imaging.image_suffixes()
    for rel, path in _walk(folder):
        name = PurePosixPath(rel).name
        if name.startswith(".") or rel.startswith("__MACOSX/"):
            result.rejected[rel] = "hidden or system file"
        elif path.is_symlink():
            result.rejected[rel] = "symbolic link (not followed)"
        elif path.suffix.lower() in suffixes:
            candidates.append((rel, path))
        elif path.suffix.lower() in imaging.HEIC_SUFFIXES:
            result.rejected[rel] = "HEIC/HEIF is not supported here (pip install pillow-heif, or convert to JPEG)"
        else:
            result.rejected[rel] = f"not a photo ({path.suffix or 'no suffix'}); accepted: {', '.join(suffixes)}"
    sub = _photos_from(candidates, images, max_images=max_images, max_side=max_side, max_pixels=max_pixels)
    result.kept.update(sub.kept)
    result.rejected.update(sub.rejected)
    return result


def _photos_from(candidates: list[tuple[str, Path]], images: Path, *, max_images: int, max_side: int,
                 max_pixels: int) -> _Result:
    result = _Result()
    if len(candidates) > max_images:
        pick = set(np.linspace(0, len(candidates) - 1, max_images).round().astype(int).tolist())
        for i, (rel, _) in enumerate(candidates):
            if i not in pick:
                result.rejected[rel] = f"over max_images={max_images} (evenly subsampled)"
        candidates = [c for i, c in enumerate(candidates) if i in pick]
    digests: dict[str, str] = {}
    thumbs: list[tuple[str, np.ndarray]] = []
    loaded: list[tuple[str, Path, Image.Image, bytes, float]] = []
    for rel, path in progress(candidates, total=len(candidates), desc="ingest photos"):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest in digests:
            result.rejected[rel] = f"duplicate of {digests[digest]} (identical file)"
            continue
        try:
            im, exif = imaging.load_image(path, max_side=max_side, max_pixels=max_pixels)
        except ImageError as exc:
            result.rejected[rel] = exc.message
            continue
        digests[digest] = rel
        thumb = imaging.thumbnail(im)
        twin = next((other for other, t in thumbs if imaging.difference(thumb, t) < PHOTO_DUPLICATE), None)
        if twin is not None:
            result.rejected[rel] = f"near-duplicate of {twin}"
            continue
        thumbs.append((rel, thumb))
        loaded.append((rel, path, im, exif, imaging.image_sharpness(im)))
    median = float(np.median([s for *_, s in loaded])) if loaded else 0.0
    used: set[str] = set()
    for rel, path, im, exif, sharp in loaded:
        if sharp < FLAT or (len(loaded) >= 5 and sharp < PHOTO_BLUR_RATIO * median):
            result.rejected[rel] = f"blurred or featureless (sharpness {sharp:.1f}, set median {median:.1f})"
            continue
        name = _output_name(rel, path.suffix.lower() == ".png", used)
        _save(im, images / name, exif)
        result.kept[name] = {"from": rel, "width": im.width, "height": im.height, "sharpness": round(sharp, 2)}
    return result


def _output_name(rel: str, png: bool, used: set[str]) -> str:
    """A flat, safe, unique file name for ``rel`` (sub-folders joined with '_'); PNG stays PNG, the rest JPEG."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", str(PurePosixPath(rel).with_suffix("")).replace("/", "_")).strip("._")
    stem = stem or "image"
    suffix = ".png" if png else ".jpg"
    name, n = stem + suffix, 2
    while name.lower() in used:
        name, n = f"{stem}-{n}{suffix}", n + 1
    used.add(name.lower())
    return name


def _save(im: Image.Image, path: Path, exif: bytes = b"") -> None:
    if path.suffix == ".png":
        im.save(path, format="PNG", exif=exif) if exif else im.save(path, format="PNG")
    else:
        im.save(path, format="JPEG", quality=JPEG_QUALITY, exif=exif)


# ---------------------------------------------------------------------------- video
def _video(path: Path, images: Path, *, frames: int, max_side: int) -> _Result:
    """Extract about ``frames`` frames evenly over the video: the sharpest frame of each time slot, then reject
    blurred and near-duplicate frames. Output names ``frame_<index>.jpg`` sort in time order."""
    import av

    result = _Result()
    picks: list[tuple[int, float, Image.Image]] = []  # (frame index, sharpness, image) per slot
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ImageError(f"{path.name} has no video stream", hint="give a video file or a folder of photos")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            total = stream.frames or _count_frames(path)
            if total <= 0:
                raise ImageError(f"{path.name} has no frames", hint="check the video plays")
            step(f"ingest: {path.name}: {total} frames, selecting {min(frames, total)}")
            best: tuple[int, float, Image.Image] | None = None
            slot = -1
            for i, frame in enumerate(progress(container.decode(stream), total=total, desc="ingest video")):
                this = min(frames - 1, i * frames // total)
                if this != slot and best is not None:
                    picks.append(best)
                    best = None
                slot = this
                # sharpness on a small grayscale copy (scaled by FFmpeg); the full frame only for a new best
                w, h = imaging.fit_size((frame.width, frame.height), imaging.SHARPNESS_SIDE)
                sharp = imaging.sharpness(frame.to_ndarray(format="gray", width=w, height=h).astype(np.float32))
                if best is None or sharp > best[1]:
                    best = (i, sharp, _frame_image(frame, max_side))
            if best is not None:
                picks.append(best)
    except av.FFmpegError as exc:
        raise ImageError(f"{path.name}: the video cannot be decoded ({exc})",
                         hint="re-encode it as H.264 MP4, or give the photos instead") from exc
    median = float(np.median([s for _, s, _ in picks])) if picks else 0.0
    last: tuple[str, np.ndarray] | None = None
    for index, sharp, im in picks:
        name = f"frame_{index:06d}.jpg"
        if sharp < FLAT or sharp < FRAME_BLUR_RATIO * median:
            result.rejected[name] = f"blurred (sharpness {sharp:.1f} < {FRAME_BLUR_RATIO} x median {median:.1f})"
            continue
        thumb = imaging.thumbnail(im)
        if last is not None and (d := imaging.difference(thumb, last[1])) < FRAME_DUPLICATE:
            result.rejected[name] = f"near-duplicate of {last[0]} (difference {d:.2f})"
            continue
        last = (name, thumb)
        _save(im, images / name)
        result.kept[name] = {"from": f"{path.name}#frame={index}", "width": im.width, "height": im.height,
                             "sharpness": round(sharp, 2)}
    return result


def _frame_image(frame: Any, max_side: int) -> Image.Image:
    """A decoded video frame as an upright RGB image (the stream's display rotation applied), resized."""
    im = frame.to_image()
    if frame.rotation:
        im = im.rotate(frame.rotation, expand=True)  # counter-clockwise degrees, exact for multiples of 90
    if max(im.size) > max_side:
        im = im.resize(imaging.fit_size(im.size, max_side), Image.Resampling.LANCZOS)
    return im


def _count_frames(path: Path) -> int:
    """Count the video packets of a stream whose header does not give a frame count."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return sum(1 for packet in container.demux(stream) if packet.size)


# ---------------------------------------------------------------------------- checks
def _check_count(source: str, result: _Result) -> None:
    kept = len(result.kept)
    if kept >= imaging.MIN_IMAGES:
        return
    reasons = "; ".join(f"{k}: {v}" for k, v in list(result.rejected.items())[:5])
    more = f" (and {len(result.rejected) - 5} more)" if len(result.rejected) > 5 else ""
    if kept == 0:
        detail = f" — rejected: {reasons}{more}" if reasons else ""
        raise ImageError(f"no usable images in {source}{detail}",
                         hint="give a folder, zip or S3 prefix of JPEG/PNG photos, or a video")
    raise ImageError(f"only {kept} usable image(s) in {source}; structure from motion needs at least "
                     f"{imaging.MIN_IMAGES} overlapping photos" + (f" — rejected: {reasons}{more}" if reasons else ""),
                     hint="take 20 or more photos around the subject, each overlapping the next")

