"""Stage images, checked statically (CI also builds and runs them: tests/images, `make test-images`): one CPU and one
GPU Dockerfile, the stage chosen by build arguments from src/splatflow/spec.py; the images `make images` builds are
exactly the ones the compiled pipeline names; every base pinned (and overridable); a non-root USER and no compilers
in the final stage; CUDA builds for the GPU stages; every COPY source present in the build context (the repo root,
filtered by .dockerignore); kfp baked in at the version the pipeline compiles with.

Dockerfiles are parsed with `dockerfile` (Docker's own Go parser, via PyPI).
"""

from __future__ import annotations

import ast
import fnmatch
import importlib.metadata
import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import dockerfile
import pytest
import yaml

from splatflow.spec import CPU_DOCKERFILE, EXTRAS, GPU_DOCKERFILE, GPU_STAGES, BuildSpec, build_specs
from splatflow.spec import STAGE_NAMES as STAGES

ROOT = Path(__file__).resolve().parents[2]
IMAGES = ROOT / "images"
DOCKERFILES = {Path(CPU_DOCKERFILE).name: ROOT / CPU_DOCKERFILE, Path(GPU_DOCKERFILE).name: ROOT / GPU_DOCKERFILE}
ARCHS = "7.5;8.0;8.6;8.9;9.0"
COMPILERS = re.compile(r"\b(build-essential|gcc|g\+\+|clang|cmake|make|ninja|nvcc|cuda-nvcc[-\d.]*|"
                       r"[a-z0-9.+-]+-dev|cuda-toolkit[-\d]*|libcudnn\d*-dev)\b")
# every stage records its failure under output_uri (splatflow.tasks), so every image needs storage (boto3);
# compress renders the SOG against the PLY for its report (render)
NEEDED_EXTRAS = {"ingest": {"storage"}, "sfm": {"sfm", "storage"}, "train": {"train", "storage"},
                 "compress": {"render", "storage"}, "publish": {"storage"}, "notify": {"storage"}}


@dataclass
class Stage:
    """One build stage: its base image (build arguments resolved to their defaults), name, instructions as
    (command, flags, values)."""

    base: str
    name: str | None
    instructions: list[tuple[str, tuple[str, ...], tuple[str, ...]]] = field(default_factory=list)
    raw_base: str = ""

    def values(self, cmd: str) -> list[tuple[str, ...]]:
        return [v for c, _, v in self.instructions if c == cmd]

    def runs(self) -> str:
        return "\n".join(v[0] for v in self.values("RUN"))

    def env(self) -> dict[str, str]:
        """ENV settings (the parser gives each ENV as key, value, key, value ...)."""
        out: dict[str, str] = {}
        for v in self.values("ENV"):
            out.update(zip(v[::2], v[1::2], strict=True))
        return out

    def args(self) -> dict[str, str]:
        return dict(v[0].split("=", 1) for v in self.values("ARG") if "=" in v[0])


def _global_args(path: Path) -> dict[str, str]:
    """The ARGs before the first FROM, with their defaults (what FROM ${...} resolves to without --build-arg)."""
    out: dict[str, str] = {}
    for c in dockerfile.parse_file(str(path)):
        if c.cmd.upper() == "FROM":
            break
        if c.cmd.upper() == "ARG" and "=" in c.value[0]:
            key, value = c.value[0].split("=", 1)
            out[key] = value
    return out


def _stages(path: Path) -> list[Stage]:
    args = _global_args(path)
    stages: list[Stage] = []
    for c in dockerfile.parse_file(str(path)):
        cmd = c.cmd.upper()
        if cmd == "FROM":
            v = c.value
            base = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), v[0])
            stages.append(Stage(base=base, raw_base=v[0], name=v[2] if len(v) >= 3 and v[1].upper() == "AS" else None))
        elif stages:
            stages[-1].instructions.append((cmd, tuple(c.flags), tuple(c.value)))
    assert stages, f"{path}: no FROM"
    return stages


def _stage_names_in_docs() -> list[str]:
    text = (ROOT / "docs" / "STAGES.md").read_text()
    return re.findall(r"^- `(\w+)\(", text, flags=re.M)  # the stage functions' signatures


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _dockerignored(rel: str) -> bool:
    """Docker's .dockerignore rule order: the last matching pattern wins; `!` re-includes; a pattern that
    matches a parent folder covers what is inside it."""
    rules = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()
             if ln.strip() and not ln.lstrip().startswith("#")]
    parts = rel.strip("/").split("/")
    candidates = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    ignored = False
    for rule in rules:
        negate = rule.startswith("!")
        pattern = rule.lstrip("!").strip("/")
        if pattern.startswith("**/"):
            hit = any(fnmatch.fnmatch(part, pattern[3:]) for part in parts)
        else:
            hit = any(fnmatch.fnmatchcase(c, pattern) and c.count("/") == pattern.count("/") for c in candidates)
        if hit:
            ignored = not negate
    return ignored


