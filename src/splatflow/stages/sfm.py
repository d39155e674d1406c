"""SfM stage: a folder of images in; a COLMAP model and undistorted pinhole images out (pycolmap on CPU).

Steps: check the images (unreadable ones are skipped and reported), SIFT extraction, matching (exhaustive for
small sets, sequential for video frames and large sets), incremental mapping, then a fallback ladder when too few
images register (a relaxed mapper for forward motion and small baselines, exhaustive matching after sequential,
guided re-matching after exhaustive), undistortion to the PINHOLE model, and the world turned upright (the
photos' mean down axis onto +y, as viewers expect). Output, in the layout 3DGS trainers
read (written atomically: nothing at ``out_dir``, nor the parent folders it created, unless the stage succeeds)::

    out_dir/images/<name>                  undistorted images (registered ones only)
    out_dir/sparse/0/cameras.bin images.bin points3D.bin
    out_dir/sfm-report.json                registered/total, points, errors, track length, timings, unregistered,
                                           the angle the world was turned upright (upright_degrees)

Fails with SfmError (carrying the report as ``.report``) when fewer than ``min_registered`` of the images register.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from splatflow import imaging
from splatflow.cameras import upright_rotation
from splatflow.errors import DependencyMissing, ImageError, InputError, SfmError
from splatflow.fsutil import atomic_path, cleans_up_on_sigterm, made_parents, reclaim_sigterm
from splatflow.options import STAGE_OPTIONS, check_options
from splatflow.progress import step
from splatflow.stages.ingest import check_out_dir

__all__ = [
    "EXHAUSTIVE_LIMIT", "FALLBACK_EXHAUSTIVE_LIMIT", "GOOD_ENOUGH", "MATCHERS", "SEQUENTIAL_OVERLAP", "sfm"
]

log = logging.getLogger(__name__)

_O = STAGE_OPTIONS["sfm"]
MATCHERS: tuple[str, ...] = _O["matcher"].choices or ()
#: ``auto`` matches exhaustively up to this many images, sequentially above.
EXHAUSTIVE_LIMIT = 150
#: The exhaustive fallback after sequential matching is tried up to this many images (it is quadratic).
FALLBACK_EXHAUSTIVE_LIMIT = 200
#: Fallbacks run while fewer than this fraction of the images is registered.
GOOD_ENOUGH = 0.95
#: Sequential matching: each image is matched with this many following ones (plus quadratic steps).
SEQUENTIAL_OVERLAP = 10
_FRAME_NAME = re.compile(r"^frame_\d+\.(jpg|png)$")


@cleans_up_on_sigterm
def sfm(images_dir: Path, out_dir: Path, *, matcher: str = _O["matcher"].default,
        max_side: int = _O["max_side"].default, min_registered: float = _O["min_registered"].default,
        max_features: int = _O["max_features"].default,
        num_threads: int = -1, seed: int = 0, overwrite: bool = False) -> dict[str, Any]:
    """Reconstruct cameras and sparse points from the images in ``images_dir`` (or ``images_dir/images``).

    ``max_side`` bounds the image size used for features and for the undistorted output; ``max_features`` the
    SIFT features per image. Returns the report (also written to ``out_dir/sfm-report.json``).
    """
    start = time.monotonic()
    pycolmap = _pycolmap()
    reclaim_sigterm()  # importing pycolmap hands SIGTERM to glog, which would kill the process without cleanup
    check_options("sfm", matcher=matcher, max_side=max_side, min_registered=min_registered,
                  max_features=max_features)
    out_dir = Path(out_dir)
    check_out_dir(out_dir, overwrite=overwrite)
    folder = _images_folder(Path(images_dir))
    cameras, skipped = _usable_images(folder)
    names = list(cameras)
    video = _is_video(folder, names)
    used = ("sequential" if video or len(names) > EXHAUSTIVE_LIMIT else "exhaustive") if matcher == "auto" else matcher
    report: dict[str, Any] = {
        "images_dir": str(folder), "inputs": len(names) + len(skipped), "total": len(names), "registered": 0,
        "points": 0, "mean_reprojection_error": None, "mean_track_length": None, "unregistered": [],
        "skipped": skipped, "matcher": used, "attempts": [], "timings": {}, "max_side": max_side,
        "max_features": max_features, "pycolmap": pycolmap.__version__,
    }
    timings: dict[str, float] = report["timings"]
    with made_parents(out_dir), _colmap_log_level(pycolmap), \
            tempfile.TemporaryDirectory(prefix=f".{out_dir.name}.work.", dir=out_dir.parent) as work_s:
        work = Path(work_s)
        db = work / "database.db"
        with _timed(timings, "extract"):
            step(f"sfm: extracting features from {len(names)} images (max side {max_side}px)")
            _extract(pycolmap, db, folder, cameras, max_side=max_side, max_features=max_features,
                     num_threads=num_threads)
        missing = sorted(set(names) - _database_names(pycolmap, db))
        for name in missing:
            skipped[name] = "COLMAP could not read it"
        with _timed(timings, "match"):
            step(f"sfm: {used} matching")
            _match(pycolmap, db, used, num_threads=num_threads)
        best = _mapping_ladder(pycolmap, db, folder, work, report, names, used, num_threads=num_threads, seed=seed)
        _fill_report(report, best, names)
        if best is None or report["registered"] < max(2, min_registered * len(names)):
            got = report["registered"]
            raise SfmError(
                f"structure from motion registered {got} of {len(names)} images, under the required "
                f"{min_registered:.0%} (unregistered: {_short(report['unregistered'])})",
                report=report,
                hint="the photos must overlap: take them 1-2 steps apart, each sharing ~60% of the view with the "
                     "next; avoid plain walls, glass and moving objects")
        with atomic_path(out_dir, directory=True) as tmp:
            with _timed(timings, "undistort"):
                step(f"sfm: undistorting {report['registered']} images to the pinhole model")
                report["upright_degrees"] = _undistort(pycolmap, best, folder, work, tmp, max_side=max_side,
                                                       num_threads=num_threads)
            timings["total"] = round(time.monotonic() - start, 3)
            (tmp / "sfm-report.json").write_text(json.dumps(report, indent=2))
    step(f"sfm: registered {report['registered']}/{report['total']} images, {report['points']} points -> {out_dir}")
    return report


# ---------------------------------------------------------------------------- inputs
def _pycolmap() -> Any:
    try:
        import pycolmap
    except ImportError as exc:
        raise DependencyMissing("pycolmap is not installed", hint="pip install 'splatflow[sfm]'") from exc
    return pycolmap


def _images_folder(path: Path) -> Path:
    """``path`` itself, or ``path/images`` when given an ingest output folder."""
    if not path.is_dir():
        raise InputError(f"images folder {path} does not exist" if not path.exists() else f"{path} is not a folder",
                         hint="give the folder of images (or the ingest stage's output folder)")
    sub = path / "images"
    has_own = any(p.suffix.lower() in imaging.image_suffixes() for p in path.iterdir())
    return sub if sub.is_dir() and not has_own else path


def _usable_images(folder: Path) -> tuple[dict[str, tuple[object, ...]], dict[str, str]]:
    """The decodable images directly in ``folder`` (sorted name -> camera key: size and EXIF camera/focal, equal
    for photos of one camera) and the skipped ones (name -> reason)."""
    suffixes = imaging.image_suffixes()
    names: dict[str, tuple[object, ...]] = {}
    skipped: dict[str, str] = {}
    for p in sorted(folder.iterdir()):
        if not p.is_file() or p.suffix.lower() not in suffixes or p.name.startswith("."):
            continue
        try:
            with imaging.open_checked(p) as im:
                exif = im.getexif()
                sub = exif.get_ifd(0x8769)
                key = (im.size, exif.get(0x010F), exif.get(0x0110), str(sub.get(0x920A)), str(sub.get(0xA405)))
                if im.format == "JPEG":
                    im.draft("RGB", (max(1, im.width // 8), max(1, im.height // 8)))
                im.load()  # reads all the data: truncated or corrupt files fail here
            names[p.name] = key
        except ImageError as exc:
            skipped[p.name] = exc.message
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            skipped[p.name] = f"corrupt or truncated image data ({exc})"
    for name, why in skipped.items():
        log.warning("sfm: skipping %s: %s", name, why)
    if len(names) < imaging.MIN_IMAGES:
        what = "no images" if not names else f"only {len(names)} usable image(s)"
        extra = f" ({len(skipped)} unreadable: {_short(list(skipped))})" if skipped else ""
        raise ImageError(f"{what} in {folder}{extra}; structure from motion needs at least {imaging.MIN_IMAGES}",
                         hint="give 20 or more overlapping JPEG/PNG photos (run `splatflow ingest` first)")
    return names, skipped


def _is_video(folder: Path, names: list[str]) -> bool:
    """True for frames of one video: the ingest report says so, or every name is ``frame_<n>``."""
    for report in (folder / "ingest-report.json", folder.parent / "ingest-report.json"):
        if report.is_file():
            with contextlib.suppress(OSError, ValueError):
                return bool(json.loads(report.read_text()).get("content") == "video")
    return all(_FRAME_NAME.match(n) for n in names)


def _short(items: list[str], n: int = 8) -> str:
    return ", ".join(items[:n]) + (f" and {len(items) - n} more" if len(items) > n else "") if items else "none"


# ---------------------------------------------------------------------------- COLMAP steps
@contextlib.contextmanager
def _colmap_log_level(pycolmap: Any) -> Iterator[None]:
    """COLMAP's own log lines only with --verbose; the stage logs its steps and raises its own errors."""
    old = pycolmap.logging.minloglevel
    pycolmap.logging.minloglevel = 0 if log.isEnabledFor(logging.DEBUG) else 3
    try:
        yield
    finally:
        pycolmap.logging.minloglevel = old


