"""The viewer page pieces: assets, settings checked by the viewer package's own validator, camera fit geometry."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from splatflow.errors import DependencyMissing, SogError
from splatflow.viewer import page

ROOT = Path(__file__).resolve().parents[2]
PKG = ROOT / "node_modules" / "@playcanvas" / "supersplat-viewer"


def _node(script: str, stdin: str = "") -> str:
    node = shutil.which("node")
    if node is None or not PKG.is_dir():
        pytest.fail("node and node_modules/@playcanvas/supersplat-viewer are needed: run `make install`")
    out = subprocess.run([node, "--input-type=module", "-e", script], cwd=PKG, input=stdin, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_default_settings_match_the_pinned_viewer() -> None:
    got = _node("import {defaultSettings} from './dist/settings.js';"
                "process.stdout.write(JSON.stringify(defaultSettings('object')));")
    assert json.loads(got) == json.loads(page.DEFAULT_SETTINGS.read_text())
    installed = json.loads((PKG / "package.json").read_text())["version"]
    assert page.viewer_version() == f"{page.PACKAGE} {installed}"


def test_fitted_settings_pass_the_viewers_validator() -> None:
    settings = page.settings_for((np.array([-1.0, -2.0, 0.5]), np.array([3.0, 0.0, 4.0])))
    script = ("import {validateSettings} from './dist/settings.js';"
              "let s='';process.stdin.on('data',d=>s+=d).on('end',()=>{"
              "validateSettings(JSON.parse(s),{limits:true});process.stdout.write('ok');});")
    assert _node(script, json.dumps(settings)) == "ok"
    bad = dict(settings, cameras=[{"initial": {"position": [0, 0, 0], "target": [0, 0, 1], "fov": 500}}])
    node = shutil.which("node")
    assert node
    out = subprocess.run([node, "--input-type=module", "-e", script], cwd=PKG, input=json.dumps(bad),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0  # the validator is real: an out-of-range fov is refused


@pytest.mark.parametrize("seed", range(5))
def test_fit_camera_sees_every_corner(seed: int) -> None:
    rng = np.random.default_rng(seed)
    lo = rng.uniform(-50, 50, 3)
    hi = lo + rng.uniform(0.01, 30, 3)
    cam = page.fit_camera(lo, hi)
    pos, target = np.array(cam["position"]), np.array(cam["target"])
    forward = (target - pos) / np.linalg.norm(target - pos)
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    world = corners * np.array([-1.0, -1.0, 1.0])  # the viewer turns the splats 180 degrees about Z
    half = page.short_side_half_angle(cam["fov"])  # the fov spans the longer side; the shorter one limits
    assert half < math.radians(cam["fov"]) / 2
    for p in world:
        v = p - pos
        depth = float(v @ forward)
        assert depth > 0  # in front of the camera
        angle = math.acos(min(1.0, depth / float(np.linalg.norm(v))))
        assert angle < half  # inside the shorter side's field of view (a cone, so in the frame too)
    # not absurdly far: the box spans a good part of the view
    radius = np.linalg.norm(hi - lo) / 2
    assert np.linalg.norm(target - pos) < 1.5 * radius / math.sin(half)


def test_robust_bounds_ignore_floaters_but_keep_thin_parts() -> None:
    rng = np.random.default_rng(0)
    body = rng.uniform(-1, 1, (10_000, 3))
    neck = np.column_stack([np.zeros(50), np.linspace(1.0, 1.4, 50), np.zeros(50)])  # 0.5 % of the points
    floaters = np.full((20, 3), 1e4)
    pts = np.concatenate([body, neck, floaters, [[np.nan, 0, 0]]])
    lo, hi = page.robust_bounds(pts)
    assert np.all(lo > -1.0) and np.all(lo < -0.99)  # the body's extent
    assert hi[1] == pytest.approx(1.4)  # the thin neck is kept (beyond the 99th percentile, inside the margin)
    assert hi[0] < 1.0 and hi[2] < 1.0  # the floaters are not


def test_scene_bounds_sources(sample_sog: Path, splat_paths: dict[str, Path], tmp_path: Path) -> None:
    (lo, hi), source = page.scene_bounds(sog=sample_sog, ply=splat_paths["guitar"])
    assert "guitar.ply" in source
    (mlo, mhi), _ = page.scene_bounds(sog=sample_sog, ply=None)
    # whatever the source, the robust box lies inside the full extent recorded in the SOG's meta.json
    (flo, fhi) = page._sog_meta_bounds(sample_sog)
    assert np.all(lo >= flo - 1e-3) and np.all(hi <= fhi + 1e-3)
    assert np.all(mlo >= flo - 1e-3) and np.all(mhi <= fhi + 1e-3)
    (tmp_path / "bad.sog").write_bytes(b"not a zip")
    with pytest.raises(SogError, match="meta.json"):
        page._sog_meta_bounds(tmp_path / "bad.sog")


def test_render_index_fills_the_bootstrap() -> None:
    html = page.render_index("a</script>.sog", title="<x>&y")
    boot = html.split('id="sse-bootstrap">')[1].split("</script>")[0]
    assert json.loads(boot) == {"contentUrl": "a</script>.sog", "settingsUrl": "settings.json"}
    assert "<title>&lt;x&gt;&amp;y - splatflow</title>" in html


def test_install_assets(tmp_path: Path) -> None:
    dest = page.install_assets(PKG, tmp_path / "assets")
    assert {p.name for p in dest.iterdir()} == set(page.REQUIRED)
    assert (dest / "index.js").read_bytes() == (PKG / "public" / "index.js").read_bytes()
    assert "MIT" in (dest / page.LICENSE_NAME).read_text()
    with pytest.raises(DependencyMissing, match="not installed"):
        page.install_assets(tmp_path / "nowhere", tmp_path / "x")
