"""Compiled CPU kernels: built from C++ source with the machine's compiler on first use, cached, loaded with ctypes.

One source file, ``raster_cpu.cpp``: the CPU rasterizer of :mod:`splatflow.render`'s ``"cpu"`` backend
(projection, SH, depth sort, binning, compositing and their backward passes) and the separable filter of the
one SSIM (:mod:`splatflow.metrics`; training's loss). Why this way (measured; README: Training on a CPU): a plain C
ABI needs no torch headers, so a build takes about 3 s instead of the ~60 s of a torch C++ extension, and the library
stays independent of the torch version. Nothing is compiled at ``import splatflow``: the first render on the
``"cpu"`` backend builds (or finds) the library.

Cache: ``$SPLATFLOW_KERNEL_DIR`` or ``$XDG_CACHE_HOME/splatflow/kernels`` (``~/.cache/...``). The file name holds a
hash of the source, the compiler flags and, for ``-march=native``, this CPU's model and flags, so a cache shared
between machines or kept in an image never loads code built for another CPU. ``$SPLATFLOW_KERNEL_ARCH`` sets
``-march`` (default ``native``; images use a portable level such as ``x86-64-v3``). ``python -m splatflow.kernels
build`` builds ahead of time (``make install`` and the CPU image do), ``info`` says what would be loaded.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

from splatflow.errors import DependencyMissing

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("raster_cpu.cpp")
BASE_FLAGS = ("-O3", "-std=c++17", "-shared", "-fPIC", "-pthread", "-fopenmp-simd", "-fno-math-errno",
              "-fno-trapping-math")
ABI_VERSION = 7
"""``sf_version()`` of the library this module speaks to."""

_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_error: DependencyMissing | None = None


def cache_dir() -> Path:
    """Where built libraries are kept (see module doc)."""
    env = os.environ.get("SPLATFLOW_KERNEL_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "splatflow" / "kernels"


def arch() -> str:
    """The ``-march`` value (``$SPLATFLOW_KERNEL_ARCH``, default ``native``)."""
    return os.environ.get("SPLATFLOW_KERNEL_ARCH", "native").strip() or "native"


def flags() -> list[str]:
    """Compiler flags of the build."""
    return [*BASE_FLAGS, f"-march={arch()}"]


def _cpu_identity() -> str:
    """This CPU's model and feature flags (what ``-march=native`` depends on)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    keep = [line for line in text.splitlines() if line.startswith(("model name", "flags", "Features", "CPU part"))]
    return "\n".join(sorted(set(keep)))


def library_path() -> Path:
    """The cache path of the library for this source, these flags and (for ``native``) this CPU."""
    h = hashlib.sha256(SOURCE.read_bytes())
    h.update(" ".join(flags()).encode())
    h.update(platform.machine().encode())
    if arch() == "native":
        h.update(_cpu_identity().encode())
    return cache_dir() / f"raster_cpu-{h.hexdigest()[:16]}.so"


def compiler() -> str | None:
    """The C++ compiler: ``$CXX``, else ``c++`` or ``g++`` on PATH."""
    for cand in (os.environ.get("CXX"), "c++", "g++"):
        if cand and shutil.which(cand):
            return cand
    return None


