"""The command line: help without heavy imports, help text for every subcommand and option, choices that
agree with the modules, ``info`` naming the data source, and the documented modules reachable from the package."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

import hebbkit
from hebbkit import cli
from hebbkit.checks import PRECISION_NAMES
from hebbkit.data import ENV_VAR

HEAVY = ("torch", "torchvision", "pandas", "matplotlib", "scipy", "papermill", "numpy")


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def test_help_imports_nothing_heavy() -> None:
    code = (
        "import sys\n"
        "from hebbkit.cli import main\n"
        "for argv in (['--help'], ['reproduce', '--help'], ['layers', '--help'], ['workbook', '--help'], ['softhebb', '--help']):\n"
        "    assert main(argv) == 0\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_every_subcommand_and_option_has_help_and_a_description() -> None:
    parser = cli.build_parser()
    commands = _subparsers(parser)
    assert sorted(commands) == ["figures", "info", "layers", "merge", "reproduce", "softhebb", "workbook"]
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert all(choice.help for choice in action._choices_actions)
    for name, sub in commands.items():
        assert sub.description, f"hebbkit {name} has no description"
        for option in sub._actions:
            assert option.help, f"hebbkit {name} {option.option_strings} has no help text"


def test_choices_are_the_modules_own() -> None:
    from hebbkit import lagani, miconi, softhebb
    from hebbkit.lagani.experiment import DEFAULT_CACHE

    assert cli.REPRODUCE_PRESETS == tuple(lagani.PRESETS)
    assert cli.LAYERS_PRESETS == tuple(miconi.PRESETS)
    assert cli.SOFTHEBB_PRESETS == tuple(softhebb.PRESETS)
    assert cli.LAYERS == tuple(lagani.LAYERS)
    assert cli.RULES == tuple(miconi.RULES) and cli.INTERVENTIONS == tuple(miconi.INTERVENTIONS)
    assert cli.DEFAULT_CACHE == DEFAULT_CACHE


def test_method_choices_come_from_the_registry(monkeypatch) -> None:
    from hebbkit.lagani import methods

    reproduce = _subparsers(cli.build_parser())["reproduce"]
    (option,) = [a for a in reproduce._actions if "--methods" in a.option_strings]
    assert option.choices == list(methods.METHODS)
    monkeypatch.setitem(methods.METHODS, "newrule", methods.Method("newrule", "New", methods.NetSpec(hebbian=True)))
    reproduce = _subparsers(cli.build_parser())["reproduce"]
    (option,) = [a for a in reproduce._actions if "--methods" in a.option_strings]
    assert "newrule" in option.choices and "newrule" in option.help  # a registered method needs no CLI edit


def test_help_lists_the_choices(capsys) -> None:
    assert cli.main(["reproduce", "--help"]) == 0
    assert "{smoke,quick,paper}" in capsys.readouterr().out
    assert cli.main(["layers", "--help"]) == 0
    shown = " ".join(capsys.readouterr().out.split())
    assert "{smoke,quick,full}" in shown and "one of none, sparse-plasticity, pruning, both, or all" in shown


def test_workbook_help_names_every_notebook(capsys) -> None:
    from hebbkit.workbook import NOTEBOOKS

    assert cli.main(["workbook", "--help"]) == 0
    shown = " ".join(capsys.readouterr().out.split())
    assert all(name in shown for name in NOTEBOOKS)


def test_a_bad_choice_is_a_usage_error_not_a_traceback(capsys) -> None:
    assert cli.main(["reproduce", "--preset", "huge"]) == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'huge'" in err and "Traceback" not in err


def test_info_names_the_data_source(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "cifar10.npz"))
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    assert f"images: npz file {tmp_path / 'cifar10.npz'} (from ${ENV_VAR}) — no such file" in out
    assert "device (auto): " in out


@pytest.mark.parametrize("name", hebbkit.SUBMODULES)
def test_documented_modules_are_reachable_after_import_hebbkit(name) -> None:
    assert getattr(hebbkit, name).__name__ == f"hebbkit.{name}"


def test_the_package_names_its_classes_and_refuses_unknown_attributes() -> None:
    assert hebbkit.HebbianConv2d.__module__ == "hebbkit.layers" and hebbkit.HPCA.__module__ == "hebbkit.rules"
    assert {"data", "HebbianConv2d"} <= set(dir(hebbkit))
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        hebbkit.nothing  # noqa: B018


def test_reproduce_takes_a_precision_and_refuses_others(capsys):
    assert cli.main(["reproduce", "--precision", "float16", "--status"]) == 2
    assert "invalid choice: 'float16'" in capsys.readouterr().err
    from hebbkit.loops import PRECISIONS
    assert tuple(PRECISIONS) == PRECISION_NAMES  # the CLI's choices are the loops' precisions
