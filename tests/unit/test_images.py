"""Stage images, checked statically (there is no Docker engine in CI): one Dockerfile per stage and every one
used by a component; each FROM pinned; a non-root USER and no compilers in the final stage; CUDA builds for the
GPU stages; every COPY source present in the build context (the repo root, filtered by .dockerignore); kfp baked
in at the version the pipeline compiles with. Building the images is not tested here.

Dockerfiles are parsed with `dockerfile` (Docker's own Go parser, via PyPI).
"""

from __future__ import annotations

import ast
import fnmatch
import importlib.metadata
import re
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import dockerfile
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
IMAGES = ROOT / "images"
ARCHS = "7.5;8.0;8.6;8.9;9.0"
COMPILERS = re.compile(r"\b(build-essential|gcc|g\+\+|clang|cmake|make|ninja|nvcc|cuda-nvcc[-\d.]*|"
                       r"[a-z0-9.+-]+-dev|cuda-toolkit[-\d]*|libcudnn\d*-dev)\b")
# every stage records its failure under output_uri (splatflow.tasks), so every image needs storage (boto3);
# compress renders the SOG against the PLY for its report (render)
NEEDED_EXTRAS = {"ingest": {"storage"}, "sfm": {"sfm", "storage"}, "train": {"train", "storage"},
                 "compress": {"render", "storage"}, "publish": {"storage"}, "notify": {"storage"}}


@dataclass
class Stage:
    """One build stage: its base image, name, instructions as (command, flags, values)."""

    base: str
    name: str | None
    instructions: list[tuple[str, tuple[str, ...], tuple[str, ...]]] = field(default_factory=list)

    def values(self, cmd: str) -> list[tuple[str, ...]]:
        return [v for c, _, v in self.instructions if c == cmd]

    def runs(self) -> str:
        return "\n".join(v[0] for v in self.values("RUN"))


def _stages(path: Path) -> list[Stage]:
    stages: list[Stage] = []
    for c in dockerfile.parse_file(str(path)):
        cmd = c.cmd.upper()
        if cmd == "FROM":
            v = c.value
            stages.append(Stage(base=v[0], name=v[2] if len(v) >= 3 and v[1].upper() == "AS" else None))
        elif stages:
            stages[-1].instructions.append((cmd, tuple(c.flags), tuple(c.value)))
    assert stages, f"{path}: no FROM"
    return stages


def _stage_names_in_docs() -> list[str]:
    text = (ROOT / "docs" / "STAGES.md").read_text()
    return re.findall(r"^\| (\w+) \| `\1\(", text, flags=re.M)


def _dockerfiles() -> dict[str, Path]:
    return {p.parent.name: p for p in sorted(IMAGES.glob("*/Dockerfile"))}


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


# ---------------------------------------------------------------------------- one image per stage, all used
def test_one_dockerfile_per_stage() -> None:
    from components.images import GPU_STAGES, STAGES

    assert sorted(_dockerfiles()) == sorted(STAGES) == sorted(_stage_names_in_docs())
    assert set(GPU_STAGES) == {"train", "compress"}


