"""Densification behind one small interface, :class:`Strategy`, for the four paths of training:
gsplat's ``DefaultStrategy`` / ``MCMCStrategy`` on CUDA, and the torch ones of :mod:`splatflow.training.strategy`
on CPU (``default`` / ``mcmc``). The loop calls, per step::

    loss = photometric + strategy.regularization(params)
    strategy.step_pre_backward(params, optimizers, state, step, info)
    loss.backward()
    info = strategy.after_backward(params, view, info)          # before the optimizer step moves the means
    optimizers step
    events = strategy.step_post_backward(params, optimizers, state, step, info, generator, lr)

``state`` (from :meth:`Strategy.initialize`) is what a checkpoint keeps; ``events`` counts what changed.
:func:`make_strategy` picks the implementation; :func:`schedule` gives the refinement steps of a run.
"""

from __future__ import annotations

import math
from typing import Any, Protocol

import torch

from splatflow.options import STAGE_OPTIONS
from splatflow.training.scene import View
from splatflow.training.strategy import CpuDefaultStrategy, CpuMCMCStrategy, Optimizers, Params

__all__ = ["MCMC_OPACITY_REG", "MCMC_SCALE_REG", "NEVER", "STRATEGIES", "CpuDefault", "CpuMCMC", "GsplatDefault",
           "GsplatMCMC", "Strategy", "make_strategy", "schedule", "screen_grad"]

STRATEGIES: tuple[str, ...] = STAGE_OPTIONS["train"]["strategy"].choices or ()
MCMC_OPACITY_REG = 0.01
MCMC_SCALE_REG = 0.01
NEVER = 2**62
"""A step count no run reaches (disables a periodic action of gsplat's strategy that we do ourselves)."""


