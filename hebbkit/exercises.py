"""Checkers for the workbook's coding exercises.

Each ``check_*`` takes what the learner wrote (a function or a rule object), runs it on its own seeded data
and compares it with the package's reference (``hebbkit.rules``): it prints a line when the answer is right,
prints "not attempted yet" while the learner's code still returns ``None`` (the stubs' ``...`` body), and
raises ``AssertionError`` with a hint when it is wrong. Value answers
use ``demos.check_exercise``.
"""

from __future__ import annotations

import contextlib
import functools
from typing import TYPE_CHECKING, Any, Callable

import torch
from torch import Tensor

from . import demos, rules
from .layers import HebbianLinear
from .rules import HPCA, Competitive

if TYPE_CHECKING:
    import pandas as pd


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


def _oja_radius(x: Tensor, w: Tensor, radius: float) -> Tensor:
    """The reference: a per-sample loop in float64 of ``y (x − y w / ρ²)``, averaged (D,)."""
    total = torch.zeros(x.shape[1], dtype=torch.float64)
    for sample in x.double():
        y = sample @ w.double()
        total += y * (sample - y * w.double() / radius ** 2)
    return (total / len(x)).float()


def check_oja_radius(my_oja_radius: Callable[[Tensor, Tensor, float], Tensor], name: str = "Exercise 1") -> None:
    """``my_oja_radius(x (N, D), w (D,), radius)`` must return the first-order update of a neuron renormalised to
    ``‖w‖ = ρ`` after each Hebbian step, ``⟨y (x − y w / ρ²)⟩`` (D,); then run alone, it must settle at
    ``‖w‖ = ρ`` on the first principal axis."""

    def check() -> str:
        x = _data(64, 6, 2)
        for radius in (1.0, 0.5, 3.0):
            w = radius * torch.nn.functional.normalize(_data(1, 6, 3)[0], dim=0)
            _assert_close(name, _call(my_oja_radius, x, w, radius), _oja_radius(x, w, radius),
                          "expand ρ (w + η y x) / ‖w + η y x‖ to first order in η, using ‖w‖ = ρ and wᵀx = y",
                          atol=1e-4)
        cloud = demos.gaussian_cloud(500, angle=30.0, seed=0)
        generator = torch.Generator().manual_seed(0)
        w = torch.tensor([0.2, 0.9])
        for _ in range(2000):
            batch = cloud[torch.randint(len(cloud), (10,), generator=generator)]
            w = w + 0.002 * _call(my_oja_radius, batch, w, 2.0)
        angle = demos.angle_degrees(w, demos.principal_axis(cloud))
        assert abs(w.norm().item() - 2.0) < 0.1 and angle < 5, (
            f"{name}: after 2,000 steps on the cloud ‖w‖ = {w.norm():.2f} (want 2) at {angle:.1f}° from PC1")
        return f"On the cloud with ρ = 2 the neuron ends at ‖w‖ = {w.norm():.2f}, {angle:.1f}° from the first principal axis."

    _run(name, check)


_SOFTMAXES = ((torch, "softmax"), (torch.nn.functional, "softmax"), (torch.special, "softmax"), (torch.Tensor, "softmax"),
              (torch, "log_softmax"), (torch.nn.functional, "log_softmax"), (torch.Tensor, "log_softmax"),
              (rules, "soft_wta"))


@contextlib.contextmanager
def _softmax_forbidden(name: str):
    """While the block runs, every library softmax (and ``rules.soft_wta``) raises ``AssertionError``."""

    def forbidden(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"{name}: write the softmax yourself, without torch.softmax, F.softmax, "
                             f"Tensor.softmax or rules.soft_wta")

    saved = [(owner, attribute, getattr(owner, attribute)) for owner, attribute in _SOFTMAXES]
    try:
        for owner, attribute, _ in saved:
            setattr(owner, attribute, forbidden)
        yield
    finally:
        for owner, attribute, original in saved:
            setattr(owner, attribute, original)


