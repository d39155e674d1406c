"""`splatflow doctor`: is the current cluster ready to run the splatflow pipeline?

Checks, each reported as one line (OK / FAIL / SKIP) with a fix when something is wrong:

- ``cluster``        the kube context loads and its API server answers (Kubernetes version);
- ``gpu-nodes``      nodes with allocatable ``nvidia.com/gpu``, carrying the label the pipeline selects on
                     (``splatflow.io/accelerator=nvidia``) and the taint it tolerates (``nvidia.com/gpu``,
                     ``NoSchedule``, any value: the pipeline's toleration is ``operator: Exists``), and no other
                     NoSchedule/NoExecute taint that would keep the GPU tasks off;
- ``device-plugin``  an NVIDIA device plugin DaemonSet with ready pods;
- ``kfp-launcher``   the ``kfp-launcher`` ConfigMap (pipeline root, S3 provider), the Secret it refers to, and
                     (off AWS) that the tasks' ``splatflow-storage`` endpoint is the launcher's;
- ``bucket``         the pipeline root's bucket (``s3://bucket``, ``s3://bucket/prefix/``) answers a HEAD with the
                     credentials configured here (standard AWS environment, :func:`splatflow.storage.check_bucket`);
- ``kfp-api``        ``<KFP_HOST>/apis/v2beta1/healthz`` answers, and the backend is new enough (>= 2.14, for the
                     exit handler's final task status), authenticated as the project's KFP client is
                     (:func:`kfp_auth`: ``KFP_TOKEN``, else ``KFP_SA_TOKEN_PATH`` or the in-cluster token; plus
                     ``KFP_COOKIE``).

The Kubernetes Python client comes with the ``pipeline`` extra and is imported lazily. No kfp import here.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from splatflow import spec
from splatflow.errors import DependencyMissing, EnvironmentProblem, SplatflowError

__all__ = [
    "BLOCKING_EFFECTS", "DEFAULT_NAMESPACE", "DEVICE_PLUGIN_NAME", "IN_CLUSTER_TOKEN", "MIN_KFP_VERSION", "Check",
    "Doctor", "as_json", "doctor", "format_report", "kfp_auth", "kfp_token_path", "tolerates"
]

# The GPU resource, node label, taint (the one the fixes recommend) and toleration come from splatflow.spec.GPU,
# read when a check runs: the pipeline's GPU tasks are scheduled from the same object.
#: Taint effects that keep an untolerating pod off a node (PreferNoSchedule only discourages it).
BLOCKING_EFFECTS = ("NoSchedule", "NoExecute")
DEVICE_PLUGIN_NAME = "nvidia-device-plugin"
MIN_KFP_VERSION = (2, 14)
DEFAULT_NAMESPACE = "kubeflow"
#: The projected service-account token KFP mounts into pods (the same default as pipelines/client.py).
IN_CLUSTER_TOKEN = Path("/var/run/secrets/kubeflow/pipelines/token")

OK, FAIL, SKIP = "OK", "FAIL", "SKIP"


@dataclass
class Check:
    """One line of the report: ``status`` is OK, FAIL or SKIP; ``fix`` says what to do when not OK."""

    name: str
    status: str
    detail: str
    fix: str | None = None

    @property
    def failed(self) -> bool:
        return self.status == FAIL


def _kube() -> Any:
    try:
        import kubernetes
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise DependencyMissing("the Kubernetes Python client is not installed",
                                hint="pip install 'splatflow[pipeline]'") from exc
    return kubernetes


def tolerates(toleration: Mapping[str, Any], taint: Mapping[str, Any]) -> bool:
    """Kubernetes' matching rule: does ``toleration`` tolerate ``taint`` (dicts with key/operator/value/effect)?"""
    effect = toleration.get("effect") or ""
    if effect and effect != taint.get("effect"):
        return False
    key, operator = toleration.get("key") or "", toleration.get("operator") or "Equal"
    if not key:
        return operator == "Exists"
    if key != taint.get("key"):
        return False
    return operator == "Exists" or (toleration.get("value") or "") == (taint.get("value") or "")


def _taint_text(taint: Mapping[str, Any]) -> str:
    value = taint.get("value")
    return f"{taint.get('key')}{'=' + value if value else ''}:{taint.get('effect')}"