def schedule(iterations: int, sh_degree: int, sh_interval: int | None) -> dict[str, int]:
    """Step numbers of the refinement and SH schedules; the 3DGS values, compressed for short runs."""
    refine_start = min(500, iterations // 10)
    refine_every = min(100, max(10, iterations // 20))
    return {
        "sh_interval": sh_interval if sh_interval else max(1, min(1000, iterations // (2 * sh_degree + 2))),
        "refine_start": refine_start,
        "refine_every": refine_every,
        "refine_stop": min(15_000, int(0.8 * iterations)),
        # opacity resets only for runs long enough to recover from them (3DGS: every 3000 of 30000 steps)
        "reset_every": 3000 if iterations >= 6000 else iterations + 1,
    }


class Strategy(Protocol):
    """What the training loop needs of a densification strategy (see the module doc for the call order)."""

    def initialize(self, params: Params, optimizers: Optimizers, scene_scale: float) -> dict[str, Any]:
        """Check the parameter layout and return the strategy's fresh state."""
        ...

    def regularization(self, params: Params) -> torch.Tensor | None:
        """A term added to the loss (None: none)."""
        ...

    def step_pre_backward(self, params: Params, optimizers: Optimizers, state: dict[str, Any], step: int,
                          info: dict[str, Any]) -> None:
        """Before ``loss.backward()``: ask for the gradients the strategy reads."""
        ...

    def after_backward(self, params: Params, view: View, info: dict[str, Any]) -> dict[str, Any]:
        """After ``backward``, before the optimizer step: the info :meth:`step_post_backward` reads."""
        ...

    def step_post_backward(self, params: Params, optimizers: Optimizers, state: dict[str, Any], step: int,
                           info: dict[str, Any], generator: torch.Generator, lr: float) -> dict[str, int]:
        """After the optimizer step: densify / prune / relocate; returns counts of what changed."""
        ...


class _Base:
    """Defaults of the interface: no regularization, nothing before backward, the info as it is."""

    def regularization(self, params: Params) -> torch.Tensor | None:
        return None

    def step_pre_backward(self, params: Params, optimizers: Optimizers, state: dict[str, Any], step: int,
                          info: dict[str, Any]) -> None:
        return None

    def after_backward(self, params: Params, view: View, info: dict[str, Any]) -> dict[str, Any]:
        return info


class _McmcRegularization:
    """The MCMC paper's opacity and scale regularization (both strategies of the mcmc kind)."""

    def regularization(self, params: Params) -> torch.Tensor | None:
        return MCMC_OPACITY_REG * torch.sigmoid(params["opacities"]).mean() \
            + MCMC_SCALE_REG * params["scales"].exp().mean()


class CpuDefault(_Base):
    """3DGS clone / split / prune on CPU (:class:`~splatflow.training.strategy.CpuDefaultStrategy`), fed with
    the image-plane gradient that :func:`screen_grad` reads after backward."""

    def __init__(self, inner: CpuDefaultStrategy) -> None:
        self.inner = inner

    def initialize(self, params: Params, optimizers: Optimizers, scene_scale: float) -> dict[str, Any]:
        return self.inner.initialize_state(scene_scale=scene_scale)

    def step_pre_backward(self, params: Params, optimizers: Optimizers, state: dict[str, Any], step: int,
                          info: dict[str, Any]) -> None:
        if info["means2d"].requires_grad:
            info["means2d"].retain_grad()

    def after_backward(self, params: Params, view: View, info: dict[str, Any]) -> dict[str, Any]:
        grad2d, visible = screen_grad(info, params["means"], view)
        return {"grad2d": grad2d, "visible": visible}

    def step_post_backward(self, params: Params, optimizers: Optimizers, state: dict[str, Any], step: int,
                           info: dict[str, Any], generator: torch.Generator, lr: float) -> dict[str, int]:
        return dict(self.inner.step_post_backward(params, optimizers, state, step, info, generator))


class CpuMCMC(_McmcRegularization, _Base):
    """3DGS as MCMC on CPU (:class:`~splatflow.training.strategy.CpuMCMCStrategy`)."""

    def __init__(self, inner: CpuMCMCStrategy) -> None:
        self.inner = inner

    def initialize(self, params: Params, optimizers: Optimizers, scene_scale: float) -> dict[str, Any]:
        return self.inner.initialize_state(scene_scale=scene_scale)

    def step_post_backward(self, params: Params, optimizers: Optimizers, state: dict[str, Any], step: int,
                           info: dict[str, Any], generator: torch.Generator, lr: float) -> dict[str, int]:
        return dict(self.inner.step_post_backward(params, optimizers, state, step, info, generator, lr))


class GsplatMCMC(_McmcRegularization, _Base):
    """gsplat's ``MCMCStrategy`` (its own cap: ``cap_max``); it reports no counts."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def initialize(self, params: Params, optimizers: Optimizers, scene_scale: float) -> dict[str, Any]:
        self.inner.check_sanity(params, optimizers)
        return dict(self.inner.initialize_state())  # gsplat's MCMCStrategy.initialize_state takes no scene scale

    def step_post_backward(self, params: Params, optimizers: Optimizers, state: dict[str, Any], step: int,
                           info: dict[str, Any], generator: torch.Generator, lr: float) -> dict[str, int]:
        self.inner.step_post_backward(params, optimizers, state, step, info, lr=lr)
        return {}


class GsplatDefault(_Base):
    """gsplat's ``DefaultStrategy`` with two workarounds of gsplat 1.5.3:

    - its opacity reset never fires (``step % reset_every == 0 & step > 0`` parses as a chained comparison that
      is never true), so it is built with ``reset_every=NEVER`` and the reset is done here every
      ``reset_every`` steps;
    - it has no splat budget: at ``max_splats`` no splat grows (a refine step could otherwise nearly double the
      splats, and the GPU memory, before the pruning brings them back), and splats over the budget are pruned,
      the least opaque first.
    """

    def __init__(self, inner: Any, max_splats: int, reset_every: int) -> None:
        self.inner = inner
        self.max_splats = max_splats
        self.reset_every = reset_every
        self.grow_grad2d = inner.grow_grad2d  # restored under the budget

    def initialize(self, params: Params, optimizers: Optimizers, scene_scale: float) -> dict[str, Any]:
        self.inner.check_sanity(params, optimizers)
        return dict(self.inner.initialize_state(scene_scale=scene_scale))

    def step_pre_backward(self, params: Params, optimizers: Optimizers, state: dict[str, Any], step: int,
                          info: dict[str, Any]) -> None:
        self.inner.step_pre_backward(params, optimizers, state, step, info)

    def step_post_backward(self, params: Params, optimizers: Optimizers, state: dict[str, Any], step: int,
                           info: dict[str, Any], generator: torch.Generator, lr: float) -> dict[str, int]:
        from gsplat.strategy.ops import remove, reset_opa

        strat = self.inner
        strat.grow_grad2d = math.inf if len(params["means"]) >= self.max_splats else self.grow_grad2d
        strat.step_post_backward(params, optimizers, state, step, info, packed=False)
        events: dict[str, int] = {}
        if 0 < step < strat.refine_stop_iter and step % self.reset_every == 0:
            reset_opa(params, optimizers, state, value=strat.prune_opa * 2.0)
            events["opacity_resets"] = 1
        n = len(params["means"])
        if n <= self.max_splats:
            return events
        order = torch.argsort(params["opacities"].detach())
        mask = torch.zeros(n, dtype=torch.bool, device=order.device)
        mask[order[: n - self.max_splats]] = True
        remove(params, optimizers, state, mask)
        return {**events, "pruned_over_budget": n - self.max_splats}


def make_strategy(strategy: str, gsplat: bool, max_splats: int, sched: dict[str, int]) -> Strategy:
    """The densification strategy of a path: ``strategy`` (``default`` or ``mcmc``) on gsplat (CUDA) or CPU,
    growing to at most ``max_splats``, on the steps of ``sched`` (:func:`schedule`)."""
    common = {"refine_start_iter": sched["refine_start"], "refine_stop_iter": sched["refine_stop"],
              "refine_every": sched["refine_every"]}
    if not gsplat:
        if strategy == "mcmc":
            return CpuMCMC(CpuMCMCStrategy(cap_max=max_splats, **common))
        return CpuDefault(CpuDefaultStrategy(cap_max=max_splats, reset_every=sched["reset_every"], **common))
    from gsplat.strategy import DefaultStrategy, MCMCStrategy

    if strategy == "mcmc":
        return GsplatMCMC(MCMCStrategy(cap_max=max_splats, **common))
    return GsplatDefault(DefaultStrategy(reset_every=NEVER, **common), max_splats, sched["reset_every"])


def screen_grad(info: dict[str, Any], means: torch.Tensor, view: View) -> tuple[torch.Tensor, torch.Tensor]:
    """Image-plane gradient norm (N,) of each splat in gsplat's units (pixel gradient times half the image size,
    as gsplat's DefaultStrategy measures it) and the visibility mask (N,) (``radii`` > 0), after ``backward``.

    Read from the renderer's ``info["means2d"]`` (1, N, 2) when it holds a gradient; otherwise derived from the
    gradient of the world means (N, 3) (``means.grad``) by the pinhole Jacobian, d pixel / d camera xy = f / z.
    """
    visible = (info["radii"][0] > 0).all(dim=-1)
    half = torch.tensor([view.width / 2, view.height / 2], device=means.device)
    grad2d = info["means2d"].grad
    if grad2d is not None:
        return (grad2d[0] * half).norm(dim=-1), visible
    if means.grad is None:  # nothing was visible
        return torch.zeros(len(means), device=means.device), visible
    R, t = view.viewmat[:3, :3], view.viewmat[:3, 3]
    z = (means.detach() @ R[2] + t[2]).clamp_min(1e-6)[:, None]
    g_cam = means.grad @ R.T
    f = torch.stack([view.K[0, 0], view.K[1, 1]])
    return (g_cam[:, :2] * z / f * half).norm(dim=-1), visible
