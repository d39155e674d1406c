"""The compiled CPU backend (``backend="cpu"``) against the torch reference backend: images on real splat files,
gradients of every input on random scenes, finite differences, edge cases, tile sizes and thread counts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from splatflow import kernels, render
from splatflow.cameras import Camera, intrinsics, look_at, orbit_cameras
from splatflow.io.ply import read_ply
from splatflow.metrics import psnr

pytestmark = pytest.mark.skipif(not kernels.available(), reason="no C++ compiler: the cpu backend cannot build")
NAMES = ("means", "quats", "scales", "opacities", "colors")


def _scene(n: int, *, seed: int = 0, sh_degree: int | None = 3, w: int = 40, h: int = 30,
           spread: float = 1.0, opacity: tuple[float, float] = (0.2, 0.95)) -> dict:
    """n random splats in front of a w x h camera at the origin looking down +z (OpenCV), float32."""
    g = torch.Generator().manual_seed(seed)
    means = torch.stack([(torch.rand(n, generator=g) - 0.5) * 2 * spread,
                         (torch.rand(n, generator=g) - 0.5) * 1.5 * spread,
                         2.0 + 2.0 * torch.rand(n, generator=g)], -1)
    k = 3 if sh_degree is None else (sh_degree + 1) ** 2
    colors = (0.6 * torch.randn(n, k, 3, generator=g)) if sh_degree is not None else torch.rand(n, 3, generator=g)
    lo, hi = opacity
    f = 0.75 * w / 40
    return {
        "means": means, "quats": torch.randn(n, 4, generator=g),
        "scales": 0.03 + 0.12 * torch.rand(n, 3, generator=g),
        "opacities": lo + (hi - lo) * torch.rand(n, generator=g), "colors": colors,
        "viewmat": torch.eye(4), "K": torch.tensor([[30.0 * f, 0, w / 2], [0, 30.0 * f, h / 2], [0, 0, 1]]),
        "width": w, "height": h, "sh_degree": sh_degree,
    }


def _grads(s: dict, backend: str, dtype: torch.dtype, background: torch.Tensor | None = None
           ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """Image, alpha and the gradients of a fixed random loss w.r.t. every input and the 2-D means."""
    ins = {n: s[n].to(dtype).clone().requires_grad_(True) for n in NAMES}
    info: dict = {}
    rgb, alpha = render.rasterize(*(ins[n] for n in NAMES), s["viewmat"].to(dtype), s["K"].to(dtype), s["width"],
                                  s["height"], sh_degree=s["sh_degree"], backend=backend, info=info,
                                  background=None if background is None else background.to(dtype))
    info["means2d"].retain_grad()
    g = torch.Generator().manual_seed(123)
    w_rgb = torch.rand(rgb.shape, generator=g).to(dtype)
    w_alpha = torch.rand(alpha.shape, generator=g).to(dtype)
    ((rgb * w_rgb).sum() + (alpha * w_alpha).sum()).backward()
    grads = {n: ins[n].grad for n in NAMES}
    grads["means2d"] = info["means2d"].grad[0]
    return rgb.detach(), alpha.detach(), grads


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """Relative error of a against the reference b, per tensor."""
    return float((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30))


# ------------------------------------------------------------------------------------------- forward
@pytest.mark.parametrize("name", ["guitar.ply", "fruit_drops_minimal.ply", "playbot_lod2.ply"])
def test_forward_matches_torch_backend_on_real_files(shared_data, name: str) -> None:
    """>= 60 dB between the backends from orbit cameras and from a COLMAP camera (the garden's real intrinsics:
    off-centre principal point, 648x420, scaled down)."""
    cloud = read_ply(shared_data / "splats" / name)
    cams = orbit_cameras(cloud, 2, 96, 72)
    garden = np.load(shared_data / "cameras" / "test_garden.npz")
    K = np.asarray(garden["Ks"][0], dtype=np.float32) * np.array([[0.25], [0.25], [1.0]], dtype=np.float32)
    cams.append(Camera(cams[0].viewmat, K, 162, 105, "colmap"))
    t = render.cloud_tensors(cloud)
    for cam in cams:
        a = render.render_cloud(cloud, cam, backend="torch", tensors=t)
        b = render.render_cloud(cloud, cam, backend="cpu", tensors=t)
        assert a.mean() > 0.01, cam.name  # the view shows the object
        value = psnr(a, b)
        assert value >= 60.0, f"{name} {cam.name}: {value:.2f} dB"


@pytest.mark.parametrize("sh_degree", [None, 0, 1, 2, 3])
def test_forward_matches_torch_backend_with_background(sh_degree: int | None) -> None:
    s = _scene(400, seed=1, sh_degree=sh_degree, spread=2.0)
    bg = torch.tensor([0.2, 0.5, 0.9])
    a, aa, _ = _grads(s, "torch", torch.float64, bg)
    b, ba, _ = _grads(s, "cpu", torch.float32, bg)
    torch.testing.assert_close(b.double(), a, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(ba.double(), aa, atol=2e-5, rtol=1e-4)


def test_tile_size_and_thread_count_do_not_change_the_image(monkeypatch: pytest.MonkeyPatch) -> None:
    s = _scene(600, seed=2, w=70, h=45, spread=2.0, opacity=(0.5, 1.0))  # nearly opaque: early stops per tile
    ref, ref_a, _ = _grads(s, "cpu", torch.float32)
    threads = torch.get_num_threads()
    try:
        for tile, n in ((8, 1), (16, 1), (8, 2)):
            monkeypatch.setattr(render, "CPU_TILE", tile)
            torch.set_num_threads(n)
            img, alpha, _ = _grads(s, "cpu", torch.float32)
            torch.testing.assert_close(img, ref, atol=1e-6, rtol=1e-5)
            torch.testing.assert_close(alpha, ref_a, atol=1e-6, rtol=1e-5)
    finally:
        torch.set_num_threads(threads)
    assert float(ref_a.max()) > 0.99


# ------------------------------------------------------------------------------------------- backward
@pytest.mark.parametrize(("seed", "sh_degree", "n"), [(3, None, 60), (4, 0, 200), (5, 1, 300), (6, 3, 500),
                                                      (7, 2, 1500)])
def test_gradients_match_torch_autograd(seed: int, sh_degree: int | None, n: int) -> None:
    """Every input's gradient within 1e-3 relative error of autograd through the torch backend (float64)."""
    s = _scene(n, seed=seed, sh_degree=sh_degree, spread=1.5)
    bg = torch.tensor([0.1, 0.3, 0.2]) if seed % 2 else None
    _, _, ref = _grads(s, "torch", torch.float64, bg)
    _, _, got = _grads(s, "cpu", torch.float32, bg)
    for name in (*NAMES, "means2d"):
        assert got[name].dtype == torch.float32
        assert torch.isfinite(got[name]).all(), name
        assert ref[name].abs().sum() > 0, name  # the scene exercises every gradient
        assert _rel(got[name], ref[name]) < 1e-3, f"{name}: {_rel(got[name], ref[name]):.2e}"


