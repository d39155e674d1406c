"""images/constraints.txt: the pinned versions the stage images install (pip -c), written by
images/freeze_constraints.py.

The pins are what this checkout's .venv has installed (the set the test suite runs with), for the packages the
images install -- splatflow's runtime extras and kfp -- and everything they depend on, evaluated for the images'
Python (3.12, Linux x86_64). torch (a CPU or CUDA build per image) and the NVIDIA wheels it brings are left out.

    .venv/bin/python images/freeze_constraints.py
"""

from __future__ import annotations

import importlib.metadata as md
import re
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from splatflow.spec import EXTRAS as STAGE_EXTRAS  # noqa: E402

#: every extra some stage image installs (src/splatflow/spec.py)
EXTRAS = tuple(sorted({extra for extras in STAGE_EXTRAS.values() for extra in extras}))
MARKERS = {"python_version": "3.12", "python_full_version": "3.12.12", "sys_platform": "linux",
           "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix", "extra": ""}
LEFT_OUT = re.compile(r"^(torch|triton|splatflow|nvidia-.*)$")


def _key(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure() -> dict[str, tuple[str, str]]:
    """normalized name -> (name, installed version) for the images' requirements and their dependencies."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    roots = list(project["dependencies"]) + [r for e in EXTRAS for r in project["optional-dependencies"][e]]
    roots += [r for r in project["optional-dependencies"]["pipeline"] if r.startswith("kfp==")]
    stack = [Requirement(r).name for r in roots]
    seen: dict[str, tuple[str, str]] = {}
    while stack:
        name = stack.pop()
        if _key(name) in seen:
            continue
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError as exc:
            raise SystemExit(f"{name} is not installed in this environment: run `make install` first") from exc
        seen[_key(name)] = (dist.metadata["Name"], dist.version)
        for spec in dist.requires or []:
            req = Requirement(spec)
            if req.marker is None or req.marker.evaluate(MARKERS):
                stack.append(req.name)
    return {k: v for k, v in seen.items() if not LEFT_OUT.match(k)}


def main() -> None:
    pins = sorted(f"{name}=={version}" for name, version in closure().values())
    header = [f"# {line}".rstrip() for line in (__doc__ or "").strip().splitlines()]
    (ROOT / "images" / "constraints.txt").write_text("\n".join(header + pins) + "\n")
    print(f"{len(pins)} pins -> images/constraints.txt")


if __name__ == "__main__":
    main()
