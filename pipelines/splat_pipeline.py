"""The pipeline graph: ingest -> sfm -> train -> compress -> publish, inside an exit handler that runs notify.

Scheduling, retries, caching and credentials are set here, per task, from the tables below. Compile-time settings
(read from the environment when this module is imported; the Makefile passes them through):

- image registry and tag: ``SPLATFLOW_REGISTRY``, ``SPLATFLOW_IMAGE_TAG`` (see ``components.images``);
- Secret / ConfigMap names: ``SPLATFLOW_S3_SECRET`` (default ``splatflow-s3``), ``SPLATFLOW_NOTIFY_SECRET``
  (default ``splatflow-notify``), ``SPLATFLOW_STORAGE_CONFIG`` (default ``splatflow-storage``),
  ``SPLATFLOW_NOTIFY_CONFIG`` (default ``splatflow-notify-config``: notify's non-secret settings). All are
  mounted *optional*, so one compiled pipeline serves EKS (IRSA on the pipeline-runner service account, no S3
  Secret) and on-prem clusters (a MinIO Secret + endpoint ConfigMap). Names only: values never enter the YAML.

Every stage reaches the user's storage: ingest reads the source, publish writes the results, notify reads them
back, and every stage records its failure there (``splatflow.tasks``) so the notification can name it.
"""

# no `from __future__ import annotations`: kfp reads the pipeline function's real annotations
import os
from dataclasses import dataclass
from pathlib import Path

from components.compress import compress
from components.ingest import ingest
from components.notify import notify
from components.publish import publish
from components.sfm import sfm
from components.train import train
from kfp import compiler, dsl, kubernetes
from kfp.dsl.graph_component import GraphComponent

from splatflow.presets import DEFAULT_QUALITY

PIPELINE_NAME = "splatflow"

# Cluster facts shared with the manifests (docs/STAGES.md); tests check that they agree.
GPU_RESOURCE = "nvidia.com/gpu"
# Exists, not Equal: GPU nodes tainted nvidia.com/gpu with any value (or none) still take the GPU tasks.
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
GPU_NODE_LABEL = ("splatflow.io/accelerator", "nvidia")


@dataclass(frozen=True)
class TaskPolicy:
    """How one stage's pod is scheduled: CPU/memory requests and limits, GPU, retries, caching, timeout (s)."""

    cpu: tuple[str, str]
    memory: tuple[str, str]
    gpu: bool = False
    retries: int = 0
    caching: bool = True
    timeout_s: int = 0


# Sized so that train/compress fit one g4dn.xlarge (4 vCPU, 16 GiB, one T4) next to the node's daemons.
# ingest is not cached: its inputs are an address and a preset, and new photos at the same address must be read.
POLICIES: dict[str, TaskPolicy] = {
    "ingest": TaskPolicy(cpu=("1", "2"), memory=("2Gi", "4Gi"), retries=3, caching=False, timeout_s=3600),
    "sfm": TaskPolicy(cpu=("2", "4"), memory=("4Gi", "8Gi"), timeout_s=4 * 3600),
    # a retried train resumes from its checkpoint
    "train": TaskPolicy(cpu=("2", "3"), memory=("8Gi", "12Gi"), gpu=True, retries=2, timeout_s=8 * 3600),
    "compress": TaskPolicy(cpu=("2", "3"), memory=("6Gi", "12Gi"), gpu=True, timeout_s=2 * 3600),
    "publish": TaskPolicy(cpu=("500m", "1"), memory=("1Gi", "2Gi"), retries=3, caching=False, timeout_s=1800),
    "notify": TaskPolicy(cpu=("100m", "500m"), memory=("256Mi", "512Mi"), retries=3, caching=False, timeout_s=600),
}
RETRY_BACKOFF = {"backoff_duration": "30s", "backoff_factor": 2.0, "backoff_max_duration": "900s"}

# Secret / ConfigMap keys -> environment variables (the keys are the variable names; values stay in the cluster).
S3_SECRET_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
STORAGE_CONFIG_KEYS = ("AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION")
NOTIFY_SECRET_KEYS = ("SPLATFLOW_WEBHOOK_URL", "SPLATFLOW_SMTP_PASSWORD")
NOTIFY_CONFIG_KEYS = ("SPLATFLOW_LINK_EXPIRES", "SPLATFLOW_NOTIFY_STRICT", "SPLATFLOW_PUBLIC_BASE_URL")
# stages that reach object storage with the user's credentials (KFP moves artifacts with its own): all of them,
# since each records its failure under output_uri
S3_STAGES = ("ingest", "sfm", "train", "compress", "publish", "notify")


@dataclass(frozen=True)
class ClusterNames:
    """Names of the Kubernetes objects the pipeline reads credentials and endpoints from (compile-time)."""

    s3_secret: str
    notify_secret: str
    storage_config: str
    notify_config: str

    @classmethod
    def from_env(cls) -> "ClusterNames":
        return cls(s3_secret=os.environ.get("SPLATFLOW_S3_SECRET", "splatflow-s3"),
                   notify_secret=os.environ.get("SPLATFLOW_NOTIFY_SECRET", "splatflow-notify"),
                   storage_config=os.environ.get("SPLATFLOW_STORAGE_CONFIG", "splatflow-storage"),
                   notify_config=os.environ.get("SPLATFLOW_NOTIFY_CONFIG", "splatflow-notify-config"))