def kfp_token_path(env: Mapping[str, str]) -> Path | None:
    """The service-account token file KFP clients authenticate with: ``KFP_SA_TOKEN_PATH``, else the in-cluster
    projected token when it exists, else None (the one rule of doctor and pipelines/client.py)."""
    if env.get("KFP_SA_TOKEN_PATH"):
        return Path(env["KFP_SA_TOKEN_PATH"])
    return IN_CLUSTER_TOKEN if IN_CLUSTER_TOKEN.exists() else None


def kfp_auth(env: Mapping[str, str] | None = None) -> tuple[str, dict[str, str]]:
    """The auth the project's KFP client (pipelines/client.py) would use, as HTTP headers: ``KFP_TOKEN`` (bearer),
    else ``KFP_SA_TOKEN_PATH`` or the in-cluster token file (bearer, read now), and ``KFP_COOKIE`` (a Cookie
    header) on top. Returns (a secret-free description, headers). Raises EnvironmentProblem when
    ``KFP_SA_TOKEN_PATH`` names no readable file."""
    env = os.environ if env is None else env
    headers: dict[str, str] = {}
    kinds: list[str] = []
    token = env.get("KFP_TOKEN") or ""
    path = kfp_token_path(env)
    if token:
        headers["Authorization"] = f"Bearer {token}"
        kinds.append("KFP_TOKEN")
    elif path is not None:
        try:
            sa_token = path.read_text().strip()
        except OSError as exc:
            raise EnvironmentProblem(f"KFP_SA_TOKEN_PATH={path} cannot be read ({type(exc).__name__})",
                                     hint="mount the service-account token there or unset KFP_SA_TOKEN_PATH") from None
        if not sa_token:
            raise EnvironmentProblem(f"the service-account token file {path} is empty",
                                     hint="mount the projected KFP token there or unset KFP_SA_TOKEN_PATH")
        headers["Authorization"] = f"Bearer {sa_token}"
        kinds.append(f"service-account token {path}")
    if env.get("KFP_COOKIE"):
        headers["Cookie"] = env["KFP_COOKIE"]
        kinds.append("KFP_COOKIE")
    return (" + ".join(kinds) or "no credentials"), headers


def _api_error(exc: BaseException) -> str:
    """A short, secret-free description of a Kubernetes client error."""
    status = getattr(exc, "status", None)
    reason = getattr(exc, "reason", None)
    if status:
        return f"HTTP {status} {reason or ''}".strip()
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]


