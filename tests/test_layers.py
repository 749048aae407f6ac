"""Plastic layers: the update lands in .grad, optimizers apply it, frozen layers are plain torch layers."""

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from hebbkit import HebbianConv2d, HebbianLinear, rules
from hebbkit.rules import HPCA, Competitive, Oja


def _conv(**kwargs):
    torch.manual_seed(0)
    return HebbianConv2d(3, 6, 3, stride=2, padding=1, dtype=torch.float64, **kwargs)


def test_conv_forward_matches_nn_conv2d():
    layer = _conv(rule=Oja())
    reference = nn.Conv2d(3, 6, 3, stride=2, padding=1, dtype=torch.float64)
    reference.load_state_dict(layer.state_dict())
    x = torch.randn(4, 3, 9, 9, dtype=torch.float64)
    torch.testing.assert_close(layer(x), reference(x))


@pytest.mark.parametrize("rule", [Oja(), Competitive("soft", temperature=0.5), HPCA("relu")], ids=str)
def test_plastic_forward_leaves_minus_update_in_grad(rule):
    layer = _conv(rule=rule)
    x = torch.randn(4, 3, 9, 9, dtype=torch.float64)
    layer(x)
    response = rules.responses(x, layer.weight.detach(), stride=2, padding=1)
    expected = rule.update(x, layer.weight.detach(), response, stride=2, padding=1)
    torch.testing.assert_close(layer.weight.grad, -expected)
    assert layer.bias.grad is None


def test_sgd_applies_the_rule_and_grads_accumulate():
    torch.manual_seed(1)
    layer = HebbianLinear(5, 3, bias=False, rule=Oja(), dtype=torch.float64)
    x1, x2 = torch.randn(8, 5, dtype=torch.float64), torch.randn(8, 5, dtype=torch.float64)
    before = layer.weight.detach().clone()
    layer(x1)
    layer(x2)
    expected = Oja().update(x1, before, x1 @ before.T) + Oja().update(x2, before, x2 @ before.T)
    torch.optim.SGD(layer.parameters(), lr=0.1).step()
    torch.testing.assert_close(layer.weight.detach(), before + 0.1 * expected)


def test_eval_mode_and_frozen_layers_do_not_learn():
    layer = _conv(rule=Oja())
    x = torch.randn(2, 3, 9, 9, dtype=torch.float64)
    layer.eval()
    layer(x)
    assert layer.weight.grad is None
    layer.train()
    layer.plastic = False
    layer(x)
    assert layer.weight.grad is None


def test_frozen_layer_trains_by_backprop_like_nn_conv2d():
    layer = _conv(rule=Oja(), plastic=False)
    reference = nn.Conv2d(3, 6, 3, stride=2, padding=1, dtype=torch.float64)
    reference.load_state_dict(layer.state_dict())
    x = torch.randn(2, 3, 9, 9, dtype=torch.float64)
    layer(x).square().sum().backward()
    reference(x).square().sum().backward()
    torch.testing.assert_close(layer.weight.grad, reference.weight.grad)
    torch.testing.assert_close(layer.bias.grad, reference.bias.grad)


def test_bias_does_not_enter_the_rule():
    layer = HebbianLinear(4, 2, rule=Oja(), dtype=torch.float64)
    with torch.no_grad():
        layer.bias.fill_(3.0)
    x = torch.randn(6, 4, dtype=torch.float64)
    layer(x)
    expected = Oja().update(x, layer.weight.detach(), x @ layer.weight.detach().T)
    torch.testing.assert_close(layer.weight.grad, -expected)


@pytest.mark.parametrize(
    "kwargs, message",
    [({"groups": 3}, "groups must be 1"), ({"padding_mode": "reflect"}, "padding_mode must be 'zeros'"),
     ({"padding": "same"}, "padding must be an int")],
)
def test_unsupported_conv_options_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        HebbianConv2d(3, 6, 3, **kwargs)


def test_plastic_layer_rejects_non_finite_input():
    layer = HebbianLinear(3, 2, rule=Oja())
    with pytest.raises(ValueError, match="x must be finite"):
        layer(torch.tensor([[1.0, float("nan"), 0.0]]))


META_RULES = [Oja(), Competitive("wta"), Competitive("soft", temperature=0.1), Competitive("kwta", k=2), HPCA("relu"),
              rules.SoftWTA(), rules.Hebb()]


@pytest.mark.parametrize("rule", META_RULES, ids=str)
def test_plastic_layers_on_the_meta_device_propagate_shapes(rule):
    conv = HebbianConv2d(3, 6, 3, stride=2, padding=1, device="meta", rule=rule)
    y = conv(torch.empty(4, 3, 9, 9, device="meta"))
    assert y.is_meta and y.shape == (4, 6, 5, 5)
    assert conv.weight.grad.is_meta and conv.weight.grad.shape == conv.weight.shape
    conv(torch.empty(4, 3, 9, 9, device="meta"))  # a second step accumulates
    for units in (5, 200):  # both of HPCA's linear paths (Gram matrix and blocked)
        linear = HebbianLinear(7, units, device="meta", rule=rule)
        assert linear(torch.empty(3, 7, device="meta")).shape == (3, units)
        assert linear.weight.grad.is_meta and linear.weight.grad.shape == (units, 7)


def test_a_half_precision_layer_learns_from_unscaled_pixels():
    torch.manual_seed(2)
    layer = HebbianConv2d(3, 8, 5, bias=False, rule=Oja(), dtype=torch.float16)
    x = torch.randint(0, 256, (16, 3, 20, 20)).half()
    layer(x)
    weight = layer.weight.detach().double()
    expected = -Oja().update(x.double(), weight, F.conv2d(x, layer.weight.detach()).double())
    assert layer.weight.grad.dtype == torch.float16 and torch.isfinite(layer.weight.grad).all()
    torch.testing.assert_close(layer.weight.grad.double(), expected, rtol=2e-3, atol=2e-3 * expected.abs().max().item())
