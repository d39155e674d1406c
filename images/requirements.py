"""Print splatflow's third-party requirements from pyproject.toml, one per line: the core dependencies with
``--core``, and those of the extras named (comma-separated or as separate arguments). With ``--pending REPORT``
(a ``pip install --dry-run --report`` of splatflow[EXTRAS]), fail naming every package pip would still install
besides splatflow itself: the layers above did not provide it.

The image builds (images/cpu.Dockerfile, images/gpu.Dockerfile) install them in layers of their own before they
copy the source, so a source change rebuilds none of them and stages with the same extras share them:

    python3 requirements.py /src/pyproject.toml --core > core.txt
    python3 requirements.py /src/pyproject.toml sfm,storage > extras.txt
    python3 requirements.py --pending report.json
"""

from __future__ import annotations

import json
import sys
import tomllib
from pathlib import Path


def requirements(pyproject: Path, extras: list[str], *, core: bool) -> list[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    optional = project.get("optional-dependencies", {})
    unknown = sorted(set(extras) - set(optional))
    if unknown:
        raise SystemExit(f"error: {pyproject} defines no extra {', '.join(unknown)} (it has {', '.join(optional)})")
    found = list(project["dependencies"]) if core else []
    return found + [r for extra in extras for r in optional[extra]]


def pending(report: Path) -> list[str]:
    """``name==version`` of what a pip installation report would install, splatflow itself left out."""
    items = json.loads(report.read_text())["install"]
    return [f"{i['metadata']['name']}=={i['metadata']['version']}" for i in items
            if i["metadata"]["name"].lower() != "splatflow"]


def main(argv: list[str]) -> int:
    if not argv:
        raise SystemExit(__doc__)
    if argv[0] == "--pending":
        todo = pending(Path(argv[1]))
        if todo:
            raise SystemExit(f"error: splatflow's requirements are not all installed; pip would add {', '.join(todo)}")
        return 0
    names = [e for arg in argv[1:] if arg != "--core" for e in arg.split(",") if e]
    print("\n".join(requirements(Path(argv[0]), names, core="--core" in argv[1:])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
