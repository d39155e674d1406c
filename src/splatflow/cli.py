"""The `splatflow` command line: one subcommand per stage (`splatflow <stage> ...`), plus tools.

Exit codes: 0 success, 1 unexpected error (a bug: the traceback is printed), 2 bad input or usage,
3 environment problem (missing extra, credentials, CUDA), 4 a stage could not produce its result,
130 interrupted. Every splatflow error prints one ``error:`` line and, where known, a ``hint:`` line.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence

from splatflow import __version__
from splatflow.errors import SplatflowError

Handler = Callable[[argparse.Namespace], int]
COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = []


def command(register: Callable[[argparse._SubParsersAction], None]) -> Callable[..., None]:
    """Decorator: add a subcommand registration function to the CLI."""
    COMMANDS.append(register)
    return register


def _print_json(obj: object) -> None:
    print(json.dumps(obj, indent=2, sort_keys=False))


# ---------------------------------------------------------------------------- info
@command
def _add_info(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="describe a splat file (.ply, .sog, meta.json)",
                       description="Count, SH degree, bounds, attribute ranges, NaN count and bytes per splat.")
    p.add_argument("file", help="a .ply, a .sog bundle, or a SOG meta.json / folder")
    p.add_argument("--json", action="store_true", help="print the full summary as JSON")
    p.set_defaults(handler=_run_info)


def _run_info(args: argparse.Namespace) -> int:
    from splatflow.info import info

    summary = info(args.file)
    if args.json:
        _print_json(summary)
        return 0
    print(f"{summary['path']}  ({summary['kind']})")
    print(f"  splats          {summary['splats']:,}")
    print(f"  SH degree       {summary['sh_degree']}")
    print(f"  size            {summary['file_bytes']:,} bytes  ({summary['bytes_per_splat']} bytes/splat)")
    print(f"  bounds min      {summary['bounds']['min']}")
    print(f"  bounds max      {summary['bounds']['max']}")
    for name, r in summary["attributes"].items():
        print(f"  {name:15s} min {r['min']}  max {r['max']}")
    print(f"  NaN/Inf splats  {summary['invalid_splats']:,}")
    if summary["extras"]:
        print(f"  extra props     {', '.join(summary['extras'])}")
    return 0


# ---------------------------------------------------------------------------- doctor
@command
def _add_doctor(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("doctor", help="check that the current cluster can run the pipeline",
                       description="GPU nodes (allocatable nvidia.com/gpu, label, taint), the NVIDIA device plugin, "
                                   "the kfp-launcher ConfigMap, the pipeline root bucket (with this shell's AWS "
                                   "credentials) and the KFP API. One line per check, a fix under each problem; "
                                   "exit 3 when something is wrong. Needs the `pipeline` extra.")
    p.add_argument("--context", help="kube context (default: the current one)")
    p.add_argument("--namespace", default="kubeflow", help="namespace KFP runs pipelines in (default: kubeflow)")
    p.add_argument("--kfp-host", help="KFP UI/API address (default: $KFP_HOST)")
    p.add_argument("--bucket", help="s3:// URI to check (default: the kfp-launcher pipeline root)")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds per request (default: 5)")
    p.add_argument("--json", action="store_true", help="print the checks as JSON")
    p.set_defaults(handler=_run_doctor)


def _run_doctor(args: argparse.Namespace) -> int:
    from splatflow.doctor import as_json, doctor, format_report
    from splatflow.errors import EnvironmentProblem

    checks = doctor(context=args.context, namespace=args.namespace, kfp_host=args.kfp_host,
                    bucket_uri=args.bucket, timeout=args.timeout)
    if args.json:
        _print_json(as_json(checks))
    else:
        print(format_report(checks))
    return EnvironmentProblem.exit_code if any(c.failed for c in checks) else 0


# ---------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every registered subcommand."""
    parser = argparse.ArgumentParser(
        prog="splatflow",
        description="Photos of a scene in, a web-ready compressed 3D Gaussian Splat out.",
        epilog="Exit codes: 0 ok, 2 bad input, 3 environment problem, 4 stage failed, 1 unexpected error.",
    )
    parser.add_argument("--version", action="version", version=f"splatflow {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug output")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for register in COMMANDS:
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        return int(args.handler(args) or 0)
    except SplatflowError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"hint: {exc.hint}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
