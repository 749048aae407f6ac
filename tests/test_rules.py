"""The rules: loss form equals direct form, conv equals a patch-by-patch reference, convergence, bad input."""

import math

import pytest
import torch
import torch.nn.functional as F

from hebbkit import rules
from hebbkit.rules import HPCA, Competitive, Hebb, Oja

DOUBLE = torch.float64
RULES = [
    Hebb(),
    Oja(),
    Competitive("wta"),
    Competitive("soft", temperature=0.3),
    Competitive("kwta", k=2),
    Competitive("none"),
    HPCA("identity"),
    HPCA("relu"),
]
IDS = ["hebb", "oja", "wta", "softwta", "kwta", "instar", "hpca", "hpca-relu"]


def _gradient_of_loss(rule, x, weight, **geometry):
    weight = weight.clone().requires_grad_(True)
    loss = rule.loss(rules.responses(x, weight, **geometry), weight)
    (grad,) = torch.autograd.grad(loss, weight)
    return grad


# ------------------------------------------------------------------------------ reference (naive) rules


def _reference_update(rule, x_rows: torch.Tensor, weight_rows: torch.Tensor) -> torch.Tensor:
    """ΔW written per neuron and per sample, straight from each rule's equation (independent of rules.py)."""
    y = x_rows @ weight_rows.T
    num, units = y.shape
    delta = torch.zeros_like(weight_rows)
    if isinstance(rule, Competitive):
        if rule.competition == "wta":
            post = torch.zeros_like(y)
            post[torch.arange(num), y.argmax(1)] = 1
        elif rule.competition == "soft":
            post = torch.exp(y / rule.temperature - (y / rule.temperature).max(1, keepdim=True).values)
            post = post / post.sum(1, keepdim=True)
        elif rule.competition == "kwta":
            post = torch.zeros_like(y)
            for n in range(num):
                post[n, y[n].argsort(descending=True)[: rule.k]] = 1
        else:
            post = y
    elif isinstance(rule, HPCA):
        post = y.clamp(min=0) if rule.f == "relu" else y
    else:
        post = y
    for i in range(units):
        for n in range(num):
            if isinstance(rule, Hebb):
                delta[i] += post[n, i] * x_rows[n]
            elif isinstance(rule, Oja):
                delta[i] += post[n, i] * (x_rows[n] - post[n, i] * weight_rows[i])
            elif isinstance(rule, Competitive):
                delta[i] += post[n, i] * (x_rows[n] - weight_rows[i])
            else:
                reconstruction = sum(post[n, j] * weight_rows[j] for j in range(i + 1))
                delta[i] += post[n, i] * (x_rows[n] - reconstruction)
    return delta / num


def _patches(x, weight, stride, padding):
    """Every patch as a row (M, C·kh·kw), ordered like as_rows: (n, h, w)."""
    kh, kw = weight.shape[2:]
    cols = F.unfold(x, (kh, kw), padding=padding, stride=stride)  # (N, D, L)
    return cols.transpose(1, 2).reshape(-1, cols.shape[1])


# -------------------------------------------------------------------------------------- form equalities


@pytest.mark.parametrize("rule", RULES, ids=IDS)
@pytest.mark.parametrize("shape", [(7, 5, 3), (16, 12, 8)])
def test_linear_loss_gradient_equals_minus_update(rule, shape):
    n, d, k = shape
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(n, d, generator=gen, dtype=DOUBLE)
    weight = torch.randn(k, d, generator=gen, dtype=DOUBLE) / math.sqrt(d)
    delta = rule.update(x, weight, rules.responses(x, weight))
    torch.testing.assert_close(_gradient_of_loss(rule, x, weight), -delta)


@pytest.mark.parametrize("rule", RULES, ids=IDS)
def test_linear_update_equals_per_neuron_reference(rule):
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(9, 6, generator=gen, dtype=DOUBLE)
    weight = torch.randn(4, 6, generator=gen, dtype=DOUBLE) / 2
    delta = rule.update(x, weight, rules.responses(x, weight))
    torch.testing.assert_close(delta, _reference_update(rule, x, weight))


