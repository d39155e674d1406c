"""The CPU densification strategies and parameter surgery of the training stage (no rendering: fast)."""

from __future__ import annotations

import math

import pytest
import torch

from splatflow.training.optim import make_optimizers
from splatflow.training.splats import init_params
from splatflow.training.strategy import (
    CpuDefaultStrategy,
    CpuMCMCStrategy,
    _relocation_binoms,
    append,
    relocation_values,
    select,
)


def _params(n: int = 6, seed: int = 0) -> tuple[dict[str, torch.nn.Parameter], dict[str, torch.optim.Optimizer]]:
    g = torch.Generator().manual_seed(seed)
    pts = torch.rand((n, 3), generator=g).numpy()
    cols = torch.rand((n, 3), generator=g).numpy()
    params = init_params(pts, cols, sh_degree=1, init_opacity=0.5, scene_scale=1.0, device=torch.device("cpu"))
    return params, make_optimizers(params, 1.0)


def _adam_step(params: dict[str, torch.nn.Parameter], opts: dict[str, torch.optim.Optimizer]) -> None:
    loss = sum(p.sum() for p in params.values())
    loss.backward()
    for o in opts.values():
        o.step()
        o.zero_grad()


def test_init_params_shapes_and_values() -> None:
    pts = [[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1]]
    params = init_params(torch.tensor(pts, dtype=torch.float32).numpy(), torch.full((5, 3), 0.5).numpy(),
                         sh_degree=3, init_opacity=0.1, scene_scale=1.0, device=torch.device("cpu"))
    assert params["shN"].shape == (5, 15, 3)
    assert params["sh0"].shape == (5, 1, 3)
    assert torch.allclose(params["sh0"], torch.zeros(5, 1, 3))  # colour 0.5 is SH 0
    assert torch.allclose(torch.sigmoid(params["opacities"]), torch.full((5,), 0.1))
    # the origin's 3 nearest neighbours are at distance 1: scale = sqrt(mean squared distance) = 1
    assert math.isclose(float(params["scales"][0, 0].detach().exp()), 1.0, rel_tol=1e-5)


def test_select_and_append_keep_adam_state_aligned() -> None:
    params, opts = _params(6)
    _adam_step(params, opts)
    before = opts["means"].state[params["means"]]["exp_avg"].clone()
    keep = torch.tensor([True, False, True, True, False, True])
    select(params, opts, keep)
    assert len(params["means"]) == 4
    state = opts["means"].state[params["means"]]
    assert torch.equal(state["exp_avg"], before[keep])
    append(params, opts, {k: v.data[:2] for k, v in params.items()})
    state = opts["means"].state[params["means"]]
    assert len(params["means"]) == 6 and state["exp_avg"].shape == (6, 3)
    assert torch.count_nonzero(state["exp_avg"][4:]) == 0  # new splats start with zero moments
    assert opts["means"].param_groups[0]["params"][0] is params["means"]
    _adam_step(params, opts)  # the optimizers still work after the surgery


def test_default_strategy_clones_splits_prunes_and_respects_the_cap() -> None:
    params, opts = _params(6)
    _adam_step(params, opts)
    with torch.no_grad():
        params["scales"][:3] = math.log(0.001)   # small: cloned when the gradient is high
        params["scales"][3:] = math.log(0.5)     # large: split
        params["opacities"][5] = -10.0           # transparent: pruned
    strat = CpuDefaultStrategy(cap_max=100, refine_start_iter=0, refine_every=1, reset_every=10_000)
    state = strat.initialize_state(scene_scale=1.0)
    info = {"grad2d": torch.tensor([1.0, 1.0, 0.0, 1.0, 0.0, 0.0]), "visible": torch.ones(6, dtype=torch.bool)}
    gen = torch.Generator().manual_seed(0)
    out = strat.step_post_backward(params, opts, state, 1, info, gen)
    assert out == {"cloned": 2, "split": 1, "pruned": 1}
    assert len(params["means"]) == 6 + 2 + 1 - 1
    for name, p in params.items():
        assert opts[name].state[p]["exp_avg"].shape == p.shape

    # a cap of 7 leaves room for one more splat: only the highest-gradient candidate grows
    params, opts = _params(6)
    with torch.no_grad():
        params["scales"][:] = math.log(0.001)
    strat = CpuDefaultStrategy(cap_max=7, refine_start_iter=0, refine_every=1, reset_every=10_000)
    state = strat.initialize_state(scene_scale=1.0)
    info = {"grad2d": torch.tensor([1.0, 3.0, 2.0, 1.0, 1.0, 1.0]), "visible": torch.ones(6, dtype=torch.bool)}
    out = strat.step_post_backward(params, opts, state, 1, info, gen)
    assert out["cloned"] == 1 and len(params["means"]) == 7
    assert torch.equal(params["means"][6], params["means"][1])  # the clone of splat 1 (highest gradient)


