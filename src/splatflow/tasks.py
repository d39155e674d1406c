"""What every pipeline task does around its stage call (no KFP here): record a failure, shape the task's outputs.

KFP's exit handler learns only that the pipeline's group failed, not which stage or why. So each stage
component runs its stage inside :func:`record_failure`, which writes ``{stage, error, time}`` to a small JSON
under the run's output location before the error propagates, and notify reads it back with
:func:`read_failure`::

    <output_uri>/.splatflow/runs/<run id>/failed/<stage>.json

A stage that succeeds removes its own record, so a failed attempt that a retry fixed is not reported later.
The run id comes from ``SPLATFLOW_RUN_ID`` (:func:`run_id`), never from a task input, so that it stays out of
the tasks' cache keys: the pipeline fills it from the pod label ``pipeline/runid`` the KFP backend sets, the local
run with its own id.
Recording never masks the stage's error: when the record cannot be written, that is logged and the original
error propagates unchanged. Error texts are redacted of known secret values before they are written.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from splatflow import spec, storage
from splatflow.errors import InputError, Terminated
from splatflow.fsutil import terminate_cleanly
from splatflow.limits import parse_json

log = logging.getLogger("splatflow.tasks")

__all__ = ["RUN_ID_ENV", "checkpoint_uri", "error_line", "failure_uri", "read_failure", "record_failure", "run_id",
           "task_output"]

#: the stages that record their failures (all but notify, the one that reads them), in pipeline order
STAGES: tuple[str, ...] = tuple(name for name in spec.STAGE_NAMES if name != "notify")
#: the environment variable a task reads its run id from
RUN_ID_ENV = "SPLATFLOW_RUN_ID"
_ERROR_CHARS = 500
_RECORD_BYTES = 64 << 10
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def run_id() -> str:
    """This task's run id, from ``SPLATFLOW_RUN_ID``; InputError when it is missing or not a usable name."""
    value = os.environ.get(RUN_ID_ENV, "").strip()
    if not value:
        raise InputError(f"{RUN_ID_ENV} is not set: the task does not know its run id",
                         hint="run the compiled pipeline (its tasks read it from the pod label pipeline/runid) or "
                              "`splatflow run` (the local run sets it)")
    if not _RUN_ID.match(value):
        raise InputError(f"run id {value!r} ({RUN_ID_ENV}) is not a usable name", hint="KFP run ids are UUIDs")
    return value


def _run_folder(output_uri: str, run_id: str) -> str:
    if not _RUN_ID.match(run_id or ""):
        raise InputError(f"run id {run_id!r} is not a usable name", hint="KFP run ids are UUIDs")
    return storage.join(output_uri, ".splatflow", "runs", run_id, "failed")


def checkpoint_uri(output_uri: str, run: str | None = None) -> str:
    """Where the train task of run ``run`` (default: :func:`run_id`) mirrors its checkpoints, so that a retry in a
    new pod resumes: ``<output_uri>/.splatflow/runs/<run id>/checkpoints`` (deleted once the PLY is written)."""
    return storage.join(_run_folder(output_uri, run or run_id()).rsplit("/", 1)[0], "checkpoints")


def failure_uri(output_uri: str, run_id: str, stage: str) -> str:
    """Where a failure of ``stage`` in run ``run_id`` is recorded."""
    if stage not in STAGES:
        raise InputError(f"unknown stage {stage!r}", hint=f"the stages are {', '.join(STAGES)}")
    return storage.join(_run_folder(output_uri, run_id), f"{stage}.json")


def error_line(exc: BaseException) -> str:
    """One line naming the error: ``SfmError: only 0 of 4 images registered (hint)``, secrets redacted."""
    from splatflow.redaction import redact

    text = " ".join(str(exc).split()) or "(no message)"
    line = redact(f"{type(exc).__name__}: {text}")
    return line if len(line) <= _ERROR_CHARS else line[: _ERROR_CHARS - 3] + "..."


@contextmanager
def record_failure(stage: str, output_uri: str, run: str | None = None) -> Iterator[None]:
    """Run the body; if it raises (or SIGTERM stops it: the body runs in :func:`~splatflow.fsutil.terminate_cleanly`,
    so its temporary files are removed), record ``{stage, error, time}`` for notify and re-raise the same error.
    ``run``: the run id (default: :func:`run_id`, checked before the body runs).

    On success the stage's earlier record in this run (a failed attempt) is removed. Problems with the record
    itself are logged, never raised.
    """
    run = run or run_id()
    try:
        with terminate_cleanly():
            yield
    except (Exception, Terminated) as exc:
        try:
            uri = failure_uri(output_uri, run, stage)
            record = {"stage": stage, "error": error_line(exc),
                      "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            storage.write_bytes(uri, (json.dumps(record, indent=2, sort_keys=True) + "\n").encode())
            log.info("recorded the failure of %s for the notification", stage)
        except Exception as rec:  # the stage's own error matters more than the record
            _warn(f"could not record the failure of {stage}; the notification will not name it", rec)
        raise
    try:
        uri = failure_uri(output_uri, run, stage)
        if storage.exists(uri):
            storage.delete(uri)
    except Exception as rec:
        _warn(f"could not remove the failure record of an earlier {stage} attempt", rec)


def _warn(what: str, exc: BaseException) -> None:
    """Log a problem with a failure record; never raises (it runs while the stage's own error propagates)."""
    with contextlib.suppress(Exception):  # nothing may replace the stage's error
        log.warning("%s: %s", what, error_line(exc))


def read_failure(output_uri: str, run_id: str) -> dict[str, str] | None:
    """The failure recorded in run ``run_id`` (the latest, if several): ``stage``, ``error``, ``time``; or None.

    Raises StorageError when the storage cannot be read (the caller decides what to do without it).
    """
    folder = _run_folder(output_uri, run_id)
    found: list[dict[str, str]] = []
    for uri in storage.list_uris(folder):
        stage = uri.rsplit("/", 1)[-1].removesuffix(".json")
        if stage not in STAGES:
            continue
        try:
            data = parse_json(storage.read_bytes(uri, max_bytes=_RECORD_BYTES), uri, max_bytes=_RECORD_BYTES)
        except InputError:
            log.warning("ignoring an unreadable failure record %s", uri)
            continue
        if isinstance(data, dict) and data.get("stage") == stage:
            found.append({"stage": stage, "error": str(data.get("error") or ""), "time": str(data.get("time", "")),
                          "order": str(STAGES.index(stage))})
    if not found:
        return None
    latest = max(found, key=lambda r: (r["time"], int(r["order"])))
    return {k: v for k, v in latest.items() if k != "order"}


def task_output(value: Any) -> Any:
    """A stage report made safe as a KFP output parameter: ``None`` and non-finite numbers dropped, paths and
    other objects as strings (KFP's protobuf conversion rejects ``None``; kfp.local then aborts the run)."""
    if isinstance(value, dict):
        return {str(k): task_output(v) for k, v in value.items() if _keep(v)}
    if isinstance(value, list | tuple):
        return [task_output(v) for v in value if _keep(v)]
    return value if isinstance(value, bool | int | float | str) else str(value)


def _keep(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and not math.isfinite(value))