@pytest.mark.parametrize("rule", RULES, ids=IDS)
@pytest.mark.parametrize(
    "channels, size, units, kernel, stride, padding",
    [(3, 8, 4, 3, 1, 0), (3, 9, 5, 3, 2, 1), (2, 7, 3, 5, 1, 1), (4, 10, 6, 3, 2, 0)],
)
def test_conv_loss_gradient_and_unfold_reference(rule, channels, size, units, kernel, stride, padding):
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(3, channels, size, size, generator=gen, dtype=DOUBLE)
    weight = torch.randn(units, channels, kernel, kernel, generator=gen, dtype=DOUBLE) / kernel
    geometry = {"stride": stride, "padding": padding}
    delta = rule.update(x, weight, rules.responses(x, weight, **geometry), **geometry)
    torch.testing.assert_close(_gradient_of_loss(rule, x, weight, **geometry), -delta)
    reference = _reference_update(rule, _patches(x, weight, stride, padding), weight.flatten(1))
    torch.testing.assert_close(delta, reference.view_as(weight))


def test_conv_dilation_matches_unfold():
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(2, 3, 11, 11, generator=gen, dtype=DOUBLE)
    weight = torch.randn(4, 3, 3, 3, generator=gen, dtype=DOUBLE)
    y = rules.responses(x, weight, dilation=2, padding=1)
    cols = F.unfold(x, 3, dilation=2, padding=1).transpose(1, 2).reshape(-1, 27)
    expected = rules.as_rows(y).T @ cols / len(cols)
    torch.testing.assert_close(rules.hebb(x, weight, y, dilation=2, padding=1), expected.view_as(weight))


def test_hpca_blocked_route_equals_matrix_form():
    """Few samples, many units (the blocked running-reconstruction route): update and loss still exact."""
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(4, 50, generator=gen, dtype=DOUBLE)
    weight = torch.randn(300, 50, generator=gen, dtype=DOUBLE) / 7
    assert not rules._gram_is_cheaper(4, 300, 50)
    fy = torch.relu(x @ weight.T)
    expected = (fy.T @ x - torch.tril(fy.T @ fy) @ weight) / 4
    torch.testing.assert_close(rules.hpca(x, weight, fy), expected)
    torch.testing.assert_close(_gradient_of_loss(HPCA("relu"), x, weight), -expected)


# ------------------------------------------------------------------------------------------ convergence


def _anisotropic_cloud(num=4000, dim=5, seed=0):
    gen = torch.Generator().manual_seed(seed)
    basis, _ = torch.linalg.qr(torch.randn(dim, dim, generator=gen, dtype=DOUBLE))
    scales = torch.tensor([3.0, 2.0, 1.4, 0.6, 0.3], dtype=DOUBLE)[:dim]
    x = torch.randn(num, dim, generator=gen, dtype=DOUBLE) * scales @ basis.T
    eigenvalues, eigenvectors = torch.linalg.eigh(x.T @ x / num)
    return x, eigenvectors.flip(1).T  # principal components, largest first


def _train(rule, x, weight, lr, epochs, batch=50):
    for _ in range(epochs):
        for start in range(0, len(x), batch):
            xb = x[start : start + batch]
            rules.apply_update(weight, rule.update(xb, weight, rules.responses(xb, weight)), lr)
    return weight


def test_oja_converges_to_first_principal_component():
    x, components = _anisotropic_cloud()
    weight = _train(Oja(), x, torch.randn(1, 5, dtype=DOUBLE, generator=torch.Generator().manual_seed(1)) * 0.1, 0.01, 5)
    cosine = F.cosine_similarity(weight[0], components[0], dim=0).abs()
    assert cosine >= 0.99
    assert weight.norm().item() == pytest.approx(1.0, abs=0.05)


def test_hpca_converges_to_top_components_in_order():
    x, components = _anisotropic_cloud(num=6000)
    start = torch.randn(3, 5, dtype=DOUBLE, generator=torch.Generator().manual_seed(2)) * 0.1
    weight = _train(HPCA(), x, start, 0.005, 8)
    cosines = F.cosine_similarity(weight, components[:3], dim=1).abs()
    assert (cosines >= 0.95).all(), cosines


def test_wta_instar_finds_cluster_centroids():
    gen = torch.Generator().manual_seed(3)
    centres = torch.tensor([[5.0, 0.0], [-5.0, 0.0], [0.0, 6.0]], dtype=DOUBLE)
    labels = torch.randint(0, 3, (3000,), generator=gen)
    x = centres[labels] + 0.5 * torch.randn(3000, 2, generator=gen, dtype=DOUBLE)
    # Start each unit at a data point of a different cluster (the standard k-means-style initialisation).
    weight = torch.stack([x[(labels == c).nonzero()[0, 0]] for c in range(3)]).clone()
    for _ in range(3):
        for s in range(0, 3000, 30):
            xb = x[s : s + 30]
            y = xb @ weight.T - 0.5 * weight.square().sum(1)  # the nearest unit has the largest y
            rules.apply_update(weight, rules.instar(xb, weight, rules.wta(y)), 0.5)
    found = weight
    distances = torch.cdist(found, centres)
    assert distances.min(1).values.max() < 0.2
    assert len(set(distances.argmin(1).tolist())) == 3


