"""Publish stage: a run's results under ``output_uri/<scene>/<run_id>/``, written so no reader sees half of them.

Layout of one run (``output_uri`` is ``s3://bucket/prefix``, ``file:///path`` or a local path)::

    <scene>/<run_id>/<scene>.sog          the single-file SOG bundle (files["sog"])
    <scene>/<run_id>/sog/meta.json ...    the SOG folder: meta.json + WebP images (files["meta"], or the .sog's
                                          own files with ``unpack_sog=True``, as the pipeline publishes)
    <scene>/<run_id>/<scene>.ply          the trained source PLY (files["ply"], optional)
    <scene>/<run_id>/reports/<name>.json  each stage report (``reports``)
    <scene>/<run_id>/index.html, index.js, index.css, LICENSE-supersplat-viewer.txt, settings.json
                                          the viewer page (PlayCanvas SuperSplat viewer, camera fitted to the scene)
    <scene>/<run_id>/manifest.json        written LAST: size + SHA-256 of every object above; marks the run complete
    <scene>/latest.json                   moved to this run only after its manifest exists

Order: the inputs are checked to be what they claim (a SOG bundle or folder whose images fit its meta.json, a
PLY with the data its header declares; a SOG folder contributes only its own files, and no symbolic link is
followed); the run's lock is taken (:class:`RunLock`: one writer per run id, a second one fails at once with
OutputBusyError); every object is uploaded with its SHA-256 (objects already there with the same SHA-256 are
skipped, so a re-run or a resumed run uploads only what is missing) and checked as the server stored it
(:func:`splatflow.storage.verify_stored`; a copy that differs is uploaded again); stale objects of an earlier
publish of the same run id are removed; then ``manifest.json``; then ``latest.json``; then the lock is released.
An interrupted publish (SIGTERM and Ctrl-C included) leaves no manifest for the broken run, no temporary file
and the previous ``latest.json`` untouched. Publishing the same inputs again yields byte-identical objects (the
manifest and pointer carry no timestamps).
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import stat
import tempfile
import threading
import time
import uuid
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import unquote, urlparse

from splatflow import __version__, spec, storage
from splatflow.errors import InputError, OutputBusyError, OutputExistsError, PlyError, SogError, StorageError
from splatflow.fsutil import cleans_up_on_sigterm
from splatflow.limits import MAX_REPORT_BYTES, parse_json

__all__ = [
    "CONTACT_SHEET", "FILE_KEYS", "LATEST", "LOCK_TTL_ENV", "MANIFEST", "MANIFEST_FORMAT", "UPLOAD_ATTEMPTS",
    "RunLock", "lock_uri", "publish", "published_files", "published_run", "read_latest", "read_manifest",
    "run_summary", "scene_name"
]

log = logging.getLogger("splatflow.publish")

MANIFEST = "manifest.json"
LATEST = "latest.json"
MANIFEST_FORMAT = "splatflow-run/1"
FILE_KEYS = ("sog", "meta", "ply", "contact_sheet")
CONTACT_SHEET = spec.stage("train").files["contact_sheet"]  # the name training writes and the page links
"""Where the training run's contact sheet (held-out photos beside their renders) lands, next to the viewer page."""
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_PARALLEL = 4


def _check_name(kind: str, value: str) -> str:
    if not isinstance(value, str) or not _NAME.match(value) or ".." in value:
        raise InputError(f"{kind} {value!r} is not a usable name",
                         hint=f"use 1-128 letters, digits, '.', '_' or '-' for the {kind}, starting with a letter "
                              "or digit")
    return value


def scene_name(source_uri: str) -> str:
    """A short, URL-safe scene name from a source URI: ``s3://b/scans/Lund Cathedral.zip`` -> ``lund-cathedral``."""
    parsed = urlparse(source_uri)
    path = unquote(parsed.path if parsed.scheme in ("file", "s3", "http", "https") else source_uri)
    parts = [p for p in re.split(r"[\\/]+", path) if p]
    stem = parts[-1] if parts else (parsed.netloc or "scene")
    for suffix in (".zip", ".mp4", ".mov", ".m4v", ".avi", ".mkv", ".webm", ".tar", ".gz"):
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
    slug = re.sub(r"[^a-z0-9]+", "-", stem.lower()).strip("-")
    return slug[:63] or "scene"


