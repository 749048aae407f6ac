"""Checkers for the workbook's coding exercises.

Each ``check_*`` takes what the learner wrote (a function or a rule object), runs it on its own seeded data
and compares it with the package's reference (``hebbkit.rules``): it prints a line when the answer is right,
prints "not attempted yet" while the learner's code still returns ``None`` (the stubs' ``...`` body), and
raises ``AssertionError`` with a hint when it is wrong. Value answers
use ``demos.check_exercise``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import torch
from torch import Tensor

from . import demos, rules

if TYPE_CHECKING:
    import pandas as pd
from .layers import HebbianLinear


class _NotAttempted(Exception):
    pass


def _call(function: Callable | None, *args: Any) -> Any:
    """``function(*args)``, or ``_NotAttempted`` while the function is missing or still returns None."""
    if function is None or function is Ellipsis:
        raise _NotAttempted
    result = function(*args)
    if result is None or result is Ellipsis:
        raise _NotAttempted
    return result


def _run(name: str, check: Callable[[], str | None]) -> None:
    """Run ``check``; print its success line, or "not attempted yet" if the learner's code returned None."""
    try:
        message = check()
    except _NotAttempted:
        print(f"{name}: not attempted yet (your function returns None: replace the `...` with your code)")
        return
    print(f"{name}: correct!" + (f" {message}" if message else ""))


def _assert_close(name: str, got: Any, expected: Tensor, hint: str, atol: float = 1e-5) -> None:
    assert isinstance(got, Tensor), f"{name}: return a torch.Tensor, got {type(got).__name__}"
    assert got.shape == expected.shape, f"{name}: expected shape {tuple(expected.shape)}, got {tuple(got.shape)}"
    assert torch.isfinite(got).all(), f"{name}: your result holds NaN or Inf. Hint: {hint}"
    error = (got - expected).abs().max().item()
    assert error <= atol, f"{name}: off by up to {error:.3g} from the reference. Hint: {hint}"


def _data(num: int, dim: int, seed: int) -> Tensor:
    return torch.randn(num, dim, generator=torch.Generator().manual_seed(seed))


# -------------------------------------------------------------------------------------- notebook 00


def check_hebb(my_hebb: Callable[[Tensor, Tensor], Tensor], name: str = "Exercise 3") -> None:
    """``my_hebb(x (N, D), w (D,))`` must return plain Hebb's batch-mean update ``⟨y x⟩`` (D,), ``y = x·w``."""

    def check() -> None:
        x, w = _data(32, 4, 0), _data(1, 4, 1)[0]
        expected = rules.hebb(x, w.view(1, -1), x @ w.view(-1, 1))[0]
        _assert_close(name, _call(my_hebb, x, w), expected, "y = x @ w has one entry per input; average y[n] * x[n] over n")

    _run(name, check)


# -------------------------------------------------------------------------------------- notebook 01


def check_oja(my_oja: Callable[[Tensor, Tensor], Tensor], name: str = "Exercise 1") -> None:
    """``my_oja(x (N, D), w (D,))`` must return Oja's batch-mean update ``⟨y (x − y w)⟩`` (D,)."""

    def check() -> None:
        x, w = _data(64, 6, 2), 0.5 * _data(1, 6, 3)[0]
        expected = rules.oja(x, w.view(1, -1), x @ w.view(-1, 1))[0]
        _assert_close(name, _call(my_oja, x, w), expected, "the decay is y² w: each input's y multiplies (x − y w)")

    _run(name, check)


def check_soft_wta(my_soft_wta: Callable[[Tensor, float], Tensor], name: str = "Exercise 2") -> None:
    """``my_soft_wta(y (N, K), T)`` must return ``softmax(y / T)`` over units (dim 1), without overflow for
    large ``y / T``."""

    def check() -> str:
        y = _data(8, 5, 4)
        for temperature in (0.05, 1.0, 20.0):
            _assert_close(name, _call(my_soft_wta, y, temperature), rules.soft_wta(y, temperature),
                          "r_i = exp(y_i / T) / Σ_j exp(y_j / T), over dim 1 (the units)")
        big = torch.tensor([[1000.0, 999.0, 0.0]])
        _assert_close(name, _call(my_soft_wta, big, 1.0), rules.soft_wta(big, 1.0),
                      "exp(1000) overflows: subtract each row's largest y before exponentiating (the result is the same)")
        return "Your responsibilities match rules.soft_wta, and survive responses of 1000."

    _run(name, check)


