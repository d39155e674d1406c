"""Run the same pipeline function on this machine: ``kfp.local`` with ``SubprocessRunner(use_venv=False)``.

kfp 2.17's local orchestrator runs the compiled graph, exit handler included: notify runs after the body, on
success and on failure, with a real ``PipelineTaskFinalStatus``. Kubernetes-only settings (GPU, tolerations,
node selectors, Secrets, resources) do not apply locally; tasks inherit this process's environment instead
(``AWS_*`` for s3:// sources and outputs, the notification settings). Every task runs with this interpreter, so
splatflow, kfp, ``components`` and ``pipelines`` must be importable here (``make install`` sees to it).

Retries are off locally (``build_pipeline(retries=False)``): kfp.local would honour their back-off, and a
local failure (bad input, no CUDA) fails the same way each time.

``runner="docker"`` runs every task in its stage image instead (``kfp.local.DockerRunner``; the images named by
``components.images``, e.g. built by ``make images-local``), through any Docker-compatible engine at
``DOCKER_HOST`` (docker, or ``podman system service``). The tasks run as the images' user (uid 10001), on the
host's network (a webhook on localhost is reachable), with the output folder and a local source mounted at
their own paths, and with this process's ``SPLATFLOW_*`` and ``AWS_*`` variables (what a cluster gives a pod
from its Secrets and ConfigMaps).

Layout of one local run under ``output`` (a fresh folder per run):

- ``output/<scene>/<run_id>/...`` what publish wrote (the .sog, the viewer page, the run report);
- ``output/pipeline-root/`` kfp.local's task outputs (images, SfM model, PLY, SOG, reports) and logs.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from splatflow.errors import InputError, StageError
from splatflow.presets import check_run_parameters

log = logging.getLogger(__name__)
LOCAL_DEFAULTS: dict[str, Any] = {"quality": "tiny", "iterations": 0, "max_splats": 20_000, "sh_degree": 1}
RUNNERS = ("subprocess", "docker")
#: variables a task in a container gets from this process (a cluster's pods get them from Secrets and ConfigMaps)
FORWARDED_ENV = re.compile(r"^(SPLATFLOW_|AWS_)")


@dataclass
class LocalRun:
    """What one local run produced: the publish result (``urls``, ``manifest_uri``, ``viewer_uri``) and folders."""

    output: Path
    pipeline_root: Path
    publish: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

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


def run_local(source: str | Path, output: Path | str, *, quality: str = LOCAL_DEFAULTS["quality"],
              iterations: int = LOCAL_DEFAULTS["iterations"], max_splats: int = LOCAL_DEFAULTS["max_splats"],
              sh_degree: int = LOCAL_DEFAULTS["sh_degree"], notify_target: str = "",
              runner: str = "subprocess") -> LocalRun:
    """Run ``splat_pipeline`` under kfp.local with file:// output in ``output`` (must be new or empty);
    ``runner``: ``subprocess`` (this interpreter) or ``docker`` (each task in its stage image).

    Raises :class:`~splatflow.errors.StageError` naming the failed task when the pipeline fails (notify has
    run by then, with the failure in its message).
    """
    from kfp import local

    from pipelines.splat_pipeline import build_pipeline

    check_run_parameters({"quality": quality, "iterations": iterations, "max_splats": max_splats,
                          "sh_degree": sh_degree, "notify_target": notify_target})
    if runner not in RUNNERS:
        raise InputError(f"unknown runner {runner!r}", hint=f"use one of {', '.join(RUNNERS)}")
    src = source_uri(source)
    if runner == "docker":
        check_docker_engine()  # before the output folder exists: a failed check leaves nothing behind
    out = _prepare_output(Path(output))
    root = out / "pipeline-root"
    task_runner = docker_runner(src, out, root) if runner == "docker" else local.SubprocessRunner(use_venv=False)
    local.init(runner=task_runner, pipeline_root=str(root), raise_on_error=True)
    started = time.monotonic()
    pipeline = build_pipeline(retries=False)  # the same graph; failures here are deterministic
    try:
        with _container_exit_codes_kept(runner == "docker"), warnings.catch_warnings():
            # expected locally: the stage images are not used, and Kubernetes resources do not apply
            warnings.filterwarnings("ignore", message=".*have no effect in the current local runner.*")
            warnings.filterwarnings("ignore", message=".*non-Python base image.*")
            pipeline(source_uri=src, output_uri=out.as_uri(), quality=quality, iterations=iterations,
                     max_splats=max_splats, sh_degree=sh_degree, notify_target=notify_target)
    except RuntimeError as exc:  # kfp.local: "Pipeline splatflow finished with status FAILURE. Inner task failed: ..."
        raise StageError(f"the local pipeline run failed: {_plain(str(exc))}",
                         hint=f"each task's log is above; task outputs are under {root}") from exc
    return LocalRun(output=out, pipeline_root=root, publish=find_publish_result(root),
                    seconds=round(time.monotonic() - started, 1))


def check_docker_engine() -> None:
    """The engine at ``DOCKER_HOST`` answers and holds every stage image (``components.images``); else an
    :class:`InputError` saying what to do."""
    try:
        import docker
    except ImportError as exc:
        raise InputError("the docker runner needs the docker Python package",
                         hint="pip install docker (make install brings it)") from exc
    from components.images import all_images

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
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def _as_path(uri: str | None) -> str:
    """``file:///x`` -> ``/x`` for printing; other URIs unchanged."""
    if not uri:
        return "-"
    if uri.startswith("file://"):
        from urllib.parse import unquote, urlparse

        return unquote(urlparse(uri).path)
    return uri


def summary_lines(run: LocalRun) -> list[str]:
    """Where the results of a local run are, one line each (what ``splatflow run`` prints)."""
    pub = run.publish
    viewer = _as_path(pub.get("viewer_uri"))
    lines = [f"pipeline finished in {run.seconds:.0f} s; results under {run.output}",
             f"  scene (SOG)    {_as_path(pub.get('content_uri'))}",
             f"  viewer page    {viewer}",
             f"  run report     {_as_path(pub.get('manifest_uri'))}  (summary: {json.dumps(pub.get('summary', {}))})"]
    reports = sorted(rel for rel in run.urls if rel.startswith("reports/"))
    if reports:
        lines.append(f"  stage reports  {_as_path(run.urls[reports[0]]).rsplit('/', 1)[0]}/ "
                     f"({', '.join(r.split('/', 1)[1] for r in reports)})")
    lines.append(f"  task outputs   {run.pipeline_root}")
    if viewer != "-":
        lines.append(f"view it: python -m http.server -d {viewer.rsplit('/', 1)[0]} 8000, then open "
                     "http://localhost:8000/")
    return lines