def check_soft_wta(my_soft_wta: Callable[[Tensor, float], Tensor], name: str = "Exercise 2") -> None:
    """``my_soft_wta(y (N, K), T)`` must return ``softmax(y / T)`` over units (dim 1), finite for any ``y``: large
    responses must not overflow, and a row far below the batch's largest response must not underflow (shift
    each row by its own maximum). No library softmax may be called."""

    def check() -> str:
        y = _data(8, 5, 4)
        cases = [(y, temperature, "r_i = exp(y_i / T) / Σ_j exp(y_j / T), over dim 1 (the units)")
                 for temperature in (0.05, 1.0, 20.0)]
        cases += [(torch.tensor([[1000.0, 999.0, 0.0]]), 1.0,
                   "exp(1000) overflows: subtract the largest y before exponentiating (the result is the same)"),
                  (torch.tensor([[1000.0, 999.0], [0.0, 1.0]]), 1.0,
                   "the second row lies 1000 below the batch's maximum, so exp underflows to 0 and you divide 0 by "
                   "0: subtract each row's own maximum (max over dim 1, keepdim=True)")]
        expected = [rules.soft_wta(responses, temperature) for responses, temperature, _ in cases]
        with _softmax_forbidden(name):
            got = [_call(my_soft_wta, responses, temperature) for responses, temperature, _ in cases]
        for answer, reference, (_, _, hint) in zip(got, expected, cases):
            _assert_close(name, answer, reference, hint)
        return "Your responsibilities match rules.soft_wta, for responses of 1000 and rows far below the others."

    _run(name, check)


def check_oja_loss(my_oja_loss: Callable[[Tensor, Tensor], Tensor], name: str = "Exercise 4") -> None:
    """``my_oja_loss(y (N, K), W (K, D))`` must be a scalar whose gradient with respect to ``W`` (``y = x Wᵀ``)
    is minus Oja's update for every unit, ``⟨y_i (x − y_i w_i)⟩``, without calling ``rules.oja_loss``."""

    def check() -> None:
        x, weight = _data(64, 6, 5), 0.5 * _data(4, 6, 6)
        leaf = weight.clone().requires_grad_()
        saved = rules.oja_loss

        def forbidden(*args: Any, **kwargs: Any) -> None:
            raise AssertionError(f"{name}: write the loss yourself, without rules.oja_loss")

        rules.oja_loss = forbidden
        try:
            loss = _call(my_oja_loss, x @ leaf.T, leaf)
        finally:
            rules.oja_loss = saved
        assert isinstance(loss, Tensor) and loss.dim() == 0, f"{name}: the loss must be a scalar tensor"
        (grad,) = torch.autograd.grad(loss, leaf)
        _assert_close(name, -grad, rules.oja(x, weight, x @ weight.T),
                      "Hebb's term −⟨ȳ·y⟩ plus a decay whose gradient is ⟨y_i²⟩ w_i; detach the factors "
                      "(ȳ = y.detach()) and take batch means")

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


def _scaled(name: str, rule: Any, x: Tensor, weight: Tensor, expected: Tensor) -> None:
    """``rule.update`` at ``scale=−1`` must return ``−expected``: a plastic layer asks for the gradient ``−ΔW``."""
    got = _call(functools.partial(rule.update, scale=-1.0), x, weight, x @ weight.T)
    _assert_close(name, got, -expected, "accept the keyword argument scale and multiply your update by it "
                  "(a plastic layer passes scale=-1 to get −ΔW as a gradient)", atol=1e-4)


def _patch_run(images: Tensor, rule: Any, reference: Any, lr: float, units: int, steps: int) -> tuple[Tensor, Tensor]:
    """``rule`` and ``reference`` trained from the same seeded start on the same 5×5 patches of ``images``."""
    patches = demos.image_patches(images, 5, 20_000, seed=0)
    init = 0.1 * _data(units, patches.shape[1], 11)
    return tuple(demos.learn(patches, each, init, lr=lr, steps=steps, batch_size=100, seed=0)[-1]
                 for each in (rule, reference))


def check_hpca_relu(rule: Any, images: Tensor, name: str = "Exercise 3") -> None:
    """``rule.update(x (N, D), W (K, D), y (N, K), scale=...)`` must return ``scale`` times Lagani's HPCA update,
    Sanger's rule with ``f = ReLU`` in both places, ``(f(Y)ᵀX − tril(f(Y)ᵀf(Y)) W) / N``; trained on 5×5 patches of
    ``images`` it must end where ``hebbkit.HPCA("relu")`` ends from the same start."""

    def check() -> str:
        if rule is None or getattr(rule, "update", None) is None:
            raise _NotAttempted
        x, weight = _data(64, 5, 9), 0.5 * _data(3, 5, 10)  # about half the responses are negative
        expected = rules.hpca(x, weight, torch.relu(x @ weight.T))
        _assert_close(name, _call(rule.update, x, weight, x @ weight.T), expected,
                      "f = ReLU enters twice: in the post-synaptic factor f(y_i) and in the reconstruction "
                      "Σ_{j≤i} f(y_j) w_j", atol=1e-4)
        _scaled(name, rule, x, weight, expected)
        power = demos.image_patches(images, 5, 20_000, seed=0).square().sum(1).mean().item()
        mine, reference = _patch_run(images, rule, HPCA("relu"), 1.0 / power, 4, 300)
        assert torch.isfinite(mine).all(), f"{name}: the weights diverged (NaN or Inf)"
        gap = (mine - reference).norm(dim=1).max().item()
        assert gap < 1e-3 * max(reference.norm(dim=1).max().item(), 1.0), \
            f"{name}: on patches your units end up to {gap:.3g} from HPCA('relu')'s"
        cosines = torch.nn.functional.cosine_similarity(mine, _patch_run(images, HPCA("identity"), HPCA("identity"),
                                                                         1.0 / power, 4, 300)[0]).abs()
        return ("On patches your units match HPCA('relu'); |cos| to the linear Sanger units of the same rank: "
                + ", ".join(f"{c:.2f}" for c in cosines.tolist()) + ".")

    _run(name, check)


