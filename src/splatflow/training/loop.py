"""The training loop: one step per training view (in a fresh random order each epoch), checkpoints every
``checkpoint_every`` steps and on SIGTERM, and the run state a checkpoint holds (:class:`RunState`)."""

from __future__ import annotations

import contextlib
import logging
import math
import resource
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from splatflow.errors import InputError, TrainError
from splatflow.progress import is_interactive, progress
from splatflow.training.checkpoint import CheckpointStore
from splatflow.training.loss import photometric_loss
from splatflow.training.optim import make_optimizers, means_lr, set_lr
from splatflow.training.render_adapter import Renderer
from splatflow.training.scene import View
from splatflow.training.strategies import Strategy
from splatflow.training.strategy import Optimizers, Params

__all__ = ["LoopConfig", "RunState", "peak_memory", "restore", "run_loop", "sigterm_flag", "snapshot"]

log = logging.getLogger(__name__)


@dataclass
class LoopConfig:
    """The options the loop reads: ``sh_interval`` steps per SH band (from the schedule), ``boost`` the
    learning-rate factor (:func:`~splatflow.training.optim.lr_boost`)."""

    iterations: int
    sh_degree: int
    sh_interval: int
    checkpoint_every: int
    seed: int
    scene_scale: float
    boost: float


@dataclass
class RunState:
    """Everything a checkpoint restores: the splats, their optimizers, the strategy's state, the random
    generator of the strategy, the step reached, the seconds spent before this process, and the initial
    (step 0) held-out metrics."""

    params: Params
    optimizers: Optimizers
    strategy_state: dict[str, Any]
    generator: torch.Generator
    step: int = 0
    elapsed: float = 0.0
    initial: dict[str, Any] = field(default_factory=dict)


def snapshot(store: CheckpointStore, run: RunState, step: int, fingerprint: str, elapsed: float) -> None:
    """Save the checkpoint of ``step`` (``elapsed``: seconds of the whole run so far)."""
    dev = run.params["means"].device
    store.save(step, {
        "fingerprint": fingerprint,
        "params": {k: v.detach().cpu() for k, v in run.params.items()},
        "optimizers": {k: o.state_dict() for k, o in run.optimizers.items()},
        "strategy_state": run.strategy_state,
        "generator": run.generator.get_state(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state(dev) if dev.type == "cuda" else None,
        "elapsed": elapsed,
        "initial": run.initial,
    })


def restore(ckpt: dict[str, Any], fingerprint: str, where: str, dev: torch.device, scene_scale: float,
            boost: float) -> RunState:
    """The run state of a loaded checkpoint (also restores torch's random state); InputError when it belongs
    to a run with another fingerprint (other SfM input or options) than ``fingerprint``."""
    if ckpt.get("fingerprint") != fingerprint:
        raise InputError(f"{where} holds checkpoints of a different run (other SfM input or options)",
                         hint="use a new output folder, or pass --no-resume to start over")
    params = {k: torch.nn.Parameter(v.to(dev)) for k, v in ckpt["params"].items()}
    optimizers = make_optimizers(params, scene_scale, boost)
    for k, opt in optimizers.items():
        opt.load_state_dict(ckpt["optimizers"][k])
    state = {k: v.to(dev) if isinstance(v, torch.Tensor) else v for k, v in ckpt["strategy_state"].items()}
    gen = torch.Generator()
    gen.set_state(ckpt["generator"])
    torch.set_rng_state(ckpt["torch_rng"])
    if dev.type == "cuda" and ckpt.get("cuda_rng") is not None:
        torch.cuda.set_rng_state(ckpt["cuda_rng"], dev)
    return RunState(params, optimizers, state, gen, step=int(ckpt["step"]),
                    elapsed=float(ckpt.get("elapsed", 0.0)), initial=dict(ckpt["initial"]))


def _train_step(render: Renderer, strategy: Strategy, run: RunState, view: View, step: int, cfg: LoopConfig
                ) -> tuple[torch.Tensor, dict[str, int]]:
    """One optimisation step on ``view``: render, loss, backward, Adam, densification. Returns the loss and the
    strategy's counts; TrainError when the loss is not finite."""
    params, optimizers = run.params, run.optimizers
    sh_now = min(step // cfg.sh_interval, cfg.sh_degree)
    lr = means_lr(step, cfg.iterations, cfg.scene_scale, cfg.boost)
    set_lr(optimizers["means"], lr)
    img, info = render(params, view, sh_now)
    loss = photometric_loss(img, view.image)
    reg = strategy.regularization(params)
    if reg is not None:
        loss = loss + reg
    if not torch.isfinite(loss):
        raise TrainError(f"the loss became {float(loss)} at step {step}",
                         hint="the SfM scene may be degenerate; check the sfm report")
    strategy.step_pre_backward(params, optimizers, run.strategy_state, step, info)
    loss.backward()
    info = strategy.after_backward(params, view, info)
    for opt in optimizers.values():
        opt.step()
        opt.zero_grad(set_to_none=True)
    events = strategy.step_post_backward(params, optimizers, run.strategy_state, step, info, run.generator, lr)
    return loss, events


def run_loop(render: Renderer, strategy: Strategy, run: RunState, views: list[View], cfg: LoopConfig,
             save: Callable[[int], None], *, save_at_end: bool) -> dict[str, int]:
    """Train from ``run.step`` to ``cfg.iterations`` on ``views``; ``save(step)`` writes a checkpoint every
    ``checkpoint_every`` steps, before a SIGTERM stop (then TrainError, exit 4: the next run resumes) and, with
    ``save_at_end``, at the end. Returns the strategy's counts summed over the steps."""
    events: dict[str, int] = {}
    n_train = len(views)
    last_log = time.monotonic()
    interactive = is_interactive()
    with sigterm_flag() as flag:
        for step in progress(range(run.step, cfg.iterations), total=cfg.iterations - run.step, desc="train",
                             every=math.inf):
            if flag["stop"]:
                save(step)
                raise TrainError(f"training stopped by SIGTERM at step {step} of {cfg.iterations}; a checkpoint "
                                 "was saved", hint="run the same command again to resume")
            epoch, pos = divmod(step, n_train)
            order = torch.randperm(n_train, generator=torch.Generator().manual_seed(cfg.seed * 100_003 + epoch))
            loss, changed = _train_step(render, strategy, run, views[int(order[pos])], step, cfg)
            for k, v in changed.items():
                events[k] = events.get(k, 0) + v
            done = run.step = step + 1
            if done % cfg.checkpoint_every == 0 and done < cfg.iterations:
                save(done)
            now = time.monotonic()
            if not interactive and now - last_log >= 10:  # a terminal shows the progress bar instead
                last_log = now
                log.info("step %d/%d  loss %.4f  splats %d  SH %d", done, cfg.iterations, float(loss.detach()),
                         len(run.params["means"]), min(step // cfg.sh_interval, cfg.sh_degree))
        if save_at_end:
            save(cfg.iterations)
    return events


@contextlib.contextmanager
def sigterm_flag() -> Iterator[dict[str, bool]]:
    """Catch SIGTERM (pod preemption) as a flag the loop checks after each step; restore the old handler after."""
    flag = {"stop": False}
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum: int, _frame: Any) -> None:
        log.warning("SIGTERM received: saving a checkpoint and stopping")
        flag["stop"] = True

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGTERM, old)


def peak_memory(device: torch.device) -> tuple[int, str]:
    """(bytes, what was measured): CUDA's peak allocation on a GPU, the process's peak RSS on the CPU."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device)), "cuda_max_memory_allocated"
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024, "process_max_rss"