NAMES = ClusterNames.from_env()


def configure(task: dsl.PipelineTask, stage: str, *, names: ClusterNames = NAMES,
              retries: bool = True) -> dsl.PipelineTask:
    """Apply ``POLICIES[stage]`` and the credential mounts to ``task`` (``retries=False``: no retry policy)."""
    policy = POLICIES[stage]
    task.set_display_name(stage)
    task.set_cpu_request(policy.cpu[0]).set_cpu_limit(policy.cpu[1])
    task.set_memory_request(policy.memory[0]).set_memory_limit(policy.memory[1])
    task.set_caching_options(policy.caching)
    if policy.retries and retries:
        task.set_retry(num_retries=policy.retries, **RETRY_BACKOFF)
    if policy.timeout_s:
        kubernetes.set_timeout(task, policy.timeout_s)
    if policy.gpu:
        task.set_accelerator_type(GPU_RESOURCE).set_accelerator_limit(1)
        kubernetes.add_toleration(task, **GPU_TOLERATION)
        kubernetes.add_node_selector(task, *GPU_NODE_LABEL)
    if stage in S3_STAGES:
        kubernetes.use_secret_as_env(task, names.s3_secret, {k: k for k in S3_SECRET_KEYS}, optional=True)
        kubernetes.use_config_map_as_env(task, names.storage_config, {k: k for k in STORAGE_CONFIG_KEYS},
                                         optional=True)
    if stage == "notify":
        kubernetes.use_secret_as_env(task, names.notify_secret, {k: k for k in NOTIFY_SECRET_KEYS}, optional=True)
        kubernetes.use_config_map_as_env(task, names.notify_config, {k: k for k in NOTIFY_CONFIG_KEYS},
                                         optional=True)
    return task


def build_pipeline(*, retries: bool = True) -> GraphComponent:
    """The pipeline graph. ``retries=False`` drops the retry policies: ``kfp.local`` honours them with their
    back-off, which only delays a local run whose failures are deterministic (bad input, no CUDA)."""

    @dsl.pipeline(name=PIPELINE_NAME,
                  description="Photos or a video of a scene in; a compressed 3D Gaussian Splat (SOG), a viewer page "
                              "and a run report out, with a notification on success or failure.")
    def splat_pipeline(source_uri: str, output_uri: str, quality: str = DEFAULT_QUALITY,
                       max_splats: int = 1_000_000, iterations: int = 0, sh_degree: int = 3,
                       notify_target: str = "", target_psnr: float = 0.0) -> None:
        """The whole pipeline. ``quality``: tiny | cpu | preview | standard | high (splatflow/presets.py);
        ``iterations`` 0 takes the preset's; ``notify_target`` names a channel, never a secret (empty: default);
        ``target_psnr`` > 0 makes compress write the smallest SOG rendering at least that many dB from the
        trained PLY (0, the default: full precision).

        KFP allows no pipeline outputs from inside an exit handler: the results are what publish writes under
        ``output_uri`` and its ``report`` artifact."""
        run_id = dsl.PIPELINE_JOB_ID_PLACEHOLDER
        done = configure(notify(source_uri=source_uri, output_uri=output_uri, run_id=run_id, target=notify_target),
                         "notify", retries=retries)
        with dsl.ExitHandler(done, name="splatflow"):
            # every stage gets output_uri and run_id: where it records a failure for notify (splatflow.tasks). The
            # run id is part of a task's cache key, so sfm/train/compress caching no longer carries across runs
            # (with ingest uncached, their input artifacts are new each run anyway).
            run = {"output_uri": output_uri, "run_id": run_id}
            images = configure(ingest(source_uri=source_uri, quality=quality, **run), "ingest", retries=retries)
            model = configure(sfm(images=images.outputs["images"], quality=quality, **run), "sfm", retries=retries)
            splats = configure(train(sfm_model=model.outputs["sfm_model"], quality=quality, iterations=iterations,
                                     max_splats=max_splats, sh_degree=sh_degree, **run), "train", retries=retries)
            sog = configure(compress(model=splats.outputs["model"], target_psnr=target_psnr, **run), "compress",
                            retries=retries)
            configure(publish(output_uri=output_uri, source_uri=source_uri, run_id=run_id, sog=sog.outputs["sog"],
                              model=splats.outputs["model"],
                              ingest_report=images.outputs["Output"], sfm_report=model.outputs["Output"],
                              train_report=splats.outputs["Output"], compress_report=sog.outputs["Output"]),
                      "publish", retries=retries)

    return splat_pipeline


splat_pipeline = build_pipeline()


def compile_pipeline(path: Path | str) -> Path:
    """Compile ``splat_pipeline`` to the KFP IR YAML at ``path`` (parent folders created)."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(pipeline_func=splat_pipeline, package_path=str(out))
    return out