def check_paper_soft_wta(rule_class: Callable[..., Any], images: Tensor, name: str = "Exercise 4") -> None:
    """``rule_class(temperature=T).update(x (N, D), W (K, D), y (N, K), scale=...)`` must return ``scale`` times the
    paper's soft-WTA (Lagani et al., eqs. 2–3): ``r = softmax(y / T)`` over units on the plain responses
    ``y = Wx``, ``Δw_i = ⟨r_i (x − w_i)⟩``, finite for any ``y``; trained on 5×5 patches of ``images`` it must end
    where the reference (``hebbkit.Competitive("soft", T)``) ends from the same start."""

    def check() -> str:
        x, weight = _data(64, 6, 7), 0.5 * _data(4, 6, 8)
        for temperature in (0.3, 3.0):
            rule = rule_class(temperature=temperature)
            expected = rules.instar(x, weight, rules.soft_wta(x @ weight.T, temperature))
            _assert_close(name, _call(rule.update, x, weight, x @ weight.T), expected,
                          "eq. 2 is a softmax over the units (dim 1) of y / T; eq. 3 averages r_i (x − w_i) over the "
                          "batch: ⟨r_i x⟩ − ⟨r_i⟩ w_i (the code's Σr²(x − w)/Σr is a different rule)", atol=1e-4)
            _scaled(name, rule, x, weight, expected)
        big = 1000 * weight
        got = _call(rule_class(temperature=0.3).update, x, big, x @ big.T)
        _assert_close(name, got, rules.instar(x, big, rules.soft_wta(x @ big.T, 0.3)),
                      "large responses overflow exp: use a stable softmax (rules.soft_wta)", atol=1e-2)
        mine, reference = _patch_run(images, rule_class(temperature=1.0), Competitive("soft", temperature=1.0), 0.1, 16, 400)
        gap = (mine - reference).norm(dim=1).max().item()
        assert torch.isfinite(mine).all() and gap < 1e-3 * max(reference.norm(dim=1).max().item(), 1.0), \
            f"{name}: on patches your units end up to {gap:.3g} from the reference's"
        return "Your rule is the paper's eqs. 2–3, and trains on image patches like the reference."

    _run(name, check)


# -------------------------------------------------------------------------------------- notebook 04


def check_cut_and_train(my_cell: Callable[..., float], name: str = "Exercise 3") -> None:
    """``my_cell(net, layer, labelled, val, config, seed)`` must run one cell of Table 1 with fixed features: cut
    ``net`` after block ``layer`` (its whitening and blocks 1..layer in eval mode, on normalised images, flattened),
    train a linear head on the labelled images' features with :func:`hebbkit.lagani.train_head` (``config``,
    ``seed``, the validation features and labels as ``val``), and return the best validation accuracy (%) of its
    history. Compared with :func:`hebbkit.lagani.finetune` (``config.frozen``) on synthetic images, a small
    random network, three cuts and three seeds, within one validation image; the network must come back unchanged."""
    from .data import synthetic_images
    from .lagani import FinetuneConfig, LaganiNet, finetune
    from .loops import settle_statistics

    data = synthetic_images(240, 0, seed=3)
    labelled, val = data.train.subset(slice(0, 120)), data.train.subset(slice(120, 240))
    config = FinetuneConfig(epochs=6, batch_size=16, lr=0.3, decay_from=6, frozen=True)  # its best epoch is not the last

    def check() -> str:
        scores = []
        for layer, seed in ((1, 0), (3, 1), (5, 2)):
            torch.manual_seed(10 + layer)
            net = LaganiNet(input_shape=data.train.shape, width=0.125)
            settle_statistics(net, labelled)  # BN statistics of these images: eval and train mode now differ
            before = {key: value.clone() for key, value in net.state_dict().items()}
            got = _call(my_cell, net, layer, labelled, val, config, seed)
            got = float(got.item() if isinstance(got, Tensor) else got)
            changed = [key for key, value in net.state_dict().items() if not torch.equal(value, before[key])]
            assert not changed, (f"{name}: your function changed the network ({changed[0]}, ...). Hint: the blocks "
                                 "are fixed: compute features in eval mode (net.eval()) under torch.no_grad()")
            _, history = finetune(net, layer, labelled, config, seed=seed, val=val)
            expected = max(entry["val_accuracy"] for entry in history)
            last = history[-1]["val_accuracy"]
            took_last = abs(got - last) < 1e-6 and abs(got - expected) > 1e-6
            hint = ("the best epoch's accuracy, not the last one's" if took_last
                    else "net.features(images.float(), layer) gives the cut; train_head(features, labelled.labels, "
                         "net.num_classes, config, seed=seed, val=(val_features, val.labels))")
            assert abs(got - expected) <= 100 / len(val) + 1e-6, (
                f"{name}: at L{layer} with seed {seed} the reference reaches {expected:.1f} %, yours {got:.1f} %. "
                f"Hint: {hint}")
            scores.append(f"L{layer} {got:.1f} %")
        return "(" + ", ".join(scores) + " on the synthetic gratings.)"

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