def test_gradients_with_many_opaque_layers() -> None:
    """Pixels that stop at transmittance 1e-4 and splats clamped at alpha 0.999 (zero opacity gradient there)."""
    s = _scene(800, seed=8, sh_degree=1, spread=0.8, opacity=(0.9, 1.0))
    s["scales"] = s["scales"] * 2
    _, ref_a, ref = _grads(s, "torch", torch.float64)
    _, _, got = _grads(s, "cpu", torch.float32)
    assert float((ref_a > 0.999).double().mean()) > 0.2  # many pixels stop early
    for name in (*NAMES, "means2d"):
        assert _rel(got[name], ref[name]) < 1e-3, f"{name}: {_rel(got[name], ref[name]):.2e}"


def test_gradients_match_finite_differences() -> None:
    """Central differences of the cpu backend itself (float32, so a coarse step and tolerance) on a few
    parameters of a smooth scene: a few large, half-transparent splats."""
    s = _scene(5, seed=9, sh_degree=1, w=24, h=18, opacity=(0.3, 0.6))
    s["scales"] = s["scales"] * 3
    g = torch.Generator().manual_seed(5)
    w_rgb = torch.rand(18, 24, 3, generator=g)

    def loss(**over: torch.Tensor) -> torch.Tensor:
        args = {n: over.get(n, s[n]) for n in NAMES}
        rgb, _ = render.rasterize(*(args[n] for n in NAMES), s["viewmat"], s["K"], 24, 18, sh_degree=1,
                                  backend="cpu")
        return (rgb * w_rgb).sum()

    params = {n: s[n].clone().requires_grad_(True) for n in NAMES}
    loss(**params).backward()
    checked = 0
    for name, idx, eps in (("means", (0, 0), 1e-3), ("means", (2, 2), 1e-3), ("scales", (1, 1), 1e-3),
                           ("quats", (3, 2), 1e-3), ("opacities", (4,), 1e-3), ("colors", (0, 2, 1), 1e-2)):
        plus, minus = s[name].clone(), s[name].clone()
        plus[idx] += eps
        minus[idx] -= eps
        fd = float(loss(**{name: plus}) - loss(**{name: minus})) / (2 * eps)
        an = float(params[name].grad[idx])
        assert abs(fd - an) <= 0.02 * abs(an) + 1e-3, f"{name}{idx}: analytic {an:.5f}, finite difference {fd:.5f}"
        checked += abs(an) > 1e-2
    assert checked >= 4  # most probes carry a real gradient


