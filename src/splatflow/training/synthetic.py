"""A small synthetic SfM folder, deterministic, for tests and benchmarks of the training stage.

Ground-truth splats (a coloured blob) are rendered with :func:`splatflow.render.rasterize` from cameras on a ring
around them; the COLMAP model (PINHOLE cameras, poses, and a sparse, noisy subset of the splat centres as 3D
points) is written with pycolmap, in the layout ``splatflow sfm`` writes: ``images/`` + ``sparse/0/*.bin``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

__all__ = ["make_synthetic_sfm"]


def make_synthetic_sfm(out_dir: Path, *, n_splats: int = 400, n_points: int = 150, n_cameras: int = 10,
                       size: int = 64, seed: int = 0) -> Path:
    """Write a synthetic SfM folder at ``out_dir`` (created) and return it; images are ``size`` x ``size`` PNGs."""
    import pycolmap
    from PIL import Image

    from splatflow.cameras import look_at
    from splatflow.render import rasterize

    rng = np.random.default_rng(seed)
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    model = out_dir / "sparse" / "0"
    model.mkdir(parents=True, exist_ok=True)

    # ground truth: splats on a wobbly sphere of radius ~1, coloured by direction
    d = rng.normal(size=(n_splats, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    means = d * (1.0 + 0.15 * np.sin(3 * d[:, :1]) * np.cos(2 * d[:, 1:2]))
    colors = np.clip(0.5 + 0.45 * d, 0, 1)
    gt = {
        "means": torch.tensor(means, dtype=torch.float32),
        "quats": torch.tensor(rng.normal(size=(n_splats, 4)), dtype=torch.float32),
        "scales": torch.tensor(rng.uniform(0.05, 0.16, size=(n_splats, 3)), dtype=torch.float32),
        "opacities": torch.full((n_splats,), 0.9),
        "colors": torch.tensor((colors - 0.5) / 0.28209479177387814, dtype=torch.float32)[:, None, :],
    }
    f = 0.9 * size
    K = np.array([[f, 0, size / 2], [0, f, size / 2], [0, 0, 1]])
    rec = pycolmap.Reconstruction()
    cam = pycolmap.Camera.create_from_model_name(1, "PINHOLE", f, size, size)
    cam.params = [f, f, size / 2, size / 2]
    rec.add_camera_with_trivial_rig(cam)
    for i in range(n_cameras):
        a = 2 * np.pi * i / n_cameras
        eye = np.array([3.2 * np.cos(a), 3.2 * np.sin(a), 1.0 + 0.6 * np.sin(3 * a)])
        vm = look_at(eye, np.zeros(3), np.array([0.0, 0.0, 1.0])).astype(np.float64)
        with torch.no_grad():
            img, _ = rasterize(gt["means"], gt["quats"], gt["scales"], gt["opacities"], gt["colors"],
                               torch.tensor(vm, dtype=torch.float32), torch.tensor(K, dtype=torch.float32),
                               size, size, sh_degree=0, backend="torch")
        name = f"view_{i:02d}.png"
        Image.fromarray((img.clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8)).save(out_dir / "images" / name)
        image = pycolmap.Image(name=name, camera_id=1, image_id=i + 1)
        rec.add_image_with_trivial_frame(image, pycolmap.Rigid3d(vm[:3]))
    pick = rng.choice(n_splats, size=min(n_points, n_splats), replace=False)
    for j in pick:
        xyz = means[j] + rng.normal(scale=0.03, size=3)
        rgb = np.clip(colors[j] * 255 + rng.normal(scale=10, size=3), 0, 255).astype(np.uint8)
        rec.add_point3D(xyz, pycolmap.Track(), rgb)
    rec.write_binary(str(model))
    return out_dir
