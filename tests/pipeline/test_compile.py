"""The compiled pipeline (KFP IR YAML): stages, GPU scheduling, exit handler, caching, retries, credentials."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from kfp_testing import FAKE_SECRETS, GOLDEN_REGISTRY, GOLDEN_TAG

from splatflow import spec as stage_spec
from splatflow.tasks import RUN_ID_ENV

STAGES = stage_spec.STAGE_NAMES
BODY = tuple(s for s in STAGES if s != "notify")
GPU = stage_spec.GPU_STAGES
#: every task: the stages, and ingest's fingerprint task (it runs the ingest image)
TASKS = (*STAGES, "ingest-fingerprint")
GOLDEN = Path(__file__).parent / "golden" / "pipeline.yaml"

Spec = tuple[dict[str, Any], dict[str, Any]]


def _body_tasks(spec: dict[str, Any]) -> dict[str, Any]:
    return dict(spec["components"]["comp-exit-handler-1"]["dag"]["tasks"])


def _task(spec: dict[str, Any], stage: str) -> dict[str, Any]:
    return dict(spec["root"]["dag"]["tasks"]["notify"] if stage == "notify" else _body_tasks(spec)[stage])


def _stage_of(task: str) -> str:
    return task.removesuffix("-fingerprint")


def _container(spec: dict[str, Any], stage: str) -> dict[str, Any]:
    return dict(spec["deploymentSpec"]["executors"][f"exec-{stage}"]["container"])


def test_every_stage_runs_its_own_image_and_calls_its_stage_function(compiled: Spec) -> None:
    spec, _ = compiled
    assert set(spec["deploymentSpec"]["executors"]) == {f"exec-{s}" for s in TASKS}
    for task in TASKS:
        stage = _stage_of(task)
        container = _container(spec, task)
        assert container["image"] == f"{GOLDEN_REGISTRY}/splatflow-{stage}:{GOLDEN_TAG}"
        program = "\n".join(container["command"] + container.get("args", []))
        assert f"from splatflow.stages.{stage} import " in program, task
        if task == stage:  # the stage function under the one pattern: `from splatflow.stages.X import X as run_X`
            assert f"from splatflow.stages.{stage} import {stage} as run_{stage}" in program, stage
        assert "splatflow_kfp" not in program  # the logic lives in the core library
        # install_kfp_package=False: the image has kfp; pods never pip-install at start-up
        assert "pip install" not in program


def test_graph_is_ingest_sfm_train_compress_publish_inside_the_exit_handler(compiled: Spec) -> None:
    spec, _ = compiled
    body = _body_tasks(spec)
    assert set(body) == {*BODY, "ingest-fingerprint"}
    assert "dependentTasks" not in body["ingest-fingerprint"]
    assert body["ingest"]["dependentTasks"] == ["ingest-fingerprint"]
    assert body["ingest"]["inputs"]["parameters"]["source_fingerprint"] == {
        "taskOutputParameter": {"outputParameterKey": "Output", "producerTask": "ingest-fingerprint"}}
    assert body["sfm"]["dependentTasks"] == ["ingest"]
    assert body["train"]["dependentTasks"] == ["sfm"]
    assert body["compress"]["dependentTasks"] == ["train"]
    assert set(body["publish"]["dependentTasks"]) == {"ingest", "sfm", "train", "compress"}
    arts = {s: body[s]["inputs"].get("artifacts", {}) for s in BODY}
    assert arts["sfm"]["images"]["taskOutputArtifact"] == {"outputArtifactKey": "images", "producerTask": "ingest"}
    assert arts["train"]["sfm_model"]["taskOutputArtifact"]["producerTask"] == "sfm"
    assert arts["compress"]["model"]["taskOutputArtifact"]["producerTask"] == "train"
    assert arts["publish"]["sog"]["taskOutputArtifact"]["producerTask"] == "compress"


def test_artifacts_are_typed_for_lineage(compiled: Spec) -> None:
    spec, _ = compiled
    outputs = {s: spec["components"][f"comp-{s}"]["outputDefinitions"]["artifacts"] for s in BODY}
    types = {(s, name): a["artifactType"]["schemaTitle"] for s, arts in outputs.items() for name, a in arts.items()}
    assert types == {("ingest", "images"): "system.Dataset", ("sfm", "sfm_model"): "system.Dataset",
                     ("train", "model"): "system.Model", ("compress", "sog"): "system.Artifact",
                     ("publish", "report"): "system.Artifact"}


def test_exit_handler_runs_notify_with_the_final_status(compiled: Spec) -> None:
    spec, _ = compiled
    root = spec["root"]["dag"]["tasks"]
    assert set(root) == {"exit-handler-1", "notify"}
    notify = root["notify"]
    assert notify["triggerPolicy"]["strategy"] == "ALL_UPSTREAM_TASKS_COMPLETED"
    assert notify["dependentTasks"] == ["exit-handler-1"]
    assert notify["inputs"]["parameters"]["status"] == {"taskFinalStatus": {"producerTask": "exit-handler-1"}}
    assert notify["inputs"]["parameters"]["target"] == {"componentInputParameter": "notify_target"}
    output_uri = {"componentInputParameter": "pipelinechannel--output_uri"}
    for task in (*BODY, "ingest-fingerprint"):  # each records its failure where notify looks for it
        params = _body_tasks(spec)[task]["inputs"]["parameters"]
        assert params["output_uri"] == output_uri, task
        program = "\n".join(_container(spec, task)["command"])
        assert f'with record_failure("{_stage_of(task)}", output_uri):' in program, task


def test_every_task_reads_the_run_id_from_its_pod_label_not_from_an_input(compiled: Spec, compiled_yaml: str) -> None:
    """The run id reaches each task through the downward API (the label the KFP backend puts on every pod of a
    run), so publish, notify and the failure records agree on it and it enters no cache key."""
    spec, platform = compiled
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for task in TASKS:
        assert executors[f"exec-{task}"]["fieldPathAsEnv"] == [
            {"name": RUN_ID_ENV, "fieldPath": "metadata.labels['pipeline/runid']"}], task
    assert "pipeline_job_uuid" not in compiled_yaml and "run_id:" not in compiled_yaml.split("---")[0]


def _run_dependent(value: Any) -> bool:
    """Whether a compiled input or command holds a value that differs from run to run (a run placeholder)."""
    return bool(re.search(r"\{\{\$\.pipeline_(job|task)_(uuid|name|id)|\{\{workflow\.", yaml.safe_dump(value)))


def test_two_runs_on_the_same_inputs_give_sfm_train_and_compress_the_same_cache_key(compiled: Spec) -> None:
    """KFP's cache key (backend/src/v2/cacheutils: GenerateCacheKey) is the task's input parameter values, the ids of
    its input artifacts, its output specs, image and command. No cached task's inputs or command hold a run
    placeholder, ingest's inputs are the source, its content fingerprint and pipeline parameters, and each later
    stage's artifacts come from a cached producer: two runs on the same photos and parameters share every key."""
    spec, _ = compiled
    body = _body_tasks(spec)
    cached = {t for t in body if body[t].get("cachingOptions", {}).get("enableCache")}
    assert cached == {"ingest", "sfm", "train", "compress"}
    for task in cached:
        assert not _run_dependent(body[task]["inputs"]), task
        assert not _run_dependent(_container(spec, task)), task
        for art in body[task]["inputs"].get("artifacts", {}).values():
            assert art["taskOutputArtifact"]["producerTask"] in cached, task
    sources = {k: v.get("componentInputParameter") or v["taskOutputParameter"]["producerTask"]
               for k, v in body["ingest"]["inputs"]["parameters"].items()}
    assert sources == {"source_uri": "pipelinechannel--source_uri", "quality": "pipelinechannel--quality",
                       "output_uri": "pipelinechannel--output_uri", "source_fingerprint": "ingest-fingerprint"}


