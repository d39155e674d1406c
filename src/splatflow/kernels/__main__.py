"""``python -m splatflow.kernels build|info``: build the compiled CPU kernels ahead of time, or say what would load."""

from __future__ import annotations

import argparse
import sys

from splatflow import kernels
from splatflow.errors import SplatflowError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m splatflow.kernels", allow_abbrev=False,
                                     description="Build or inspect splatflow's compiled CPU rasterizer.")
    parser.add_argument("action", choices=("build", "info"), help="build: compile into the cache (if needed); "
                                                                  "info: print the cache path and state")
    parser.add_argument("--force", action="store_true", help="rebuild even when the cache holds the library")
    args = parser.parse_args(argv)
    path = kernels.library_path()
    if args.action == "info":
        print(f"library:  {path} ({'built' if path.exists() else 'not built'})")
        print(f"compiler: {kernels.compiler() or 'none found'}")
        print(f"flags:    {' '.join(kernels.flags())}")
        return 0
    try:
        built = kernels.build(force=args.force)
        kernels.load()
    except SplatflowError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"hint: {exc.hint}", file=sys.stderr)
        return exc.exit_code
    print(built)
    return 0


if __name__ == "__main__":
    sys.exit(main())
