"""The exercises of notebooks 00–05. Coding exercises: every solution (the ```python block in the collapsed
"Solution" cell after an exercise) passes the notebook's own check call, every stub reports "not attempted", and
every checker rejects a wrong answer. Value exercises of 00–02 (which need no CIFAR-10): the answer that the
solution states (`name = value`) passes the notebook's check."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
import torch

from hebbkit import exercises
from hebbkit.catalog import NOTEBOOKS as NAMES
from hebbkit.data import synthetic_images

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
SOLUTION = re.compile(r"<details><summary>Solution</summary>.*?```python\n(.*?)```", re.S)
STATED = re.compile(r"`(\w+) = ([^`]+)`")


@dataclass(frozen=True)
class Exercise:
    notebook: str
    stub: str  # the exercise cell as the learner finds it
    checks: str  # its lines that call a checker
    solution: str

    def __str__(self) -> str:
        return f"{self.notebook}:{self.checks.split('(')[0]}"


def coding_exercises() -> list[Exercise]:
    """Every code cell that calls ``exercises.check_*``, with the solution block of the markdown cell after it."""
    found = []
    for name in NAMES:
        cells = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4).cells
        for index, cell in enumerate(cells):
            checks = [line for line in cell.source.splitlines() if line.startswith("exercises.check_")]
            if cell.cell_type != "code" or not checks:
                continue
            following = cells[index + 1] if index + 1 < len(cells) else None
            match = SOLUTION.search(following.source) if following is not None and following.cell_type == "markdown" else None
            assert match, f"{name}: the exercise calling {checks[0]} has no collapsed solution after it"
            found.append(Exercise(name, cell.source, "\n".join(checks), match.group(1)))
    return found


EXERCISES = coding_exercises()


def namespace() -> dict:
    """What the exercise cells use from their notebook's setup: small synthetic images stand in for CIFAR-10."""
    return {"torch": torch, "dataclass": dataclass, "pd": pd, "exercises": exercises,
            "images": synthetic_images(200, 10).train.float()}


def test_every_notebook_has_coding_exercises() -> None:
    per_notebook = {name: sum(e.notebook == name for e in EXERCISES) for name in NAMES}
    assert sum(per_notebook.values()) >= 3 and all(count >= 1 for count in per_notebook.values()), per_notebook


@pytest.mark.parametrize("exercise", EXERCISES, ids=str)
def test_solution_passes_its_checker(exercise: Exercise, capsys: pytest.CaptureFixture) -> None:
    scope = namespace()
    exec(exercise.solution, scope)
    exec(exercise.checks, scope)
    out = capsys.readouterr().out
    assert "correct!" in out and "not attempted" not in out, out


@pytest.mark.parametrize("exercise", EXERCISES, ids=str)
def test_stub_reports_not_attempted(exercise: Exercise, capsys: pytest.CaptureFixture) -> None:
    exec(exercise.stub, namespace())
    assert "not attempted yet" in capsys.readouterr().out


@dataclass(frozen=True)
class _OjaPerUnit:
    """A wrong Sanger: every unit runs Oja's rule on its own (diagonal instead of lower triangle)."""

    def update(self, x, weight, y, *, scale=1.0, **geometry):
        return scale * (y.T @ x - torch.diag(torch.diag(y.T @ y)) @ weight) / len(x)


@dataclass(frozen=True)
class _NoScale:
    """A wrong Sanger: right update, but ignores ``scale`` (so a plastic layer would ascend the wrong way)."""

    def update(self, x, weight, y, *, scale=1.0, **geometry):
        return (y.T @ x - torch.tril(y.T @ y) @ weight) / len(x)


def _t(values) -> float:
    from scipy import stats

    return float(stats.t.ppf(0.975, max(1, len(values) - 1)))


def _margins(results, how: str = "mean"):
    means = results.groupby(["regime", "method", "layer"])["val_accuracy"].agg(how).unstack("layer")
    return means.drop(index="supervised", level="method").sub(means.xs("supervised", level="method"), level="regime")


def _naive_softmax(y, temperature):
    e = (y / temperature).exp()
    return e / e.sum(1, keepdim=True)


