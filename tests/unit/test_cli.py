"""The CLI: help on every command, `info`, one-line errors with exit codes scripts can rely on."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
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


@pytest.mark.parametrize(("ref", "kind", "splats", "sh"), [
    ("playbot-lod3-v2/meta.json", "sog-v2", 31_000, 2),
    ("playcanvas-logo-v1", "sog-v1", None, 0),
])
def test_info_reads_playcanvas_sog_files(data_dir: Path, capsys: pytest.CaptureFixture[str], ref: str, kind: str,
                                         splats: int | None, sh: int) -> None:
    path = data_dir / "sog-reference" / ref
    assert main(["info", "--json", str(path)]) == 0
    out = json.loads(capsys.readouterr().out)
    meta = json.loads((path if path.name == "meta.json" else path / "meta.json").read_text())
    count = meta.get("count") or meta["means"]["shape"][0]
    assert out["kind"] == kind and out["splats"] == count == (splats or count) and out["sh_degree"] == sh
    assert out["invalid_splats"] == 0
    files = (path.parent if path.name == "meta.json" else path).iterdir()
    assert out["file_bytes"] == sum(f.stat().st_size for f in files if f.suffix in (".json", ".webp"))
    assert ("sh_rest_rgb" in out["attributes"]) == bool(sh)
    # the decoded positions lie inside the bounds meta.json declares (log-encoded mins/maxs)
    lo = np.sign(meta["means"]["mins"]) * np.expm1(np.abs(meta["means"]["mins"]))
    hi = np.sign(meta["means"]["maxs"]) * np.expm1(np.abs(meta["means"]["maxs"]))
    assert np.all(np.array(out["bounds"]["min"]) >= lo - 1e-4) and np.all(np.array(out["bounds"]["max"]) <= hi + 1e-4)


def test_info_text_on_our_own_sog_bundle(tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from splatflow.stages.compress import compress

    sog = tmp_path / "fruit.sog"
    compress(data_dir / "splats" / "fruit_drops_minimal.ply", sog, device="cpu")
    capsys.readouterr()
    assert main(["info", str(sog)]) == 0
    text = capsys.readouterr().out
    assert "(sog-v2)" in text and "4,721" in text and f"{sog.stat().st_size:,} bytes" in text


def test_errors_are_one_line_with_exit_code(tmp_path: Path) -> None:
    bad = tmp_path / "bad.ply"
    bad.write_text("hello")
    proc = subprocess.run([sys.executable, "-m", "splatflow.cli", "info", str(bad)], capture_output=True, text=True)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines[0].startswith("error: ") and "not a PLY file" in lines[0]
    assert lines[1].startswith("hint: ")
    assert "Traceback" not in proc.stderr


def _commands() -> dict[str, object]:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return dict(sub.choices)  # type: ignore[arg-type]


def test_no_command_takes_abbreviated_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`--overwrit` is not `--overwrite`: refused against the command's own usage, with the closest option, and
    before anything runs (no output, exit 2)."""
    assert build_parser().allow_abbrev is False
    assert all(p.allow_abbrev is False for p in _commands().values())  # type: ignore[attr-defined]
    out = tmp_path / "o.sog"
    for args, command, wrong, right in (
            (["compress", "in.ply", str(out), "--overwrit"], "compress", "--overwrit", "--overwrite"),
            (["decompress", "in.sog", "--overwrit", str(out)], "decompress", "--overwrit", "--overwrite"),
            (["run", "photos", str(out), "--qualty", "tiny"], "run", "--qualty", "--quality"),
            (["publish", str(out), "--scene", "s", "--run-id", "r", "--sog", "x.sog", "--no-view"], "publish",
             "--no-view", "--no-viewer")):
        with pytest.raises(SystemExit) as exc:
            main(args)
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert f"usage: splatflow {command}" in err, err
        assert f"splatflow {command}: error: unrecognized arguments: {wrong}" in err
        assert f"did you mean {right}?" in err and str(out) not in err.splitlines()[-1]
    assert not out.exists()
    with pytest.raises(SystemExit):
        main(["--verbos", "info", "x"])
    assert "did you mean --verbose?" in capsys.readouterr().err


def test_run_help_lists_the_allowed_values(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = capsys.readouterr().out
    flat = " ".join(text.split())
    assert "--quality QUALITY" in text and "(one of: tiny, cpu, preview, standard, high; default 'cpu')" in flat
    assert "--sh-degree SH_DEGREE" in text and "(a whole number from 0 to 3; default 1)" in flat
    assert "(a number from 0 to 99; 0: full precision; default 0.0)" in flat  # --target-psnr
    assert "s3://bucket/prefix" in text and "--verbose" in text
    with pytest.raises(SystemExit) as exc:
        main(["run", "--quality", "best"])
    assert exc.value.code == 2 and \
        "argument --quality: 'best': quality must be one of: tiny, cpu, preview" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["run", "--max-splats", "0"])
    assert exc.value.code == 2 and "'0': max_splats must be a whole number from 1 to 50,000,000" in \
        capsys.readouterr().err
    # the top-level -v and run's own --verbose do not overwrite each other
    args = build_parser().parse_args(["-v", "run"])
    assert args.verbose is True and args.run_verbose is False
    assert build_parser().parse_args(["run", "--verbose"]).run_verbose is True


@pytest.mark.parametrize("command", [
    ["train", "sfm", "out"],
    ["compress", "in.ply", "out.sog"],
    ["evaluate", "a.ply", "b.ply"],
])
def test_an_unknown_device_is_one_line_and_exit_2_everywhere(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                            command: list[str]) -> None:
    """`--device foo` is refused by the one resolver (splatflow.devices) before any file is looked at, with the
    same message for every command."""
    code = main([command[0], *(str(tmp_path / a) for a in command[1:]), "--device", "foo"])
    err = capsys.readouterr().err.splitlines()
    assert code == 2
    assert err == ["error: unknown device 'foo'", "hint: use --device auto, cpu, cuda or cuda:N"]
    assert list(tmp_path.iterdir()) == []  # nothing written
