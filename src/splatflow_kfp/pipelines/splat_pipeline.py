"""The pipeline graph: ingest -> sfm -> train -> compress -> publish, inside an exit handler that runs notify.

Scheduling, retries, caching and credentials come from the stage spec (:mod:`splatflow.spec`), per task.
Compile-time settings (read from the environment when this module is imported; the Makefile passes them through):

- image registry and tag: ``SPLATFLOW_REGISTRY``, ``SPLATFLOW_IMAGE_TAG`` (see :mod:`splatflow.spec`);
- Secret / ConfigMap names: ``SPLATFLOW_S3_SECRET`` (default ``splatflow-s3``), ``SPLATFLOW_NOTIFY_SECRET``
  (default ``splatflow-notify``), ``SPLATFLOW_STORAGE_CONFIG`` (default ``splatflow-storage``),
  ``SPLATFLOW_NOTIFY_CONFIG`` (default ``splatflow-notify-config``: notify's non-secret settings). All are
  mounted *optional*, so one compiled pipeline serves EKS (IRSA on the pipeline-runner service account, no S3
  Secret) and on-prem clusters (a MinIO Secret + endpoint ConfigMap). Names only: values never enter the YAML.

Every stage reaches the user's storage: ingest reads the source, publish writes the results, notify reads them
back, and every stage records its failure there (``splatflow.tasks``) so the notification can name it.

Caching across runs: no task takes the run id as an input (it would enter every cache key). Each task reads it
from ``SPLATFLOW_RUN_ID``, which the cluster fills from the pod label ``pipeline/runid`` that the KFP backend puts
on every pod of a run (the downward API; kfp.local runs get the local run's own id from ``splatflow_kfp.pipelines
.local``). ingest is cached on a content fingerprint of the source (the uncached ``ingest-fingerprint`` task lists
and hashes it first), so a second run on the same photos and parameters reuses ingest's output artifact, and sfm,
train and compress, whose cache keys name their input artifacts, are cached too.
"""

# no `from __future__ import annotations`: kfp reads the pipeline function's real annotations
from pathlib import Path

from kfp import compiler, dsl, kubernetes
from kfp.dsl.graph_component import GraphComponent

from splatflow import spec
from splatflow.options import RUN_OPTIONS as OPTIONS
from splatflow.tasks import RUN_ID_ENV
from splatflow_kfp.components.compress import compress
from splatflow_kfp.components.ingest import ingest, ingest_fingerprint
from splatflow_kfp.components.notify import notify
from splatflow_kfp.components.publish import publish
from splatflow_kfp.components.sfm import sfm
from splatflow_kfp.components.train import train

PIPELINE_NAME = "splatflow"

RETRY_BACKOFF = {"backoff_duration": "30s", "backoff_factor": 2.0, "backoff_max_duration": "900s"}

#: where a task's pod reads the run id from (downward API): the label the KFP backend sets on every pod of a run
RUN_ID_FIELD = "metadata.labels['pipeline/runid']"
NAMES = spec.ClusterNames.from_env()


