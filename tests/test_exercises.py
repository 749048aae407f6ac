"""The exercises of notebooks 00–05. Coding exercises: every solution (the ```python block in the collapsed
"Solution" cell after an exercise) passes the notebook's own check call, every stub reports "not attempted", and
every checker rejects a wrong answer. Value exercises of 00–02 (which need no CIFAR-10): the answer that the
solution states (`name = value`) passes the notebook's check."""

from __future__ import annotations

import re
from functools import partial
from dataclasses import dataclass
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
import torch

import hebbkit.rules
from hebbkit import exercises, lagani
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
    return {"torch": torch, "dataclass": dataclass, "pd": pd, "exercises": exercises, "rules": hebbkit.rules,
            "lagani": lagani,
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


def _cell(net, layer, labelled, val, config, seed, mode="eval", pick=None, normalize=True, shift=0):
    """Notebook 04's one cell of Table 1, right by default, wrong in the way each keyword says."""
    net.train(mode == "train")
    with torch.no_grad():
        cut = max(1, layer + shift)
        x, v = (net.features(images.float(normalize=normalize), cut) for images in (labelled, val))
    _, history = lagani.train_head(x, labelled.labels, net.num_classes, config, seed=seed, val=(v, val.labels))
    best = (pick or (lambda h: max(h, key=lambda entry: entry["val_accuracy"])))(history)
    return best["val_accuracy"]


def _verdict(mean, half):
    if np.isnan(half):
        return mean, half, "undecided (one seed)"
    return mean, half, "supported" if mean - half > 0 else "reversed" if mean + half < 0 else "undecided"


def _welch(a, b):
    return _t(a) * np.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b)) if len(a) > 1 else float("nan")


def _paired(a, b, z=False):
    d = (a - b).dropna()
    half = (1.96 if z else _t(d)) * d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else float("nan")
    return _verdict(d.mean(), half)


def _stable(y, temperature, dim):
    z = y / temperature
    e = (z - z.max(dim, keepdim=True).values).exp()
    return e / e.sum(dim, keepdim=True)


def _naive_softmax(y, temperature):
    e = (y / temperature).exp()
    return e / e.sum(1, keepdim=True)


def _global_max_softmax(y, temperature):
    """Shifted by the batch's largest response instead of each row's: a row far below it underflows to 0/0."""
    e = ((y - y.max()) / temperature).exp()
    return e / e.sum(1, keepdim=True)


def _oja_radius(power: int):
    """Oja's update with the decay divided by ρ**power (the right answer has power 2)."""
    return lambda x, w, rho: ((x @ w)[:, None] * (x - (x @ w)[:, None] * w / rho ** power)).mean(0)


@dataclass(frozen=True)
class _ReLUOutside:
    """A wrong ReLU HPCA: f only in the post-synaptic factor, the plain y in the reconstruction."""

    def update(self, x, weight, y, *, scale=1.0, **geometry):
        fy = torch.relu(y)
        return scale * (fy.T @ x - torch.tril(fy.T @ y) @ weight) / len(x)


@dataclass(frozen=True)
class _ReLUNoScale:
    """A wrong ReLU HPCA: right update, but ignores ``scale``."""

    def update(self, x, weight, y, *, scale=1.0, **geometry):
        fy = torch.relu(y)
        return (fy.T @ x - torch.tril(fy.T @ fy) @ weight) / len(x)


@dataclass(frozen=True)
class _PaperSoftWTA:
    """The paper's eqs. 2–3, right (``how="right"``) or with one typical mistake."""

    temperature: float = 1.0
    how: str = "right"

    def update(self, x, weight, y, *, scale=1.0, **geometry):
        z = y / self.temperature
        if self.how == "naive":  # no shift: exp overflows for large responses
            r = z.exp() / z.exp().sum(1, keepdim=True)
        else:
            r = torch.softmax(z, dim=0 if self.how == "batch" else 1)
        if self.how == "code":  # the code's variant: Σ r² (x − w) / Σ r
            return scale * ((r.square().T @ x) - r.square().sum(0)[:, None] * weight) / r.sum(0)[:, None]
        if self.how == "sum":
            return scale * (r.T @ x - r.sum(0)[:, None] * weight)
        delta = (r.T @ x - r.sum(0)[:, None] * weight) / len(x)
        return delta if self.how == "noscale" else scale * delta


def _images():
    return namespace()["images"]


def _softhebb_all_hebbian(x, w, temperature, power):
    """A wrong SoftHebb: every unit, the losers too, learns with +softmax."""
    u = x @ w.T
    r = torch.softmax(u / temperature, 1)
    delta = r.T @ x - (r * u).sum(0)[:, None] * w
    return ((w.norm(dim=1) - 1).abs() + 1e-10)[:, None] ** power * delta / delta.abs().max()