def _unpack_sog(sog: Path, dest: Path) -> Path:
    """The files of a .sog bundle (meta.json + the WebP images it names) written to the folder ``dest``."""
    from splatflow.sog.bundle import read_files

    _, blobs, _ = read_files(sog)  # validates the bundle and that every name is a plain file name
    with zipfile.ZipFile(sog) as zf:
        meta = zf.read("meta.json")  # the bundle's own bytes, so the folder and the bundle agree exactly
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "meta.json").write_bytes(meta)
    for name, data in blobs.items():
        (dest / name).write_bytes(data)
    return dest


def _regular_file(path: Path, what: str) -> Path:
    """``path`` if it is a regular file and not a symbolic link (never followed: a link to a secret file would
    publish its content)."""
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        raise InputError(f"{what} {path} does not exist", hint="check the path") from None
    if stat.S_ISLNK(mode):
        raise InputError(f"{what} {path} is a symbolic link; publish never follows links",
                         hint="pass the real file (copy it in place of the link)")
    if not stat.S_ISREG(mode):
        raise InputError(f"{what} {path} is not a regular file", hint="check the path")
    return path


def _check_sog(files: dict[str, bytes], meta: dict[str, Any], where: Path) -> None:
    """A SOG set is what it claims: every image a WebP of the size its meta.json's count needs (headers only)."""
    from splatflow.sog.bundle import splat_count
    from splatflow.sog.decode import check_images

    try:
        check_images(meta, files, splat_count(meta))
    except SogError as exc:
        raise SogError(f"{where}: {exc.message}", hint=exc.hint) from exc


def _sog_objects(sog: Path, scene: str) -> tuple[str, Path]:
    """The .sog bundle, validated (a ZIP with meta.json and every image it names, of the right sizes)."""
    from splatflow.sog.bundle import read_files

    _regular_file(sog, "files['sog'] =")
    if sog.suffix.lower() != ".sog":
        raise InputError(f"files['sog'] = {sog} is not a .sog file", hint="pass the bundle written by compress")
    meta, blobs, _ = read_files(sog)
    _check_sog(blobs, meta, sog)
    return f"{scene}.sog", sog


def _meta_objects(meta_path: Path) -> list[tuple[str, Path]]:
    """A SOG folder's own files only (meta.json and the images it names), each a regular file and no link."""
    from splatflow.sog.bundle import read_files

    folder = meta_path.parent if meta_path.name == "meta.json" else meta_path
    if folder.is_symlink():
        raise InputError(f"files['meta'] = {folder} is a symbolic link; publish never follows links",
                         hint="pass the real SOG folder")
    if not folder.is_dir() or not (folder / "meta.json").exists():
        raise InputError(f"files['meta'] = {meta_path} is not a SOG folder with a meta.json",
                         hint="pass the folder (or its meta.json) written by compress")
    _regular_file(folder / "meta.json", "the SOG folder's")
    meta, blobs, _ = read_files(folder)
    names = ["meta.json", *blobs]
    for name in names:
        _regular_file(folder / name, "the SOG folder's file")
    _check_sog(blobs, meta, folder)
    return [(f"sog/{name}", folder / name) for name in sorted(names)]


_PLY_TYPES = {"char": 1, "uchar": 1, "int8": 1, "uint8": 1, "short": 2, "ushort": 2, "int16": 2, "uint16": 2,
              "int": 4, "uint": 4, "int32": 4, "uint32": 4, "float": 4, "float32": 4, "double": 8, "float64": 8}
_PLY_HEADER_MAX = 1 << 20


