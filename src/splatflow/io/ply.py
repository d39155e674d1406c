"""Read and write 3D Gaussian Splatting PLY files (the INRIA attribute layout), with validation.

Reads binary (either endianness) and ASCII files, with or without normals, SH degree 0..3, and any extra
per-vertex properties (kept in ``GaussianCloud.extras``). Writes binary little-endian float32, in the standard
INRIA order (``x y z nx ny nz f_dc_0..2 f_rest_* opacity scale_0..2 rot_0..3``) or in the order the cloud was
read in (``layout="source"``, which makes read -> write bit-exact).
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Literal

import numpy as np
from plyfile import PlyData, PlyElement, PlyElementParseError, PlyHeaderParseError

from splatflow.errors import InvalidValuesError, PlyError
from splatflow.fsutil import atomic_path
from splatflow.gaussians import SH_COEFFS, GaussianCloud

__all__ = [
    "NORMALS", "REQUIRED", "OnInvalid", "inria_layout", "read_ply", "write_ply"
]

log = logging.getLogger(__name__)

REQUIRED = ("x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity",
            "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3")
NORMALS = ("nx", "ny", "nz")
_F_REST = re.compile(r"^f_rest_(\d+)$")

OnInvalid = Literal["keep", "drop", "error"]


def _open_ply(path: Path) -> PlyData:
    if not path.exists():
        raise PlyError(f"{path}: no such file", hint="check the path")
    if path.is_dir():
        raise PlyError(f"{path} is a folder, not a PLY file", hint="give the path of a .ply file")
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic not in (b"ply\n", b"ply\r"):
        raise PlyError(f"{path} is not a PLY file (it does not start with 'ply')",
                       hint="give a 3DGS .ply file as written by a 3DGS trainer")
    try:
        data = PlyData.read(str(path))
    except PlyHeaderParseError as exc:
        raise PlyError(f"{path}: the PLY header is invalid ({exc})",
                       hint="the file is damaged; export it again") from exc
    except (PlyElementParseError, ValueError, EOFError, IndexError) as exc:
        raise PlyError(f"{path} is truncated or damaged: {exc}",
                       hint="the file is incomplete (an interrupted copy or download?); copy it again") from exc
    return data


def read_ply(path: str | os.PathLike[str], *, on_invalid: OnInvalid = "keep") -> GaussianCloud:
    """Read a 3DGS PLY into a GaussianCloud.

    ``on_invalid`` decides what happens to invalid splats (NaN anywhere, an infinite position, rotation, SH value
    or size; see :mod:`splatflow.gaussians`): ``keep`` them (the caller inspects ``cloud.invalid_mask()``),
    ``drop`` them (logged with their count), or raise :class:`InvalidValuesError`. Fully opaque splats (opacity
    ``+inf``, alpha 1), fully transparent ones (``-inf``) and flat ones (a log-scale of ``-inf``) are valid.
    """
    p = Path(path)
    data = _open_ply(p)
    try:
        vertex = data["vertex"]
    except KeyError:
        found = ", ".join(e.name for e in data.elements) or "none"
        raise PlyError(f"{p} has no 'vertex' element (elements: {found})",
                       hint="a 3DGS PLY stores one splat per vertex; is this a mesh or another kind of PLY?") from None
    names = [prop.name for prop in vertex.properties]
    missing = [n for n in REQUIRED if n not in names]
    if missing:
        raise PlyError(f"{p} is missing the 3DGS properties {', '.join(missing)}",
                       hint="the file must be a trained 3DGS splat file (INRIA layout)")
    rest_idx = sorted(int(m.group(1)) for n in names if (m := _F_REST.match(n)))
    if rest_idx != list(range(len(rest_idx))) or len(rest_idx) not in {3 * k for k in SH_COEFFS.values()}:
        raise PlyError(
            f"{p} has {len(rest_idx)} f_rest properties; a 3DGS PLY has 0, 9, 24 or 45 (SH degree 0..3)",
            hint="the spherical-harmonics properties are incomplete; export the splats again")
    n = vertex.count
    if n == 0:
        raise PlyError(f"{p} contains zero splats", hint="export a trained scene with at least one splat")
    arr = vertex.data
    if len(arr) != n:
        raise PlyError(f"{p} is truncated: header says {n} splats, file holds {len(arr)}",
                       hint="copy the file again")

    def col(*cols: str) -> np.ndarray:
        return np.stack([np.asarray(arr[c], dtype=np.float32) for c in cols], axis=1)

    f_rest = col(*(f"f_rest_{i}" for i in rest_idx)) if rest_idx else np.zeros((n, 0), np.float32)
    known = set(REQUIRED) | {f"f_rest_{i}" for i in rest_idx}
    extras = {nm: np.asarray(arr[nm]) for nm in names if nm not in known}
    cloud = GaussianCloud(
        means=col("x", "y", "z"),
        scales=col("scale_0", "scale_1", "scale_2"),
        quats=col("rot_0", "rot_1", "rot_2", "rot_3"),
        opacities=np.asarray(arr["opacity"], dtype=np.float32).copy(),
        sh0=col("f_dc_0", "f_dc_1", "f_dc_2"),
        shN=GaussianCloud.shN_from_f_rest(f_rest),
        extras=extras,
        layout=tuple(names),
        ply_header={"comments": list(data.comments), "obj_info": list(data.obj_info),
                    "byte_order": ">" if data.byte_order == ">" else "<"},
    )
    if on_invalid != "keep":
        bad = int(cloud.invalid_mask().sum())
        if bad:
            what = cloud.invalid_summary()
            if on_invalid == "error":
                raise InvalidValuesError(
                    f"{p}: {bad} of {n} splats are invalid ({what})", count=bad,
                    hint="pass --drop-invalid to drop those splats")
            cloud, _ = cloud.drop_invalid()
            log.warning("%s: dropped %d of %d invalid splats (%s)", p, bad, n, what)
            if len(cloud) == 0:
                raise PlyError(f"{p}: every splat is invalid ({what})", hint="the file holds no usable splat")
    return cloud


def inria_layout(cloud: GaussianCloud, *, keep_extras: bool = False) -> list[str]:
    """Property names of the standard INRIA layout for the cloud's SH degree (+ its extras when asked)."""
    k = cloud.shN.shape[1]
    names = ["x", "y", "z", *NORMALS, "f_dc_0", "f_dc_1", "f_dc_2", *(f"f_rest_{i}" for i in range(3 * k)),
             "opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    if keep_extras:
        names += [e for e in cloud.extras if e not in NORMALS]
    return names


def _columns(cloud: GaussianCloud) -> dict[str, np.ndarray]:
    cols: dict[str, np.ndarray] = {}
    for i, c in enumerate("xyz"):
        cols[c] = cloud.means[:, i]
    for i in range(3):
        cols[f"f_dc_{i}"] = cloud.sh0[:, i]
        cols[f"scale_{i}"] = cloud.scales[:, i]
    for i in range(4):
        cols[f"rot_{i}"] = cloud.quats[:, i]
    cols["opacity"] = cloud.opacities
    for i, v in enumerate(cloud.f_rest().T):
        cols[f"f_rest_{i}"] = v
    zeros = np.zeros(len(cloud), np.float32)
    for nm in NORMALS:
        cols[nm] = cloud.extras.get(nm, zeros)
    cols.update({k: v for k, v in cloud.extras.items() if k not in NORMALS})
    return cols


def write_ply(cloud: GaussianCloud, path: str | os.PathLike[str], *,
              layout: Literal["inria", "source"] = "inria", keep_extras: bool = False, ascii: bool = False) -> Path:
    """Write ``cloud`` as a 3DGS PLY, atomically (a partial file never appears at ``path``).

    ``layout="inria"`` writes the standard order with normals (zeros if the cloud has none);
    ``layout="source"`` writes the properties and order of the file the cloud was read from (all extras kept),
    with its header comments and byte order.
    """
    header: dict = {}
    if layout == "source" and cloud.layout is not None:
        names = list(cloud.layout)
        header = cloud.ply_header or {}
    else:
        names = inria_layout(cloud, keep_extras=keep_extras)
    order = header.get("byte_order", "<")
    cols = _columns(cloud)
    missing = [nm for nm in names if nm not in cols]
    if missing:
        raise PlyError(f"cannot write properties {missing}: the cloud does not have them")
    dtype = [(nm, cols[nm].dtype.newbyteorder(order).str if nm in cloud.extras and nm not in NORMALS
              else f"{order}f4") for nm in names]
    out = np.empty(len(cloud), dtype=dtype)
    for nm in names:
        out[nm] = cols[nm]
    element = PlyElement.describe(out, "vertex")
    dest = Path(path)
    with atomic_path(dest) as tmp:
        PlyData([element], text=ascii, byte_order=order, comments=header.get("comments", []),
                obj_info=header.get("obj_info", [])).write(str(tmp))
    return dest
