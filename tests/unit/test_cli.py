"""The CLI: help on every command, `info`, one-line errors with exit codes scripts can rely on."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from splatflow.cli import build_parser, main


def test_help_on_every_command() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    names = list(sub.choices)  # type: ignore[union-attr]
    assert "info" in names
    for name in names:
        with pytest.raises(SystemExit) as exc:
            main([name, "--help"])
        assert exc.value.code == 0


def test_info_json(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "--json", str(data_dir / "splats" / "fruit_drops_minimal.ply")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["splats"] == 4721 and out["sh_degree"] == 3 and out["invalid_splats"] == 0
    assert out["bytes_per_splat"] == pytest.approx(1191246 / 4721, abs=1e-3)
    assert len(out["bounds"]["min"]) == 3


def test_errors_are_one_line_with_exit_code(tmp_path: Path) -> None:
    bad = tmp_path / "bad.ply"
    bad.write_text("hello")
    proc = subprocess.run([sys.executable, "-m", "splatflow.cli", "info", str(bad)], capture_output=True, text=True)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines[0].startswith("error: ") and "not a PLY file" in lines[0]
    assert lines[1].startswith("hint: ")
    assert "Traceback" not in proc.stderr
