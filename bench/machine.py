"""The machine a benchmark ran on, for its results file: CPU model, cores, memory, GPU, platform, load average
and the versions of the packages measured. Benchmarks import it as ``from machine import machine_info`` (they run
as ``python bench/<name>.py``, so bench/ is on the import path)."""

from __future__ import annotations

import os
import platform
from collections.abc import Iterable
from importlib.metadata import PackageNotFoundError, version
from typing import Any


def _proc_field(path: str, key: str) -> str | None:
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(key):
                    return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


def machine_info(packages: Iterable[str]) -> dict[str, Any]:
    """CPU, cores, memory (bytes), GPU name (None without CUDA), platform, Python, load average and package
    versions (None for a package that is not installed)."""
    mem = _proc_field("/proc/meminfo", "MemTotal")
    gpu = None
    try:
        import torch

        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        pass
    versions: dict[str, str | None] = {}
    for pkg in packages:
        try:
            versions[pkg] = version(pkg)
        except PackageNotFoundError:
            versions[pkg] = None
    return {
        "cpu": _proc_field("/proc/cpuinfo", "model name") or platform.processor(), "cores": os.cpu_count(),
        "memory_bytes": int(mem.split()[0]) * 1024 if mem else None, "gpu": gpu, "platform": platform.platform(),
        "python": platform.python_version(), "load_average_at_start": os.getloadavg(), "versions": versions,
    }
