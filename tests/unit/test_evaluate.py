"""`splatflow evaluate`: identical, shifted, reordered, thinned and lower-SH candidates, SOG input, bad input, CLI."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from splatflow.cameras import Camera, intrinsics, look_at
from splatflow.cli import main
from splatflow.errors import InputError
from splatflow.evaluate import evaluate, match_splats
from splatflow.gaussians import GaussianCloud
from splatflow.io.ply import read_ply, write_ply
from splatflow.metrics import MAX_PSNR

SIZE = (64, 48)


@pytest.fixture(scope="module")
def cloud(data_dir: Path) -> GaussianCloud:
    """1,500 splats of a real SH-degree-3 scene."""
    full = read_ply(data_dir / "splats" / "fruit_drops_minimal.ply")
    return full.subset(np.arange(0, len(full), 3)[:1500])


@pytest.fixture(scope="module")
def source(cloud: GaussianCloud, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_ply(cloud, tmp_path_factory.mktemp("eval") / "source.ply")


def test_a_file_against_itself_is_identical(source: Path) -> None:
    r = evaluate(source, source, views=2, size=SIZE)
    assert r["identical"] and r["psnr"] == MAX_PSNR and r["ssim"] == 1.0
    assert [v["camera"] for v in r["views"]] == ["orbit_000", "orbit_001"]
    assert all(v["coverage"] > 0.05 for v in r["views"])
    assert r["match"] == {"method": "index"}
    assert all(row["max"] == 0.0 for row in r["attributes"].values())
    assert set(r["attributes"]) == {"position", "log_scale", "color", "opacity", "rotation", "sh_rest"}
    assert r["bytes_per_splat"]["source"] == pytest.approx(source.stat().st_size / 1500, abs=1e-3)
    assert r["notes"] == []


def test_a_shifted_copy_scores_lower(cloud: GaussianCloud, source: Path, tmp_path: Path) -> None:
    small = write_ply(replace(cloud, means=cloud.means + np.float32(0.002)), tmp_path / "small.ply")
    large = write_ply(replace(cloud, means=cloud.means + np.float32(0.02)), tmp_path / "large.ply")
    r_small = evaluate(source, small, views=2, size=SIZE)
    r_large = evaluate(source, large, views=2, size=SIZE)
    assert not r_small["identical"]
    assert 10.0 < r_large["psnr"] < r_small["psnr"] < 60.0
    assert r_small["ssim"] < 1.0 and r_large["ssim"] < r_small["ssim"]
    assert r_small["match"]["method"] == "index"  # a shifted copy in the same order is paired by index
    pos = r_small["attributes"]["position"]
    assert pos["mean"] == pytest.approx(0.002 * np.sqrt(3), rel=1e-3)
    assert r_small["attributes"]["color"]["max"] == 0.0


def test_a_reordered_copy_is_matched_by_position(cloud: GaussianCloud, source: Path, tmp_path: Path) -> None:
    perm = np.random.default_rng(1).permutation(len(cloud))
    shuffled = write_ply(cloud.subset(perm), tmp_path / "shuffled.ply")
    r = evaluate(source, shuffled, views=1, size=SIZE)
    assert r["psnr"] > 60.0  # the same splats: only the order of equal-depth splats could differ
    assert r["match"]["method"] == "nearest" and r["match"]["unique_fraction"] == 1.0
    assert all(row["max"] == 0.0 for row in r["attributes"].values())
    # an explicit permutation gives the same table; a wrong one is refused
    assert evaluate(source, shuffled, views=1, size=SIZE, permutation=perm)["attributes"] == r["attributes"]
    with pytest.raises(InputError, match="permutation"):
        evaluate(source, shuffled, views=1, size=SIZE, permutation=perm[:-1])
    # forcing index matching shows how wrong the pairing would be
    index, how = match_splats(cloud, cloud.subset(perm), "index")
    assert how == {"method": "index"} and (index == np.arange(len(cloud))).all()


@pytest.mark.parametrize("shift", [0.0, 2e-5])
def test_a_partly_reordered_copy_is_paired_correctly(cloud: GaussianCloud, source: Path, tmp_path: Path,
                                                     shift: float) -> None:
    """The first 70% in the source's order, the rest shuffled (as a tool that re-sorts part of a file): index
    pairing where the order holds, nearest position where it does not, so the table is the true one."""
    n = len(cloud)
    perm = np.arange(n)
    tail = np.arange(int(0.7 * n), n)
    perm[tail] = np.random.default_rng(2).permutation(tail)
    cand = cloud.subset(perm)
    cand = replace(cand, means=cand.means + np.float32(shift))
    path = write_ply(cand, tmp_path / "partly.ply")
    r = evaluate(source, path, views=1, size=SIZE)
    truth = evaluate(source, path, views=1, size=SIZE, permutation=perm)
    assert r["match"]["method"] == "mixed"
    assert 0.25 * n <= r["match"]["nearest_pairs"] <= 0.3 * n and r["match"]["unique_fraction"] == 1.0
    assert r["attributes"] == truth["attributes"]
    assert r["attributes"]["color"]["max"] == 0.0 and r["attributes"]["rotation"]["max"] == 0.0
    assert r["attributes"]["position"]["mean"] == pytest.approx(shift * np.sqrt(3), abs=1e-7)
    # pairing by index alone would compare unrelated splats in the shuffled part
    forced = evaluate(source, path, views=1, size=SIZE, match="index")
    assert forced["attributes"]["color"]["mean"] > 10 * max(r["attributes"]["color"]["mean"], 0.01)


def test_different_splat_counts_compare_renders_only(cloud: GaussianCloud, source: Path, tmp_path: Path) -> None:
    thinned = write_ply(cloud.subset(np.arange(0, len(cloud), 2)), tmp_path / "thin.ply")
    r = evaluate(source, thinned, views=2, size=SIZE)
    assert r["splats"] == {"source": 1500, "candidate": 750}
    assert r["attributes"] is None and r["match"] is None
    assert any("splat counts differ" in n and "attribute table is skipped" in n for n in r["notes"])
    assert 5.0 < r["psnr"] < 60.0


def test_lower_sh_degree_is_noted(cloud: GaussianCloud, source: Path, tmp_path: Path) -> None:
    lower = write_ply(cloud.with_sh_degree(1), tmp_path / "sh1.ply")
    r = evaluate(source, lower, views=2, size=SIZE)
    assert r["sh_degree"] == {"source": 3, "candidate": 1}
    assert any("SH degree differs: source 3, candidate 1" in n for n in r["notes"])
    assert r["attributes"]["sh_rest"]["max"] == 0.0  # the common band is untouched
    assert 20.0 < r["psnr"] < MAX_PSNR  # only the dropped view-dependent colour differs


def test_cameras_that_see_nothing(source: Path, tmp_path: Path) -> None:
    away = Camera(look_at(np.array([0, 0, 50.0]), np.array([0, 0, 100.0]), np.array([0, -1.0, 0])),
                  intrinsics(*SIZE), *SIZE, "away")
    with pytest.raises(InputError, match="none of the 2 cameras sees the source splats"):
        evaluate(source, source, cameras=[away, away])
    cams = np.stack([away.viewmat] * 2)
    np.savez(tmp_path / "away.npz", viewmats=cams, Ks=np.stack([away.K] * 2), width=SIZE[0], height=SIZE[1])
    assert main(["evaluate", str(source), str(source), "--cameras", str(tmp_path / "away.npz")]) == 2


def test_sog_candidate(data_dir: Path, tmp_path: Path) -> None:
    """A SOG written by PlayCanvas's tools, against its own decode written as PLY: identical renders."""
    decode = pytest.importorskip("splatflow.sog.decode", reason="the SOG decoder is not in this checkout")
    meta = data_dir / "sog-reference" / "playbot-lod3-v2" / "meta.json"
    cloud, nbytes, _ = decode.read_sog(meta)
    ply = write_ply(cloud, tmp_path / "decoded.ply")
    r = evaluate(ply, meta, views=1, size=(48, 48))
    assert r["candidate_kind"] == "sog-v2" and r["bytes"]["candidate"] == nbytes
    assert r["identical"] and r["attributes"]["position"]["max"] == 0.0


def test_cli_evaluate(source: Path, cloud: GaussianCloud, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cand = write_ply(replace(cloud, opacities=cloud.opacities - 1.0), tmp_path / "faded.ply")
    out = tmp_path / "report.json"
    assert main(["evaluate", str(source), str(cand), "--views", "2", "--size", "64x48", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "orbit_001" in text and "PSNR dB" in text and "opacity" in text
    report = json.loads(out.read_text())
    assert report["cameras"]["width"] == 64 and len(report["views"]) == 2
    assert report["attributes"]["opacity"]["mean"] > 1.0 and report["attributes"]["position"]["max"] == 0.0
    assert f"{report['psnr']:.2f}" in text
    # bad input: exit code 2 with a clear message, and no report written
    assert main(["evaluate", str(source), str(tmp_path / "missing.ply"), "--json", str(tmp_path / "r2.json")]) == 2
    assert main(["evaluate", str(source), str(cand), "--size", "64by48"]) == 2
    err = capsys.readouterr().err
    assert "missing.ply: no such file" in err and "image size '64by48' is not WxH" in err
    assert not (tmp_path / "r2.json").exists()
