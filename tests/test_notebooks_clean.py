"""The workbook's notebooks are stored clean and read without a kernel: outputs with their figures as PNG,
each notebook within a size budget, no widget state or views, a parameters cell of literals, widget cells
ignored by nbval and preceded by the same figure drawn statically (its default)."""

from __future__ import annotations

import ast
import copy
from pathlib import Path

import nbformat
import pytest

from hebbkit.workbook import NOTEBOOKS, WIDGET_MIME, clean, output_ignored

FOLDER = Path(__file__).resolve().parents[1] / "notebooks"
PATHS = sorted(FOLDER.glob("*.ipynb"))
MAX_NOTEBOOK_BYTES = 1_500_000  # the stored file, figures included
MAX_TEXT_CHARS = 3_000  # the text of one output (images aside)
INJECTED = {"QUICK", "FIGURES"}  # what `hebbkit workbook` injects into every notebook


def _code_cells(nb) -> list:
    return [cell for cell in nb.cells if cell.cell_type == "code"]


def test_the_workbook_is_exactly_the_six_notebooks() -> None:
    assert [path.stem for path in PATHS] == list(NOTEBOOKS)


@pytest.fixture(params=PATHS, ids=[path.stem for path in PATHS])
def notebook(request):
    return nbformat.read(request.param, as_version=4)


def test_valid_and_stored_clean(notebook) -> None:
    nbformat.validate(notebook)
    assert "widgets" not in notebook.metadata and "papermill" not in notebook.metadata
    assert clean(copy.deepcopy(notebook)) == notebook, "re-run `hebbkit workbook --store-outputs --only NAME`"


def test_within_the_size_budget(notebook, request) -> None:
    path = FOLDER / f"{request.node.callspec.id}.ipynb"
    size = path.stat().st_size
    assert size <= MAX_NOTEBOOK_BYTES, f"{path.name} is {size:,} bytes, over the budget of {MAX_NOTEBOOK_BYTES:,}"


def test_outputs_hold_text_and_png_figures_only(notebook) -> None:
    for cell in _code_cells(notebook):
        for output in cell.outputs:
            assert output.output_type != "error", f"stored error in cell {cell.id}"
            data = output.get("data", {})
            assert not set(data) & set(WIDGET_MIME), f"widget stored in cell {cell.id}"
            text = data.get("text/plain", "") + output.get("text", "")
            assert len(text) <= MAX_TEXT_CHARS, f"cell {cell.id} stores {len(text)} characters of text"


def test_every_figure_is_stored_as_png(notebook) -> None:
    for cell in _code_cells(notebook):
        for output in cell.outputs:
            data = output.get("data", {})
            if data.get("text/plain", "").startswith("<Figure size"):
                assert "image/png" in data, f"cell {cell.id} shows a figure but stores no PNG: re-store the notebook"


def test_first_code_cell_holds_literal_parameters(notebook) -> None:
    cell = _code_cells(notebook)[0]
    assert cell.metadata.get("tags") == ["parameters"]
    names = set()
    for statement in ast.parse(cell.source).body:
        assert isinstance(statement, ast.Assign) and len(statement.targets) == 1, ast.unparse(statement)
        target = statement.targets[0]
        assert isinstance(target, ast.Name) and target.id.isupper(), ast.unparse(statement)
        ast.literal_eval(statement.value)  # raises ValueError for anything but a literal
        names.add(target.id)
    assert INJECTED <= names
    assert not cell.outputs


def test_widget_cells_are_ignored_by_nbval_and_follow_a_plain_figure(notebook) -> None:
    cells = _code_cells(notebook)
    for before, cell in zip(cells, cells[1:]):
        if "interactive_figure(" in cell.source:
            assert output_ignored(cell), f"widget cell {cell.id} is not ignored by nbval"
            shown = [output.get("data", {}) for output in before.outputs]
            assert any("image/png" in data for data in shown), f"no static figure before widget cell {cell.id}"


def test_opens_with_objectives_and_closes_with_self_checking_exercises(notebook) -> None:
    assert "Learning objectives" in notebook.cells[0].source
    markdown = "\n".join(cell.source for cell in notebook.cells if cell.cell_type == "markdown")
    assert "## Exercises" in markdown and "<details><summary>Solution</summary>" in markdown
    assert any("check_exercise(" in cell.source for cell in _code_cells(notebook))


FRAMED = PATHS


@pytest.mark.parametrize("path", FRAMED, ids=[path.stem for path in FRAMED])
def test_plumbing_is_collapsed_and_the_day_is_framed(path) -> None:
    """Setup cells and regression checks are collapsed (still run by nbval); the opening cell gives the learner's
    time; the glossary in 00 is linked from every other notebook; figures are saved by the package's one helper."""
    nb = nbformat.read(path, as_version=4)
    for cell in _code_cells(nb):
        plumbing = cell.source.startswith("# Setup") or "expect_close(" in cell.source
        hidden = cell.metadata.get("jupyter", {}).get("source_hidden", False)
        assert hidden == plumbing or (hidden and output_ignored(cell)), \
            f"{path.stem}: cell {cell.id} {'should' if plumbing else 'need not'} be collapsed"
        assert "def save(" not in cell.source, f"{path.stem}: use viz.save_figure, not a copy of it"
    assert "**Time.**" in nb.cells[0].source
    markdown = "\n".join(cell.source for cell in nb.cells if cell.cell_type == "markdown")
    assert "## Glossary" in markdown if path.stem == NOTEBOOKS[0] else "00_overview.ipynb#Glossary" in markdown