def _check_ply(path: Path) -> None:
    """A PLY is what it claims: the ``ply`` magic, a header with a vertex element that ends within 1 MiB, and
    (binary, fixed-size rows) at least as many data bytes as the header declares."""
    _regular_file(path, "files['ply'] =")
    with open(path, "rb") as f:
        head = f.read(_PLY_HEADER_MAX)
    end = head.find(b"end_header")
    newline = head.find(b"\n", end) if end >= 0 else -1
    if not head.startswith(b"ply") or newline < 0:
        raise PlyError(f"files['ply'] = {path} is not a PLY file (no 'ply' magic and header)",
                       hint="pass the trained PLY (splats.ply), or leave it out")
    lines = head[:end].decode("ascii", "replace").splitlines()
    fmt = next((ln.split()[1] for ln in lines if ln.startswith("format ") and len(ln.split()) > 1), "")
    elements: list[tuple[str, int, int | None]] = []  # (name, count, row bytes or None for list rows)
    for ln in lines:
        parts = ln.split()
        if parts[:1] == ["element"] and len(parts) == 3 and parts[2].isdigit():
            elements.append((parts[1], int(parts[2]), 0))
        elif parts[:1] == ["property"] and elements and len(parts) >= 3:
            name, count, row = elements[-1]
            size = _PLY_TYPES.get(parts[1]) if parts[1] != "list" else None
            elements[-1] = (name, count, None if row is None or size is None else row + size)
    if not any(name == "vertex" and count > 0 for name, count, _ in elements):
        raise PlyError(f"files['ply'] = {path} has no vertices", hint="pass the trained PLY, or leave it out")
    if fmt.startswith("binary") and all(row is not None for _, _, row in elements):
        need = newline + 1 + sum(count * (row or 0) for _, count, row in elements)
        if path.stat().st_size < need:
            raise PlyError(f"files['ply'] = {path} is truncated: its header declares {need:,} bytes, it has "
                           f"{path.stat().st_size:,}", hint="copy the file again, or leave it out")


def _collect_files(scene: str, files: dict[str, Path]) -> tuple[list[tuple[str, Path]], str]:
    """Objects to publish from ``files`` as (relative name, local path), and the viewer's content name. Each file
    is checked to be what it claims (a SOG bundle, a SOG folder, a PLY); links are never followed."""
    unknown = sorted(set(files) - set(FILE_KEYS))
    if unknown:
        raise InputError(f"publish got unknown file keys {unknown}", hint=f"use {', '.join(FILE_KEYS)}")
    if not files.get("sog") and not files.get("meta"):
        raise InputError("publish needs the compressed scene", hint="pass files['sog'] (a .sog) or files['meta']")
    out: list[tuple[str, Path]] = []
    content = ""
    if files.get("sog"):
        out.append(_sog_objects(Path(files["sog"]), scene))
        content = f"{scene}.sog"
    if files.get("meta"):
        out += _meta_objects(Path(files["meta"]))
        content = content or "sog/meta.json"
    if files.get("ply"):
        ply = Path(files["ply"])
        _check_ply(ply)
        out.append((f"{scene}.ply", ply))
    if files.get("contact_sheet"):
        sheet = Path(files["contact_sheet"])
        _check_png(sheet)
        out.append((CONTACT_SHEET, sheet))
    return out, content


def published_files(sog_dir: Path, model_dir: Path) -> dict[str, Path]:
    """The pipeline's files to publish: the compress artifact's ``splats.sog`` and, when training wrote one, its
    contact sheet (``model_dir/contact-sheet.png``)."""
    files = {"sog": sog_dir / spec.stage("compress").files["sog"]}
    if (model_dir / CONTACT_SHEET).is_file():
        files["contact_sheet"] = model_dir / CONTACT_SHEET
    return files


def _check_png(path: Path) -> None:
    """A contact sheet is a PNG of sane size (the header is read, the pixels are not decoded)."""
    _regular_file(path, "files['contact_sheet'] =")
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            fmt, (w, h) = img.format, img.size
    except (UnidentifiedImageError, OSError):
        fmt, w, h = None, 0, 0
    if fmt != "PNG" or not (0 < w <= 8192 and 0 < h <= 65536):
        raise InputError(f"files['contact_sheet'] = {path} is not a PNG contact sheet",
                         hint="pass the training output's contact-sheet.png, or leave it out")