@contextlib.contextmanager
def _timed(timings: dict[str, float], name: str) -> Iterator[None]:
    t = time.monotonic()
    try:
        yield
    finally:
        timings[name] = round(timings.get(name, 0.0) + time.monotonic() - t, 3)


def _extract(pycolmap: Any, db: Path, folder: Path, cameras: dict[str, tuple[object, ...]], *, max_side: int,
             max_features: int, num_threads: int) -> None:
    """SIFT features into ``db``; one shared camera per group of images with the same camera key (a camera's
    intrinsics are far better estimated from all its images than from each alone)."""
    options = pycolmap.FeatureExtractionOptions()
    options.max_image_size = max_side
    options.num_threads = num_threads
    options.sift.max_num_features = max_features
    groups: dict[tuple[object, ...], list[str]] = {}
    for name, key in cameras.items():
        groups.setdefault(key, []).append(name)
    for names in groups.values():
        pycolmap.extract_features(db, folder, image_names=names, camera_mode=pycolmap.CameraMode.SINGLE,
                                  extraction_options=options, device=pycolmap.Device.cpu)


def _database_names(pycolmap: Any, db: Path) -> set[str]:
    with contextlib.closing(pycolmap.Database.open(db)) as database:
        return {image.name for image in database.read_all_images()}


