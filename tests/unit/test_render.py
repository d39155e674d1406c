"""The torch rasterizer against gsplat's pure-torch reference helpers (projection, SH), an independent SH basis
(scipy), a per-pixel reference compositor, finite-difference gradients, and the gsplat CUDA backend (gpu)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from splatflow import render
from splatflow.cameras import Camera, intrinsics, look_at, orbit_cameras
from splatflow.errors import InputError
from splatflow.io.ply import read_ply
from splatflow.metrics import psnr


def _scene(n: int, *, seed: int = 0, sh_degree: int = 3, dtype: torch.dtype = torch.float32,
           spread: float = 1.0) -> dict:
    """n random splats in front of a 40x30 camera at the origin looking down +z (OpenCV)."""
    g = torch.Generator().manual_seed(seed)
    means = torch.stack([(torch.rand(n, generator=g) - 0.5) * 2 * spread,
                         (torch.rand(n, generator=g) - 0.5) * 1.5 * spread,
                         2.0 + 2.0 * torch.rand(n, generator=g)], -1)
    return {
        "means": means.to(dtype),
        "quats": torch.randn(n, 4, generator=g).to(dtype),
        "scales": (0.03 + 0.12 * torch.rand(n, 3, generator=g)).to(dtype),
        "opacities": (0.2 + 0.75 * torch.rand(n, generator=g)).to(dtype),
        "colors": (0.6 * torch.randn(n, (sh_degree + 1) ** 2, 3, generator=g)).to(dtype),
        "viewmat": torch.eye(4, dtype=dtype),
        "K": torch.tensor([[30.0, 0, 20.0], [0, 30.0, 15.0], [0, 0, 1]], dtype=dtype),
        "width": 40, "height": 30, "sh_degree": sh_degree,
    }


def _render(s: dict, **kw) -> tuple[torch.Tensor, torch.Tensor]:
    return render.rasterize(s["means"], s["quats"], s["scales"], s["opacities"], s["colors"], s["viewmat"],
                            s["K"], s["width"], s["height"], sh_degree=s["sh_degree"], **kw)


# ------------------------------------------------------------------------------------------- against gsplat
def test_projection_matches_gsplat_reference() -> None:
    ref = pytest.importorskip("gsplat.cuda._torch_impl", reason="gsplat (dev extra) is not installed")
    s = _scene(300, seed=1, spread=3.0)  # spread: many splats beyond the field of view (Jacobian clamping)
    vm = torch.tensor(look_at(np.array([0.3, -0.2, -0.5]), np.array([0.0, 0.1, 3.0]), np.array([0, -1.0, 0])))
    covars = render.covariance_3d(s["quats"], s["scales"])
    ref_cov, _ = ref._quat_scale_to_covar_preci(s["quats"], s["scales"], compute_preci=False)
    torch.testing.assert_close(covars, ref_cov, rtol=1e-5, atol=1e-7)
    radii, means2d, depths, conics, _ = ref._fully_fused_projection(
        s["means"], ref_cov, vm[None], s["K"][None], s["width"], s["height"])
    mine = render.project(s["means"], covars, vm, s["K"], s["width"], s["height"])
    torch.testing.assert_close(mine["means2d"], means2d[0], rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(mine["depths"], depths[0], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(mine["conics"], conics[0], rtol=1e-4, atol=1e-5)
    assert (radii[0] > 0).any() and (radii[0] == 0).any()  # the scene exercises both culled and kept splats


@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_sh_matches_gsplat_reference(degree: int) -> None:
    ref = pytest.importorskip("gsplat.cuda._torch_impl", reason="gsplat (dev extra) is not installed")
    g = torch.Generator().manual_seed(degree)
    coeffs = torch.randn(500, 16, 3, generator=g)
    dirs = torch.randn(500, 3, generator=g) * 3
    expected = ref._spherical_harmonics(degree, dirs, coeffs)
    torch.testing.assert_close(render.eval_sh(degree, coeffs, dirs), expected, rtol=1e-5, atol=1e-5)


def test_sh_basis_is_the_real_sh_with_condon_shortley_phase() -> None:
    """Independent of gsplat: each one-hot coefficient gives sqrt(2) Re/Im of scipy's complex Y_l^m."""
    sph_harm_y = pytest.importorskip("scipy.special").sph_harm_y
    rng = np.random.default_rng(0)
    d = rng.normal(size=(200, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    theta, phi = np.arccos(d[:, 2]), np.arctan2(d[:, 1], d[:, 0])
    for l in range(4):
        for m in range(-l, l + 1):
            y = sph_harm_y(l, abs(m), theta, phi)
            expected = y.real if m == 0 else math.sqrt(2) * (y.real if m > 0 else y.imag)
            coeffs = torch.zeros(len(d), 16, 3, dtype=torch.float64)
            coeffs[:, l * l + l + m, :] = 1.0
            got = render.eval_sh(3, coeffs, torch.tensor(d))[:, 0].numpy()
            np.testing.assert_allclose(got, expected, atol=1e-10, err_msg=f"l={l} m={m}")


def test_projection_matches_the_linearised_projection() -> None:
    """Independent of gsplat: cov2d = J C J^T + 0.3 I with J the finite-difference Jacobian of the pinhole map."""
    s = _scene(5, seed=3, dtype=torch.float64)
    covars = render.covariance_3d(s["quats"], s["scales"])
    out = render.project(s["means"], covars, s["viewmat"], s["K"], 40, 30)
    K = s["K"]

    def pix(x: torch.Tensor) -> torch.Tensor:
        return (K[:2, :2] @ (x[:2] / x[2])) + K[:2, 2]

    for i in range(5):
        J = torch.autograd.functional.jacobian(pix, s["means"][i])
        expected = J @ covars[i] @ J.T + 0.3 * torch.eye(2, dtype=torch.float64)
        torch.testing.assert_close(out["cov2d"][i], expected)
        torch.testing.assert_close(out["means2d"][i], pix(s["means"][i]))


def _reference_render(s: dict) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-by-pixel compositing in gsplat's kernel order and constants, on gsplat's reference projection and SH."""
    ref = pytest.importorskip("gsplat.cuda._torch_impl", reason="gsplat (dev extra) is not installed")
    covars, _ = ref._quat_scale_to_covar_preci(s["quats"], s["scales"], compute_preci=False)
    radii, means2d, depths, conics, _ = ref._fully_fused_projection(
        s["means"], covars, s["viewmat"][None], s["K"][None], s["width"], s["height"])
    campos = torch.inverse(s["viewmat"])[:3, 3]
    colors = torch.clamp_min(ref._spherical_harmonics(s["sh_degree"], s["means"] - campos, s["colors"]) + 0.5, 0)
    keep = [int(i) for i in torch.argsort(depths[0]) if radii[0, i].min() > 0]
    m2, con, op, col = means2d[0].tolist(), conics[0].tolist(), s["opacities"].tolist(), colors.tolist()
    img = np.zeros((s["height"], s["width"], 3))
    acc = np.zeros((s["height"], s["width"]))
    for y in range(s["height"]):
        for x in range(s["width"]):
            t, out = 1.0, np.zeros(3)
            for i in keep:
                dx, dy = m2[i][0] - (x + 0.5), m2[i][1] - (y + 0.5)
                a, b, c = con[i]
                sigma = 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy
                alpha = min(0.999, op[i] * math.exp(-sigma))
                if sigma < 0 or alpha < 1 / 255:
                    continue
                if t * (1 - alpha) <= 1e-4:
                    break
                out += np.asarray(col[i]) * alpha * t
                t *= 1 - alpha
            img[y, x], acc[y, x] = out, 1 - t
    return img, acc


@pytest.mark.parametrize("opaque", [False, True])
def test_render_matches_per_pixel_reference(opaque: bool) -> None:
    s = _scene(40, seed=4, sh_degree=2)
    if opaque:  # many nearly opaque splats: exercises the early stop at transmittance 1e-4
        s["opacities"] = torch.full_like(s["opacities"], 0.995)
        s["scales"] = s["scales"] * 3
    rgb, alpha = _render(s, backend="torch")
    ref_rgb, ref_alpha = _reference_render(s)
    np.testing.assert_allclose(rgb.numpy(), ref_rgb, atol=2e-5)
    np.testing.assert_allclose(alpha[..., 0].numpy(), ref_alpha, atol=2e-5)
    assert ref_alpha.max() > 0.99 if opaque else ref_alpha.max() > 0.3


def test_small_chunk_budget_gives_the_same_image(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bounded memory: tiny chunks and tile groups (transmittance carried across chunks) change nothing."""
    s = _scene(150, seed=5, sh_degree=1)
    s["opacities"] = s["opacities"].clamp_min(0.8)
    full, full_a = _render(s, backend="torch")
    monkeypatch.setattr(render, "SAMPLES_PER_CHUNK", 64)  # one 4x4 tile per group, 4 splats per chunk
    small, small_a = _render(s, backend="torch")
    torch.testing.assert_close(small, full, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(small_a, full_a, atol=1e-6, rtol=1e-5)


def test_gradients_match_finite_differences() -> None:
    s = _scene(6, seed=6, sh_degree=1, dtype=torch.float64)
    s.update(width=12, height=10, K=torch.tensor([[9.0, 0, 6], [0, 9.0, 5], [0, 0, 1]], dtype=torch.float64))
    s["scales"] = s["scales"] * 2
    names = ["means", "quats", "scales", "opacities", "colors"]
    bg = torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64)

    def f(*args: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return render.rasterize(*args, s["viewmat"], s["K"], 12, 10, sh_degree=1, background=bg, backend="torch")

    inputs = tuple(s[n].clone().requires_grad_(True) for n in names)
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-5, fast_mode=True)


def test_background_and_empty_view() -> None:
    s = _scene(20, seed=7)
    s["means"] = s["means"] * torch.tensor([1.0, 1.0, -1.0])  # every splat behind the camera
    rgb, alpha = _render(s, background=torch.tensor([0.2, 0.4, 0.6]))
    assert float(alpha.max()) == 0.0
    torch.testing.assert_close(rgb, torch.tensor([0.2, 0.4, 0.6]).expand(30, 40, 3))


def test_splats_in_the_camera_plane_or_behind_get_finite_zero_gradients() -> None:
    """A splat exactly at depth 0 (seen in CPU training on lund: its 2-D covariance overflowed, det = inf - inf)
    or behind the camera is culled; its gradients must be 0, not NaN (Adam would turn NaN into a NaN splat)."""
    s = _scene(8, seed=11, sh_degree=1)
    s["means"][0] = torch.tensor([0.4, -0.2, 0.0])      # in the camera plane, off the optical axis
    s["means"][1] = torch.tensor([0.0, 0.0, 0.0])       # at the camera centre
    s["means"][2] = torch.tensor([0.1, 0.1, -1e-4])     # just behind
    s["scales"][:3] = 5.0                               # large, so the unclamped Jacobian overflows float32
    names = ["means", "quats", "scales", "opacities", "colors"]
    for n in names:
        s[n].requires_grad_(True)
    rgb, _ = _render(s, backend="torch")
    (rgb * torch.rand(rgb.shape, generator=torch.Generator().manual_seed(0))).sum().backward()
    for n in names:
        g = s[n].grad
        assert torch.isfinite(g).all(), n
        assert (g[:3] == 0).all(), n                   # culled: no gradient at all
        assert (g[3:].abs().sum() > 0), n                # the others are rendered and learn


def test_info_reports_screen_space_means_with_gradients() -> None:
    s = _scene(30, seed=8, sh_degree=0)
    s["means"].requires_grad_(True)
    info: dict = {}
    rgb, _ = _render(s, backend="torch", info=info)
    info["means2d"].retain_grad()
    rgb.sum().backward()
    assert info["means2d"].shape == (1, 30, 2) and info["radii"].shape == (1, 30, 2)
    assert info["width"] == 40 and info["height"] == 30 and info["n_cameras"] == 1
    seen = info["radii"][0].min(-1).values > 0
    assert seen.any()
    assert (info["means2d"].grad[0][seen].abs().sum(-1) > 0).any()
    assert (info["means2d"].grad[0][~seen] == 0).all()


def test_bad_input_is_rejected_clearly() -> None:
    s = _scene(10, seed=9, sh_degree=1)
    with pytest.raises(InputError, match="colors has shape"):
        render.rasterize(s["means"], s["quats"], s["scales"], s["opacities"], s["colors"], s["viewmat"], s["K"],
                         40, 30, sh_degree=2)
    with pytest.raises(InputError, match="quats has shape"):
        render.rasterize(s["means"], s["quats"][:, :3], s["scales"], s["opacities"], s["colors"], s["viewmat"],
                         s["K"], 40, 30, sh_degree=1)
    with pytest.raises(InputError, match="unknown render backend"):
        _render(s, backend="vulkan")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="CUDA tensors"):
            _render(s, backend="gsplat")


def test_render_cloud_real_file(data_dir) -> None:
    cloud = read_ply(data_dir / "splats" / "fruit_drops_minimal.ply")
    cam = orbit_cameras(cloud, 3, 64, 48)[1]
    img = render.render_cloud(cloud, cam, with_alpha=True)
    assert img.shape == (48, 64, 4) and img.dtype == np.float32
    assert img.min() >= 0.0 and img.max() <= 1.0
    assert img[..., 3].mean() > 0.1  # the orbit sees the object
    lower = render.render_cloud(cloud, cam, sh_degree=0)
    assert 0 < np.abs(lower - img[..., :3]).mean() < 0.1  # view-dependent colour matters, but not much
    with pytest.raises(InputError, match="SH degree"):
        render.render_cloud(cloud.with_sh_degree(1), cam, sh_degree=2)


@pytest.mark.gpu
def test_gsplat_backend_agrees_with_torch_backend(shared_data) -> None:
    cloud = read_ply(shared_data / "splats" / "playbot_lod2.ply")
    for cam in orbit_cameras(cloud, 4, 256, 256):
        a = render.render_cloud(cloud, cam, backend="torch", device="cuda")
        b = render.render_cloud(cloud, cam, backend="gsplat", device="cuda")
        value = psnr(a, b)
        print(f"gsplat vs torch backend, {cam.name}: {value:.2f} dB")
        assert value > 40.0


def test_camera_that_sees_nothing_renders_empty() -> None:
    s = _scene(10, seed=10)
    cam = Camera(look_at(np.array([0, 0, 100.0]), np.array([0, 0, 200.0]), np.array([0, -1.0, 0])),
                 intrinsics(40, 30), 40, 30, "away")
    _, alpha = render.rasterize(s["means"], s["quats"], s["scales"], s["opacities"], s["colors"],
                                torch.tensor(cam.viewmat), torch.tensor(cam.K), 40, 30, sh_degree=3)
    assert float(alpha.max()) == 0.0
