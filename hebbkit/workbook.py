"""Run the whole workbook headlessly with papermill: ``hebbkit workbook [--quick] [--out DIR]``.

Each notebook runs in a fresh kernel of this Python environment, in its own folder, with the parameters
``QUICK`` and ``FIGURES`` (and ``DATA`` when given) injected after its ``parameters`` cell. Executed
notebooks go to ``--out`` (written beside their final name, then renamed; a failed one is kept as
``NAME.failed.ipynb``), figures to ``--figures``. One progress line per notebook.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from .utils import atomic_path

NOTEBOOKS = (
    "00_overview",
    "01_rules_and_losses",
    "02_single_neuron",
    "03_conv_filters",
    "04_semi_supervised_pipeline",
    "05_results_table",
)
DEFAULT_OUT = Path("runs/workbook")
DEFAULT_NOTEBOOKS = Path("notebooks")
DEFAULT_FIGURES = Path("figures")
IGNORE_MARKERS = ("NBVAL_IGNORE_OUTPUT", "NBVAL_SKIP")
IGNORE_TAGS = ("nbval-ignore-output", "nbval-skip")
UNSTORED_MIME = ("image/png", "image/jpeg", "image/svg+xml", "application/vnd.jupyter.widget-view+json")


def _kernel_manager_class() -> type:
    """A kernel manager that always starts ipykernel with this interpreter, whatever kernelspecs exist."""
    from ipykernel.kernelspec import RESOURCES, get_kernel_dict
    from jupyter_client import AsyncKernelManager
    from jupyter_client.kernelspec import KernelSpecManager
    from traitlets import default

    class CurrentEnvironmentSpecs(KernelSpecManager):
        def get_kernel_spec(self, kernel_name: str):
            spec = get_kernel_dict()
            spec["argv"] = [*spec["argv"], "--IPKernelApp.log_level=ERROR"]  # no start-up chatter between progress lines
            return self.kernel_spec_class(resource_dir=RESOURCES, **spec)

    class CurrentEnvironmentKernel(AsyncKernelManager):
        @default("kernel_spec_manager")
        def _default_kernel_spec_manager(self) -> KernelSpecManager:
            return CurrentEnvironmentSpecs(data_dir=self.data_dir)

    return CurrentEnvironmentKernel


def _absolute_data_path() -> None:
    """Kernels run in the notebook folder: make a relative ``$HEBBKIT_DATA`` absolute for them."""
    if os.environ.get("HEBBKIT_DATA"):
        os.environ["HEBBKIT_DATA"] = str(Path(os.environ["HEBBKIT_DATA"]).resolve())


def output_ignored(cell) -> bool:
    """Whether nbval ignores this cell's output (a ``# NBVAL_IGNORE_OUTPUT``/``# NBVAL_SKIP`` line or tag)."""
    lines = {line.strip().lstrip("#").strip() for line in cell.source.splitlines() if line.strip().startswith("#")}
    return bool(lines & set(IGNORE_MARKERS)) or bool(set(cell.metadata.get("tags", [])) & set(IGNORE_TAGS))


def clean(nb):
    """Strip a notebook to what is stored: no widget state or run metadata, no images (nbval does not
    compare them), and no outputs at all in cells whose output nbval ignores. Execution counts stay: nbval
    rejects a reference cell that has outputs but no count."""
    nb.metadata = {key: value for key, value in nb.metadata.items() if key in ("kernelspec", "language_info")}
    nb.metadata["language_info"] = {"name": "python"}
    for cell in nb.cells:
        cell.metadata = {"tags": cell.metadata["tags"]} if cell.metadata.get("tags") else {}
        if cell.cell_type != "code":
            continue
        if output_ignored(cell):
            cell.outputs = []
        for output in cell.outputs:
            if "metadata" in output:
                output.metadata = {}
            if "data" in output:
                output.data = {key: value for key, value in output.data.items() if key not in UNSTORED_MIME}
    return nb


def store_outputs(path: str | Path) -> None:
    """Re-run a source notebook with its own parameters, in its folder, and store its cleaned outputs:
    the reference nbval compares against. Run this after editing a notebook."""
    import nbformat
    from nbclient import NotebookClient

    path = Path(path)
    _absolute_data_path()
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb, kernel_manager_class=_kernel_manager_class(), resources={"metadata": {"path": str(path.parent)}}
    )
    client.execute()
    with atomic_path(path) as temp:
        nbformat.write(clean(nb), temp)


