"""``python -m splatflow.viewer install-assets [NPM_PACKAGE_DIR]``: copy the viewer's files into the package.

Run by ``make install`` after ``npm install``; images run it too. The default source is
``node_modules/@playcanvas/supersplat-viewer`` under the current folder.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from splatflow.errors import SplatflowError
from splatflow.viewer.page import BUNDLED, PACKAGE, install_assets


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments and copy the assets; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m splatflow.viewer", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("install-assets", help="copy the viewer's files from node_modules into the package")
    p.add_argument("package_dir", nargs="?", default=f"node_modules/{PACKAGE}", type=Path)
    p.add_argument("--dest", type=Path, default=BUNDLED, help=f"target folder (default {BUNDLED})")
    args = parser.parse_args(argv)
    try:
        dest = install_assets(args.package_dir, args.dest)
    except SplatflowError as exc:
        print(f"error: {exc.message}\nhint: {exc.hint}", file=sys.stderr)
        return exc.exit_code
    print(f"viewer assets installed in {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