def test_ui_parameters_are_few_with_defaults(compiled: Spec) -> None:
    spec, _ = compiled
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert set(params) == {"source_uri", "output_uri", "quality", "max_splats", "iterations", "sh_degree",
                           "notify_target", "target_psnr"}
    required = {k for k, v in params.items() if not v.get("isOptional")}
    assert required == {"source_uri", "output_uri"}
    assert params["quality"]["defaultValue"] == "standard"
    assert params["iterations"]["defaultValue"] == 0
    assert params["sh_degree"]["defaultValue"] == 3
    assert params["max_splats"]["defaultValue"] == 1_000_000
    assert params["target_psnr"]["defaultValue"] == 0.0  # compress at full precision unless asked


def test_gpu_stages_request_a_gpu_tolerate_the_taint_and_select_gpu_nodes(compiled: Spec) -> None:
    spec, platform = compiled
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert set(GPU) == {"train", "compress"}
    for stage in STAGES:
        resources = _container(spec, stage)["resources"]
        k8s = executors.get(f"exec-{stage}", {})
        if stage in GPU:
            assert resources["accelerator"]["resourceType"] == stage_spec.GPU.resource
            assert resources["accelerator"]["resourceCount"] == "1"
            # Exists: a GPU taint with any value (or none) is tolerated
            assert k8s["tolerations"] == [{"key": stage_spec.GPU.taint[0], "operator": "Exists",
                                           "effect": stage_spec.GPU.taint[2]}]
            assert k8s["nodeSelector"] == {"labels": dict([stage_spec.GPU.node_label])}
        else:
            assert "accelerator" not in resources, stage
            assert "tolerations" not in k8s and "nodeSelector" not in k8s, stage