def check_hebb_loss(my_hebb_loss: Callable[[Tensor], Tensor], name: str = "Exercise 4") -> None:
    """``my_hebb_loss(y (N, K))`` must be a scalar whose gradient with respect to ``W`` (``y = x Wᵀ``) is
    minus plain Hebb's update."""

    def check() -> None:
        x, weight = _data(64, 6, 5), 0.5 * _data(4, 6, 6)
        leaf = weight.clone().requires_grad_()
        loss = _call(my_hebb_loss, x @ leaf.T)
        assert isinstance(loss, Tensor) and loss.dim() == 0, f"{name}: the loss must be a scalar tensor"
        (grad,) = torch.autograd.grad(loss, leaf)
        _assert_close(name, -grad, rules.hebb(x, weight, x @ weight.T),
                      "which factor of y·y should not carry a gradient? And take the mean over the batch, not the sum")

    _run(name, check)


def check_instar_loss(my_instar_loss: Callable[[Tensor, Tensor, Tensor], Tensor], name: str = "Exercise 5") -> None:
    """``my_instar_loss(y, W, r)`` must be a scalar whose gradient with respect to ``W`` is minus the instar
    update ``⟨r_i (x − w_i)⟩``, with the responsibilities ``r`` treated as constants (they arrive attached to
    the graph, as they would in a network)."""

    def check() -> None:
        x, weight = _data(64, 6, 7), 0.5 * _data(4, 6, 8)
        leaf = weight.clone().requires_grad_()
        y = x @ leaf.T
        r = rules.soft_wta(y, 0.5)  # depends on W: the loss must detach it
        loss = _call(my_instar_loss, y, leaf, r)
        assert isinstance(loss, Tensor) and loss.dim() == 0, f"{name}: the loss must be a scalar tensor"
        (grad,) = torch.autograd.grad(loss, leaf)
        expected = rules.instar(x, weight, rules.soft_wta(x @ weight.T, 0.5))
        _assert_close(name, -grad, expected,
                      "Hebb's term −⟨r̄ y⟩ plus a decay whose gradient is ⟨r̄_i⟩ w_i, i.e. ½ Σ_i ⟨r̄_i⟩ ‖w_i‖²; "
                      "r̄ = r.detach()")

    _run(name, check)


# ------------------------------------------------------------------------------------ notebooks 02, 03


def check_sanger(rule: Any, name: str = "Exercise 3") -> None:
    """``rule.update(x (N, D), W (K, D), y (N, K))`` must return Sanger's update
    ``(yᵀx − tril(yᵀy) W) / N``; it then runs in a ``HebbianLinear`` and learns the two principal axes of
    the 2-D cloud, in order."""

    def check() -> str:
        x, weight = _data(64, 5, 9), 0.5 * _data(3, 5, 10)
        expected = rules.hpca(x, weight, x @ weight.T)
        if rule is None or getattr(rule, "update", None) is None:
            raise _NotAttempted
        _assert_close(name, _call(rule.update, x, weight, x @ weight.T), expected,
                      "unit i subtracts what units j ≤ i reconstruct: torch.tril(y.T @ y) @ W")
        layer = HebbianLinear(5, 3, bias=False, rule=rule)
        with torch.no_grad():
            layer.weight.copy_(weight)
        layer(x)  # a plastic layer's forward pass leaves −ΔW in weight.grad (it passes scale=−1)
        _assert_close(name, layer.weight.grad, -expected, "accept the keyword argument scale and multiply by it")
        cloud = demos.gaussian_cloud(500, angle=30.0, seed=0)
        path = demos.learn(cloud, rule, torch.tensor([[0.2, 0.9], [-0.6, 0.3]]), lr=0.02, steps=600, seed=0)
        final = path[-1]
        first = demos.principal_axis(cloud)
        second = torch.stack([-first[1], first[0]])
        angles = [demos.angle_degrees(final[0], first), demos.angle_degrees(final[1], second)]
        assert max(angles) < 5, f"{name}: after training, the units are {angles[0]:.1f}° and {angles[1]:.1f}° from PC1 and PC2"
        return f"On the cloud, unit 1 ends {angles[0]:.1f}° from PC1 and unit 2 {angles[1]:.1f}° from PC2."

    _run(name, check)


