"""Upload the compiled pipeline to Kubeflow Pipelines and start runs (``make upload`` / ``make run-pipeline``).

Connection settings come from the environment (never from pipeline parameters):

- ``KFP_HOST``: the KFP API endpoint, e.g. ``https://kubeflow.example.com/pipeline`` or a port-forward
  ``http://localhost:8888``.
- auth, first match wins: ``KFP_TOKEN`` (a bearer token), ``KFP_SA_TOKEN_PATH`` or the projected
  service-account token at ``/var/run/secrets/kubeflow/pipelines/token`` (in-cluster), ``KFP_COOKIE`` (the
  session cookie of a multi-user Kubeflow behind oauth2-proxy/Dex, e.g. ``oauth2_proxy_kubeflow=...``); none is
  fine for an open port-forward.
- ``KFP_NAMESPACE`` (multi-user Kubeflow: the profile namespace; pipelines are then uploaded to it),
  ``KFP_EXPERIMENT`` (default ``splatflow``), ``KFP_SERVICE_ACCOUNT`` (default: the server's, i.e.
  ``pipeline-runner`` with IRSA on EKS, ``default-editor`` in a profile namespace).

Tokens and cookies are never printed. Connection problems (unreachable host, refused credentials, an answer
that is not the KFP API) become :class:`~splatflow.errors.EnvironmentProblem` with the fix
(:func:`kfp_errors`), so the CLI prints one line and exits 3 instead of a traceback.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from splatflow.doctor import kfp_token_path
from splatflow.errors import EnvironmentProblem, InputError, SplatflowError, StageError
from splatflow.options import check_run_parameters
from splatflow.redaction import redact
from splatflow.stages.publish import scene_name

FINAL_STATES = {"SUCCEEDED", "FAILED", "SKIPPED", "CANCELED", "CANCELLED", "ERROR"}


@dataclass(frozen=True)
class KfpSettings:
    """Where and as whom to talk to KFP. ``token``/``cookie`` are secrets: ``repr`` hides them."""

    host: str
    token: str | None = None
    token_path: Path | None = None
    cookie: str | None = None
    namespace: str | None = None
    experiment: str = "splatflow"
    service_account: str | None = None

    def __repr__(self) -> str:
        return (f"KfpSettings(host={self.host!r}, auth={self.auth_kind()!r}, namespace={self.namespace!r}, "
                f"experiment={self.experiment!r}, service_account={self.service_account!r})")

    def auth_kind(self) -> str:
        """``token``, ``service-account-token``, ``cookie`` or ``none``."""
        if self.token:
            return "token"
        if self.token_path:
            return "service-account-token"
        return "cookie" if self.cookie else "none"

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> KfpSettings:
        """Read the ``KFP_*`` variables (see module doc); raises when ``KFP_HOST`` is missing."""
        env = dict(os.environ) if env is None else env
        host = env.get("KFP_HOST", "").strip().rstrip("/")
        if not host:
            raise EnvironmentProblem("KFP_HOST is not set",
                                     hint="export KFP_HOST=https://<kubeflow>/pipeline (or a port-forward such as "
                                          "http://localhost:8888)")
        if "://" not in host:
            raise InputError(f"KFP_HOST={host!r} has no scheme", hint="write it as http(s)://host[:port][/path]")
        token_path = kfp_token_path(env)
        if token_path is not None and not token_path.is_file():
            raise EnvironmentProblem(f"KFP_SA_TOKEN_PATH={token_path} is not a file",
                                     hint="mount the service-account token or unset KFP_SA_TOKEN_PATH")
        return cls(host=host, token=env.get("KFP_TOKEN") or None, token_path=token_path,
                   cookie=env.get("KFP_COOKIE") or None, namespace=env.get("KFP_NAMESPACE") or None,
                   experiment=env.get("KFP_EXPERIMENT") or "splatflow",
                   service_account=env.get("KFP_SERVICE_ACCOUNT") or None)


def connect(settings: KfpSettings) -> Any:
    """A ``kfp.Client`` for ``settings`` (auth by token, service-account token or cookie)."""
    import warnings

    import kfp
    from kfp.client import ServiceAccountTokenVolumeCredentials

    kwargs: dict[str, Any] = {"host": settings.host}
    if settings.token:
        kwargs["existing_token"] = settings.token
    elif settings.token_path:
        kwargs["credentials"] = ServiceAccountTokenVolumeCredentials(path=str(settings.token_path))
    if settings.cookie:
        kwargs["cookies"] = settings.cookie
    if settings.namespace:
        kwargs["namespace"] = settings.namespace
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # "This client only works with KFP v2.0.0-beta.2 and later"
        return kfp.Client(**kwargs)


@contextmanager
def kfp_errors(settings: KfpSettings) -> Iterator[None]:
    """Turn what kfp.Client raises for connection and auth problems into one-line errors with the fix.

    Unreachable host, TLS failures -> EnvironmentProblem; HTTP 401/403 -> EnvironmentProblem naming the auth in
    use; 404 -> EnvironmentProblem (KFP_HOST is not the API endpoint); 409 and other 4xx -> InputError; 5xx ->
    EnvironmentProblem. The server's message is kept short and never carries the token or cookie.
    """
    from kfp_server_api.exceptions import ApiException
    from urllib3.exceptions import HTTPError as Urllib3Error

    host = settings.host
    try:
        yield
    except SplatflowError:
        raise
    except ApiException as exc:
        status = int(exc.status or 0)
        detail = _server_message(exc, settings)
        if status in (401, 403):
            auth = settings.auth_kind()
            fix = {"token": "KFP_TOKEN is expired or lacks access: get a new one",
                   "service-account-token": "the service account lacks access to KFP (its RBAC / profile)",
                   "cookie": "KFP_COOKIE has expired: log in to Kubeflow again and copy the new cookie",
                   "none": "this KFP needs auth: export KFP_TOKEN or KFP_COOKIE (see `make upload` in the README)"}
            kind = "refused the credentials" if status == 401 else "denied access"
            raise EnvironmentProblem(f"KFP at {host} {kind} (HTTP {status}, auth: {auth}){detail}",
                                     hint=fix[auth] + (f"; and check KFP_NAMESPACE={settings.namespace}"
                                                       if settings.namespace and status == 403 else "")) from None
        if status == 404:
            raise EnvironmentProblem(f"KFP at {host} answered HTTP 404{detail}",
                                     hint="KFP_HOST must be the KFP API endpoint, e.g. https://<kubeflow>/pipeline or "
                                          "http://localhost:8888 (kubectl port-forward svc/ml-pipeline-ui)") from None
        if 400 <= status < 500:
            raise InputError(f"KFP at {host} refused the request (HTTP {status}){detail}",
                             hint="a version name must be unique per pipeline: pass another --version"
                                  if status == 409 else "check the package and parameters") from None
        raise EnvironmentProblem(f"KFP at {host} failed (HTTP {status}){detail}",
                                 hint="retry; if it persists, check the KFP API server's logs") from None
    except (Urllib3Error, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise EnvironmentProblem(f"cannot reach KFP at {host}: {_redact(_one_line(str(reason)), settings)}",
                                 hint="check KFP_HOST and the network (a port-forward must be running: kubectl -n "
                                      "kubeflow port-forward svc/ml-pipeline-ui 8888:80)") from None


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _redact(text: str, settings: KfpSettings) -> str:
    """:func:`splatflow.redaction.redact`, with the session's token and cookie (a token may come from a file)."""
    return redact(text, extra=(settings.token, settings.cookie))


