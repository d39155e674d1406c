"""Load an SfM folder (COLMAP binary model + undistorted images) into training views and an initial point cloud.

Layout read (written by ``splatflow sfm``): ``SFM_DIR/images/<name>`` and the COLMAP model where
:func:`splatflow.cameras.colmap_model_dir` finds it (``SFM_DIR/sparse/0/{cameras,images,points3D}.bin``).
Cameras must be pinhole (``SIMPLE_PINHOLE`` or ``PINHOLE``): the SfM stage undistorts its images.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from splatflow.cameras import read_colmap
from splatflow.errors import InputError

__all__ = ["PINHOLE_MODELS", "Scene", "View", "held_out_indices", "load_scene", "viewer_camera"]

log = logging.getLogger(__name__)

PINHOLE_MODELS = ("SIMPLE_PINHOLE", "PINHOLE")


@dataclass
class View:
    """One posed photo at training resolution.

    ``image`` (H, W, 3) float32 in [0, 1]; ``viewmat`` (4, 4) world-to-camera (OpenCV: x right, y down, z forward);
    ``K`` (3, 3) pinhole intrinsics in pixels of ``image``.
    """

    name: str
    image: torch.Tensor
    viewmat: torch.Tensor
    K: torch.Tensor

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    @property
    def height(self) -> int:
        return int(self.image.shape[0])


@dataclass
class Scene:
    """Training and held-out views, the SfM points ``points`` (P, 3) with colours ``colors`` (P, 3) in [0, 1],
    and ``scene_scale``: the radius of the camera centres around their mean (x1.1), the unit of 3D thresholds."""

    train: list[View]
    test: list[View]
    points: np.ndarray
    colors: np.ndarray
    scene_scale: float
    source_size: tuple[int, int]


def _resize(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(img).resize(size, Image.Resampling.LANCZOS))


def held_out_indices(n: int, every: int) -> list[int]:
    """Which of ``n`` views (in name order) are held out: every ``every``-th counted from ``every // 2``, never the
    first or the last view, and at least one when ``n`` >= 3.

    A capture is usually a path (a walk down a street, an orbit): its first and last photos can only be
    extrapolated, while a viewer looks from inside the path. Holding out interior views measures that."""
    if every <= 0 or n < 3:
        return []
    picks = [i for i in range(every // 2, n - 1, every) if 0 < i < n - 1]
    return picks or [n // 2]


def _load_view(rec: Any, iid: int, img_dir: Path, resolution: int, device: str | torch.device
               ) -> tuple[View, tuple[int, int], np.ndarray]:
    """The view of registered image ``iid`` of the reconstruction ``rec``, its source size (W, H) and its
    camera centre (3,) in the world."""
    from PIL import Image

    im = rec.image(iid)
    cam = rec.camera(im.camera_id)
    if cam.model_name not in PINHOLE_MODELS:
        raise InputError(f"image {im.name}: camera model {cam.model_name} is not pinhole",
                         hint="train on undistorted images: the output folder of `splatflow sfm`")
    path = img_dir / im.name
    if not path.exists():
        raise InputError(f"{path}: the image registered in the model is missing",
                         hint="give the complete output folder of `splatflow sfm`")
    with Image.open(path) as pil:
        rgb = np.asarray(pil.convert("RGB"))
    h0, w0 = rgb.shape[:2]
    K = np.asarray(cam.calibration_matrix(), np.float64).copy()
    # the model's camera may describe the image at another size than the file: scale to the file first
    K[0] *= w0 / cam.width
    K[1] *= h0 / cam.height
    scale = min(1.0, resolution / max(w0, h0))
    if scale < 1.0:
        w1, h1 = max(1, round(w0 * scale)), max(1, round(h0 * scale))
        rgb = _resize(rgb, (w1, h1))
        K[0] *= w1 / w0
        K[1] *= h1 / h0
    pose = np.asarray(im.cam_from_world().matrix(), np.float64)  # (3, 4) world -> camera
    viewmat = np.eye(4)
    viewmat[:3] = pose
    view = View(name=im.name, image=torch.from_numpy(rgb.astype(np.float32) / 255.0).to(device),
                viewmat=torch.tensor(viewmat, dtype=torch.float32, device=device),
                K=torch.tensor(K, dtype=torch.float32, device=device))
    return view, (w0, h0), -pose[:, :3].T @ pose[:, 3]


def load_scene(sfm_dir: Path, *, resolution: int, test_every: int = 8, device: str | torch.device = "cpu") -> Scene:
    """Read the SfM folder; images are downscaled so their longer side is at most ``resolution`` (never upscaled).

    The model is found by :func:`splatflow.cameras.colmap_model_dir` (the rule ``evaluate --cameras`` uses); the
    photos are ``sfm_dir/images/<name>``. Every ``test_every``-th image is held out, interior ones only
    (:func:`held_out_indices`: 4, 12, 20, ... in name order for 8); ``test_every=0`` holds out none.
    Raises InputError for a missing folder or model, no registered images, no 3D points or a non-pinhole camera.
    """
    sfm_dir = Path(sfm_dir)
    mdir, rec = read_colmap(sfm_dir)
    reg = sorted(rec.reg_image_ids(), key=lambda i: rec.image(i).name)
    if not reg:
        raise InputError(f"{mdir}: the model has zero registered images",
                         hint="structure from motion failed; use more overlapping photos and run `splatflow sfm` again")
    if rec.num_points3D() == 0:
        raise InputError(f"{mdir}: the model has no 3D points, so there is nothing to initialise the splats from",
                         hint="run `splatflow sfm` again with more overlapping photos")
    pts = rec.points3D
    points = np.array([p.xyz for p in pts.values()], np.float32).reshape(-1, 3)
    colors = np.array([p.color for p in pts.values()], np.float32).reshape(-1, 3) / 255.0
    finite = np.isfinite(points).all(axis=1)
    points, colors = points[finite], colors[finite]
    if len(points) == 0:
        raise InputError(f"{mdir}: every 3D point is NaN or Inf", hint="run `splatflow sfm` again")

    loaded = [_load_view(rec, iid, sfm_dir / "images", resolution, device) for iid in reg]
    views = [v for v, _, _ in loaded]
    c = np.asarray([centre for _, _, centre in loaded])
    radius = float(np.linalg.norm(c - c.mean(axis=0), axis=1).max()) if len(c) > 1 else 0.0
    if radius <= 0:  # one camera (or all at one place): use the spread of the points instead
        radius = float(np.linalg.norm(points - points.mean(axis=0), axis=1).max()) or 1.0
    if test_every > 0 and len(views) > 1:
        held = set(held_out_indices(len(views), test_every))
        test = [v for i, v in enumerate(views) if i in held]
        train = [v for i, v in enumerate(views) if i not in held]
    else:
        test, train = [], views
    log.info("scene: %d training views, %d held out, %d SfM points, %dx%d px", len(train), len(test), len(points),
             views[0].width, views[0].height)
    return Scene(train=train, test=test, points=points, colors=colors, scene_scale=radius * 1.1,
                 source_size=loaded[-1][1])


def viewer_camera(scene: Scene) -> dict[str, list[float]]:
    """Where the published viewer opens: the pose of the training photo nearest the middle of the capture,
    ``position`` (its centre) and ``target`` (a point ahead of it, at the median depth of the SfM points it sees),
    in SfM world coordinates. A capture from inside a scene is best seen from where it was taken."""
    views = scene.train or scene.test
    centres = [(-(v.viewmat[:3, :3].T @ v.viewmat[:3, 3])).cpu().numpy() for v in views]
    mid = np.mean(centres, axis=0)
    i = int(np.argmin([np.linalg.norm(c - mid) for c in centres]))
    forward = views[i].viewmat[2, :3].cpu().numpy()            # the camera's +z axis in the world
    depths = (scene.points - centres[i]) @ forward
    ahead = depths[depths > 0]
    distance = float(np.median(ahead)) if len(ahead) else scene.scene_scale
    target = centres[i] + forward * distance
    return {"position": [round(float(x), 6) for x in centres[i]], "target": [round(float(x), 6) for x in target]}
