"""compress names the problem with its input: a folder, a header longer than 64 KiB (valid), a header that
never ends."""

from __future__ import annotations

from pathlib import Path

import pytest

from splatflow.cli import main
from splatflow.io.ply import read_ply, write_ply


def test_a_folder_is_named_as_a_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "scene").mkdir()
    assert main(["compress", str(tmp_path / "scene"), str(tmp_path / "out.sog")]) == 2
    err = capsys.readouterr().err
    assert "is a folder, not a PLY file" in err and "hint:" in err and "no such file" not in err
    assert not (tmp_path / "out.sog").exists()


def test_a_valid_header_over_64_kib_compresses(data_dir: Path, tmp_path: Path) -> None:
    cloud = read_ply(data_dir / "splats" / "fruit_drops_minimal.ply")
    ply = tmp_path / "long-header.ply"
    write_ply(cloud, ply)
    data = ply.read_bytes()
    at = data.index(b"\n") + 1  # after "ply": many comment lines, as some exporters write
    comments = b"".join(b"comment %06d exported with a very talkative tool\n" % i for i in range(2000))
    assert len(comments) > 64 * 1024
    ply.write_bytes(data[:at] + data[at:data.index(b"\n", at) + 1] + comments + data[data.index(b"\n", at) + 1:])
    assert main(["compress", str(ply), str(tmp_path / "out.sog")]) == 0
    assert (tmp_path / "out.sog").stat().st_size > 0


def test_a_header_that_never_ends_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ply = tmp_path / "bad.ply"
    ply.write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 10\n" + b"comment x\n" * 200_000)
    assert main(["compress", str(ply), str(tmp_path / "out.sog")]) == 2
    err = capsys.readouterr().err
    assert "does not end within 1024 KiB" in err and not (tmp_path / "out.sog").exists()
