# splatflow stage images on CUDA: train and compress. One Dockerfile, the stage chosen by build arguments;
# `make images` passes them from src/splatflow/spec.py:
#
#   docker buildx build -f images/gpu.Dockerfile --build-arg STAGE=train --build-arg EXTRAS=train,storage \
#       -t <registry>/splatflow-train:<tag> .         (podman build takes the same arguments)
#
# Build context = the repo root (.dockerignore keeps everything but the package sources out).
# KFP runs each stage as a lightweight component (install_kfp_package=False): kfp is baked in, pods never
# pip-install at start-up. A CUDA 12.8 build of torch and gsplat compiled for compute capability 7.5 (T4, g4dn) to
# 9.0 (H100); the node needs an NVIDIA driver >= 570 (CUDA 12.8). The final stage has no compilers or CUDA headers.
#
# Stages:
#   deps     venv, torch, the requirements of splatflow[EXTRAS], gsplat (its Python code; no kernels yet), kfp
#   python   splatflow itself; the whole Python layer resolved and `pip check`ed. CI builds this target on its local
#            Debian base with CPU torch (--target python, TORCH_VARIANT=cpu), so a dependency conflict in the GPU
#            images fails CI too.
#   kernels  gsplat's CUDA kernels compiled ahead of time (nvcc from the devel base), so pods never JIT-compile
#   runtime  the CUDA runtime base, Python, the three folders and a non-root user (uid 10001)
#
# Build arguments (defaults: the public bases and indexes):
#   BUILD_BASE, RUNTIME_BASE   the CUDA devel and runtime images (a Debian/Ubuntu base with apt)
#   STAGE, EXTRAS              the stage and the splatflow extras it installs
#   PIP_INDEX_URL              the package index or a mirror of it
#   TORCH_INDEX, TORCH_VARIANT where torch comes from and which build (cu128: torch==2.13.0+cu128; empty index:
#                              the package index and the wheel folder only)
#   --build-context wheels=DIR   a folder of wheels pip may take first
#   --secret id=pip-ca,src=FILE  a CA bundle for pip (a TLS-inspecting proxy); never stored in a layer
ARG BUILD_BASE=docker.io/nvidia/cuda:12.8.1-devel-ubuntu24.04
ARG RUNTIME_BASE=docker.io/nvidia/cuda:12.8.1-runtime-ubuntu24.04

# an empty wheel folder unless --build-context wheels=DIR replaces it
FROM scratch AS wheels

# ---- deps: a virtual environment with everything splatflow[EXTRAS], gsplat and kfp need, but not splatflow itself
FROM ${BUILD_BASE} AS deps
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu128
ARG TORCH_VARIANT=cu128
ARG GSPLAT_VERSION=1.5.3
ARG PIP_INDEX_URL=https://pypi.org/simple
ARG KFP_VERSION=2.17.3
ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore \
    PIP_FIND_LINKS=/wheels
