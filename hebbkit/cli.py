"""The ``hebbkit`` command line (also ``python -m hebbkit``).

Only the argument parser lives here, and it imports nothing heavy: each subcommand names the function that
runs it (``"module:function"``), imported when that subcommand runs, so ``hebbkit --help`` answers at once.
The methods and notebooks come from their registries (``hebbkit.lagani.methods``, ``hebbkit.catalog``), which
import nothing heavy; the other choices listed below are the modules' own (tests/test_cli.py checks that they agree).
"""

from __future__ import annotations

import argparse
import pkgutil
import sys
from pathlib import Path

from .checks import PRECISION_NAMES

REPRODUCE_PRESETS = ("smoke", "quick", "paper")  # lagani.PRESETS
LAYERS_PRESETS = ("smoke", "quick", "full")  # miconi.PRESETS
SOFTHEBB_PRESETS = ("smoke", "quick", "paper")  # softhebb.PRESETS
LAYERS = (1, 2, 3, 4, 5)  # lagani.LAYERS
RULES = ("hebb", "instar", "oja")  # miconi.RULES
INTERVENTIONS = ("none", "sparse-plasticity", "pruning", "both")  # miconi.INTERVENTIONS
LAUNCHERS = ("inline", "local", "slurm")  # launch.KINDS
DEFAULT_CACHE = Path.home() / ".cache" / "hebbkit" / "weights"  # lagani.experiment.DEFAULT_CACHE
DEVICE_HELP = "auto (default: $HEBBKIT_DEVICE if set, else CUDA when present, else CPU), cpu, cuda, cuda:N or mps"
DATA_HELP = ("the images: an npz file (x_train, y_train[, x_test, y_test]; or a folder holding cifar10.npz), a "
             "folder with one sub-folder of images per class, or a torchvision dataset name (CIFAR10, CIFAR100, "
             "MNIST, FashionMNIST, SVHN, STL10) (default: $HEBBKIT_DATA, else torchvision's CIFAR-10)")


def _info(args: argparse.Namespace) -> int:
    """Versions, the device and where the images would come from."""
    import torch
    import torchvision

    from . import __version__
    from .data import describe_source
    from .utils import resolve_device

    print(f"hebbkit {__version__}; torch {torch.__version__}; torchvision {torchvision.__version__}")
    print(f"device (auto): {resolve_device('auto')}; CPU threads: {torch.get_num_threads()}")
    print(f"images: {describe_source(args.data)}")
    return 0


def _add_workbook(commands: argparse._SubParsersAction) -> None:
    from .catalog import NOTEBOOKS, notebook_numbers  # the standard library only: cheap

    parser = commands.add_parser(
        "workbook",
        help="run the seven notebooks headlessly (papermill): executed copies and figures under runs/workbook/",
        description="Run every notebook in a fresh kernel with papermill, one progress line each, then a summary. "
        "A notebook that needs CIFAR-10 is skipped, with the reason, where no copy can be had (an explicit --data "
        "that cannot be read is an error). While a notebook runs, a line every 10 s names the cell it executes. "
        "Exit status 1 if a notebook that could run failed (its copy is kept as NAME.failed.ipynb, and the line "
        "names the cell), 2 for bad options, else 0.",
    )
    parser.add_argument("--quick", action="store_true", help="small settings: all seven notebooks in minutes on a CPU")
    parser.add_argument("--out", type=Path, default=Path("runs/workbook"), help="executed notebooks (default runs/workbook)")
    parser.add_argument("--figures", type=Path, help="folder for the figures the notebooks save (default OUT/figures)")
    parser.add_argument("--notebooks", type=Path, default=Path("notebooks"), help="source folder (default notebooks)")
    parser.add_argument(
        "--only", nargs="+", metavar="NAME",
        help=f"run only these notebooks: {', '.join(NOTEBOOKS)}, or their numbers {', '.join(notebook_numbers())}",
    )
    parser.add_argument("--data", type=Path, help=DATA_HELP)
    parser.add_argument(
        "--store-outputs",
        action="store_true",
        help="maintainers: re-run the source notebooks in place and store their clean outputs (nbval's reference)",
    )
    parser.set_defaults(handler="hebbkit.workbook:run_command")


def _add_figures(commands: argparse._SubParsersAction) -> None:
    from .figures import FIGURES  # the standard library only: cheap

    parser = commands.add_parser(
        "figures",
        help="rebuild the committed figures/ from results/ and the deterministic demos",
        description="Draw every figure of figures/ from its inputs (the committed results/, the demos' code, "
        "CIFAR-10 for the filter picture) and store a digest of those inputs in each PNG; --check only reports "
        "the figures whose inputs have changed since they were drawn.",
    )
    parser.add_argument("--out", type=Path, default=Path("figures"), help="figure folder (default figures)")
    names = [figure.name for figure in FIGURES]
    parser.add_argument("--only", nargs="+", choices=names, metavar="NAME", help=f"only these figures: {', '.join(names)}")
    parser.add_argument("--check", action="store_true", help="draw nothing; exit 1 if a figure is stale or missing")
    parser.add_argument("--data", type=Path, help=DATA_HELP)
    parser.set_defaults(handler="hebbkit.figures:run_command")