def test_soft_wta_tends_to_hard_wta_as_temperature_falls():
    gen = torch.Generator().manual_seed(4)
    y = torch.randn(64, 10, 3, 3, generator=gen, dtype=DOUBLE)
    y = y + 0.05 * rules.wta(y)  # a margin between winner and runner-up: exp(-50) at T = 1e-3
    torch.testing.assert_close(rules.soft_wta(y, 1e-3), rules.wta(y), atol=1e-12, rtol=0)
    x = torch.randn(64, 8, 5, 5, generator=gen, dtype=DOUBLE)
    weight = torch.randn(10, 8, 3, 3, generator=gen, dtype=DOUBLE)
    response = rules.responses(x, weight)
    hard = Competitive("wta").update(x, weight, response)
    gaps = [
        (Competitive("soft", temperature=t).update(x, weight, response) - hard).norm() / hard.norm()
        for t in (10.0, 1.0, 0.1, 0.01, 0.001)
    ]
    assert all(later < earlier for earlier, later in zip(gaps, gaps[1:])), gaps
    assert gaps[-1] < 1e-3
    uniform = rules.soft_wta(y, 1e3)
    torch.testing.assert_close(uniform, torch.full_like(uniform, 0.1), atol=5e-3, rtol=0)


def test_soft_wta_is_finite_over_the_temperature_range():
    y = torch.randn(32, 16) * 50
    for temperature in (1e-3, 1e-1, 1.0, 1e1, 1e3):
        r = rules.soft_wta(y, temperature)
        assert torch.isfinite(r).all()
        torch.testing.assert_close(r.sum(1), torch.ones(32))


def test_kwta_marks_exactly_the_k_largest():
    y = torch.tensor([[0.1, 0.9, 0.5, 0.7], [4.0, 3.0, 2.0, 1.0]])
    torch.testing.assert_close(rules.kwta(y, 2), torch.tensor([[0.0, 1.0, 0.0, 1.0], [1.0, 1.0, 0.0, 0.0]]))


def test_plain_hebb_weight_norm_grows_without_bound():
    x, _ = _anisotropic_cloud()
    weight = torch.full((1, 5), 0.1, dtype=DOUBLE)
    norms = []
    for _ in range(6):
        _train(Hebb(), x, weight, 0.01, 1)
        norms.append(weight.norm().item())
    assert all(later > 2 * earlier for earlier, later in zip(norms, norms[1:]))
    assert norms[-1] > 1e6


# ---------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("temperature", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_temperature_is_rejected(temperature):
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
        rules.soft_wta(torch.randn(4, 3), temperature)
    with pytest.raises(ValueError, match="temperature"):
        Competitive("soft", temperature=temperature)


@pytest.mark.parametrize("k", [0, 4, -1, 1.5])
def test_k_outside_range_is_rejected(k):
    with pytest.raises(ValueError, match=r"k must be an integer in 1\.\.3"):
        rules.kwta(torch.randn(4, 3), k)


def test_negative_learning_rate_is_rejected():
    weight = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="learning rate lr must be a finite number >= 0"):
        rules.apply_update(weight, torch.ones(2, 3), -0.1)
    assert (weight == 0).all()


def test_shape_mismatch_is_rejected():
    with pytest.raises(ValueError, match=r"x must have shape \(N, D\) with 4 features"):
        rules.oja(torch.randn(5, 3), torch.randn(2, 4), torch.randn(5, 2))
    with pytest.raises(ValueError, match=r"x must have shape \(N, C, H, W\) with 3"):
        rules.hebb(torch.randn(2, 4, 8, 8), torch.randn(5, 3, 3, 3), torch.randn(2, 5, 6, 6))


def test_post_synaptic_shape_mismatch_is_rejected():
    with pytest.raises(ValueError, match="post-synaptic factor must have shape"):
        rules.instar(torch.randn(5, 3), torch.randn(2, 3), torch.randn(5, 4))


def test_dtype_mismatch_is_rejected():
    with pytest.raises(TypeError, match="x and weight must share a dtype"):
        rules.hebb(torch.randn(5, 3, dtype=DOUBLE), torch.randn(2, 3), torch.randn(5, 2))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_input_is_rejected(bad):
    x = torch.randn(5, 3)
    x[2, 1] = bad
    with pytest.raises(ValueError, match="x must be finite"):
        rules.hpca(x, torch.randn(2, 3), torch.randn(5, 2))