def _server_message(exc: Any, settings: KfpSettings) -> str:
    """``: <the server's message>`` from an ApiException body (JSON ``message``/``error``), or ``""``."""
    body = getattr(exc, "body", None)
    try:
        data = json.loads(body) if body else {}
        text = str(data.get("message") or data.get("error") or "") if isinstance(data, dict) else ""
    except (ValueError, TypeError):
        text = ""
    return f": {_redact(_one_line(text, 200), settings)}" if text else ""


def _answered(value: Any, what: str) -> Any:
    """``value`` from a KFP answer, or EnvironmentProblem when it is missing (the host did not answer as KFP)."""
    if not value:
        raise EnvironmentProblem(f"KFP_HOST did not answer like the KFP API ({what} missing from its answer)",
                                 hint="KFP_HOST must be the KFP API endpoint; behind a login page (oauth2-proxy / "
                                      "Dex), set KFP_COOKIE or KFP_TOKEN")
    return value


def pipeline_name(package: Path) -> str:
    """The pipeline name recorded in a compiled YAML."""
    return str(_load_package(package)["pipelineInfo"]["name"])


def _load_package(package: Path) -> dict[str, Any]:
    if not Path(package).is_file():
        raise InputError(f"compiled pipeline {package} does not exist", hint="run `make compile` first")
    docs = list(yaml.safe_load_all(Path(package).read_text()))
    if not docs or not isinstance(docs[0], dict) or "pipelineInfo" not in docs[0]:
        raise InputError(f"{package} is not a compiled KFP pipeline", hint="run `make compile` to write one")
    return dict(docs[0])


def default_version_name() -> str:
    """``<image tag>-<UTC time>``: names which images a version runs and stays unique per upload."""
    from splatflow.spec import tag

    return f"{tag()}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"


