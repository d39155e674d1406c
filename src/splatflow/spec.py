"""The stage spec: every fact about a stage in one place, read by the pipeline, the images, doctor, the failure
records, the manifests' tests and ``docs/STAGES.md`` (no kfp here).

One :class:`Stage` per pipeline stage, in pipeline order (:data:`STAGES`): its name (the same across
``images/``, ``splatflow_kfp.components``, the CLI and ``splatflow.stages``), its image and the splatflow extras
that image installs, whether it needs a GPU, its pod resources, retries, caching and timeout, and the file names
inside its output artifacts. :data:`GPU` holds the cluster's GPU scheduling facts (resource, node label, taint);
:class:`ClusterNames` the Secret / ConfigMap names the tasks read credentials from. Adding a stage or changing the
GPU label is one edit here.

Image names: ``<registry>/splatflow-<stage>:<tag>``, registry and tag from the environment at compile time
(``SPLATFLOW_REGISTRY``, default ``ghcr.io/splatflow``; ``SPLATFLOW_IMAGE_TAG``, default the short git commit of
this checkout, else ``latest``); the Makefile fills them from ``REGISTRY`` / ``IMAGE_TAG``.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

__all__ = [
    "CPU_DOCKERFILE", "GPU", "GPU_DOCKERFILE", "STAGES", "STAGE_NAMES", "BuildSpec", "ClusterNames",
    "GpuScheduling", "Stage", "all_images", "build_spec", "build_specs", "git_commit", "image_for", "registry",
    "stage", "tag",
]

CPU_DOCKERFILE = "images/cpu.Dockerfile"
GPU_DOCKERFILE = "images/gpu.Dockerfile"


@dataclass(frozen=True)
class Stage:
    """One pipeline stage.

    ``cpu`` and ``memory`` are Kubernetes (request, limit) pairs; ``timeout_s`` 0 means none; ``caching`` False
    marks a task whose inputs do not name its content (an address, a notification); ``files`` maps a role to the
    file name the stage writes inside its output artifact.
    """

    name: str
    summary: str
    extras: tuple[str, ...]
    cpu: tuple[str, str]
    memory: tuple[str, str]
    gpu: bool = False
    retries: int = 0
    caching: bool = True
    timeout_s: int = 0
    files: dict[str, str] = field(default_factory=dict)

    @property
    def runs_on(self) -> str:
        """``GPU / CPU`` for the GPU stages (they also run on a CPU), else ``CPU``."""
        return "GPU / CPU" if self.gpu else "CPU"


@dataclass(frozen=True)
class GpuScheduling:
    """How GPU tasks reach GPU nodes: the extended resource they request, the node label they select on and the
    taint (key, value, effect) the GPU nodes carry. The tasks tolerate the taint's key with ``Exists``, so nodes
    tainted with any value (or none) still take them."""

    resource: str = "nvidia.com/gpu"
    node_label: tuple[str, str] = ("splatflow.io/accelerator", "nvidia")
    taint: tuple[str, str, str] = ("nvidia.com/gpu", "present", "NoSchedule")

    @property
    def toleration(self) -> dict[str, str]:
        """The toleration of the GPU tasks (``{"key", "operator": "Exists", "effect"}``)."""
        return {"key": self.taint[0], "operator": "Exists", "effect": self.taint[2]}


#: the cluster's GPU scheduling facts (the pipeline, doctor and the manifests' tests read them from here)
GPU = GpuScheduling()

# Sized so that train/compress fit one g4dn.xlarge (4 vCPU, 16 GiB, one T4) next to the node's daemons. Every
# stage records its failure under output_uri, so each image has the storage extra. ingest decodes videos and HEIC
# photos (av, pillow-heif: the sfm extra); compress renders the SOG against the PLY for its report (render).
STAGES: tuple[Stage, ...] = (
    Stage("ingest", "photos, a folder, a .zip, a video or an `s3://` prefix -> validated, de-duplicated images",
          extras=("sfm", "storage"), cpu=("1", "2"), memory=("2Gi", "4Gi"), retries=3, timeout_s=3600,
          files={"images": "images"}),
    Stage("sfm", "COLMAP (pycolmap) structure from motion -> cameras, sparse points, undistorted images",
          extras=("sfm", "storage"), cpu=("2", "4"), memory=("4Gi", "8Gi"), timeout_s=4 * 3600,
          files={"model": "sparse/0", "images": "images"}),
    # a retried train resumes from its checkpoint
    Stage("train", "3D Gaussian Splatting (gsplat on a GPU; a compiled CPU rasterizer on CPU) -> PLY + a contact "
                   "sheet",
          extras=("train", "storage"), cpu=("2", "3"), memory=("8Gi", "12Gi"), gpu=True, retries=2,
          timeout_s=8 * 3600, files={"ply": "splats.ply", "contact_sheet": "contact-sheet.png",
                                     "report": "train-report.json"}),
    Stage("compress", "PLY -> SOG v2 (`.sog` bundle or `meta.json` + WebP), the format PlayCanvas renders on the "
                      "web",
          extras=("render", "storage"), cpu=("2", "3"), memory=("6Gi", "12Gi"), gpu=True, timeout_s=2 * 3600,
          files={"sog": "splats.sog"}),
    Stage("publish", "results, reports and a self-contained viewer page -> `file://` or `s3://`, atomically",
          extras=("storage",), cpu=("500m", "1"), memory=("1Gi", "2Gi"), retries=3, caching=False,
          timeout_s=1800),
    Stage("notify", "Slack-compatible webhook, Amazon SNS or e-mail, on success and on failure",
          extras=("storage",), cpu=("100m", "500m"), memory=("256Mi", "512Mi"), retries=3, caching=False,
          timeout_s=600),
)
STAGE_NAMES: tuple[str, ...] = tuple(s.name for s in STAGES)


def stage(name: str) -> Stage:
    """The spec of stage ``name``; ValueError naming the stages for an unknown one."""
    for s in STAGES:
        if s.name == name:
            return s
    raise ValueError(f"unknown stage {name!r}; the stages are {', '.join(STAGE_NAMES)}")


@dataclass(frozen=True)
class ClusterNames:
    """Names of the Kubernetes objects the tasks read credentials and endpoints from (values stay in the cluster).

    All are mounted optional, so one compiled pipeline serves EKS (IRSA, no S3 Secret) and on-prem clusters (a
    MinIO Secret + endpoint ConfigMap). The keys are the environment variables they fill."""

    s3_secret: str = "splatflow-s3"
    notify_secret: str = "splatflow-notify"
    storage_config: str = "splatflow-storage"
    notify_config: str = "splatflow-notify-config"

    S3_SECRET_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
    STORAGE_CONFIG_KEYS = ("AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION")
    NOTIFY_SECRET_KEYS = ("SPLATFLOW_WEBHOOK_URL", "SPLATFLOW_SMTP_PASSWORD")
    NOTIFY_CONFIG_KEYS = ("SPLATFLOW_LINK_EXPIRES", "SPLATFLOW_NOTIFY_STRICT", "SPLATFLOW_PUBLIC_BASE_URL")

    @classmethod
    def from_env(cls) -> ClusterNames:
        """Names from ``SPLATFLOW_S3_SECRET``, ``SPLATFLOW_NOTIFY_SECRET``, ``SPLATFLOW_STORAGE_CONFIG`` and
        ``SPLATFLOW_NOTIFY_CONFIG`` (compile time), else the defaults."""
        d = cls()
        return cls(s3_secret=os.environ.get("SPLATFLOW_S3_SECRET", d.s3_secret),
                   notify_secret=os.environ.get("SPLATFLOW_NOTIFY_SECRET", d.notify_secret),
                   storage_config=os.environ.get("SPLATFLOW_STORAGE_CONFIG", d.storage_config),
                   notify_config=os.environ.get("SPLATFLOW_NOTIFY_CONFIG", d.notify_config))


# ---- images
DEFAULT_REGISTRY = "ghcr.io/splatflow"
_REPO = Path(__file__).resolve().parents[2]
# Docker reference grammar, simplified: a registry host[:port] with an optional path; a tag of 1-128 chars.
_REGISTRY_RE = re.compile(r"^[a-z0-9]+([._-][a-z0-9]+)*(:[0-9]+)?(/[a-z0-9]+([._-][a-z0-9]+)*)*$")
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


@cache
def git_commit(repo: Path = _REPO) -> str | None:
    """The short commit of ``repo`` (``None`` outside a git checkout or without git)."""
    try:
        out = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short=12", "HEAD"],
                             capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def registry() -> str:
    """The image registry (``SPLATFLOW_REGISTRY``), validated; no trailing slash."""
    value = os.environ.get("SPLATFLOW_REGISTRY", "").strip().rstrip("/") or DEFAULT_REGISTRY
    if not _REGISTRY_RE.match(value):
        raise ValueError(f"SPLATFLOW_REGISTRY={value!r} is not a valid image registry "
                         "(expected e.g. 123456789012.dkr.ecr.eu-west-1.amazonaws.com or registry.local:5000/team)")
    return value


def tag() -> str:
    """The image tag (``SPLATFLOW_IMAGE_TAG``, else the git commit, else ``latest``), validated."""
    value = os.environ.get("SPLATFLOW_IMAGE_TAG", "").strip() or git_commit() or "latest"
    if not _TAG_RE.match(value):
        raise ValueError(f"SPLATFLOW_IMAGE_TAG={value!r} is not a valid image tag "
                         "(letters, digits, '_', '.', '-'; at most 128 characters)")
    return value


def image_for(name: str) -> str:
    """The image of one stage, e.g. ``ghcr.io/splatflow/splatflow-train:3c4b782a1b2c``."""
    s = stage(name)  # an unknown stage is named before a bad registry or tag
    return f"{registry()}/splatflow-{s.name}:{tag()}"


def all_images() -> dict[str, str]:
    """stage -> image, for every stage."""
    return {name: image_for(name) for name in STAGE_NAMES}


@dataclass(frozen=True)
class BuildSpec:
    """How one stage image is built: ``dockerfile`` (relative to the repo root) with ``--build-arg STAGE=stage
    --build-arg EXTRAS=extras``, tagged ``image``."""

    stage: str
    image: str
    dockerfile: str
    extras: tuple[str, ...]

    @property
    def gpu(self) -> bool:
        return self.dockerfile == GPU_DOCKERFILE


def build_spec(name: str, *, cpu_only: bool = False) -> BuildSpec:
    """The build of stage ``name``'s image; ``cpu_only``: the GPU stages from the CPU Dockerfile too (local and CI
    runs on a machine without CUDA, under the same image names)."""
    s = stage(name)
    gpu = s.gpu and not cpu_only
    return BuildSpec(stage=s.name, image=image_for(s.name), dockerfile=GPU_DOCKERFILE if gpu else CPU_DOCKERFILE,
                     extras=s.extras)


def build_specs(*, cpu_only: bool = False) -> list[BuildSpec]:
    """Every stage's build, in pipeline order."""
    return [build_spec(name, cpu_only=cpu_only) for name in STAGE_NAMES]