def test_relocation_rule_keeps_a_single_splat_unchanged_and_splits_opacity() -> None:
    binoms = _relocation_binoms(51)
    opa = torch.tensor([0.3, 0.9, 0.9])
    scales = torch.ones(3, 3)
    new_opa, new_scales = relocation_values(opa, scales, torch.tensor([1, 1, 2]), binoms)
    assert torch.allclose(new_opa[:2], opa[:2], atol=1e-5)
    assert torch.allclose(new_scales[:2], scales[:2], atol=1e-4)
    # two copies of opacity o' compose to the original opacity: 1 - (1 - o')^2 = o
    assert math.isclose(1 - (1 - float(new_opa[2])) ** 2, 0.9, rel_tol=1e-5)


def test_mcmc_relocates_dead_splats_and_grows_to_the_cap() -> None:
    params, opts = _params(20)
    with torch.no_grad():
        params["opacities"][:5] = -10.0  # dead
    strat = CpuMCMCStrategy(cap_max=22, refine_start_iter=0, refine_every=1, noise_lr=0.0)
    state = strat.initialize_state(scene_scale=1.0)
    gen = torch.Generator().manual_seed(0)
    out = strat.step_post_backward(params, opts, state, 1, {}, gen, lr=1e-3)
    assert out == {"relocated": 5, "added": 1}
    assert len(params["means"]) == 21
    assert float(torch.sigmoid(params["opacities"].detach()).min()) > strat.min_opacity
    for _ in range(5):
        strat.step_post_backward(params, opts, state, 2, {}, gen, lr=1e-3)
    assert len(params["means"]) == 22  # never over the cap


def test_mcmc_noise_moves_transparent_splats_only() -> None:
    params, opts = _params(4)
    with torch.no_grad():
        params["opacities"][:2] = -8.0   # nearly transparent
        params["opacities"][2:] = 8.0    # opaque
    before = params["means"].detach().clone()
    strat = CpuMCMCStrategy(refine_start_iter=10**9)
    strat.step_post_backward(params, opts, strat.initialize_state(), 1, {}, torch.Generator().manual_seed(1), lr=1e-3)
    moved = (params["means"].detach() - before).norm(dim=1)
    assert bool((moved[:2] > 1e-4).all())
    assert bool((moved[2:] < 1e-8).all())


@pytest.mark.parametrize("iterations", [60, 300, 7000, 30_000])
def test_schedule_fits_inside_the_run(iterations: int) -> None:
    from splatflow.training.strategies import schedule

    s = schedule(iterations, 3, None)
    assert 0 < s["refine_start"] < s["refine_stop"] <= iterations
    assert 3 * s["sh_interval"] < iterations  # SH degree 3 is reached during the run
    assert s["sh_interval"] <= 1000


def _gsplat_info(params: dict[str, torch.nn.Parameter], grad: float) -> dict:
    """What gsplat's rasterization hands its DefaultStrategy after backward: 2-D means with a gradient, radii."""
    n = len(params["means"])
    means2d = torch.zeros((1, n, 2), requires_grad=True)
    (means2d.sum() * grad).backward()
    return {"means2d": means2d, "radii": torch.full((1, n, 2), 5, dtype=torch.int32), "width": 64, "height": 64,
            "n_cameras": 1, "gaussian_ids": None}


