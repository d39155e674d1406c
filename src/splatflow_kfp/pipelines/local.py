"""Run the same pipeline function on this machine: ``kfp.local`` with ``SubprocessRunner(use_venv=False)``.

kfp 2.17's local orchestrator runs the compiled graph, exit handler included: notify runs after the body, on
success and on failure, with a real ``PipelineTaskFinalStatus``. Kubernetes-only settings (GPU, tolerations,
node selectors, Secrets, resources) do not apply locally; tasks inherit this process's environment instead
(``AWS_*`` for s3:// sources and outputs, the notification settings). Every task runs with this interpreter, so
splatflow, kfp, ``components`` and ``pipelines`` must be importable here (``make install`` sees to it).

Retries are off locally (``build_pipeline(retries=False)``): kfp.local would honour their back-off, and a
local failure (bad input, no CUDA) fails the same way each time.

Output: kfp.local prints every task's executor input and log (hundreds of lines); that all goes to
``<work>/run.log``, and the terminal gets one line per stage with its time (``verbose=True`` prints the log as
well). When a stage fails, :class:`~splatflow.errors.StageError` names it and its one-line error (the record the
stage left for notify), so the last lines a user sees say what went wrong and where.

``runner="docker"`` runs every task in its stage image instead (``kfp.local.DockerRunner``; the images named by
``splatflow.spec``, e.g. built by ``make images-local``), through any Docker-compatible engine at
``DOCKER_HOST`` (docker, or ``podman system service``). The tasks run as the images' user (uid 10001), on the
host's network (a webhook on localhost is reachable), with the output folder and a local source mounted at
their own paths, and with this process's ``SPLATFLOW_*`` and ``AWS_*`` variables (what a cluster gives a pod
from its Secrets and ConfigMaps).


Layout of one local run:

- ``output`` a local folder (new or empty): ``output/<scene>/<run_id>/...`` is what publish wrote (the .sog,
  the viewer page, the run report), ``output/pipeline-root/`` kfp.local's task outputs, ``output/run.log``;
- ``output`` an ``s3://bucket/prefix``: publish writes to the bucket exactly as in a cluster
  (``<prefix>/<scene>/<run_id>/``), and the task outputs and ``run.log`` stay in a local work folder
  (``./runs/<UTC timestamp>`` unless ``work`` is given).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import sys
import time
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from splatflow.errors import InputError, StageError
from splatflow.options import LOCAL_DEFAULTS, check_run_parameters
from splatflow.tasks import RUN_ID_ENV

log = logging.getLogger(__name__)
RUNNERS = ("subprocess", "docker")
#: variables a task in a container gets from this process (a cluster's pods get them from Secrets and ConfigMaps)
FORWARDED_ENV = re.compile(r"^(SPLATFLOW_|AWS_)")


@dataclass
class LocalRun:
    """What one local run produced: the publish result (``urls``, ``manifest_uri``, ``viewer_uri``), the folders,
    and each stage's status and seconds (``stages``: name -> ``{"status", "seconds"}``)."""

    output: Path | str
    pipeline_root: Path
    publish: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    log: Path | None = None
    run_id: str | None = None
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def urls(self) -> dict[str, str]:
        return dict(self.publish.get("urls") or {})


def default_output(base: Path | str = "runs") -> Path:
    """``./runs/<UTC timestamp>``: a new folder name per run."""
    return Path(base) / time.strftime("%Y%m%d-%H%M%S", time.gmtime())


def source_uri(source: str | Path) -> str:
    """A local path as a ``file://`` URI (checked to exist); URIs (s3://, file://, http(s)://) pass through."""
    text = str(source)
    if "://" in text:
        return text
    path = Path(text).expanduser()
    if not path.exists():
        raise InputError(f"source {text} does not exist",
                         hint="pass a folder of photos, a .zip, a video, or an s3:// URI "
                              "(the sample is data/photos/lund)")
    return path.resolve().as_uri()