def _match(pycolmap: Any, db: Path, kind: str, *, num_threads: int, guided: bool = False) -> None:
    options = pycolmap.FeatureMatchingOptions()
    options.num_threads = num_threads
    verification = pycolmap.TwoViewGeometryOptions()
    if guided:
        options.guided_matching = True
        options.sift.max_ratio = 0.9
        verification.min_num_inliers = 10
    if kind == "sequential":
        pairing = pycolmap.SequentialPairingOptions()
        pairing.overlap = SEQUENTIAL_OVERLAP
        pairing.quadratic_overlap = True
        pycolmap.match_sequential(db, matching_options=options, pairing_options=pairing,
                                  verification_options=verification, device=pycolmap.Device.cpu)
    else:
        pycolmap.match_exhaustive(db, matching_options=options, verification_options=verification,
                                  device=pycolmap.Device.cpu)


def _mapping_options(pycolmap: Any, *, relaxed: bool, num_threads: int, seed: int) -> Any:
    options = pycolmap.IncrementalPipelineOptions()
    options.num_threads = num_threads
    options.random_seed = seed
    if relaxed:
        # Walk-through and video captures: forward motion, small baselines, few inliers per new image.
        mapper = options.mapper
        mapper.init_max_forward_motion = 1.0
        mapper.init_min_tri_angle = 4.0
        mapper.init_min_num_inliers = 50
        mapper.abs_pose_min_num_inliers = 15
        mapper.abs_pose_min_inlier_ratio = 0.1
        mapper.filter_min_tri_angle = 0.5
        options.triangulation.min_angle = 0.5
        options.min_num_matches = 10
    return options


def _map(pycolmap: Any, db: Path, folder: Path, out: Path, options: Any) -> Any:
    """Incremental mapping; returns the model with the most registered images, or None."""
    out.mkdir(parents=True)
    models = pycolmap.incremental_mapping(db, folder, out, options)
    return max(models.values(), key=lambda r: (r.num_reg_images(), r.num_points3D()), default=None)


