"""Progress output: a bar on a terminal, plain log lines (at most one per interval) in pods and CI logs."""

from __future__ import annotations

import logging

import pytest

from splatflow import progress as progress_mod
from splatflow.progress import progress


def test_logs_get_plain_lines_with_counts(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(progress_mod, "is_interactive", lambda: False)
    with caplog.at_level(logging.INFO, logger="splatflow"):
        assert list(progress(range(5), total=5, desc="frames", every=0.0)) == [0, 1, 2, 3, 4]
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("frames: 1/5") and lines[-1].startswith("frames: 5/5") and len(lines) == 5
    assert "\r" not in capsys.readouterr().err  # no bar drawn into a log
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="splatflow"):
        list(progress(range(5), total=5, desc="frames", every=3600.0))
    assert caplog.records == []  # at most one line per interval


def test_a_terminal_gets_a_bar_and_no_log_lines(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(progress_mod, "is_interactive", lambda: True)
    with caplog.at_level(logging.INFO, logger="splatflow"):
        assert sum(progress(range(50), total=50, desc="train", every=0.0)) == sum(range(50))
    err = capsys.readouterr().err
    assert "train:" in err and "0/50 [" in err and "it/s" in err  # tqdm's bar on stderr
    assert caplog.records == []