def test_gsplat_default_strategy_path_resets_opacity_and_stops_growing_at_the_budget() -> None:
    """The CUDA path's strategy glue, run on CPU (gsplat's strategy code is plain torch): gsplat 1.5.3's own
    opacity reset never fires (`step % reset_every == 0 & step > 0` is a chained comparison), so ours does; and at
    the budget no splat grows (a refine step could otherwise nearly double the splats before the cap prunes)."""
    pytest.importorskip("gsplat")
    from splatflow.training.strategies import NEVER, GsplatDefault, make_strategy

    sched = {"refine_start": 0, "refine_stop": 100, "refine_every": 1, "reset_every": 5}
    gen = torch.Generator().manual_seed(0)
    params, opts = _params(6)
    strat = make_strategy("default", True, 6, sched)
    assert isinstance(strat, GsplatDefault)
    state = strat.initialize(params, opts, 1.0)
    assert strat.inner.reset_every == NEVER
    with torch.no_grad():
        params["scales"][:] = math.log(1e-4)  # small: cloned when the gradient is high
    # at the budget (6 splats, cap 6): a high gradient grows nothing
    events = strat.step_post_backward(params, opts, state, 1, _gsplat_info(params, 1.0), gen, 1e-3)
    assert len(params["means"]) == 6 and "pruned_over_budget" not in events
    # under the budget it grows again (the threshold is restored)
    strat.max_splats = 12
    events = strat.step_post_backward(params, opts, state, 2, _gsplat_info(params, 1.0), gen, 1e-3)
    assert len(params["means"]) > 6
    # the opacity reset at step 5 (and not at step 4)
    with torch.no_grad():
        params["opacities"][:] = 2.0
    strat.max_splats = 100
    strat.step_post_backward(params, opts, state, 4, _gsplat_info(params, 0.0), gen, 1e-3)
    assert float(torch.sigmoid(params["opacities"].detach()).min()) > 0.8
    events = strat.step_post_backward(params, opts, state, 5, _gsplat_info(params, 0.0), gen, 1e-3)
    assert events.get("opacity_resets") == 1
    assert float(torch.sigmoid(params["opacities"].detach()).max()) <= strat.inner.prune_opa * 2.0 + 1e-6


def test_held_out_views_are_interior() -> None:
    from splatflow.training.scene import held_out_indices

    assert held_out_indices(29, 8) == [4, 12, 20]      # never the first or the last photo of the path
    assert held_out_indices(12, 8) == [4]
    assert held_out_indices(7, 8) == [4]
    assert held_out_indices(3, 8) == [1]               # short captures still hold out one interior view
    assert held_out_indices(2, 8) == [] and held_out_indices(29, 0) == []
    assert held_out_indices(40, 4) == [2, 6, 10, 14, 18, 22, 26, 30, 34, 38]


def test_background_shell_lies_beyond_the_scene() -> None:
    import numpy as np

    from splatflow.training.scene import Scene
    from splatflow.training.splats import background_shell

    rng = np.random.default_rng(0)
    points = rng.normal(0, 1.0, (500, 3)).astype(np.float32) + np.array([5.0, 0, 0], dtype=np.float32)
    scene = Scene(train=[], test=[], points=points, colors=np.zeros((500, 3), np.float32), scene_scale=0.5,
                  source_size=(10, 10))
    shell, colors = background_shell(scene, 1000, seed=0)
    assert shell.shape == (1000, 3) and colors.shape == (1000, 3) and shell.dtype == np.float32
    r = np.linalg.norm(shell - np.median(points, axis=0), axis=1)
    far = np.percentile(np.linalg.norm(points - np.median(points, axis=0), axis=1), 95)
    np.testing.assert_allclose(r, 2 * far, rtol=1e-5)     # on one sphere, twice as far as the scene's points
    assert np.abs(shell - np.median(points, axis=0)).mean(axis=0).min() > 0.4 * far  # spread in every direction
    assert (colors == 0.5).all()