#: derived views of :data:`STAGES` for the image builder and its tests
GPU_STAGES: tuple[str, ...] = tuple(s.name for s in STAGES if s.gpu)
EXTRAS: dict[str, tuple[str, ...]] = {s.name: s.extras for s in STAGES}


# ---- docs/STAGES.md
_STORAGE_NOTE = """\
Storage (`src/splatflow/storage.py`), used by every stage (ingest reads `s3://` sources, publish writes, each stage
records its failure): `download(uri, local_path)`, `download_prefix(uri, local_dir, only=None) -> list[Path]`,
`upload(local_path, uri)`, `upload_dir(local_dir, uri)`, `exists(uri)`, `stat(uri)`, `list_uris(uri) -> list[str]`,
`list_objects(uri, max_count=None) -> list[ObjectInfo]` (URI, size, S3 ETag), `check_bucket(uri)`,
`read_bytes(uri)`, `write_bytes(uri, data)`, `presign(uri, expires)`; URIs are `s3://bucket/key`, `file:///path` or
plain paths. The S3 endpoint and credentials come only from the standard AWS environment (`AWS_ENDPOINT_URL_S3`,
else `AWS_ENDPOINT_URL`; `AWS_ACCESS_KEY_ID`, ..., IRSA), with path-style addressing when an endpoint is set; other
services (SNS) never take the S3-only endpoint.
"""


