"""Training checkpoints: written atomically every K steps and on SIGTERM, so a preempted pod resumes where it was.

A checkpoint is one ``torch.save`` file ``step-XXXXXXX.pt`` holding the step, the splat parameters, the Adam
states, the strategy state, the random generator states and the run's configuration fingerprint; the newest two
are kept. They live in a local folder (``OUT_DIR/checkpoints`` by default) and, when a ``remote`` URI is given
(``s3://...`` or ``file://...``, through :mod:`splatflow.storage`), are mirrored there as they are written: a
retry in a new pod, whose local disk is empty, fetches the newest one from the mirror and resumes.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import torch

from splatflow.fsutil import atomic_path

__all__ = ["KEEP", "CheckpointStore", "checkpoint_name", "checkpoint_path", "list_checkpoints", "load_latest",
           "save_checkpoint"]

log = logging.getLogger(__name__)
_NAME = re.compile(r"^step-(\d{7})\.pt$")
KEEP = 2


def checkpoint_name(step: int) -> str:
    """``step-0001234.pt``."""
    return f"step-{step:07d}.pt"


def checkpoint_path(folder: Path, step: int) -> Path:
    """``folder/step-0001234.pt``."""
    return folder / checkpoint_name(step)


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


class CheckpointStore:
    """The checkpoints of one run: a local ``folder`` and an optional ``remote`` mirror URI (see module doc)."""

    def __init__(self, folder: Path, remote: str | None = None) -> None:
        self.folder = Path(folder)
        self.remote = remote or None

    def _remote_steps(self) -> list[tuple[int, str]]:
        """(step, uri) of the mirrored checkpoints, oldest first ([] when there is no mirror or it is empty)."""
        if self.remote is None:
            return []
        from splatflow import storage

        found = []
        for uri in storage.list_uris(self.remote):
            m = _NAME.match(storage.relative_name(uri, self.remote))
            if m:
                found.append((int(m.group(1)), uri))
        return sorted(found)

    def save(self, step: int, payload: dict[str, Any]) -> Path:
        """Save locally, then upload to the mirror and drop the mirror's older ones (keeps ``KEEP``)."""
        path = save_checkpoint(self.folder, step, payload)
        if self.remote is not None:
            from splatflow import storage

            storage.upload(path, storage.join(self.remote, path.name))
            for _, uri in self._remote_steps()[:-KEEP]:
                storage.delete(uri)
            log.info("checkpoint mirrored to %s", self.remote)
        return path

    def load_latest(self, map_location: str | torch.device = "cpu") -> dict[str, Any] | None:
        """The newest checkpoint, fetching the mirror's newest first when it is newer than any local one."""
        remote = self._remote_steps()
        local = list_checkpoints(self.folder)
        if remote and (not local or remote[-1][0] > local[-1][0]):
            from splatflow import storage

            step, uri = remote[-1]
            self.folder.mkdir(parents=True, exist_ok=True)
            storage.download(uri, checkpoint_path(self.folder, step))
            log.info("fetched the checkpoint of step %d from %s", step, self.remote)
        return load_latest(self.folder, map_location=map_location)

    def clear(self) -> None:
        """Delete every checkpoint, local and mirrored (a run starting over, or one that is done with them)."""
        for _, path in list_checkpoints(self.folder):
            path.unlink(missing_ok=True)
        if self.folder.is_dir() and not any(self.folder.iterdir()):
            self.folder.rmdir()
        if self.remote is not None:
            from splatflow import storage

            for _, uri in self._remote_steps():
                storage.delete(uri)