def _add_reproduce(commands: argparse._SubParsersAction) -> None:
    from .lagani.methods import METHODS, preset_methods  # no torch: cheap

    parser = commands.add_parser(
        "reproduce",
        help="reproduce Lagani's Table 1 (Hebbian pre-training, semi-supervised fine-tuning; CIFAR-10 or any images)",
        description="Pre-train Lagani's six-layer network with each method (see --methods), fine-tune it on the "
        "labelled percentage of the training pool, score every layer cut on validation and test images, and "
        "write Table 1 beside the paper's values (table1.csv / table1.md), a heatmap and the convergence curves. "
        "Finished cells are kept in OUT/results.sqlite: a re-run resumes, and several processes on one host started "
        "alike share the grid. Each unit (method, seed) runs here (--launcher inline), in local worker processes "
        "(local) or as a task of a SLURM job array (slurm; submitit's logs in OUT/launch); this process alone writes "
        "the store. Exit status 1 when a unit's worker failed (the others are kept; a re-run retries it).",
    )
    parser.add_argument(
        "--preset", choices=REPRODUCE_PRESETS, default="quick",
        help="smoke (seconds, synthetic-sized), quick (CPU, about 1 h on 2 cores) or paper (the reference "
        "protocol, GPU) (default quick)",
    )
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), metavar="METHOD",
                        help=f"pre-training methods, any of {', '.join(METHODS)} (default: the preset's, "
                        f"{', '.join(preset_methods())})")
    parser.add_argument("--regimes", nargs="+", type=float, metavar="PERCENT",
                        help="labelled percentages in (0, 100] (default: the preset's)")
    parser.add_argument("--layers", nargs="+", type=int, choices=LAYERS, metavar="LAYER",
                        help="layer cuts, any of 1..5 (default: the preset's)")
    parser.add_argument("--seeds", type=int, help="number of data seeds, >= 1 (default: the preset's)")
    parser.add_argument("--data", help=DATA_HELP)
    parser.add_argument("--out", default=None, help="output folder (default results/PRESET)")
    parser.add_argument("--figures", default=None, help="folder for the figures (default: the output folder)")
    parser.add_argument("--cache", default=str(DEFAULT_CACHE),
                        help=f"pre-trained weight cache folder, or 'none' to disable it (default {DEFAULT_CACHE})")
    parser.add_argument("--device", default="auto", help=DEVICE_HELP)
    parser.add_argument("--threads", type=int, help="torch CPU threads, >= 1 (default: torch's choice)")
    parser.add_argument("--precision", choices=PRECISION_NAMES,
                        help="backprop's compute precision (fine-tuning, scoring, the VAE; float32 master weights; "
                        "Hebbian updates stay float32): bfloat16 is faster where the CPU or GPU has it, and is "
                        "stored under its own key (default: the preset's, float32)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--status", action="store_true",
                        help="run nothing: list the grid's units in OUT, done, running (by whom, since when) or "
                        "missing (works while a run goes on; give the run's --preset/--methods/... and --data)")
    launch = parser.add_argument_group("launcher (where the units run)")
    launch.add_argument("--launcher", choices=LAUNCHERS, default="inline",
                        help="inline (here, one unit after another; default), local (worker processes on this "
                        "host, one GPU each where there are GPUs) or slurm (one SLURM job array, a unit per task)")
    launch.add_argument("--parallel", type=int, metavar="N",
                        help="units at once: local (default: the GPUs, else 2) or the SLURM array's %%N limit")
    launch.add_argument("--time-min", type=int, default=24 * 60, metavar="MINUTES",
                        help="time limit of one unit in minutes (local and slurm; default 1440)")
    launch.add_argument("--partition", help="slurm: the partition (default: the cluster's)")
    launch.add_argument("--gpus-per-task", type=int, default=1, metavar="N",
                        help="slurm: GPUs per unit, as --gres=gpu:N (0 for a CPU partition; default 1)")
    launch.add_argument("--cpus-per-task", type=int, default=4, metavar="N", help="slurm: CPUs per unit (default 4)")
    parser.set_defaults(handler="hebbkit.lagani.experiment:run_command")