def _mapping_ladder(pycolmap: Any, db: Path, folder: Path, work: Path, report: dict[str, Any], names: list[str],
                    matcher: str, *, num_threads: int, seed: int) -> Any:
    """Map, then try cheaper-to-costlier fallbacks while too few images register; returns the best model."""
    total = len(names)
    best: Any = None
    timings = report["timings"]

    def attempt(label: str, relaxed: bool, before: Callable[[], None] | None = None) -> None:
        nonlocal best
        t = time.monotonic()
        if before is not None:
            before()
        model = _map(pycolmap, db, folder, work / f"sparse-{len(report['attempts'])}",
                     _mapping_options(pycolmap, relaxed=relaxed, num_threads=num_threads, seed=seed))
        got = model.num_reg_images() if model is not None else 0
        seconds = round(time.monotonic() - t, 3)
        report["attempts"].append({"step": label, "registered": got, "seconds": seconds})
        timings[label] = seconds
        step(f"sfm: {label}: registered {got}/{total}")
        if model is not None and (best is None or (got, model.num_points3D()) > (best.num_reg_images(),
                                                                                best.num_points3D())):
            best = model

    def short() -> bool:
        return best is None or best.num_reg_images() < GOOD_ENOUGH * total

    attempt("map", relaxed=False)
    if short():
        attempt("map_relaxed", relaxed=True)
    if short() and matcher == "sequential" and total <= FALLBACK_EXHAUSTIVE_LIMIT:
        attempt("exhaustive_fallback", relaxed=True,
                before=lambda: _match(pycolmap, db, "exhaustive", num_threads=num_threads))
    elif short():
        def rematch() -> None:
            with contextlib.closing(pycolmap.Database.open(db)) as database:
                database.clear_matches()
                database.clear_two_view_geometries()
            _match(pycolmap, db, matcher, num_threads=num_threads, guided=True)

        attempt("guided_fallback", relaxed=True, before=rematch)
    return best


def _fill_report(report: dict[str, Any], model: Any, names: list[str]) -> None:
    if model is None:
        report["unregistered"] = list(names)
        return
    registered = {model.image(i).name for i in model.reg_image_ids()}
    report.update({
        "registered": len(registered),
        "registered_fraction": round(len(registered) / len(names), 4),
        "points": model.num_points3D(),
        "observations": model.compute_num_observations(),
        "mean_reprojection_error": round(float(model.compute_mean_reprojection_error()), 4),
        "mean_track_length": round(float(model.compute_mean_track_length()), 4),
        "mean_observations_per_image": round(float(model.compute_mean_observations_per_reg_image()), 2),
        "unregistered": [n for n in names if n not in registered],
        # the estimated cameras (before undistortion to PINHOLE): model, size and parameters
        "cameras": [{"model": cam.model.name, "width": cam.width, "height": cam.height,
                     "params": [round(float(v), 4) for v in cam.params]} for cam in model.cameras.values()],
    })


def _upright(pycolmap: Any, model: Any) -> float | None:
    """Turn ``model``'s world so that the photos' mean down axis is +y (:func:`splatflow.cameras.upright_rotation`);
    the angle turned in degrees, or None when the photos agree on no down."""
    rotations = np.stack([im.cam_from_world().rotation.matrix() for im in model.images.values()])
    found = upright_rotation(rotations)
    if found is None:
        return None
    rot, degrees = found
    model.transform(pycolmap.Sim3d(1.0, pycolmap.Rotation3d(rot), np.zeros(3)))
    return round(degrees, 3)


def _undistort(pycolmap: Any, model: Any, folder: Path, work: Path, dest: Path, *, max_side: int,
               num_threads: int) -> float | None:
    """Undistort the registered images to PINHOLE cameras into ``dest/images`` + ``dest/sparse/0``, the world
    turned upright (:func:`_upright`); returns the angle turned."""
    model_dir = work / "model"
    model_dir.mkdir()
    model.write_binary(str(model_dir))
    undist = work / "undistorted"
    options = pycolmap.UndistortCameraOptions()
    options.max_image_size = max_side
    pycolmap.undistort_images(undist, model_dir, folder, output_type="COLMAP", undistort_options=options,
                              jpeg_quality=95, num_threads=num_threads)
    shutil.move(undist / "images", dest / "images")
    sparse = dest / "sparse" / "0"
    sparse.mkdir(parents=True)
    result = pycolmap.Reconstruction(str(undist / "sparse"))
    turned = _upright(pycolmap, result)
    result.write_binary(str(sparse))
    models = {cam.model.name for cam in result.cameras.values()}
    if models != {"PINHOLE"}:
        raise SfmError(f"undistortion produced camera models {sorted(models)}, expected PINHOLE",
                       hint="report this as a bug")
    written = sorted(p.name for p in (dest / "images").iterdir())
    if len(written) != result.num_reg_images():
        raise SfmError(f"undistortion wrote {len(written)} images for {result.num_reg_images()} registered ones",
                       hint="check free disk space and that the input images are readable")
    return turned
