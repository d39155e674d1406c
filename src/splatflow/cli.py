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


# ---------------------------------------------------------------------------- train
@command
def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train 3D Gaussian Splats on an SfM folder (gsplat on CUDA, torch on CPU)",
                       description="Train splats on the output of `splatflow sfm`; writes OUT_DIR/splats.ply "
                                   "(INRIA layout), OUT_DIR/train-report.json and OUT_DIR/checkpoints/. Run it "
                                   "again on the same OUT_DIR to resume after an interruption (SIGTERM saves a "
                                   "checkpoint).")
    p.add_argument("sfm_dir", help="SfM folder: images/ and sparse/0/{cameras,images,points3D}.bin")
    p.add_argument("out_dir", help="output folder (created; its parent must exist)")
    p.add_argument("--iterations", type=int, default=7000, help="training steps (default 7000)")
    p.add_argument("--max-splats", type=int, default=1_000_000, help="splat budget (default 1,000,000)")
    p.add_argument("--sh-degree", type=int, default=3, choices=range(4), help="final SH degree (default 3)")
    p.add_argument("--sh-interval", type=int, default=None, help="steps per added SH band (default: auto)")
    p.add_argument("--strategy", choices=("default", "mcmc"), default="default", help="densification strategy")
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cuda or cpu")
    p.add_argument("--resolution", type=int, default=1600, help="longest image side in pixels (default 1600)")
    p.add_argument("--test-every", type=int, default=8, help="hold out every Nth image for PSNR/SSIM (0: none)")
    p.add_argument("--checkpoint-every", type=int, default=1000, help="steps between checkpoints (default 1000)")
    p.add_argument("--no-resume", action="store_true", help="discard checkpoints in OUT_DIR and start over")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(handler=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    from pathlib import Path

    from splatflow.stages.train import train

    report = train(Path(args.sfm_dir), Path(args.out_dir), iterations=args.iterations, max_splats=args.max_splats,
                   sh_degree=args.sh_degree, sh_interval=args.sh_interval, strategy=args.strategy,
                   device=args.device, resolution=args.resolution, test_every=args.test_every,
                   checkpoint_every=args.checkpoint_every, resume=not args.no_resume, seed=args.seed)
    if args.json:
        _print_json(report)
        return 0
    print(f"{args.out_dir}/splats.ply: {report['splats']:,} splats, {report['iterations']} iterations, "
          f"{report['seconds']:.1f} s on {report['device']} ({report['backend']})")
    print(f"  held-out PSNR {report['psnr_test']} dB (initial {report['psnr_test_initial']}), "
          f"SSIM {report['ssim_test']}; train PSNR {report['psnr_train']} dB")
    if report["downsampled"]:
        print(f"  the SfM cloud ({report['initial_points']:,} points) was downsampled to the budget")
    return 0


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