def upload(client: Any, package: Path, *, version: str | None = None, namespace: str | None = None,
           description: str | None = None) -> dict[str, str]:
    """Upload ``package`` as a new version named ``version`` (default ``<image tag>-<UTC time>``) of the pipeline
    of the same name, creating the pipeline first when there is none.

    KFP gives a new pipeline a first version named after the pipeline; the version the run uses is still the
    named one uploaded after it (so ``--version`` is honoured on the first upload too). Returns
    ``pipeline_id``, ``version_id``, ``version_name`` and ``created`` (``"true"`` when the pipeline is new).
    """
    name = pipeline_name(package)
    version = version or default_version_name()
    flt = json.dumps({"predicates": [{"operation": "EQUALS", "key": "display_name", "stringValue": name}]})
    listed = client.list_pipelines(filter=flt, namespace=namespace).pipelines or []
    found = [p for p in listed if p.display_name == name]  # never trust the filter alone with someone's pipeline
    if len(found) > 1:
        raise InputError(f"{len(found)} pipelines are named {name!r} on the KFP server",
                         hint="delete the duplicates in the KFP UI; the name must be unique")
    created = not found
    if found:
        pipeline_id = found[0].pipeline_id
    else:
        made_pipeline = client.upload_pipeline(str(package), pipeline_name=name, description=description,
                                               namespace=namespace)
        pipeline_id = _answered(made_pipeline.pipeline_id, "the new pipeline's id")
    made = client.upload_pipeline_version(str(package), pipeline_version_name=version, pipeline_id=pipeline_id,
                                          description=description)
    return {"pipeline_id": pipeline_id,
            "version_id": _answered(made.pipeline_version_id, "the new version's id"),
            "version_name": version, "created": "true" if created else "false"}


def load_params(path: Path | None, package: Path) -> dict[str, Any]:
    """Run parameters from a YAML or JSON file, checked against the compiled pipeline's parameters."""
    declared = _load_package(package)["root"]["inputDefinitions"]["parameters"]
    params: dict[str, Any] = {}
    if path is not None:
        if not Path(path).is_file():
            raise InputError(f"parameters file {path} does not exist",
                             hint="write a YAML/JSON file such as src/splatflow_kfp/pipelines/params.example.yaml")
        loaded = yaml.safe_load(Path(path).read_text())  # YAML is a superset of JSON
        if loaded is not None and not isinstance(loaded, dict):
            raise InputError(f"{path} must hold a mapping of parameter names to values")
        params = dict(loaded or {})
    unknown = sorted(set(params) - set(declared))
    if unknown:
        raise InputError(f"{path}: unknown pipeline parameter(s) {', '.join(unknown)}",
                         hint=f"the parameters are: {', '.join(sorted(declared))}")
    missing = sorted(k for k, spec in declared.items() if not spec.get("isOptional") and k not in params)
    if missing:
        raise InputError(f"missing required pipeline parameter(s) {', '.join(missing)}",
                         hint=f"set them in the parameters file ({path or 'none given'})")
    try:
        check_run_parameters(params)
    except InputError as exc:
        raise InputError(f"{path}: {exc.message}", hint=exc.hint) from None
    return params


def output_prefix(params: dict[str, Any], run_id: str) -> str | None:
    """Where publish writes this run: ``<output_uri>/<scene>/<run_id>/``."""
    if "output_uri" not in params or "source_uri" not in params:
        return None
    return f"{str(params['output_uri']).rstrip('/')}/{scene_name(str(params['source_uri']))}/{run_id}/"


def start_run(client: Any, settings: KfpSettings, ids: dict[str, str], params: dict[str, Any], *,
              run_name: str | None = None) -> dict[str, str]:
    """Create (or reuse) the experiment and start a run of the uploaded version; returns ids and links."""
    experiment = client.create_experiment(settings.experiment, namespace=settings.namespace)
    name = run_name or f"splatflow {scene_name(str(params.get('source_uri', 'scene')))} " \
                       f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime())}"
    _answered(experiment.experiment_id, "the experiment's id")
    run = client.run_pipeline(experiment.experiment_id, name, params=params, pipeline_id=ids["pipeline_id"],
                              version_id=ids["version_id"], service_account=settings.service_account)
    _answered(run.run_id, "the run's id")
    out = {"run_id": run.run_id, "experiment_id": experiment.experiment_id,
           "run_url": f"{settings.host}/#/runs/details/{run.run_id}"}
    prefix = output_prefix(params, run.run_id)
    if prefix:
        out["output_prefix"] = prefix
    return out


def wait(client: Any, run_id: str, *, timeout_s: float, poll_s: float = 10.0) -> str:
    """Poll the run until it ends; returns its final state (``SUCCEEDED``, ``FAILED`` ...).

    Raises StageError (exit 4: not a success) when the run has not ended after ``timeout_s``; the run itself
    keeps going on the cluster.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        state = str(client.get_run(run_id).state or "").upper()
        if state in FINAL_STATES:
            return state
        if time.monotonic() > deadline:
            raise StageError(f"run {run_id} has not finished after --timeout {timeout_s:.0f} s "
                             f"(still {state or 'PENDING'}); it keeps running in KFP",
                             hint="follow it in the KFP UI (run_url above), or wait longer with a larger --timeout")
        time.sleep(poll_s)
