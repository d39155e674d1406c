# splatflow stage images on CPU: ingest, sfm, publish, notify (and CPU builds of train and compress for local and
# CI runs). One Dockerfile, the stage chosen by build arguments; `make images` passes them from src/splatflow/spec.py:
#
#   docker buildx build -f images/cpu.Dockerfile --build-arg STAGE=sfm --build-arg EXTRAS=sfm,storage \
#       -t <registry>/splatflow-sfm:<tag> .          (podman build takes the same arguments)
#
# Build context = the repo root (.dockerignore keeps everything but the package sources out).
# KFP runs each stage as a lightweight component (install_kfp_package=False): kfp is baked in, pods never
# pip-install at start-up. The final stage holds the venv and a non-root user (uid 10001); no compilers, no caches.
#
# Build arguments (defaults: the public bases and indexes):
#   BASE_IMAGE     a Debian-like image with python3 and its venv module (default: docker.io/library/python:3.12.12-
#                  slim-bookworm, fully qualified so podman needs no short-name alias; CI: a local debootstrap
#                  image, images/debian-base.sh)
#   STAGE, EXTRAS  the stage (labels, the start-up check) and the splatflow extras it installs
#   PIP_INDEX_URL  the package index or a mirror of it; TORCH_INDEX: where the CPU torch wheel comes from (empty:
#                  the package index and the wheel folder only)
#   --build-context wheels=DIR   a folder of wheels pip may take first (e.g. a local torch wheel)
#   --secret id=pip-ca,src=FILE  a CA bundle for pip (a TLS-inspecting proxy); never stored in a layer
#   KERNELS=1      train: build the training kernels' cache with g++ in the builder (see below)
ARG BASE_IMAGE=docker.io/library/python:3.12.12-slim-bookworm

# an empty wheel folder unless --build-context wheels=DIR replaces it
FROM scratch AS wheels

# ---- deps: a virtual environment with everything splatflow[EXTRAS] and kfp need, but not splatflow itself
FROM ${BASE_IMAGE} AS deps
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ARG PIP_INDEX_URL=https://pypi.org/simple
ARG KFP_VERSION=2.17.3
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore PIP_FIND_LINKS=/wheels
# three folders, three layers in the final image: /opt/torch, /opt/venv (the other requirements) and
# /opt/splatflow (the source; a few MB). torch and splatflow reach the venv's path through .pth files.
RUN python3 -m venv /opt/venv \
    && site="$(/opt/venv/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')" \
    && echo /opt/torch > "$site/torch.pth" && echo /opt/splatflow/site > "$site/splatflow.pth"
ENV PATH=/opt/splatflow/site/bin:/opt/venv/bin:$PATH
COPY images/constraints.txt /src/constraints.txt
# torch first: every stage image shares it as one identical layer, built and pulled once (most of an image). CPU
# torch (the +cpu build): PyPI's default wheel would pull several GB of CUDA libraries no CPU stage uses.
RUN --mount=type=secret,id=pip-ca --mount=type=bind,from=wheels,target=/wheels \
    if [ -s /run/secrets/pip-ca ]; then export PIP_CERT=/run/secrets/pip-ca; fi \
    && pip install -c /src/constraints.txt --target /opt/torch ${TORCH_INDEX:+--extra-index-url "$TORCH_INDEX"} \
        "torch==${TORCH_VERSION}+cpu" \
    && python -c "import importlib.util as u; o = u.find_spec('torch').origin; assert o.startswith('/opt/torch/'), o"
# the other requirements, keyed on pyproject.toml and the constraints only (a source change rebuilds none of them):
# kfp and the core dependencies (a layer every stage shares), then the stage's extras (shared by equal extras)
COPY pyproject.toml images/requirements.py /src/
RUN --mount=type=secret,id=pip-ca --mount=type=bind,from=wheels,target=/wheels \
    if [ -s /run/secrets/pip-ca ]; then export PIP_CERT=/run/secrets/pip-ca; fi \
    && python /src/requirements.py /src/pyproject.toml --core > /tmp/core.txt \
    && pip install -c /src/constraints.txt -r /tmp/core.txt "kfp==${KFP_VERSION}"
