"""The one device resolver of splatflow: ``--device`` of train, compress, evaluate and render.

Names: ``auto`` (or None: CUDA when available, else the CPU), ``cpu``, ``cuda`` and ``cuda:N``. Anything else is
an :class:`~splatflow.errors.InputError` (exit 2) with one message; ``cuda`` on a machine without CUDA is an
:class:`~splatflow.errors.EnvironmentProblem` (exit 3: the input is valid, the machine lacks the GPU), as the
error hierarchy files a missing CUDA.
"""

from __future__ import annotations

import re

import torch

from splatflow.errors import EnvironmentProblem, InputError

__all__ = ["DEVICE_NAMES", "resolve_device"]

DEVICE_NAMES = ("auto", "cpu", "cuda", "cuda:N")
"""What ``--device`` accepts (N: a CUDA device index)."""
_CUDA = re.compile(r"^cuda(:\d+)?$")


def resolve_device(name: str | None) -> torch.device:
    """``name`` as a torch device: None/``auto`` -> CUDA when available, else CPU; ``cpu``; ``cuda``/``cuda:N``.

    InputError for any other name; EnvironmentProblem for ``cuda`` when CUDA is not available."""
    if name is None or name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if not isinstance(name, str) or not _CUDA.match(name):
        raise InputError(f"unknown device {name!r}", hint="use --device auto, cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise EnvironmentProblem(f"device {name} was requested but CUDA is not available here",
                                 hint="run on a machine with an NVIDIA GPU, or use --device cpu or auto")
    return torch.device(name)