def test_culled_splats_get_finite_zero_gradients() -> None:
    """Splats in the camera plane, at the centre or behind are culled: zero (not NaN) gradients."""
    s = _scene(8, seed=11, sh_degree=1)
    s["means"][0] = torch.tensor([0.4, -0.2, 0.0])
    s["means"][1] = torch.tensor([0.0, 0.0, 0.0])
    s["means"][2] = torch.tensor([0.1, 0.1, -1e-4])
    s["scales"][:3] = 5.0
    _, _, got = _grads(s, "cpu", torch.float32)
    for n in NAMES:
        assert torch.isfinite(got[n]).all(), n
        assert (got[n][:3] == 0).all(), n
        assert got[n][3:].abs().sum() > 0, n


def test_a_splat_larger_than_the_frame() -> None:
    s = _scene(3, seed=12, sh_degree=0)
    s["means"][0] = torch.tensor([0.05, 0.02, 1.5])
    s["scales"][0] = torch.tensor([3.0, 2.0, 0.5])   # covers the whole image many times over
    s["opacities"][0] = 0.4
    a, aa, ref = _grads(s, "torch", torch.float64)
    b, ba, got = _grads(s, "cpu", torch.float32)
    assert float(ba.min()) > 0.25  # every pixel sees it
    torch.testing.assert_close(b.double(), a, atol=2e-5, rtol=1e-4)
    for name in (*NAMES, "means2d"):
        assert _rel(got[name], ref[name]) < 1e-3, name


@pytest.mark.parametrize("n", [0, 1])
def test_zero_and_one_splat(n: int) -> None:
    s = _scene(n, seed=13, sh_degree=2)
    bg = torch.tensor([0.3, 0.2, 0.1])
    ins = {k: s[k].clone().requires_grad_(True) for k in NAMES}
    rgb, alpha = render.rasterize(*(ins[k] for k in NAMES), s["viewmat"], s["K"], 40, 30, sh_degree=2,
                                  background=bg, backend="cpu")
    assert rgb.shape == (30, 40, 3) and alpha.shape == (30, 40, 1)
    (rgb.sum() + alpha.sum()).backward()
    if n == 0:
        assert float(alpha.max()) == 0.0
        torch.testing.assert_close(rgb, bg.expand(30, 40, 3))
    else:
        ref_rgb, _, ref = _grads(s, "torch", torch.float64, bg)
        got_rgb, _, got = _grads(s, "cpu", torch.float32, bg)
        torch.testing.assert_close(got_rgb.double(), ref_rgb, atol=2e-5, rtol=1e-4)
        assert float(alpha.max()) > 0.1
        for k in (*NAMES, "means2d"):
            assert _rel(got[k], ref[k]) < 1e-3, k


def test_empty_view_renders_the_background() -> None:
    s = _scene(30, seed=14)
    cam = Camera(look_at(np.array([0, 0, 100.0]), np.array([0, 0, 200.0]), np.array([0, -1.0, 0])),
                 intrinsics(40, 30), 40, 30, "away")
    ins = {k: s[k].clone().requires_grad_(True) for k in NAMES}
    rgb, alpha = render.rasterize(*(ins[k] for k in NAMES), torch.tensor(cam.viewmat), torch.tensor(cam.K), 40,
                                  30, sh_degree=3, background=torch.tensor([0.0, 1.0, 0.0]), backend="cpu")
    assert float(alpha.max()) == 0.0 and float(rgb[..., 1].min()) == 1.0
    rgb.sum().backward()
    for k in NAMES:
        assert (ins[k].grad == 0).all(), k


def test_info_has_screen_space_gradients_and_radii() -> None:
    s = _scene(50, seed=15, sh_degree=0, spread=3.0)
    info_t: dict = {}
    info_c: dict = {}
    for backend, info in (("torch", info_t), ("cpu", info_c)):
        means = s["means"].clone().requires_grad_(True)
        rgb, _ = render.rasterize(means, s["quats"], s["scales"], s["opacities"], s["colors"], s["viewmat"],
                                  s["K"], 40, 30, sh_degree=0, backend=backend, info=info)
        info["means2d"].retain_grad()
        rgb.sum().backward()
    assert torch.equal(info_c["radii"], info_t["radii"])
    assert torch.equal(info_c["visible"], info_t["visible"])
    seen = info_c["visible"]
    assert seen.any() and (~seen).any()
    assert _rel(info_c["means2d"].grad[0], info_t["means2d"].grad[0]) < 1e-3
    assert (info_c["means2d"].grad[0][~seen] == 0).all()


def test_auto_picks_the_cpu_backend_on_cpu() -> None:
    assert render.resolve_backend("auto", "cpu") == "cpu"
    assert render.resolve_backend("torch", "cpu") == "torch"