def test_every_task_has_cpu_and_memory_requests_and_limits(compiled: Spec) -> None:
    spec, _ = compiled
    for stage in TASKS:
        r = _container(spec, stage)["resources"]
        assert (r["resourceCpuRequest"], r["resourceCpuLimit"]) == stage_spec.stage(_stage_of(stage)).cpu, stage
        for key in ("resourceCpuRequest", "resourceCpuLimit", "resourceMemoryRequest", "resourceMemoryLimit"):
            assert r.get(key), f"{stage} has no {key}"
        assert r["cpuRequest"] <= r["cpuLimit"] and r["memoryRequest"] <= r["memoryLimit"], stage


def test_caching_and_retries_as_designed(compiled: Spec) -> None:
    spec, _ = compiled
    caching = {s: bool(_task(spec, s).get("cachingOptions", {}).get("enableCache")) for s in STAGES}
    # ingest is cached on the source's content fingerprint; the fingerprint task looks at the source every run
    assert caching == {"ingest": True, "sfm": True, "train": True, "compress": True, "publish": False,
                       "notify": False}
    assert caching == {s.name: s.caching for s in stage_spec.STAGES}
    assert not _body_tasks(spec)["ingest-fingerprint"].get("cachingOptions", {}).get("enableCache")
    retries = {s: _task(spec, s).get("retryPolicy", {}).get("maxRetryCount", 0) for s in STAGES}
    assert {s for s, n in retries.items() if n} == {"ingest", "train", "publish", "notify"}
    assert retries == {s.name: s.retries for s in stage_spec.STAGES}
    assert all(n >= 2 for s, n in retries.items() if n)
    assert _task(spec, "ingest")["retryPolicy"]["backoffDuration"] == "30s"


