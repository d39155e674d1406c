"""Atomic output: nothing appears at the destination until the whole file or folder is complete, and a failed
run removes the parent folders it created for it."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from splatflow.errors import InputError, OutputExistsError


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
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()
        raise


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
