"""Build the stage images with docker buildx or podman, whichever is present (``make images``, ``make images-local``).

The images, their Dockerfiles and extras come from ``src/splatflow/spec.py`` only (:func:`build_specs`), so the
images built here are exactly the ones the compiled pipeline names.

Cluster images (``make images``): train and compress from ``images/gpu.Dockerfile``, the other stages from
``images/cpu.Dockerfile``, on the Dockerfiles' default (public) bases; ``--build-arg`` sets a mirror or an
air-gapped registry's bases and index (``BASE_IMAGE``, ``BUILD_BASE``, ``RUNTIME_BASE``, ``PIP_INDEX_URL``,
``TORCH_INDEX``).

Local images (``--local``; ``make images-local``, CI): every stage from the CPU Dockerfile on the local Debian base
(``images/debian-base.sh``), torch from the local wheel folder and pip's CA bundle as this machine's pip is
configured (``pip config list``: find-links, cert), and ``--gpu-deps``: the GPU Dockerfile's Python layer (target
``python``) resolved and ``pip check``ed on the same base with the CPU torch build, one per GPU stage.

    python images/build.py [--local] [--gpu-deps] [--push] [--dry-run] [--stage S ...] [--build-arg K=V ...]
                           [--wheels DIR] [--ca FILE] [--report FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from splatflow.spec import GPU_DOCKERFILE, GPU_STAGES, BuildSpec, build_specs  # noqa: E402
from splatflow.spec import STAGE_NAMES as STAGES  # noqa: E402

LOCAL_BASE = "localhost/splatflow-base:bookworm"
GPU_CHECK_IMAGE = "localhost/splatflow-gpu-python-check"


def detect_engine() -> str:
    """``docker`` when docker with buildx works, else ``podman``; ``ENGINE`` in the environment wins."""
    chosen = os.environ.get("ENGINE", "").strip()
    if chosen:
        return chosen
    if shutil.which("docker") and subprocess.run(["docker", "buildx", "version"], capture_output=True).returncode == 0:
        return "docker"
    if shutil.which("podman"):
        return "podman"
    raise SystemExit("error: neither docker (with buildx) nor podman is installed: install one "
                     "(Debian: images/podman-setup.sh installs podman)")


def pip_config() -> dict[str, str]:
    """This machine's pip settings (``pip config list``: ``global.find-links='/opt/wheels'`` ...), by key suffix."""
    try:
        out = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True,
                             timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    found: dict[str, str] = {}
    for line in out.splitlines():
        key, _, value = line.partition("=")
        found.setdefault(key.rsplit(".", 1)[-1], value.strip().strip("'\""))
    return found


def local_sources() -> tuple[Path | None, Path | None]:
    """(wheel folder holding a torch wheel, CA bundle) from the environment or pip's configuration, if any."""
    config = pip_config()
    wheels = None
    for entry in (os.environ.get("PIP_FIND_LINKS") or config.get("find-links", "")).split():
        path = Path(entry.removeprefix("file://"))
        if path.is_dir() and any(path.glob("torch-*.whl")):
            wheels = path
            break
    cert = os.environ.get("PIP_CERT") or config.get("cert", "")
    return wheels, (Path(cert) if cert and Path(cert).is_file() else None)


def build_command(engine: str, spec: BuildSpec, *, build_args: dict[str, str], platform: str, push: bool,
                  wheels: Path | None, ca: Path | None, target: str | None = None,
                  tag: str | None = None) -> list[str]:
    """One image build: ``docker buildx build ...`` or ``podman build ...`` (context: the repo root)."""
    cmd = [engine, "buildx", "build"] if engine == "docker" else [engine, "build"]
    cmd += ["--platform", platform, "-f", spec.dockerfile, "-t", tag or spec.image]
    args = {"STAGE": spec.stage, "EXTRAS": ",".join(spec.extras), **build_args}
    if spec.stage != "train" or spec.gpu:
        args.pop("KERNELS", None)  # the kernel hook is the CPU train image's
    for key, value in args.items():
        cmd += ["--build-arg", f"{key}={value}"]
    if target:
        cmd += ["--target", target]
    if wheels:
        cmd += ["--build-context", f"wheels={wheels}"]
    if ca:
        cmd += ["--secret", f"id=pip-ca,src={ca}"]
    if engine == "docker":
        cmd.append("--push" if push else "--load")
    return [*cmd, "."]


