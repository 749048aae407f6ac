"""The committed ``figures/``, drawn by one command (``hebbkit figures``, ``make figures``) from their inputs:
the committed ``results/``, the code of the deterministic demos, and (for the filter picture) CIFAR-10.

Each PNG stores the SHA-256 of its inputs (the bytes of its result files, the source of the hebbkit modules
that draw it, this one included, and the images it learns from) in the PNG text chunk
``hebbkit:inputs``. :func:`check` recomputes that digest without drawing: a figure whose results or code
changed since it was drawn is *stale*, and ``tests/test_figures.py`` fails until ``hebbkit figures`` redraws
it. The notebooks save their own figures under ``runs/`` (``hebbkit workbook``), never here.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

DIGEST_KEY = "hebbkit:inputs"
QUICK_RESULTS = Path("results/quick")
LAYERS_RESULTS = Path("results/layers_quick")
DEMO_CODE = ("hebbkit.demos", "hebbkit.viz", "hebbkit.rules")
TABLE_CODE = ("hebbkit.lagani.table", "hebbkit.lagani.paper", "hebbkit.store")
FILTER_IMAGES = 2_000  # the first CIFAR-10 training images, as in notebook 03


@dataclass(frozen=True)
class Figure:
    """One committed figure: ``draw(root, data)`` returns a matplotlib figure (or ``copy`` names a PNG under
    ``root`` to copy); ``files`` (under ``root``) and ``code`` (module names) are its inputs, and
    ``needs_data`` adds the CIFAR-10 images it learns from."""

    name: str
    files: tuple[str, ...] = ()
    code: tuple[str, ...] = ()
    draw: Callable | None = None
    copy: str | None = None
    needs_data: bool = False


# ------------------------------------------------------------------------------------------ drawings


def _oja(root: Path, data: str | Path | None):
    from . import demos, viz

    return viz.oja_figure(demos.gaussian_cloud(500, angle=30.0, seed=0), lr=0.01, steps=300, seed=0)


def _soft_wta_temperature(root: Path, data: str | Path | None):
    from . import demos, viz

    points, _ = demos.clusters(600, seed=0)
    return viz.competition_figure(points, temperatures=(0.03, 1.0, 30.0), lr=0.05, steps=300, seed=0)


def _filter_images(data: str | Path | None):
    from .data import ENV_VAR

    return _load_filter_images(data or os.environ.get(ENV_VAR))


@functools.lru_cache(maxsize=2)
def _load_filter_images(source: str | Path | None):
    from .data import load_data

    return load_data(source).train.subset(slice(0, FILTER_IMAGES))


def _conv_filters(root: Path, data: str | Path | None):
    from . import demos, viz
    from .rules import HPCA, SoftWTA

    images = _filter_images(data).float()
    banks = {
        "HPCA (f = ReLU)": demos.train_conv_filters(images, HPCA("relu"), channels=16, lr=0.02, epochs=2,
                                                    batch_size=16, seed=0),
        "soft-WTA, T = 0.02": demos.train_conv_filters(images, SoftWTA(0.02), channels=32, lr=0.1, seed=0),
    }
    return viz.filters_row_figure(banks)


def latest_results(folder: str | Path):
    """The :class:`~hebbkit.lagani.Results` in ``folder``'s results store: each method under its latest settings
    (:func:`hebbkit.lagani.experiment.stored_results`)."""
    from .lagani.experiment import stored_results

    return stored_results(folder)


def table1_vs_paper_figure(results):
    """Table 1 of ``results`` as a heatmap, beside its difference to the paper (points)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    from .lagani import DISPLAY_NAMES, heatmap, table1
    from .lagani.table import accuracy_name

    table = table1(results.records)
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2))
    heatmap(table, ax=left, title=f"{results.dataset} {accuracy_name(results.records)} accuracy")
    difference = table.xs("mean", axis=1, level=1) - table.xs("paper", axis=1, level=1)
    difference.index = [f"{regime:g}% {DISPLAY_NAMES[method]}" for regime, method in difference.index]
    sns.heatmap(difference, annot=True, fmt="+.1f", cmap="RdBu", center=0, ax=right, cbar_kws={"label": "points"})
    right.set(title="ours − paper", xlabel="classifier on layer", ylabel="")
    fig.tight_layout()
    return fig


def _table1_vs_paper(root: Path, data: str | Path | None):
    return table1_vs_paper_figure(latest_results(root / QUICK_RESULTS))


def _table1_heatmap(root: Path, data: str | Path | None):
    from .lagani import heatmap, table1
    from .lagani.table import accuracy_name

    results = latest_results(root / QUICK_RESULTS)
    ax = heatmap(table1(results.records), title=f"{results.dataset} {accuracy_name(results.records)} accuracy")
    ax.figure.tight_layout()
    return ax.figure


def _convergence(root: Path, data: str | Path | None):
    from .lagani import convergence_data, convergence_plot

    results = latest_results(root / QUICK_RESULTS)
    axes = convergence_plot(convergence_data(results.records, results.curves))
    axes[0].figure.tight_layout()
    return axes[0].figure


def _layer_pictures() -> list[Figure]:
    pictures = [("none", 1), ("none", 2), ("none", 3), ("both", 2), ("both", 3)]
    return [
        Figure(f"layers_quick_{intervention}_layer{layer}.png",
               copy=str(LAYERS_RESULTS / f"layers_{intervention}_layer{layer}.png"))
        for intervention, layer in pictures
    ]