def _prepare_output(output: Path) -> Path:
    output = output.expanduser().resolve()
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise InputError(f"output folder {output} exists and is not empty",
                         hint="pass a new folder (the default is ./runs/<timestamp>)")
    output.mkdir(parents=True, exist_ok=True)
    return output


def find_publish_result(pipeline_root: Path) -> dict[str, Any]:
    """The publish task's ``report`` artifact (the publish result as JSON) under kfp.local's pipeline root."""
    found = sorted(pipeline_root.glob("*/publish/report"))
    if not found:
        return {}
    result: dict[str, Any] = json.loads(found[-1].read_text())
    return result


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_START = re.compile(r"Executing task '([^']+)'")
_END = re.compile(r"Task '([^']+)' finished with status (\w+)")


class _TaskLog(io.TextIOBase):
    """What kfp.local prints (its own lines and every task's log): written to ``log``, echoed to ``echo`` when
    verbose, and otherwise turned into one line per stage with its time."""

    def __init__(self, log: TextIO, echo: TextIO, verbose: bool) -> None:
        self.log, self.echo, self.verbose = log, echo, verbose
        self.stages: dict[str, dict[str, Any]] = {}
        self._pending = ""
        self._current: tuple[str, float] | None = None

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.log.write(text)
        if self.verbose:
            self.echo.write(text)
        self._pending += text
        *lines, self._pending = self._pending.split("\n")
        for line in lines:
            self._line(_plain(line))
        return len(text)

    def flush(self) -> None:
        self.log.flush()
        self.echo.flush()

    def _line(self, line: str) -> None:
        if m := _START.search(line):
            self._current = (m.group(1), time.monotonic())
            if not self.verbose:
                self.echo.write(f"  {m.group(1):<9} ... ")
                self.echo.flush()
        elif (m := _END.search(line)) and self._current and self._current[0] == m.group(1):
            name, began = self._current
            seconds = round(time.monotonic() - began, 1)
            status = "ok" if m.group(2) == "SUCCESS" else "FAILED"
            self.stages[name] = {"status": status, "seconds": seconds}
            self._current = None
            if not self.verbose:
                self.echo.write(f"{status} ({seconds:.1f} s)\n")
                self.echo.flush()

    def interrupted(self) -> None:
        """End a stage line left open (the run stopped inside it)."""
        if self._current and not self.verbose:
            self.echo.write("stopped\n")
            self.echo.flush()


