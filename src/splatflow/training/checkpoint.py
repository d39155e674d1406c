"""Training checkpoints: written atomically every K steps and on SIGTERM, so a preempted pod resumes where it was.

A checkpoint is one ``torch.save`` file ``OUT_DIR/checkpoints/step-XXXXXXX.pt`` holding the step, the splat
parameters, the Adam states, the strategy state, the random generator states and the run's configuration
fingerprint; the newest two are kept.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import torch

from splatflow.fsutil import atomic_path

log = logging.getLogger(__name__)
_NAME = re.compile(r"^step-(\d{7})\.pt$")
KEEP = 2


def checkpoint_path(folder: Path, step: int) -> Path:
    """``folder/step-0001234.pt``."""
    return folder / f"step-{step:07d}.pt"


def list_checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """(step, path) of every checkpoint in ``folder``, oldest first."""
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return sorted(found)


def save_checkpoint(folder: Path, step: int, payload: dict[str, Any]) -> Path:
    """Write ``payload`` as the checkpoint of ``step`` (atomically) and delete all but the newest ``KEEP``."""
    folder.mkdir(parents=True, exist_ok=True)
    dest = checkpoint_path(folder, step)
    with atomic_path(dest) as tmp:
        torch.save({"step": step, **payload}, tmp)
    for _, old in list_checkpoints(folder)[:-KEEP]:
        old.unlink(missing_ok=True)
    log.info("checkpoint saved: %s", dest)
    return dest


def load_latest(folder: Path, map_location: str | torch.device = "cpu") -> dict[str, Any] | None:
    """The newest readable checkpoint in ``folder`` (a damaged newest one falls back to the one before), or None."""
    for step, path in reversed(list_checkpoints(folder)):
        try:
            data: dict[str, Any] = torch.load(path, map_location=map_location, weights_only=False)
        except Exception as exc:  # a file cut short by a kill during the rename is impossible, but be safe
            log.warning("checkpoint %s is unreadable (%s); trying an older one", path, exc)
            continue
        if data.get("step") == step:
            return data
    return None