def test_unknown_rule_name_is_rejected():
    with pytest.raises(ValueError, match="rule must be one of hebb, oja"):
        rules.make_rule("backprop")


@pytest.mark.parametrize("rule", RULES, ids=IDS)
def test_scale_multiplies_the_update(rule):
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(5, 3, 7, 7, generator=gen, dtype=DOUBLE)
    weight = torch.randn(4, 3, 3, 3, generator=gen, dtype=DOUBLE)
    y = rules.responses(x, weight)
    torch.testing.assert_close(rule.update(x, weight, y, scale=-2.5), -2.5 * rule.update(x, weight, y))


# ------------------------------------------------------------------------------------ Lagani's soft-WTA


def _reference_soft_wta(x_rows: torch.Tensor, weight_rows: torch.Tensor, temperature: float) -> torch.Tensor:
    """Lagani's soft-WTA written per sample and per unit from the reference equations (no rules.py maths):
    s = ((1 + cos)/2)², z = exp(s/T)/Σ exp(s/T), Δw_i = Σ_n c_ni z_ni (x_n − w_i), c_ni = z_ni / Σ_m z_mi."""
    num, units = x_rows.shape[0], weight_rows.shape[0]
    z = torch.zeros(num, units, dtype=x_rows.dtype)
    for n in range(num):
        s = [((1 + float(x_rows[n] @ weight_rows[i] / (x_rows[n].norm() * weight_rows[i].norm()))) / 2) ** 2
             for i in range(units)]
        e = [math.exp(v / temperature) for v in s]
        z[n] = torch.tensor([v / sum(e) for v in e], dtype=x_rows.dtype)
    delta = torch.zeros_like(weight_rows)
    for i in range(units):
        total = z[:, i].sum()
        for n in range(num):
            delta[i] += (z[n, i] / total) * z[n, i] * (x_rows[n] - weight_rows[i])
    return delta


@pytest.mark.parametrize("temperature", [0.02, 0.3])
def test_lagani_soft_wta_equals_a_per_sample_reference_and_its_loss_gradient(temperature):
    gen = torch.Generator().manual_seed(11)
    x = torch.randn(3, 2, 5, 5, generator=gen, dtype=DOUBLE)
    weight = torch.randn(4, 2, 3, 3, generator=gen, dtype=DOUBLE)
    rule = rules.SoftWTA(temperature)
    delta = rule.update(x, weight, rules.responses(x, weight))
    patches = F.unfold(x, 3).transpose(1, 2).reshape(-1, 18)
    torch.testing.assert_close(delta.view(4, 18), _reference_soft_wta(patches, weight.view(4, 18), temperature),
                               rtol=1e-9, atol=1e-12)
    w = weight.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(rule.loss(rules.responses(x, w), w, x=x), w)
    torch.testing.assert_close(grad, -delta, rtol=1e-9, atol=1e-12)
    linear = rule.update(patches, weight.view(4, 18), patches @ weight.view(4, 18).T)
    torch.testing.assert_close(linear, delta.view(4, 18), rtol=1e-9, atol=1e-12)


def test_lagani_soft_wta_units_find_well_separated_directions():
    """Four units trained on four narrow clusters of directions (with random norms) end pointing at them,
    one unit each, without any renormalisation."""
    gen = torch.Generator().manual_seed(3)
    centres = F.normalize(torch.eye(4, 6, dtype=DOUBLE) + 0.1, dim=1)
    weight = torch.randn(4, 6, generator=gen, dtype=DOUBLE) * 0.1 + centres.mean(0)
    rule = rules.SoftWTA(0.02)
    for _ in range(400):
        labels = torch.randint(0, 4, (64,), generator=gen)
        x = (centres[labels] + 0.05 * torch.randn(64, 6, generator=gen, dtype=DOUBLE))
        x = x * (0.5 + torch.rand(64, 1, generator=gen, dtype=DOUBLE))
        rules.apply_update(weight, rule.update(x, weight, x @ weight.T), 0.1)
    cosines = F.normalize(weight, dim=1) @ centres.T
    assert sorted(cosines.argmax(1).tolist()) == [0, 1, 2, 3]
    assert cosines.max(1).values.min() > 0.95