def run_local(source: str | Path, output: Path | str, *, quality: str = LOCAL_DEFAULTS["quality"],
              iterations: int = LOCAL_DEFAULTS["iterations"], max_splats: int = LOCAL_DEFAULTS["max_splats"],
              sh_degree: int = LOCAL_DEFAULTS["sh_degree"], notify_target: str = "", target_psnr: float = 0.0,
              verbose: bool = False,
              work: Path | str | None = None, echo: TextIO | None = None, runner: str = "subprocess") -> LocalRun:
    """Run ``splat_pipeline`` under kfp.local; results go to ``output`` (a new or empty local folder, or an
    ``s3://bucket/prefix``: the bucket is checked first), task outputs and ``run.log`` to the local folder
    ``output``, or for s3 outputs ``work`` (default ``./runs/<UTC timestamp>``). ``runner``: ``subprocess``
    (this interpreter) or ``docker`` (each task in its stage image).

    Prints one line per stage with its time to ``echo`` (default: stdout), or with ``verbose`` every task's log.
    Raises :class:`~splatflow.errors.StageError` naming the failed stage and its one-line error when the
    pipeline fails (notify has run by then, with the failure in its message).
    """
    from kfp import local

    from splatflow import storage
    from splatflow_kfp.pipelines.splat_pipeline import build_pipeline

    check_run_parameters({"quality": quality, "iterations": iterations, "max_splats": max_splats,
                          "sh_degree": sh_degree, "notify_target": notify_target, "target_psnr": target_psnr})
    if runner not in RUNNERS:
        raise InputError(f"unknown runner {runner!r}", hint=f"use one of {', '.join(RUNNERS)}")
    src = source_uri(source)
    if runner == "docker":
        check_docker_engine()  # before the output folder exists: a failed check leaves nothing behind
    if str(output).startswith("s3://"):
        output_uri = str(output).rstrip("/")
        storage.check_bucket(output_uri)  # a wrong bucket or missing credentials: said now, not after training
        local_dir = _prepare_output(Path(work) if work else default_output())
    else:
        local_dir = _prepare_output(Path(output))
        output_uri = local_dir.as_uri()
    root = local_dir / "pipeline-root"
    log_path = local_dir / "run.log"
    run_id = new_run_id()
    with _environment(RUN_ID_ENV, run_id):  # forwarded into the task containers with the other SPLATFLOW_ settings
        task_runner = docker_runner(src, local_dir, root) if runner == "docker" else \
            local.SubprocessRunner(use_venv=False)
    local.init(runner=task_runner, pipeline_root=str(root), raise_on_error=True)
    started = time.monotonic()
    pipeline = build_pipeline(retries=False)  # the same graph; failures here are deterministic
    out = echo or sys.stdout
    out.write(f"running the pipeline: {src} -> {output_uri} (quality {quality}; full log: {log_path})\n")
    out.flush()
    root_logger = logging.getLogger()
    level = root_logger.level
    # the tasks read the run id from the environment (subprocess tasks inherit it)
    with _environment(RUN_ID_ENV, run_id), open(log_path, "w") as log_file:
        tee = _TaskLog(log_file, out, verbose)
        try:
            if not verbose:
                root_logger.setLevel(logging.WARNING)  # kfp's "Cleaned up workspace" and the like: the log has them
            with _container_exit_codes_kept(runner == "docker"), warnings.catch_warnings(), \
                    contextlib.redirect_stdout(tee):
                # expected locally: the stage images are not used, and Kubernetes resources do not apply
                warnings.filterwarnings("ignore", message=".*have no effect in the current local runner.*")
                warnings.filterwarnings("ignore", message=".*non-Python base image.*")
                pipeline(source_uri=src, output_uri=output_uri, quality=quality, iterations=iterations,
                         max_splats=max_splats, sh_degree=sh_degree, notify_target=notify_target,
                         target_psnr=target_psnr)
        except RuntimeError as exc:  # kfp.local: "Pipeline splatflow finished with status FAILURE. Inner task ..."
            raise _failure(str(exc), tee, output_uri, run_id, log_path, root) from exc
        except BaseException:
            tee.interrupted()
            raise
        finally:
            root_logger.setLevel(level)
    return LocalRun(output=output_uri if output_uri.startswith("s3://") else local_dir, pipeline_root=root,
                    publish=find_publish_result(root), seconds=round(time.monotonic() - started, 1), log=log_path,
                    run_id=run_id, stages=tee.stages)


def new_run_id() -> str:
    """A local run's id: ``local-<UTC time>-<8 hex digits>`` (a usable folder name, unique per run)."""
    return f"local-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:8]}"


@contextmanager
def _environment(name: str, value: str) -> Iterator[None]:
    """``os.environ[name] = value`` for the block, then the previous state."""
    before = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def _failure(message: str, tee: _TaskLog, output_uri: str, run_id: str, log_path: Path,
             root: Path) -> PipelineFailed:
    """The error of a failed run: the stage that failed and its own one-line error (the record it left under
    ``output_uri``), else the task kfp.local names."""
    from splatflow.tasks import read_failure

    failure = None
    try:
        failure = read_failure(output_uri, run_id)
    except Exception as exc:  # storage unreadable: fall back on what kfp.local says
        log.debug("no failure record: %s", exc)
    failed = [name for name, st in tee.stages.items() if st["status"] == "FAILED" and name != "notify"]
    stage = failure["stage"] if failure else (failed[0] if failed else None)
    if stage is None:
        inner = re.search(r"Inner task failed: '([^']+)'", _plain(message))
        stage = inner.group(1) if inner else "an unknown stage"
    error = failure["error"] if failure else "it left no error record; see the log"
    return PipelineFailed(stage, error, hint=f"the full log is {log_path} (search for '{stage}'); task outputs "
                                             f"are under {root}")


