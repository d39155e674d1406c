"""Opt-in (runs only with KFP_HOST): the compiled pipeline against a real Kubeflow Pipelines (auth as in
`make upload`).

Uploads a new version and checks KFP lists it. With SPLATFLOW_CLUSTER_PARAMS=<params file> it also runs the
pipeline, waits (SPLATFLOW_CLUSTER_TIMEOUT seconds, default 3 h) and checks the published manifest.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.cluster(needs="kfp")


@pytest.fixture
def kfp_host() -> str:
    host = os.environ.get("KFP_HOST")
    if not host:
        pytest.skip("set KFP_HOST (and KFP_TOKEN / KFP_COOKIE, KFP_NAMESPACE) to test against a real KFP")
    return host


def test_upload_a_version_and_optionally_run_it(kfp_host: str, tmp_path: Path) -> None:
    from splatflow.stages.publish import scene_name
    from splatflow_kfp.pipelines.client import KfpSettings, connect, load_params, start_run, upload, wait
    from splatflow_kfp.pipelines.splat_pipeline import compile_pipeline

    package = compile_pipeline(tmp_path / "pipeline.yaml")
    settings = KfpSettings.from_env()
    client = connect(settings)
    version = f"test-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
    ids = upload(client, package, version=version, namespace=settings.namespace)
    listed = client.list_pipeline_versions(ids["pipeline_id"], page_size=100).pipeline_versions or []
    assert ids["version_id"] in {v.pipeline_version_id for v in listed}

    params_file = os.environ.get("SPLATFLOW_CLUSTER_PARAMS")
    if not params_file:
        return
    params = load_params(Path(params_file), package)
    started = start_run(client, settings, ids, params)
    state = wait(client, started["run_id"], timeout_s=float(os.environ.get("SPLATFLOW_CLUSTER_TIMEOUT", 3 * 3600)))
    assert state == "SUCCEEDED", f"run {started['run_url']} ended {state}"
    from splatflow.stages.publish import read_manifest

    manifest = read_manifest(params["output_uri"], scene_name(params["source_uri"]), started["run_id"])
    assert manifest is not None and manifest["summary"]["splats"] > 0
