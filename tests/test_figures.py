"""The committed figures/ are current: each PNG stores the digest of the inputs it was drawn from, and it
still equals the digest of today's results/ and code. A figure left behind by new results fails here until
`hebbkit figures` (make figures) redraws it."""

from __future__ import annotations

import shutil
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


@pytest.fixture
def copy_of_the_results(tmp_path: Path) -> Path:
    """A scratch root holding a copy of the quick run's records and of one layer picture."""
    for name in ("results.jsonl", "layers_none_layer1.png"):
        source = ROOT / (figures.QUICK_RESULTS if name.endswith("jsonl") else figures.LAYERS_RESULTS) / name
        target = tmp_path / source.relative_to(ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, target)
    return tmp_path


def test_a_figure_goes_stale_when_its_results_change(copy_of_the_results, monkeypatch, capsys):
    root, out = copy_of_the_results, copy_of_the_results / "figures"
    picture, table = figures.select(["layers_quick_none_layer1.png", "table1_heatmap.png"])
    for figure in (picture, table):
        assert figures.status(figure, root, out) == "missing"
        figures.build(figure, root, out)
        assert figures.status(figure, root, out) == "current"
        assert figures.stored_digest(out / figure.name) == figures.digest(figure, root)

    records = root / figures.QUICK_RESULTS / "results.jsonl"
    lines = records.read_text().splitlines()
    records.write_text("\n".join(lines[:-1]) + "\n")  # one result fewer: the table changes
    assert figures.status(table, root, out) == "stale" and figures.status(picture, root, out) == "current"

    monkeypatch.chdir(root)
    assert main(["figures", "--check", "--only", table.name, picture.name]) == 1
    printed = capsys.readouterr().out
    assert f"figures/{table.name}: stale; run `hebbkit figures` to redraw it" in printed
    assert f"figures/{picture.name}: current" in printed
    assert main(["figures", "--only", table.name]) == 0
    assert figures.status(table, root, out) == "current"


def test_the_drawing_code_is_an_input_too():
    oja = figures.select(["oja_single_neuron.png"])[0]
    other = figures.Figure(oja.name, code=oja.code, draw=figures._soft_wta_temperature)
    assert figures.digest(oja, ROOT) != figures.digest(other, ROOT)


def test_unknown_figures_and_missing_inputs_are_named(tmp_path, capsys):
    with pytest.raises(ValueError, match="unknown figure.*nothing.png"):
        figures.select(["nothing.png"])
    with pytest.raises(FileNotFoundError, match="table1_heatmap.png is drawn from .*results.jsonl, which does not exist"):
        figures.digest(figures.select(["table1_heatmap.png"])[0], tmp_path)