def test_credentials_come_from_optional_secrets_by_name_only(compiled: Spec, compiled_yaml: str) -> None:
    _, platform = compiled
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    mounted = {s: sorted(x["secretName"] for x in executors.get(f"exec-{s}", {}).get("secretAsEnv", []))
               for s in STAGES}
    assert mounted["ingest"] == sorted(x["secretName"] for x in executors["exec-ingest-fingerprint"]["secretAsEnv"])
    # every stage reaches the storage (failure records), notify also its Secret
    assert mounted == {"ingest": ["splatflow-s3"], "sfm": ["splatflow-s3"], "train": ["splatflow-s3"],
                       "compress": ["splatflow-s3"], "publish": ["splatflow-s3"],
                       "notify": ["splatflow-notify", "splatflow-s3"]}
    for stage in STAGES:
        for mount in executors[f"exec-{stage}"]["secretAsEnv"]:
            assert mount["optional"] is True  # EKS runs on IRSA without the S3 Secret
            assert all(k["secretKey"] == k["envVar"] for k in mount["keyToEnv"])
        config = executors[f"exec-{stage}"]["configMapAsEnv"]
        for mount in config:
            assert mount["optional"] is True
            assert all(k["configMapKey"] == k["envVar"] for k in mount["keyToEnv"])
        names = [c["configMapName"] for c in config]
        assert names == (["splatflow-storage", "splatflow-notify-config"] if stage == "notify"
                         else ["splatflow-storage"]), stage
    notify_config = executors["exec-notify"]["configMapAsEnv"][1]
    assert {k["envVar"] for k in notify_config["keyToEnv"]} == {
        "SPLATFLOW_LINK_EXPIRES", "SPLATFLOW_NOTIFY_STRICT", "SPLATFLOW_PUBLIC_BASE_URL"}
    for name, value in FAKE_SECRETS.items():
        assert value not in compiled_yaml, f"the value of {name} leaked into the compiled pipeline"
    assert not re.search(r"(?i)(password|secret|token)\s*:\s*\S", compiled_yaml.split("---")[0]), \
        "a secret-looking key carries a value in the pipeline spec"


def _normalise(text: str) -> str:
    return re.sub(r"sdkVersion: kfp-[0-9][^\s]*", "sdkVersion: kfp-VERSION", text)


def test_compiled_yaml_matches_the_golden_file(compiled_yaml: str) -> None:
    """Guards against accidental change. After an intended one: SPLATFLOW_UPDATE_GOLDEN=1 pytest this test."""
    got = _normalise(compiled_yaml)
    if os.environ.get("SPLATFLOW_UPDATE_GOLDEN") == "1":
        GOLDEN.write_text(got)
    assert GOLDEN.exists(), "no golden file: run with SPLATFLOW_UPDATE_GOLDEN=1 once and review it"
    want = GOLDEN.read_text()
    if got != want:
        import difflib

        diff = "".join(difflib.unified_diff(want.splitlines(True), got.splitlines(True), "golden", "compiled", n=2))
        pytest.fail(f"compiled pipeline differs from {GOLDEN.name} (SPLATFLOW_UPDATE_GOLDEN=1 to accept):\n"
                    f"{diff[:6000]}")


def test_the_first_task_checks_every_run_parameter(compiled: Spec, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A bad value typed into the Kubeflow UI (no pre-upload check there) fails in the first task, before ingest
    and sfm run: ingest-fingerprint takes every tunable pipeline parameter and checks it with splatflow.options."""
    from splatflow.errors import InputError
    from splatflow.options import RUN_OPTIONS
    from splatflow_kfp.components.ingest import ingest_fingerprint

    spec, _ = compiled
    params = _body_tasks(spec)["ingest-fingerprint"]["inputs"]["parameters"]
    assert {k: v["componentInputParameter"] for k, v in params.items() if k in RUN_OPTIONS} == {
        name: f"pipelinechannel--{name}" for name in RUN_OPTIONS}
    assert set(spec["root"]["inputDefinitions"]["parameters"]) == {"source_uri", "output_uri", *RUN_OPTIONS}
    defaults = {k: v.get("defaultValue") for k, v in spec["root"]["inputDefinitions"]["parameters"].items()}
    assert {k: defaults[k] for k in RUN_OPTIONS} == {k: o.default for k, o in RUN_OPTIONS.items()}
    monkeypatch.setenv(RUN_ID_ENV, "run-1")
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "a.jpg").write_bytes(b"not really a photo")
    good = {"quality": "cpu", "iterations": 0, "max_splats": 1000, "sh_degree": 1, "notify_target": "",
            "target_psnr": 0.0}
    out = tmp_path / "out"
    assert ingest_fingerprint.python_func(source_uri=str(photos), output_uri=out.as_uri(), **good).startswith("sha256:")
    with pytest.raises(InputError, match="max_splats 0 is out of range"):
        ingest_fingerprint.python_func(source_uri=str(photos), output_uri=out.as_uri(), **{**good, "max_splats": 0})
    # and the failure is recorded for the notification, as for any stage
    record = out / ".splatflow" / "runs" / "run-1" / "failed" / "ingest.json"
    assert "max_splats 0 is out of range" in record.read_text()
