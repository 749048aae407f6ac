"""The workbook's notebooks are stored clean: small text outputs only, no widget state, a parameters cell
of literals, widget cells ignored by nbval and preceded by a plain figure call."""

from __future__ import annotations

import ast
import copy
import json
from pathlib import Path

import nbformat
import pytest

from hebbkit.workbook import NOTEBOOKS, UNSTORED_MIME, clean, output_ignored

FOLDER = Path(__file__).resolve().parents[1] / "notebooks"
PATHS = sorted(FOLDER.glob("*.ipynb"))
MAX_OUTPUT_CHARS, MAX_NOTEBOOK_OUTPUT_CHARS = 2_000, 10_000
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


def test_outputs_are_small_text(notebook) -> None:
    total = 0
    for cell in _code_cells(notebook):
        for output in cell.outputs:
            assert output.output_type != "error", f"stored error in cell {cell.id}"
            assert not set(output.get("data", {})) & set(UNSTORED_MIME), f"image or widget stored in cell {cell.id}"
            size = len(json.dumps(output))
            assert size <= MAX_OUTPUT_CHARS, f"cell {cell.id} stores {size} characters of output"
            total += size
    assert total <= MAX_NOTEBOOK_OUTPUT_CHARS


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
            assert output_ignored(cell) and cell.source.startswith("# NBVAL_IGNORE_OUTPUT")
            shown = [output.get("data", {}).get("text/plain", "") for output in before.outputs]
            assert any(text.startswith("<Figure size") for text in shown), f"no plain figure before cell {cell.id}"


def test_opens_with_objectives_and_closes_with_self_checking_exercises(notebook) -> None:
    assert "Learning objectives" in notebook.cells[0].source
    markdown = "\n".join(cell.source for cell in notebook.cells if cell.cell_type == "markdown")
    assert "## Exercises" in markdown and "<details><summary>Solution</summary>" in markdown
    assert any("check_exercise(" in cell.source for cell in _code_cells(notebook))