def build(force: bool = False) -> Path:
    """Compile the kernels into the cache (unless already there) and return the library's path.

    Raises DependencyMissing when no compiler is found or the build fails (the message carries its output).
    """
    dest = library_path()
    if dest.exists() and not force:
        return dest
    cxx = compiler()
    if cxx is None:
        raise DependencyMissing("no C++ compiler found to build splatflow's CPU rasterizer",
                                hint="install one (Debian: apt-get install g++), or set CXX; rendering falls "
                                     "back to the slower torch backend meanwhile")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".build-", suffix=".so", dir=dest.parent)
    except OSError as exc:
        raise DependencyMissing(f"cannot write the kernel cache {dest.parent}: {exc.strerror}",
                                hint="set SPLATFLOW_KERNEL_DIR to a writable folder") from None
    os.close(fd)
    try:
        cmd = [cxx, *flags(), str(SOURCE), "-o", tmp]
        log.info("building the CPU rasterizer: %s", " ".join(cmd))
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if res.returncode != 0:
            tail = (res.stderr or res.stdout).strip().splitlines()[-8:]
            raise DependencyMissing(f"building the CPU rasterizer failed ({cxx} exit {res.returncode}): "
                                    + " | ".join(tail),
                                    hint="check the compiler (g++ >= 9), or set SPLATFLOW_KERNEL_ARCH=x86-64-v2 "
                                         "for an older CPU")
        os.chmod(tmp, 0o755)  # mkstemp made it 0600: a cache built by root (an image) must load for any user
        os.replace(tmp, dest)  # atomic: a concurrent build of the same key leaves one complete file
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest


def _bind(lib: ctypes.CDLL) -> None:
    p, i, i64 = ctypes.c_void_p, ctypes.c_int, ctypes.c_int64
    lib.sf_version.restype = i
    lib.sf_version.argtypes = []
    lib.sf_depth_order.restype = i
    lib.sf_depth_order.argtypes = [i, p, p, p]
    lib.sf_bin_count.restype = i64
    lib.sf_bin_count.argtypes = [i, p, p, p, i, i, i, p]
    lib.sf_bin_fill.restype = None
    lib.sf_bin_fill.argtypes = [i, p, p, p, i, i, i, p, p]
    lib.sf_forward.restype = i
    lib.sf_forward.argtypes = [p, p, p, p, p, p, p, i, i, i, i, i, p, p, p, p, i]
    lib.sf_backward.restype = i
    lib.sf_backward.argtypes = [i, p, p, p, p, p, p, p, i, i, i, i, i, p, p, p, p, p, p, p, p, p, i]
    f = ctypes.c_float
    lib.sf_project_forward.restype = None
    lib.sf_project_forward.argtypes = [i, p, p, p, p, p, i, i, p, p, i, i, f, f, f, p, p, p, p, p, p, i]
    lib.sf_project_backward.restype = None
    lib.sf_blur_valid.restype = None
    lib.sf_blur_valid.argtypes = [i, i, i, p, i, p, p, i]
    lib.sf_blur_valid_backward.restype = None
    lib.sf_blur_valid_backward.argtypes = [i, i, i, p, i, p, p, i]
    lib.sf_project_backward.argtypes = [i, p, p, p, p, i, i, p, p, i, i, f, p, p, p, p, p, p, p, p, i]


def load() -> ctypes.CDLL:
    """The loaded kernel library, built on first use. Raises DependencyMissing (remembered) when it cannot be."""
    global _lib, _error
    if _lib is not None:
        return _lib
    with _lock:
        if _lib is None:
            if _error is not None:
                raise _error
            try:
                path = build()
                lib = ctypes.CDLL(str(path))
                _bind(lib)
                if lib.sf_version() != ABI_VERSION:
                    raise DependencyMissing(f"{path} is kernel version {lib.sf_version()}, expected {ABI_VERSION}",
                                            hint=f"delete {path.parent} and run again")
            except DependencyMissing as exc:
                _error = exc
                raise
            except OSError as exc:
                _error = DependencyMissing(f"cannot load the CPU rasterizer: {exc}",
                                           hint=f"delete {cache_dir()} to rebuild it")
                raise _error from None
            _lib = lib
    return _lib


def available() -> bool:
    """True when the kernels load (building them if needed); a failure is logged once and remembered."""
    try:
        load()
    except DependencyMissing as exc:
        if not getattr(exc, "_logged", False):
            log.warning("%s (%s)", exc.message, exc.hint)
            exc._logged = True  # type: ignore[attr-defined]
        return False
    return True
