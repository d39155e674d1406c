"""``python -m splatflow_kfp.pipelines compile|upload|run``: what ``make compile``, ``make upload`` and
``make run-pipeline`` call.

Exit codes follow the splatflow CLI: 0 ok, 2 bad input (parameters, package), 3 environment problem (KFP_HOST
unset or unreachable, credentials refused), 4 the run did not succeed (failed, or still running at ``--timeout``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from splatflow.errors import SplatflowError

DEFAULT_PACKAGE = Path("build/pipeline.yaml")


def _compile(args: argparse.Namespace) -> int:
    if args.registry:
        os.environ["SPLATFLOW_REGISTRY"] = args.registry
    if args.tag:
        os.environ["SPLATFLOW_IMAGE_TAG"] = args.tag
    from splatflow.spec import all_images
    from splatflow_kfp.pipelines.splat_pipeline import compile_pipeline

    out = compile_pipeline(args.output)
    print(f"compiled {out}")
    for stage, image in all_images().items():
        print(f"  {stage:9s} {image}")
    return 0


def _upload(args: argparse.Namespace) -> dict[str, str]:
    from splatflow_kfp.pipelines.client import KfpSettings, connect, kfp_errors, pipeline_name, upload

    pipeline_name(args.package)  # a missing or wrong package fails before any connection
    settings = KfpSettings.from_env()
    with kfp_errors(settings):
        client = connect(settings)
        ids = upload(client, args.package, version=args.version, namespace=settings.namespace)
    _print_upload(args.package, settings.host, ids)
    return ids


def _print_upload(package: Path, host: str, ids: dict[str, str]) -> None:
    if ids.get("created") == "true":
        print(f"created pipeline {ids['pipeline_id']} on {host} (KFP also lists a first version named after the "
              "pipeline; runs use the named version below)")
    print(f"uploaded {package} to {host} as pipeline {ids['pipeline_id']} "
          f"version {ids['version_name']} ({ids['version_id']})")


def _run(args: argparse.Namespace) -> int:
    from splatflow_kfp.pipelines.client import KfpSettings, connect, kfp_errors, load_params, start_run, upload, wait

    params = load_params(args.params, args.package)  # fail on bad parameters before uploading anything
    settings = KfpSettings.from_env()
    with kfp_errors(settings):
        client = connect(settings)
        ids = upload(client, args.package, version=args.version, namespace=settings.namespace)
        _print_upload(args.package, settings.host, ids)
        started = start_run(client, settings, ids, params, run_name=args.name)
        print(json.dumps({"pipeline_version": ids["version_name"], **started}, indent=2), flush=True)
        if not args.wait:
            return 0
        state = wait(client, started["run_id"], timeout_s=args.timeout, poll_s=args.poll)
    print(f"run {started['run_id']} finished: {state}")
    if started.get("output_prefix"):
        print(f"outputs (published by the run): {started['output_prefix']}")
    return 0 if state == "SUCCEEDED" else 4


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m splatflow_kfp.pipelines", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("compile", help="compile the pipeline to KFP IR YAML")
    p.add_argument("--output", type=Path, default=DEFAULT_PACKAGE)
    p.add_argument("--registry", help="image registry (default: $SPLATFLOW_REGISTRY or ghcr.io/splatflow)")
    p.add_argument("--tag", help="image tag (default: $SPLATFLOW_IMAGE_TAG or the git commit)")
    p.set_defaults(handler=_compile)
    p = sub.add_parser("upload", help="upload the compiled pipeline (or a new version of it) to KFP_HOST")
    p.add_argument("--package", type=Path, default=DEFAULT_PACKAGE)
    p.add_argument("--version", help="version name (default: <image tag>-<UTC time>)")
    p.set_defaults(handler=lambda a: (_upload(a), 0)[1])
    p = sub.add_parser("run", help="upload the compiled pipeline as a new version and start a run of it")
    p.add_argument("--package", type=Path, default=DEFAULT_PACKAGE)
    p.add_argument("--params", type=Path, help="run parameters, YAML or JSON (source_uri and output_uri required)")
    p.add_argument("--version", help="version name (default: <image tag>-<UTC time>)")
    p.add_argument("--name", help="run name (default: splatflow <scene> <UTC time>)")
    p.add_argument("--wait", action="store_true",
                   help="wait for the run to end; exit 4 unless it succeeded (also when --timeout passes first)")
    p.add_argument("--timeout", type=float, default=6 * 3600, help="seconds to wait (default 6 h)")
    p.add_argument("--poll", type=float, default=10.0, help="seconds between status checks (default 10)")
    p.set_defaults(handler=_run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except SplatflowError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"hint: {exc.hint}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