def _signature(name: str) -> str:
    """``name(...) -> ...`` of the stage function ``splatflow.stages.<name>.<name>``, as the code declares it."""
    import importlib
    import inspect

    sig = inspect.signature(getattr(importlib.import_module(f"splatflow.stages.{name}"), name))
    parts, star = [], False
    for p in sig.parameters.values():
        if p.kind is p.KEYWORD_ONLY and not star:
            parts.append("*")
            star = True
        text = f"{p.name}: {p.annotation}" if p.annotation is not p.empty else p.name
        parts.append(text if p.default is p.empty else f"{text} = {p.default!r}")
    out = f"{name}({', '.join(parts)}) -> {sig.return_annotation}"
    return out.replace("|", "\\|")


def stages_markdown() -> str:
    """The text of ``docs/STAGES.md``, generated from this module and the stage functions' signatures
    (``python -m splatflow.spec > docs/STAGES.md``; a test keeps the file equal to it)."""
    gpu = GPU
    names = ClusterNames()
    lines = [
        "# Stage contracts (generated from `src/splatflow/spec.py`: `make docs`; do not edit by hand)",
        "",
        "One name per stage in every layer: `splatflow.stages.<stage>` defines the function `<stage>(...)`,",
        "`splatflow <stage>` is its CLI subcommand, `splatflow_kfp.components.<stage>` its KFP component and",
        "`splatflow-<stage>` its image. Stage functions take and return plain Python values (paths, strings, numbers,",
        "dicts); each writes a JSON report beside its output and returns the same dict. They never print secrets and",
        "raise `splatflow.errors` types.",
        "",
        "| stage | what it does | runs on | image (Dockerfile, extras) | CPU request/limit | memory request/limit "
        "| retries | cached | timeout | files in its output artifact |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in STAGES:
        files = ", ".join(f"{role}: `{name}`" for role, name in s.files.items()) or "-"
        timeout = f"{s.timeout_s // 60} min" if s.timeout_s else "-"
        dockerfile = GPU_DOCKERFILE if s.gpu else CPU_DOCKERFILE
        lines.append(f"| {s.name} | {s.summary} | {s.runs_on} | `splatflow-{s.name}` (`{dockerfile}`, "
                     f"{', '.join(s.extras)}) | {s.cpu[0]} / {s.cpu[1]} | {s.memory[0]} / {s.memory[1]} | "
                     f"{s.retries} | {'yes' if s.caching else 'no'} | {timeout} | {files} |")
    lines += ["", "Stage functions (keyword-only options after `*`):", ""]
    lines += [f"- `{_signature(s.name)}`" for s in STAGES]
    lines += [
        "",
        "Cluster facts (the pipeline, doctor and the manifests' tests read them from `splatflow.spec`):",
        f"- GPU tasks request `{gpu.resource}: 1`, select the node label `{gpu.node_label[0]}={gpu.node_label[1]}` "
        f"and tolerate `{gpu.taint[0]}` with effect `{gpu.taint[2]}` and any value (operator `Exists`); GPU nodes "
        f"carry the taint `{gpu.taint[0]}={gpu.taint[1]}:{gpu.taint[2]}` (manifests/eks/cluster.yaml, "
        "manifests/gpu/nvidia-device-plugin.yaml).",
        f"- Credentials and endpoints, mounted optional by name: Secret `{names.s3_secret}` "
        f"({', '.join(names.S3_SECRET_KEYS)}) and ConfigMap `{names.storage_config}` "
        f"({', '.join(names.STORAGE_CONFIG_KEYS)}) in every task; Secret `{names.notify_secret}` "
        f"({', '.join(names.NOTIFY_SECRET_KEYS)}) and ConfigMap `{names.notify_config}` "
        f"({', '.join(names.NOTIFY_CONFIG_KEYS)}) in notify.",
        "- The run id reaches every task as `SPLATFLOW_RUN_ID` from the pod label `pipeline/runid` (the downward "
        "API), never as a task input, so it enters no cache key; ingest is cached on the source's content "
        "fingerprint (the uncached `ingest-fingerprint` task).",
        "- Images: `<registry>/splatflow-<stage>:<tag>`, computed in `src/splatflow/spec.py` only.",
        "",
        _STORAGE_NOTE.rstrip(),
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":  # `python -m splatflow.spec` prints docs/STAGES.md; `--images [--cpu]` the image builds
    import sys

    if "--images" in sys.argv[1:]:
        for _build in build_specs(cpu_only="--cpu" in sys.argv[1:]):
            print(_build.stage, _build.image, _build.dockerfile, ",".join(_build.extras))
    else:
        sys.stdout.write(stages_markdown())
