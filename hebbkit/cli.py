"""The ``hebbkit`` command line (also ``python -m hebbkit``). Each subcommand lives beside its code."""

from __future__ import annotations

import argparse
import sys

from . import multilayer, reproduce, workbook


def _info(args: argparse.Namespace) -> int:
    import torch
    import torchvision

    from . import __version__
    from .utils import resolve_device

    print(f"hebbkit {__version__}; torch {torch.__version__}; torchvision {torchvision.__version__}")
    print(f"device (auto): {resolve_device('auto')}; CPU threads: {torch.get_num_threads()}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hebbkit", description="Hebbian learning for deep networks.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("info", help="versions and the device hebbkit would use").set_defaults(run=_info)
    workbook.add_parser(commands)
    multilayer.add_parser(commands)
    reproduce.add_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError, RuntimeError) as error:
        print(f"hebbkit {args.command}: error: {error}", file=sys.stderr)
        return 2
