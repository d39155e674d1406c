"""Run the same pipeline function on this machine: ``kfp.local`` with ``SubprocessRunner(use_venv=False)``.

kfp 2.17's local orchestrator runs the compiled graph, exit handler included: notify runs after the body, on
success and on failure, with a real ``PipelineTaskFinalStatus``. Kubernetes-only settings (GPU, tolerations,
node selectors, Secrets, resources) do not apply locally; tasks inherit this process's environment instead
(``AWS_*`` for s3:// sources and outputs, the notification settings). Every task runs with this interpreter, so
splatflow, kfp, ``components`` and ``pipelines`` must be importable here (``make install`` sees to it).

Retries are off locally (``build_pipeline(retries=False)``): kfp.local would honour their back-off, and a
local failure (bad input, no CUDA) fails the same way each time.

Layout of one local run under ``output`` (a fresh folder per run):

- ``output/<scene>/<run_id>/...`` what publish wrote (the .sog, the viewer page, the run report);
- ``output/pipeline-root/`` kfp.local's task outputs (images, SfM model, PLY, SOG, reports) and logs.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from splatflow.errors import InputError, StageError
from splatflow.presets import check_run_parameters

log = logging.getLogger(__name__)
LOCAL_DEFAULTS: dict[str, Any] = {"quality": "tiny", "iterations": 0, "max_splats": 20_000, "sh_degree": 1}


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
              sh_degree: int = LOCAL_DEFAULTS["sh_degree"], notify_target: str = "") -> LocalRun:
    """Run ``splat_pipeline`` under kfp.local with file:// output in ``output`` (must be new or empty).

    Raises :class:`~splatflow.errors.StageError` naming the failed task when the pipeline fails (notify has
    run by then, with the failure in its message).
    """
    from kfp import local

    from pipelines.splat_pipeline import build_pipeline

    check_run_parameters({"quality": quality, "iterations": iterations, "max_splats": max_splats,
                          "sh_degree": sh_degree, "notify_target": notify_target})
    src = source_uri(source)
    out = _prepare_output(Path(output))
    root = out / "pipeline-root"
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root), raise_on_error=True)
    started = time.monotonic()
    pipeline = build_pipeline(retries=False)  # the same graph; failures here are deterministic
    try:
        with warnings.catch_warnings():
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


def _plain(text: str) -> str:
    """Drop the ANSI colour codes kfp.local puts into its messages."""
    import re

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
