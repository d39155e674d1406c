"""The `splatflow` command line: one subcommand per stage (`splatflow <stage> ...`), plus tools.

Exit codes: 0 success, 1 unexpected error (a bug: the traceback is printed), 2 bad input or usage,
3 environment problem (missing extra, credentials, CUDA), 4 a stage could not produce its result,
130 interrupted (Ctrl-C), 143 terminated (SIGTERM); either way temporary files are removed on the way out.
Every splatflow error prints one ``error:`` line and, where known, a ``hint:`` line.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

from splatflow import __version__
from splatflow.errors import SplatflowError
from splatflow.options import LOCAL_DEFAULTS, RUN_OPTIONS, STAGE_OPTIONS
from splatflow.presets import DEFAULT_QUALITY, PRESETS

Handler = Callable[[argparse.Namespace], int]
COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = []


class CommandParser(argparse.ArgumentParser):
    """The parser of every command: no abbreviated options (``--overwrit`` is not ``--overwrite``), and an
    unknown option is reported against the command's own usage, with the closest real option."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def parse_known_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                         namespace: argparse.Namespace | None = None) -> tuple[argparse.Namespace, list[str]]:
        ns, extras = super().parse_known_args(args, namespace)
        if extras and self.prog != PROG:  # a command: its own unknown arguments, its own usage
            self.error(unrecognized(self, extras))
        return ns, extras

    def parse_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                   namespace: argparse.Namespace | None = None) -> argparse.Namespace:
        ns, extras = self.parse_known_args(args, namespace)
        if extras:
            self.error(unrecognized(self, extras))
        return ns


PROG = "splatflow"