class Doctor:
    """Runs the checks against one kube context (``None``: the current one) and namespace."""

    def __init__(self, *, context: str | None = None, namespace: str = DEFAULT_NAMESPACE,
                 kfp_host: str | None = None, bucket_uri: str | None = None, timeout: float = 5.0) -> None:
        self.context = context
        self.namespace = namespace
        self.kfp_host = kfp_host if kfp_host is not None else os.environ.get("KFP_HOST")
        self.bucket_uri = bucket_uri
        self.timeout = timeout
        self.core: Any = None
        self.apps: Any = None
        self.launcher: dict[str, Any] | None = None

    # ------------------------------------------------------------------ cluster
    def check_cluster(self) -> Check:
        k = _kube()
        try:
            # KUBECONFIG as it is now (the client reads it once, at import)
            config_file = os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
            api_client = k.config.new_client_from_config(config_file=config_file, context=self.context)
        except Exception as exc:  # ConfigException, missing file, bad YAML
            return Check("cluster", FAIL, f"no usable kube context: {_api_error(exc)}",
                         "point KUBECONFIG at your cluster (EKS: aws eks update-kubeconfig --name splatflow; "
                         "then kubectl config use-context <name>)")
        # one quick try: an unreachable server should not take minutes
        api_client.configuration.retries = 1
        host = api_client.configuration.host
        try:
            version = k.client.VersionApi(api_client).get_code(_request_timeout=self.timeout)
        except Exception as exc:
            if getattr(exc, "status", None) in (401, 403):
                return Check("cluster", FAIL, f"the API server at {host} refused this user: {_api_error(exc)}",
                             "refresh the credentials of the context (EKS: aws eks update-kubeconfig; "
                             "check the AWS profile it uses)")
            return Check("cluster", FAIL, f"the API server at {host} does not answer: {_api_error(exc)}",
                         "check that the cluster is up and that `kubectl get nodes` works from here "
                         "(VPN, credentials, the right context)")
        self.core = k.client.CoreV1Api(api_client)
        self.apps = k.client.AppsV1Api(api_client)
        ctx = self.context or _current_context_name(k, config_file) or "current context"
        return Check("cluster", OK, f"{ctx} ({host}), Kubernetes {version.git_version}")

    # ------------------------------------------------------------------ GPU nodes
    def check_gpu_nodes(self) -> Check:
        gpu, tol = spec.GPU, spec.GPU.toleration  # read now: the pipeline schedules from the same object
        label, taint = f"{gpu.node_label[0]}={gpu.node_label[1]}", f"{gpu.taint[0]}={gpu.taint[1]}:{gpu.taint[2]}"
        try:
            nodes = self.core.list_node(_request_timeout=self.timeout).items
        except Exception as exc:
            return Check("gpu-nodes", FAIL, f"cannot list nodes: {_api_error(exc)}",
                         "give your user `list nodes` rights (a cluster-reader role)")
        gpu_nodes, labelled_without_gpu = [], []
        for node in nodes:
            name = node.metadata.name
            labels = node.metadata.labels or {}
            alloc = (node.status.allocatable or {}) if node.status else {}
            count = _int_quantity(alloc.get(gpu.resource, "0"))
            if count > 0:
                gpu_nodes.append((name, count, labels, node.spec.taints or []))
            elif labels.get(gpu.node_label[0]) == gpu.node_label[1]:
                labelled_without_gpu.append(name)
        if not gpu_nodes:
            if labelled_without_gpu:
                return Check("gpu-nodes", FAIL,
                             f"{len(labelled_without_gpu)} node(s) labelled {label} "
                             f"({', '.join(labelled_without_gpu[:5])}) but none has allocatable {gpu.resource}",
                             "the NVIDIA device plugin is not advertising GPUs: see the device-plugin line "
                             "(driver + container toolkit on the node, then kubectl apply -k manifests/gpu)")
            return Check("gpu-nodes", FAIL, f"no node has allocatable {gpu.resource} "
                         f"({len(nodes)} node(s) in the cluster)",
                         "add a GPU node group (EKS: eksctl create nodegroup -f manifests/eks/cluster.yaml); on-prem: "
                         f"install the NVIDIA driver, label the node {label}, "
                         f"taint it {taint}, apply manifests/gpu")
        parts, problems, blocked = [], [], []
        for name, count, labels, node_taints in gpu_nodes:
            parts.append(f"{name} ({gpu.resource}: {count})")
            taints = [{"key": t.key, "value": t.value, "effect": t.effect} for t in node_taints]
            if labels.get(gpu.node_label[0]) != gpu.node_label[1]:
                problems.append(f"kubectl label node {name} {label}")
            if not any(t["key"] == tol["key"] and tolerates(tol, t) for t in taints):
                problems.append(f"kubectl taint node {name} {taint}")
            for t in taints:
                if t["effect"] in BLOCKING_EFFECTS and not tolerates(tol, t):
                    blocked.append(f"{name} has {_taint_text(t)}")
                    problems.append(f"kubectl taint node {name} {t['key']}:{t['effect']}-")
        detail = f"{len(gpu_nodes)} GPU node(s): {', '.join(parts)}"
        wanted = (f"the pipeline's GPU tasks select on the label {label} and tolerate only "
                  f"the taint {tol['key']}:{tol['effect']} (any value)")
        if blocked:
            detail += f"; taints the GPU tasks do not tolerate: {', '.join(blocked)}"
        if problems:
            return Check("gpu-nodes", FAIL, f"{detail}; {wanted} (the taint keeps other pods off)",
                         "; ".join(problems))
        return Check("gpu-nodes", OK, detail + f", labelled {label} and tainted "
                     f"{tol['key']}:{tol['effect']}")

    # ------------------------------------------------------------------ device plugin
    def check_device_plugin(self) -> Check:
        try:
            sets = self.apps.list_daemon_set_for_all_namespaces(_request_timeout=self.timeout).items
        except Exception as exc:
            return Check("device-plugin", FAIL, f"cannot list DaemonSets: {_api_error(exc)}",
                         "give your user `list daemonsets` rights in all namespaces")
        found = [d for d in sets if DEVICE_PLUGIN_NAME in d.metadata.name]
        if not found:
            return Check("device-plugin", FAIL, "no NVIDIA device plugin DaemonSet in the cluster",
                         "kubectl apply -k manifests/gpu (EKS: eksctl installs it with GPU node groups; "
                         "GPU Operator clusters: check the operator)")
        lines, ready_any = [], False
        for d in found:
            st = d.status
            desired, ready = (st.desired_number_scheduled or 0), (st.number_ready or 0)
            ready_any = ready_any or ready > 0
            lines.append(f"{d.metadata.namespace}/{d.metadata.name} {ready}/{desired} ready")
        if not ready_any:
            return Check("device-plugin", FAIL, "; ".join(lines),
                         "no device plugin pod is ready: kubectl -n <namespace> describe daemonset "
                         f"{found[0].metadata.name} (no GPU node yet, or the node lacks the NVIDIA driver/toolkit)")
        return Check("device-plugin", OK, "; ".join(lines))

    # ------------------------------------------------------------------ kfp-launcher
    def check_launcher(self) -> Check:
        import yaml

        fix_deploy = "make deploy-eks or make deploy-onprem (README: Deploying)"
        try:
            cm = self.core.read_namespaced_config_map("kfp-launcher", self.namespace, _request_timeout=self.timeout)
        except Exception as exc:
            if getattr(exc, "status", None) == 404:
                return Check("kfp-launcher", FAIL, f"no kfp-launcher ConfigMap in namespace {self.namespace}: "
                             "KFP falls back to its bundled MinIO root", fix_deploy)
            return Check("kfp-launcher", FAIL, f"cannot read kfp-launcher: {_api_error(exc)}",
                         f"give your user `get configmaps` rights in {self.namespace}")
        data = cm.data or {}
        root = data.get("defaultPipelineRoot", "")
        try:
            providers = yaml.safe_load(data.get("providers", "") or "{}") or {}
            s3 = (providers.get("s3") or {}).get("default") or {}
        except (yaml.YAMLError, AttributeError) as exc:
            return Check("kfp-launcher", FAIL, f"kfp-launcher providers is not valid YAML: {exc}", fix_deploy)
        self.launcher = {"root": root, "s3": s3}
        if not root.startswith("s3://"):
            return Check("kfp-launcher", FAIL, f"defaultPipelineRoot is {root or 'unset'!r}, not an s3:// URI",
                         "set PIPELINE_ROOT in manifests/overlays/<eks|onprem>/config.env and deploy again")
        creds = s3.get("credentials") or {}
        where = s3.get("endpoint") or "AWS S3"
        detail = f"pipeline root {root}, S3 endpoint {where}"
        drift = self._task_endpoint_drift(str(s3.get("endpoint") or ""))
        if drift:
            return Check("kfp-launcher", FAIL, detail + f"; {drift}", fix_deploy)
        if creds.get("fromEnv"):
            return Check("kfp-launcher", OK, detail + ", credentials from the pod (IRSA)")
        ref = creds.get("secretRef") or {}
        name = ref.get("secretName")
        if not name:
            return Check("kfp-launcher", FAIL, detail + ", but no credentials (fromEnv or secretRef)", fix_deploy)
        try:
            secret = self.core.read_namespaced_secret(name, self.namespace, _request_timeout=self.timeout)
        except Exception as exc:
            if getattr(exc, "status", None) == 404:
                return Check("kfp-launcher", FAIL, detail + f", but its Secret {name} does not exist",
                             "copy manifests/overlays/onprem/minio.env.example to minio.env, fill in the keys, "
                             "make deploy-onprem")
            return Check("kfp-launcher", SKIP, detail + f"; cannot read Secret {name}: {_api_error(exc)}")
        keys = set((secret.data or {}).keys())
        missing = [k for k in (ref.get("accessKeyKey"), ref.get("secretKeyKey")) if k and k not in keys]
        if missing:
            return Check("kfp-launcher", FAIL, detail + f", Secret {name} lacks {', '.join(missing)}",
                         "put both keys in manifests/overlays/onprem/minio.env and make deploy-onprem")
        return Check("kfp-launcher", OK, detail + f", credentials from Secret {name}")

    def _task_endpoint_drift(self, launcher_endpoint: str) -> str | None:
        """Why the tasks would reach another store than KFP's launcher (``None`` when they agree).

        Off AWS, the tasks take ``AWS_ENDPOINT_URL_S3`` from the storage ConfigMap (``splatflow-storage``:
        :class:`splatflow.spec.ClusterNames`; ``AWS_ENDPOINT_URL`` in deployments made before it was S3-only); its
        host:port must be the launcher's endpoint."""
        if not launcher_endpoint or "amazonaws.com" in launcher_endpoint:
            return None
        config_map = spec.ClusterNames.from_env().storage_config
        try:
            cm = self.core.read_namespaced_config_map(config_map, self.namespace, _request_timeout=self.timeout)
        except Exception as exc:
            if getattr(exc, "status", None) == 404:
                return f"ConfigMap {config_map} is missing, so the pipeline's tasks get no S3 endpoint"
            return None  # not readable here: nothing to compare
        data = cm.data or {}
        key = "AWS_ENDPOINT_URL_S3" if data.get("AWS_ENDPOINT_URL_S3") else "AWS_ENDPOINT_URL"
        url = str(data.get(key, ""))
        if url.split("//", 1)[-1].rstrip("/") != launcher_endpoint.split("//", 1)[-1].rstrip("/"):
            return (f"the pipeline's tasks use {url or 'no endpoint'} ({config_map} {key}), "
                    f"KFP's launcher {launcher_endpoint}")
        return None

    # ------------------------------------------------------------------ bucket
    def check_bucket(self) -> Check:
        uri = self.bucket_uri or (self.launcher or {}).get("root")
        if not uri:
            return Check("bucket", SKIP, "no pipeline root known (kfp-launcher missing)",
                         "pass --bucket s3://bucket/prefix")
        from splatflow import storage

        cluster_endpoint = ((self.launcher or {}).get("s3") or {}).get("endpoint")
        try:
            via = storage.check_bucket(uri)
        except DependencyMissing as exc:
            return Check("bucket", SKIP, f"cannot check {uri}: {exc.message}", exc.hint)
        except SplatflowError as exc:
            fix = exc.hint or "check the AWS credentials and endpoint in this shell"
            if cluster_endpoint and "amazonaws.com" not in cluster_endpoint:
                fix += (f"; the cluster's endpoint is {cluster_endpoint}: reach it from here with kubectl "
                        f"port-forward and AWS_ENDPOINT_URL_S3=http://127.0.0.1:<port>")
            return Check("bucket", FAIL, f"{uri}: {exc.message}", fix)
        bucket = storage.parse(uri).bucket
        return Check("bucket", OK, f"{uri}: bucket {bucket} reachable via {via} with this shell's credentials")

    # ------------------------------------------------------------------ KFP API
    def check_kfp_api(self) -> Check:
        if not self.kfp_host:
            return Check("kfp-api", SKIP, "KFP_HOST is not set",
                         "export KFP_HOST=http://<kfp ui or api host> (e.g. kubectl -n kubeflow port-forward "
                         "svc/ml-pipeline-ui 8080:80, then KFP_HOST=http://127.0.0.1:8080)")
        base = self.kfp_host.rstrip("/")
        url = base + "/apis/v2beta1/healthz"
        auth_sources = "KFP_TOKEN, KFP_COOKIE or KFP_SA_TOKEN_PATH"
        try:
            auth, headers = kfp_auth()
        except EnvironmentProblem as exc:
            return Check("kfp-api", FAIL, exc.message, exc.hint)
        try:
            info = self._get_json(url, headers)
        except urllib.error.HTTPError as exc:
            if 300 <= exc.code < 400:
                return Check("kfp-api", FAIL, f"{url} redirects (HTTP {exc.code}, to "
                             f"{_where(exc.headers.get('Location'))}): a login page is in front of the API "
                             f"(auth: {auth})",
                             f"set {auth_sources} (the credentials are never sent to a redirect), or point KFP_HOST "
                             "at a port-forward of svc/ml-pipeline-ui")
            if exc.code in (401, 403):
                return Check("kfp-api", FAIL, f"{url} refused this shell's credentials ({auth}): HTTP {exc.code}",
                             f"set {auth_sources} to credentials the KFP API accepts (multi-user Kubeflow: a "
                             "token with access to your profile namespace, or the oauth2-proxy session cookie)")
            return Check("kfp-api", FAIL, f"{url} answered HTTP {exc.code}",
                         f"check KFP_HOST (the KFP UI/API address) and, with Kubeflow auth, {auth_sources}")
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            return Check("kfp-api", FAIL, f"{url} is unreachable: {reason}",
                         "check KFP_HOST; from outside the cluster use kubectl port-forward")
        except ValueError:
            return Check("kfp-api", FAIL, f"{url} did not answer JSON (is KFP_HOST the KFP API, or is a login "
                         f"page in front of it? auth: {auth})",
                         f"point KFP_HOST at the KFP UI or the ml-pipeline service; behind Kubeflow's login set "
                         f"{auth_sources}")
        mode = "multi-user" if info.get("multi_user") else "single-user"
        # v2beta1 healthz carries no version; the v1beta1 one (still served by KFP 2.x) has tag_name
        version = ""
        with contextlib.suppress(urllib.error.URLError, OSError, ValueError):
            version = str(self._get_json(base + "/apis/v1beta1/healthz", headers).get("tag_name") or "")
        parsed = _version_tuple(version)
        if parsed is None:
            return Check("kfp-api", OK, f"{self.kfp_host} healthy ({mode}, auth: {auth}); backend version not "
                         "reported: the pipeline needs KFP >= 2.14")
        if parsed < MIN_KFP_VERSION:
            return Check("kfp-api", FAIL, f"KFP backend {version} at {self.kfp_host}: the pipeline's exit handler "
                         "needs the final task status of KFP >= 2.14", "upgrade Kubeflow Pipelines to 2.14 or newer")
        return Check("kfp-api", OK, f"{self.kfp_host} healthy ({mode}, auth: {auth}), KFP backend {version}")

    def _get_json(self, url: str, headers: Mapping[str, str]) -> dict[str, Any]:
        """GET ``url`` with the auth ``headers`` (from :func:`kfp_auth`) and parse a JSON object."""
        req = urllib.request.Request(url, headers={"Accept": "application/json", **headers})
        with _NO_REDIRECTS.open(req, timeout=self.timeout) as resp:
            data = json.loads(resp.read(65536) or b"{}")
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        return data

    # ------------------------------------------------------------------ all
    def run(self) -> list[Check]:
        """Every check, in order; cluster checks are skipped when the API server does not answer."""
        results = [self.check_cluster()]
        cluster_checks: list[tuple[str, Callable[[], Check]]] = [
            ("gpu-nodes", self.check_gpu_nodes), ("device-plugin", self.check_device_plugin),
            ("kfp-launcher", self.check_launcher)]
        for name, fn in cluster_checks:
            if self.core is None:
                results.append(Check(name, SKIP, "skipped: no cluster"))
            else:
                results.append(fn())
        results.append(self.check_bucket())
        results.append(self.check_kfp_api())
        return results