class PipelineFailed(StageError):
    """A local run failed: ``failed_stage`` and its one-line ``error`` (what the stage recorded for notify)."""

    def __init__(self, stage: str, error: str, *, hint: str | None = None) -> None:
        super().__init__(f"the pipeline failed at {stage}: {error}", hint=hint)
        self.failed_stage = stage
        self.error = error


def check_docker_engine() -> None:
    """The engine at ``DOCKER_HOST`` answers and holds every stage image (``splatflow.spec``); else an
    :class:`InputError` saying what to do."""
    try:
        import docker
    except ImportError as exc:
        raise InputError("the docker runner needs the docker Python package",
                         hint="pip install docker (make install brings it)") from exc
    from splatflow.spec import all_images

    host = os.environ.get("DOCKER_HOST", "the default socket")
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as exc:
        raise InputError(f"no Docker-compatible engine answers at {host}",
                         hint="start docker, or `podman system service --time=0 unix:///run/podman/podman.sock &` "
                              "and export DOCKER_HOST=unix:///run/podman/podman.sock") from exc
    try:
        present = {tag for image in client.images.list() for tag in image.tags}
    finally:
        client.close()
    missing = sorted(image for image in all_images().values() if image not in present)
    if missing:
        raise InputError(f"the stage images {', '.join(missing)} are not in the engine at {host}",
                         hint="build them: make images-local (SPLATFLOW_REGISTRY and SPLATFLOW_IMAGE_TAG name them)")


def docker_runner(source: str, output: Path, pipeline_root: Path) -> Any:
    """``kfp.local.DockerRunner`` for the stage images (:func:`check_docker_engine` first): ``output`` and
    ``pipeline_root`` (inside it) made writable for the images' user, mounted with a local source."""
    from docker.types import Mount
    from kfp import local

    pipeline_root.mkdir(exist_ok=True)
    for folder in (output, pipeline_root):
        folder.chmod(0o777)  # the tasks run as uid 10001, not as this user
    mounts = [Mount(target=str(output), source=str(output), type="bind")]
    if source.startswith("file://"):
        from urllib.parse import unquote, urlparse

        path = unquote(urlparse(source).path)
        mounts.append(Mount(target=path, source=path, type="bind", read_only=True))
    environment = {name: value for name, value in os.environ.items() if FORWARDED_ENV.match(name)}
    return local.DockerRunner(mounts=mounts, environment=environment, network_mode="host")


def run_container(client: Any, image: str, command: list[str], volumes: dict[str, Any], **run_args: Any) -> int:
    """Run one task's container; its exit code. Stands in for ``kfp.local.docker_task_handler.run_docker_container``
    (kfp 2.17.3), which starts the container with ``auto_remove=True`` and reports exit code 0 when the engine has
    removed it before ``wait()`` returns: under podman every failed task passed as a success, and its log could be
    cut short (kubeflow/pipelines#13332). Here the container stays until its log is read and its exit code known,
    then it is removed."""
    import codecs

    import docker

    print(f"Found image {image!r}\n")  # kfp.local's own line (the image tests read which image ran which task)
    container = client.containers.run(image=image, command=command, detach=True, stdout=True, stderr=True,
                                      volumes=volumes, **run_args)
    try:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        for chunk in container.logs(stream=True, follow=True):
            print(decoder.decode(chunk), end="")
        print(decoder.decode(b"", final=True), end="")
        return int(container.wait()["StatusCode"])
    finally:
        try:
            container.remove(force=True)
        except docker.errors.APIError as exc:  # the exit code stands; a leftover container is only untidy
            log.warning("could not remove the finished container %s: %s", container.short_id, exc)