# the base's python3 (Ubuntu 24.04: 3.12) with venv; apt only when the base lacks them
RUN python3 -c "import ensurepip, venv" 2>/dev/null \
    || { apt-get update && apt-get install -y --no-install-recommends python3 python3-venv \
         && rm -rf /var/lib/apt/lists/*; }
# three folders, three layers in the final image: /opt/torch, /opt/venv (the other requirements, gsplat with its
# kernels) and /opt/splatflow (the source; a few MB). torch and splatflow reach the venv's path through .pth files.
RUN python3 -m venv /opt/venv \
    && site="$(/opt/venv/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')" \
    && echo /opt/torch > "$site/torch.pth" && echo /opt/splatflow/site > "$site/splatflow.pth"
ENV PATH=/opt/splatflow/site/bin:/opt/venv/bin:$PATH
COPY images/constraints.txt /src/constraints.txt
# torch and the NVIDIA libraries it brings first: train and compress share it as one identical layer, pulled once
# per node (most of an image)
RUN --mount=type=secret,id=pip-ca --mount=type=bind,from=wheels,target=/wheels \
    if [ -s /run/secrets/pip-ca ]; then export PIP_CERT=/run/secrets/pip-ca; fi \
    && pip install -c /src/constraints.txt --target /opt/torch ${TORCH_INDEX:+--extra-index-url "$TORCH_INDEX"} \
        "torch==${TORCH_VERSION}+${TORCH_VARIANT}" \
    && python -c "import importlib.util as u; o = u.find_spec('torch').origin; assert o.startswith('/opt/torch/'), o"
# the other requirements, keyed on pyproject.toml and the constraints only (a source change rebuilds none of them):
# kfp, gsplat's Python code (its published wheel; the kernels are compiled in the `kernels` stage) and the core
# dependencies, then the stage's extras
COPY pyproject.toml images/requirements.py /src/
RUN --mount=type=secret,id=pip-ca --mount=type=bind,from=wheels,target=/wheels \
    if [ -s /run/secrets/pip-ca ]; then export PIP_CERT=/run/secrets/pip-ca; fi \
    && python /src/requirements.py /src/pyproject.toml --core > /tmp/core.txt \
    && pip install -c /src/constraints.txt -r /tmp/core.txt "gsplat==${GSPLAT_VERSION}" "kfp==${KFP_VERSION}"
ARG EXTRAS=storage
RUN --mount=type=secret,id=pip-ca --mount=type=bind,from=wheels,target=/wheels \
    if [ -s /run/secrets/pip-ca ]; then export PIP_CERT=/run/secrets/pip-ca; fi \
    && python /src/requirements.py /src/pyproject.toml "${EXTRAS}" > /tmp/extras.txt \
    && pip install -c /src/constraints.txt -r /tmp/extras.txt

# ---- python: splatflow (with the KFP layer) into /opt/splatflow/site, every requirement checked: the Python layer
# CI resolves on its own base (--target python)
FROM deps AS python
# (build arguments do not carry over from the stage above)
ARG EXTRAS=storage
ARG GSPLAT_VERSION=1.5.3
ARG KFP_VERSION=2.17.3
COPY README.md /src/
COPY src /src/src
# pip check, then a dry run of `pip install splatflow[EXTRAS] gsplat kfp` that must find nothing left to install
RUN --mount=type=secret,id=pip-ca --mount=type=bind,from=wheels,target=/wheels \
    if [ -s /run/secrets/pip-ca ]; then export PIP_CERT=/run/secrets/pip-ca; fi \
    && pip install --no-deps --target /opt/splatflow/site /src \
    && pip check \
    && pip install -c /src/constraints.txt --dry-run --quiet "/src[${EXTRAS}]" "gsplat==${GSPLAT_VERSION}" \
        "kfp==${KFP_VERSION}" --report /tmp/pending.json \
    && python /src/requirements.py --pending /tmp/pending.json
ARG STAGE
RUN test -n "$STAGE" || { echo "build argument STAGE is required (make images sets it)" >&2; exit 2; }
RUN python -c "import splatflow_kfp.components.${STAGE}, splatflow.stages.${STAGE}, gsplat"

# ---- kernels: gsplat's CUDA kernels compiled ahead of time for every listed architecture, against the torch above
# (no build isolation, so setuptools and ninja come first), so pods never JIT-compile; ninja leaves the venv once
# the check has passed. FROM deps: a source change does not recompile them.
FROM deps AS kernels
ARG GSPLAT_VERSION=1.5.3
ENV TORCH_CUDA_ARCH_LIST="7.5;8.0;8.6;8.9;9.0"
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3-dev build-essential \
    && rm -rf /var/lib/apt/lists/*
RUN --mount=type=secret,id=pip-ca --mount=type=bind,from=wheels,target=/wheels \
    if [ -s /run/secrets/pip-ca ]; then export PIP_CERT=/run/secrets/pip-ca; fi \
    && pip install -c /src/constraints.txt setuptools==84.2.1 ninja==1.13.2 \
    && MAX_JOBS=4 pip install -c /src/constraints.txt --no-deps --force-reinstall --no-build-isolation \
        --no-binary gsplat "gsplat==${GSPLAT_VERSION}" \
    && python -c "import importlib.util as u; assert u.find_spec('gsplat.csrc'), 'gsplat CUDA extension was not built'" \
    && pip check \
    && pip uninstall -y ninja

# ---- runtime: the CUDA runtime base, Python, the venv and a non-root user; no compilers, no CUDA headers
FROM ${RUNTIME_BASE}
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 libgomp1 ca-certificates \
    && rm -rf /var/lib/apt/lists/*
# torch first (the same layer in both GPU images), then the requirements with gsplat's kernels (the same until
# pyproject.toml or the constraints change), then splatflow (the only layer a source change touches)
COPY --from=deps /opt/torch /opt/torch
COPY --from=kernels /opt/venv /opt/venv
ARG STAGE
LABEL org.opencontainers.image.title="splatflow-${STAGE}"
COPY --from=python /opt/splatflow /opt/splatflow
ENV PATH=/opt/splatflow/site/bin:/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    HOME=/home/splatflow NVIDIA_VISIBLE_DEVICES=all NVIDIA_DRIVER_CAPABILITIES=compute,utility
# KFP's launcher stages artifacts under root-level /s3, /minio and /gcs: make them writable for any uid
RUN groupadd --gid 10001 splatflow \
    && useradd --uid 10001 --gid 10001 --create-home --home-dir /home/splatflow splatflow \
    && install -d -m 1777 /s3 /minio /gcs
WORKDIR /home/splatflow
USER 10001:10001
# fail the build if the stage cannot start (no GPU at build time: imports only)
RUN splatflow --version \
    && python -c "import splatflow_kfp.components.${STAGE}, splatflow.stages.${STAGE}, gsplat, torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
# no ENTRYPOINT: KFP runs `sh -c ... python3 ...` as the container's command
CMD ["splatflow", "--help"]
