"""The committed figures/ are current: each PNG stores the digest of the inputs it was drawn from, and it
still equals the digest of today's results/ and code. A figure left behind by new results fails here until
`hebbkit figures` (make figures) redraws it."""

from __future__ import annotations

from pathlib import Path

import pytest

from hebbkit import figures
from hebbkit.cli import main

ROOT = Path(__file__).resolve().parents[1]
FOLDER = ROOT / "figures"


@pytest.mark.parametrize("figure", figures.FIGURES, ids=[figure.name for figure in figures.FIGURES])
def test_committed_figure_is_current(figure):
    state = figures.status(figure, ROOT, FOLDER)
    if state.startswith("unchecked"):
        pytest.skip(state)
    assert state == "current", f"figures/{figure.name} is {state}: run `hebbkit figures` (make figures) and commit it"


def test_the_folder_holds_exactly_the_drawn_figures():
    assert sorted(path.name for path in FOLDER.iterdir()) == sorted(figure.name for figure in figures.FIGURES)


def _draw_counts(root: Path, data):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([float(line) for line in (root / "results" / "counts.txt").read_text().split()])
    return fig


@pytest.fixture
def scratch(tmp_path: Path, monkeypatch) -> tuple[Path, figures.Figure, figures.Figure]:
    """A scratch root with two results (numbers, a picture) and the two figures drawn from them."""
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "counts.txt").write_text("1 3 2\n")
    from PIL import Image

    Image.new("RGB", (8, 8), "white").save(tmp_path / "results" / "picture.png")
    drawn = figures.Figure("counts.png", files=("results/counts.txt",), code=("hebbkit.viz",), draw=_draw_counts)
    copied = figures.Figure("picture.png", copy="results/picture.png")
    monkeypatch.setattr(figures, "FIGURES", (drawn, copied))
    return tmp_path, drawn, copied


def test_a_figure_goes_stale_when_its_results_change(scratch, monkeypatch, capsys):
    root, drawn, copied = scratch
    out = root / "figures"
    for figure in (drawn, copied):
        assert figures.status(figure, root, out) == "missing"
        figures.build(figure, root, out)
        assert figures.status(figure, root, out) == "current"
        assert figures.stored_digest(out / figure.name) == figures.digest(figure, root)

    (root / "results" / "counts.txt").write_text("1 3 2 5\n")  # a new result: the drawn figure is stale
    assert figures.status(drawn, root, out) == "stale" and figures.status(copied, root, out) == "current"

    monkeypatch.chdir(root)
    assert main(["figures", "--check"]) == 1
    printed = capsys.readouterr().out
    assert "figures/counts.png: stale; run `hebbkit figures` to redraw it\nfigures/picture.png: current\n" in printed
    assert main(["figures"]) == 0
    assert capsys.readouterr().out == "figures/counts.png: drawn (stale before)\nfigures/picture.png: current\n"
    assert figures.status(drawn, root, out) == "current"


def test_the_code_that_draws_is_an_input_too(scratch):
    root, drawn, _ = scratch
    assert figures.digest(drawn, root) != figures.digest(figures.Figure(drawn.name, files=drawn.files, draw=_draw_counts), root)


def test_unknown_figures_and_missing_inputs_are_named(tmp_path, capsys):
    with pytest.raises(ValueError, match="unknown figure.*nothing.png"):
        figures.select(["nothing.png"])
    (table,) = figures.select(["table1_heatmap.png"])
    with pytest.raises(FileNotFoundError, match="table1_heatmap.png is drawn from .*results.sqlite, which does not exist"):
        figures.digest(table, tmp_path)


def test_the_filter_picture_is_left_unchecked_without_cifar10(tmp_path, monkeypatch):
    monkeypatch.setenv("HEBBKIT_DATA", str(tmp_path / "absent.npz"))
    (conv,) = figures.select(["conv_filters.png"])
    state = figures.status(conv, ROOT, FOLDER)
    assert state == f"unchecked: needs CIFAR-10 (no npz file at {tmp_path / 'absent.npz'})"


def test_the_prose_quotes_the_committed_quick_run():
    """README.md and notebook 05's verdicts quote results/quick: a rerun that moves them fails here until the text
    moves with the numbers."""
    import nbformat

    from hebbkit.lagani import claim_verdicts

    results = figures.latest_results(figures.QUICK_RESULTS)
    verdicts = claim_verdicts(results.records).set_index(["claim", "regime"])
    vae = verdicts.loc["Hebbian beats VAE"]
    quoted = (" / ".join(f"{v:.1f}" for v in vae["ours"]) + " against " + " / ".join(f"{v:.1f}" for v in vae["against"]))
    readme = " ".join(Path("README.md").read_text().split())  # line breaks count as spaces
    notebook = nbformat.read("notebooks/05_results_table.ipynb", as_version=4)
    verdict_cell = " ".join(next(c.source for c in notebook.cells
                                 if c.source.startswith("### Verdicts on the paper's claims")).split())
    assert quoted in readme and quoted in verdict_cell.replace(" % against ", " against ").replace(" %", "")
    scratch = verdicts.loc["Hebbian beats training from scratch"]
    margins = ", ".join(f"{d:+.1f}".replace("-", "−") for d in scratch["ours"] - scratch["against"])
    assert margins in verdict_cell, f"notebook 05 should quote the margins over scratch {margins}"


def test_each_method_is_read_under_its_own_latest_settings(tmp_path):
    """Methods have their own keys: the figures show every method, each under the settings of its latest run."""
    from hebbkit.store import ResultStore

    def record(method, settings, accuracy):
        return {"method": method, "regime": 1.0, "layer": 1, "seed": 0, "settings": settings,
                "val_accuracy": accuracy, "history": [], "dataset": "toy", "cifar10": False}

    with ResultStore(tmp_path) as store:
        store.put(record("hpca", "hpca-old", 10.0))
        store.put(record("vae", "vae-key", 20.0))
        store.put(record("hpca", "hpca-new", 30.0))  # HPCA re-run with new settings: only these rows count
        store.put_curves("vae-key", [{"curve": "val", "method": "vae", "seed": 0, "layer": 1, "epoch": 1}])
        store.put_curves("hpca-old", [{"curve": "val", "method": "hpca", "seed": 0, "layer": 1, "epoch": 1}])
    results = figures.latest_results(tmp_path)
    assert sorted(zip(results.records["method"], results.records["val_accuracy"])) == [("hpca", 30.0), ("vae", 20.0)]
    assert list(results.curves["settings"]) == ["vae-key"]
    assert results.dataset == "toy" and not results.cifar10


def test_the_committed_table_is_rendered_from_the_committed_store():
    """results/quick/table1.md shows what results/quick/results.sqlite holds (test accuracy, as the paper)."""
    from hebbkit.lagani import format_table, table1
    from hebbkit.utils import to_markdown

    results = figures.latest_results(figures.QUICK_RESULTS)
    written = (figures.QUICK_RESULTS / "table1.md").read_text()
    assert written.startswith(to_markdown(format_table(table1(results.records))))
    assert "cifar10 test accuracy" in written