def _add_merge(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "merge",
        help="join the results stores of output folders (filled on two hosts, say) into one",
        description="Copy every record and convergence row of the sources' results.sqlite into OUT's (created, or "
        "added to). A cell held by several stores must hold the same numbers in each (timings may differ): "
        "otherwise nothing is written and the cell is named, unless --keep-first. Then `hebbkit reproduce --out "
        "OUT` with the run's options writes the table without recomputing.",
    )
    parser.add_argument("sources", nargs="+", metavar="SOURCE", help="output folders holding results.sqlite")
    parser.add_argument("--out", required=True, help="the output folder to merge into")
    parser.add_argument("--keep-first", action="store_true",
                        help="on a conflict keep the copy of the first folder (OUT's own, then the sources in order)")
    parser.set_defaults(handler="hebbkit.store:merge_command")


def _add_layers(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "layers",
        help="Miconi's multi-layer Hebbian CNN: decoding, pictures and sparsity per layer",
        description="Train Miconi's three-layer Hebbian CNN on unlabelled images (CIFAR-10 unless --data names "
        "another dataset; channels and classes come from the data) with each intervention, "
        "then per layer: a ridge readout's held-out accuracy against random weights, response sparsity, and "
        "what the units respond to. Writes layers.csv, layers.md, run.json and the filter pictures.",
    )
    parser.add_argument("--preset", choices=LAYERS_PRESETS, default="quick",
                        help="run size: smoke (seconds), quick (~25 min on a CPU) or full (default quick)")
    parser.add_argument("--intervention", default="all",
                        help=f"one of {', '.join(INTERVENTIONS)}, or all (default all)")
    parser.add_argument("--rule", choices=RULES, default="instar", help="Hebbian rule (default instar)")
    parser.add_argument("--k", type=int, default=1, help="k-WTA winners per position in every layer, 1..100 (default 1)")
    parser.add_argument("--keep", type=float, default=0.01,
                        help="pruning: fraction of input channels kept, in (0, 1] (default 0.01)")
    parser.add_argument("--data", default=None, help=DATA_HELP)
    parser.add_argument("--out", default="results/layers", help="output folder (default results/layers)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights, masks and sampling (default 0)")
    parser.add_argument("--device", default="auto", help=DEVICE_HELP)
    parser.set_defaults(handler="hebbkit.miconi.experiment:_run")


def _add_softhebb(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "softhebb",
        help="SoftHebb (Journé 2023) and Krotov-Hopfield: Hebbian conv blocks, linear classifier, few labels",
        description="Train SoftHebb's three Hebbian convolutional blocks (96, 384, 1536 channels at width 1) for "
        "one unsupervised epoch, block after block, then the authors' linear classifier on all labels and on "
        "Lagani's 1 / 5 / 10 % labelled subsets (with end-to-end fine-tuning as a second row); probe the blocks "
        "at each depth, and the same blocks trained by Krotov-Hopfield's rule. Writes softhebb.csv, softhebb.md, "
        "run.json and the layer-1 filters.",
    )
    parser.add_argument("--preset", choices=SOFTHEBB_PRESETS, default="quick",
                        help="smoke (seconds, at most 2,000 training / 500 test images), quick (about 5 min of "
                        "one CPU core) or paper (the authors' protocol, 4 seeds) (default quick)")
    parser.add_argument("--data", default=None, help=DATA_HELP)
    parser.add_argument("--out", default="results/softhebb", help="output folder (default results/softhebb)")
    parser.add_argument("--device", default="auto", help=DEVICE_HELP)
    parser.add_argument("--threads", type=int, help="torch CPU threads, >= 1 (default: torch's choice)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(handler="hebbkit.softhebb.experiment:run_command")


def build_parser() -> argparse.ArgumentParser:
    """The ``hebbkit`` parser with all its subcommands."""
    parser = argparse.ArgumentParser(
        prog="hebbkit",
        description="Hebbian learning for deep networks: the workbook, its figures, and the two reproductions "
        "(Lagani 2022: `reproduce`; Miconi 2021: `layers`; Journé 2023: `softhebb`).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    info = commands.add_parser(
        "info", help="versions, the device and the CIFAR-10 source hebbkit would use",
        description="Print the versions, the device `--device auto` picks, and where the images (CIFAR-10 by default) would come from.",
    )
    info.add_argument("--data", type=Path, help=DATA_HELP)
    info.set_defaults(handler=_info)
    for add in (_add_workbook, _add_figures, _add_reproduce, _add_merge, _add_layers, _add_softhebb):
        add(commands)
    return parser


def _handler(args: argparse.Namespace):
    if callable(args.handler):
        return args.handler
    return pkgutil.resolve_name(args.handler)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status (2 for bad input, with a one-line error)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as done:  # --help, or argparse's own usage error (already printed)
        return done.code if isinstance(done.code, int) else 2
    try:
        return _handler(args)(args)
    except (ValueError, FileNotFoundError, RuntimeError) as error:
        print(f"hebbkit {args.command}: error: {error}", file=sys.stderr)
        return 2