def check_sanger_patches(rule: Any, images: Tensor, name: str = "Exercise 3") -> None:
    """``rule`` (Sanger's rule for (N, D) inputs) trained on 5×5 patches of ``images`` (N, C, H, W) must find
    the patches' top two principal components (|cos| > 0.9 each) and the plane of the next two (its units 3
    and 4 keep > 90 % of their norm in that plane: nearly equal eigenvalues make the axes within it slow)."""

    def check() -> str:
        if rule is None or getattr(rule, "update", None) is None:
            raise _NotAttempted
        patches = demos.image_patches(images, 5, 20_000, seed=0)
        _, vectors = torch.linalg.eigh(patches.T.double() @ patches.double() / len(patches))
        components = vectors[:, -4:].flip(1).T.float()  # uncentred, as a layer without bias sees them
        power = patches.square().sum(1).mean().item()  # E‖x‖² ≥ λ₁: a step that cannot overshoot
        init = 0.1 * _data(4, patches.shape[1], 11)
        if _call(rule.update, patches[:8], init, patches[:8] @ init.T) is None:
            raise _NotAttempted
        final = demos.learn(patches, rule, init, lr=1.0 / power, steps=800, batch_size=100, seed=0)[-1]
        assert torch.isfinite(final).all(), f"{name}: the weights diverged (NaN or Inf)"
        cosines = torch.nn.functional.cosine_similarity(final[:2], components[:2]).abs()
        in_plane = (final[2:] @ components[2:].T).norm(dim=1) / final[2:].norm(dim=1)
        shown = f"|cos| to PC1, PC2: {cosines[0]:.2f}, {cosines[1]:.2f}; share of units 3, 4 in the PC3–PC4 plane: " \
                f"{in_plane[0]:.2f}, {in_plane[1]:.2f}"
        assert cosines.min() > 0.9 and in_plane.min() > 0.9, f"{name}: {shown}"
        return shown + "."

    _run(name, check)


# -------------------------------------------------------------------------------------- notebook 04


def _stepwise_lr(lr: float, decay: float, decay_from: int, epochs: int) -> list[float]:
    """The rate of each 0-based epoch, by simulation: multiply by ``decay`` at the start of every epoch from
    ``decay_from`` on (a loop, independent of any closed form)."""
    rates, rate = [], lr
    for epoch in range(epochs):
        if epoch >= decay_from:
            rate *= decay
        rates.append(rate)
    return rates


def check_lr_schedule(my_lr_at: Callable[[float, float, int, int], float], name: str = "Exercise 3") -> None:
    """``my_lr_at(lr, decay, decay_from, epoch)`` must return the fine-tuning rate of 0-based ``epoch``: ``lr``
    multiplied by ``decay`` at the start of every epoch from ``decay_from`` on, i.e.
    ``lr * decay ** max(0, epoch - decay_from + 1)``. Checked epoch by epoch against a simulation of the
    schedules of the paper, of the quick preset (also stretched to 4× the epochs for a 1 % subset), and of two
    edge cases (decay from epoch 0; no decay)."""

    schedules = {  # (lr, decay, decay_from, epochs)
        "the paper's (20 epochs, halved from epoch 10)": (1e-3, 0.5, 10, 20),
        "the quick preset's (8 epochs, halved from epoch 4)": (4e-3, 0.5, 4, 8),
        "the quick preset's stretched 4× for a 1 % subset": (4e-3, 0.5 ** 0.25, 16, 32),
        "decay from the first epoch": (0.1, 0.9, 0, 5),
        "no decay (decay = 1)": (0.01, 1.0, 3, 6),
    }

    def check() -> str:
        for label, (lr, decay, decay_from, epochs) in schedules.items():
            for epoch, expected in enumerate(_stepwise_lr(lr, decay, decay_from, epochs)):
                got = _call(my_lr_at, lr, decay, decay_from, epoch)
                got = float(got.item() if isinstance(got, Tensor) else got)
                assert abs(got - expected) <= 1e-9 * lr, (
                    f"{name}: for {label} (lr={lr:g}, decay={decay:g}, decay_from={decay_from}), epoch {epoch} "
                    f"should run at {expected:.6g}, yours gives {got:.6g}. Hint: epoch decay_from already runs at "
                    f"lr·decay, and no epoch before it is changed")
        paper = _stepwise_lr(1e-3, 0.5, 10, 20)
        return (f"The paper's last epoch runs at {paper[-1]:.2e} = 1e-3 · 0.5^10; the stretched schedule ends at the "
                f"same {_stepwise_lr(4e-3, 0.5 ** 0.25, 16, 32)[-1]:.1e} as the unstretched {_stepwise_lr(4e-3, 0.5, 4, 8)[-1]:.1e}.")

    _run(name, check)