FIGURES: tuple[Figure, ...] = (
    Figure("oja_single_neuron.png", code=DEMO_CODE, draw=_oja),
    Figure("soft_wta_temperature.png", code=DEMO_CODE, draw=_soft_wta_temperature),
    Figure("conv_filters.png", code=(*DEMO_CODE, "hebbkit.layers"), draw=_conv_filters, needs_data=True),
    Figure("table1_vs_paper.png", files=(str(QUICK_RESULTS / "results.sqlite"),), code=TABLE_CODE, draw=_table1_vs_paper),
    Figure("table1_heatmap.png", files=(str(QUICK_RESULTS / "results.sqlite"),), code=TABLE_CODE, draw=_table1_heatmap),
    Figure("convergence.png", files=(str(QUICK_RESULTS / "results.sqlite"),),
           code=TABLE_CODE, draw=_convergence),
    *_layer_pictures(),
    *[Figure(f"softhebb_quick_filters_{rule}.png", copy=f"results/softhebb_quick/filters_{rule}_layer1.png")
      for rule in ("softhebb", "krotov")],
)


# ------------------------------------------------------------------------------------ digests, check


def _module_source(name: str) -> bytes:
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise ValueError(f"module {name} not found")
    return Path(spec.origin).read_bytes()


def digest(figure: Figure, root: str | Path = ".", data: str | Path | None = None) -> str:
    """SHA-256 of everything ``figure`` is drawn from (see the module docstring)."""
    root = Path(root)
    sha = hashlib.sha256()

    def add(label: str, content: bytes) -> None:
        sha.update(f"{label}\0{len(content)}\0".encode())
        sha.update(content)

    for name in (*figure.files, *([figure.copy] if figure.copy else [])):
        path = root / name
        if not path.is_file():
            raise FileNotFoundError(f"{figure.name} is drawn from {path}, which does not exist")
        add(f"file {name}", path.read_bytes())
    for module in figure.code:
        add(f"module {module}", _module_source(module))
    if figure.draw is not None:  # this module's drawing functions and their shared helpers
        add(f"drawing {figure.draw.__name__}", _module_source(__name__))
    if figure.needs_data:
        add("images", _filter_images(data).images.numpy().tobytes())
    return sha.hexdigest()


def stored_digest(path: str | Path) -> str | None:
    """The input digest stored in the PNG at ``path`` (``None`` if it has none)."""
    from PIL import Image

    with Image.open(path) as image:
        return image.text.get(DIGEST_KEY)


def select(names: list[str] | None) -> list[Figure]:
    """The figures called ``names`` (all when ``None``)."""
    if not names:
        return list(FIGURES)
    known = {figure.name: figure for figure in FIGURES}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ValueError(f"unknown figure(s) {', '.join(unknown)}; choose from {', '.join(known)}")
    return [known[name] for name in names]


def status(figure: Figure, root: str | Path = ".", out: str | Path = "figures", data: str | Path | None = None) -> str:
    """``current``, ``missing``, ``stale`` (drawn from other inputs), or ``unchecked: REASON``."""
    path = Path(out) / figure.name
    if not path.is_file():
        return "missing"
    if figure.needs_data:
        from .data import DataUnavailableError

        try:
            _filter_images(data)
        except (DataUnavailableError, FileNotFoundError, ValueError) as error:
            return f"unchecked: needs CIFAR-10 ({error})"
    return "current" if stored_digest(path) == digest(figure, root, data) else "stale"


def build(figure: Figure, root: str | Path = ".", out: str | Path = "figures", data: str | Path | None = None) -> Path:
    """Draw (or copy) ``figure`` into ``out``, storing the digest of its inputs; return its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image, PngImagePlugin

    from .utils import atomic_path

    root, path = Path(root), Path(out) / figure.name
    key = digest(figure, root, data)
    with atomic_path(path) as temp:
        if figure.copy is not None:
            info = PngImagePlugin.PngInfo()
            info.add_text(DIGEST_KEY, key)
            with Image.open(root / figure.copy) as image:
                image.save(temp, format="png", pnginfo=info, optimize=True)
        else:
            drawn = figure.draw(root, data)
            drawn.savefig(temp, format="png", dpi=80, bbox_inches="tight", metadata={DIGEST_KEY: key})
            plt.close(drawn)
    return path


def run_command(args: argparse.Namespace) -> int:
    """``hebbkit figures`` (its arguments: see ``hebbkit.cli``): redraw what is stale or missing, or check."""
    from .utils import check_output_dir

    chosen = select(args.only)
    if not args.check:
        check_output_dir("--out", args.out)  # before anything is drawn
    problems = 0
    for figure in chosen:
        try:
            state = status(figure, ".", args.out, args.data)
        except OSError as error:  # --check reads a folder it never made: a name too long, no permission
            raise ValueError(f"--out: {args.out / figure.name} cannot be read ({error.strerror or error})") from None
        if state.startswith("unchecked"):
            print(f"{args.out / figure.name}: left as it is ({state[len('unchecked: '):]})")
        elif state == "current":
            print(f"{args.out / figure.name}: current")
        elif args.check:
            problems += 1
            print(f"{args.out / figure.name}: {state}; run `hebbkit figures` to redraw it")
        else:
            print(f"{build(figure, '.', args.out, args.data)}: drawn ({state} before)", flush=True)
    return 1 if problems else 0
