"""Densification on CPU (pure torch), same contract as gsplat's strategies.

The parameters are a dict of ``torch.nn.Parameter`` (``means`` (N, 3), ``scales`` (N, 3) log, ``quats`` (N, 4),
``opacities`` (N,) logits, ``sh0`` (N, 1, 3), ``shN`` (N, K, 3)) with one Adam optimizer per name, exactly what
gsplat's ``DefaultStrategy`` / ``MCMCStrategy`` expect, so the training loop is the same on both paths.

- :class:`CpuDefaultStrategy` follows the 3DGS paper: clone small splats with a high image-plane gradient, split
  large ones, prune transparent and huge ones, reset opacities now and then; growth stops at ``cap_max``.
- :class:`CpuMCMCStrategy` follows 3DGS-as-MCMC: move transparent splats onto opaque ones (opacity and scale
  adjusted so the rendering is kept), add splats the same way up to ``cap_max``, and jitter positions with noise.

The image-plane gradient comes from the loop (``info["grad2d"]`` (N,) and ``info["visible"]`` (N,) bool), since
the torch renderer does not return its projected means: see ``screen_grad`` in :mod:`splatflow.training.strategies`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from splatflow.options import DEFAULT_MAX_SPLATS
from splatflow.render import quat_to_rotmat

__all__ = ["CpuDefaultStrategy", "CpuMCMCStrategy", "Optimizers", "Params", "append", "quat_to_rotmat",
           "relocation_values", "reset_moments", "select"]

Params = dict[str, torch.nn.Parameter]
Optimizers = dict[str, torch.optim.Optimizer]


# ---------------------------------------------------------------------------- parameter surgery
def _update(params: Params, optimizers: Optimizers,
            param_fn: Callable[[str, torch.Tensor], torch.Tensor],
            state_fn: Callable[[str, torch.Tensor], torch.Tensor]) -> None:
    """Replace every parameter by ``param_fn(name, p)`` and every Adam moment by ``state_fn(name, moment)``."""
    for name in list(params):
        old = params[name]
        new = torch.nn.Parameter(param_fn(name, old.data), requires_grad=old.requires_grad)
        opt = optimizers[name]
        state = opt.state.pop(old, None)
        if state is not None:
            for key in ("exp_avg", "exp_avg_sq"):
                if key in state:
                    state[key] = state_fn(name, state[key])
            opt.state[new] = state
        opt.param_groups[0]["params"] = [new]
        params[name] = new


def select(params: Params, optimizers: Optimizers, keep: torch.Tensor) -> None:
    """Keep only the splats where ``keep`` (N,) bool is True."""
    _update(params, optimizers, lambda _n, p: p[keep], lambda _n, s: s[keep])


def append(params: Params, optimizers: Optimizers, new: dict[str, torch.Tensor]) -> None:
    """Append M new splats (``new[name]`` shaped like the parameter with M rows); their Adam moments start at 0."""
    _update(params, optimizers, lambda n, p: torch.cat([p, new[n].to(p)]),
            lambda n, s: torch.cat([s, torch.zeros((len(new[n]), *s.shape[1:]), dtype=s.dtype, device=s.device)]))


def reset_moments(params: Params, optimizers: Optimizers, index: torch.Tensor) -> None:
    """Zero the Adam moments of the splats in ``index`` (their values were replaced)."""
    for name, p in params.items():
        state = optimizers[name].state.get(p)
        if state:
            for key in ("exp_avg", "exp_avg_sq"):
                if key in state:
                    state[key][index] = 0


def _logit(p: torch.Tensor) -> torch.Tensor:
    return torch.logit(p.clamp(1e-6, 1 - 1e-6))


# ---------------------------------------------------------------------------- 3DGS default strategy
@dataclass
class CpuDefaultStrategy:
    """Clone / split / prune driven by the image-plane gradient (3DGS), growth capped at ``cap_max`` splats."""

    cap_max: int = DEFAULT_MAX_SPLATS
    prune_opa: float = 0.005
    grow_grad2d: float = 0.0002
    grow_scale3d: float = 0.01
    prune_scale3d: float = 0.1
    refine_start_iter: int = 500
    refine_stop_iter: int = 15_000
    reset_every: int = 3000
    refine_every: int = 100

    def initialize_state(self, scene_scale: float = 1.0) -> dict[str, Any]:
        """Accumulators of the image-plane gradient per splat (filled lazily)."""
        return {"grad2d": None, "count": None, "scene_scale": scene_scale}

    def step_post_backward(self, params: Params, optimizers: Optimizers, state: dict[str, Any], step: int,
                           info: dict[str, Any], generator: torch.Generator) -> dict[str, int]:
        """Accumulate gradients, then refine every ``refine_every`` steps; returns counts of what changed."""
        n = len(params["means"])
        if step >= self.refine_stop_iter:
            return {}
        if state["grad2d"] is None or len(state["grad2d"]) != n:
            state["grad2d"] = torch.zeros(n, device=params["means"].device)
            state["count"] = torch.zeros(n, device=params["means"].device)
        vis = info["visible"]
        state["grad2d"][vis] += info["grad2d"][vis]
        state["count"][vis] += 1
        out: dict[str, int] = {}
        if step > self.refine_start_iter and step % self.refine_every == 0:
            out = self._refine(params, optimizers, state, step, generator)
            state["grad2d"] = torch.zeros(len(params["means"]), device=params["means"].device)
            state["count"] = torch.zeros(len(params["means"]), device=params["means"].device)
        if step > 0 and step % self.reset_every == 0 and step < self.refine_stop_iter - self.refine_every:
            with torch.no_grad():
                value = _logit(torch.tensor(self.prune_opa * 2.0))
                params["opacities"].data.clamp_(max=float(value))
            reset_moments(params, optimizers, torch.arange(len(params["opacities"])))
            out["opacity_reset"] = 1
        return out

    @torch.no_grad()
    def _refine(self, params: Params, optimizers: Optimizers, state: dict[str, Any], step: int,
                generator: torch.Generator) -> dict[str, int]:
        scene_scale = state["scene_scale"]
        avg = state["grad2d"] / state["count"].clamp_min(1)
        high = avg > self.grow_grad2d
        size = params["scales"].exp().max(dim=-1).values
        small = size <= self.grow_scale3d * scene_scale
        n = len(avg)
        room = max(0, self.cap_max - n)
        dup = high & small
        spl = high & ~small
        # budget: keep the candidates with the highest gradient (a split adds one splat, like a clone)
        if int(dup.sum() + spl.sum()) > room:
            cand = torch.nonzero(high).squeeze(1)
            order = torch.argsort(avg[cand], descending=True)
            keep = torch.zeros(n, dtype=torch.bool, device=avg.device)
            keep[cand[order[:room]]] = True
            dup, spl = dup & keep, spl & keep
        n_dup, n_split = int(dup.sum()), int(spl.sum())
        if n_dup:
            append(params, optimizers, {k: v.data[dup] for k, v in params.items()})
        if n_split:
            # split: two samples from the splat's own Gaussian, scales / 1.6, the original removed
            spl_all = torch.cat([spl, torch.zeros(n_dup, dtype=torch.bool, device=spl.device)])
            scales = params["scales"].data[spl_all].exp()
            rot = quat_to_rotmat(params["quats"].data[spl_all])
            noise = torch.randn((2, n_split, 3), generator=generator).to(scales)
            offsets = torch.einsum("nij,bnj->bni", rot, scales[None] * noise)
            new = {k: torch.cat([v.data[spl_all]] * 2) for k, v in params.items()}
            new["means"] = (params["means"].data[spl_all][None] + offsets).reshape(-1, 3)
            new["scales"] = torch.log(scales / 1.6).repeat(2, 1)
            select(params, optimizers, ~spl_all)
            append(params, optimizers, new)
        opa = torch.sigmoid(params["opacities"].data)
        prune = opa < self.prune_opa
        if step > self.reset_every:
            prune |= params["scales"].data.exp().max(dim=-1).values > self.prune_scale3d * scene_scale
        if prune.all():  # never prune the last splat: the scene would be empty
            prune[torch.argmax(opa)] = False
        n_prune = int(prune.sum())
        if n_prune:
            select(params, optimizers, ~prune)
        return {"cloned": n_dup, "split": n_split, "pruned": n_prune}


# ---------------------------------------------------------------------------- MCMC strategy
def _relocation_binoms(n_max: int) -> torch.Tensor:
    """(n_max, n_max) table of binomial coefficients C(n, k)."""
    table = torch.zeros(n_max, n_max)
    for n in range(n_max):
        for k in range(n + 1):
            table[n, k] = math.comb(n, k)
    return table


def relocation_values(opacities: torch.Tensor, scales: torch.Tensor, ratios: torch.Tensor,
                      binoms: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """New opacity (N,) in [0, 1] and linear scales (N, 3) when a splat is shared by ``ratios`` (N,) copies.

    The MCMC paper's rule: the copies together render like the original, o' = 1 - (1 - o)^(1/n) and
    s' = o / (sum_{i=1..n} sum_{k<i} C(i-1, k) (-1)^k o'^(k+1) / sqrt(k+1)) * s.
    """
    n_max = binoms.shape[0]
    ratios = ratios.clamp(1, n_max).to(opacities.dtype)
    new_opa = 1.0 - (1.0 - opacities).clamp_min(0) ** (1.0 / ratios)
    denom = torch.zeros_like(opacities)
    for i in range(1, n_max + 1):
        active = ratios >= i
        if not bool(active.any()):
            break
        for k in range(i):
            term = binoms[i - 1, k] * (-1.0) ** k / math.sqrt(k + 1) * new_opa ** (k + 1)
            denom = denom + torch.where(active, term, torch.zeros_like(term))
    coeff = opacities / denom.clamp_min(1e-12)
    return new_opa.clamp(1e-6, 1 - 1e-6), coeff[:, None] * scales


@dataclass
class CpuMCMCStrategy:
    """3DGS as Markov chain Monte Carlo: relocate dead splats, add up to ``cap_max``, perturb positions."""

    cap_max: int = DEFAULT_MAX_SPLATS
    noise_lr: float = 5e5
    refine_start_iter: int = 500
    refine_stop_iter: int = 25_000
    refine_every: int = 100
    min_opacity: float = 0.005
    grow_factor: float = 1.05

    def initialize_state(self, scene_scale: float = 1.0) -> dict[str, Any]:
        """The binomial table of the relocation rule."""
        return {"binoms": _relocation_binoms(51), "scene_scale": scene_scale}

    def step_post_backward(self, params: Params, optimizers: Optimizers, state: dict[str, Any], step: int,
                           info: dict[str, Any], generator: torch.Generator, lr: float) -> dict[str, int]:
        """Relocate and add every ``refine_every`` steps, then inject position noise scaled by ``lr``."""
        out: dict[str, int] = {}
        if self.refine_start_iter < step < self.refine_stop_iter and step % self.refine_every == 0:
            out["relocated"] = self._relocate(params, optimizers, state, generator)
            out["added"] = self._add(params, optimizers, state, generator)
        self._noise(params, lr, generator)
        return out

    @torch.no_grad()
    def _sample(self, params: Params, state: dict[str, Any], probs: torch.Tensor, count: int,
                generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Draw ``count`` sources by ``probs``; returns them, their new opacity logits and log scales."""
        src = torch.multinomial(probs, count, replacement=True, generator=generator)
        ratios = torch.bincount(src, minlength=len(probs))[src] + 1
        opa, scales = relocation_values(torch.sigmoid(params["opacities"].data[src]),
                                        params["scales"].data[src].exp(), ratios, state["binoms"])
        return src, _logit(opa), torch.log(scales)

    @torch.no_grad()
    def _relocate(self, params: Params, optimizers: Optimizers, state: dict[str, Any],
                  generator: torch.Generator) -> int:
        opa = torch.sigmoid(params["opacities"].data)
        dead = opa <= self.min_opacity
        n_dead = int(dead.sum())
        if n_dead == 0 or bool(dead.all()):
            return 0
        alive = torch.nonzero(~dead).squeeze(1)
        dead_idx = torch.nonzero(dead).squeeze(1)
        probs = torch.zeros_like(opa)
        probs[alive] = opa[alive]
        src, new_opa, new_scales = self._sample(params, state, probs, n_dead, generator)
        params["opacities"].data[src] = new_opa
        params["scales"].data[src] = new_scales
        for p in params.values():
            p.data[dead_idx] = p.data[src]
        reset_moments(params, optimizers, src)
        reset_moments(params, optimizers, dead_idx)
        return n_dead

    @torch.no_grad()
    def _add(self, params: Params, optimizers: Optimizers, state: dict[str, Any], generator: torch.Generator) -> int:
        n = len(params["means"])
        target = min(self.cap_max, int(self.grow_factor * n))
        count = max(0, target - n)
        if count == 0:
            return 0
        opa = torch.sigmoid(params["opacities"].data)
        src, new_opa, new_scales = self._sample(params, state, opa, count, generator)
        params["opacities"].data[src] = new_opa
        params["scales"].data[src] = new_scales
        reset_moments(params, optimizers, src)
        append(params, optimizers, {k: v.data[src] for k, v in params.items()})
        return count

    @torch.no_grad()
    def _noise(self, params: Params, lr: float, generator: torch.Generator) -> None:
        """Perturb means by noise shaped like each splat's covariance, mostly for transparent splats."""
        opa = torch.sigmoid(params["opacities"].data)
        scales = params["scales"].data.exp()
        rot = quat_to_rotmat(params["quats"].data)
        cov = rot @ torch.diag_embed(scales**2) @ rot.transpose(1, 2)
        gate = 1.0 / (1.0 + torch.exp(100.0 * (opa - 0.005)))  # the paper's k=100, t=0.005: dead splats move
        noise = torch.randn(params["means"].shape, generator=generator).to(scales)
        params["means"].data += torch.einsum("nij,nj->ni", cov, noise) * (gate * lr * self.noise_lr)[:, None]
