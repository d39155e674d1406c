"""A Gaussian's frame is not unique: 24 (rotation, scales) pairs describe the same Gaussian.

The covariance R diag(e^2s) R^T is unchanged when the frame R turns by a rotation C that maps the coordinate axes
onto themselves (one of the cube's 24 rotations) and the log-scales follow the axes: R' = R C, s'_j = s_i where
C's axis j lies along axis i. The encoder keeps the frame nearest the identity (its quaternion codes span a
narrower range); ``evaluate`` compares a candidate in the frame nearest the source's.
"""

from __future__ import annotations

import itertools
import math

import torch


def _cube_rotations() -> torch.Tensor:
    """(24, 4) unit quaternions (w, x, y, z) of the rotations that map the coordinate axes onto themselves: the
    identity, half turns about the axes, quarter turns about the axes, half turns about the face diagonals and
    third turns about the body diagonals."""
    h = math.sqrt(0.5)
    rows: list[list[float]] = [[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]]
    for i, j in itertools.combinations(range(4), 2):
        for sign in (1.0, -1.0):
            row = [0.0] * 4
            row[i], row[j] = h, sign * h
            rows.append(row)
    rows += [[0.5, 0.5 * a, 0.5 * b, 0.5 * c] for a, b, c in itertools.product((1.0, -1.0), repeat=3)]
    return torch.tensor(rows, dtype=torch.float64)


CUBE = _cube_rotations()
"""(24, 4) float64: the cube's rotations as unit quaternions (w, x, y, z)."""


def _cube_axes() -> torch.Tensor:
    """(24, 3) int64: for cube rotation c, the source axis that its frame's axis j lies along (|R_c[i, j]| = 1)."""
    from splatflow.render import quat_to_rotmat

    return quat_to_rotmat(CUBE).abs().argmax(1)


CUBE_AXES = _cube_axes()
"""(24, 3) int64: the log-scale each axis of a frame turned by ``CUBE[c]`` takes (a gather index)."""


def qmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Hamilton products (N, 4) of quaternions (w, x, y, z) ``a`` (N, 4) and ``b`` (N, 4)."""
    aw, ax, ay, az = a.unbind(1)
    bw, bx, by, bz = b.unbind(1)
    return torch.stack([aw * bw - ax * bx - ay * by - az * bz, aw * bx + ax * bw + ay * bz - az * by,
                        aw * by - ax * bz + ay * bw + az * bx, aw * bz + ax * by - ay * bx + az * bw], 1)


def unit_quats(q: torch.Tensor) -> torch.Tensor:
    """(N, 4) unit quaternions (float64, or float32 for float32 input); a zero quaternion stands for the identity
    (as everywhere in splatflow)."""
    q = q if q.dtype == torch.float32 else q.double()
    norm = q.norm(dim=1, keepdim=True)
    ident = torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=q.dtype, device=q.device).expand_as(q)
    return torch.where(norm > 0, q / norm.clamp_min(1e-300), ident)


def nearest_frame(quats: torch.Tensor, log_scales: torch.Tensor,
                  reference: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The same Gaussians in the frame nearest ``reference`` (N, 4) quaternions (None: the identity): (N, 4)
    unit quaternions on the reference's side (<q, reference> >= 0; for the identity, w >= 0) and (N, 3)
    log-scales, from (N, 4) quaternions (any norm; zero: the identity) and (N, 3) log-scales.

    Of the 24 frames, the one whose rotation is nearest the reference's is kept: turning by C changes the
    quaternion to q C, and <r, q C> = <conj(q) r, C>. Nearest the identity, |x|, |y|, |z| <= w tan(pi/8) and w is
    the largest component.
    """
    q = unit_quats(quats)
    conj = q * torch.tensor([1.0, -1.0, -1.0, -1.0], dtype=q.dtype, device=q.device)
    ref = None if reference is None else unit_quats(reference).to(device=q.device, dtype=q.dtype)
    rel = conj if ref is None else qmul(conj, ref)                # conj(q) r
    cube = CUBE.to(device=q.device, dtype=q.dtype)
    best = (rel @ cube.T).abs().argmax(1)
    out = qmul(q, cube[best])
    side = out[:, :1] if ref is None else (out * ref).sum(1, keepdim=True)
    out = torch.where(side < 0, -out, out)
    scales = torch.gather(log_scales, 1, CUBE_AXES.to(q.device)[best])
    return out.to(quats.dtype), scales