class _RefuseRedirects(urllib.request.HTTPRedirectHandler):
    """Redirects are answered as errors: the KFP credentials must not follow them to another address."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_NO_REDIRECTS = urllib.request.build_opener(_RefuseRedirects)


def _where(location: str | None) -> str:
    """Scheme, host and path of a redirect target (no query: it may carry state or tokens)."""
    if not location:
        return "nowhere"
    parts = urllib.parse.urlsplit(location)
    return f"{parts.scheme}://{parts.netloc}{parts.path}" if parts.netloc else parts.path


def _current_context_name(k: Any, config_file: str) -> str | None:
    try:
        _, active = k.config.list_kube_config_contexts(config_file=config_file)
        return str(active["name"])
    except Exception:
        return None


_QUANTITY = re.compile(r"^(\d+)$")


def _int_quantity(value: Any) -> int:
    """An integer resource quantity ("1", "4"); anything else counts as 0."""
    m = _QUANTITY.match(str(value).strip())
    return int(m.group(1)) if m else 0


def _version_tuple(version: str) -> tuple[int, int] | None:
    m = re.match(r"^v?(\d+)\.(\d+)", version.strip())
    return (int(m.group(1)), int(m.group(2))) if m else None


def doctor(**kwargs: Any) -> list[Check]:
    """Run every check (keyword arguments: see :class:`Doctor`); returns the report lines."""
    return Doctor(**kwargs).run()


def format_report(checks: list[Check]) -> str:
    """Human-readable report: one ``STATUS name detail`` line per check, a ``fix:`` line under each problem."""
    lines = []
    for c in checks:
        lines.append(f"{c.status:<5} {c.name:<14} {c.detail}")
        if c.fix and c.status != OK:
            lines.append(f"{'':<20} fix: {c.fix}")
    failed = sum(c.failed for c in checks)
    lines.append("ready to run the pipeline" if not failed else f"{failed} problem(s) to fix")
    return "\n".join(lines)


def as_json(checks: list[Check]) -> list[dict[str, Any]]:
    """The report as JSON-ready dicts."""
    return [asdict(c) for c in checks]