def test_weighted_instar_moves_little_for_a_unit_that_wins_little():
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=DOUBLE)
    weight = torch.zeros(2, 2, dtype=DOUBLE)
    r = torch.tensor([[0.9, 0.1], [0.9, 0.1]], dtype=DOUBLE)
    delta = rules.weighted_instar(x, weight, r)
    torch.testing.assert_close(delta[0], torch.tensor([0.45, 0.45], dtype=DOUBLE))  # 0.9² / 1.8 of each input
    torch.testing.assert_close(delta[1], torch.tensor([0.05, 0.05], dtype=DOUBLE))  # 0.1² / 0.2
    empty = rules.weighted_instar(x, weight, torch.tensor([[1.0, 0.0], [1.0, 0.0]], dtype=DOUBLE))
    assert torch.equal(empty[1], torch.zeros(2, dtype=DOUBLE))  # a unit that never wins does not move


@pytest.mark.parametrize("temperature, dtype", [(1e-40, torch.float32), (1e-300, torch.float64),
                                                (1e-6, torch.float16)])
def test_soft_wta_at_tiny_temperature_is_a_finite_hard_wta(temperature, dtype):
    y = torch.randn(16, 5).to(dtype)
    r = rules.soft_wta(y, temperature)
    assert r.dtype == dtype and torch.isfinite(r).all()
    torch.testing.assert_close(r.float(), rules.wta(y.float()))
    x, weight = torch.randn(8, 6), torch.randn(5, 6)
    layer_update = rules.SoftWTA(temperature if dtype != torch.float64 else 1e-300).update(x, weight, x @ weight.T)
    assert torch.isfinite(layer_update).all()


def test_empty_batch_is_rejected():
    with pytest.raises(ValueError, match=r"x holds no samples \(shape \(0, 3\)\)"):
        rules.oja(torch.randn(0, 3), torch.randn(2, 3), torch.randn(0, 2))


def test_conv_post_synaptic_factor_of_the_wrong_size_is_rejected():
    x, weight = torch.randn(2, 3, 8, 8), torch.randn(4, 3, 3, 3)
    with pytest.raises(ValueError, match=r"must have shape \(2, 4, 6, 6\).*got \(2, 4, 5, 5\)"):
        rules.hebb(x, weight, torch.randn(2, 4, 5, 5))
    with pytest.raises(ValueError, match=r"must have shape \(2, 4, 3, 3\)"):
        rules.instar(x, weight, torch.randn(2, 4, 6, 6), stride=2)


def test_loss_form_with_mismatched_shapes_is_rejected():
    weight = torch.randn(4, 3)
    with pytest.raises(ValueError, match=r"y \(5, 4\), factor \(5, 3\)"):
        rules.instar_loss(torch.randn(5, 4), weight, torch.randn(5, 3))
    with pytest.raises(ValueError, match=r"responses y of shape \(N, K=4"):
        rules.hebb_loss(torch.randn(5, 2), weight)
    with pytest.raises(ValueError, match="SoftWTA.loss needs the input x"):
        rules.SoftWTA().loss(torch.randn(5, 4), weight)


def test_nan_weights_are_rejected():
    weight = torch.randn(2, 3)
    weight[1, 0] = float("nan")
    with pytest.raises(ValueError, match="weight must be finite"):
        rules.SoftWTA().update(torch.randn(5, 3), weight, torch.randn(5, 2))


HALF_RULES = {
    "hebb": rules.hebb, "oja": rules.oja, "instar": rules.instar, "hpca": rules.hpca,
    "weighted_instar": lambda x, w, y, **g: rules.weighted_instar(x, w, y.abs(), **g),
    "softwta": lambda x, w, y, **g: rules.SoftWTA(0.1).update(x, w, y, **g),
}


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("form", ["conv", "linear"])
@pytest.mark.parametrize("name", HALF_RULES)
def test_half_precision_updates_of_unscaled_pixels_are_finite_and_match_float64(name, form, dtype):
    generator = torch.Generator().manual_seed(3)
    x = torch.randint(0, 256, (8, 3, 16, 16), generator=generator).to(dtype)  # 0..255, exact in both dtypes
    weight = (torch.randn(6, 3, 5, 5, generator=generator) * 0.01).to(dtype)
    if form == "linear":  # 1,152 samples of 75 pixels
        x, weight = F.unfold(x.float(), 5).transpose(1, 2).reshape(-1, 75).to(dtype), weight.flatten(1)
    y = rules.responses(x, weight)
    update = HALF_RULES[name](x, weight, y)
    expected = HALF_RULES[name](x.double(), weight.double(), y.double())  # the same inputs, summed in float64
    assert update.dtype == dtype and torch.isfinite(update).all()
    tolerance = 2e-3 if dtype == torch.float16 else 1.6e-2  # about one rounding of the result
    assert (update.double() - expected).norm() <= tolerance * expected.norm()
    torch.testing.assert_close(update.double(), expected, rtol=tolerance, atol=tolerance * expected.abs().max().item())
