"""Each option is defined once (splatflow.options) and every layer reads it: the stage functions' defaults and
checks, the CLI flags, the pipeline's parameters."""

from __future__ import annotations

import importlib
import inspect
import math

import pytest

from splatflow.cli import build_parser, main
from splatflow.errors import InputError
from splatflow.options import RUN_OPTIONS, STAGE_OPTIONS, Option, check_options, check_run_parameters

ALL = [(stage, o) for stage, opts in STAGE_OPTIONS.items() for o in opts.values()] + \
      [("run", o) for o in RUN_OPTIONS.values()]


@pytest.mark.parametrize(("stage", "option"), ALL, ids=[f"{s}.{o.name}" for s, o in ALL])
def test_each_option_takes_its_default_and_refuses_what_is_outside_its_range(stage: str, option: Option) -> None:
    assert option.check(option.default) == option.default
    bad: list[object] = [True, None, [option.default]]
    if option.choices:
        bad += ["none-of-these", 3]
    if option.minimum is not None:
        bad.append(option.minimum - (1 if option.kind is int else 1e-3))
    if option.maximum is not None:
        bad.append(option.maximum + 1)
    if option.kind is float:
        bad.append(math.nan)
    for value in bad:
        with pytest.raises(InputError, match=option.name):
            option.check(value)


@pytest.mark.parametrize("stage", sorted(STAGE_OPTIONS))
def test_stage_functions_take_their_defaults_from_the_options(stage: str) -> None:
    fn = getattr(importlib.import_module(f"splatflow.stages.{stage}"), stage)
    params = inspect.signature(fn).parameters
    for name, option in STAGE_OPTIONS[stage].items():
        assert params[name].default == option.default, (stage, name)
    for name, option in RUN_OPTIONS.items():  # the run options a stage takes default the same way
        if name in params and name != "iterations":  # train: iterations defaults to the standard preset's steps
            assert params[name].default == option.default, (stage, name)


@pytest.mark.parametrize("stage", sorted(STAGE_OPTIONS))
def test_cli_flags_are_the_options(stage: str, capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    args = parser.parse_args([stage, "a", "b"])
    for name, option in STAGE_OPTIONS[stage].items():
        assert getattr(args, name) == option.default, (stage, name)
    # a value outside an option's range is refused by argparse (exit 2) naming the option and the range
    name, option = next((n, o) for n, o in STAGE_OPTIONS[stage].items() if o.minimum is not None)
    too_small = str(int(option.minimum) - 1) if option.kind is int else str(option.minimum / 2)
    with pytest.raises(SystemExit) as exc:
        main([stage, "a", "b", option.flag, too_small])
    assert exc.value.code == 2 and f"{name} must be {option.describe()}" in capsys.readouterr().err


def test_check_options_names_the_first_unusable_argument() -> None:
    check_options("train", strategy="mcmc", resolution=256, iterations=0, max_splats=10)
    with pytest.raises(InputError, match="strategy 'magic' is not one of: default, mcmc"):
        check_options("train", strategy="magic")
    with pytest.raises(InputError, match="min_registered 0 is out of range"):
        check_options("sfm", min_registered=0)
    with pytest.raises(KeyError):
        check_options("sfm", no_such_option=1)
    with pytest.raises(InputError, match="unknown run parameter 'colour'"):
        check_run_parameters({"colour": "red"})