def run_summary(reports: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The headline numbers of a run from its stage reports: splats, bytes, ratio, PSNR/SSIM, seconds per stage.

    Values missing from the reports are left out. PSNR/SSIM (the scene against photos) come from an
    ``evaluate`` report when there is one (``psnr``), else from training's held-out views (``psnr_test``);
    ``codec_psnr`` is how closely the published SOG renders like the trained PLY (the compress report's
    ``fidelity``). A stage's time is its report's ``seconds``, else ``timings.total`` (the sfm report).
    """
    out: dict[str, Any] = {}
    comp = reports.get("compress", {})
    for key in ("splats", "bytes", "bytes_per_splat", "ratio"):
        if key in comp:
            value = comp[key]  # counts read back from KFP task outputs arrive as floats (protobuf numbers)
            out[key] = int(value) if key in ("splats", "bytes") and float(value).is_integer() else value
    for metric in ("psnr", "ssim"):
        for name in ("evaluate", "train"):
            rep = reports.get(name, {})
            value = rep.get(metric, rep.get(f"{metric}_test"))
            if value is not None:
                out[metric] = value
                out[f"{metric}_source"] = name
                break
    fidelity = comp.get("fidelity")
    if isinstance(fidelity, dict) and fidelity.get("psnr") is not None:
        out["codec_psnr"] = fidelity["psnr"]
    seconds: dict[str, float] = {}
    for name, rep in reports.items():
        if not isinstance(rep, dict):
            continue
        value = rep.get("seconds", (rep.get("timings") or {}).get("total"))
        if isinstance(value, int | float):
            seconds[name] = value
    if seconds:
        out["seconds"] = seconds
        out["total_seconds"] = round(sum(seconds.values()), 3)
    return out


UPLOAD_ATTEMPTS = 3


def _upload_one(rel: str, path: Path, digest: str, size: int, base: str) -> bool:
    """Upload one object unless the same bytes are already there, then check what the server stored (the bytes,
    not the writer's description of them: :func:`splatflow.storage.verify_stored`); a stored copy that differs
    (a proxy or disk that changed it) is uploaded again. True when it was uploaded."""
    uri = storage.join(base, rel)
    uploaded = False
    fresh = storage.exists(uri) and _same(storage.stat(uri), size, digest)
    for attempt in range(1, UPLOAD_ATTEMPTS + 1):
        if not fresh:
            storage.upload(path, uri)
            uploaded = True
        if storage.verify_stored(uri, digest, size, local_path=path):
            return uploaded
        log.warning("the server holds different bytes for %s than were sent (attempt %d of %d)%s", uri, attempt,
                    UPLOAD_ATTEMPTS, "; uploading it again" if attempt < UPLOAD_ATTEMPTS else "")
        fresh = False
    raise StorageError(f"the server kept storing different bytes for {uri} than were uploaded "
                       f"({UPLOAD_ATTEMPTS} attempts; expected {size:,} bytes, sha256 {digest[:12]}...)",
                       hint="something between here and the store changes the data (a proxy, a faulty disk); "
                            "nothing was marked complete")


def _same(st: dict[str, Any], size: int, digest: str) -> bool:
    """Whether a :func:`storage.stat` result has this size and recorded SHA-256."""
    return st["size"] == size and st["sha256"] == digest


def _check_remote(rel: str, digest: str, size: int, base: str) -> None:
    """Raise StorageError unless the object at ``base/rel`` still has this size and recorded SHA-256."""
    uri = storage.join(base, rel)
    st = storage.stat(uri)
    if not _same(st, size, digest):
        raise StorageError(f"published object {uri} changed after it was checked "
                           f"({st['size']} bytes, sha256 {str(st['sha256'])[:12]}; expected {size}, {digest[:12]})",
                           hint="something else writes under this run id; publish again with a new run id")


LOCK_TTL_ENV = "SPLATFLOW_PUBLISH_LOCK_SECONDS"


def lock_uri(output_uri: str, scene: str, run_id: str) -> str:
    """Where a publish of ``scene``/``run_id`` under ``output_uri`` holds its lock while it writes."""
    return storage.join(output_uri, ".splatflow", "locks", scene, f"{run_id}.json")


class RunLock:
    """One writer per run id: a lock object created only if absent (S3 ``If-None-Match``, a hard link locally)
    and renewed while the publish runs (``If-Match`` on its ETag), so a second publish of the same run id fails
    at once with :class:`~splatflow.errors.OutputBusyError`. A lock left by a killed publish (not renewed for
    ``SPLATFLOW_PUBLISH_LOCK_SECONDS``, default 60) is taken over."""

    def __init__(self, output_uri: str, scene: str, run_id: str) -> None:
        raw = os.environ.get(LOCK_TTL_ENV, "").strip() or "60"
        if not raw.isdigit() or int(raw) < 10:
            raise InputError(f"{LOCK_TTL_ENV}={raw!r} is not a whole number of seconds >= 10",
                             hint="unset it for 60 s")
        self.ttl = int(raw)
        self.uri = lock_uri(output_uri, scene, run_id)
        self.what = storage.join(output_uri, scene, run_id)
        self.owner = uuid.uuid4().hex
        self.tag: str | None = None
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        self._tag_lock = threading.Lock()

    def _body(self) -> bytes:
        now = time.time()
        return json.dumps({"owner": self.owner, "host": socket.gethostname(), "pid": os.getpid(),
                           "renewed": now, "expires": now + self.ttl, "publishing": self.what}).encode()

    def __enter__(self) -> RunLock:
        loc = storage.parse(self.uri)
        self._made: list[Path] = []  # local folders this lock creates, removed again when they stay empty
        if loc.scheme == "file" and loc.path is not None:
            folder = loc.path.parent.absolute()
            while not folder.exists():
                self._made.append(folder)
                folder = folder.parent
        try:
            return self._acquire()
        except BaseException:
            self._remove_made()
            raise

    def _remove_made(self) -> None:
        for folder in self._made:
            try:
                folder.rmdir()
            except OSError:
                return  # not empty: the publish wrote there, or another writer's lock

    def _acquire(self) -> RunLock:
        if storage.create_object(self.uri, self._body()):
            found = storage.read_tagged(self.uri)
        else:
            found = storage.read_tagged(self.uri)
            holder = _lock_info(found[0]) if found else {}
            if found is not None and holder.get("expires", 0) > time.time():
                since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(holder.get("renewed", 0))))
                raise OutputBusyError(
                    f"{self.what} is being published by another process right now (host {holder.get('host', '?')}, "
                    f"pid {holder.get('pid', '?')}, lock renewed {since}); two writers would mix their results",
                    hint=f"wait for it to finish and publish again (what is already there is skipped), or use "
                         f"another run id; a lock left by a killed publish expires {self.ttl} s after its last "
                         f"renewal, or delete {self.uri} once you know no publish is running")
            if found is None:  # released between our try and our look: try once more
                if not storage.create_object(self.uri, self._body()):
                    raise OutputBusyError(f"{self.what} is being published by another process right now",
                                          hint="wait for it to finish, or use another run id")
                found = storage.read_tagged(self.uri)
            else:
                log.warning("taking over the expired publish lock of %s (host %s, pid %s)", self.what,
                            holder.get("host", "?"), holder.get("pid", "?"))
                if storage.replace_object(self.uri, self._body(), found[1]) is None:
                    raise OutputBusyError(f"{self.what}: another process took over its expired publish lock first",
                                          hint="wait for it to finish, or use another run id")
                found = storage.read_tagged(self.uri)
        if found is None or _lock_info(found[0]).get("owner") != self.owner:  # a store without conditional writes
            raise OutputBusyError(f"{self.what} is being published by another process right now",
                                  hint="wait for it to finish, or use another run id")
        self.tag = found[1]
        self._renewer = threading.Thread(target=self._renew, name="publish-lock", daemon=True)
        self._renewer.start()
        return self

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl / 4):
            try:
                with self._tag_lock:
                    assert self.tag is not None
                    tag = storage.replace_object(self.uri, self._body(), self.tag)
                    if tag is None:
                        self.lost.set()
                        return
                    self.tag = tag
            except Exception as exc:  # a network blip: the next renewal may succeed before the lock expires
                log.warning("could not renew the publish lock %s: %s", self.uri, exc)

    def check(self) -> None:
        """Raise OutputBusyError unless this process still holds the lock (called before the manifest)."""
        found = storage.read_tagged(self.uri)
        if self.lost.is_set() or found is None or _lock_info(found[0]).get("owner") != self.owner:
            raise OutputBusyError(f"{self.what}: this publish lost its lock (it was not renewed in time and "
                                  "another process took it over); nothing was marked complete",
                                  hint="publish again once the other writer is done, or use another run id")

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
        try:
            with self._tag_lock:
                found = storage.read_tagged(self.uri)
                if found is not None and _lock_info(found[0]).get("owner") == self.owner:
                    storage.delete(self.uri)
            self._remove_made()
        except Exception as err:  # the publish's own outcome matters more; the lock expires by itself
            log.warning("could not release the publish lock %s: %s", self.uri, err)


def _lock_info(raw: bytes) -> dict[str, Any]:
    try:
        info = json.loads(raw)
    except ValueError:
        return {}
    return info if isinstance(info, dict) else {}


def _check_inputs(output_uri: str, scene: str, run_id: str, files: dict[str, Path], reports: dict[str, dict],
                  viewer: bool, unpack_sog: bool) -> None:
    """Every check of :func:`publish`'s arguments, before any work (InputError / DependencyMissing)."""
    _check_name("scene", scene)
    _check_name("run id", run_id)
    storage.parse(output_uri)
    for name in reports:
        _check_name("report name", name)
    if unpack_sog and (not files.get("sog") or files.get("meta")):
        raise InputError("unpack_sog needs files['sog'] and no files['meta']",
                         hint="pass the .sog bundle; its files are published under sog/")
    for name, rep in reports.items():
        if not isinstance(rep, dict):
            raise InputError(f"report {name!r} is a {type(rep).__name__}, not a JSON object",
                             hint="pass each stage's report dict")
    _collect_files(scene, files)  # what each file is
    if viewer:
        from splatflow.viewer.page import assets_dir

        assets_dir()  # the viewer's files are there (DependencyMissing names the fix) before anything is written


def _report_objects(reports: dict[str, dict], tmp: Path) -> list[tuple[str, Path]]:
    """Each report as ``reports/<name>.json`` in ``tmp``: (relative name, path) pairs."""
    out = []
    for name, rep in sorted(reports.items()):
        path = tmp / "reports" / f"{name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(rep, indent=2, sort_keys=True, default=str) + "\n")
        out.append((f"reports/{name}.json", path))
    return out


def _page_objects(scene: str, content: str, files: dict[str, Path], reports: dict[str, dict],
                  page_dir: Path) -> tuple[list[tuple[str, Path]], str]:
    """The viewer page's files in ``page_dir`` as (relative name, path) pairs, and the viewer's version.

    A scene captured from inside (a street, a room) opens at a photo's own pose, which training reports; without
    one the camera frames the splats from outside (an object)."""
    from splatflow.viewer.page import build_page, capture_camera, scene_bounds, viewer_version

    sog_path = Path(files["sog"]) if files.get("sog") else Path(files["meta"])
    bounds, source = scene_bounds(sog=sog_path, ply=Path(files["ply"]) if files.get("ply") else None)
    pose = reports.get("train", {}).get("viewer_camera")
    camera = capture_camera(pose["position"], pose["target"]) if pose else None
    log.info("viewer camera %s", "at the training report's capture pose" if camera else f"fitted to {source}")
    paths = build_page(page_dir, content_name=content, title=scene, bounds=bounds, camera=camera)
    return [(path.relative_to(page_dir).as_posix(), path) for path in paths], viewer_version()


def _manifest(scene: str, run_id: str, content: str, viewer: bool, objects: list[tuple[str, Path]],
              reports: dict[str, dict], page_version: str | None) -> dict[str, Any]:
    """The run's manifest: every object's size, SHA-256 and content type, the run summary and versions."""
    names = [rel for rel, _ in objects]
    if len(set(names)) != len(names) or MANIFEST in names:
        raise InputError(f"two published objects would have the same name: {sorted(names)}",
                         hint="rename the report that clashes with a file name")
    entries: dict[str, dict[str, Any]] = {rel: {"bytes": path.stat().st_size, "sha256": storage.sha256_file(path),
                                                "content_type": storage.content_type(rel)}
                                          for rel, path in sorted(objects)}
    return {
        "format": MANIFEST_FORMAT,
        "scene": scene,
        "run_id": run_id,
        "content": content,
        "viewer": "index.html" if viewer else None,
        "objects": entries,
        "bytes": sum(e["bytes"] for e in entries.values()),
        "summary": run_summary(reports),
        "versions": {"splatflow": __version__, **({"viewer": page_version} if page_version else {})},
    }


def _replace_check(manifest_uri: str, manifest_bytes: bytes, base: str, overwrite: bool) -> None:
    """An earlier complete publish of the same run with other content: OutputExistsError, or (``overwrite``) its
    manifest removed, so the run reads as incomplete until the new manifest lands."""
    if storage.exists(manifest_uri) and \
            storage.read_bytes(manifest_uri, max_bytes=MAX_REPORT_BYTES) != manifest_bytes:
        if not overwrite:
            raise OutputExistsError(f"{base} is already published with different content",
                                    hint="use a new run id, or pass overwrite=True (--overwrite)")
        log.info("replacing the earlier publish of %s", base)
        storage.delete(manifest_uri)


def _upload_all(objects: list[tuple[str, Path]], entries: dict[str, dict[str, Any]], base: str) -> list[bool]:
    """Upload every object (each checked as the server stored it), remove stale ones, check them all again;
    returns per object whether it was uploaded (False: it was already there)."""
    with ThreadPoolExecutor(max_workers=_PARALLEL) as pool:
        done = list(pool.map(lambda o: _upload_one(o[0], o[1], entries[o[0]]["sha256"], entries[o[0]]["bytes"],
                                                   base), objects))
    for stale in storage.list_uris(base):  # files being written elsewhere are never listed
        if storage.relative_name(stale, base) not in (*entries, MANIFEST):
            log.info("removing stale object %s", stale)
            storage.delete(stale)
    with ThreadPoolExecutor(max_workers=_PARALLEL) as pool:
        list(pool.map(lambda rel: _check_remote(rel, entries[rel]["sha256"], entries[rel]["bytes"], base), entries))
    return done


@cleans_up_on_sigterm
def publish(output_uri: str, *, scene: str, run_id: str, files: dict[str, Path], reports: dict[str, dict],
            overwrite: bool = False, viewer: bool = True, unpack_sog: bool = False) -> dict[str, Any]:
    """Publish one run (see the module docstring for the layout and the write order).

    ``files``: ``sog`` (.sog bundle) and/or ``meta`` (SOG folder), optional ``ply``. ``reports``: stage name ->
    report dict. ``overwrite``: replace an earlier complete publish of the same run id with different content
    (without it that is an OutputExistsError; the same content is always fine). ``viewer=False`` skips the page.
    ``unpack_sog``: also publish the bundle's files (meta.json + WebP) under ``sog/``, for tools that read the
    folder form (instead of ``files['meta']``; the viewer still loads the ``.sog``).

    Returns ``urls`` (relative name -> URI), ``manifest_uri``, ``viewer_uri`` (None without a page),
    ``latest_uri``, ``objects``, ``bytes``, ``uploaded``, ``skipped``, ``summary`` and ``seconds``.
    """
    start = time.monotonic()
    _check_inputs(output_uri, scene, run_id, files, reports, viewer, unpack_sog)
    base = storage.join(output_uri, scene, run_id)
    with RunLock(output_uri, scene, run_id) as lock, \
            tempfile.TemporaryDirectory(prefix="splatflow-publish-") as tmp_name:
        tmp = Path(tmp_name)
        if unpack_sog:
            files = {**files, "meta": _unpack_sog(Path(files["sog"]), tmp / "sog")}
        objects, content = _collect_files(scene, files)
        objects += _report_objects(reports, tmp)
        page_version = None
        if viewer:
            page, page_version = _page_objects(scene, content, files, reports, tmp / "page")
            objects += page
        manifest = _manifest(scene, run_id, content, viewer, objects, reports, page_version)
        entries = manifest["objects"]
        manifest_bytes = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
        manifest_uri = storage.join(base, MANIFEST)
        _replace_check(manifest_uri, manifest_bytes, base, overwrite)
        log.info("publishing %d objects (%d bytes) to %s", len(objects), manifest["bytes"], base)
        done = _upload_all(objects, entries, base)
        lock.check()
        storage.write_bytes(manifest_uri, manifest_bytes, cache_control="no-cache")

        latest_uri = storage.join(output_uri, scene, LATEST)
        viewer_uri = storage.join(base, "index.html") if viewer else None
        latest = {"format": MANIFEST_FORMAT, "scene": scene, "run_id": run_id, "manifest": f"{run_id}/{MANIFEST}",
                  "manifest_uri": manifest_uri, "viewer": f"{run_id}/index.html" if viewer else None,
                  "viewer_uri": viewer_uri}
        storage.write_bytes(latest_uri, (json.dumps(latest, indent=2, sort_keys=True) + "\n").encode(),
                            cache_control="no-cache")
    uploaded = sum(done)
    log.info("published %s (%d uploaded, %d already there); latest -> %s", base, uploaded, len(done) - uploaded,
             run_id)
    return {
        "urls": {rel: storage.join(base, rel) for rel in entries},
        "manifest_uri": manifest_uri,
        "viewer_uri": viewer_uri,
        "latest_uri": latest_uri,
        "content_uri": storage.join(base, content),
        "objects": len(entries),
        "bytes": manifest["bytes"],
        "uploaded": uploaded,
        "skipped": len(done) - uploaded,
        "summary": manifest["summary"],
        "seconds": round(time.monotonic() - start, 3),
    }


def _read_json(uri: str) -> dict[str, Any] | None:
    """A manifest or pointer written by publish (bounded: MAX_REPORT_BYTES, nesting), or None when absent."""
    if not storage.exists(uri):
        return None
    data = parse_json(storage.read_bytes(uri, max_bytes=MAX_REPORT_BYTES), uri, error=StorageError,
                      hint="it was not written by splatflow publish; publish the run again")
    if not isinstance(data, dict):
        raise StorageError(f"{uri} is not a JSON object", hint="publish the run again")
    return data


def read_latest(output_uri: str, scene: str) -> dict[str, Any] | None:
    """The ``latest.json`` pointer of a scene, or None when nothing was published yet."""
    return _read_json(storage.join(output_uri, _check_name("scene", scene), LATEST))


def read_manifest(output_uri: str, scene: str, run_id: str) -> dict[str, Any] | None:
    """A run's manifest, or None when the run is absent or incomplete (no manifest yet)."""
    return _read_json(storage.join(output_uri, _check_name("scene", scene), _check_name("run id", run_id), MANIFEST))


def published_run(output_uri: str, scene: str, run_id: str) -> dict[str, Any] | None:
    """Where a completed publish put a run, read back from its manifest (None when it is absent or incomplete):
    ``manifest_uri``, ``viewer_uri``, ``content_uri``, ``urls`` (relative name -> URI) and ``summary``."""
    manifest = read_manifest(output_uri, scene, run_id)
    if manifest is None:
        return None
    base = storage.join(output_uri, scene, run_id)
    return {
        "manifest_uri": storage.join(base, MANIFEST),
        "viewer_uri": storage.join(base, manifest["viewer"]) if manifest.get("viewer") else None,
        "content_uri": storage.join(base, manifest["content"]) if manifest.get("content") else None,
        "urls": {rel: storage.join(base, rel) for rel in manifest.get("objects", {})},
        "summary": manifest.get("summary", {}),
    }
