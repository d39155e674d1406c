"""The `cluster` marker's gate (tests/conftest.py): each cluster test runs only where what it needs is there, so
KFP_HOST alone does not start the kube-context tests (doctor, server-side dry run), nor a kubeconfig the KFP test."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

# tests/conftest.py by path: "conftest" alone may name tests/pipeline/conftest.py when the whole suite runs
_spec = importlib.util.spec_from_file_location("splatflow_tests_conftest", Path(__file__).parents[1] / "conftest.py")
assert _spec is not None and _spec.loader is not None
_conftest = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_conftest)
cluster_skip_reason = _conftest.cluster_skip_reason


def test_kfp_host_alone_runs_only_the_kfp_test(tmp_path: Path) -> None:
    env = {"KFP_HOST": "http://127.0.0.1:8080"}
    assert cluster_skip_reason("kfp", env, tmp_path) is None
    reason = cluster_skip_reason("kube", env, tmp_path)
    assert reason and "kube context" in reason and str(tmp_path / ".kube" / "config") in reason


def test_a_kube_context_runs_only_the_kube_tests(tmp_path: Path) -> None:
    (tmp_path / ".kube").mkdir()
    (tmp_path / ".kube" / "config").write_text("apiVersion: v1\nkind: Config\n")
    assert cluster_skip_reason("kube", {}, tmp_path) is None
    assert "KFP_HOST" in (cluster_skip_reason("kfp", {}, tmp_path) or "")


def test_kubeconfig_must_name_an_existing_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    assert cluster_skip_reason("kube", {"KUBECONFIG": str(missing)}, tmp_path) is not None
    real = tmp_path / "kubeconfig"
    real.write_text("apiVersion: v1\nkind: Config\n")
    assert cluster_skip_reason("kube", {"KUBECONFIG": f"{missing}:{real}"}, tmp_path) is None
    with pytest.raises(ValueError, match="needs='gpu'"):
        cluster_skip_reason("gpu", {}, tmp_path)


def test_cluster_tests_declare_what_they_need() -> None:
    root = Path(__file__).resolve().parents[1] / "cluster"
    assert 'pytest.mark.cluster(needs="kfp")' in (root / "test_kfp_pipeline.py").read_text()
    for name in ("test_doctor_cluster.py", "test_manifests_cluster.py"):
        assert 'pytest.mark.cluster(needs="kube")' in (root / name).read_text(), name
