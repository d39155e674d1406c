"""GaussianCloud: shapes, conversions, selections."""

from __future__ import annotations

import numpy as np
import pytest

from splatflow.gaussians import SH_C0, GaussianCloud, logit, sigmoid


def make(n: int = 8, k: int = 3) -> GaussianCloud:
    rng = np.random.default_rng(1)
    return GaussianCloud(
        means=rng.normal(size=(n, 3)).astype(np.float32), scales=rng.normal(size=(n, 3)).astype(np.float32),
        quats=rng.normal(size=(n, 4)).astype(np.float32), opacities=rng.normal(size=n).astype(np.float32),
        sh0=rng.normal(size=(n, 3)).astype(np.float32), shN=rng.normal(size=(n, k, 3)).astype(np.float32),
    )


def test_shapes_are_checked() -> None:
    with pytest.raises(ValueError, match="scales has shape"):
        GaussianCloud(means=np.zeros((2, 3)), scales=np.zeros((3, 3)), quats=np.zeros((2, 4)),
                      opacities=np.zeros(2), sh0=np.zeros((2, 3)))
    with pytest.raises(ValueError, match="not an SH degree"):
        make(k=5)


def test_conversions() -> None:
    c = make()
    assert c.sh_degree == 1 and len(c) == 8
    np.testing.assert_allclose(np.linalg.norm(c.normalized_quats(), axis=1), 1, atol=1e-6)
    r = c.rotation_matrices()
    np.testing.assert_allclose(r @ r.transpose(0, 2, 1), np.broadcast_to(np.eye(3), r.shape), atol=1e-5)
    np.testing.assert_allclose(c.colors(), np.clip(0.5 + SH_C0 * c.sh0, 0, 1))
    np.testing.assert_allclose(logit(sigmoid(c.opacities)), c.opacities, atol=1e-4)
    np.testing.assert_array_equal(GaussianCloud.shN_from_f_rest(c.f_rest()), c.shN)
    assert c.sh_coeffs().shape == (8, 4, 3)


def test_torch_round_trip_and_selection() -> None:
    c = make()
    back = GaussianCloud.from_torch(c.to_torch())
    for k, v in c.core_arrays.items():
        np.testing.assert_array_equal(getattr(back, k), v)
    sub = c.subset(np.array([0, 2]))
    assert len(sub) == 2 and np.array_equal(sub.means[1], c.means[2])
    assert c.with_sh_degree(3).shN.shape == (8, 15, 3) and c.with_sh_degree(0).sh_degree == 0
    c.means[1, 1] = np.nan
    kept, dropped = c.drop_invalid()
    assert dropped == 1 and len(kept) == 7
    both = GaussianCloud.concatenate([kept, kept])
    assert len(both) == 14
