"""The options, each defined once: type, default, range, help text and validation.

Stage options (:data:`STAGE_OPTIONS`: ingest, sfm and train's own knobs) are read the same way: the stage
function's defaults are theirs, it checks its arguments with :func:`check_options`, and ``splatflow <stage>``
builds its flags from them.

A run's tunable parameters (the pipeline's UI parameters, ``splatflow run`` / ``splatflow train`` /
``splatflow compress`` flags) are :class:`Option` objects in :data:`RUN_OPTIONS`. Every layer reads them from
here: the pipeline function takes its defaults from them, the CLI builds its flags with :meth:`Option.add_to`,
the stage functions check their values with :meth:`Option.check`, and :func:`check_run_parameters` is the
pre-upload check (``make run-pipeline``, ``splatflow run``) and the pipeline's first task (``ingest-fingerprint``),
so a bad value from the Kubeflow UI fails before ingest and sfm run.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from splatflow.errors import InputError
from splatflow.presets import CPU_MAX_SPLATS, DEFAULT_QUALITY, MAX_SH_DEGREE, PRESETS

__all__ = ["DEFAULT_MAX_SPLATS", "LOCAL_DEFAULTS", "MAX_TARGET_PSNR", "MIN_IMAGES", "MIN_SIDE", "MIN_TARGET_PSNR",
           "RUN_OPTIONS",
           "STAGE_OPTIONS", "Option", "check_options", "check_run_parameters"]

DEFAULT_MAX_SPLATS = 1_000_000
#: images smaller than this on their short side carry too little detail for SfM
MIN_SIDE = 64
#: structure from motion needs at least this many overlapping images
MIN_IMAGES = 3
#: the render PSNR a smaller-file compress may be asked for (0: off): below 10 dB nothing of the scene is left, above
#: 99 dB nothing differs from full precision
MIN_TARGET_PSNR, MAX_TARGET_PSNR = 10.0, 99.0


@dataclass(frozen=True)
class Option:
    """One option: ``kind`` (int, float or str), ``default``, an inclusive range (``minimum``/``maximum``) or
    ``choices``, ``help`` (one phrase; the CLI adds the default), ``zero`` (what 0 means, when it is special) and an
    extra ``rule`` (a callable raising InputError) for what a range cannot say."""

    name: str
    kind: type
    default: Any
    help: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] | None = None
    zero: str = ""
    rule: Callable[[Any], None] | None = None

    @property
    def flag(self) -> str:
        """The CLI flag, e.g. ``--max-splats``."""
        return "--" + self.name.replace("_", "-")

    def describe(self) -> str:
        """The allowed values in words, e.g. ``a whole number from 1``, ``0-3``, ``one of: tiny, cpu``."""
        if self.choices:
            return "one of: " + ", ".join(self.choices)
        noun = {int: "a whole number", float: "a number", str: "text"}[self.kind]

        def num(x: float) -> str:
            return f"{int(x):,}" if self.kind is int else f"{x:g}"

        if self.minimum is not None and self.maximum is not None:
            return f"{noun} from {num(self.minimum)} to {num(self.maximum)}"
        if self.minimum is not None:
            return f"{noun} from {num(self.minimum)}"
        return noun

    def check(self, value: Any) -> Any:
        """``value`` if this option can take it (ints are accepted for floats); else InputError naming the option,
        the value and what is allowed."""
        hint = f"{self.name} must be {self.describe()}" + (f" (0: {self.zero})" if self.zero else "")
        if isinstance(value, bool) or not isinstance(value, (int, float) if self.kind is float else self.kind):
            raise InputError(f"{self.name} must be {self.describe()}, got {value!r}", hint=hint)
        if isinstance(value, str):
            if self.choices and value.strip().lower() not in self.choices:
                raise InputError(f"{self.name} {value!r} is not one of: {', '.join(self.choices)}", hint=hint)
        elif isinstance(value, int | float) and ((self.minimum is not None and value < self.minimum) or
                                                 (self.maximum is not None and value > self.maximum) or
                                                 value != value):  # NaN
            raise InputError(f"{self.name} {value!r} is out of range", hint=hint)
        if self.rule:
            self.rule(value)
        return value

    def add_to(self, parser: argparse.ArgumentParser, *, default: Any = None, help: str | None = None) -> None:
        """Add ``--<name>`` to ``parser``: type, default (``default`` overrides the option's, e.g. the local run's),
        choices, help with the default and allowed values; the parsed value is checked with :meth:`check`."""
        value = self.default if default is None else default

        def parse(text: str) -> Any:
            try:
                return self.check(self.kind(text))
            except (ValueError, InputError) as exc:
                raise argparse.ArgumentTypeError(f"{text!r}: {self.name} must be {self.describe()}") from exc

        extra = f"; 0: {self.zero}" if self.zero else ""
        parser.add_argument(self.flag, type=parse, default=value, metavar=self.name.upper(),
                            help=f"{help or self.help} ({self.describe()}{extra}; default {value!r})")


def _psnr_or_off(value: float) -> None:
    if 0 < value < MIN_TARGET_PSNR:
        raise InputError(f"target_psnr {value:g} dB is out of range",
                         hint=f"ask for a render PSNR from {MIN_TARGET_PSNR:g} to {MAX_TARGET_PSNR:g} dB, e.g. 45 "
                              "(0: full precision)")


def _no_url(target: str) -> None:
    if any(t.startswith(("http://", "https://")) for t in target.split()):
        raise InputError("notify_target holds a URL",
                         hint="webhook URLs are secrets: put it in SPLATFLOW_WEBHOOK_URL (the notify Secret) and use "
                              "notify_target: webhook")


#: the pipeline's tunable parameters (also the flags of `splatflow run`)
RUN_OPTIONS: dict[str, Option] = {o.name: o for o in (
    Option("quality", str, DEFAULT_QUALITY, "quality preset: image size, training resolution and steps",
           choices=tuple(PRESETS)),
    Option("iterations", int, 0, "training steps", minimum=0, maximum=1_000_000, zero="the preset's"),
    Option("max_splats", int, DEFAULT_MAX_SPLATS, "most splats the trained scene may have (presets may cap it)",
           minimum=1, maximum=50_000_000),
    Option("sh_degree", int, MAX_SH_DEGREE, "spherical-harmonics degree of the trained colours", minimum=0,
           maximum=MAX_SH_DEGREE),
    Option("notify_target", str, "", "notification channel(s), e.g. webhook or sns:<topic arn>; never a secret "
                                     "(empty: the default channel)", rule=_no_url),
    Option("target_psnr", float, 0.0, "compress to the smallest SOG rendering at least this many dB from the PLY",
           minimum=0.0, maximum=MAX_TARGET_PSNR, zero="full precision", rule=_psnr_or_off),
)}

#: `splatflow run` / `make run-local`: a CPU machine's defaults (the cpu preset trains the sample in minutes)
LOCAL_DEFAULTS: dict[str, Any] = {"quality": "cpu", "iterations": 0, "max_splats": CPU_MAX_SPLATS, "sh_degree": 1}


def check_run_parameters(params: Mapping[str, Any]) -> None:
    """Raise InputError (naming the parameter and the fix) for a run parameter the pipeline cannot use.

    Checks the parameters present (absent ones take the pipeline's defaults): ``source_uri`` and ``output_uri``
    non-empty (``output_uri`` a storage URI) and each of :data:`RUN_OPTIONS` with :meth:`Option.check`. Unknown
    names are refused too (a typo would silently take the default).
    """
    for name in ("source_uri", "output_uri"):
        if name in params and (not isinstance(params[name], str) or not params[name].strip()):
            raise InputError(f"{name} is empty", hint=f"set {name} to an s3://bucket/prefix or file:///path URI")
    if "output_uri" in params:
        from splatflow import storage

        try:
            storage.parse(params["output_uri"].strip())
        except InputError as exc:
            raise InputError(f"output_uri: {exc.message}", hint=exc.hint) from None
    for name, value in params.items():
        if name in ("source_uri", "output_uri"):
            continue
        if name not in RUN_OPTIONS:
            raise InputError(f"unknown run parameter {name!r}",
                             hint=f"the parameters are source_uri, output_uri, {', '.join(RUN_OPTIONS)}")
        RUN_OPTIONS[name].check(value)


#: the longest image side: ingest keeps at most this, sfm matches and undistorts at it
_MAX_SIDE = Option("max_side", int, 1600, "longest image side in pixels", minimum=MIN_SIDE, maximum=16_384)

#: each stage's own options (besides the run options it shares), by stage
STAGE_OPTIONS: dict[str, dict[str, Option]] = {
    "ingest": {o.name: o for o in (
        Option("max_images", int, 300, "keep at most this many images", minimum=MIN_IMAGES, maximum=100_000),
        _MAX_SIDE,
        Option("video_frames", int, 120, "frames to extract from a video", minimum=MIN_IMAGES, maximum=10_000),
        Option("max_archive_bytes", int, 4 << 30, "refuse archives (and S3 prefixes) larger than this many bytes, "
                                                 "packed or unpacked", minimum=1),
    )},
    "sfm": {o.name: o for o in (
        Option("matcher", str, "auto", "feature matching; auto: sequential for video frames and large sets, "
                                       "else exhaustive", choices=("auto", "exhaustive", "sequential")),
        _MAX_SIDE,
        Option("max_features", int, 8192, "SIFT features per image", minimum=256, maximum=65_536),
        Option("min_registered", float, 0.5, "fail when fewer than this fraction of the images register",
               minimum=0.01, maximum=1.0),
    )},
    "train": {o.name: o for o in (
        Option("strategy", str, "default", "densification strategy", choices=("default", "mcmc")),
        Option("resolution", int, 1600, "longest training image side in pixels (images are never upscaled)",
               minimum=8, maximum=16_384),
        Option("test_every", int, 8, "hold out every Nth image for PSNR/SSIM", minimum=0, maximum=1000,
               zero="none held out"),
        Option("checkpoint_every", int, 1000, "steps between checkpoints", minimum=1, maximum=1_000_000),
    )},
}


def check_options(stage: str, **values: Any) -> None:
    """Check a stage function's arguments against :data:`STAGE_OPTIONS` (and :data:`RUN_OPTIONS` for the run
    options it takes); InputError names the first unusable one."""
    for name, value in values.items():
        option = STAGE_OPTIONS[stage].get(name) or RUN_OPTIONS[name]
        option.check(value)
