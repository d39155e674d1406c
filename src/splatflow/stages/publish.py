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

Order: every object is uploaded (objects already there with the same SHA-256 are skipped, so a re-run or a
resumed run uploads only what is missing) and checked on the server (size + recorded SHA-256); stale objects of
an earlier publish of the same run id are removed; then ``manifest.json``; then ``latest.json``. An interrupted
publish leaves no manifest for the broken run and the previous ``latest.json`` untouched. Publishing the same
inputs again yields byte-identical objects (the manifest and pointer carry no timestamps).
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from splatflow import __version__, storage
from splatflow.errors import InputError, OutputExistsError, StorageError
from splatflow.fsutil import cleans_up_on_sigterm
from splatflow.limits import MAX_REPORT_BYTES, parse_json

log = logging.getLogger("splatflow.publish")

MANIFEST = "manifest.json"
LATEST = "latest.json"
MANIFEST_FORMAT = "splatflow-run/1"
FILE_KEYS = ("sog", "meta", "ply")
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


def _collect_files(scene: str, files: dict[str, Path]) -> tuple[list[tuple[str, Path]], str]:
    """Objects to publish from ``files`` as (relative name, local path), and the viewer's content name."""
    unknown = sorted(set(files) - set(FILE_KEYS))
    if unknown:
        raise InputError(f"publish got unknown file keys {unknown}", hint=f"use {', '.join(FILE_KEYS)}")
    if not files.get("sog") and not files.get("meta"):
        raise InputError("publish needs the compressed scene", hint="pass files['sog'] (a .sog) or files['meta']")
    out: list[tuple[str, Path]] = []
    content = ""
    if files.get("sog"):
        sog = Path(files["sog"])
        if not sog.is_file() or sog.suffix.lower() != ".sog":
            raise InputError(f"files['sog'] = {sog} is not a .sog file", hint="pass the bundle written by compress")
        out.append((f"{scene}.sog", sog))
        content = f"{scene}.sog"
    if files.get("meta"):
        meta = Path(files["meta"])
        folder = meta.parent if meta.name == "meta.json" else meta
        if not (folder / "meta.json").is_file():
            raise InputError(f"files['meta'] = {meta} is not a SOG folder with a meta.json",
                             hint="pass the folder (or its meta.json) written by compress")
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                out.append((f"sog/{p.relative_to(folder).as_posix()}", p))
        content = content or "sog/meta.json"
    if files.get("ply"):
        ply = Path(files["ply"])
        if not ply.is_file():
            raise InputError(f"files['ply'] = {ply} does not exist", hint="pass the trained PLY or leave it out")
        out.append((f"{scene}.ply", ply))
    return out, content


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


def _upload_one(rel: str, path: Path, digest: str, size: int, base: str) -> bool:
    """Upload one object unless the same bytes are already there; True when it was uploaded."""
    uri = storage.join(base, rel)
    if storage.exists(uri) and storage.stat(uri) == {"size": size, "sha256": digest}:
        return False
    storage.upload(path, uri)
    return True


def _check_remote(rel: str, digest: str, size: int, base: str) -> None:
    """Raise StorageError unless the object at ``base/rel`` has this size and recorded SHA-256."""
    uri = storage.join(base, rel)
    st = storage.stat(uri)
    if st != {"size": size, "sha256": digest}:
        raise StorageError(f"published object {uri} does not match what was uploaded "
                           f"({st['size']} bytes, sha256 {str(st['sha256'])[:12]}; expected {size}, {digest[:12]})",
                           hint="another writer is publishing the same run id; retry with a new run id")


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
    _check_name("scene", scene)
    _check_name("run id", run_id)
    storage.parse(output_uri)
    for name in reports:
        _check_name("report name", name)
    if unpack_sog and (not files.get("sog") or files.get("meta")):
        raise InputError("unpack_sog needs files['sog'] and no files['meta']",
                         hint="pass the .sog bundle; its files are published under sog/")
    _collect_files(scene, files)  # check the inputs before any work
    base = storage.join(output_uri, scene, run_id)
    with tempfile.TemporaryDirectory(prefix="splatflow-publish-") as tmp_name:
        tmp = Path(tmp_name)
        if unpack_sog:
            files = {**files, "meta": _unpack_sog(Path(files["sog"]), tmp / "sog")}
        objects, content = _collect_files(scene, files)
        for name, rep in sorted(reports.items()):
            path = tmp / "reports" / f"{name}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(rep, indent=2, sort_keys=True, default=str) + "\n")
            objects.append((f"reports/{name}.json", path))
        page_version = None
        if viewer:
            from splatflow.viewer.page import build_page, scene_bounds, viewer_version

            sog_path = Path(files["sog"]) if files.get("sog") else Path(files["meta"])
            bounds, source = scene_bounds(sog=sog_path, ply=Path(files["ply"]) if files.get("ply") else None)
            log.info("viewer camera fitted to %s", source)
            page_dir = tmp / "page"
            for path in build_page(page_dir, content_name=content, title=scene, bounds=bounds):
                objects.append((path.relative_to(page_dir).as_posix(), path))
            page_version = viewer_version()
        names = [rel for rel, _ in objects]
        if len(set(names)) != len(names) or MANIFEST in names:
            raise InputError(f"two published objects would have the same name: {sorted(names)}",
                             hint="rename the report that clashes with a file name")
        entries: dict[str, dict[str, Any]] = {rel: {"bytes": path.stat().st_size, "sha256": storage.sha256_file(path),
                         "content_type": storage.content_type(rel)} for rel, path in sorted(objects)}
        manifest = {
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
        manifest_bytes = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
        manifest_uri = storage.join(base, MANIFEST)

        if storage.exists(manifest_uri) and storage.read_bytes(manifest_uri) != manifest_bytes:
            if not overwrite:
                raise OutputExistsError(f"{base} is already published with different content",
                                        hint="use a new run id, or pass overwrite=True (--overwrite)")
            log.info("replacing the earlier publish of %s", base)
            storage.delete(manifest_uri)  # incomplete from here until the new manifest lands

        log.info("publishing %d objects (%d bytes) to %s", len(objects), manifest["bytes"], base)
        with ThreadPoolExecutor(max_workers=_PARALLEL) as pool:
            done = list(pool.map(lambda o: _upload_one(o[0], o[1], entries[o[0]]["sha256"],
                                                       entries[o[0]]["bytes"], base), objects))
        for stale in storage.list_uris(base):
            if storage.relative_name(stale, base) not in (*entries, MANIFEST):
                log.info("removing stale object %s", stale)
                storage.delete(stale)
        with ThreadPoolExecutor(max_workers=_PARALLEL) as pool:
            list(pool.map(lambda rel: _check_remote(rel, entries[rel]["sha256"], entries[rel]["bytes"], base),
                          entries))
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
