"""The viewer page published next to a .sog: PlayCanvas's SuperSplat viewer with a camera fitted to the scene.

The page is the static build of ``@playcanvas/supersplat-viewer`` (npm, MIT): ``index.html``, ``index.js`` (the
PlayCanvas engine inside), ``index.css`` and the package's license, plus a ``settings.json`` (the viewer's
"experience" schema v2) whose first camera frames the scene's robust bounds. ``index.html``'s bootstrap block
names the content and the settings, so the page opens with no query string and fetches nothing outside its own
folder (URL parameters such as ``?webgl`` or ``?content=`` still work).

Where the viewer files come from: ``splatflow/viewer/assets/`` inside the installed package, filled from
``node_modules`` by ``make install`` (``python -m splatflow.viewer install-assets``; ignored by git, shipped as
package data when a wheel or image is built after it), or the folder named by ``SPLATFLOW_VIEWER_ASSETS``
(same layout). :func:`assets_dir` fails with a clear error when
neither has them.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from splatflow.errors import DependencyMissing, InputError, SogError

PACKAGE = "@playcanvas/supersplat-viewer"
ASSETS_ENV = "SPLATFLOW_VIEWER_ASSETS"
PAGE_FILES = ("index.html", "index.js", "index.css")
LICENSE_NAME = "LICENSE-supersplat-viewer.txt"
VERSION_NAME = "VERSION"
REQUIRED = (*PAGE_FILES, LICENSE_NAME, VERSION_NAME)
BUNDLED = Path(__file__).resolve().parent / "assets"
# ``defaultSettings('object')`` of the pinned viewer version (tracked; a test compares it with the package's own)
DEFAULT_SETTINGS = Path(__file__).resolve().parent / "default-settings.json"

# The viewer applies a camera's fov along the LONGER side of the canvas (horizontal on a landscape screen).
FOV_DEG = 75.0  # the fitted camera's fov (the viewer accepts 10..120)
FIT_ASPECT = 16 / 9  # the fit holds on screens up to this longer/shorter side ratio (desktop 16:9, most phones)
_BOOTSTRAP = re.compile(r'(<script type="application/json" id="sse-bootstrap">)(.*?)(</script>)', re.S)


# ---------------------------------------------------------------------------- assets
def assets_dir() -> Path:
    """The folder holding the viewer's files (see the module docstring); DependencyMissing if absent."""
    configured = os.environ.get(ASSETS_ENV)
    where = Path(configured) if configured else BUNDLED
    missing = [name for name in REQUIRED if not (where / name).is_file()]
    if missing:
        source = f"{ASSETS_ENV}={configured}" if configured else str(where)
        raise DependencyMissing(
            f"the viewer page's files are missing from {source} ({', '.join(missing)})",
            hint="run `make install` (or `npm install && python -m splatflow.viewer install-assets`), "
                 f"or point {ASSETS_ENV} at a folder prepared that way")
    return where


def install_assets(package_dir: Path, dest: Path = BUNDLED) -> Path:
    """Copy the viewer's static files and license from the npm package into ``dest`` and record its version.

    ``package_dir`` is ``node_modules/@playcanvas/supersplat-viewer`` (Node.js is not needed to copy).
    """
    package_dir = Path(package_dir)
    meta = package_dir / "package.json"
    if not meta.is_file():
        raise DependencyMissing(f"{PACKAGE} is not installed at {package_dir}",
                                hint="run `npm install` in the repository (package.json pins the version)")
    version = json.loads(meta.read_text())["version"]
    missing = [name for name in PAGE_FILES if not (package_dir / "public" / name).is_file()]
    if missing or not (package_dir / "LICENSE").is_file():
        raise DependencyMissing(f"{PACKAGE} {version} at {package_dir} lacks {missing or ['LICENSE']}",
                                hint="reinstall it with `npm ci`")
    dest.mkdir(parents=True, exist_ok=True)
    for name in PAGE_FILES:
        shutil.copyfile(package_dir / "public" / name, dest / name)
    shutil.copyfile(package_dir / "LICENSE", dest / LICENSE_NAME)
    (dest / VERSION_NAME).write_text(f"{PACKAGE} {version}\n")
    return dest


