"""GaussianCloud: the in-memory set of 3D Gaussian splats that every stage passes around.

Conventions (those of the INRIA 3DGS PLY and of gsplat):

- ``means``     (N, 3) float32, world positions
- ``scales``    (N, 3) float32, natural log of the per-axis standard deviations
- ``quats``     (N, 4) float32, rotation quaternions (w, x, y, z), not necessarily normalized
- ``opacities`` (N,)   float32, opacity logits (alpha = sigmoid(opacity))
- ``sh0``       (N, 3) float32, degree-0 SH coefficients (``f_dc_0..2``)
- ``shN``       (N, K, 3) float32, higher-order SH coefficients, K = 0, 3, 8 or 15 for degree 0..3.
  Note the PLY stores ``f_rest`` channel-major (all K red, then green, then blue); here the last axis is RGB.
- ``extras``    name -> (N,) arrays of any other per-splat property (normals, custom fields), kept in order.
- ``layout``    the property names in the order of the file the cloud was read from (``None`` if built in memory).
- ``ply_header``  what else that file's header held: ``comments``, ``obj_info`` (lists of str) and ``byte_order``
  (``<`` or ``>``), so that writing it back in its own layout is bit-exact (``None`` if built in memory).

Which values are valid (:meth:`GaussianCloud.invalid_mask`, the same rule for every stage):

- an opacity logit of ``+inf`` or ``-inf`` is valid: alpha 1 (fully opaque, as real trainers export it) or 0;
- a log-scale of ``-inf`` is valid: zero extent along that axis (a flat splat, or a point if all three are);
  the renderer draws it with its 0.3-pixel dilation, the SOG encoder gives it a codebook entry of its own far
  below the smallest finite size;
- a zero-norm quaternion is valid and means the identity rotation: what gsplat, the INRIA code and splatflow's
  renderer draw for it (PlayCanvas's ``--filter-nan`` drops such splats instead);
- invalid: NaN in any attribute, or an infinity in a position, a rotation, an SH value, or a ``+inf`` log-scale
  (infinite size). Such a splat cannot be drawn; readers keep, drop or refuse it as asked.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

__all__ = [
    "SH_C0", "SH_COEFFS", "GaussianCloud", "logit", "sh_degree_for_coeffs", "sigmoid"
]

if TYPE_CHECKING:
    import torch

SH_C0 = 0.28209479177387814
"""The constant of the degree-0 real spherical harmonic: colour = 0.5 + SH_C0 * sh0."""

SH_COEFFS = {0: 0, 1: 3, 2: 8, 3: 15}
"""Number of higher-order SH coefficients per colour channel for each SH degree."""

_SH_DEGREE_FOR_COEFFS = {v: k for k, v in SH_COEFFS.items()}


def sh_degree_for_coeffs(k: int) -> int:
    """SH degree for K higher-order coefficients per channel (0, 3, 8, 15 -> 0, 1, 2, 3); ValueError otherwise."""
    if k not in _SH_DEGREE_FOR_COEFFS:
        raise ValueError(f"{k} higher-order SH coefficients per channel is not an SH degree (expected 0, 3, 8 or 15)")
    return _SH_DEGREE_FOR_COEFFS[k]


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Elementwise logistic function, numerically stable, same shape and dtype as ``x``."""
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    ex = np.exp(x[~pos])
    out[~pos] = ex / (1.0 + ex)
    return out