def configure(task: dsl.PipelineTask, stage: str, *, names: spec.ClusterNames = NAMES,
              retries: bool = True) -> dsl.PipelineTask:
    """Apply stage ``stage``'s spec (resources, GPU, retries, caching, timeout), the run id and the credential
    mounts to ``task`` (``retries=False``: no retry policy)."""
    s = spec.stage(stage)
    task.set_display_name(task.name)  # the stage's name (ingest's fingerprint task: ingest-fingerprint)
    task.set_cpu_request(s.cpu[0]).set_cpu_limit(s.cpu[1])
    task.set_memory_request(s.memory[0]).set_memory_limit(s.memory[1])
    task.set_caching_options(s.caching)
    if s.retries and retries:
        task.set_retry(num_retries=s.retries, **RETRY_BACKOFF)
    if s.timeout_s:
        kubernetes.set_timeout(task, s.timeout_s)
    if s.gpu:
        task.set_accelerator_type(spec.GPU.resource).set_accelerator_limit(1)
        kubernetes.add_toleration(task, **spec.GPU.toleration)
        kubernetes.add_node_selector(task, *spec.GPU.node_label)
    kubernetes.use_field_path_as_env(task, RUN_ID_ENV, RUN_ID_FIELD)
    kubernetes.use_secret_as_env(task, names.s3_secret, {k: k for k in names.S3_SECRET_KEYS}, optional=True)
    kubernetes.use_config_map_as_env(task, names.storage_config, {k: k for k in names.STORAGE_CONFIG_KEYS},
                                     optional=True)
    if stage == "notify":
        kubernetes.use_secret_as_env(task, names.notify_secret, {k: k for k in names.NOTIFY_SECRET_KEYS},
                                     optional=True)
        kubernetes.use_config_map_as_env(task, names.notify_config, {k: k for k in names.NOTIFY_CONFIG_KEYS},
                                         optional=True)
    return task


def build_pipeline(*, retries: bool = True) -> GraphComponent:
    """The pipeline graph. ``retries=False`` drops the retry policies: ``kfp.local`` honours them with their
    back-off, which only delays a local run whose failures are deterministic (bad input, no CUDA)."""

    @dsl.pipeline(name=PIPELINE_NAME,
                  description="Photos or a video of a scene in; a compressed 3D Gaussian Splat (SOG), a viewer page "
                              "and a run report out, with a notification on success or failure.")
    def splat_pipeline(source_uri: str, output_uri: str, quality: str = OPTIONS["quality"].default,
                       max_splats: int = OPTIONS["max_splats"].default,
                       iterations: int = OPTIONS["iterations"].default,
                       sh_degree: int = OPTIONS["sh_degree"].default,
                       notify_target: str = OPTIONS["notify_target"].default,
                       target_psnr: float = OPTIONS["target_psnr"].default) -> None:
        """The whole pipeline. ``quality``: tiny | cpu | preview | standard | high (splatflow/presets.py);
        ``iterations`` 0 takes the preset's; ``notify_target`` names a channel, never a secret (empty: default);
        ``target_psnr`` > 0 makes compress write the smallest SOG rendering at least that many dB from the
        trained PLY (0, the default: full precision).

        KFP allows no pipeline outputs from inside an exit handler: the results are what publish writes under
        ``output_uri`` and its ``report`` artifact."""
        done = configure(notify(source_uri=source_uri, output_uri=output_uri, target=notify_target), "notify",
                         retries=retries)
        with dsl.ExitHandler(done, name="splatflow"):
            # every stage gets output_uri: where it records a failure for notify (splatflow.tasks)
            # first: the run's parameters are checked (a bad value from the UI fails here, before ingest and sfm
            # run) and the source is fingerprinted; uncached, as it looks at the source every run
            listed = configure(ingest_fingerprint(source_uri=source_uri, output_uri=output_uri, quality=quality,
                                                  iterations=iterations, max_splats=max_splats, sh_degree=sh_degree,
                                                  notify_target=notify_target, target_psnr=target_psnr),
                               "ingest", retries=retries).set_caching_options(False)
            images = configure(ingest(source_uri=source_uri, source_fingerprint=listed.output, quality=quality,
                                      output_uri=output_uri), "ingest", retries=retries)
            model = configure(sfm(images=images.outputs["images"], quality=quality, output_uri=output_uri), "sfm",
                              retries=retries)
            splats = configure(train(sfm_model=model.outputs["sfm_model"], quality=quality, iterations=iterations,
                                     max_splats=max_splats, sh_degree=sh_degree, output_uri=output_uri), "train",
                               retries=retries)
            sog = configure(compress(model=splats.outputs["model"], target_psnr=target_psnr, output_uri=output_uri),
                            "compress", retries=retries)
            configure(publish(output_uri=output_uri, source_uri=source_uri, sog=sog.outputs["sog"],
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
