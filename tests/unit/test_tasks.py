"""splatflow.tasks: a stage's failure recorded for notify (never masking the stage's error), read back per run."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from splatflow.errors import InputError, SfmError
from splatflow.tasks import STAGES, failure_uri, read_failure, record_failure, task_output

RUN = "6f1c2a9e-0d4b-4c1e-9a51-1f2e3d4c5b6a"


def _path(uri: str) -> Path:
    return Path(uri.removeprefix("file://"))


def test_a_failure_is_recorded_and_the_same_error_propagates(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPLATFLOW_SMTP_PASSWORD", "pw-do-not-leak-1234")
    out = (tmp_path / "out").as_uri()
    error = SfmError("only 0 of 4 images\nregistered (password pw-do-not-leak-1234)", hint="take more photos")
    with pytest.raises(SfmError) as raised, record_failure("sfm", out, RUN):
        raise error
    assert raised.value is error  # not wrapped, not replaced
    record_file = _path(failure_uri(out, RUN, "sfm"))
    assert record_file == tmp_path / "out" / ".splatflow" / "runs" / RUN / "failed" / "sfm.json"
    record = json.loads(record_file.read_text())
    assert set(record) == {"stage", "error", "time"} and record["stage"] == "sfm"
    assert record["error"] == ("SfmError: only 0 of 4 images registered (password [redacted]) "
                               "(take more photos)")  # one line, secrets redacted
    assert "pw-do-not-leak" not in record_file.read_text()
    assert read_failure(out, RUN) == record
    assert read_failure(out, "another-run") is None  # run-scoped


def test_a_record_that_cannot_be_written_never_masks_the_error(tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "out"
    blocker.write_text("a file where the output folder should be")  # writing below it fails
    error = ValueError("the stage's own error")
    with caplog.at_level(logging.WARNING, "splatflow.tasks"), pytest.raises(ValueError) as raised, \
            record_failure("train", blocker.as_uri(), RUN):
        raise error
    assert raised.value is error and raised.value.__cause__ is None
    assert "could not record the failure of train" in caplog.text
    with pytest.raises(KeyError), record_failure("train", "gs://unsupported/scheme", "bad/run id"):
        raise KeyError("still this one")


def test_success_removes_an_earlier_attempts_record_and_the_latest_failure_wins(tmp_path: Path) -> None:
    out = (tmp_path / "out").as_uri()
    with pytest.raises(OSError), record_failure("ingest", out, RUN):
        raise OSError("connection reset by peer")  # a first attempt fails ...
    assert read_failure(out, RUN)["stage"] == "ingest"  # type: ignore[index]
    with record_failure("ingest", out, RUN):
        pass  # ... its retry succeeds: the run has no failure any more
    assert read_failure(out, RUN) is None
    for stage, when in (("sfm", "2026-01-01T10:00:00Z"), ("train", "2026-01-01T11:00:00Z")):
        path = _path(failure_uri(out, RUN, stage))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"stage": stage, "error": f"{stage} broke", "time": when}))
    _path(failure_uri(out, RUN, "compress")).write_text("not json")  # ignored, not fatal
    assert read_failure(out, RUN) == {"stage": "train", "error": "train broke", "time": "2026-01-01T11:00:00Z"}
    assert STAGES == ("ingest", "sfm", "train", "compress", "publish")


def test_task_outputs_are_protobuf_safe() -> None:
    report = {"a": None, "b": float("nan"), "c": Path("/x"), "d": [1, None, 2.5]}
    assert task_output(report) == {"c": "/x", "d": [1, 2.5]}


def test_train_checkpoints_live_beside_the_failure_records() -> None:
    from splatflow.tasks import checkpoint_uri

    assert checkpoint_uri("s3://bucket/out/", "run-7") == "s3://bucket/out/.splatflow/runs/run-7/checkpoints"
    assert failure_uri("s3://bucket/out", "run-7", "train").startswith("s3://bucket/out/.splatflow/runs/run-7/")
    with pytest.raises(InputError):
        checkpoint_uri("s3://bucket/out", "../escape")