def check_paired_verdict(my_verdict: Callable[[Any, Any], tuple[float, float, str]], name: str = "Exercise 5") -> None:
    """``my_verdict(a, b)``, with ``a`` and ``b`` pandas Series of accuracies indexed by seed, must return
    ``(difference, half_width, verdict)``: the mean of ``a − b`` over the seeds present in both, **paired by seed**
    (the index, not the order), the 95 % Student-t half-width of those differences (NaN for one seed), and the
    workbook's one noise rule: ``"supported"`` when the interval lies above 0, ``"reversed"`` below it, else
    ``"undecided"`` (``"undecided (one seed)"`` without an interval). Compared with
    :func:`hebbkit.lagani.paired_difference`."""
    import math

    import pandas as pd

    from .lagani import paired_difference

    shared = [-3.0, 2.5, 0.5, -1.5, 1.0]  # a seed's luck, shared by both methods
    cases = {
        "a steady +0.8 under a large shared spread": (
            pd.Series([50 + s + 0.8 + j for s, j in zip(shared, (0.1, -0.1, 0.0, 0.05, -0.05))], index=[0, 1, 2, 3, 4]),
            pd.Series([50 + s for s in shared], index=[0, 1, 2, 3, 4])),
        "the same, with the seeds in another order": (
            pd.Series([50 + s + 0.8 for s in shared][::-1], index=[4, 3, 2, 1, 0]),
            pd.Series([50 + s for s in shared], index=[0, 1, 2, 3, 4])),
        "a seed missing on one side": (pd.Series([41.0, 44.0, 42.5], index=[0, 1, 2]),
                                       pd.Series([40.0, 41.0], index=[1, 2])),
        "a steady loss": (pd.Series([40.0, 41.0, 39.5, 40.5]), pd.Series([42.0, 43.2, 41.4, 42.9])),
        "one seed": (pd.Series([45.0], index=[3]), pd.Series([41.0], index=[3])),
    }

    def check() -> str:
        for label, (a, b) in cases.items():
            got = _call(my_verdict, a.copy(), b.copy())
            assert len(got) == 3, f"{name}: return (difference, half_width, verdict), got {got!r}"
            difference, half, verdict = float(got[0]), float(got[1]), got[2]
            expected = paired_difference(a, b)
            assert abs(difference - expected["difference"]) < 1e-6, (
                f"{name}: for {label} the mean paired difference is {expected['difference']:+.3f}, yours "
                f"{difference:+.3f}. Hint: subtract seed by seed, aligned on the index (a - b does that), and keep "
                f"only the seeds present in both (dropna)")
            if math.isnan(expected["ci95"]):
                assert math.isnan(half), f"{name}: one seed gives no interval: return float('nan'), not {half}"
            else:
                assert abs(half - expected["ci95"]) < 1e-6, (
                    f"{name}: for {label} the 95 % half-width of the paired differences is {expected['ci95']:.3f}, "
                    f"yours {half:.3f}. Hint: the interval of the differences themselves (t with n − 1 degrees of "
                    f"freedom, s with ddof=1), not of each method's accuracies")
            assert verdict == expected["verdict"], (
                f"{name}: for {label} the verdict is {expected['verdict']!r}, yours {verdict!r}. Hint: supported only "
                f"when difference − half_width > 0; reversed when difference + half_width < 0")
        steady = paired_difference(*cases["a steady +0.8 under a large shared spread"])
        return (f"A steady +0.8 under a shared spread of ±3 points: {steady['difference']:+.2f} ± "
                f"{steady['ci95']:.2f}, {steady['verdict']}, which two separate intervals would never show.")

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
