"""Cameras for rendering and evaluation: COLMAP models, ``.npz`` camera files, and an automatic orbit.

Every camera is a pinhole :class:`Camera` in OpenCV conventions (x right, y down, z forward), with a
world-to-camera ``viewmat`` (4, 4) and intrinsics ``K`` (3, 3) -- the conventions of gsplat and of
:func:`splatflow.render.rasterize`.

- :func:`colmap_cameras`: the registered images of a COLMAP sparse model (what the sfm stage writes), via pycolmap;
  :func:`read_colmap` / :func:`colmap_model_dir`: the one rule for where a model lies (training uses it too).
- :func:`npz_cameras`: a ``.npz`` with ``viewmats`` (C, 4, 4), ``Ks`` (C, 3, 3), ``width``, ``height`` (the layout
  of ``data/cameras/test_garden.npz``).
- :func:`orbit_cameras`: N views on a circle around the dense region of a cloud, for a PLY with no cameras.
- :func:`load_cameras`: one entry point that picks among them.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from splatflow.errors import DependencyMissing, InputError
from splatflow.gaussians import GaussianCloud

__all__ = ["COLMAP_FILES", "DEFAULT_UP", "Camera", "colmap_cameras", "colmap_model_dir", "colmap_model_files",
           "dense_region", "intrinsics", "load_cameras", "look_at", "npz_cameras", "orbit_cameras", "parse_size",
           "read_colmap"]

log = logging.getLogger(__name__)

DEFAULT_UP = (0.0, -1.0, 0.0)
"""World up of 3DGS scenes from COLMAP (and PlayCanvas PLYs): y points down, so up is -y."""


@dataclass(frozen=True)
class Camera:
    """One pinhole camera: ``viewmat`` (4, 4) float32 world-to-camera (OpenCV), ``K`` (3, 3) float32."""

    viewmat: np.ndarray
    K: np.ndarray
    width: int
    height: int
    name: str = ""

    def __post_init__(self) -> None:
        vm = np.asarray(self.viewmat, np.float32)
        k = np.asarray(self.K, np.float32)
        if vm.shape != (4, 4) or k.shape != (3, 3):
            raise InputError(f"camera {self.name!r}: viewmat {vm.shape} / K {k.shape}, expected (4, 4) / (3, 3)")
        if not (np.isfinite(vm).all() and np.isfinite(k).all()):
            raise InputError(f"camera {self.name!r} has NaN or Inf values", hint="check the camera file")
        if self.width <= 0 or self.height <= 0:
            raise InputError(f"camera {self.name!r} has an empty image size {self.width}x{self.height}")
        if k[0, 0] <= 0 or k[1, 1] <= 0:
            raise InputError(f"camera {self.name!r} has a non-positive focal length",
                             hint="K must be [[fx, 0, cx], [0, fy, cy], [0, 0, 1]] with fx, fy > 0")
        object.__setattr__(self, "viewmat", vm)
        object.__setattr__(self, "K", k)

    @property
    def center(self) -> np.ndarray:
        """(3,) camera position in world coordinates."""
        r, t = self.viewmat[:3, :3], self.viewmat[:3, 3]
        return (-r.T @ t).astype(np.float32)

    def resized(self, width: int, height: int) -> Camera:
        """The same camera rendering ``width`` x ``height`` pixels (intrinsics scaled per axis)."""
        if (width, height) == (self.width, self.height):
            return self
        sx, sy = width / self.width, height / self.height
        k = self.K.copy()
        k[0] *= sx
        k[1] *= sy
        return replace(self, K=k, width=int(width), height=int(height))


def intrinsics(width: int, height: int, fov_x_deg: float = 60.0) -> np.ndarray:
    """(3, 3) pinhole K with square pixels, the principal point at the centre, horizontal field of view ``fov_x``."""
    f = 0.5 * width / math.tan(math.radians(fov_x_deg) / 2)
    return np.array([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]], np.float32)


def look_at(eye: np.ndarray, target: np.ndarray, up: np.ndarray) -> np.ndarray:
    """(4, 4) OpenCV world-to-camera matrix of a camera at ``eye`` looking at ``target`` with ``up`` up."""
    z = np.asarray(target, np.float64) - eye
    z /= np.linalg.norm(z)
    x = np.cross(-np.asarray(up, np.float64), z)
    if np.linalg.norm(x) < 1e-9:  # looking along the up axis: pick any right vector
        x = np.cross(z, [1.0, 0.0, 0.0]) if abs(z[0]) < 0.9 else np.cross(z, [0.0, 1.0, 0.0])
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    r = np.stack([x, y, z])
    m = np.eye(4)
    m[:3, :3] = r
    m[:3, 3] = -r @ eye
    return m.astype(np.float32)


UPRIGHT_MIN_AGREEMENT = 0.5
"""The cameras' mean down axis must be at least this long (1: all agree) for :func:`upright_rotation` to turn the
world; below it (a capture that looks up and down alike) the world is left as it is."""


def upright_rotation(cam_from_world: np.ndarray) -> tuple[np.ndarray, float] | None:
    """The rotation (3, 3) new-from-old world that turns the photos' mean down axis onto the world's +y, and the
    angle it turns (degrees), from (N, 3, 3) world-to-camera rotations (OpenCV cameras: +y points down the image).

    COLMAP's world has no up; the PLY convention that viewers expect (and PlayCanvas's viewer assumes) is y down,
    like the cameras that took the photos, which people hold level. None when the cameras' down axes disagree
    (their mean is shorter than UPRIGHT_MIN_AGREEMENT): then there is no one down to turn to."""
    down = np.asarray(cam_from_world, dtype=np.float64)[:, 1, :].mean(0)      # camera +y in world coordinates
    length = float(np.linalg.norm(down))
    if length < UPRIGHT_MIN_AGREEMENT:
        return None
    d = down / length
    y = np.array([0.0, 1.0, 0.0])
    axis, cos = np.cross(d, y), float(np.clip(d @ y, -1.0, 1.0))
    sin = float(np.linalg.norm(axis))
    if sin < 1e-12:                      # already +y, or exactly -y: a half turn about x
        return (np.eye(3), 0.0) if cos > 0 else (np.diag([1.0, -1.0, -1.0]), 180.0)
    k = axis / sin
    kx = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    rot = np.eye(3) + sin * kx + (1.0 - cos) * (kx @ kx)                    # Rodrigues: d -> y, shortest turn
    return rot, math.degrees(math.atan2(sin, cos))


def dense_region(cloud: GaussianCloud, *, quantile: float = 0.8, min_alpha: float = 0.1) -> tuple[np.ndarray, float]:
    """Centre (3,) and radius of the region where most of a cloud's visible splats are.

    The centre is the per-axis median of the splats with alpha >= ``min_alpha`` (all splats if none are), the
    radius the ``quantile`` of their distances to it -- so a few far-away background splats do not pull the view
    out to the horizon.
    """
    finite = np.isfinite(cloud.means).all(1)
    pts = cloud.means[finite & (cloud.alphas() >= min_alpha)]
    if len(pts) == 0:
        pts = cloud.means[finite]
    if len(pts) == 0:
        raise InputError("the cloud has no splat with a finite position", hint="drop invalid splats first")
    center = np.median(pts, axis=0)
    radius = float(np.quantile(np.linalg.norm(pts - center, axis=1), quantile))
    return center.astype(np.float32), max(radius, 1e-3)


def orbit_cameras(cloud: GaussianCloud, views: int = 8, width: int = 256, height: int = 256, *,
                  up: tuple[float, float, float] | np.ndarray = DEFAULT_UP, elevation_deg: float = 20.0,
                  fov_x_deg: float = 60.0, margin: float = 1.1) -> list[Camera]:
    """``views`` cameras evenly spaced on a circle around the cloud's :func:`dense_region`, looking at its
    centre from ``elevation_deg`` above the horizontal plane, far enough that the region fills the view."""
    if views < 1:
        raise InputError(f"{views} orbit views requested", hint="ask for at least one view")
    center, radius = dense_region(cloud)
    u = np.asarray(up, np.float64)
    u /= np.linalg.norm(u)
    e1 = np.cross(u, [1.0, 0.0, 0.0] if abs(u[0]) < 0.9 else [0.0, 0.0, 1.0])
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(u, e1)
    K = intrinsics(width, height, fov_x_deg)
    half_fov = math.atan(0.5 * min(width, height) / float(K[0, 0]))
    dist = margin * radius / math.sin(half_fov)
    el = math.radians(elevation_deg)
    cams = []
    for i in range(views):
        az = 2 * math.pi * i / views
        direction = math.cos(el) * (math.cos(az) * e1 + math.sin(az) * e2) + math.sin(el) * u
        eye = center + dist * direction
        cams.append(Camera(look_at(eye, center, u), K, width, height, name=f"orbit_{i:03d}"))
    return cams


def npz_cameras(path: str | os.PathLike[str]) -> list[Camera]:
    """Cameras from a ``.npz`` with ``viewmats`` (C, 4, 4), ``Ks`` (C, 3, 3), ``width`` and ``height``."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"camera file {p} does not exist", hint="check the --cameras path")
    try:
        data = np.load(p, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise InputError(f"{p} is not a readable .npz file: {exc}", hint="give a .npz written by numpy.savez") from exc
    with data:
        missing = [k for k in ("viewmats", "Ks", "width", "height") if k not in data.files]
        if missing:
            raise InputError(f"{p} lacks the keys {', '.join(missing)} (it has {', '.join(data.files) or 'none'})",
                             hint="a camera .npz holds viewmats (C, 4, 4), Ks (C, 3, 3), width and height")
        vms, ks = np.asarray(data["viewmats"]), np.asarray(data["Ks"])
        width, height = int(data["width"]), int(data["height"])
    if vms.ndim != 3 or vms.shape[1:] != (4, 4) or ks.shape != (len(vms), 3, 3) or len(vms) == 0:
        raise InputError(f"{p}: viewmats {vms.shape} and Ks {ks.shape} do not describe C >= 1 cameras",
                         hint="expected viewmats (C, 4, 4) and Ks (C, 3, 3)")
    return [Camera(vms[i], ks[i], width, height, name=f"{p.stem}_{i:03d}") for i in range(len(vms))]


COLMAP_FILES = ("cameras", "images", "points3D")
"""The files of a COLMAP sparse model, all ``.bin`` or all ``.txt``."""


def colmap_model_dir(path: str | os.PathLike[str]) -> Path:
    """The COLMAP model folder of ``path``, by the one rule that train, evaluate and render share: the first of
    ``path``, ``path/sparse/0``, ``path/sparse`` and ``path/0`` that holds ``cameras``, ``images`` and
    ``points3D``, all ``.bin`` or all ``.txt``. So the sfm output folder, its ``sparse`` folder or the model
    folder itself. InputError when ``path`` does not exist or none of them holds a model."""
    p = Path(path)
    if not p.is_dir():
        raise InputError(f"COLMAP model folder {p} does not exist",
                         hint="give the output folder of `splatflow sfm` or its sparse/0 folder")
    for cand in (p, p / "sparse" / "0", p / "sparse", p / "0"):
        if any(all((cand / f"{name}.{ext}").is_file() for name in COLMAP_FILES) for ext in ("bin", "txt")):
            return cand
    raise InputError(f"{p} holds no COLMAP model (cameras, images and points3D .bin or .txt in it, in sparse/0, "
                     "in sparse or in 0)", hint="give the output folder of `splatflow sfm` or its sparse/0 folder")


def colmap_model_files(model: Path) -> list[Path]:
    """The model files of a folder found by :func:`colmap_model_dir`, in the order cameras, images, points3D."""
    ext = "bin" if all((model / f"{name}.bin").is_file() for name in COLMAP_FILES) else "txt"
    return [model / f"{name}.{ext}" for name in COLMAP_FILES]


def read_colmap(path: str | os.PathLike[str]) -> tuple[Path, Any]:
    """(model folder, ``pycolmap.Reconstruction``) of the COLMAP model of ``path`` (see :func:`colmap_model_dir`).

    DependencyMissing without pycolmap; InputError for a missing folder, no model or damaged model files."""
    try:
        import pycolmap
    except ImportError as exc:
        raise DependencyMissing("reading a COLMAP model needs pycolmap", hint="pip install 'splatflow[sfm]'") from exc
    model = colmap_model_dir(path)
    try:
        rec = pycolmap.Reconstruction(str(model))
    except Exception as exc:  # pycolmap raises plain RuntimeError/ValueError on damaged files
        raise InputError(f"{model}: cannot read the COLMAP model ({exc})",
                         hint="the model files are damaged; run `splatflow sfm` again") from exc
    return model, rec


def colmap_cameras(path: str | os.PathLike[str]) -> list[Camera]:
    """One camera per registered image of a COLMAP model, sorted by image name.

    ``path`` is the sfm stage's output folder, or the sparse model folder itself (:func:`colmap_model_dir`).
    Distortion parameters of non-pinhole camera models are ignored (with a warning): the sfm stage writes
    undistorted pinhole cameras.
    """
    model, rec = read_colmap(path)
    cams: list[Camera] = []
    warned: set[str] = set()
    for image in sorted(rec.images.values(), key=lambda im: im.name):
        if not image.has_pose:
            continue
        cam = image.camera
        if cam.model_name not in ("PINHOLE", "SIMPLE_PINHOLE") and cam.model_name not in warned:
            warned.add(cam.model_name)
            log.warning("COLMAP camera model %s: distortion is ignored (render with the pinhole part only)",
                        cam.model_name)
        viewmat = np.eye(4, dtype=np.float32)
        viewmat[:3, :4] = image.cam_from_world().matrix()
        cams.append(Camera(viewmat, np.asarray(cam.calibration_matrix(), np.float32), int(cam.width),
                           int(cam.height), name=image.name))
    if not cams:
        raise InputError(f"the COLMAP model in {model} has no registered image", hint="run sfm again")
    return cams


def parse_size(text: str) -> tuple[int, int]:
    """``"WxH"`` -> (W, H); InputError when it is not two positive integers."""
    parts = text.lower().replace("*", "x").split("x")
    try:
        w, h = (int(v) for v in parts)
    except ValueError:
        raise InputError(f"image size {text!r} is not WxH", hint="write it like 256x256") from None
    if w <= 0 or h <= 0 or w > 16384 or h > 16384:
        raise InputError(f"image size {text!r} is out of range", hint="use 1..16384 pixels per side")
    return w, h


def load_cameras(spec: str | os.PathLike[str] | None, cloud: GaussianCloud | None = None, *, views: int = 8,
                 size: tuple[int, int] | None = None) -> list[Camera]:
    """Cameras from ``spec``: a ``.npz`` file, a COLMAP model folder, or ``None`` for an orbit of ``views``
    around ``cloud``. ``size`` (W, H) rescales the cameras (default: theirs; 256x256 for the orbit). With a
    file or folder, at most ``views`` cameras are kept, evenly spread over the list (``views <= 0`` keeps all).
    """
    if spec is None:
        if cloud is None:
            raise InputError("no cameras given and no cloud to orbit", hint="pass --cameras or a splat file")
        w, h = size or (256, 256)
        return orbit_cameras(cloud, views, w, h)
    p = Path(spec)
    if p.suffix.lower() == ".npz":
        cams = npz_cameras(p)
    elif p.is_dir():
        cams = colmap_cameras(p)
    elif not p.exists():
        raise InputError(f"cameras {p} do not exist", hint="give a .npz camera file or a COLMAP model folder")
    else:
        raise InputError(f"{p} is not a camera source", hint="give a .npz camera file or a COLMAP model folder")
    if 0 < views < len(cams):
        pick = np.linspace(0, len(cams) - 1, views).round().astype(int)
        cams = [cams[i] for i in pick]
    if size is not None:
        cams = [c.resized(*size) for c in cams]
    return cams
