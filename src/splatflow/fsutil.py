"""Atomic output: nothing appears at the destination until the whole file or folder is complete, and a failed
run removes the parent folders it created for it. :func:`terminate_cleanly` makes SIGTERM clean up the same way
(Python's default for SIGTERM ends the process at once, skipping every ``with`` block and ``finally``)."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from splatflow.errors import InputError, OutputExistsError, StorageError, Terminated

log = logging.getLogger(__name__)
P = ParamSpec("P")
R = TypeVar("R")
TEMP_SUFFIXES = (".partial", ".old")
"""Suffixes of the hidden temporary names (``.<name>.<random><suffix>``) this module makes beside a destination."""


def is_temporary(name: str) -> bool:
    """True for a name :func:`atomic_path` uses while it writes (``.<dest>.<random>.partial`` / ``.old``): listings
    skip them and nothing but their writer may remove them."""
    return name.startswith(".") and name.endswith(TEMP_SUFFIXES)


@contextlib.contextmanager
def terminate_cleanly() -> Iterator[None]:
    """For the block, SIGTERM raises :class:`~splatflow.errors.Terminated` in the main thread, so temporary files
    and folders are removed on the way out (exit code 143). A second SIGTERM during that cleanup is ignored.

    Does nothing outside the main thread, or when SIGTERM already has a handler (an outer block of this kind,
    training's checkpoint-and-stop handler, a host application's own). A signal that arrives during a long call
    into C code (pycolmap, a codec) is handled when that call returns.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.getsignal(signal.SIGTERM)
    if old is not signal.SIG_DFL:
        yield
        return
    fired = threading.Event()

    def handler(signum: int, _frame: Any) -> None:
        if fired.is_set():
            log.warning("SIGTERM again: still cleaning up")
            return
        fired.set()
        raise Terminated()

    signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def reclaim_sigterm() -> None:
    """Give SIGTERM back to Python's handler after a C++ library took it: importing pycolmap installs glog's
    failure handler for SIGTERM, which prints a stack trace and kills the process, skipping every cleanup.
    Re-registering the handler Python knows about restores it (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is threading.main_thread():
        handler = signal.getsignal(signal.SIGTERM)
        if handler is not None:
            signal.signal(signal.SIGTERM, handler)


def cleans_up_on_sigterm(fn: Callable[P, R]) -> Callable[P, R]:
    """Decorator: run ``fn`` inside :func:`terminate_cleanly`."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with terminate_cleanly():
            return fn(*args, **kwargs)

    return wrapper


def check_output(path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Validate an output path before any work: refuse an existing one without ``overwrite``, and a parent
    folder that does not exist or is not writable. Returns the path as a ``Path``."""
    p = Path(path)
    if p.exists() and not overwrite:
        raise OutputExistsError(f"output {p} already exists",
                                hint="pass --overwrite to replace it, or choose another path")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.exists():
        raise InputError(f"output folder {parent} does not exist", hint="create it first or choose another output path")
    if not os.access(parent, os.W_OK):
        raise InputError(f"output folder {parent} is not writable", hint="choose a writable output path")
    return p


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one rename, on error it is removed.

    With ``directory=True`` the temporary path is an empty folder to fill. An existing destination is replaced
    (callers check ``overwrite`` first with :func:`check_output`).
    """
    dest = Path(path)
    parent = dest.parent if str(dest.parent) else Path(".")
    if directory:
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".partial", dir=parent))
    else:
        fd, name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".partial", dir=parent)
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        try:
            _commit(tmp, dest, parent, directory)
        except FileNotFoundError as exc:
            if tmp.exists():
                raise
            raise StorageError(f"the temporary {tmp} vanished before it could become {dest}: another process removed "
                               "it", hint="make sure only one process writes this output at a time, then retry") \
                from exc
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def _commit(tmp: Path, dest: Path, parent: Path, directory: bool) -> None:
    """Move the finished temporary ``tmp`` to ``dest`` in one rename (a folder: the old one moved aside first)."""
    if directory:
        os.chmod(tmp, 0o755)
        if dest.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".old", dir=parent))
            old.rmdir()
            dest.rename(old)
            tmp.rename(dest)
            shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink()
        else:
            tmp.rename(dest)
    else:
        os.chmod(tmp, 0o644)
        if dest.is_dir():
            shutil.rmtree(dest)
        os.replace(tmp, dest)


@contextlib.contextmanager
def made_parents(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Create the missing parent folders of ``path`` for the block; if the block fails, remove the ones created
    here again (deepest first, and only while empty: what others put there stays). Yields the parent folder."""
    parent = Path(path).parent if str(Path(path).parent) else Path(".")
    created: list[Path] = []
    p = parent.absolute()
    while not p.exists():
        created.append(p)
        p = p.parent
    parent.mkdir(parents=True, exist_ok=True)
    try:
        yield parent
    except BaseException:
        for folder in created:
            try:
                folder.rmdir()
            except OSError:
                break  # not empty (or gone): neither it nor its parents are ours to remove
        raise