# -------------------------------------------------------------------------------------- notebook 05


def check_confidence_interval(my_interval: Callable[[Any], tuple[float, float]], name: str = "Exercise 3") -> None:
    """``my_interval(values)`` must return ``(mean, half_width)``: the sample mean and the half-width of the 95 %
    Student-t confidence interval, ``t_{0.975, n−1} · s / √n`` with ``s`` the sample standard deviation
    (``ddof=1``); the half-width is NaN for a single value. Compared with ``scipy.stats.t.interval``."""
    import math

    import numpy as np
    from scipy import stats

    samples = {
        "five seeds": [41.2, 42.5, 41.9, 42.8, 41.0],
        "two seeds": [40.0, 44.0],
        "twenty seeds": (50 + 2 * _data(20, 1, 12)[:, 0]).tolist(),
    }

    def check() -> str:
        for label, values in samples.items():
            got = _call(my_interval, list(values))
            assert len(got) == 2, f"{name}: return a pair (mean, half_width), got {got!r}"
            mean, half = (float(v) for v in got)
            expected_mean = float(np.mean(values))
            low, high = stats.t.interval(0.95, len(values) - 1, loc=expected_mean, scale=stats.sem(values))
            expected_half = (high - low) / 2
            assert abs(mean - expected_mean) < 1e-6, f"{name}: the mean of {label} is {expected_mean:.4f}, yours {mean:.4f}"
            assert math.isfinite(half) and abs(half - expected_half) < 1e-6, (
                f"{name}: the 95 % half-width of {label} is {expected_half:.4f}, yours {half:.4f}. Hint: "
                f"t = scipy.stats.t.ppf(0.975, n - 1), s with ddof=1, divided by √n")
        single = _call(my_interval, [42.0])
        assert len(single) == 2 and abs(float(single[0]) - 42.0) < 1e-9, f"{name}: the mean of one value is that value"
        assert math.isnan(float(single[1])), (
            f"{name}: with one value your half-width is {float(single[1])}, but s (ddof=1) is 0/0 and t has 0 degrees "
            f"of freedom: one seed gives no interval at all, so return float('nan'), not 0")
        two = stats.t.ppf(0.975, 1) * stats.sem(samples["two seeds"])
        return f"With two seeds 40 and 44 the interval is ±{two:.1f} points (t = {stats.t.ppf(0.975, 1):.1f}): two seeds say little."

    _run(name, check)


def _toy_results() -> "pd.DataFrame":
    """A results table shaped like ``reproduce``'s: (regime, method, layer, seed) → val_accuracy, rows shuffled."""
    import pandas as pd

    generator = torch.Generator().manual_seed(13)
    rows = []
    for regime in (1.0, 10.0):
        for method, offset in (("hpca", 3.0), ("softwta", 5.0), ("vae", -2.0), ("supervised", 0.0)):
            for layer in (1, 2, 3):
                for seed in range(3):
                    noise = torch.randn(1, generator=generator).item()
                    rows.append({"regime": regime, "method": method, "layer": layer, "seed": seed,
                                 "val_accuracy": 30 + 2 * regime + offset - layer + 2 * noise})
    order = torch.randperm(len(rows), generator=generator).tolist()
    return pd.DataFrame([rows[i] for i in order])


