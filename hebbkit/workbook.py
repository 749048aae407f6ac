"""Run the whole workbook headlessly with papermill: ``hebbkit workbook [--quick] [--out DIR]``.

Each notebook runs in a fresh kernel of this Python environment, in its own folder, with the parameters
``QUICK`` and ``FIGURES`` (and ``DATA`` when given) injected after its ``parameters`` cell. Executed
notebooks go to ``--out`` (written beside their final name, then renamed; a failed one is kept as
``NAME.failed.ipynb`` until the notebook next succeeds), figures to ``--figures`` (default ``OUT/figures``),
so a run touches no tracked file. A notebook that needs CIFAR-10 is skipped, with the reason and the setting
that fixes it, where no copy can be had (an explicit ``--data`` that cannot be read is an error instead). One
progress line per notebook, a line every ``heartbeat`` seconds naming the cell a long notebook is executing, then
a summary; a failed notebook is reported with the cell that failed (or in which its kernel died).

``clean`` is what a stored notebook keeps: outputs with their PNG figures (so that it reads without a
kernel), cell tags and collapsed sources (``metadata.jupyter.source_hidden``), no widget state and no widget views.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import os
import sys
import threading
import time
from pathlib import Path

from .catalog import NOTEBOOKS, notebook_numbers
from .checks import check_positive
from .data import ENV_VAR, FIX, DataUnavailableError, load_data, unavailable_reason
from .utils import atomic_path, check_output_dir

DEFAULT_OUT = Path("runs/workbook")
DEFAULT_NOTEBOOKS = Path("notebooks")
IGNORE_MARKERS = ("NBVAL_IGNORE_OUTPUT", "NBVAL_SKIP")
IGNORE_TAGS = ("nbval-ignore-output", "nbval-skip")
WIDGET_MIME = ("application/vnd.jupyter.widget-view+json", "application/vnd.jupyter.widget-state+json")
DATA_MARKER = "load_data("  # a notebook whose source calls it needs image data (CIFAR-10 by default)
HEARTBEAT_SECONDS = 10.0  # while a notebook runs, a line naming its current cell at least this often
INJECTED_TAG = "injected-parameters"  # papermill's tag on the cell it adds after the parameters cell
ENGINE = "hebbkit"  # papermill's nbclient engine, reporting each cell it starts to a CellProgress


class NotebooksFailed(RuntimeError):
    """Notebooks that could run failed (``hebbkit workbook`` exits with status 1)."""


class CellProgress:
    """Which cell of a running notebook papermill executes, and since when: for heartbeats and failure lines."""

    def __init__(self, label: str) -> None:
        self.label, self.started, self.cell_started = label, time.perf_counter(), time.perf_counter()
        self.cell: str | None = None

    def enter(self, cells: list, index: int) -> None:
        """Cell ``index`` of the executed ``cells`` starts: name it as the source notebook numbers it (1-based,
        without papermill's injected parameters cell), with its first line of code."""
        injected = [i for i, cell in enumerate(cells) if INJECTED_TAG in cell.metadata.get("tags", [])]
        lines = [line.strip() for line in cells[index].source.splitlines() if line.strip()]
        code = ([line for line in lines if not line.startswith("#")] or lines or [""])[0]
        code = code if len(code) <= 60 else code[:57] + "..."
        if index in injected:
            self.cell = "the parameters papermill injected"
        else:
            number = index + 1 - sum(i < index for i in injected)
            self.cell = f"cell {number} of {len(cells) - len(injected)} (`{code}`)"
        self.cell_started = time.perf_counter()

    def where(self) -> str:
        """``cell 5 of 12 (`first line of code`)``, or ``before its first cell``."""
        return self.cell or "before its first cell"

    def beat(self) -> str:
        now = time.perf_counter()
        return (f"{self.label}: {now - self.started:.0f} s, running {self.where()} for "
                f"{now - self.cell_started:.0f} s")


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


@functools.cache
def _engine_name() -> str:
    """Register (once) papermill's nbclient engine with a hook that tells a ``CellProgress`` each cell it starts."""
    from papermill.engines import NBClientEngine, papermill_engines

    class ReportingEngine(NBClientEngine):
        @classmethod
        def execute_managed_notebook(cls, nb_man, kernel_name, *, progress: CellProgress, **kwargs):
            start = nb_man.cell_start

            def cell_start(cell, cell_index=None, **more):
                progress.enter(nb_man.nb.cells, cell_index)
                return start(cell, cell_index, **more)

            nb_man.cell_start = cell_start
            return super().execute_managed_notebook(nb_man, kernel_name, **kwargs)

    papermill_engines.register(ENGINE, ReportingEngine)
    return ENGINE


@contextlib.contextmanager
def _heartbeat(progress: CellProgress, every: float):
    """Print ``progress.beat()`` every ``every`` seconds until the block ends."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(every):
            print(progress.beat(), flush=True)

    thread = threading.Thread(target=beat, name="workbook-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def check_data(data: str | Path) -> None:
    """Raise ``ValueError`` naming ``--data`` unless :func:`~hebbkit.data.load_data` can read ``data``: an explicit
    source the user named is an error when unusable, never a reason to skip a notebook."""
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # torchvision's "Downloading ..." chatter
            load_data(data)
    except (FileNotFoundError, ValueError, DataUnavailableError) as error:
        raise ValueError(f"--data {data}: {error}") from None


def _absolute_data_path() -> None:
    """Kernels run in the notebook folder: make a relative ``$HEBBKIT_DATA`` absolute for them."""
    if os.environ.get(ENV_VAR):
        os.environ[ENV_VAR] = str(Path(os.environ[ENV_VAR]).resolve())


def output_ignored(cell) -> bool:
    """Whether nbval ignores this cell's output (a ``# NBVAL_IGNORE_OUTPUT``/``# NBVAL_SKIP`` line or tag)."""
    lines = {line.strip().lstrip("#").strip() for line in cell.source.splitlines() if line.strip().startswith("#")}
    return bool(lines & set(IGNORE_MARKERS)) or bool(set(cell.metadata.get("tags", [])) & set(IGNORE_TAGS))


def clean(nb):
    """Strip a notebook to what is stored: its outputs, with figures as PNG and without run metadata (a cell keeps
    only its tags and a hidden source's ``jupyter.source_hidden``), widget views (a widget cell's static default figure is the plain figure cell before it) or widget state.
    Execution counts stay: nbval rejects a reference cell that has outputs but no count."""
    nb.metadata = {key: value for key, value in nb.metadata.items() if key in ("kernelspec", "language_info")}
    nb.metadata["language_info"] = {"name": "python"}
    for cell in nb.cells:
        kept = {"tags": cell.metadata["tags"]} if cell.metadata.get("tags") else {}
        if cell.metadata.get("jupyter", {}).get("source_hidden"):  # a collapsed setup or check cell stays collapsed
            kept["jupyter"] = {"source_hidden": True}
        cell.metadata = kept
        if cell.cell_type != "code":
            continue
        cell.outputs = [output for output in cell.outputs if not set(output.get("data", {})) & set(WIDGET_MIME)]
        for output in cell.outputs:
            if "metadata" in output:
                output.metadata = {}
    return nb


def needs_data(path: str | Path) -> bool:
    """Whether the notebook at ``path`` trains on CIFAR-10 (its source calls ``load_data``)."""
    return DATA_MARKER in Path(path).read_text()


def store_outputs(path: str | Path) -> None:
    """Re-run a source notebook with its own parameters, in its folder, and store its cleaned outputs:
    the reference nbval compares against. Run this after editing a notebook."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    path = Path(path)
    _absolute_data_path()
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb, kernel_manager_class=_kernel_manager_class(), resources={"metadata": {"path": str(path.parent)}}
    )
    try:
        client.execute()
    except CellExecutionError as error:
        raise RuntimeError(f"{path}: a cell failed ({error.ename}: {error.evalue}); outputs not stored") from None
    with atomic_path(path) as temp:
        nbformat.write(clean(nb), temp)


def select(names: list[str] | None) -> list[str]:
    """The notebooks to run, in workbook order; ``names`` may be full names or their two-digit prefixes."""
    if not names:
        return list(NOTEBOOKS)
    chosen = []
    for name in names:
        matches = [nb for nb, number in zip(NOTEBOOKS, notebook_numbers()) if name in (nb, number)]
        if not matches:
            raise ValueError(f"unknown notebook {name!r}; choose from {', '.join(NOTEBOOKS)} (or their numbers "
                             f"{', '.join(notebook_numbers())})")
        chosen.extend(matches)
    return [nb for nb in NOTEBOOKS if nb in chosen]


def run_workbook(
    quick: bool = False,
    out: str | Path = DEFAULT_OUT,
    figures: str | Path | None = None,
    notebooks: str | Path = DEFAULT_NOTEBOOKS,
    only: list[str] | None = None,
    data: str | Path | None = None,
    heartbeat: float = HEARTBEAT_SECONDS,
) -> dict[str, float]:
    """Execute the workbook's notebooks in order; return the wall time in seconds of each that ran.

    ``figures`` defaults to ``out/figures``. An explicit ``data`` that cannot be read is a ``ValueError`` before
    anything runs; without one, a notebook that needs CIFAR-10 where none can be had is skipped with a line saying
    why. While a notebook runs, a line every ``heartbeat`` seconds names the cell it executes. Raises
    :class:`NotebooksFailed` naming the failed notebooks (after running all the others).
    """
    check_positive("heartbeat", heartbeat)
    out = check_output_dir("--out", out)  # before anything runs
    figures = check_output_dir("--figures", out / "figures" if figures is None else figures)
    notebooks = Path(notebooks)
    names = _sources(notebooks, only)
    if data is not None:
        check_data(data)
    import papermill
    from nbclient.exceptions import DeadKernelError
    from papermill.exceptions import PapermillExecutionError

    _absolute_data_path()
    parameters: dict = {"QUICK": quick, "FIGURES": str(figures.resolve())}
    if data is not None:  # a path for the kernels, which run in the notebook folder; a dataset name as it is
        parameters["DATA"] = str(Path(data).expanduser().resolve()) if Path(data).expanduser().exists() else str(data)
    mode = "quick" if quick else "full"
    print(f"workbook ({mode}): {len(names)} notebooks -> {out}/, figures -> {figures}/", flush=True)
    times, skipped, failed = {}, [], []
    data_problem = functools.cache(lambda: None if data is not None else unavailable_reason())
    for number, name in enumerate(names, 1):
        source, running, final = notebooks / f"{name}.ipynb", out / f".{name}.running.ipynb", out / f"{name}.ipynb"
        label = f"[{number}/{len(names)}] {name}"
        reason = data_problem() if needs_data(source) else None
        if reason:
            skipped.append(name)
            print(f"{label}: skipped: {reason}; to run it, {FIX}", flush=True)
            continue
        print(f"{label} ...", flush=True)
        progress, kept = CellProgress(label), out / f"{name}.failed.ipynb"
        try:
            with _heartbeat(progress, heartbeat):
                papermill.execute_notebook(
                    source,
                    running,
                    parameters=parameters,
                    cwd=notebooks,
                    progress_bar=False,
                    kernel_manager_class=_kernel_manager_class(),
                    engine_name=_engine_name(),
                    progress=progress,
                )
        except (PapermillExecutionError, DeadKernelError) as error:
            problem = "the kernel died" if isinstance(error, DeadKernelError) else \
                f"{error.ename}: {(str(error.evalue).splitlines() or [''])[0][:200]}"
        except BaseException:  # interrupted, or papermill itself failed: keep what ran, under the failed name
            if running.exists():
                running.replace(kept)
            raise
        else:
            problem = None
        times[name] = time.perf_counter() - progress.started
        if problem:
            if running.exists():
                running.replace(kept)
            failed.append(name)
            print(f"{label}: FAILED after {times[name]:.1f} s in {progress.where()}: {problem}", flush=True)
            continue
        running.replace(final)
        kept.unlink(missing_ok=True)  # an earlier failure is stale now
        print(f"{label}: ok in {times[name]:.1f} s", flush=True)
    ran = len(names) - len(skipped) - len(failed)
    summary = f"workbook ({mode}): {ran} ran, {len(skipped)} skipped, {len(failed)} failed, in {sum(times.values()):.0f} s"
    if skipped:
        summary += f" (skipped: {', '.join(skipped)})"
    print(summary, flush=True)
    if failed:
        raise NotebooksFailed(f"{len(failed)} notebook(s) failed: {', '.join(failed)}; see {out}/NAME.failed.ipynb")
    return times


def _sources(notebooks: Path, only: list[str] | None) -> list[str]:
    """The chosen notebook names, after checking that ``notebooks`` holds them."""
    if not notebooks.is_dir():
        raise FileNotFoundError(f"notebook folder {notebooks} not found; run from the repository root or pass --notebooks")
    names = select(only)
    missing = [name for name in names if not (notebooks / f"{name}.ipynb").is_file()]
    if missing:
        raise FileNotFoundError(f"{notebooks} lacks {', '.join(f'{m}.ipynb' for m in missing)}")
    return names


def run_command(args: argparse.Namespace) -> int:
    """``hebbkit workbook`` (its arguments: see ``hebbkit.cli``)."""
    if not args.store_outputs:
        try:
            run_workbook(args.quick, args.out, args.figures, args.notebooks, args.only, args.data)
        except NotebooksFailed as error:
            print(f"hebbkit workbook: {error}", file=sys.stderr)
            return 1
        return 0
    names = _sources(args.notebooks, args.only)
    if args.data is not None:
        check_data(args.data)
        os.environ[ENV_VAR] = str(args.data)
    data_problem = functools.cache(lambda: unavailable_reason(args.data))
    for number, name in enumerate(names, 1):
        path = args.notebooks / f"{name}.ipynb"
        reason = data_problem() if needs_data(path) else None
        if reason:
            print(f"[{number}/{len(names)}] {path}: not stored: {reason}; {FIX}", flush=True)
            continue
        print(f"[{number}/{len(names)}] storing the outputs of {path}", flush=True)
        store_outputs(path)
    return 0