@contextmanager
def _container_exit_codes_kept(active: bool) -> Iterator[None]:
    """While active, kfp.local's DockerRunner runs each task with :func:`run_container`."""
    if not active:
        yield
        return
    from kfp.local import docker_task_handler

    original = docker_task_handler.run_docker_container
    docker_task_handler.run_docker_container = run_container
    try:
        yield
    finally:
        docker_task_handler.run_docker_container = original


def _plain(text: str) -> str:
    """Drop the ANSI colour codes kfp.local puts into its messages."""
    return _ANSI.sub("", text)


def _as_path(uri: str | None) -> str:
    """``file:///x`` -> ``/x`` for printing; other URIs unchanged."""
    if not uri:
        return "-"
    if uri.startswith("file://"):
        from urllib.parse import unquote, urlparse

        return unquote(urlparse(uri).path)
    return uri


def _links(pub: dict[str, Any]) -> list[str]:
    """Browser links for s3:// results where configured: the viewer under SPLATFLOW_PUBLIC_BASE_URL, the .sog
    presigned for SPLATFLOW_LINK_EXPIRES seconds."""
    import os

    from splatflow.stages.notify import link_expires_from_env, link_for

    lines = []
    try:
        if os.environ.get("SPLATFLOW_PUBLIC_BASE_URL") and pub.get("viewer_uri"):
            lines.append(f"  open           {link_for(str(pub['viewer_uri']), 1)}")
        elif os.environ.get("SPLATFLOW_LINK_EXPIRES") and pub.get("content_uri"):
            expires = link_expires_from_env()
            lines.append(f"  download       {link_for(str(pub['content_uri']), expires)}  (presigned, {expires} s)")
    except Exception as exc:  # links are a convenience
        log.warning("could not make a link: %s", exc)
    return lines


def summary_lines(run: LocalRun) -> list[str]:
    """Where the results of a local run are, one line each (what ``splatflow run`` prints)."""
    pub = run.publish
    viewer = _as_path(pub.get("viewer_uri"))
    lines = [f"pipeline finished in {run.seconds:.0f} s; results under {run.output}",
             f"  scene (SOG)    {_as_path(pub.get('content_uri'))}",
             f"  viewer page    {viewer}",
             f"  run report     {_as_path(pub.get('manifest_uri'))}  (summary: {json.dumps(pub.get('summary', {}))})"]
    if "contact-sheet.png" in run.urls:
        lines.append(f"  contact sheet  {_as_path(run.urls['contact-sheet.png'])}  (held-out photos beside renders)")
    reports = sorted(rel for rel in run.urls if rel.startswith("reports/"))
    if reports:
        lines.append(f"  stage reports  {_as_path(run.urls[reports[0]]).rsplit('/', 1)[0]}/ "
                     f"({', '.join(r.split('/', 1)[1] for r in reports)})")
    lines.append(f"  task outputs   {run.pipeline_root}")
    if run.log is not None:
        lines.append(f"  full log       {run.log}")
    if viewer.startswith("s3://"):
        lines += _links(pub)
        lines.append("view it: serve the run folder over HTTP, or set SPLATFLOW_PUBLIC_BASE_URL to the address "
                     "serving the bucket")
    elif viewer != "-":
        lines.append(f"view it: python -m http.server -d {viewer.rsplit('/', 1)[0]} 8000, then open "
                     "http://localhost:8000/")
    lines.append("next: your own photos (splatflow run PHOTOS_DIR), a better preset on a GPU (--quality preview), "
                 "the cluster (README: The pipeline)")
    return lines