def select(names: list[str] | None) -> list[str]:
    """The notebooks to run, in workbook order; ``names`` may be full names or their two-digit prefixes."""
    if not names:
        return list(NOTEBOOKS)
    chosen = []
    for name in names:
        matches = [nb for nb in NOTEBOOKS if nb == name or nb.split("_")[0] == name]
        if not matches:
            raise ValueError(f"unknown notebook {name!r}; choose from {', '.join(NOTEBOOKS)} (or 00..05)")
        chosen.extend(matches)
    return [nb for nb in NOTEBOOKS if nb in chosen]


def run_workbook(
    quick: bool = False,
    out: str | Path = DEFAULT_OUT,
    figures: str | Path | None = DEFAULT_FIGURES,
    notebooks: str | Path = DEFAULT_NOTEBOOKS,
    only: list[str] | None = None,
    data: str | Path | None = None,
) -> dict[str, float]:
    """Execute the workbook's notebooks in order; return the wall time of each in seconds.

    Raises ``RuntimeError`` naming the failed notebooks (after running all of them) if any failed.
    """
    import papermill
    from papermill.exceptions import PapermillExecutionError

    notebooks, out = Path(notebooks), Path(out)
    if not notebooks.is_dir():
        raise FileNotFoundError(f"notebook folder {notebooks} not found; run from the repository root or pass --notebooks")
    names = select(only)
    missing = [name for name in names if not (notebooks / f"{name}.ipynb").is_file()]
    if missing:
        raise FileNotFoundError(f"{notebooks} lacks {', '.join(f'{m}.ipynb' for m in missing)}")
    _absolute_data_path()
    parameters: dict = {"QUICK": quick, "FIGURES": None if figures is None else str(Path(figures).resolve())}
    if data is not None:
        parameters["DATA"] = str(Path(data).resolve())
    out.mkdir(parents=True, exist_ok=True)
    mode = "quick" if quick else "full"
    print(f"workbook ({mode}): {len(names)} notebooks -> {out}/, figures -> {figures}/", flush=True)
    times, failed = {}, []
    for number, name in enumerate(names, 1):
        source, running, final = notebooks / f"{name}.ipynb", out / f".{name}.running.ipynb", out / f"{name}.ipynb"
        progress = f"[{number}/{len(names)}] {name}"
        print(f"{progress} ...", flush=True)
        start = time.perf_counter()
        try:
            papermill.execute_notebook(
                source,
                running,
                parameters=parameters,
                cwd=notebooks,
                progress_bar=False,
                kernel_manager_class=_kernel_manager_class(),
            )
        except PapermillExecutionError as error:
            times[name] = time.perf_counter() - start
            running.replace(out / f"{name}.failed.ipynb")
            failed.append(name)
            print(f"{progress}: FAILED after {times[name]:.1f} s: {error.ename}: {error.evalue} (cell {error.exec_count})", flush=True)
            continue
        times[name] = time.perf_counter() - start
        running.replace(final)
        print(f"{progress}: ok in {times[name]:.1f} s", flush=True)
    print(f"workbook ({mode}): {len(names) - len(failed)}/{len(names)} notebooks ran in {sum(times.values()):.0f} s")
    if failed:
        raise RuntimeError(f"{len(failed)} notebook(s) failed: {', '.join(failed)}; see {out}/NAME.failed.ipynb")
    return times


def _run(args: argparse.Namespace) -> int:
    if args.store_outputs:
        for number, name in enumerate(select(args.only), 1):
            print(f"[{number}] storing outputs of {args.notebooks / name}.ipynb", flush=True)
            store_outputs(args.notebooks / f"{name}.ipynb")
        return 0
    run_workbook(args.quick, args.out, args.figures, args.notebooks, args.only, args.data)
    return 0


def add_parser(commands: argparse._SubParsersAction) -> None:
    """Add ``hebbkit workbook`` to the command line."""
    parser = commands.add_parser(
        "workbook", help="run every notebook headlessly (papermill); figures to figures/", description=__doc__
    )
    parser.add_argument("--quick", action="store_true", help="small settings: all six notebooks in minutes on a CPU")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"executed notebooks (default {DEFAULT_OUT})")
    parser.add_argument("--figures", type=Path, default=DEFAULT_FIGURES, help=f"figures (default {DEFAULT_FIGURES})")
    parser.add_argument("--notebooks", type=Path, default=DEFAULT_NOTEBOOKS, help=f"source folder (default {DEFAULT_NOTEBOOKS})")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these notebooks (names or 00..05)")
    parser.add_argument("--data", type=Path, help="CIFAR-10 npz file or folder (default: $HEBBKIT_DATA, else download)")
    parser.add_argument(
        "--store-outputs", action="store_true", help="maintainers: re-run the source notebooks and store their clean outputs for nbval"
    )
    parser.set_defaults(run=_run)