def unrecognized(parser: argparse.ArgumentParser, extras: list[str]) -> str:
    """``unrecognized arguments: --overwrit (did you mean --overwrite?)``."""
    import difflib

    known = [opt for action in parser._actions for opt in action.option_strings]
    hints = {}
    for arg in extras:
        name = arg.split("=", 1)[0]
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.6) if name.startswith("-") else []
        if close:
            hints[name] = close[0]
    text = f"unrecognized arguments: {' '.join(extras)}"
    if len(hints) == 1:
        return text + f" (did you mean {next(iter(hints.values()))}?)"
    return text + (" (" + "; ".join(f"{k}: did you mean {v}?" for k, v in hints.items()) + ")" if hints else "")


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
                       description="Count, SH degree, bounds, attribute ranges, splats by kind of non-finite value "
                                   "(opaque, NaN, other infinities) and bytes per splat.")
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
    k = summary["kinds"]
    print(f"  opaque splats   {k['opaque']:,}  (opacity +inf: alpha 1, valid)")
    if k["transparent"] or k["flat"]:
        print(f"  also valid      {k['transparent']:,} fully transparent (opacity -inf), {k['flat']:,} flat "
              "(a log-scale of -inf)")
    print(f"  NaN splats      {k['nan']:,}")
    other = k["invalid"] - k["nan"]
    print(f"  other invalid   {other:,}  (an infinite position, size, rotation or SH value)" if other
          else "  other invalid   0")
    print(f"  invalid splats  {k['invalid']:,}" + ("  (compress refuses them; --drop-invalid drops them)"
                                                    if k["invalid"] else ""))
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
    RUN_OPTIONS["iterations"].add_to(p, default=PRESETS[DEFAULT_QUALITY].iterations, help="training steps")
    RUN_OPTIONS["max_splats"].add_to(p)
    RUN_OPTIONS["sh_degree"].add_to(p)
    p.add_argument("--sh-interval", type=int, default=None, help="steps per added SH band (default: auto)")
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cuda or cpu")
    for option in STAGE_OPTIONS["train"].values():
        option.add_to(p)
    p.add_argument("--no-resume", action="store_true", help="discard checkpoints in OUT_DIR and start over")
    p.add_argument("--checkpoint-uri", default=None,
                   help="also keep the checkpoints at this s3:// or file:// folder, so a retry on another machine "
                        "(an empty OUT_DIR) resumes from there")
    p.add_argument("--drop-checkpoints", action="store_true",
                   help="delete the checkpoints (local and --checkpoint-uri) once the PLY and report are written")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(handler=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    from pathlib import Path

    from splatflow.devices import resolve_device
    from splatflow.stages.train import train

    resolve_device(args.device)  # one device check for train, compress and evaluate, before any work
    report = train(Path(args.sfm_dir), Path(args.out_dir), iterations=args.iterations, max_splats=args.max_splats,
                   sh_degree=args.sh_degree, sh_interval=args.sh_interval, strategy=args.strategy,
                   device=args.device, resolution=args.resolution, test_every=args.test_every,
                   checkpoint_every=args.checkpoint_every, resume=not args.no_resume,
                   checkpoint_uri=args.checkpoint_uri, keep_checkpoints=not args.drop_checkpoints, seed=args.seed)
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


# ---------------------------------------------------------------------------- ingest
@command
def _add_ingest(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ingest", help="photos, a .zip, a video or an S3 prefix -> checked, resized images",
                       description="Read SOURCE (a folder, a .zip of photos, a video file, file:///path or "
                                   "s3://bucket/prefix; S3 endpoint and credentials from the standard AWS "
                                   "environment) and write OUT_DIR/images/ plus OUT_DIR/ingest-report.json "
                                   "(kept and rejected images with reasons). Video: frames are extracted, blurred "
                                   "and near-duplicate frames rejected. Unsafe archives are refused.")
    p.add_argument("source", help="folder, .zip, video, file:// or s3:// URI")
    p.add_argument("out_dir", help="output folder (created; an existing one must be empty unless --overwrite)")
    for option in STAGE_OPTIONS["ingest"].values():
        option.add_to(p)
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty OUT_DIR")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(handler=_run_ingest)


def _run_ingest(args: argparse.Namespace) -> int:
    from pathlib import Path

    from splatflow.stages.ingest import ingest

    report = ingest(args.source, Path(args.out_dir), max_images=args.max_images, max_side=args.max_side,
                    video_frames=args.video_frames, max_archive_bytes=args.max_archive_bytes,
                    overwrite=args.overwrite)
    if args.json:
        _print_json(report)
        return 0
    print(f"{args.out_dir}/images: kept {len(report['kept'])} images from {report['source_kind']} "
          f"({report['content']}), rejected {len(report['rejected'])}")
    for name, reason in report["rejected"].items():
        print(f"  rejected {name}: {reason}")
    return 0


# ---------------------------------------------------------------------------- sfm
@command
def _add_sfm(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sfm", help="structure from motion (pycolmap, CPU): images -> COLMAP model",
                       description="Reconstruct cameras and sparse points from IMAGES (a folder of images or the "
                                   "output of `splatflow ingest`). Writes OUT_DIR/images/ (undistorted, pinhole), "
                                   "OUT_DIR/sparse/0/{cameras,images,points3D}.bin and OUT_DIR/sfm-report.json. "
                                   "Fails (exit 4) when fewer than --min-registered of the images register.")
    p.add_argument("images", help="folder of images, or an ingest output folder")
    p.add_argument("out_dir", help="output folder (created; an existing one must be empty unless --overwrite)")
    for option in STAGE_OPTIONS["sfm"].values():
        option.add_to(p)
    p.add_argument("--threads", type=int, default=-1, help="CPU threads (default: all)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the mapper")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty OUT_DIR")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(handler=_run_sfm)


def _run_sfm(args: argparse.Namespace) -> int:
    from pathlib import Path

    from splatflow.stages.sfm import sfm

    report = sfm(Path(args.images), Path(args.out_dir), matcher=args.matcher, max_side=args.max_side,
                 min_registered=args.min_registered, max_features=args.max_features, num_threads=args.threads,
                 seed=args.seed, overwrite=args.overwrite)
    if args.json:
        _print_json(report)
        return 0
    err = report["mean_reprojection_error"]
    print(f"{args.out_dir}: registered {report['registered']}/{report['total']} images ({report['matcher']} "
          f"matching), {report['points']:,} points, reprojection error {err} px, "
          f"track length {report['mean_track_length']}, {report['timings']['total']:.1f} s")
    if report["unregistered"]:
        print(f"  unregistered: {', '.join(report['unregistered'])}")
    for name, reason in report["skipped"].items():
        print(f"  skipped {name}: {reason}")
    return 0


# ---------------------------------------------------------------------------- run (the whole pipeline locally)
@command
def _add_run(sub: argparse._SubParsersAction) -> None:

    p = sub.add_parser("run", help="run the whole pipeline locally (kfp.local, CPU; local folder or s3:// output)",
                       description="Run the Kubeflow pipeline on this machine with kfp.local's SubprocessRunner: "
                                   "ingest, sfm, train, compress, publish, then notify (on failure too). One line "
                                   "per stage with its time; the full log is kept in the run's folder "
                                   "(--verbose prints it as it runs). On failure the last lines name the stage "
                                   "and its error.")
    p.add_argument("source", nargs="?", default="data/photos/lund",
                   help="photos folder, .zip, video or s3:// URI (default: data/photos/lund, the bundled sample)")
    p.add_argument("output", nargs="?", default=None,
                   help="a new output folder, or s3://bucket/prefix (results then go to the bucket, as in a "
                        "cluster; task outputs stay in ./runs/<UTC timestamp>); default: ./runs/<UTC timestamp>")
    for name, option in RUN_OPTIONS.items():  # the pipeline's parameters, with a CPU machine's defaults
        option.add_to(p, default=LOCAL_DEFAULTS.get(name),
                      help="preset: cpu (a recognisable scene in minutes on a CPU), tiny (a smoke run in a "
                           "minute), preview, standard, high (GPU presets; src/splatflow/presets.py)"
                      if name == "quality" else None)
    p.add_argument("--verbose", dest="run_verbose", action="store_true",
                   help="print every task's full log (KFP executor output) as it runs")
    p.set_defaults(handler=_run_pipeline_locally)


def _run_pipeline_locally(args: argparse.Namespace) -> int:
    try:
        from splatflow_kfp.pipelines.local import default_output, run_local, summary_lines
    except ImportError as exc:  # kfp or the pipelines package is not installed
        from splatflow.errors import DependencyMissing

        raise DependencyMissing(f"the local pipeline runner is not available ({exc})",
                                hint="pip install -e '.[all]' from the repository (make install)") from exc
    run = run_local(args.source, args.output or default_output(), quality=args.quality, iterations=args.iterations,
                    max_splats=args.max_splats, sh_degree=args.sh_degree, notify_target=args.notify_target,
                    target_psnr=args.target_psnr, verbose=args.run_verbose or args.verbose)
    print("\n".join(summary_lines(run)))
    return 0


# ---------------------------------------------------------------------------- publish
@command
def _add_publish(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("publish", help="upload a run's results + a viewer page (manifest last, then latest.json)",
                       description="Write OUTPUT_URI/<scene>/<run-id>/: the .sog, the SOG folder, the PLY, the "
                                   "reports and a viewer page; manifest.json last (sizes + SHA-256 of every "
                                   "object) marks the run complete, then OUTPUT_URI/<scene>/latest.json moves to "
                                   "it. Re-running is idempotent and resumes an interrupted publish. OUTPUT_URI: "
                                   "s3://bucket/prefix (endpoint and credentials from the standard AWS "
                                   "environment), file:///path or a folder.")
    p.add_argument("output_uri", help="s3://bucket/prefix, file:///path or a local folder")
    p.add_argument("--scene", required=True, help="scene name (letters, digits, . _ -)")
    p.add_argument("--run-id", required=True, help="run id (letters, digits, . _ -)")
    p.add_argument("--sog", help="the .sog bundle")
    p.add_argument("--meta", help="the SOG folder (or its meta.json)")
    p.add_argument("--ply", help="the trained PLY (optional)")
    p.add_argument("--contact-sheet", help="training's contact-sheet.png, published next to the viewer page "
                                           "(optional)")
    p.add_argument("--report", action="append", default=[], metavar="NAME=PATH",
                   help="a stage report JSON to publish as reports/NAME.json (repeatable)")
    p.add_argument("--no-viewer", action="store_true", help="publish no viewer page")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier publish of the same run id whose content differs")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(handler=_run_publish)


def _run_publish(args: argparse.Namespace) -> int:
    from pathlib import Path

    from splatflow.errors import InputError
    from splatflow.limits import read_json
    from splatflow.stages.publish import publish

    reports: dict[str, dict] = {}
    for item in args.report:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise InputError(f"--report {item!r} is not NAME=PATH", hint="e.g. --report train=out/train-report.json")
        if not Path(path).is_file():
            raise InputError(f"--report {name}: {path} is not a file", hint="give the path of a stage's JSON report")
        report = read_json(path, f"--report {name}:", hint="give the path of a stage's JSON report")
        if not isinstance(report, dict):
            raise InputError(f"--report {name}: {path} holds a JSON {type(report).__name__}, not an object",
                             hint="give the path of a stage's JSON report")
        reports[name] = report
    files = {key: Path(value) for key, value in (("sog", args.sog), ("meta", args.meta), ("ply", args.ply),
                                                 ("contact_sheet", args.contact_sheet))
             if value}
    result = publish(args.output_uri, scene=args.scene, run_id=args.run_id, files=files, reports=reports,
                     overwrite=args.overwrite, viewer=not args.no_viewer)
    if args.json:
        _print_json(result)
        return 0
    print(f"published {result['objects']} objects ({result['bytes']:,} bytes; {result['uploaded']} uploaded, "
          f"{result['skipped']} already there) in {result['seconds']:.1f} s")
    print(f"  manifest  {result['manifest_uri']}")
    if result["viewer_uri"]:
        print(f"  viewer    {result['viewer_uri']}")
    print(f"  latest    {result['latest_uri']}")
    return 0


# ---------------------------------------------------------------------------- notify
@command
def _add_notify(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("notify", help="send a run's outcome by webhook (Slack JSON), SNS or e-mail",
                       description="Send STATUS (succeeded | failed | canceled) with the run's numbers and links. "
                                   "TARGET: webhook | sns:<topic ARN> | smtp://[user@]host[:port]?to=a@x&from=..."
                                   "&security=starttls|ssl|none | none (several separated by spaces); default "
                                   "SPLATFLOW_NOTIFY_TARGET or every channel configured in the environment. "
                                   "Secrets only from the environment: SPLATFLOW_WEBHOOK_URL, "
                                   "SPLATFLOW_SMTP_PASSWORD (or *_FILE). A failed delivery is reported and exits 0 "
                                   "unless --strict (or SPLATFLOW_NOTIFY_STRICT=1).")
    p.add_argument("status", help="succeeded | failed | canceled")
    p.add_argument("--scene", required=True, help="scene name")
    p.add_argument("--report", help="the run report JSON: a publish result, or a manifest.json (local or URI)")
    p.add_argument("--target", default=None, help="channel(s); never a secret")
    p.add_argument("--failed-stage", default=None, help="the stage that failed")
    p.add_argument("--error", default=None, help="the error message of the failure")
    p.add_argument("--strict", action="store_true", default=None, help="exit 4 when a channel fails")
    p.add_argument("--link-expires", type=int, default=None,
                   help="seconds presigned links stay valid (default SPLATFLOW_LINK_EXPIRES or 7 days)")
    p.set_defaults(handler=_run_notify)


def _run_notify(args: argparse.Namespace) -> int:
    from splatflow import storage
    from splatflow.errors import InputError
    from splatflow.limits import MAX_REPORT_BYTES, parse_json
    from splatflow.stages.notify import send

    report: dict = {}
    if args.report:
        report = parse_json(storage.read_bytes(args.report, max_bytes=MAX_REPORT_BYTES), f"--report {args.report}",
                            hint="give a run report JSON")
        if not isinstance(report, dict):
            raise InputError(f"--report {args.report} holds a JSON {type(report).__name__}, not an object",
                             hint="give a run report JSON: a publish result or a manifest.json")
    result = send(args.status, scene=args.scene, report=report, target=args.target,
                    failed_stage=args.failed_stage, error=args.error, strict=args.strict,
                    link_expires=args.link_expires)
    _print_json(result)
    return 0


# ---------------------------------------------------------------------------- compress / decompress (SOG codec)
@command
def _add_compress(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compress", help="PLY -> SOG (v2 .sog bundle or folder, or SOGS v1)",
                       description="Compress a 3DGS PLY into a web-ready SOG. OUT ending in .sog is one file; "
                                   "any other OUT is a folder with meta.json and WebP images. Written atomically.")
    p.add_argument("ply", help="input 3DGS .ply")
    p.add_argument("out", help="output: name.sog, or a folder")
    p.add_argument("--format", choices=["v2", "v1"], default="v2", help="SOG v2 (default) or SOGS v1")
    p.add_argument("--sort", choices=["morton", "plas"], default="morton",
                   help="texel order: morton (default; smaller and faster on real scenes) or plas")
    p.add_argument("--sh-bands", type=int, choices=[0, 1, 2, 3], default=None, help="keep at most this many SH bands")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    p.add_argument("--drop-invalid", action="store_true",
                   help="drop invalid splats (NaN, an infinite position, size, rotation or SH) instead of failing; "
                        "fully opaque splats (opacity +inf) are valid and kept")
    p.add_argument("--fidelity-views", type=int, default=0, metavar="N",
                   help="also render N orbit views (256 px) of the source and of the decoded SOG and report "
                        "PSNR/SSIM, e.g. 4 (default 0: skipped; on a CPU it takes longer than the encoding)")
    p.add_argument("--target-psnr", type=float, default=None, metavar="DB",
                   help="write the smallest file whose renders stay at least DB dB PSNR from the source's over "
                        "the report's orbit views (e.g. 45): least visible splats pruned, a smaller SH palette, "
                        "coarser attributes, the largest WebP effort; the report says what was dropped. "
                        "Default: off (full precision)")
    p.add_argument("--max-bytes", type=int, default=None, metavar="N",
                   help="write the file with the best render PSNR (same views) that takes at most N bytes, by the "
                        "same means as --target-psnr; fails before writing if the scene cannot be that small. "
                        "Default: off")
    p.add_argument("--json", action="store_true", help="print the full report as JSON")
    p.set_defaults(handler=_run_compress)


def _run_compress(args: argparse.Namespace) -> int:
    from pathlib import Path

    from splatflow.devices import resolve_device
    from splatflow.stages.compress import compress

    resolve_device(args.device)  # one device check for train, compress and evaluate, before any work
    r = compress(Path(args.ply), Path(args.out), format=args.format, sort=args.sort, sh_bands=args.sh_bands,
                 device=args.device, overwrite=args.overwrite, drop_invalid=args.drop_invalid,
                 fidelity_views=args.fidelity_views, target_psnr=args.target_psnr, max_bytes=args.max_bytes)
    if args.json:
        _print_json(r)
    else:
        fid = r["fidelity"]
        print(f"{r['output']}: {r['splats']:,} splats, {r['bytes']:,} bytes, {r['bytes_per_splat']:.2f} bytes/splat, "
              f"{r['ratio']:.1f}x smaller than the PLY, {r['codec_seconds']:.1f} s ({r['format']}, {r['sort']}, "
              f"{r['device']})" + (f"; renders {fid['psnr']:.1f} dB PSNR vs the PLY" if fid else ""))
        tg = r["target"]
        if tg:
            drop = tg["dropped"]
            aim = (f"target {tg['target_psnr']:g} dB: reached {tg['psnr']:.2f} dB" if tg.get("target_psnr")
                   else f"limit {tg['max_bytes']:,} bytes: {r['bytes']:,} bytes at {tg['psnr']:.2f} dB")
            print(f"  {aim}; dropped {drop['splats']:,} "
                  f"splats ({drop['splats_fraction']:.1%}), coarser {', '.join(drop['precision']) or 'nothing'}"
                  + (f"; note: {tg['note']}" if tg.get("note") else ""))
    return 0


@command
def _add_decompress(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("decompress", help="SOG (v2 or v1: .sog, meta.json or folder) -> standard 3DGS PLY",
                       description="Decode a SOG v2 / SOGS v1 file set back to a binary INRIA-layout PLY.")
    p.add_argument("sog", help="a .sog bundle, a meta.json, or a SOG folder")
    p.add_argument("out", help="output .ply")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    p.set_defaults(handler=_run_decompress)


def _run_decompress(args: argparse.Namespace) -> int:
    from splatflow.fsutil import check_output
    from splatflow.io.ply import write_ply
    from splatflow.sog.decode import read_sog

    check_output(args.out, overwrite=args.overwrite)
    cloud, nbytes, kind = read_sog(args.sog)
    write_ply(cloud, args.out)
    print(f"{args.out}: {len(cloud):,} splats (SH degree {cloud.sh_degree}) from {kind}, {nbytes:,} bytes")
    return 0


# ---------------------------------------------------------------------------- evaluate (render fidelity)
@command
def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="render a source and a candidate splat file from the same cameras: PSNR, SSIM",
                       description="Render SOURCE and CANDIDATE from the same cameras and compare them: PSNR and "
                                   "SSIM per view and averaged, plus an attribute error table when the splat "
                                   "counts match. Without --cameras, an orbit of --views views around the "
                                   "source's dense region is used.")
    p.add_argument("source", help="the reference 3DGS .ply")
    p.add_argument("candidate", help="the file to judge: .ply, .sog, or a SOG meta.json / folder")
    p.add_argument("--cameras", default=None,
                   help="a COLMAP model folder (the sfm output) or a .npz with viewmats, Ks, width, height")
    p.add_argument("--views", type=int, default=8,
                   help="orbit views, or the most cameras used from --cameras (evenly picked; 0 = all; default 8)")
    p.add_argument("--size", default=None, help="render size WxH (default: the cameras' own; 256x256 for the orbit)")
    p.add_argument("--match", choices=["auto", "index", "nearest"], default="auto",
                   help="how candidate splats are paired with source splats for the attribute table")
    p.add_argument("--backend", choices=["auto", "torch", "gsplat"], default="auto", help="renderer (default auto)")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    p.add_argument("--json", dest="json_out", default=None, metavar="OUT", help="also write the report as JSON to OUT")
    p.set_defaults(handler=_run_evaluate)


def _run_evaluate(args: argparse.Namespace) -> int:
    from splatflow.cameras import parse_size
    from splatflow.devices import resolve_device
    from splatflow.evaluate import evaluate, format_report
    from splatflow.fsutil import check_output

    resolve_device(args.device)  # one device check for train, compress and evaluate, before any work
    if args.json_out:
        check_output(args.json_out, overwrite=True)
    report = evaluate(args.source, args.candidate, cameras=args.cameras, views=args.views,
                      size=parse_size(args.size) if args.size else None, backend=args.backend,
                      device=args.device, match=args.match, json_out=args.json_out)
    print(format_report(report))
    return 0


# ---------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every registered subcommand."""
    parser = CommandParser(
        prog=PROG,
        description="Photos of a scene in, a web-ready compressed 3D Gaussian Splat out.",
        epilog="Exit codes: 0 ok, 2 bad input, 3 environment problem, 4 stage failed, 1 unexpected error, "
               "130 interrupted, 143 terminated.",
    )
    parser.add_argument("--version", action="version", version=f"splatflow {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug output")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=CommandParser)
    for register in COMMANDS:
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if not args.verbose:  # libraries' own INFO lines ("Found credentials in environment variables") are noise
        for name in ("botocore", "boto3", "s3transfer", "urllib3", "kfp"):
            logging.getLogger(name).setLevel(logging.WARNING)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    from splatflow.errors import Terminated
    from splatflow.fsutil import terminate_cleanly

    try:
        with terminate_cleanly():  # SIGTERM cleans up like Ctrl-C: no temporary file is left behind
            return int(args.handler(args) or 0)
    except Terminated:
        print("terminated (SIGTERM)", file=sys.stderr)
        return Terminated.exit_code
    except SplatflowError as exc:
        from splatflow.redaction import redact

        print(f"error: {redact(exc.message)}", file=sys.stderr)
        if exc.hint:
            print(f"hint: {redact(exc.hint)}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and closed: not an error of ours
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