ARG EXTRAS=storage
RUN --mount=type=secret,id=pip-ca --mount=type=bind,from=wheels,target=/wheels \
    if [ -s /run/secrets/pip-ca ]; then export PIP_CERT=/run/secrets/pip-ca; fi \
    && python /src/requirements.py /src/pyproject.toml "${EXTRAS}" > /tmp/extras.txt \
    && pip install -c /src/constraints.txt -r /tmp/extras.txt

# ---- build: splatflow (with the KFP layer) into /opt/splatflow/site, every requirement checked
FROM deps AS build
# (build arguments do not carry over from the stage above)
ARG EXTRAS=storage
ARG KFP_VERSION=2.17.3
COPY README.md /src/
COPY src /src/src
# pip check, then a dry run of `pip install splatflow[EXTRAS] kfp` that must find nothing left to install
RUN --mount=type=secret,id=pip-ca --mount=type=bind,from=wheels,target=/wheels \
    if [ -s /run/secrets/pip-ca ]; then export PIP_CERT=/run/secrets/pip-ca; fi \
    && pip install --no-deps --target /opt/splatflow/site /src \
    && pip check \
    && pip install -c /src/constraints.txt --dry-run --quiet "/src[${EXTRAS}]" "kfp==${KFP_VERSION}" \
        --report /tmp/pending.json \
    && python /src/requirements.py --pending /tmp/pending.json
ARG STAGE
RUN test -n "$STAGE" || { echo "build argument STAGE is required (make images sets it)" >&2; exit 2; }
# ---- hook: the train stage's C++ kernels (KERNELS=1, the lead's switch; make images passes it for train).
# Compiled with g++ here, in the builder, by `python -m splatflow.kernels build` into SPLATFLOW_KERNEL_DIR; the
# final stage receives the prebuilt cache only (no compiler). With KERNELS=0 the folder stays empty.
ARG KERNELS=0
# a portable instruction set, not the build machine's (-march=native): the library's cache name hashes it, so the
# final stage's SPLATFLOW_KERNEL_ARCH must be the same value
ARG KERNEL_ARCH=x86-64-v3
ENV SPLATFLOW_KERNEL_DIR=/opt/splatflow/kernels SPLATFLOW_KERNEL_ARCH=${KERNEL_ARCH}
RUN mkdir -p "$SPLATFLOW_KERNEL_DIR" \
    && if [ "$KERNELS" = 1 ]; then \
         apt-get update && apt-get install -y --no-install-recommends g++ \
         && python -m splatflow.kernels build \
         && test -n "$(ls -A "$SPLATFLOW_KERNEL_DIR")"; \
       elif [ "$KERNELS" != 0 ]; then echo "KERNELS must be 0 or 1, not $KERNELS" >&2; exit 2; fi

# ---- runtime: the same base, the venv and a non-root user; no compilers, no pip cache
FROM ${BASE_IMAGE}
# torch first (the same layer in every stage image), then the stage's requirements (the same until pyproject.toml
# or the constraints change), then splatflow and the kernel cache (the only layer a source change touches)
COPY --from=deps /opt/torch /opt/torch
COPY --from=deps /opt/venv /opt/venv
ARG STAGE
LABEL org.opencontainers.image.title="splatflow-${STAGE}"
COPY --from=build /opt/splatflow /opt/splatflow
# SPLATFLOW_KERNEL_DIR: the prebuilt kernel cache (empty unless built with KERNELS=1)
ARG KERNEL_ARCH=x86-64-v3
ENV PATH=/opt/splatflow/site/bin:/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    HOME=/home/splatflow SPLATFLOW_KERNEL_DIR=/opt/splatflow/kernels SPLATFLOW_KERNEL_ARCH=${KERNEL_ARCH}
# KFP's launcher stages artifacts under root-level /s3, /minio and /gcs: make them writable for any uid
RUN groupadd --gid 10001 splatflow \
    && useradd --uid 10001 --gid 10001 --create-home --home-dir /home/splatflow splatflow \
    && install -d -m 1777 /s3 /minio /gcs
WORKDIR /home/splatflow
USER 10001:10001
# fail the build if the stage cannot start as the runtime user: the CLI, the stage and its KFP component import
RUN splatflow --version && python -c "import splatflow_kfp.components.${STAGE}, splatflow.stages.${STAGE}"
# no ENTRYPOINT: KFP (and kfp.local's DockerRunner, which sets only the command) runs `sh -c ... python3 ...`
CMD ["splatflow", "--help"]