def check_scratch_margins(my_margins: Callable[[Any], Any], name: str = "Exercise 4") -> None:
    """``my_margins(results)`` must return a DataFrame indexed by (regime, method), the ``supervised`` rows left
    out, with one column per layer: the method's mean accuracy over seeds minus the mean of ``supervised``
    (training from scratch) at the same regime and layer. Checked against sums over the rows of a shuffled toy
    table with three seeds."""
    import pandas as pd

    def check() -> str:
        toy = _toy_results()
        sums: dict[tuple, list[float]] = {}
        for row in toy.to_dict("records"):
            entry = sums.setdefault((row["regime"], row["method"], row["layer"]), [0.0, 0])
            entry[0] += row["val_accuracy"]
            entry[1] += 1
        mean = {key: total / count for key, (total, count) in sums.items()}
        expected = {(regime, method, layer): value - mean[(regime, "supervised", layer)]
                    for (regime, method, layer), value in mean.items() if method != "supervised"}
        got = _call(my_margins, toy.copy())
        assert isinstance(got, pd.DataFrame), f"{name}: return a pandas DataFrame, got {type(got).__name__}"
        rows = {tuple(index) for index in got.index}
        wanted = {(regime, method) for regime, method, _ in expected}
        assert rows == wanted, (f"{name}: the rows should be the (regime, method) pairs {sorted(wanted)}, without "
                                f"'supervised'; yours are {sorted(rows)}")
        assert sorted(got.columns) == [1, 2, 3], f"{name}: one column per layer (1, 2, 3), got {list(got.columns)}"
        for (regime, method, layer), value in expected.items():
            mine = float(got.loc[(regime, method), layer])
            assert abs(mine - value) < 1e-6, (
                f"{name}: {regime:g} % {method} at layer {layer} should be {value:+.3f} points, yours {mine:+.3f}. "
                f"Hint: average over seeds first, then subtract supervised's mean at the same regime and layer")
        return "Your margins match; the same numbers for the committed run are table (d) above."

    _run(name, check)


# -------------------------------------------------------------------------------------- notebook 06


def _softhebb_mistakes(x: Tensor, weight: Tensor, temperature: float, power: float) -> dict[str, Tensor]:
    """SoftHebb's update with one part left out, each with the hint that names it."""
    u = x @ weight.T
    q = rules.soft_wta(u, temperature)
    signed = rules.softhebb_responsibilities(u, temperature)
    rate = rules.adaptive_rate(weight, power).view(-1, 1)

    def update(r: Tensor, normalise: bool = True, per_unit: Tensor = rate) -> Tensor:
        delta = r.T @ x - (r * u).sum(0).view(-1, 1) * weight
        return per_unit * (delta / delta.abs().max() if normalise else delta)

    return {
        "every unit learns Hebbian here: the losers' r must be −softmax (only the winner keeps +softmax)": update(q),
        "divide D by its largest absolute entry (over the whole layer) before the per-neuron rate": update(signed, False),
        "multiply row i by the adaptive rate (|‖w_i‖ − 1| + 1e-10) ** power": update(signed, True, torch.ones_like(rate)),
        "the decay uses r_ni · u_ni (the unit's own current), not r_ni alone": rate * (
            lambda d: d / d.abs().max())(signed.T @ x - signed.sum(0).view(-1, 1) * weight),
    }


def check_softhebb(my_softhebb: Callable[[Tensor, Tensor, float, float], Tensor], name: str = "Exercise 1") -> None:
    """``my_softhebb(x (N, D), W (K, D), temperature, power)`` must return SoftHebb's update (K, D), as
    :class:`hebbkit.rules.SoftHebb` computes it: ``u = x Wᵀ``, ``r = ±softmax(u / T)`` (+ for the winner),
    ``D_i = Σ_n r_ni (x_n − u_ni w_i)``, ``ΔW = ρ ⊙ D / max|D|`` with ``ρ_i = (|‖w_i‖ − 1| + 1e-10)^power``."""

    def check() -> str:
        x, weight = _data(64, 6, 20), 2 * _data(5, 6, 21)
        for temperature, power in ((1.0, 0.5), (0.3, 0.75)):
            expected = rules.SoftHebb(temperature, power).update(x, weight, x @ weight.T)
            got = _call(my_softhebb, x, weight, temperature, power)
            hint = "compare your steps with the equations above, one at a time"
            if isinstance(got, Tensor) and got.shape == expected.shape:
                for mistake, wrong in _softhebb_mistakes(x, weight, temperature, power).items():
                    if (got - wrong).abs().max() < 1e-5:
                        hint = mistake
            _assert_close(name, got, expected, hint)
        return "Your update is hebbkit.rules.SoftHebb's."

    _run(name, check)