WRONG = [
    (exercises.check_hebb, lambda x, w: (x @ w)[:, None].mul(x).sum(0)),  # sum, not mean
    (exercises.check_oja_radius, _oja_radius(0)),  # plain Oja: ignores ρ
    (exercises.check_oja_radius, _oja_radius(1)),  # ρ instead of ρ²
    (exercises.check_oja_radius, lambda x, w, rho: ((x @ w)[:, None] * (x - (x @ w)[:, None] * w * rho ** 2)).mean(0)),
    (exercises.check_soft_wta, _naive_softmax),  # overflows at y / T = 1000
    (exercises.check_soft_wta, _global_max_softmax),  # NaN for [[1000, 999], [0, 1]]
    (exercises.check_soft_wta, lambda y, t: torch.softmax(y / t, 1)),  # the library softmax, forbidden
    (exercises.check_soft_wta, lambda y, t: torch.nn.functional.softmax(y / t, dim=1)),
    (exercises.check_soft_wta, lambda y, t: (y / t).softmax(1)),
    (exercises.check_soft_wta, lambda y, t: _stable(y, t, 0)),  # over the batch, not the units
    (exercises.check_oja_loss, lambda y, w: -0.5 * y.square().sum(1).mean()
     + 0.25 * (y.square().mean(0) * w.square().sum(1)).sum()),  # no detach: the decay's gradient is wrong
    (exercises.check_oja_loss, lambda y, w: -(y.detach() * y).sum(1).mean()
     + 0.5 * (y.detach().mean(0) * w.square().sum(1)).sum()),  # ⟨y_i⟩ instead of ⟨y_i²⟩
    (exercises.check_oja_loss, lambda y, w: -(y.detach() * y).sum()
     + 0.5 * (y.detach().square().sum(0) * w.square().sum(1)).sum()),  # sums instead of means
    (exercises.check_oja_loss, lambda y, w: hebbkit.rules.oja_loss(y, w)),  # the library's loss, forbidden
    (exercises.check_instar_loss, lambda y, w, r: -(r * y).sum(1).mean() + 0.5 * (r.mean(0) * w.square().sum(1)).sum()),
    (exercises.check_sanger, _OjaPerUnit()),
    (exercises.check_sanger, _NoScale()),
    (lambda rule: exercises.check_hpca_relu(rule, _images()), _OjaPerUnit()),
    (lambda rule: exercises.check_hpca_relu(rule, _images()), _NoScale()),  # linear Sanger: no ReLU
    (lambda rule: exercises.check_hpca_relu(rule, _images()), _ReLUOutside()),
    (lambda rule: exercises.check_hpca_relu(rule, _images()), _ReLUNoScale()),
    *[(lambda how: exercises.check_paper_soft_wta(lambda temperature: _PaperSoftWTA(temperature, how), _images()), how)
      for how in ("naive", "batch", "code", "sum", "noscale")],
    (exercises.check_cut_and_train, partial(_cell, mode="train")),  # batch statistics: the network changes
    (exercises.check_cut_and_train, partial(_cell, pick=lambda history: history[-1])),  # the last epoch
    (exercises.check_cut_and_train, partial(_cell, normalize=False)),  # raw pixels
    (exercises.check_cut_and_train, partial(_cell, shift=-1)),  # the cut one block too low
    (exercises.check_confidence_interval, lambda v: (np.mean(v), 1.96 * np.std(v, ddof=1) / np.sqrt(len(v)))),  # z
    (exercises.check_confidence_interval, lambda v: (np.mean(v), _t(v) * np.std(v) / np.sqrt(len(v)))),  # ddof=0
    (exercises.check_confidence_interval, lambda v: (np.mean(v), _t(v) * np.std(v, ddof=1) / np.sqrt(len(v))
                                                     if len(v) > 1 else 0.0)),  # one seed: 0 instead of NaN
    (exercises.check_paired_verdict, lambda a, b: _verdict(a.mean() - b.mean(), _welch(a, b))),  # unpaired
    (exercises.check_paired_verdict,
     lambda a, b: _paired(a.reset_index(drop=True), b.reset_index(drop=True))),  # paired by position, not seed
    (exercises.check_paired_verdict, lambda a, b: _paired(a, b, z=True)),  # 1.96 instead of t
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


def test_forbidden_library_functions_are_restored_after_a_check() -> None:
    originals = (torch.softmax, torch.nn.functional.softmax, torch.Tensor.softmax, hebbkit.rules.soft_wta,
                 hebbkit.rules.oja_loss)
    with pytest.raises(AssertionError, match="without torch.softmax"):
        exercises.check_soft_wta(lambda y, t: torch.softmax(y / t, 1))
    with pytest.raises(AssertionError, match="without rules.oja_loss"):
        exercises.check_oja_loss(lambda y, w: hebbkit.rules.oja_loss(y, w))
    assert (torch.softmax, torch.nn.functional.softmax, hebbkit.rules.soft_wta, hebbkit.rules.oja_loss) == \
        (originals[0], originals[1], originals[3], originals[4])
    y = torch.tensor([[1.0, 2.0]])
    assert torch.allclose(y.softmax(1), originals[2](y, 1)) and torch.allclose(hebbkit.rules.soft_wta(y, 1.0), y.softmax(1))