def viewer_version() -> str:
    """``@playcanvas/supersplat-viewer <version>`` of the installed assets."""
    return (assets_dir() / VERSION_NAME).read_text().strip()


# ---------------------------------------------------------------------------- camera fit
def robust_bounds(points: np.ndarray, *, lo: float = 1.0, hi: float = 99.0,
                  margin: float = 0.25) -> tuple[np.ndarray, np.ndarray]:
    """Bounds of the scene in (N, 3) positions that floaters do not widen: the per-axis ``lo``..``hi`` percentile
    box, grown by ``margin`` of its size on every side, keeps the points inside it (thin parts of the object just
    beyond the percentiles, such as a guitar's headstock) and drops the far ones; the result is the extent of the
    kept points. Non-finite rows are ignored. Returns ``(min (3,), max (3,))``."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    pts = pts[np.isfinite(pts).all(axis=1)]
    if len(pts) == 0:
        raise InputError("the scene has no finite splat positions", hint="check the trained PLY / .sog")
    core_lo, core_hi = np.percentile(pts, lo, axis=0), np.percentile(pts, hi, axis=0)
    grow = (core_hi - core_lo) * margin + 1e-6
    kept = pts[np.all((pts >= core_lo - grow) & (pts <= core_hi + grow), axis=1)]
    return kept.min(axis=0), kept.max(axis=0)


def short_side_half_angle(fov: float, aspect: float = FIT_ASPECT) -> float:
    """Half the field of view, in radians, along the shorter canvas side when ``fov`` (degrees) spans the longer
    one and the sides are ``aspect`` : 1."""
    return math.atan(math.tan(math.radians(fov) / 2.0) / aspect)


def fit_camera(bounds_min: np.ndarray, bounds_max: np.ndarray, *, fov: float = FOV_DEG) -> dict[str, Any]:
    """A camera pose (viewer world coordinates) that frames the box ``[bounds_min, bounds_max]`` (file coords).

    The viewer turns the splats 180 degrees about Z (3DGS/COLMAP data is y-down), so a file point (x, y, z) is
    drawn at (-x, -y, z). The camera looks along +Z (the direction COLMAP cameras look) from slightly above,
    far enough that the box's bounding sphere fits the shorter side's field of view on screens up to
    ``FIT_ASPECT``, from any side (the viewer's turntable orbits at this distance). Returns
    ``{"position": [3], "target": [3], "fov": float}``.
    """
    lo = np.asarray(bounds_min, dtype=np.float64)
    hi = np.asarray(bounds_max, dtype=np.float64)
    center = (lo + hi) / 2.0
    radius = max(float(np.linalg.norm(hi - lo)) / 2.0, 1e-3)
    distance = radius / math.sin(short_side_half_angle(fov)) * 1.05
    target = np.array([-center[0], -center[1], center[2]])
    direction = np.array([0.0, 0.35, -1.0])
    direction /= np.linalg.norm(direction)
    position = target + direction * distance
    return {"position": [round(float(v), 6) for v in position], "target": [round(float(v), 6) for v in target],
            "fov": float(fov)}


def capture_camera(position: list[float], target: list[float], *, fov: float = FOV_DEG) -> dict[str, Any]:
    """The viewer's first camera at a photo's own pose: ``position`` and ``target`` (3,) in file coordinates (the
    SfM world; training's report gives them as ``viewer_camera``), turned into the viewer's (x, y) -> (-x, -y)."""
    def flip(v: list[float]) -> list[float]:
        return [round(-float(v[0]), 6), round(-float(v[1]), 6), round(float(v[2]), 6)]

    return {"position": flip(position), "target": flip(target), "fov": float(fov)}


def _sog_meta_bounds(sog: Path) -> tuple[np.ndarray, np.ndarray]:
    """Full-extent bounds from a SOG's meta.json (means mins/maxs are stored as sign(v)*ln(1+|v|))."""
    try:
        if sog.is_dir() or sog.name == "meta.json":
            meta = json.loads((sog / "meta.json" if sog.is_dir() else sog).read_text())
        else:
            with zipfile.ZipFile(sog) as zf:
                meta = json.loads(zf.read("meta.json"))
        mins = np.asarray(meta["means"]["mins"], dtype=np.float64)
        maxs = np.asarray(meta["means"]["maxs"], dtype=np.float64)
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise SogError(f"{sog}: cannot read the means bounds from its meta.json ({exc})",
                       hint="give a SOG v2 .sog bundle or meta.json written by the compress stage") from exc

    def unlog(v: np.ndarray) -> np.ndarray:
        return np.sign(v) * np.expm1(np.abs(v))

    return unlog(mins), unlog(maxs)


def scene_bounds(*, sog: Path | None = None, ply: Path | None = None) -> tuple[tuple[np.ndarray, np.ndarray], str]:
    """Robust bounds of the scene and where they came from: the splat positions of the PLY or the decoded
    .sog (see :func:`robust_bounds`), else the .sog meta.json's full extent."""
    from splatflow.info import load_any

    for path in (ply, sog):
        if path is None:
            continue
        try:
            cloud, _, _ = load_any(path)
        except (InputError, ImportError):
            continue
        return robust_bounds(cloud.means), f"percentiles of {path.name}"
    if sog is not None:
        return _sog_meta_bounds(sog), f"meta.json extent of {sog.name}"
    raise InputError("no scene file to fit the viewer camera to", hint="pass the .sog (and optionally the PLY)")


# ---------------------------------------------------------------------------- page
def settings_for(bounds: tuple[np.ndarray, np.ndarray], *, fov: float = FOV_DEG,
                 camera: dict[str, Any] | None = None) -> dict[str, Any]:
    """The viewer's default settings (from the installed package) with the first camera ``camera`` (viewer
    coordinates, :func:`capture_camera`) or, without one, fitted to ``bounds`` from outside."""
    settings: dict[str, Any] = json.loads(DEFAULT_SETTINGS.read_text())
    settings["cameras"] = [{"initial": camera or fit_camera(*bounds, fov=fov)}]
    return settings


def render_index(content_name: str, *, title: str, settings_name: str = "settings.json") -> str:
    """``index.html`` with its bootstrap block naming ``content_name`` and ``settings_name`` (relative URLs)."""
    html = (assets_dir() / "index.html").read_text()
    found = _BOOTSTRAP.findall(html)
    if len(found) != 1:
        raise DependencyMissing(f"{PACKAGE}'s index.html has no single sse-bootstrap block to fill",
                                hint="use the version pinned in package.json and rerun make install")
    boot = json.dumps({"contentUrl": content_name, "settingsUrl": settings_name}).replace("</", "<\\/")
    html = _BOOTSTRAP.sub(lambda m: f"{m.group(1)}\n            {boot}\n        {m.group(3)}", html, count=1)
    safe = title.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return html.replace("<title>SuperSplat Viewer</title>", f"<title>{safe} - splatflow</title>", 1)


def build_page(out_dir: Path, *, content_name: str, title: str, bounds: tuple[np.ndarray, np.ndarray],
               fov: float = FOV_DEG, camera: dict[str, Any] | None = None) -> list[Path]:
    """Write the viewer page for ``content_name`` (a file beside it) into ``out_dir``; returns the files written:
    index.html, index.js, index.css, the viewer's license and settings.json (first camera: ``camera`` if given,
    see :func:`settings_for`)."""
    src = assets_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "index.html").write_text(render_index(content_name, title=title))
    written = [out_dir / "index.html"]
    for name in ("index.js", "index.css", LICENSE_NAME):
        shutil.copyfile(src / name, out_dir / name)
        written.append(out_dir / name)
    (out_dir / "settings.json").write_text(json.dumps(settings_for(bounds, fov=fov, camera=camera), indent=1) + "\n")
    written.append(out_dir / "settings.json")
    return written