def logit(p: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Inverse of :func:`sigmoid`, with ``p`` clipped to [eps, 1-eps] so the result is finite."""
    q = np.clip(p, eps, 1.0 - eps)
    return np.log(q / (1.0 - q)).astype(p.dtype, copy=False)


@dataclass
class GaussianCloud:
    """A set of N Gaussian splats; see the module docstring for the array shapes."""

    means: np.ndarray
    scales: np.ndarray
    quats: np.ndarray
    opacities: np.ndarray
    sh0: np.ndarray
    shN: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 3), np.float32))
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    layout: tuple[str, ...] | None = None
    ply_header: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        n = self.means.shape[0]
        if self.shN.size == 0 and self.shN.shape[0] != n:
            self.shN = np.zeros((n, 0, 3), np.float32)
        expected: dict[str, tuple[int, ...]] = {
            "means": (n, 3),
            "scales": (n, 3),
            "quats": (n, 4),
            "opacities": (n,),
            "sh0": (n, 3),
        }
        for name, shape in expected.items():
            arr = getattr(self, name)
            if arr.shape != shape:
                raise ValueError(f"GaussianCloud.{name} has shape {arr.shape}, expected {shape}")
        if self.shN.ndim != 3 or self.shN.shape[0] != n or self.shN.shape[2] != 3:
            raise ValueError(f"GaussianCloud.shN has shape {self.shN.shape}, expected ({n}, K, 3)")
        sh_degree_for_coeffs(self.shN.shape[1])
        for name, arr in self.extras.items():
            if arr.shape[0] != n:
                raise ValueError(f"extra property {name!r} has {arr.shape[0]} values for {n} splats")

    # ------------------------------------------------------------------ basic facts
    def __len__(self) -> int:
        return int(self.means.shape[0])

    @property
    def num_splats(self) -> int:
        """N, the number of splats."""
        return len(self)

    @property
    def sh_degree(self) -> int:
        """Spherical-harmonics degree, 0..3."""
        return sh_degree_for_coeffs(self.shN.shape[1])

    @property
    def core_arrays(self) -> dict[str, np.ndarray]:
        """The six splat attributes by name (extras excluded)."""
        return {
            "means": self.means,
            "scales": self.scales,
            "quats": self.quats,
            "opacities": self.opacities,
            "sh0": self.sh0,
            "shN": self.shN,
        }

    # ------------------------------------------------------------------ conversions
    def colors(self) -> np.ndarray:
        """(N, 3) base colour in [0, 1] (view-independent part), clipped."""
        return np.clip(0.5 + SH_C0 * self.sh0, 0.0, 1.0).astype(np.float32)

    def alphas(self) -> np.ndarray:
        """(N,) opacity in [0, 1]."""
        return sigmoid(self.opacities.astype(np.float32))

    def linear_scales(self) -> np.ndarray:
        """(N, 3) standard deviations, exp of the log-scales."""
        return np.exp(self.scales).astype(np.float32)

    def normalized_quats(self) -> np.ndarray:
        """(N, 4) unit quaternions (w, x, y, z); a zero quaternion becomes the identity."""
        norm = np.linalg.norm(self.quats, axis=1, keepdims=True)
        out = np.where(norm > 0, self.quats / np.where(norm > 0, norm, 1.0), np.array([1, 0, 0, 0], np.float32))
        return out.astype(np.float32)

    def rotation_matrices(self) -> np.ndarray:
        """(N, 3, 3) rotation matrices of the normalized quaternions."""
        w, x, y, z = self.normalized_quats().T
        r = np.stack(
            [
                1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
                2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
                2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
            ],
            axis=1,
        )
        return r.reshape(-1, 3, 3).astype(np.float32)

    def sh_coeffs(self) -> np.ndarray:
        """(N, 1 + K, 3) all SH coefficients, degree 0 first (gsplat's ``colors`` layout)."""
        return np.concatenate([self.sh0[:, None, :], self.shN], axis=1)

    def f_rest(self) -> np.ndarray:
        """(N, 3K) higher-order SH in the PLY's channel-major ``f_rest`` order."""
        return self.shN.transpose(0, 2, 1).reshape(len(self), -1)

    @staticmethod
    def shN_from_f_rest(f_rest: np.ndarray) -> np.ndarray:
        """(N, 3K) channel-major ``f_rest`` -> (N, K, 3)."""
        n, m = f_rest.shape
        if m % 3:
            raise ValueError(f"f_rest has {m} values per splat, not a multiple of 3")
        return f_rest.reshape(n, 3, m // 3).transpose(0, 2, 1).copy()

    def to_torch(self, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
        """The six attributes as float32 tensors on ``device`` (same names and shapes as the arrays)."""
        import torch

        return {k: torch.as_tensor(np.ascontiguousarray(v), dtype=torch.float32, device=device)
                for k, v in self.core_arrays.items()}

    @classmethod
    def from_torch(cls, tensors: dict[str, Any], extras: dict[str, np.ndarray] | None = None) -> GaussianCloud:
        """Inverse of :meth:`to_torch`; ``shN`` may be missing (degree 0)."""
        arrays = {k: v.detach().to("cpu", dtype=__import__("torch").float32).numpy() for k, v in tensors.items()}
        n = arrays["means"].shape[0]
        return cls(
            means=arrays["means"], scales=arrays["scales"], quats=arrays["quats"],
            opacities=arrays["opacities"], sh0=arrays["sh0"],
            shN=arrays.get("shN", np.zeros((n, 0, 3), np.float32)), extras=dict(extras or {}),
        )

    # ------------------------------------------------------------------ selections
    def subset(self, index: np.ndarray) -> GaussianCloud:
        """A new cloud of the splats selected by ``index`` (a boolean mask (N,) or integer indices (M,))."""
        return replace(
            self,
            means=self.means[index], scales=self.scales[index], quats=self.quats[index],
            opacities=self.opacities[index], sh0=self.sh0[index], shN=self.shN[index],
            extras={k: v[index] for k, v in self.extras.items()},
        )

    def with_sh_degree(self, degree: int) -> GaussianCloud:
        """A copy with SH truncated (or zero-padded) to ``degree``."""
        k = SH_COEFFS[degree]
        have = self.shN.shape[1]
        if k <= have:
            shN = self.shN[:, :k].copy()
        else:
            shN = np.concatenate([self.shN, np.zeros((len(self), k - have, 3), np.float32)], axis=1)
        return replace(self, shN=shN)

    def _rows(self, name: str) -> np.ndarray:
        return getattr(self, name).reshape(len(self), -1)

    def value_kinds(self) -> dict[str, int]:
        """Splat counts by kind of non-finite value (see the module docstring for what is valid):

        ``opaque`` (opacity +inf), ``transparent`` (opacity -inf), ``flat`` (a log-scale of -inf), valid; and
        ``nan`` (NaN anywhere), ``infinite_position``, ``infinite_scale`` (+inf), ``infinite_rotation``,
        ``infinite_sh``, invalid; ``invalid`` counts the splats with any invalid value. A splat may be in
        several kinds.
        """
        def inf(name: str) -> np.ndarray:
            return np.isinf(self._rows(name)).any(axis=1)

        nan = np.zeros(len(self), bool)
        for name in self.core_arrays:
            nan |= np.isnan(self._rows(name)).any(axis=1)
        return {
            "opaque": int(np.isposinf(self.opacities).sum()),
            "transparent": int(np.isneginf(self.opacities).sum()),
            "flat": int(np.isneginf(self.scales).any(axis=1).sum()),
            "nan": int(nan.sum()),
            "infinite_position": int(inf("means").sum()),
            "infinite_scale": int(np.isposinf(self.scales).any(axis=1).sum()),
            "infinite_rotation": int(inf("quats").sum()),
            "infinite_sh": int((inf("sh0") | inf("shN")).sum()),
            "invalid": int(self.invalid_mask().sum()),
        }

    def invalid_mask(self) -> np.ndarray:
        """(N,) bool: True where the splat cannot be drawn: NaN in any attribute, or an infinity in a position,
        rotation or SH value, or a +inf log-scale. Opacity +-inf (alpha 1 or 0), a -inf log-scale (zero extent)
        and a zero-norm quaternion (the identity) are valid."""
        bad = np.zeros(len(self), bool)
        for name in ("means", "quats", "sh0", "shN"):
            bad |= ~np.isfinite(self._rows(name)).all(axis=1)
        bad |= np.isnan(self.opacities)
        bad |= (np.isnan(self.scales) | np.isposinf(self.scales)).any(axis=1)
        return bad

    def invalid_summary(self) -> str:
        """What is wrong with the invalid splats, in words, e.g. ``3 with NaN, 1 with an infinite position``."""
        k = self.value_kinds()
        words = {"nan": "with NaN", "infinite_position": "with an infinite position",
                 "infinite_scale": "with an infinite size (log-scale +inf)",
                 "infinite_rotation": "with an infinite rotation", "infinite_sh": "with an infinite colour (SH)"}
        return ", ".join(f"{k[key]} {text}" for key, text in words.items() if k[key])

    def drop_invalid(self) -> tuple[GaussianCloud, int]:
        """The cloud without its invalid splats (:meth:`invalid_mask`), and how many were dropped."""
        bad = self.invalid_mask()
        return (self.subset(~bad) if bad.any() else self), int(bad.sum())

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """(3,), (3,): min and max of the finite means."""
        finite = np.isfinite(self.means).all(axis=1)
        m = self.means[finite]
        if len(m) == 0:
            return np.zeros(3, np.float32), np.zeros(3, np.float32)
        return m.min(axis=0), m.max(axis=0)

    @staticmethod
    def concatenate(clouds: list[GaussianCloud]) -> GaussianCloud:
        """Join clouds of the same SH degree; extras kept only where every cloud has them."""
        if not clouds:
            raise ValueError("nothing to concatenate")
        keys = set.intersection(*(set(c.extras) for c in clouds))
        def cat(name: str) -> np.ndarray:
            return np.concatenate([getattr(c, name) for c in clouds])

        return GaussianCloud(
            means=cat("means"), scales=cat("scales"), quats=cat("quats"), opacities=cat("opacities"),
            sh0=cat("sh0"), shN=cat("shN"),
            extras={k: np.concatenate([c.extras[k] for c in clouds]) for k in clouds[0].extras if k in keys},
        )
