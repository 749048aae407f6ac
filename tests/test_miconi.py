"""Miconi's multi-layer Hebbian CNN, the probes and the ``layers`` command, on small synthetic images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hebbkit import rules
from hebbkit.cli import main
from hebbkit.data import ImageSet, synthetic_cifar10
from hebbkit.miconi import (
    LayerSpec,
    MiconiNet,
    NetConfig,
    TrainConfig,
    apply_zca,
    channel_mask,
    fit_zca,
    plasticity_loss,
    standardize,
    train_network,
    winners,
    with_intervention,
)
from hebbkit.multilayer import Preset, run_layers, split_images
from hebbkit.probe import (
    _treves_rolls,
    decode_layers,
    fit_ridge,
    layer_features,
    picture_stats,
    receptive_fields,
    response_sparsity,
    top_patch_pictures,
)

SMALL = (LayerSpec(8, 5, 1e-3), LayerSpec(12, 3, 1e-3), LayerSpec(16, 3, 1e-2))
TINY = Preset("tiny", hebbian_images=200, epochs=1, fit_images=200, score_images=100, zca_images=200,
              calibration_images=100, probe_images=60, n_top=5, warmup_batches=1, batch_size=50)


@pytest.fixture(scope="module")
def data():
    return synthetic_cifar10(num_train=300, num_test=20, size=32, seed=0)


@pytest.fixture(scope="module")
def make_net(data):
    """A factory of small networks sharing one ZCA fitted on the synthetic images."""
    zca = fit_zca(data.train.images[:200].float() / 255)

    def make(intervention: str = "none", seed: int = 0) -> MiconiNet:
        net = MiconiNet(with_intervention(NetConfig(layers=SMALL), intervention, keep=0.25), seed=seed)
        net.zca = zca.clone()
        return net

    return make


# -------------------------------------------------------------------------------------- the network


def firing_deviation(net: MiconiNet, images: torch.Tensor) -> list[float]:
    """Per layer, the mean over units of |firing rate − k/N|, relative to k/N."""
    states = net.states(images.float() / 255)
    return [
        float((state.r > 0).float().mean((0, 2, 3)).sub(layer.target_rate).abs().mean() / layer.target_rate)
        for layer, state in zip(net.layers, states)
    ]


def test_adaptive_thresholds_drive_firing_rates_to_k_over_n(data, make_net):
    net = make_net()
    with torch.no_grad():
        for layer in net.layers:  # start far from balance: a few units dominate, others never win
            layer.threshold.copy_(torch.linspace(-2, 2, len(layer.threshold)))
    held_out = data.train.images[200:]
    before = firing_deviation(net, held_out)
    history = train_network(net, data.train.images[:200], TrainConfig(epochs=3, batch_size=25), plastic=False, progress=False)
    after = firing_deviation(net, held_out)
    assert len(history) == 24
    assert min(before) > 0.5 and max(after) < 0.3, (before, after)


def test_training_runs_and_keeps_firing_rates_near_k_over_n(data, make_net):
    net = make_net()
    history = train_network(net, data.train.images[:200], TrainConfig(epochs=2, batch_size=50, warmup_batches=1), progress=False)
    assert len(history) == 8 and all(len(h) == 3 for h in history)
    assert np.isfinite(history).all() and all(layer.threshold.abs().sum() > 0 for layer in net.layers)


def test_weights_stay_unit_norm_and_change(data, make_net):
    net = make_net("both")
    before = [layer.weight.detach().clone() for layer in net.layers]
    train_network(net, data.train.images[:150], TrainConfig(batch_size=50, warmup_batches=0), progress=False)
    for layer, old in zip(net.layers, before):
        norms = layer.weight.detach().flatten(1).norm(dim=1)
        torch.testing.assert_close(norms, torch.ones_like(norms))
        assert not torch.equal(layer.weight.detach(), old)


def test_calibration_without_plasticity_keeps_the_weights(data, make_net):
    net = make_net()
    before = [layer.weight.detach().clone() for layer in net.layers]
    train_network(net, data.train.images[:100], TrainConfig(batch_size=50), plastic=False, progress=False)
    for layer, old in zip(net.layers, before):
        assert torch.equal(layer.weight.detach(), old)
        assert layer.threshold.abs().sum() > 0


def test_pruning_masks_keep_the_fraction_and_stay_fixed(data, make_net):
    mask = channel_mask(50, 200, 0.1, torch.Generator().manual_seed(0))
    assert mask.shape == (50, 200, 1, 1)
    assert torch.equal(mask.sum((1, 2, 3)), torch.full((50,), 20.0))
    assert torch.equal(channel_mask(4, 10, 0.01, torch.Generator()).sum((1, 2, 3)), torch.ones(4))  # at least one
    net = make_net("pruning")
    assert torch.equal(net.layers[0].mask, torch.ones_like(net.layers[0].mask))  # layer 1 is never pruned
    masks = [layer.mask.clone() for layer in net.layers]
    assert torch.equal(masks[1].sum((1, 2, 3)), torch.full((12,), 2.0))  # round(0.25 · 8)
    assert torch.equal(masks[2].sum((1, 2, 3)), torch.full((16,), 3.0))  # round(0.25 · 12)
    train_network(net, data.train.images[:150], TrainConfig(batch_size=50, warmup_batches=0), progress=False)
    for layer, old in zip(net.layers, masks):
        assert torch.equal(layer.mask, old)
        assert torch.all(layer.weight.detach()[(old == 0).expand_as(layer.weight)] == 0)


def test_training_is_deterministic(data, make_net):
    weights = []
    for _ in range(2):
        net = make_net("both", seed=3)
        train_network(net, data.train.images[:100], TrainConfig(batch_size=50, warmup_batches=0, seed=3), progress=False)
        weights.append([layer.weight.detach().clone() for layer in net.layers])
    for a, b in zip(*weights):
        assert torch.equal(a, b)


@pytest.mark.parametrize("rule", ["hebb", "instar", "oja"])
@pytest.mark.parametrize("binary", [True, False])
def test_loss_form_gives_the_summed_rule(rule, binary):
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(3, 4, 7, 7, generator=generator, dtype=torch.float64)
    weight = torch.randn(5, 4, 3, 3, generator=generator, dtype=torch.float64, requires_grad=True)
    y = F.conv2d(x, weight)
    r = winners(y.detach() - 0.1, 2, binary)
    plasticity_loss(rule, y, weight, r).backward()
    direct = {"hebb": rules.hebb, "instar": rules.instar, "oja": rules.oja}[rule](x, weight.detach(), r)
    torch.testing.assert_close(-weight.grad, direct * (3 * 5 * 5))


def test_winners_are_k_largest_and_positive():
    z = torch.tensor([[3.0, -1.0, 2.0, 0.5], [-3.0, -1.0, -2.0, -0.5]]).view(2, 4, 1, 1)
    assert torch.equal(winners(z, 2).flatten(1), torch.tensor([[1.0, 0, 1, 0], [0, 0, 0, 0]]))
    assert torch.equal(winners(z, 1, binary=False).flatten(1), torch.tensor([[3.0, 0, 0, 0], [0, 0, 0, 0]]))


def test_sparse_plasticity_passes_a_dense_output_upward(data, make_net):
    states = make_net("sparse-plasticity").states(data.train.images[:20].float() / 255)
    for state in states:
        assert (state.output > 0).float().mean() > 2 * (state.r > 0).float().mean()


def test_zca_whitens_and_gram_route_matches():
    images = torch.rand(400, 3, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    zca = fit_zca(images, eps=1e-6)
    white = apply_zca(images, zca).flatten(1)
    centring = torch.eye(48, dtype=torch.float64) - 1 / 48  # each image is centred: one direction is empty
    torch.testing.assert_close(white.T @ white / 400, centring, atol=1e-3, rtol=0)
    few = images[:20]
    flat = standardize(few.flatten(1))
    values, vectors = torch.linalg.eigh(flat.T @ flat / 20)
    expected = (vectors * (values.clamp(min=0) + 1e-2).rsqrt()) @ vectors.T
    torch.testing.assert_close(fit_zca(few, eps=1e-2), expected)


# ---------------------------------------------------------------------------------------------- probe


def test_readout_is_never_fit_on_scored_images():
    generator = torch.Generator().manual_seed(0)
    features, labels = torch.randn(300, 200, generator=generator), torch.randint(0, 10, (300,), generator=generator)
    fit_x, score_x = features[:200], features[200:]
    result = decode_layers([fit_x], labels[:200], [score_x], labels[200:])[0]
    shuffled = decode_layers([fit_x], labels[:200], [score_x], labels[200:][torch.randperm(100, generator=generator)])[0]
    assert result["fit_accuracy"] == shuffled["fit_accuracy"] and result["alpha"] == shuffled["alpha"]
    assert result["accuracy"] < 0.25  # random labels: held-out accuracy stays near chance


def test_split_keeps_scored_images_apart():
    count = 400
    images = torch.zeros(count, 3, 32, 32, dtype=torch.uint8)
    images[:, 0, 0, 0], images[:, 0, 0, 1] = torch.arange(count) % 256, torch.arange(count) // 256
    train = ImageSet(images, torch.arange(count) % 10)
    hebbian, fit, score = split_images(train, TINY)
    key = lambda s: set((s.images[:, 0, 0, 0].int() + 256 * s.images[:, 0, 0, 1].int()).tolist())  # noqa: E731
    assert len(key(fit)) == 200 and len(key(score)) == 100
    assert not key(fit) & key(score) and not key(hebbian) & key(score)


def test_ridge_matches_the_closed_form():
    generator = torch.Generator().manual_seed(0)
    x, labels = torch.randn(120, 6, generator=generator), torch.randint(0, 10, (120,), generator=generator)
    readout = fit_ridge(x, labels, penalties=(0.5,))
    z = ((x.double() - x.double().mean(0)) / x.double().std(0))
    design = torch.cat([z, torch.ones(120, 1, dtype=torch.float64)], 1)
    penalty = torch.diag(torch.tensor([0.5 * 120] * 6 + [0.0], dtype=torch.float64))
    solution = torch.linalg.solve(design.T @ design + penalty, design.T @ F.one_hot(labels, 10).double())
    torch.testing.assert_close(readout.weight, solution[:6])
    torch.testing.assert_close(readout.bias, solution[6])


def test_picture_stats_rank_size_and_frequency():
    grid = torch.arange(16.0) - 7.5
    radius2 = grid.view(-1, 1) ** 2 + grid.view(1, -1) ** 2
    small, large = torch.exp(-radius2 / 2), torch.exp(-radius2 / 32)
    coarse, fine = torch.cos(2 * torch.pi * grid / 8).expand(16, 16), torch.cos(2 * torch.pi * grid / 2.5).expand(16, 16)
    stats = picture_stats(torch.stack([small, large, coarse, fine]).unsqueeze(1).expand(-1, 3, -1, -1))
    assert stats["extent"][0] < stats["extent"][1]
    assert stats["frequency"][2] < stats["frequency"][3]
    assert stats["sparseness"][0] > stats["sparseness"][2]


def test_treves_rolls_sparseness_spans_zero_to_one():
    vectors = torch.tensor([[0.0, 0, 3, 0], [1.0, 1, 1, 1], [0.0, 0, 0, 0]], dtype=torch.float64)
    sparseness = _treves_rolls(vectors, 1)
    torch.testing.assert_close(sparseness[:2], torch.tensor([1.0, 0.0], dtype=torch.float64))
    assert sparseness[2].isnan()  # silent: skipped by the averages


def test_probes_have_the_right_shapes(data, make_net):
    net = make_net()
    assert receptive_fields(net) == [(5, 1), (10, 2), (20, 4)]
    images = data.train.images[:60]
    features = layer_features(net, images, grid=2, batch_size=25)
    assert [f.shape for f in features] == [(60, 32), (60, 48), (60, 64)]
    pictures = top_patch_pictures(net, images, n_top=4, batch_size=25)
    assert [p.shape for p in pictures] == [(8, 3, 5, 5), (12, 3, 10, 10), (16, 3, 20, 20)]
    for layer in response_sparsity(net, images, batch_size=25):
        assert 0.9 <= layer["population"] <= 1.0  # one binary winner per position


def test_top_patches_recover_a_planted_feature():
    """A unit whose filter is a patch pattern: its top patches average to that pattern."""
    net = MiconiNet(NetConfig(layers=(LayerSpec(2, 5, 0.0),)), seed=0)
    pattern = torch.randn(3, 5, 5, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        net.layers[0].weight[0] = pattern / pattern.norm()
    images = torch.rand(40, 3, 12, 12, generator=torch.Generator().manual_seed(2))
    images[:, :, 3:8, 3:8] = (0.5 + 0.2 * pattern).clamp(0, 1)
    picture = top_patch_pictures(net, images, n_top=10)[0][0]
    assert F.cosine_similarity(picture.flatten(), pattern.flatten(), dim=0) > 0.8


# ---------------------------------------------------------------------------------- runs and bad input


def test_run_layers_writes_the_table_and_figures(tmp_path, data):
    table, results = run_layers(data, TINY, ("none", "both"), layers=SMALL, out=tmp_path, progress=False)
    assert list(table["layer"]) == [1, 2, 3, 1, 2, 3]
    assert table["accuracy"].between(0, 1).all() and table["random_accuracy"].between(0, 1).all()
    names = {p.name for p in tmp_path.iterdir()}
    assert {"layers.csv", "layers.md", "run.json", "layers_decoding.png", "layers_both_layer3.png"} <= names
    assert not [name for name in names if name.endswith(".tmp")]
    assert "| none | 1 |" in (tmp_path / "layers.md").read_text()


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: with_intervention(NetConfig(), "dropout"), "intervention must be one of"),
        (lambda: LayerSpec(10, 3, 1e-3, k=0), r"k must be an integer in 1\.\.10"),
        (lambda: LayerSpec(10, 3, 1e-3, k=11), r"k must be an integer in 1\.\.10"),
        (lambda: with_intervention(NetConfig(), "pruning", keep=0.0), r"keep .* must lie in \(0, 1\]"),
        (lambda: with_intervention(NetConfig(), "pruning", keep=1.5), r"keep .* must lie in \(0, 1\]"),
        (lambda: NetConfig(rule="bcm"), "rule must be one of hebb, instar, oja"),
        (lambda: LayerSpec(10, 3, -1.0), "learning rate"),
    ],
)
def test_bad_configuration_is_refused(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_images_too_small_for_the_network():
    net = MiconiNet(NetConfig(layers=SMALL))
    with pytest.raises(ValueError, match="too small"):
        net.states(torch.rand(2, 3, 16, 16))


def test_training_needs_the_zca_first(data):
    with pytest.raises(RuntimeError, match="fit_zca"):
        train_network(MiconiNet(NetConfig(layers=SMALL)), data.train.images[:10], progress=False)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--intervention", "dropout"], "intervention must be one of"),
        (["--k", "0"], "k must be an integer in 1..100"),
        (["--keep", "0"], "keep"),
        (["--keep", "2"], "keep"),
    ],
)
def test_cli_refuses_bad_arguments(tmp_path, capsys, argv, message):
    bad = tmp_path / "data.npz"
    np.savez(bad, x_train=np.zeros((4, 32, 32, 3), np.uint8), y_train=np.zeros(4, np.int64))
    assert main(["layers", "--preset", "smoke", "--data", str(bad), "--out", str(tmp_path), *argv]) == 2
    assert message in capsys.readouterr().err


def test_cli_refuses_malformed_data(tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    np.savez(bad, x_train=np.zeros((4, 32, 32), np.uint8), y_train=np.zeros(4, np.int64))
    assert main(["layers", "--preset", "smoke", "--data", str(bad), "--out", str(tmp_path)]) == 2
    assert "x_train must have shape" in capsys.readouterr().err
    small = tmp_path / "small.npz"
    np.savez(small, x_train=np.zeros((4, 32, 32, 3), np.uint8), y_train=np.zeros(4, np.int64))
    assert main(["layers", "--preset", "smoke", "--data", str(small), "--out", str(tmp_path)]) == 2
    assert "needs" in capsys.readouterr().err