def _compiled_images(tmp_path: Path, env: dict[str, str]) -> set[str]:
    """The images the compiled pipeline names (``python -m splatflow_kfp.pipelines compile`` in a fresh process
    with ``env``)."""
    out = tmp_path / "pipeline.yaml"
    proc = subprocess.run([sys.executable, "-m", "splatflow_kfp.pipelines", "compile", "--output", str(out)], cwd=ROOT,
                          env={**os.environ, **env}, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    spec = next(yaml.safe_load_all(out.read_text()))
    return {ex["container"]["image"] for ex in spec["deploymentSpec"]["executors"].values()}


def _built_by(command: list[str], env: dict[str, str], checks: list[list[str]] | None = None) -> dict[str, str]:
    """Run a dry build (``make images DRY_RUN=1`` or ``images/build.py --dry-run``): image -> Dockerfile of every
    image build command it prints (``checks`` collects the --target builds, which check and tag no stage image)."""
    proc = subprocess.run(command, cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    built: dict[str, str] = {}
    for line in proc.stdout.splitlines():
        words = shlex.split(line)
        if "build" in words[:3] and "-t" in words:
            if "--target" in words:
                assert checks is not None, line
                checks.append(words)
                continue
            built[words[words.index("-t") + 1]] = words[words.index("-f") + 1]
    assert built, proc.stdout
    return built


# ---------------------------------------------------------------------------- two Dockerfiles, every stage built
def test_one_cpu_and_one_gpu_dockerfile_build_every_stage() -> None:
    assert sorted(p.relative_to(ROOT).as_posix() for p in IMAGES.rglob("*Dockerfile*")) == \
        sorted([CPU_DOCKERFILE, GPU_DOCKERFILE])
    assert sorted(STAGES) == sorted(_stage_names_in_docs()) == sorted(EXTRAS)
    assert set(GPU_STAGES) == {"train", "compress"}
    assert {s.stage: s.dockerfile for s in build_specs()} == \
        {s: GPU_DOCKERFILE if s in GPU_STAGES else CPU_DOCKERFILE for s in STAGES}
    # a machine without CUDA (local runs, CI) builds the GPU stages from the CPU Dockerfile, under the same names
    assert {s.dockerfile for s in build_specs(cpu_only=True)} == {CPU_DOCKERFILE}
    assert [s.image for s in build_specs(cpu_only=True)] == [s.image for s in build_specs()]


def test_make_images_builds_exactly_the_images_the_compiled_pipeline_names(tmp_path: Path) -> None:
    """`make images` (dry run: the build commands it would run) builds one image per stage, each from the Dockerfile
    src/splatflow/spec.py names, tagged exactly as the pipeline compiled with the same REGISTRY/TAG names it."""
    env = {"SPLATFLOW_REGISTRY": "registry.example:5000/team", "SPLATFLOW_IMAGE_TAG": "t1"}
    compiled = _compiled_images(tmp_path, env)
    assert len(compiled) == len(STAGES)
    # make's own variables (REGISTRY/TAG) reach the build as the same names; -o: the venv is not (re)made here
    built = _built_by(["make", "-s", "-o", ".venv/.installed", "images", f"PY={sys.executable}",
                       "REGISTRY=registry.example:5000/team", "TAG=t1", "DRY_RUN=1", "ENGINE=docker"],
                      {"SPLATFLOW_REGISTRY": "", "SPLATFLOW_IMAGE_TAG": ""})
    assert set(built) == compiled
    for spec in build_specs():
        image = f"registry.example:5000/team/splatflow-{spec.stage}:t1"
        assert built[image] == spec.dockerfile
    # podman takes the same command line (without buildx)
    podman = _built_by(["make", "-s", "-o", ".venv/.installed", "images", f"PY={sys.executable}",
                        "REGISTRY=registry.example:5000/team", "TAG=t1", "DRY_RUN=1", "ENGINE=podman"], {})
    assert podman == built


def test_local_images_are_the_ones_the_local_pipeline_runs(tmp_path: Path) -> None:
    """`make images-local` builds every stage on the CPU Dockerfile under the names the pipeline compiled with
    LOCAL_REGISTRY/LOCAL_TAG names: the containerised run (tests/images) finds exactly these images."""
    env = {"SPLATFLOW_REGISTRY": "localhost/splatflow", "SPLATFLOW_IMAGE_TAG": "ci", "ENGINE": "podman"}
    checks: list[list[str]] = []
    built = _built_by([sys.executable, "images/build.py", "--local", "--gpu-deps", "--dry-run"], env, checks)
    assert set(built) == _compiled_images(tmp_path, env)
    assert set(built.values()) == {CPU_DOCKERFILE}
    # --gpu-deps: the GPU Dockerfile's Python layer, per GPU stage, on the same local base with CPU torch
    assert len(checks) == len(GPU_STAGES)
    for words in checks:
        text = shlex.join(words)
        assert words[words.index("--target") + 1] == "python" and words[words.index("-f") + 1] == GPU_DOCKERFILE
        assert "--build-arg BUILD_BASE=localhost/splatflow-base:bookworm" in text
        assert "--build-arg TORCH_VARIANT=cpu" in text
        assert not any(words[words.index("-t") + 1] == image for image in built)  # no stage image overwritten


def test_build_commands_carry_the_stage_extras_and_local_sources(tmp_path: Path) -> None:
    sys.path.insert(0, str(IMAGES))
    try:
        import build  # images/build.py
    finally:
        sys.path.remove(str(IMAGES))
    spec = BuildSpec(stage="train", image="r/splatflow-train:t", dockerfile=CPU_DOCKERFILE, extras=("train", "storage"))
    wheels, ca = tmp_path / "wheels", tmp_path / "ca.crt"
    cmd = build.build_command("podman", spec, build_args={"KERNELS": "1", "BASE_IMAGE": "b:1"},
                              platform="linux/amd64", push=False, wheels=wheels, ca=ca)
    assert cmd[:2] == ["podman", "build"] and cmd[-1] == "." and "--load" not in cmd
    text = shlex.join(cmd)
    for part in ("-f images/cpu.Dockerfile", "-t r/splatflow-train:t", "--build-arg STAGE=train",
                 "--build-arg EXTRAS=train,storage", "--build-arg KERNELS=1", "--build-arg BASE_IMAGE=b:1",
                 f"--build-context wheels={wheels}", f"--secret id=pip-ca,src={ca}"):
        assert part in text, part
    # the kernel switch is the CPU train image's only; docker builds with buildx and loads or pushes
    other = BuildSpec(stage="sfm", image="r/splatflow-sfm:t", dockerfile=CPU_DOCKERFILE, extras=("sfm", "storage"))
    cmd = build.build_command("docker", other, build_args={"KERNELS": "1"}, platform="linux/amd64", push=True,
                              wheels=None, ca=None)
    assert cmd[:3] == ["docker", "buildx", "build"] and "--push" in cmd and "KERNELS=1" not in shlex.join(cmd)
    assert "--build-context" not in cmd and "--secret" not in cmd


# ---------------------------------------------------------------------------- static lint
@pytest.mark.parametrize("kind", sorted(DOCKERFILES))
def test_dockerfile_lint(kind: str) -> None:
    path = DOCKERFILES[kind]
    stages = _stages(path)
    named = {s.name for s in stages if s.name}
    final = stages[-1]
    text = path.read_text()
    # no `# syntax=` line: BuildKit would pull that frontend image from Docker Hub (air-gapped builds fail)
    assert not re.search(r"^#\s*syntax=", text, flags=re.M)
    for s in stages:  # every base pinned by tag (or digest) by default, never `latest`; overridable by build arg
        if s.base in named or s.base == "scratch":
            continue
        assert "$" not in s.base, f"{kind}: FROM {s.raw_base} has no default"
        assert re.fullmatch(r"[\w./-]+(:[\w.-]+|@sha256:[0-9a-f]{64})", s.base), f"{kind}: FROM {s.base} unpinned"
        assert not s.base.endswith(":latest"), f"{kind}: FROM {s.base}"
        assert s.raw_base.startswith("${"), f"{kind}: FROM {s.base} cannot be replaced by a mirror's base"
        assert s.base.split("/")[0] in ("docker.io", "localhost") or "." in s.base.split("/")[0], \
            f"{kind}: FROM {s.base} is a short name (podman needs the registry)"
    # final stage: a non-root USER (numeric, so runAsNonRoot can verify it), no compilers, no CUDA devel base
    users = final.values("USER")
    assert users, f"{kind}: the final stage sets no USER"
    uid = users[-1][0].split(":")[0]
    assert uid == "10001", f"{kind}: USER {users[-1][0]}"
    assert "devel" not in final.base, f"{kind}: the final stage is FROM a devel image"
    installs = " ".join(re.findall(r"(?:apt-get|apt|apk|yum|dnf) (?:-\S+ )*install ([^&;|]+)", final.runs()))
    installs += " " + " ".join(re.findall(r"pip install ([^&;|]+)", final.runs()))
    assert not COMPILERS.search(installs), f"{kind}: the final stage installs {COMPILERS.search(installs)}"
    copies_from = [flags for flags in (f for c, f, _ in final.instructions if c == "COPY") if flags]
    assert copies_from and all(f[0].startswith("--from=") for f in copies_from), f"{kind}: no venv from a builder"
    # torch in its own folder, copied before anything stage-specific: one layer shared by the images of a Dockerfile
    build_runs = "\n".join(s.runs() for s in stages[:-1])
    assert "--target /opt/torch" in build_runs and "/torch.pth" in build_runs
    # splatflow in a folder of its own too, copied last: a source change touches a few MB, not the requirements
    assert "--no-deps --target /opt/splatflow/site /src" in build_runs and "/splatflow.pth" in build_runs
    assert final.values("COPY")[-1] == ("/opt/splatflow", "/opt/splatflow")
    assert final.env()["PATH"].startswith("/opt/splatflow/site/bin:/opt/venv/bin:")
    first_steps = [c for c, _, _ in final.instructions if c not in ("ENV", "RUN")]
    assert final.values("COPY")[0] == ("/opt/torch", "/opt/torch") and first_steps[0] == "COPY", first_steps
    # KFP's launcher writes artifacts under /s3, /minio, /gcs: they must exist and be writable for the user
    assert re.search(r"install -d -m 1777 /s3 /minio /gcs\b", final.runs()), f"{kind}: no /s3 /minio /gcs"
    # kfp.local's DockerRunner sets the command only: an ENTRYPOINT would swallow it
    assert not final.values("ENTRYPOINT")
    # the start-up check: the CLI and the stage's own modules import as the runtime user
    assert "splatflow --version" in final.runs()
    assert "import splatflow_kfp.components.${STAGE}, splatflow.stages.${STAGE}" in final.runs()
    # a multi-stage build: what is built stays behind
    assert len(stages) >= 3 and stages[1].name, f"{kind}: expected a named builder stage"
    # pip: no cache, a CA bundle only as a build secret (never in a layer), a wheel folder from a build context
    assert stages[1].env()["PIP_NO_CACHE_DIR"] == "1"
    pip_runs = [r for s in stages for r in s.values("RUN") if "pip install" in r[0]]
    assert pip_runs
    for (run,) in pip_runs:
        assert "export PIP_CERT=/run/secrets/pip-ca" in run and "ca-certificates.crt" not in run
    assert [s.base for s in stages if s.name == "wheels"] == ["scratch"]


@pytest.mark.parametrize("kind", sorted(DOCKERFILES))
def test_copy_sources_exist_in_the_build_context(kind: str) -> None:
    for s in _stages(DOCKERFILES[kind]):
        for c, flags, values in s.instructions:
            if c not in ("COPY", "ADD") or any(f.startswith("--from=") for f in flags):
                continue
            for src in values[:-1]:
                assert (ROOT / src).exists(), f"{kind}: COPY {src}: not in the repository"
                assert not _dockerignored(src), f"{kind}: COPY {src}: excluded by .dockerignore"


def test_dockerignore_keeps_secrets_and_bulk_out() -> None:
    for path in ("manifests/overlays/onprem/minio.env", "manifests/base/notify.env", ".venv/bin/python",
                 "node_modules/.bin/splat-transform", "data/splats", ".git/config", "tests/conftest.py",
                 "src/splatflow/__pycache__/cli.cpython-312.pyc", "build/images-local.json", "images/build.py",
                 "images/cpu.Dockerfile"):
        assert _dockerignored(path), path
    for path in ("src/splatflow/cli.py", "pyproject.toml", "src/splatflow/spec.py", "images/constraints.txt",
                 "images/requirements.py"):
        assert not _dockerignored(path), path


@pytest.mark.parametrize("kind", sorted(DOCKERFILES))
def test_installs_splatflow_extras_and_pinned_kfp(kind: str) -> None:
    stages = _stages(DOCKERFILES[kind])
    text = "\n".join(s.runs() for s in stages)
    args = {k: v for s in stages for k, v in s.args().items()}
    # the extras' requirements from pyproject.toml (images/requirements.py), then splatflow, checked by a dry run
    assert 'python /src/requirements.py /src/pyproject.toml "${EXTRAS}" > /tmp/extras.txt' in text
    assert "-r /tmp/extras.txt" in text and '"/src[${EXTRAS}]"' in text and "--dry-run" in text
    extras_defined = set(_pyproject()["project"]["optional-dependencies"])
    for stage, extras in EXTRAS.items():
        assert set(extras) <= extras_defined, f"{stage}: unknown extras {set(extras) - extras_defined}"
        assert NEEDED_EXTRAS[stage] <= set(extras), f"{stage}: needs {NEEDED_EXTRAS[stage]}"
    pipeline_extra = _pyproject()["project"]["optional-dependencies"]["pipeline"]
    kfp_pin = next(d.split("==")[1] for d in pipeline_extra if d.startswith("kfp=="))
    assert args.get("KFP_VERSION") == kfp_pin == "2.17.3" and '"kfp==${KFP_VERSION}"' in text
    makefile_torch = re.search(r"TORCH_SPEC \?= torch==([\d.]+)", (ROOT / "Makefile").read_text())
    assert makefile_torch and args.get("TORCH_VERSION") == makefile_torch.group(1)
    assert "-c /src/constraints.txt" in text and "pip check" in text
    assert args.get("PIP_INDEX_URL") == "https://pypi.org/simple"  # a mirror: --build-arg PIP_INDEX_URL=...


def test_gpu_dockerfile_builds_cuda_torch_and_gsplat_for_t4_to_hopper() -> None:
    stages = {s.name: s for s in _stages(DOCKERFILES["gpu.Dockerfile"])}
    deps, python, kernels = stages["deps"], stages["python"], stages["kernels"]
    final = _stages(DOCKERFILES["gpu.Dockerfile"])[-1]
    # the Python layer CI resolves (--target python) and the compiled kernels both sit on the requirements
    assert python.base == "deps" and kernels.base == "deps"
    assert re.fullmatch(r"docker\.io/nvidia/cuda:12\.\d+\.\d+-(cudnn-)?devel-ubuntu\d+\.\d+", deps.base), deps.base
    assert re.fullmatch(r"docker\.io/nvidia/cuda:12\.\d+\.\d+-(cudnn-)?runtime-ubuntu\d+\.\d+", final.base), final.base
    cuda = final.base.split(":")[1].split("-")[0]  # e.g. 12.8.1 -> the cu128 torch index and build
    assert deps.base.split(":")[1].split("-")[0] == cuda, "CUDA mismatch"
    assert kernels.env()["TORCH_CUDA_ARCH_LIST"].strip('"') == ARCHS
    args = deps.args()
    cu = "cu" + "".join(cuda.split(".")[:2])
    assert args["TORCH_INDEX"].endswith("/" + cu) and args["TORCH_VARIANT"] == cu
    assert '"torch==${TORCH_VERSION}+${TORCH_VARIANT}"' in deps.runs()
    assert re.fullmatch(r"\d+\.\d+\.\d+", args["GSPLAT_VERSION"])
    assert kernels.args()["GSPLAT_VERSION"] == python.args()["GSPLAT_VERSION"] == args["GSPLAT_VERSION"]
    # the Python layer: gsplat's Python code (no kernels), kfp and the extras, resolved and checked
    assert '"gsplat==${GSPLAT_VERSION}"' in deps.runs() and "pip check" in python.runs()
    assert "--pending" in python.runs() and '"/src[${EXTRAS}]" "gsplat==${GSPLAT_VERSION}"' in python.runs()
    for stage in (deps, python):
        assert not {"nvcc", "--no-binary", "build-essential"} & set(stage.runs().split())
    runs = kernels.runs()
    assert '--no-binary gsplat "gsplat==${GSPLAT_VERSION}"' in runs and "--no-build-isolation" in runs
    # without build isolation the build backend must already be in the venv (3.12 venvs have no setuptools)
    assert runs.index("setuptools==") < runs.index("--no-build-isolation")
    assert "pip uninstall -y ninja" in runs  # the JIT build tool does not reach the runtime stage
    copies = [(f, v) for c, f, v in final.instructions if c == "COPY"]
    assert copies == [(("--from=deps",), ("/opt/torch", "/opt/torch")),
                      (("--from=kernels",), ("/opt/venv", "/opt/venv")),
                      (("--from=python",), ("/opt/splatflow", "/opt/splatflow"))]


def test_cpu_dockerfile_builds_cpu_torch_and_holds_the_kernel_hook() -> None:
    all_stages = _stages(DOCKERFILES["cpu.Dockerfile"])
    stages = {s.name: s for s in all_stages}
    deps, build, final = stages["deps"], stages["build"], all_stages[-1]
    assert build.base == "deps"
    # fully qualified: podman resolves no short names without an alias (nvidia/cuda has none)
    assert deps.base == final.base and re.fullmatch(r"docker\.io/library/python:3\.12\.\d+-slim-bookworm", deps.base)
    assert deps.args()["TORCH_INDEX"] == "https://download.pytorch.org/whl/cpu"
    assert '"torch==${TORCH_VERSION}+cpu"' in deps.runs()
    assert "pip check" in build.runs() and "--pending" in build.runs() and '"/src[${EXTRAS}]"' in build.runs()
    # the training kernels: built with g++ in the builder only when KERNELS=1 (default 0), and a failure fails
    # the build; the final stage gets the cache folder, never the compiler
    assert build.args()["KERNELS"] == "0"
    hook = next(r for r in build.values("RUN") if "splatflow.kernels" in r[0])[0]
    assert 'if [ "$KERNELS" = 1 ]' in hook and "python -m splatflow.kernels build" in hook and "|| true" not in hook
    assert "g++" in hook and not COMPILERS.search(final.runs())
    assert "SPLATFLOW_KERNEL_DIR=/opt/splatflow/kernels" in " ".join(f"{k}={v}" for k, v in build.env().items())
    copies = [(f, v) for c, f, v in final.instructions if c == "COPY"]
    assert copies == [(("--from=deps",), ("/opt/torch", "/opt/torch")), (("--from=deps",), ("/opt/venv", "/opt/venv")),
                      (("--from=build",), ("/opt/splatflow", "/opt/splatflow"))]
    assert final.env()["SPLATFLOW_KERNEL_DIR"] == "/opt/splatflow/kernels"
    # built for a portable instruction set, and looked up at run time under the same one (the cache name hashes it)
    assert build.args()["KERNEL_ARCH"] == final.args()["KERNEL_ARCH"] == "x86-64-v3"
    assert build.env()["SPLATFLOW_KERNEL_ARCH"] == final.env()["SPLATFLOW_KERNEL_ARCH"] == "${KERNEL_ARCH}"


def test_constraints_are_pinned() -> None:
    lines = [ln for ln in (IMAGES / "constraints.txt").read_text().splitlines() if ln and not ln.startswith("#")]
    assert lines
    for ln in lines:
        assert re.fullmatch(r"[A-Za-z0-9_.-]+==[\w.+-]+", ln), ln
    pins = {ln.split("==")[0].lower(): ln.split("==")[1] for ln in lines}
    assert {"numpy", "boto3", "pycolmap", "kubernetes", "protobuf", "google-auth"} <= set(pins)
    assert "torch" not in pins and not [p for p in pins if p.startswith("nvidia-")]  # per image: CPU or CUDA
    # versions pinned inline in the Dockerfiles agree with the constraints (pip refuses a contradiction)
    for kind, path in DOCKERFILES.items():
        text = path.read_text()
        for name, version in re.findall(r"\b(ninja|setuptools)==([\d.]+)", text):
            assert pins[name] == version, (kind, name)
        for arg, name in (("GSPLAT_VERSION", "gsplat"), ("KFP_VERSION", "kfp")):
            for version in re.findall(rf"ARG {arg}=([\d.]+)", text):
                assert pins[name] == version, (kind, name)


# ---------------------------------------------------------------------------- extras cover what each stage imports
SRC = ROOT / "src"
#: (stage, import) pairs the stage's modules import but the stage never reaches, with the reason; each must still
#: be imported somewhere in the stage's module closure (a stale entry fails).
NOT_REACHED = {
    ("compress", "pycolmap"): "splatflow.cameras.colmap_cameras (evaluate --cameras) only; the compress stage's "
                              "fidelity check renders orbit cameras",
}
#: more such pairs for the CPU builds of the GPU stages (local and CI runs)
NOT_REACHED_ON_CPU = {
    ("compress", "gsplat"): "splatflow.render takes gsplat for CUDA tensors only ('auto'); on CPU it renders with "
                            "torch",
}
#: pip options whose next token is their argument, not a package
_PIP_ARG_OPTIONS = {"-c", "-r", "--constraint", "--index-url", "--extra-index-url", "--no-binary", "--only-binary",
                    "--target", "-t"}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _module_file(name: str) -> Path | None:
    base = SRC.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _type_checking_only(tree: ast.AST) -> set[int]:
    """ids of the import nodes under `if TYPE_CHECKING:` (never executed)."""
    out: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            out |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return out


def _imports(module: str) -> list[str]:
    """Absolute names of everything ``module`` imports, function-level (lazy) imports included."""
    path = _module_file(module)
    assert path is not None, module
    tree = ast.parse(path.read_text())
    skip = _type_checking_only(tree)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: list[str] = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            names.append(base)
            names += [f"{base}.{a.name}" for a in node.names]  # `from splatflow import storage` is a module
    return names


def _third_party_imports(roots: list[str], *, follow: bool = True) -> dict[str, set[str]]:
    """Top-level third-party import name -> the splatflow modules importing it, over ``roots`` and (``follow``)
    every splatflow module they import, transitively (the parent packages included: Python runs them too)."""
    found: dict[str, set[str]] = {}
    seen: set[str] = set()
    stack = list(roots)
    while stack:
        module = stack.pop()
        if module in seen or _module_file(module) is None:
            continue
        seen.add(module)
        if follow:
            parts = module.split(".")
            stack += [".".join(parts[:i]) for i in range(1, len(parts))]
        for name in _imports(module):
            top = name.split(".")[0]
            if top == "splatflow":
                if follow:
                    stack.append(name)
            elif top and top != "__future__" and top not in sys.stdlib_module_names:
                found.setdefault(top, set()).add(module)
    return found


def _distribution(import_name: str) -> str:
    dists = importlib.metadata.packages_distributions().get(import_name)
    assert dists, f"no installed distribution provides the module {import_name!r}: run `make install`"
    return _norm(dists[0])


def _with_dependencies(names: set[str]) -> set[str]:
    """``names`` plus everything they depend on (installed metadata, Linux / Python 3.12 markers)."""
    from packaging.requirements import Requirement

    env = {"python_version": "3.12", "python_full_version": "3.12.12", "sys_platform": "linux",
           "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix", "extra": ""}
    out: set[str] = set()
    stack = list(names)
    while stack:
        name = _norm(stack.pop())
        if name in out:
            continue
        out.add(name)
        try:
            requires = importlib.metadata.distribution(name).requires or []
        except importlib.metadata.PackageNotFoundError:
            continue
        stack += [r.name for r in map(Requirement, requires) if r.marker is None or r.marker.evaluate(env)]
    return out


def _requirement_names(extras: set[str]) -> set[str]:
    from packaging.requirements import Requirement

    project = _pyproject()["project"]
    reqs = list(project["dependencies"]) + [r for e in sorted(extras) for r in project["optional-dependencies"][e]]
    return {_norm(Requirement(r).name) for r in reqs}


def _pip_installs(spec: BuildSpec) -> tuple[set[str], set[str]]:
    """(splatflow extras, other package names) that the image's `pip install` commands install, with the stage's
    EXTRAS build argument (from src/splatflow/spec.py). Dry runs install nothing; the extras count as installed when
    their requirements are (`-r` of images/requirements.py's list for "${EXTRAS}")."""
    from packaging.requirements import Requirement

    packages: set[str] = set()
    installs_splatflow = installs_extras = False
    for s in _stages(ROOT / spec.dockerfile):
        runs = s.runs()
        # ${NAME:+words}: optional options (an index URL when one is set), never a package
        for command in re.split(r"&&|;|\n", re.sub(r"\$\{\w+:\+[^}]*\}", "", runs)):
            words = command.split()
            if "install" not in words or not {"pip", "pip3"} & set(words[: words.index("install")]):
                continue
            if "--dry-run" in words:
                continue
            args = words[words.index("install") + 1:]
            if "/tmp/extras.txt" in args and 'python /src/requirements.py /src/pyproject.toml "${EXTRAS}" > ' \
                                              "/tmp/extras.txt" in runs:
                installs_extras = True
            skip_next = False
            for word in args:
                if skip_next or word.startswith("-"):
                    skip_next = word in _PIP_ARG_OPTIONS
                    continue
                word = word.strip("\"'")
                if word == "/src":
                    installs_splatflow = True
                else:
                    packages.add(_norm(Requirement(re.sub(r"\$\{?\w+\}?", "0", word)).name))
    assert installs_splatflow and installs_extras, spec.dockerfile
    return set(spec.extras), packages


def test_pip_installs_are_parsed() -> None:
    """The parser the next test relies on reads the train image as written (extras and the explicit installs)."""
    extras, packages = _pip_installs(next(s for s in build_specs() if s.stage == "train"))
    assert extras == {"train", "storage"}
    assert {"torch", "gsplat", "kfp", "setuptools", "ninja"} <= packages
    train = _third_party_imports(["splatflow.stages.train"])
    assert "splatflow.metrics" in train["pytorch_msssim"]  # a function-level import is seen
    assert "splatflow.cameras" in train["pycolmap"]  # so are the splatflow modules it imports
    assert "pytest" not in train and "typing" not in train


@pytest.mark.parametrize("cpu_only", [False, True], ids=["cluster", "cpu"])
@pytest.mark.parametrize("stage", sorted(NEEDED_EXTRAS))
def test_image_installs_what_the_stage_imports(stage: str, cpu_only: bool) -> None:
    """Every third-party module that splatflow.stages.<stage> and the splatflow modules it imports (lazily too)
    import is installed in the stage's image (the cluster's and the CPU build): by the extras it installs or by
    its explicit pip installs."""
    spec = next(s for s in build_specs(cpu_only=cpu_only) if s.stage == stage)
    extras, packages = _pip_installs(spec)
    installed = _with_dependencies(_requirement_names(extras) | packages)
    imports = _third_party_imports([f"splatflow.stages.{stage}"])
    not_reached = {**NOT_REACHED, **(NOT_REACHED_ON_CPU if spec.dockerfile == CPU_DOCKERFILE else {})}
    missing = {}
    for name, where in sorted(imports.items()):
        if (stage, name) in not_reached:
            continue
        if _distribution(name) not in installed:
            missing[name] = sorted(where)
    assert not missing, (f"{spec.dockerfile} installs splatflow[{','.join(sorted(extras))}] for {stage}, which does "
                         f"not bring {missing} (module -> importing splatflow modules)")
    for (s, name), why in not_reached.items():
        if s == stage:
            assert name in imports, f"stale NOT_REACHED entry ({s}, {name}): {why}"


def test_train_extra_holds_what_training_imports() -> None:
    """`pip install splatflow[train]` alone is enough for stages/train.py and splatflow.training (with the one
    SSIM of splatflow.metrics and the one COLMAP reader of splatflow.cameras)."""
    modules = ["splatflow.stages.train", "splatflow.metrics", "splatflow.cameras"]
    modules += [f"splatflow.training.{p.stem}" for p in (SRC / "splatflow" / "training").glob("*.py")
                if p.stem != "__init__"]
    imports = _third_party_imports(modules, follow=False)
    assert {"gsplat", "pycolmap", "pytorch_msssim"} <= set(imports)
    covered = _requirement_names({"train"})
    missing = {name: sorted(where) for name, where in imports.items() if _distribution(name) not in covered}
    assert not missing, f"the train extra (with the core dependencies) lacks {missing}"
    gsplat = next(r for r in _pyproject()["project"]["optional-dependencies"]["train"] if r.startswith("gsplat"))
    assert gsplat.replace(" ", "") == "gsplat>=1.5,<1.6"


def test_requirements_script_lists_what_pyproject_declares(tmp_path: Path) -> None:
    """images/requirements.py (the layered installs in both Dockerfiles) prints pyproject's requirements exactly, and
    refuses an extra that does not exist."""
    project = _pyproject()["project"]

    def listed(*args: str) -> list[str]:
        proc = subprocess.run([sys.executable, str(IMAGES / "requirements.py"), str(ROOT / "pyproject.toml"), *args],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.splitlines()

    assert listed("--core") == project["dependencies"]
    optional = project["optional-dependencies"]
    assert listed("sfm,storage") == optional["sfm"] + optional["storage"] == listed("sfm", "storage")
    proc = subprocess.run([sys.executable, str(IMAGES / "requirements.py"), str(ROOT / "pyproject.toml"), "sfm,gpu"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "defines no extra gpu" in proc.stderr


def test_pending_report_names_what_pip_would_still_install(tmp_path: Path) -> None:
    """`requirements.py --pending` (the images' last check) fails on a pip report that installs anything but
    splatflow, naming it, and passes one that installs splatflow alone."""
    def run(items: list[dict[str, dict[str, str]]]) -> subprocess.CompletedProcess[str]:
        report = tmp_path / "report.json"
        report.write_text(json.dumps({"version": "1", "install": items}))
        return subprocess.run([sys.executable, str(IMAGES / "requirements.py"), "--pending", str(report)],
                              capture_output=True, text=True, timeout=60)

    splatflow = {"metadata": {"name": "splatflow", "version": "0.1.0"}}
    assert run([splatflow]).returncode == 0
    proc = run([splatflow, {"metadata": {"name": "pycolmap", "version": "4.2.1"}}])
    assert proc.returncode != 0 and "pip would add pycolmap==4.2.1" in proc.stderr
