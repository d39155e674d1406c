"""The codec and its tools on a real file with fully opaque splats: guitar.ply stores 667 splats with opacity
+inf (the logit of alpha 1), as real trainers export them. They are valid splats everywhere: `info` counts
them as opaque, `compress` keeps them without flags (alpha 255), `evaluate` compares the source whole."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from splatflow.cli import main
from splatflow.evaluate import evaluate
from splatflow.io.ply import read_ply, write_ply
from splatflow.sog.decode import read_sog
from splatflow.stages.compress import compress

OPAQUE = 667


@pytest.fixture(scope="module")
def guitar(data_dir: Path) -> Path:
    return data_dir / "splats" / "guitar.ply"


@pytest.fixture(scope="module")
def guitar_sog(guitar: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("guitar") / "guitar.sog"
    report = compress(guitar, out, device="cpu")   # no --drop-invalid: nothing in guitar.ply is invalid
    return out, report


def test_info_counts_opaque_splats_as_valid(guitar: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "--json", str(guitar)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["invalid_splats"] == 0 and out["kinds"]["opaque"] == OPAQUE
    assert out["kinds"]["nan"] == 0 and out["kinds"]["infinite_position"] == 0
    assert out["nonfinite_values"]["opacities"] == OPAQUE
    assert main(["info", str(guitar)]) == 0
    text = capsys.readouterr().out
    assert "opaque splats   667" in text and "invalid splats  0" in text and "NaN splats      0" in text


def test_guitar_compresses_without_flags_and_keeps_its_opaque_splats(guitar: Path,
                                                                      guitar_sog: tuple[Path, dict]) -> None:
    from scipy.spatial import cKDTree

    out, report = guitar_sog
    src = read_ply(guitar)
    assert report["splats"] == len(src) == 90_854 and report["dropped_invalid"] == 0
    dec, _, _ = read_sog(out)
    assert len(dec) == len(src)
    alpha8 = np.round(dec.alphas().astype(np.float64) * 255)
    opaque = np.isposinf(src.opacities)
    _, nearest = cKDTree(dec.means).query(src.means[opaque])
    assert (alpha8[nearest] == 255).all()
    assert np.isfinite(report["errors"]["opacity"]["max"]) and report["errors"]["opacity"]["max"] <= 0.51


def test_nan_positions_are_still_refused(tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cloud = read_ply(data_dir / "splats" / "fruit_drops_minimal.ply")
    cloud.means[[10, 20], 0] = np.nan
    ply = write_ply(cloud, tmp_path / "nan.ply")
    assert main(["compress", str(ply), str(tmp_path / "o.sog")]) == 2
    err = capsys.readouterr().err
    assert "2 of 4721 splats are invalid (2 with NaN)" in err and "--drop-invalid" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nan.ply"]
    assert main(["compress", str(ply), str(tmp_path / "o.sog"), "--drop-invalid", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["splats"] == 4719


def test_evaluate_pairs_a_sog_by_position_whatever_the_match_option(guitar: Path,
                                                                    guitar_sog: tuple[Path, dict]) -> None:
    """guitar.ply is nearly in Z-order already, so index pairing against its SOG once looked plausible and gave
    19.75 colour levels and 22 degrees of mean error; a SOG is paired by position by construction."""
    out, _ = guitar_sog
    auto = evaluate(guitar, out, views=1, size=(32, 32), match="auto")
    nearest = evaluate(guitar, out, views=1, size=(32, 32), match="nearest")
    assert auto["splats"] == {"source": 90_854, "candidate": 90_854}    # the source whole, opaque included
    assert auto["match"]["method"] == "nearest"
    assert auto["attributes"] == nearest["attributes"]
    assert auto["attributes"]["color"]["mean"] < 1.0 and auto["attributes"]["rotation"]["mean"] < 1.0
