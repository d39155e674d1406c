"""Progress output for long work: a tqdm bar on a terminal, plain timestamped lines in logs (pods, CI)."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
log = logging.getLogger("splatflow")


def is_interactive() -> bool:
    """True when stderr is a terminal (then a progress bar is drawn instead of log lines)."""
    return sys.stderr.isatty()


def progress(items: Iterable[T], *, total: int | None = None, desc: str = "", every: float = 10.0) -> Iterator[T]:
    """Iterate ``items`` while reporting progress: a bar on a terminal, else a log line at most every ``every`` s."""
    if is_interactive():
        from tqdm import tqdm

        yield from tqdm(items, total=total, desc=desc, leave=False)
        return
    start = last = time.monotonic()
    for done, item in enumerate(items, start=1):
        yield item
        now = time.monotonic()
        if now - last >= every:
            last = now
            of = f"/{total}" if total else ""
            log.info("%s: %d%s (%.0f s)", desc, done, of, now - start)


def step(message: str) -> None:
    """Report the start of a named step of a long task (one log line)."""
    log.info("%s", message)
