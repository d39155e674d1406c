"""Fixtures for the pipeline tests: the compiled pipeline YAML (compiled once, in a fresh process)."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest
import yaml
from kfp_testing import FAKE_SECRETS, GOLDEN_REGISTRY, GOLDEN_TAG, ROOT


@pytest.fixture(scope="session")
def compiled_yaml(tmp_path_factory: pytest.TempPathFactory) -> str:
    """``python -m splatflow_kfp.pipelines compile`` (what ``make compile`` runs) with a fixed registry/tag and fake
    secrets in the environment; returns the YAML text."""
    out = tmp_path_factory.mktemp("compiled") / "pipeline.yaml"
    env = {**os.environ, **FAKE_SECRETS, "SPLATFLOW_REGISTRY": GOLDEN_REGISTRY, "SPLATFLOW_IMAGE_TAG": GOLDEN_TAG}
    for name in ("SPLATFLOW_S3_SECRET", "SPLATFLOW_NOTIFY_SECRET", "SPLATFLOW_STORAGE_CONFIG",
                 "SPLATFLOW_NOTIFY_CONFIG"):
        env.pop(name, None)
    proc = subprocess.run([sys.executable, "-m", "splatflow_kfp.pipelines", "compile", "--output", str(out)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert f"{GOLDEN_REGISTRY}/splatflow-train:{GOLDEN_TAG}" in proc.stdout
    return out.read_text()


@pytest.fixture(scope="session")
def compiled(compiled_yaml: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(pipeline spec, platform spec) of the compiled pipeline."""
    docs = list(yaml.safe_load_all(compiled_yaml))
    assert len(docs) == 2, "expected the pipeline spec and the kubernetes platform spec"
    return docs[0], docs[1]
