"""Miconi's multi-layer Hebbian CNN, the probes and the ``layers`` command, on small synthetic images of
several shapes (3×32×32 and 1×28×28)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hebbkit import rules
from hebbkit.cli import main
from hebbkit.data import ImageSet, synthetic_images
from hebbkit.miconi import experiment
from hebbkit.miconi.experiment import PRESETS, Preset, get_preset, run_layers, select_images
from hebbkit.miconi.net import (
    LayerSpec,
    MiconiNet,
    NetConfig,
    TrainConfig,
    apply_zca,
    channel_mask,
    feature_sizes,
    fit_zca,
    plasticity_loss,
    standardize,
    train_network,
    winners,
    with_intervention,
)
from hebbkit.miconi.probe import (
    _treves_rolls,
    decode_layers,
    fit_ridge,
    layer_features,
    picture_grid,
    picture_stats,
    receptive_fields,
    response_sparsity,
    top_patch_pictures,
    weight_pictures,
)

SMALL = (LayerSpec(8, 5, 1e-3), LayerSpec(12, 3, 1e-3), LayerSpec(16, 3, 1e-2))
TINY = Preset(name="tiny", hebbian_images=200, epochs=1, fit_images=200, score_images=60, zca_images=200,
              calibration_images=100, probe_images=60, n_top=5, warmup_batches=1, batch_size=50)
TINY_REFERENCE = Preset(name="tiny", hebbian_images=200, epochs=1, fit_images=200, score_images=100, zca_images=200,
                        calibration_images=100, probe_images=60, n_top=5, warmup_batches=1, batch_size=50)

REFERENCE = {  # hebbkit.multilayer before the move (1 thread): TINY_REFERENCE on 500 synthetic 3×32×32 images
    "accuracy": [0.28, 0.25, 0.21, 0.06, 0.36, 0.33, 0.28, 0.19, 0.16, 0.06, 0.11, 0.31],
    "random_accuracy": [0.11, 0.08, 0.12, 0.11, 0.12, 0.13, 0.11, 0.09, 0.09, 0.11, 0.11, 0.12],
    "fit_accuracy": [0.78, 0.82, 0.74, 0.855, 0.955, 1, 0.78, 0.91, 0.75, 0.855, 0.925, 0.98],
    "population_sparsity": [
        1, 1, 1, 0.7153186525, 0.7033898779, 0.7095947713, 1, 1, 1, 0.7153186525, 0.7072913255, 0.6871432275
    ],
    "lifetime_sparsity": [
        0.875021259, 0.9167727746, 0.9384775808, 0.6784134985, 0.6886653223, 0.6830941741, 0.875021259, 0.9167727746,
        0.9384775808, 0.6784134985, 0.6656156268, 0.608045168
    ],
    "feature_extent": [
        3.801292181, 7.364756107, 15.17520046, 3.801292181, 7.306585312, 15.07059193, 3.801292181, 7.544522762,
        15.28148079, 3.801292181, 7.558471203, 15.25017166
    ],
    "feature_frequency": [
        0.3293654025, 0.2847621143, 0.174061656, 0.3293654025, 0.2575900555, 0.1569621414, 0.3293654025, 0.2854858339,
        0.1833289266, 0.3293654025, 0.2742005289, 0.1780816913
    ],
    "feature_sparseness": [
        0.2258891314, 0.2205414027, 0.1985382587, 0.2258891314, 0.2127660066, 0.1922559589, 0.2258891314, 0.216554001,
        0.198895663, 0.2258891314, 0.2143262625, 0.2010326236
    ],
    "random_feature_extent": [
        3.904693127, 7.706040859, 15.35165882, 3.904693127, 7.919266224, 15.39605236, 3.904693127, 7.790994644,
        15.34274864, 3.904693127, 7.581988811, 15.4248867
    ],
    "random_feature_frequency": [
        0.3599723577, 0.2979413271, 0.2370444834, 0.3599723577, 0.2822397947, 0.2012081742, 0.3599723577, 0.2940299511,
        0.2159802169, 0.3599723577, 0.2993825972, 0.2112836987
    ],
}
REFERENCE_WEIGHTS = {  # Σ|W| per layer of each trained network
    "none": [62.0959329917, 74.4767447526, 113.741903633],
    "sparse-plasticity": [62.0959329917, 86.2426919932, 134.609662187],
    "pruning": [62.0959329917, 31.0137044613, 39.6834354302],
    "both": [62.0959329917, 32.7411328536, 42.4416916071],
}


@pytest.fixture(scope="module")
def data():
    return synthetic_images(num_train=300, num_test=20, channels=3, size=32, seed=0)


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


def _indexed(count: int, channels: int = 2, size: int = 1) -> ImageSet:
    """``count`` images whose first two pixels hold their index (low and high byte), labels cycling over 10."""
    images = torch.zeros(count, channels, size, size, dtype=torch.uint8)
    images.view(count, -1)[:, 0], images.view(count, -1)[:, 1] = torch.arange(count) % 256, torch.arange(count) // 256
    return ImageSet(images, torch.arange(count) % 10, classes=tuple("0123456789"), mean=(0.5,) * channels,
                    std=(0.25,) * channels)


def _index(images: ImageSet) -> list[int]:
    flat = images.images.view(len(images), -1).long()
    return (flat[:, 0] + 256 * flat[:, 1]).tolist()


def test_select_images_keeps_scored_images_apart():
    hebbian, fit, score = select_images(_indexed(400, channels=3, size=32), TINY)
    assert _index(hebbian) == list(range(200)) and _index(fit) == list(range(200))
    assert _index(score) == list(range(340, 400))  # the back of the validation part (the last 80)


def test_select_images_on_cifar10_sized_data_is_the_protocol_split():
    """50,000 images: Hebbian and fitting images from the front, scored ones the last ``score_images``."""
    preset = get_preset("quick")
    hebbian, fit, score = select_images(_indexed(50_000), preset)
    assert _index(hebbian) == list(range(10_000)) and _index(fit) == list(range(8_000))
    assert _index(score) == list(range(46_000, 50_000))
    _, _, score = select_images(_indexed(50_000), PRESETS["full"])
    assert _index(score) == list(range(40_000, 50_000))
    with pytest.raises(ValueError, match="needs 10000 training and 4000 validation images"):
        select_images(_indexed(12_000), preset)


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


def test_run_layers_writes_the_table_and_figures(tmp_path, data, monkeypatch):
    resolved = []
    monkeypatch.setattr(experiment, "resolve_device", lambda device: resolved.append(device) or torch.device("cpu"))
    table, results = run_layers(data, TINY, ("none", "both"), layers=SMALL, out=tmp_path, progress=False)
    assert resolved == ["auto"]  # the device is resolved once, at the entry point
    assert list(table["layer"]) == [1, 2, 3, 1, 2, 3]
    assert table["accuracy"].between(0, 1).all() and table["random_accuracy"].between(0, 1).all()
    names = {p.name for p in tmp_path.iterdir()}
    assert {"layers.csv", "layers.md", "run.json", "layers_decoding.png", "layers_both_layer3.png"} <= names
    assert not [name for name in names if name.endswith(".tmp")]
    markdown = (tmp_path / "layers.md").read_text().splitlines()
    assert markdown[0].startswith("| intervention | layer | accuracy | random weights | population sparsity |")
    assert markdown[1] == "|" + "---|" * 9 and markdown[2].startswith("| none | 1 | ")
    assert markdown[2].split(" | ")[2].endswith(" %") and len(markdown) == 8


def test_run_layers_gives_the_numbers_of_the_code_before_the_move():
    """3-channel input takes the same path as before the move to hebbkit.miconi: same images, same ops, the same
    numbers within the round-off that training amplifies."""
    data = synthetic_images(num_train=500, num_test=10, channels=3, size=32, seed=0)
    table, results = run_layers(data, TINY_REFERENCE, layers=SMALL, device="cpu", progress=False)
    assert list(table["intervention"]) == [name for name in REFERENCE_WEIGHTS for _ in range(3)]
    # Training amplifies round-off that differs between CPUs and library builds (measured: a decoded image or two,
    # 3e-4 of a weight norm), so machine-dependent numbers are compared within tolerances that a changed rule,
    # probe or readout exceeds many times over; the random-weights statistics are compared tightly.
    tolerances = {"accuracy": 0.03, "random_accuracy": 0.03, "fit_accuracy": 0.04}
    for column, expected in REFERENCE.items():
        exact = column.startswith("random_feature")
        np.testing.assert_allclose(table[column], expected, rtol=1e-6 if exact else 2e-2,
                                   atol=tolerances.get(column, 1e-6), err_msg=column)
    for name, expected in REFERENCE_WEIGHTS.items():
        weights = [float(layer.weight.detach().double().abs().sum()) for layer in results[name]["net"].layers]
        np.testing.assert_allclose(weights, expected, rtol=1e-2, err_msg=name)


def _grey(n: int, size: int, seed: int) -> ImageSet:
    """``n`` one-channel images: class ``c`` is a bright square at one of 10 places, with noise."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 10
    images = 0.3 * torch.rand(n, 1, size, size, generator=generator)
    side = size // 4
    for c in range(10):
        row, col = (c // 4) * side, (c % 4) * side
        images[labels == c, :, row : row + side, col : col + side] += 0.6
    return ImageSet((images.clamp(0, 1) * 255).to(torch.uint8), labels, classes=tuple("0123456789"),
                    mean=(0.4,), std=(0.3,))


@pytest.mark.parametrize("channels, size", [(1, 28), (3, 32)])
def test_run_layers_on_images_of_any_shape(tmp_path, channels, size):
    data = synthetic_images(num_train=300, num_test=10, channels=channels, size=size, seed=1)
    table, results = run_layers(data, TINY, ("none",), layers=SMALL, device="cpu", out=tmp_path, progress=False)
    assert list(table["layer"]) == [1, 2, 3] and table["accuracy"].between(0, 1).all()
    net = results["none"]["net"]
    assert net.layers[0].weight.shape == (8, channels, 5, 5)
    assert [p.shape for p in results["none"]["pictures"]] == [(8, channels, 5, 5), (12, channels, 10, 10),
                                                              (16, channels, 20, 20)]
    grid = picture_grid(weight_pictures(net))
    assert grid.shape[0] == 3 and 0 <= grid.min() and grid.max() <= 1
    if channels == 1:  # a grey picture: the three colour channels agree
        assert torch.equal(grid[0], grid[1]) and torch.equal(grid[1], grid[2])
    assert (tmp_path / "layers_none_layer1.png").is_file()
    assert json.loads((tmp_path / "run.json").read_text())["image_shape"] == [channels, size, size]


def test_one_channel_28_pixel_images_fit_miconis_network():
    assert feature_sizes(NetConfig(), 28, 28) == [(12, 12), (5, 5), (1, 1)]  # 28→24→12→10→5→3→1
    assert feature_sizes(NetConfig(), 32, 32) == [(14, 14), (6, 6), (2, 2)]
    net = MiconiNet(NetConfig(), in_channels=1)
    train = _grey(40, 28, seed=0)
    net.fit_zca(train.images)
    train_network(net, train.images, TrainConfig(batch_size=20, warmup_batches=0), progress=False)
    assert [tuple(p.shape) for p in net(train.images[:4])] == [(4, 100, 12, 12), (4, 196, 5, 5), (4, 400, 1, 1)]
    assert [f.shape[1] for f in layer_features(net, train.images[:4])] == [400, 784, 1600]


def test_images_too_small_are_refused_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setattr(experiment, "train_network", lambda *args, **kwargs: pytest.fail("trained"))
    data = synthetic_images(num_train=300, num_test=10, channels=1, size=20, seed=0)
    with pytest.raises(ValueError, match=r"images of 20×20 pixels are too small .* at least 24×24"):
        run_layers(data, TINY, out=tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match=r"images of 16×16 pixels .*layer 3's input is 2×2, smaller than its 3×3"):
        feature_sizes(NetConfig(), 16, 16)


def test_readout_takes_the_class_count_from_the_labels():
    generator = torch.Generator().manual_seed(0)
    features, labels = torch.randn(60, 5, generator=generator), torch.arange(60) % 3
    readout = fit_ridge(features, labels)
    assert readout.weight.shape == (5, 3) and readout.bias.shape == (3,)


def test_bad_output_folder_is_refused_before_any_work(tmp_path, data, capsys, monkeypatch):
    monkeypatch.setattr(experiment, "train_network", lambda *args, **kwargs: pytest.fail("trained"))
    file = tmp_path / "file"
    file.write_text("")
    with pytest.raises(ValueError, match="--out must be a folder"):
        run_layers(data, TINY, layers=SMALL, out=file, progress=False)
    npz = tmp_path / "data.npz"
    np.savez(npz, x_train=np.zeros((4, 32, 32, 3), np.uint8), y_train=np.arange(4) % 2)
    for out, message in ((file, "--out must be a folder"), (file / "below", "because")):
        assert main(["layers", "--preset", "smoke", "--data", str(npz), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.npz", "file"] and file.read_text() == ""


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
    with pytest.raises(ValueError, match="images of 16×16 pixels are too small"):
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
    np.savez(bad, x_train=np.zeros((4, 32, 32, 3), np.uint8), y_train=np.arange(4) % 2)
    assert main(["layers", "--preset", "smoke", "--data", str(bad), "--out", str(tmp_path), *argv]) == 2
    assert message in capsys.readouterr().err


def test_cli_refuses_malformed_data(tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    np.savez(bad, x_train=np.zeros((4, 32, 32, 2), np.uint8), y_train=np.zeros(4, np.int64))
    assert main(["layers", "--preset", "smoke", "--data", str(bad), "--out", str(tmp_path)]) == 2
    assert "x_train must have shape" in capsys.readouterr().err
    small = tmp_path / "small.npz"
    np.savez(small, x_train=np.zeros((10, 32, 32, 3), np.uint8), y_train=np.arange(10) % 2)
    assert main(["layers", "--preset", "smoke", "--data", str(small), "--out", str(tmp_path)]) == 2
    assert "preset 'smoke' needs 500 training" in capsys.readouterr().err