def image_size(engine: str, image: str) -> int:
    out = subprocess.run([engine, "image", "inspect", "--format", "{{.Size}}", image], capture_output=True,
                         text=True, check=True).stdout
    return int(out.strip())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--local", action="store_true",
                        help="every stage from the CPU Dockerfile on the local Debian base, torch from the local "
                             "wheel folder")
    parser.add_argument("--gpu-deps", action="store_true",
                        help="with --local: resolve and pip-check the GPU images' Python layer on the same base")
    parser.add_argument("--stage", action="append", choices=STAGES, help="only these stages (repeatable)")
    parser.add_argument("--build-arg", action="append", default=[], metavar="KEY=VALUE",
                        help="passed to every build (bases, PIP_INDEX_URL, TORCH_INDEX, KERNELS ...)")
    parser.add_argument("--wheels", type=Path,
                        help="a folder of wheels pip may take first (--local: pip's find-links folder with torch)")
    parser.add_argument("--ca", type=Path,
                        help="a CA bundle for pip, e.g. behind a TLS-inspecting proxy (--local: pip's cert)")
    parser.add_argument("--platform", default="linux/amd64")
    parser.add_argument("--push", action="store_true", help="push each image after building it")
    parser.add_argument("--dry-run", action="store_true", help="print the build commands, run nothing")
    parser.add_argument("--report", type=Path, help="write build seconds and image sizes here (JSON)")
    args = parser.parse_args(argv)

    build_args: dict[str, str] = {}
    for item in args.build_arg:
        key, sep, value = item.partition("=")
        if not sep or not key:
            parser.error(f"--build-arg {item!r}: expected KEY=VALUE")
        build_args[key] = value
    engine = os.environ.get("ENGINE") or ("docker" if args.dry_run else detect_engine())
    wheels, ca = local_sources() if args.local else (None, None)
    wheels, ca = args.wheels or wheels, args.ca or ca
    for what, path in (("--wheels", wheels), ("--ca", ca)):
        if path is not None and not path.exists():
            parser.error(f"{what} {path}: no such file or folder")
    if args.local:
        has_torch = wheels is not None and any(wheels.glob("torch-*.whl"))
        build_args = {"BASE_IMAGE": LOCAL_BASE, **({"TORCH_INDEX": ""} if has_torch else {}), **build_args}
        if not args.dry_run and subprocess.run([engine, "image", "inspect", build_args["BASE_IMAGE"]],
                                               capture_output=True).returncode != 0:
            raise SystemExit(f"error: the base image {build_args['BASE_IMAGE']} is missing: run "
                             "images/debian-base.sh (make images-base) first")
    elif args.gpu_deps:
        parser.error("--gpu-deps checks on the local base: add --local")

    builds: list[tuple[BuildSpec, list[str]]] = []
    for spec in build_specs(cpu_only=args.local):
        if args.stage and spec.stage not in args.stage:
            continue
        builds.append((spec, build_command(engine, spec, build_args=build_args, platform=args.platform,
                                           push=args.push, wheels=wheels, ca=ca)))
    if args.gpu_deps:
        for spec in build_specs():
            if spec.stage not in GPU_STAGES or (args.stage and spec.stage not in args.stage):
                continue
            gpu_args = {"BUILD_BASE": build_args["BASE_IMAGE"], "TORCH_VARIANT": "cpu",
                        "TORCH_INDEX": build_args.get("TORCH_INDEX", "https://download.pytorch.org/whl/cpu")}
            check = BuildSpec(stage=spec.stage, image=f"{GPU_CHECK_IMAGE}:{spec.stage}", dockerfile=GPU_DOCKERFILE,
                              extras=spec.extras)
            builds.append((check, build_command(engine, check, build_args=gpu_args, platform=args.platform,
                                                push=False, wheels=wheels, ca=ca, target="python")))

    report: dict[str, dict[str, float | int | str]] = {}
    for spec, cmd in builds:
        print(shlex.join(cmd), flush=True)
        if args.dry_run:
            continue
        started = time.monotonic()
        if subprocess.run(cmd, cwd=ROOT).returncode != 0:
            print(f"error: building {spec.image} failed (the build's output is above)", file=sys.stderr)
            return 1
        if args.push and engine != "docker":
            subprocess.run([engine, "push", spec.image], check=True)
        entry: dict[str, float | int | str] = {"image": spec.image, "dockerfile": spec.dockerfile,
                                               "seconds": round(time.monotonic() - started, 1)}
        if not (args.push and engine == "docker"):  # buildx --push leaves no local image to measure
            entry["bytes"] = image_size(engine, spec.image)
        report[spec.image] = entry
    if report:
        print(f"\n{'image':60s} {'size':>9s} {'build':>7s}")
        for entry in report.values():
            size = f"{int(entry['bytes']) / 1e6:.0f} MB" if "bytes" in entry else "-"
            print(f"{entry['image']!s:60s} {size:>9s} {entry['seconds']:>6.0f}s")
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps({"engine": engine, "images": list(report.values())}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
