"""`splatflow doctor` against a small fake Kubernetes API (and KFP healthz) over HTTP on 127.0.0.1.

The real Kubernetes Python client talks to the fake server through a kubeconfig; the bucket check goes to the
session's local S3 server (moto over HTTP). Cases: a GPU cluster that is ready, a cluster without GPUs, and an
API server that does not answer; GPU taints the pipeline does and does not tolerate; pipeline roots naming only a
bucket; each KFP auth source the project's KFP client uses.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from splatflow.cli import main
from splatflow.doctor import FAIL, OK, SKIP, Check, doctor

pytest.importorskip("kubernetes")

NS = "kubeflow"
VERSION = {"major": "1", "minor": "33", "gitVersion": "v1.33.2", "gitCommit": "abc", "gitTreeState": "clean",
           "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.24", "compiler": "gc", "platform": "linux/amd64"}


def _node(name: str, gpus: int | None, *, labelled: bool = True, tainted: bool = True,
          taints: list[dict[str, str]] | None = None) -> dict[str, Any]:
    labels = {"kubernetes.io/hostname": name}
    taints = list(taints or [])
    if gpus is not None and labelled:
        labels["splatflow.io/accelerator"] = "nvidia"
    if gpus is not None and tainted:
        taints.append({"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"})
    alloc = {"cpu": "4", "memory": "16Gi", "pods": "29"}
    if gpus:
        alloc["nvidia.com/gpu"] = str(gpus)
    return {"metadata": {"name": name, "labels": labels}, "spec": {"taints": taints},
            "status": {"allocatable": alloc, "capacity": alloc}}


def _daemonset(ready: int, desired: int) -> dict[str, Any]:
    return {"metadata": {"name": "nvidia-device-plugin-daemonset", "namespace": "kube-system"},
            "spec": {"selector": {"matchLabels": {"app": "x"}},
                     "template": {"spec": {"containers": [{"name": "ctr", "image": "img"}]}}},
            "status": {"currentNumberScheduled": desired, "desiredNumberScheduled": desired,
                       "numberMisscheduled": 0, "numberReady": ready}}


def _launcher(bucket: str, endpoint: str) -> dict[str, Any]:
    providers = {"s3": {"default": {"endpoint": endpoint, "region": "us-east-1", "disableSSL": True,
                                    "forcePathStyle": True,
                                    "credentials": {"fromEnv": False, "secretRef": {
                                        "secretName": "splatflow-s3", "accessKeyKey": "AWS_ACCESS_KEY_ID",
                                        "secretKeyKey": "AWS_SECRET_ACCESS_KEY"}}}}}
    return {"metadata": {"name": "kfp-launcher", "namespace": NS},
            "data": {"defaultPipelineRoot": f"s3://{bucket}/pipeline-root", "providers": yaml.safe_dump(providers)}}


def _storage(endpoint: str) -> dict[str, Any]:
    return {"metadata": {"name": "splatflow-storage", "namespace": NS},
            "data": {"AWS_ENDPOINT_URL": endpoint, "AWS_DEFAULT_REGION": "us-east-1"}}


class FakeCluster:
    """A tiny read-only Kubernetes API (+ KFP healthz): path -> JSON body; anything else is a 404 Status."""

    def __init__(self) -> None:
        self.routes: dict[str, Any] = {"/version": VERSION}
        self.requests: list[str] = []
        self.auth: list[str | None] = []
        self.cookies: list[str | None] = []
        self.status_for: dict[str, int] = {}  # path -> error status to answer instead of 404
        self.redirect_to: dict[str, str] = {}  # path -> Location of a 302 answer
        handler = self._handler()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        cluster = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                path = self.path.split("?")[0].rstrip("/")
                cluster.requests.append(path)
                cluster.auth.append(self.headers.get("Authorization"))
                cluster.cookies.append(self.headers.get("Cookie"))
                if path in cluster.redirect_to:
                    self.send_response(302)
                    self.send_header("Location", cluster.redirect_to[path])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = cluster.routes.get(path)
                status = 200 if body is not None else cluster.status_for.get(path, 404)
                if body is None:
                    body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound",
                            "code": status, "message": f"{path}: answered {status}"}
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        return Handler

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _kubeconfig(path: Path, server: str) -> Path:
    cfg = {"apiVersion": "v1", "kind": "Config", "current-context": "fake",
           "clusters": [{"name": "fake", "cluster": {"server": server}}],
           "users": [{"name": "tester", "user": {"token": "not-a-real-token"}}],
           "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "tester", "namespace": NS}}]}
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture()
def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeCluster]:
    fake = FakeCluster()
    monkeypatch.setenv("KUBECONFIG", str(_kubeconfig(tmp_path / "kubeconfig", fake.url)))
    for name in ("KFP_TOKEN", "KFP_COOKIE", "KFP_SA_TOKEN_PATH"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr("splatflow.doctor.IN_CLUSTER_TOKEN", tmp_path / "no-in-cluster-token")
    try:
        yield fake
    finally:
        fake.close()


def _by_name(checks: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks}


def test_gpu_cluster_ready(cluster: FakeCluster, s3_server: dict[str, str],
                           capsys: pytest.CaptureFixture[str]) -> None:
    cluster.routes.update({
        "/api/v1/nodes": {"items": [_node("cpu-1", None), _node("gpu-1", 1)]},
        "/apis/apps/v1/daemonsets": {"items": [_daemonset(1, 1)]},
        f"/api/v1/namespaces/{NS}/configmaps/kfp-launcher": _launcher(s3_server["bucket"], "minio-service:9000"),
        f"/api/v1/namespaces/{NS}/configmaps/splatflow-storage": _storage("http://minio-service:9000"),
        f"/api/v1/namespaces/{NS}/secrets/splatflow-s3": {
            "metadata": {"name": "splatflow-s3"},
            "data": {"AWS_ACCESS_KEY_ID": "eA==", "AWS_SECRET_ACCESS_KEY": "eA=="}},
        "/apis/v2beta1/healthz": {"multi_user": False, "pipeline_store": "database"},
        "/apis/v1beta1/healthz": {"commit_sha": "abc", "tag_name": "2.15.0", "multi_user": False},
    })
    checks = _by_name(doctor(kfp_host=cluster.url, timeout=5))
    assert {n: c.status for n, c in checks.items()} == {
        "cluster": OK, "gpu-nodes": OK, "device-plugin": OK, "kfp-launcher": OK, "bucket": OK, "kfp-api": OK}
    assert "v1.33.2" in checks["cluster"].detail
    assert "1 GPU node(s): gpu-1 (nvidia.com/gpu: 1)" in checks["gpu-nodes"].detail
    assert "kube-system/nvidia-device-plugin-daemonset 1/1 ready" in checks["device-plugin"].detail
    assert "Secret splatflow-s3" in checks["kfp-launcher"].detail
    assert s3_server["bucket"] in checks["bucket"].detail and s3_server["endpoint"] in checks["bucket"].detail
    assert "2.15.0" in checks["kfp-api"].detail

    assert main(["doctor", "--kfp-host", cluster.url]) == 0
    out = capsys.readouterr().out
    assert out.count("OK ") == 6 and "ready to run the pipeline" in out
    assert "not-a-real-token" not in out and s3_server["AWS_SECRET_ACCESS_KEY"] not in out


def test_cluster_without_gpus(cluster: FakeCluster, s3_server: dict[str, str],
                              capsys: pytest.CaptureFixture[str]) -> None:
    # no GPU node, no device plugin, no kfp-launcher; a KFP too old for the exit handler's status
    cluster.routes.update({
        "/api/v1/nodes": {"items": [_node("cpu-1", None), _node("cpu-2", None)]},
        "/apis/apps/v1/daemonsets": {"items": []},
        "/apis/v2beta1/healthz": {"multi_user": False},
        "/apis/v1beta1/healthz": {"tag_name": "2.5.0"},
    })
    checks = _by_name(doctor(kfp_host=cluster.url, timeout=5))
    assert checks["cluster"].status == OK
    gpu = checks["gpu-nodes"]
    assert gpu.status == FAIL and "no node has allocatable nvidia.com/gpu (2 node(s)" in gpu.detail
    assert gpu.fix and "eksctl create nodegroup" in gpu.fix and "splatflow.io/accelerator=nvidia" in gpu.fix
    plugin = checks["device-plugin"]
    assert plugin.status == FAIL and plugin.fix and "manifests/gpu" in plugin.fix
    launcher = checks["kfp-launcher"]
    assert launcher.status == FAIL and "no kfp-launcher ConfigMap in namespace kubeflow" in launcher.detail
    assert launcher.fix and "deploy-onprem" in launcher.fix
    assert checks["bucket"].status == SKIP
    assert checks["kfp-api"].status == FAIL and "2.14" in checks["kfp-api"].detail

    # explicit bucket: reachable with the session's S3 server; a missing bucket is a failure with a fix
    assert _by_name(doctor(bucket_uri=f"s3://{s3_server['bucket']}/x", timeout=5))["bucket"].status == OK
    missing = _by_name(doctor(bucket_uri="s3://no-such-bucket-here/x", timeout=5))["bucket"]
    assert missing.status == FAIL and "does not exist" in missing.detail and missing.fix

    assert main(["doctor", "--kfp-host", cluster.url]) == 3
    out = capsys.readouterr().out
    assert "FAIL  gpu-nodes" in out and "fix: kubectl apply -k manifests/gpu" in out
    assert "4 problem(s) to fix" in out


def test_gpu_node_missing_label_and_plugin_not_ready(cluster: FakeCluster) -> None:
    cluster.routes.update({
        "/api/v1/nodes": {"items": [_node("gpu-1", 1, labelled=False, tainted=False),
                                    _node("gpu-2", 0)]},
        "/apis/apps/v1/daemonsets": {"items": [_daemonset(0, 2)]},
    })
    checks = _by_name(doctor(kfp_host="", timeout=5))
    gpu = checks["gpu-nodes"]
    assert gpu.status == FAIL and gpu.fix is not None
    assert "kubectl label node gpu-1 splatflow.io/accelerator=nvidia" in gpu.fix
    assert "kubectl taint node gpu-1 nvidia.com/gpu=present:NoSchedule" in gpu.fix
    assert checks["device-plugin"].status == FAIL and "0/2 ready" in checks["device-plugin"].detail
    assert checks["kfp-api"].status == SKIP


def test_unreachable_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                             capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("KUBECONFIG", str(_kubeconfig(tmp_path / "kubeconfig", f"http://127.0.0.1:{port}")))
    monkeypatch.delenv("KFP_HOST", raising=False)
    checks = _by_name(doctor(timeout=2))
    assert checks["cluster"].status == FAIL
    assert f"127.0.0.1:{port} does not answer" in checks["cluster"].detail and checks["cluster"].fix
    assert all(checks[n].status == SKIP for n in ("gpu-nodes", "device-plugin", "kfp-launcher", "bucket", "kfp-api"))
    assert main(["doctor", "--json", "--timeout", "2", "--kfp-host", f"http://127.0.0.1:{port}"]) == 3
    report = json.loads(capsys.readouterr().out)
    assert [r["status"] for r in report if r["name"] in ("cluster", "kfp-api")] == [FAIL, FAIL]


def test_no_kubeconfig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    check = _by_name(doctor(kfp_host=""))["cluster"]
    assert check.status == FAIL and "no usable kube context" in check.detail


def test_eks_style_launcher_and_missing_secret(cluster: FakeCluster) -> None:
    """IRSA (fromEnv) needs no Secret; a secretRef to a missing Secret is a failure naming minio.env."""
    eks = _launcher("splatflow-artifacts", "s3.amazonaws.com")
    providers = yaml.safe_load(eks["data"]["providers"])
    providers["s3"]["default"]["credentials"] = {"fromEnv": True}
    eks["data"]["providers"] = yaml.safe_dump(providers)
    path = f"/api/v1/namespaces/{NS}/configmaps/kfp-launcher"
    cluster.routes[path] = eks
    launcher = _by_name(doctor(kfp_host="", timeout=5))["kfp-launcher"]
    assert launcher.status == OK and "IRSA" in launcher.detail and "s3://splatflow-artifacts" in launcher.detail

    cluster.routes[path] = _launcher("mlpipeline", "minio-service.kubeflow:9000")
    launcher = _by_name(doctor(kfp_host="", timeout=5))["kfp-launcher"]
    assert launcher.status == FAIL and "ConfigMap splatflow-storage is missing" in launcher.detail

    storage = f"/api/v1/namespaces/{NS}/configmaps/splatflow-storage"
    cluster.routes[storage] = _storage("http://seaweedfs.kubeflow:8333")  # drifted from the launcher
    launcher = _by_name(doctor(kfp_host="", timeout=5))["kfp-launcher"]
    assert launcher.status == FAIL and "http://seaweedfs.kubeflow:8333" in launcher.detail

    cluster.routes[storage] = _storage("http://minio-service.kubeflow:9000")  # agrees; its Secret is not there
    launcher = _by_name(doctor(kfp_host="", timeout=5))["kfp-launcher"]
    assert launcher.status == FAIL and "splatflow-s3 does not exist" in launcher.detail
    assert launcher.fix and "minio.env" in launcher.fix


def test_kfp_api_errors_and_token(cluster: FakeCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    """An HTTP error names KFP_HOST/KFP_TOKEN in the fix; KFP_TOKEN goes out as a bearer token, never in the report."""
    kfp = FakeCluster()  # no routes: healthz answers 404
    try:
        check = _by_name(doctor(kfp_host=kfp.url, timeout=5))["kfp-api"]
        assert check.status == FAIL and "HTTP 404" in check.detail and check.fix and "KFP_TOKEN" in check.fix
        kfp.routes["/apis/v2beta1/healthz"] = {"multi_user": True}
        monkeypatch.setenv("KFP_TOKEN", "secret-token-value")
        check = _by_name(doctor(kfp_host=kfp.url, timeout=5))["kfp-api"]
        assert check.status == OK and "multi-user" in check.detail and "2.14" in check.detail
        assert "secret-token-value" not in check.detail
        assert kfp.auth[-1] == "Bearer secret-token-value"
    finally:
        kfp.close()


def test_rejected_credentials(cluster: FakeCluster) -> None:
    cluster.routes.pop("/version")  # the fake answers a Status; make it a 401 like a stale token gets
    cluster.status_for["/version"] = 401
    check = _by_name(doctor(kfp_host="", timeout=5))["cluster"]
    assert check.status == FAIL and "refused this user: HTTP 401" in check.detail
    assert check.fix and "update-kubeconfig" in check.fix


# ---------------------------------------------------------------------------- GPU taints
def test_gpu_taint_any_value_is_tolerated(cluster: FakeCluster) -> None:
    """The pipeline tolerates nvidia.com/gpu:NoSchedule with operator Exists: any value (or none) is fine."""
    cluster.routes["/apis/apps/v1/daemonsets"] = {"items": [_daemonset(2, 2)]}
    cluster.routes["/api/v1/nodes"] = {"items": [
        _node("gpu-1", 1, tainted=False, taints=[{"key": "nvidia.com/gpu", "value": "true", "effect": "NoSchedule"}]),
        _node("gpu-2", 1, tainted=False, taints=[{"key": "nvidia.com/gpu", "effect": "NoSchedule"},
                                                 {"key": "spot", "value": "yes", "effect": "PreferNoSchedule"}])]}
    gpu = _by_name(doctor(kfp_host="", timeout=5))["gpu-nodes"]
    assert gpu.status == OK, gpu
    assert "2 GPU node(s)" in gpu.detail and "tainted nvidia.com/gpu:NoSchedule" in gpu.detail


def test_gpu_taints_the_pipeline_does_not_tolerate(cluster: FakeCluster) -> None:
    """Another key, or the GPU key with another effect, keeps the GPU tasks off: each such node and taint is named,
    with the command that removes it."""
    cluster.routes["/api/v1/nodes"] = {"items": [
        _node("gpu-ok", 1),
        _node("gpu-dedicated", 1, taints=[{"key": "dedicated", "value": "ml", "effect": "NoSchedule"}]),
        _node("gpu-evict", 1, tainted=False, taints=[{"key": "nvidia.com/gpu", "value": "present",
                                                      "effect": "NoExecute"}])]}
    gpu = _by_name(doctor(kfp_host="", timeout=5))["gpu-nodes"]
    assert gpu.status == FAIL and gpu.fix is not None
    assert "gpu-dedicated has dedicated=ml:NoSchedule" in gpu.detail
    assert "gpu-evict has nvidia.com/gpu=present:NoExecute" in gpu.detail
    assert "gpu-ok has" not in gpu.detail
    assert "kubectl taint node gpu-dedicated dedicated:NoSchedule-" in gpu.fix
    assert "kubectl taint node gpu-evict nvidia.com/gpu:NoExecute-" in gpu.fix
    # the NoExecute one is not the NoSchedule taint the pipeline expects either
    assert "kubectl taint node gpu-evict nvidia.com/gpu=present:NoSchedule" in gpu.fix
    assert "gpu-ok" not in gpu.fix


def test_tolerates_follows_kubernetes_rules() -> None:
    from splatflow.doctor import tolerates
    from splatflow.spec import GPU

    GPU_TOLERATION = GPU.toleration  # noqa: N806
    gpu = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
    assert tolerates(GPU_TOLERATION, gpu) and tolerates(GPU_TOLERATION, {**gpu, "value": ""})
    assert not tolerates(GPU_TOLERATION, {**gpu, "effect": "NoExecute"})
    assert not tolerates(GPU_TOLERATION, {**gpu, "key": "other"})
    equal = {"key": "nvidia.com/gpu", "operator": "Equal", "value": "present", "effect": "NoSchedule"}
    assert tolerates(equal, gpu) and not tolerates(equal, {**gpu, "value": "true"})
    assert tolerates({"operator": "Exists"}, {**gpu, "key": "anything", "effect": "NoExecute"})
    assert tolerates({"key": "nvidia.com/gpu", "operator": "Exists"}, {**gpu, "effect": "NoExecute"})


# ---------------------------------------------------------------------------- bucket
def test_bucket_roots_without_a_key(cluster: FakeCluster, s3_server: dict[str, str],
                                    monkeypatch: pytest.MonkeyPatch, denying_endpoint: str) -> None:
    """Pipeline roots are often just a bucket or a folder: s3://bucket and s3://bucket/prefix/ are checked on the
    bucket; a missing bucket, denied access and a bad endpoint each fail with their own fix."""
    bucket = s3_server["bucket"]
    for root in (f"s3://{bucket}", f"s3://{bucket}/", f"s3://{bucket}/pipeline-root/"):
        check = _by_name(doctor(bucket_uri=root, kfp_host="", timeout=5))["bucket"]
        assert check.status == OK, (root, check)
        assert f"bucket {bucket} reachable via {s3_server['endpoint']}" in check.detail
    launcher = _launcher(bucket, "minio-service:9000")  # the launcher's root is the bare bucket
    launcher["data"]["defaultPipelineRoot"] = f"s3://{bucket}"
    cluster.routes[f"/api/v1/namespaces/{NS}/configmaps/kfp-launcher"] = launcher
    assert _by_name(doctor(kfp_host="", timeout=5))["bucket"].status == OK

    missing = _by_name(doctor(bucket_uri="s3://no-such-bucket-here", kfp_host="", timeout=5))["bucket"]
    assert missing.status == FAIL and "bucket 'no-such-bucket-here' does not exist" in missing.detail
    assert missing.fix and "aws s3 mb" in missing.fix
    not_s3 = _by_name(doctor(bucket_uri="/data/root", kfp_host="", timeout=5))["bucket"]
    assert not_s3.status == FAIL and "not an s3:// URI" in not_s3.detail

    monkeypatch.setenv("SPLATFLOW_S3_MAX_ATTEMPTS", "1")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", denying_endpoint)
    denied = _by_name(doctor(bucket_uri=f"s3://{bucket}/root/", kfp_host="", timeout=5))["bucket"]
    assert denied.status == FAIL and "access denied" in denied.detail
    assert denied.fix and "s3:ListBucket" in denied.fix
    with socket.socket() as s:  # bound, never listening
        s.bind(("127.0.0.1", 0))
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{s.getsockname()[1]}")
        bad = _by_name(doctor(bucket_uri=f"s3://{bucket}", kfp_host="", timeout=5))["bucket"]
    assert bad.status == FAIL and "cannot be reached" in bad.detail
    assert bad.fix and "port-forward" in bad.fix and "AWS_ENDPOINT_URL_S3" in bad.fix
    assert s3_server["AWS_SECRET_ACCESS_KEY"] not in json.dumps([denied.__dict__, bad.__dict__, missing.__dict__])


def test_task_endpoint_from_the_s3_only_key(cluster: FakeCluster) -> None:
    """The storage ConfigMap now carries AWS_ENDPOINT_URL_S3 (older deployments: AWS_ENDPOINT_URL)."""
    cluster.routes[f"/api/v1/namespaces/{NS}/configmaps/kfp-launcher"] = _launcher("mlpipeline", "minio-service:9000")
    cluster.routes[f"/api/v1/namespaces/{NS}/configmaps/splatflow-storage"] = {
        "metadata": {"name": "splatflow-storage", "namespace": NS},
        "data": {"AWS_ENDPOINT_URL_S3": "http://seaweedfs.kubeflow:8333", "AWS_DEFAULT_REGION": "us-east-1"}}
    launcher = _by_name(doctor(kfp_host="", timeout=5))["kfp-launcher"]
    assert launcher.status == FAIL and "http://seaweedfs.kubeflow:8333 (splatflow-storage AWS_ENDPOINT_URL_S3)" in (
        launcher.detail)


# ---------------------------------------------------------------------------- KFP auth
@pytest.fixture()
def kfp(cluster: FakeCluster) -> Iterator[FakeCluster]:
    fake = FakeCluster()
    fake.routes["/apis/v2beta1/healthz"] = {"multi_user": True}
    fake.routes["/apis/v1beta1/healthz"] = {"tag_name": "2.15.0"}
    try:
        yield fake
    finally:
        fake.close()


def test_kfp_auth_none_token_cookie(kfp: FakeCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    check = _by_name(doctor(kfp_host=kfp.url, timeout=5))["kfp-api"]
    assert check.status == OK and "auth: no credentials" in check.detail
    assert kfp.auth[-1] is None and kfp.cookies[-1] is None
    monkeypatch.setenv("KFP_COOKIE", "oauth2_proxy_kubeflow=cookie-secret")
    check = _by_name(doctor(kfp_host=kfp.url, timeout=5))["kfp-api"]
    assert check.status == OK and "auth: KFP_COOKIE" in check.detail and "cookie-secret" not in check.detail
    assert kfp.cookies[-1] == "oauth2_proxy_kubeflow=cookie-secret" and kfp.auth[-1] is None
    monkeypatch.setenv("KFP_TOKEN", "token-secret")  # with the cookie, as the KFP client sends both
    check = _by_name(doctor(kfp_host=kfp.url, timeout=5))["kfp-api"]
    assert "auth: KFP_TOKEN + KFP_COOKIE" in check.detail and "token-secret" not in check.detail
    assert kfp.auth[-1] == "Bearer token-secret" and kfp.cookies[-1] == "oauth2_proxy_kubeflow=cookie-secret"
    assert kfp.auth[-2] == "Bearer token-secret"  # the version probe (v1beta1) is authenticated too


def test_kfp_auth_service_account_tokens(kfp: FakeCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """KFP_SA_TOKEN_PATH, else the in-cluster projected token; KFP_TOKEN wins over both (as in the KFP client)."""
    in_cluster = tmp_path / "in-cluster-token"
    in_cluster.write_text("in-cluster-secret\n")
    monkeypatch.setattr("splatflow.doctor.IN_CLUSTER_TOKEN", in_cluster)
    check = _by_name(doctor(kfp_host=kfp.url, timeout=5))["kfp-api"]
    assert check.status == OK and f"service-account token {in_cluster}" in check.detail
    assert kfp.auth[-1] == "Bearer in-cluster-secret"
    mounted = tmp_path / "sa-token"
    mounted.write_text("sa-secret")
    monkeypatch.setenv("KFP_SA_TOKEN_PATH", str(mounted))
    _by_name(doctor(kfp_host=kfp.url, timeout=5))
    assert kfp.auth[-1] == "Bearer sa-secret"
    monkeypatch.setenv("KFP_TOKEN", "token-secret")
    _by_name(doctor(kfp_host=kfp.url, timeout=5))
    assert kfp.auth[-1] == "Bearer token-secret"
    monkeypatch.delenv("KFP_TOKEN")
    monkeypatch.setenv("KFP_SA_TOKEN_PATH", str(tmp_path / "not-mounted"))
    calls = len(kfp.requests)
    check = _by_name(doctor(kfp_host=kfp.url, timeout=5))["kfp-api"]
    assert check.status == FAIL and "KFP_SA_TOKEN_PATH" in check.detail and check.fix
    assert len(kfp.requests) == calls  # nothing sent without the credentials asked for
    report = json.dumps([c.__dict__ for c in doctor(kfp_host=kfp.url, timeout=5)])
    assert "sa-secret" not in report and "in-cluster-secret" not in report


def test_kfp_auth_refused_and_login_redirect(kfp: FakeCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    """401/403 name the auth sources; a redirect (a login page in front of KFP) is not followed, so the
    credentials never reach another address."""
    login = FakeCluster()
    try:
        monkeypatch.setenv("KFP_TOKEN", "token-secret")
        kfp.routes.pop("/apis/v2beta1/healthz")
        kfp.status_for["/apis/v2beta1/healthz"] = 401
        check = _by_name(doctor(kfp_host=kfp.url, timeout=5))["kfp-api"]
        assert check.status == FAIL and "refused this shell's credentials (KFP_TOKEN): HTTP 401" in check.detail
        assert check.fix and "KFP_TOKEN, KFP_COOKIE or KFP_SA_TOKEN_PATH" in check.fix
        kfp.redirect_to["/apis/v2beta1/healthz"] = f"{login.url}/dex/auth?state=abc123"
        check = _by_name(doctor(kfp_host=kfp.url, timeout=5))["kfp-api"]
        assert check.status == FAIL and f"redirects (HTTP 302, to {login.url}/dex/auth)" in check.detail
        assert "abc123" not in check.detail and check.fix and "KFP_COOKIE" in check.fix
        assert login.requests == []  # not followed
    finally:
        login.close()



def test_a_gpu_label_changed_in_the_spec_alone_moves_pipeline_and_doctor_and_names_the_manifests(
        cluster: FakeCluster, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """splatflow.spec.GPU is the one place of the GPU facts: the compiled pipeline and doctor follow a change there,
    and the manifests' check names exactly the files that still carry the old label."""
    pytest.importorskip("kfp")
    from kfp import compiler
    from manifest_facts import DEVICE_PLUGIN, EKS_CLUSTER, gpu_manifest_problems

    from splatflow import spec
    from splatflow_kfp.pipelines.splat_pipeline import build_pipeline

    moved = spec.GpuScheduling(node_label=("example.com/gpu-pool", "a10g"), taint=("example.com/gpu", "yes",
                                                                                 "NoSchedule"))
    monkeypatch.setattr(spec, "GPU", moved)
    out = tmp_path / "pipeline.yaml"
    compiler.Compiler().compile(pipeline_func=build_pipeline(), package_path=str(out))
    executors = list(yaml.safe_load_all(out.read_text()))[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for name in ("exec-train", "exec-compress"):
        assert executors[name]["nodeSelector"] == {"labels": {"example.com/gpu-pool": "a10g"}}
        assert executors[name]["tolerations"] == [{"key": "example.com/gpu", "operator": "Exists",
                                                   "effect": "NoSchedule"}]
    assert "nodeSelector" not in executors["exec-sfm"]
    # doctor: a node with the new label and taint passes, one with the old ones is told the new commands
    cluster.routes["/apis/apps/v1/daemonsets"] = {"items": [_daemonset(1, 1)]}
    new = _node("gpu-new", 1, labelled=False, tainted=False,
                taints=[{"key": "example.com/gpu", "value": "yes", "effect": "NoSchedule"}])
    new["metadata"]["labels"]["example.com/gpu-pool"] = "a10g"
    cluster.routes["/api/v1/nodes"] = {"items": [new]}
    assert _by_name(doctor(kfp_host="", timeout=5))["gpu-nodes"].status == OK
    cluster.routes["/api/v1/nodes"] = {"items": [_node("gpu-old", 1)]}
    gpu = _by_name(doctor(kfp_host="", timeout=5))["gpu-nodes"]
    assert gpu.status == FAIL and "kubectl label node gpu-old example.com/gpu-pool=a10g" in gpu.fix
    # the manifests still say splatflow.io/accelerator=nvidia: the check names the two files to edit, and only them
    problems = gpu_manifest_problems(moved)
    assert [p.split(":", 1)[0] for p in problems] == [f"manifests/{EKS_CLUSTER}", f"manifests/{DEVICE_PLUGIN}"]
    assert all("example.com/gpu-pool=a10g" in p for p in problems)
    assert gpu_manifest_problems(spec.GpuScheduling()) == []