def _softhebb_all_hebbian(x, w, temperature, power):
    """A wrong SoftHebb: every unit, the losers too, learns with +softmax."""
    u = x @ w.T
    r = torch.softmax(u / temperature, 1)
    delta = r.T @ x - (r * u).sum(0)[:, None] * w
    return ((w.norm(dim=1) - 1).abs() + 1e-10)[:, None] ** power * delta / delta.abs().max()


WRONG = [
    (exercises.check_hebb, lambda x, w: (x @ w)[:, None].mul(x).sum(0)),  # sum, not mean
    (exercises.check_oja, lambda x, w: ((x @ w)[:, None] * x).mean(0)),  # no decay
    (exercises.check_soft_wta, _naive_softmax),  # overflows at y / T = 1000
    (exercises.check_soft_wta, lambda y, t: torch.softmax(y / t, 0)),  # over the batch, not the units
    (exercises.check_hebb_loss, lambda y: -y.square().sum(1).mean()),  # no detach: twice the rule
    (exercises.check_instar_loss, lambda y, w, r: -(r * y).sum(1).mean() + 0.5 * (r.mean(0) * w.square().sum(1)).sum()),
    (exercises.check_sanger, _OjaPerUnit()),
    (exercises.check_sanger, _NoScale()),
    (lambda rule: exercises.check_sanger_patches(rule, namespace()["images"]), _OjaPerUnit()),
    (exercises.check_lr_schedule, lambda lr, decay, start, epoch: lr * decay ** max(0, epoch - start)),  # one late
    (exercises.check_lr_schedule, lambda lr, decay, start, epoch: lr * decay ** (epoch - start + 1)),  # no max: grows
    (exercises.check_confidence_interval, lambda v: (np.mean(v), 1.96 * np.std(v, ddof=1) / np.sqrt(len(v)))),  # z
    (exercises.check_confidence_interval, lambda v: (np.mean(v), _t(v) * np.std(v) / np.sqrt(len(v)))),  # ddof=0
    (exercises.check_confidence_interval, lambda v: (np.mean(v), _t(v) * np.std(v, ddof=1) / np.sqrt(len(v))
                                                     if len(v) > 1 else 0.0)),  # one seed: 0 instead of NaN
    (exercises.check_scratch_margins, lambda r: -_margins(r)),  # scratch minus method
    (exercises.check_scratch_margins, lambda r: _margins(r, "first")),  # one seed instead of the mean
    (exercises.check_softhebb, lambda x, w, t, p: _softhebb_all_hebbian(x, w, t, p)),  # no anti-Hebbian losers
    (exercises.check_softhebb, lambda x, w, t, p: torch.zeros_like(w)),
]


@pytest.mark.parametrize("check, answer", WRONG)
def test_checker_rejects_a_wrong_answer(check, answer) -> None:
    with pytest.raises(AssertionError):
        check(answer)


def value_exercises() -> list[tuple[str, int, str, str]]:
    """(notebook, cell index, answer name, stated value) of every ``demos.check_exercise`` cell in 00–02."""
    found = []
    for name in NAMES[:3]:
        cells = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4).cells
        for index, cell in enumerate(cells):
            if cell.cell_type == "code" and "demos.check_exercise(" in cell.source:
                stated = [m for m in STATED.finditer(cells[index + 1].source) if f"{m.group(1)} = None" in cell.source]
                assert stated, f"{name}: the solution after cell {index} states no `answer = value`"
                found.append((name, index, stated[0].group(1), stated[0].group(2)))
    return found


@pytest.mark.parametrize("notebook, index, answer, value", value_exercises(), ids=lambda v: str(v))
def test_stated_answer_passes_its_check(notebook: str, index: int, answer: str, value: str,
                                        capsys: pytest.CaptureFixture) -> None:
    cells = nbformat.read(NOTEBOOKS / f"{notebook}.ipynb", as_version=4).cells
    scope: dict = {}
    for cell in cells[:index]:  # the notebook's state, without its figures and widgets
        if cell.cell_type == "code" and "fig = " not in cell.source and "interactive_figure(" not in cell.source:
            exec(cell.source, scope)
    capsys.readouterr()
    exec(cells[index].source.replace(f"{answer} = None", f"{answer} = {value}"), scope)
    assert "correct!" in capsys.readouterr().out
