"""`run_local(runner="docker")` refuses clearly, before creating anything, when it cannot run the stage images (the
containerised run itself: tests/images/test_pipeline_in_containers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from splatflow.errors import InputError


def test_unknown_runner_is_refused(tmp_path: Path, data_dir: Path) -> None:
    from splatflow_kfp.pipelines.local import run_local

    with pytest.raises(InputError, match="unknown runner 'kubernetes'") as err:
        run_local(data_dir / "photos" / "lund", tmp_path / "out", runner="kubernetes")
    assert "subprocess, docker" in (err.value.hint or "")
    assert not (tmp_path / "out").exists()


def test_no_engine_at_docker_host_is_refused_before_any_output(tmp_path: Path, data_dir: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from splatflow_kfp.pipelines.local import run_local

    sock = tmp_path / "nothing-listens.sock"
    monkeypatch.setenv("DOCKER_HOST", f"unix://{sock}")
    with pytest.raises(InputError, match=f"no Docker-compatible engine answers at unix://{sock}") as err:
        run_local(data_dir / "photos" / "lund", tmp_path / "out", runner="docker")
    assert "podman system service" in (err.value.hint or "") and "DOCKER_HOST" in (err.value.hint or "")
    assert not (tmp_path / "out").exists()