def test_every_component_image_has_a_dockerfile_and_every_dockerfile_is_used(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The images named in the compiled pipeline are exactly <registry>/splatflow-<stage>:<tag>, one per
    Dockerfile."""
    monkeypatch.setenv("SPLATFLOW_REGISTRY", "registry.example:5000/team")
    monkeypatch.setenv("SPLATFLOW_IMAGE_TAG", "t1")
    from components import images

    assert images.image_for("train") == "registry.example:5000/team/splatflow-train:t1"
    from pipelines.splat_pipeline import compile_pipeline

    path = compile_pipeline(tmp_path / "p.yaml")
    spec = next(yaml.safe_load_all(path.read_text()))
    used = {ex["container"]["image"] for ex in spec["deploymentSpec"]["executors"].values()}
    # the image names are computed when the component modules are imported: accept the session's registry/tag
    stages = set()
    for image in used:
        m = re.fullmatch(r"(?P<reg>.+)/splatflow-(?P<stage>[a-z]+):(?P<tag>[\w.-]+)", image)
        assert m, f"{image} does not follow <registry>/splatflow-<stage>:<tag>"
        stages.add(m["stage"])
    assert stages == set(_dockerfiles()), f"compiled images {sorted(used)} vs Dockerfiles {sorted(_dockerfiles())}"


# ---------------------------------------------------------------------------- static lint
@pytest.mark.parametrize("stage", sorted(_dockerfiles()))
def test_dockerfile_lint(stage: str) -> None:
    path = _dockerfiles()[stage]
    stages = _stages(path)
    named = {s.name for s in stages if s.name}
    final = stages[-1]
    for s in stages:  # every FROM pinned by tag (or digest), never `latest`, never a variable
        if s.base in named:
            continue
        assert "$" not in s.base, f"{stage}: FROM {s.base} uses a build argument"
        assert re.fullmatch(r"[\w./-]+(:[\w.-]+|@sha256:[0-9a-f]{64})", s.base), f"{stage}: FROM {s.base} unpinned"
        assert not s.base.endswith(":latest"), f"{stage}: FROM {s.base}"
    # final stage: a non-root USER (numeric, so runAsNonRoot can verify it), no compilers, no CUDA devel base
    users = final.values("USER")
    assert users, f"{stage}: the final stage sets no USER"
    uid = users[-1][0].split(":")[0]
    assert uid.isdigit() and int(uid) >= 1000, f"{stage}: USER {users[-1][0]} is root or not numeric"
    assert "devel" not in final.base, f"{stage}: the final stage is FROM a devel image"
    installs = " ".join(re.findall(r"(?:apt-get|apt|apk|yum|dnf) (?:-\S+ )*install ([^&;|]+)", final.runs()))
    installs += " " + " ".join(re.findall(r"pip install ([^&;|]+)", final.runs()))
    assert not COMPILERS.search(installs), f"{stage}: the final stage installs {COMPILERS.search(installs)}"
    copies_from = [flags for flags in (f for c, f, _ in final.instructions if c == "COPY") if flags]
    assert copies_from and all(f[0].startswith("--from=") for f in copies_from), f"{stage}: no venv from a builder"
    # KFP's launcher writes artifacts under /s3, /minio, /gcs: they must exist and be writable for the user
    assert re.search(r"install -d -m 1777 /s3 /minio /gcs\b", final.runs()), f"{stage}: no /s3 /minio /gcs"
    # a multi-stage build: what is built stays behind
    assert len(stages) >= 2 and stages[0].name, f"{stage}: expected a named builder stage"


@pytest.mark.parametrize("stage", sorted(_dockerfiles()))
def test_copy_sources_exist_in_the_build_context(stage: str) -> None:
    for s in _stages(_dockerfiles()[stage]):
        for c, flags, values in s.instructions:
            if c not in ("COPY", "ADD") or any(f.startswith("--from=") for f in flags):
                continue
            for src in values[:-1]:
                assert (ROOT / src).exists(), f"{stage}: COPY {src}: not in the repository"
                assert not _dockerignored(src), f"{stage}: COPY {src}: excluded by .dockerignore"


def test_dockerignore_keeps_secrets_and_bulk_out() -> None:
    for path in ("manifests/overlays/onprem/minio.env", "manifests/base/notify.env", ".venv/bin/python",
                 "node_modules/.bin/splat-transform", "data/splats", ".git/config", "tests/conftest.py",
                 "src/splatflow/__pycache__/cli.cpython-312.pyc"):
        assert _dockerignored(path), path
    for path in ("src/splatflow/cli.py", "pyproject.toml", "components/images.py", "images/constraints.txt"):
        assert not _dockerignored(path), path


@pytest.mark.parametrize("stage", sorted(_dockerfiles()))
def test_installs_splatflow_extras_and_pinned_kfp(stage: str) -> None:
    text = "\n".join(s.runs() for s in _stages(_dockerfiles()[stage]))
    args = dict(v[0].split("=", 1) for s in _stages(_dockerfiles()[stage]) for v in s.values("ARG") if "=" in v[0])
    extras_defined = set(_pyproject()["project"]["optional-dependencies"])
    m = re.search(r'"/src\[([a-z,]+)\]"', text)
    assert m, f"{stage}: splatflow is not installed from the build context with extras"
    extras = set(m.group(1).split(","))
    assert extras <= extras_defined, f"{stage}: unknown extras {extras - extras_defined}"
    assert NEEDED_EXTRAS[stage] <= extras, f"{stage}: needs {NEEDED_EXTRAS[stage]}"
    pipeline_extra = _pyproject()["project"]["optional-dependencies"]["pipeline"]
    kfp_pin = next(d.split("==")[1] for d in pipeline_extra if d.startswith("kfp=="))
    assert args.get("KFP_VERSION") == kfp_pin == "2.17.3" and '"kfp==${KFP_VERSION}"' in text
    makefile_torch = re.search(r"TORCH_SPEC \?= torch==([\d.]+)", (ROOT / "Makefile").read_text())
    assert makefile_torch and args.get("TORCH_VERSION") == makefile_torch.group(1)
    assert "-c /src/constraints.txt" in text


def test_gpu_images_build_cuda_torch_and_gsplat_for_t4_to_hopper() -> None:
    from components.images import GPU_STAGES

    for stage in GPU_STAGES:
        stages = _stages(_dockerfiles()[stage])
        builder, final = stages[0], stages[-1]
        assert re.fullmatch(r"nvidia/cuda:12\.\d+\.\d+-(cudnn-)?devel-ubuntu\d+\.\d+", builder.base), builder.base
        assert re.fullmatch(r"nvidia/cuda:12\.\d+\.\d+-(cudnn-)?runtime-ubuntu\d+\.\d+", final.base), final.base
        assert builder.base.split(":")[1].split("-")[0] == final.base.split(":")[1].split("-")[0], "CUDA mismatch"
        env = " ".join(" ".join(v) for v in builder.values("ENV"))
        assert f'TORCH_CUDA_ARCH_LIST "{ARCHS}"' in env or f'TORCH_CUDA_ARCH_LIST {ARCHS}' in env, env
        args = dict(v[0].split("=", 1) for v in builder.values("ARG") if "=" in v[0])
        cuda = final.base.split(":")[1].split("-")[0]  # e.g. 12.8.1 -> the cu128 torch index
        assert args["TORCH_INDEX"].endswith("/cu" + "".join(cuda.split(".")[:2]))
        assert re.fullmatch(r"\d+\.\d+\.\d+", args["GSPLAT_VERSION"])
        runs = builder.runs()
        assert '--no-binary gsplat "gsplat==${GSPLAT_VERSION}"' in runs and "--no-build-isolation" in runs
        # without build isolation the build backend must already be in the venv (3.12 venvs have no setuptools)
        assert runs.index("setuptools==") < runs.index("--no-build-isolation")
        assert "pip uninstall -y ninja" in runs  # the JIT build tool does not reach the runtime stage
    for stage in set(_dockerfiles()) - set(GPU_STAGES):
        stages = _stages(_dockerfiles()[stage])
        assert all(s.base.startswith("python:3.12") and "slim" in s.base for s in stages), stage
        assert "download.pytorch.org/whl/cpu" in stages[0].runs(), f"{stage}: CPU torch"


def test_constraints_are_pinned() -> None:
    lines = [ln for ln in (IMAGES / "constraints.txt").read_text().splitlines() if ln and not ln.startswith("#")]
    assert lines
    for ln in lines:
        assert re.fullmatch(r"[A-Za-z0-9_.-]+==[\w.+-]+", ln), ln
    pins = {ln.split("==")[0].lower(): ln.split("==")[1] for ln in lines}
    assert {"numpy", "boto3", "pycolmap", "kubernetes", "protobuf", "google-auth"} <= set(pins)
    assert "torch" not in pins and not [p for p in pins if p.startswith("nvidia-")]  # per image: CPU or CUDA
    # versions pinned inline in the Dockerfiles agree with the constraints (pip refuses a contradiction)
    for stage, path in _dockerfiles().items():
        text = path.read_text()
        for name, version in re.findall(r"\b(ninja|setuptools)==([\d.]+)", text):
            assert pins[name] == version, (stage, name)
        for arg, name in (("GSPLAT_VERSION", "gsplat"), ("KFP_VERSION", "kfp")):
            m = re.search(rf"ARG {arg}=([\d.]+)", text)
            assert m is None or pins[name] == m.group(1), (stage, name)


# ---------------------------------------------------------------------------- extras cover what each stage imports
SRC = ROOT / "src"
#: (stage, import) pairs the stage's modules import but the stage never reaches, with the reason; each must still
#: be imported somewhere in the stage's module closure (a stale entry fails).
NOT_REACHED = {
    ("compress", "pycolmap"): "splatflow.cameras.colmap_cameras (evaluate --cameras) only; the compress stage's "
                              "fidelity check renders orbit cameras",
}
#: pip options whose next token is their argument, not a package
_PIP_ARG_OPTIONS = {"-c", "-r", "--constraint", "--index-url", "--extra-index-url", "--no-binary", "--only-binary"}


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


def _pip_installs(stage: str) -> tuple[set[str], set[str]]:
    """(splatflow extras, other package names) that the image's `pip install` commands install."""
    from packaging.requirements import Requirement

    extras: set[str] = set()
    packages: set[str] = set()
    for s in _stages(_dockerfiles()[stage]):
        for command in re.split(r"&&|;", s.runs()):
            words = command.split()
            if "install" not in words or not {"pip", "pip3"} & set(words[: words.index("install")]):
                continue
            args = words[words.index("install") + 1:]
            skip_next = False
            for word in args:
                if skip_next or word.startswith("-"):
                    skip_next = word in _PIP_ARG_OPTIONS
                    continue
                word = word.strip("\"'")
                if word.startswith("/src["):
                    extras |= set(word[len("/src["):].rstrip("]").split(","))
                else:
                    packages.add(_norm(Requirement(re.sub(r"\$\{?\w+\}?", "0", word)).name))
    return extras, packages


def test_pip_installs_are_parsed() -> None:
    """The parser the next test relies on reads the train image as written (extras and the explicit installs)."""
    extras, packages = _pip_installs("train")
    assert extras == {"train", "storage"}
    assert {"torch", "gsplat", "kfp", "setuptools", "ninja"} <= packages
    train = _third_party_imports(["splatflow.stages.train"])
    assert "splatflow.stages.train" in train["pytorch_msssim"]  # a function-level import is seen
    assert "splatflow.training.scene" in train["pycolmap"]  # so are the splatflow modules it imports
    assert "pytest" not in train and "typing" not in train


@pytest.mark.parametrize("stage", sorted(NEEDED_EXTRAS))
def test_image_installs_what_the_stage_imports(stage: str) -> None:
    """Every third-party module that splatflow.stages.<stage> and the splatflow modules it imports (lazily too)
    import is installed in the stage's image: by the extras it installs or by its explicit pip installs."""
    extras, packages = _pip_installs(stage)
    installed = _with_dependencies(_requirement_names(extras) | packages)
    imports = _third_party_imports([f"splatflow.stages.{stage}"])
    missing = {}
    for name, where in sorted(imports.items()):
        if (stage, name) in NOT_REACHED:
            continue
        if _distribution(name) not in installed:
            missing[name] = sorted(where)
    assert not missing, (f"images/{stage}/Dockerfile installs splatflow[{','.join(sorted(extras))}], which does "
                         f"not bring {missing} (module -> importing splatflow modules)")
    for (s, name), why in NOT_REACHED.items():
        if s == stage:
            assert name in imports, f"stale NOT_REACHED entry ({s}, {name}): {why}"


def test_train_extra_holds_what_training_imports() -> None:
    """`pip install splatflow[train]` alone is enough for stages/train.py and splatflow.training."""
    modules = ["splatflow.stages.train"] + [f"splatflow.training.{p.stem}" for p in (SRC / "splatflow" / "training")
                                            .glob("*.py") if p.stem != "__init__"]
    imports = _third_party_imports(modules, follow=False)
    assert {"gsplat", "pycolmap", "pytorch_msssim"} <= set(imports)
    covered = _requirement_names({"train"})
    missing = {name: sorted(where) for name, where in imports.items() if _distribution(name) not in covered}
    assert not missing, f"the train extra (with the core dependencies) lacks {missing}"
    gsplat = next(r for r in _pyproject()["project"]["optional-dependencies"]["train"] if r.startswith("gsplat"))
    assert gsplat.replace(" ", "") == "gsplat>=1.5,<1.6"
