"""Lagani's pipeline on small synthetic images: network, rules, pre-training, fine-tuning, experiment loop."""

import copy
import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from hebbkit import lagani, rules
from hebbkit.cli import main
from hebbkit.data import split, synthetic_images
from hebbkit.lagani import (
    PRESETS,
    Classifier,
    FinetuneConfig,
    LaganiNet,
    NetSpec,
    SoftWTAConfig,
    configure,
    best_per_regime,
    claim_verdicts,
    confidence_interval,
    convergence_data,
    finetune,
    format_table,
    pretrain,
    run_experiment,
    scratch_differences,
    table1,
    write_outputs,
)
from hebbkit.lagani import experiment
from hebbkit.lagani import net as lagani_net
from hebbkit.lagani import finetuning as lagani_finetune
from hebbkit.lagani import pretraining as lagani_pretrain
from hebbkit.lagani.paper import TABLE1, best_cell, paper_table1
from hebbkit.loops import CROP_PADDING, augment, block_features, evaluate, settle_statistics
from hebbkit.store import ResultStore
from hebbkit.whitening import ZCA

WIDTH = 0.125
TINY = replace(PRESETS["smoke"], methods=("hpca", "vae"), regimes=(20.0, 50.0), layers=(1, 2), probe_val=20)


pytestmark = pytest.mark.usefixtures("one_thread")  # identical numbers whatever the machine's core count


@pytest.fixture(scope="module")
def data():
    return synthetic_images(200, 30, seed=0)


def states_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


# ------------------------------------------------------------------------------------------- network


def test_layer_cuts_have_the_papers_sizes():
    net = LaganiNet()
    assert net.feature_dims == (96 * 14 * 14, 128 * 12 * 12, 192 * 5 * 5, 256 * 3 * 3, 4096)
    assert net.blocks[4].layer.in_features == 2304 and net.fc6.out_features == 10
    small = LaganiNet(width=WIDTH).eval()
    x = torch.randn(3, 3, 32, 32)
    for layer in lagani.LAYERS:
        assert small.features(x, layer).shape == (3, small.feature_dims[layer - 1])
    assert small(x).shape == (3, 10)


def test_classifier_copies_the_blocks_it_cuts():
    net = LaganiNet(width=WIDTH)
    classifier = Classifier(net, 3, dropout=0.5)
    assert len(classifier.blocks) == 3 and classifier.head[1].in_features == net.feature_dims[2]
    with torch.no_grad():
        classifier.blocks[0].layer.weight.add_(1)
    assert not torch.equal(classifier.blocks[0].layer.weight, net.blocks[0].layer.weight)


def test_hebbian_networks_follow_the_reference():
    """No biases, modified BN after blocks 3–5, soft-WTA's ÷‖w‖ outputs and whitening; the backprop net is plain."""
    hebbian = LaganiNet(NetSpec(hebbian=True, project=True, whiten=True), width=WIDTH)
    plain = LaganiNet(width=WIDTH)
    assert all(block.layer.bias is None for block in hebbian.blocks)
    assert [isinstance(b.norm, lagani_net._VariancePreserving) for b in hebbian.blocks] == [False, False, True, True, True]
    assert not any(isinstance(b.norm, lagani_net._VariancePreserving) for b in plain.blocks)
    assert all(block.layer.bias is not None for block in plain.blocks)
    assert isinstance(hebbian.whiten, ZCA) and isinstance(plain.whiten, torch.nn.Identity)
    block = hebbian.blocks[1].eval()
    x = torch.randn(2, block.layer.in_channels, 6, 6)
    with torch.no_grad():
        block.layer.weight.mul_(torch.arange(1.0, block.layer.out_channels + 1).view(-1, 1, 1, 1))
        scaled = block.activation(x)
        norms = block.layer.weight.flatten(1).norm(dim=1).view(1, -1, 1, 1)
        expected = torch.relu(torch.nn.functional.conv2d(x, block.layer.weight) / norms)
    assert torch.allclose(scaled, expected, atol=1e-6)


@pytest.mark.parametrize("dims", [2, 4])
def test_modified_batchnorm_equals_its_equation(dims):
    torch.manual_seed(0)
    shape = (16, 5) if dims == 2 else (16, 5, 3, 3)
    modified = (lagani_net.ModifiedBatchNorm1d(5) if dims == 2 else lagani_net.ModifiedBatchNorm2d(5))
    plain = torch.nn.BatchNorm1d(5) if dims == 2 else torch.nn.BatchNorm2d(5)
    x = torch.randn(shape) * torch.arange(1.0, 6.0).view(1, -1, *[1] * (dims - 2))
    for mode in ("train", "eval"):
        modified.train(mode == "train"), plain.train(mode == "train")
        out, base = modified(x), plain(x)
        var, eps = plain.running_var, plain.eps
        factor = ((var + eps) / (var.mean() + eps)).sqrt().view(1, -1, *[1] * (dims - 2))
        assert torch.allclose(out, base * factor, atol=1e-6)
    assert not torch.allclose(factor, torch.ones_like(factor))  # the channels' variances differ


# -------------------------------------------------------------------------------------- pre-training


@pytest.mark.parametrize("method", ["hpca", "softwta"])
def test_hebbian_pretraining_changes_every_block_and_is_deterministic(data, method):
    config = configure(method, epochs=1, batch_size=50)
    first = pretrain(method, data.train, config, seed=3, width=WIDTH, progress=False)
    again = pretrain(method, data.train, config, seed=3, width=WIDTH, progress=False)
    torch.manual_seed(3)
    initial = LaganiNet(lagani.make_method(method).net, width=WIDTH)  # pretrain's starting point
    assert states_equal(first, again)
    for block, start in zip(first.blocks, initial.blocks):
        assert torch.isfinite(block.layer.weight).all() and not torch.equal(block.layer.weight, start.layer.weight)
        assert not block.layer.plastic and block.layer.weight.grad is None
    if method == "softwta":  # whitening fitted on the pre-training images and stored with the weights
        assert "whiten.matrix" in first.state_dict()
        assert not torch.equal(first.whiten.matrix, torch.eye(3 * 32 * 32))


def test_softwta_pretraining_keeps_the_units_diverse(data):
    """The reference rule does not collapse: the filters of a layer stay far from each other."""
    net = pretrain("softwta", data.train, configure("softwta", epochs=2, batch_size=20, lr=0.05), width=0.25,
                   progress=False)
    for block in net.blocks[:4]:
        w = torch.nn.functional.normalize(block.layer.weight.flatten(1), dim=1)
        cosines = (w @ w.T).abs()[~torch.eye(len(w), dtype=torch.bool)]
        assert cosines.mean() < 0.5


def test_hebbian_epoch_selection_keeps_the_best_epoch(data, monkeypatch):
    scores = iter([20.0, 60.0, 40.0])
    kept = []

    def score(net, means, images):
        kept.append(copy.deepcopy(net.blocks[0].layer.weight))
        return next(scores)

    monkeypatch.setattr(lagani_pretrain, "class_mean_accuracy", score)
    net = pretrain("hpca", data.train, configure("hpca", epochs=3, batch_size=50), width=WIDTH, val=data.test,
                   progress=False)
    assert len(kept) == 3 and torch.equal(net.blocks[0].layer.weight, kept[1])


def test_class_mean_classifier_learns_the_class_means():
    """The Hebbian classifier's rule with one-hot responsibilities moves each row to its class mean."""
    torch.manual_seed(0)
    x, labels = torch.randn(30, 4), torch.arange(30) % 3
    means = torch.zeros(3, 4)
    delta = rules.weighted_instar(x, means, torch.nn.functional.one_hot(labels, 3).float())
    for c in range(3):
        assert torch.allclose(delta[c], x[labels == c].mean(0), atol=1e-6)


def test_batchnorm_statistics_are_the_exact_average_over_the_images(data):
    net = pretrain("hpca", data.train, configure("hpca", epochs=0.5, batch_size=50), width=WIDTH, progress=False)
    x = data.train.float()
    with torch.no_grad():
        pre = torch.relu(net.blocks[0].layer(x))
        pre = torch.nn.functional.max_pool2d(pre, 2)
    norm = net.blocks[0].norm
    assert torch.allclose(norm.running_mean, pre.mean((0, 2, 3)), atol=1e-4)
    settle_statistics(net, data.train)  # again: the same average
    assert torch.allclose(norm.running_mean, pre.mean((0, 2, 3)), atol=1e-4)


def test_deep_block_statistics_equal_a_pass_through_the_whole_network(data):
    """Statistics are settled block after block from stored outputs; each equals the batch average of a pass
    of the images through the network with the final statistics of the blocks below."""
    net = pretrain("softwta", data.train, configure("softwta", epochs=0.5, batch_size=50), width=WIDTH,
                   progress=False)
    with torch.no_grad():
        h = net.whiten(data.train.float())
        for block in net.blocks:
            y = block.activation(h)
            y = torch.nn.functional.max_pool2d(y, 2) if block.pool else y
            dims = (0, 2, 3) if y.dim() == 4 else (0,)
            assert torch.allclose(block.norm.running_mean, y.mean(dims), rtol=1e-3, atol=1e-4)
            h = block.norm(y)


def test_checkpoints_report_the_fractions_of_an_epoch(data):
    seen = []
    pretrain("softwta", data.train, configure("softwta", epochs=1, batch_size=50), width=WIDTH, progress=False,
             checkpoint=lambda net, epochs: seen.append(epochs), checkpoints_per_epoch=2)
    assert seen == [0.0, 0.5, 1.0]
    seen.clear()
    pretrain("hpca", data.train, configure("hpca", epochs=1, batch_size=30), width=WIDTH, progress=False,
             checkpoint=lambda net, epochs: seen.append(round(epochs, 3)), checkpoints_per_epoch=2)
    assert seen == [0.0, 0.6, 1.05]  # 7 steps of 30 images: probed after step 4 and at the end


def test_vae_pretraining_lowers_the_reconstruction_loss(data):
    torch.manual_seed(0)
    x = data.train.float()[:64]
    vae = lagani.VAE(LaganiNet(width=WIDTH), latent_dim=8)
    optimizer = torch.optim.SGD(vae.parameters(), lr=1e-2, momentum=0.9, nesterov=True)
    losses = []
    for _ in range(30):
        optimizer.zero_grad()
        loss = lagani_net.vae_loss(x, *vae(x))
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert vae(x)[0].shape == x.shape and losses[-1] < 0.9 * losses[0]


def test_vae_loss_is_the_references_mse_plus_half_kl():
    torch.manual_seed(0)
    x, rec, mean, log_var = torch.randn(4, 3, 2, 2), torch.randn(4, 3, 2, 2), torch.randn(4, 5), torch.randn(4, 5)
    kl = sum(0.5 * (m.square() + lv.exp() - 1 - lv).sum() for m, lv in zip(mean, log_var)) / 4
    expected = ((rec - x) ** 2).mean() + 0.5 * kl
    assert lagani_net.vae_loss(x, rec, mean, log_var).item() == pytest.approx(expected.item(), rel=1e-6)


def test_vae_decoder_unpools_where_the_encoder_pooled():
    """Zero latents through the decoder leave un-pooled positions at their BN offset: the decoder's maps are
    only non-zero where the encoder's max-pooling picked a position."""
    torch.manual_seed(0)
    vae = lagani.VAE(LaganiNet(width=WIDTH), latent_dim=4).eval()
    captured = {}
    vae.dec_bn4.register_forward_hook(lambda module, inputs, output: captured.setdefault("in", inputs[0]))
    with torch.no_grad():
        vae(torch.randn(2, 3, 32, 32))
    nonzero = (captured["in"] != 0).float().view(2, -1, 14, 2, 14, 2).sum((3, 5))
    assert nonzero.max() <= 1  # at most one position of every 2x2 window


# --------------------------------------------------------------------------------------- fine-tuning


def test_learning_rate_schedule_halves_from_epoch_ten():
    config = FinetuneConfig()
    assert [config.lr_at(e) for e in (0, 9)] == [1e-3, 1e-3]
    assert config.lr_at(10) == pytest.approx(5e-4) and config.lr_at(19) == pytest.approx(1e-3 / 2**10)


def test_augment_flips_and_crops_each_image_independently():
    x = torch.arange(6 * 2 * 7 * 7, dtype=torch.float32).view(6, 2, 7, 7)
    out = augment(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    again = augment(x, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)
    pad = CROP_PADDING
    views = []
    for image, augmented in zip(x, out):  # each output is one crop of the padded image or of its mirror
        matches = [(flip, i, j) for flip in (False, True) for i in range(2 * pad + 1) for j in range(2 * pad + 1)
                   if torch.equal(torch.nn.functional.pad((image.flip(2) if flip else image)[None], (pad,) * 4,
                                                          mode="reflect")[0, :, i : i + 7, j : j + 7], augmented)]
        assert matches
        views.append(matches[0])
    assert len(set(views)) > 1  # not one shift for the whole batch


def test_small_subsets_train_for_at_least_min_steps_with_the_same_overall_decay():
    config = FinetuneConfig(epochs=8, batch_size=64, decay_from=4, min_steps=250)
    small = config.stretched(400)  # 7 steps an epoch: 56 steps, stretched 5×
    assert (small.epochs, small.decay_from) == (40, 20)
    assert small.epochs * math.ceil(400 / 64) >= 250
    assert small.lr_at(small.epochs - 1) == pytest.approx(config.lr_at(config.epochs - 1))
    assert config.stretched(4000) == replace(config, min_steps=0)  # 504 steps already
    with pytest.raises(ValueError, match="min_steps must be an integer >= 0"):
        FinetuneConfig(min_steps=-1)


def test_end_to_end_finetuning_learns_and_is_deterministic(data):
    net = LaganiNet(width=WIDTH)
    config = FinetuneConfig(epochs=6, batch_size=20, lr=1e-2, decay_from=4, weight_decay=5e-4)
    classifier, history = finetune(net, 2, data.train, config, seed=1, val=data.test, progress=False)
    again, _ = finetune(net, 2, data.train, config, seed=1, val=data.test, progress=False)
    assert states_equal(classifier, again)
    assert not torch.equal(classifier.blocks[0].layer.weight, net.blocks[0].layer.weight)  # end to end
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert evaluate(classifier, data.train) > 40  # chance is 10 %
    assert [h["epoch"] for h in history] == list(range(1, 7)) and "val_accuracy" in history[0]


def test_frozen_finetuning_trains_only_the_head_and_matches_train_head(data):
    net = pretrain("softwta", data.train, configure("softwta", epochs=0.5, batch_size=50), width=WIDTH,
                   progress=False)
    config = FinetuneConfig(epochs=3, batch_size=20, frozen=True)
    classifier, history = finetune(net, 3, data.train, config, seed=2, val=data.test, progress=False)
    for mine, theirs in zip(classifier.blocks, net.blocks):
        assert states_equal(mine, theirs)
    (_, features), = block_features(net, data.test, (3,))
    with torch.no_grad():
        direct = classifier(data.test.float()).argmax(1)
    assert torch.equal(direct, classifier.head(features).argmax(1))
    best = max(h["val_accuracy"] for h in history)  # the best epoch's head is returned
    assert best == pytest.approx(evaluate(classifier, data.test), abs=1e-9)


def test_finetuning_keeps_the_best_validation_epoch(data, monkeypatch):
    scores = iter([30.0, 70.0, 50.0])
    states = []

    def evaluate(model, images, precision="float32"):
        states.append(copy.deepcopy(model.state_dict()))
        return next(scores)

    monkeypatch.setattr(lagani_finetune, "evaluate", evaluate)
    config = FinetuneConfig(epochs=3, batch_size=50, lr=1e-2, decay_from=2)
    classifier, history = finetune(LaganiNet(width=WIDTH), 1, data.train, config, val=data.test, progress=False)
    assert [h["val_accuracy"] for h in history] == [30.0, 70.0, 50.0]
    assert all(torch.equal(a, b) for a, b in zip(classifier.state_dict().values(), states[1].values()))
    assert not all(torch.equal(a, b) for a, b in zip(classifier.state_dict().values(), states[2].values()))


def test_layer_features_yield_each_requested_layer(data):
    net = LaganiNet(width=WIDTH).eval()
    got = dict(block_features(net, data.test, (2, 4), batch_size=7))
    with torch.no_grad():
        x = data.test.float()
        assert torch.allclose(got[2], net.features(x, 2), atol=1e-5)
        assert torch.allclose(got[4], net.features(x, 4), atol=1e-5)


# ----------------------------------------------------------------------------------------- bad input


def test_unknown_method_is_rejected(data):
    with pytest.raises(ValueError, match="method must be one of hpca, softwta"):
        run_experiment(TINY, data=data, methods=("kmeans",), cache=None, progress=False)


def test_unknown_preset_is_rejected(data):
    with pytest.raises(ValueError, match="preset must be one of smoke, quick, paper, got 'fast'"):
        run_experiment("fast", data=data, cache=None)


@pytest.mark.parametrize("regime", [0, 101, -5])
def test_regime_outside_range_is_rejected(data, regime):
    with pytest.raises(ValueError, match=r"must lie in \(0, 100\]"):
        run_experiment(TINY, data=data, regimes=(regime,), cache=None, progress=False)


@pytest.mark.parametrize("layer", [0, 6, 2.5])
def test_layer_outside_range_is_rejected(data, layer):
    with pytest.raises(ValueError, match="layer must be an integer in 1..5"):
        run_experiment(TINY, data=data, layers=(layer,), cache=None, progress=False)


def test_seeds_below_one_are_rejected(data):
    with pytest.raises(ValueError, match="seeds must be an integer >= 1, got 0"):
        run_experiment(TINY, data=data, seeds=0, cache=None, progress=False)


def test_bad_configs_name_the_parameter():
    with pytest.raises(ValueError, match="temperature must be a number > 0"):
        SoftWTAConfig(temperature=0)
    with pytest.raises(ValueError, match="dropout must lie in"):
        FinetuneConfig(dropout=1.0)
    with pytest.raises(ValueError, match="width must be a number > 0"):
        LaganiNet(width=0)


def test_cli_reports_bad_input_cleanly(capsys):
    assert main(["reproduce", "--preset", "smoke", "--regimes", "150", "--data", "nowhere.npz"]) == 2
    assert "hebbkit reproduce: error:" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ tables and CI


def test_confidence_interval_matches_scipy():
    values = [41.0, 42.5, 40.2, 43.1, 41.7]
    mean, half = confidence_interval(values)
    low, high = stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=stats.sem(values))
    assert mean == pytest.approx(np.mean(values)) and half == pytest.approx((high - low) / 2)
    assert math.isnan(confidence_interval([50.0])[1])


def test_table1_layout_with_paper_values_beside():
    rows = [{"method": m, "regime": r, "layer": l, "seed": s, "val_accuracy": 40 + l + s + (m == "hpca")}
            for m in ("vae", "hpca") for r in (1.0, 5.0) for l in (1, 3) for s in range(3)]
    table = table1(pd.DataFrame(rows))
    assert list(table.index) == [(1.0, "hpca"), (1.0, "vae"), (5.0, "hpca"), (5.0, "vae")]
    assert table[("L3", "mean")].loc[(1.0, "hpca")] == pytest.approx(45.0)
    assert table[("L3", "n")].loc[(1.0, "hpca")] == 3
    assert table[("L3", "paper")].loc[(1.0, "hpca")] == 41.88
    assert table[("L1", "ci95")].loc[(5.0, "vae")] == pytest.approx(confidence_interval([41, 42, 43])[1])
    best = best_per_regime(table)
    assert best.loc[1.0].tolist() == ["hpca", "L3", pytest.approx(45.0), 41.88]
    text = format_table(table)
    assert text.loc["1% HPCA", "L3"] == f"45.00 ± {confidence_interval([44, 45, 46])[1]:.2f} (paper 41.88 ± 0.53)"


def test_paper_table_is_complete():
    table = paper_table1()
    assert len(table) == 4 * 3 * 5 and set(table["method"]) == {"vae", "softwta", "hpca"}
    assert [best_cell(r) for r in (1, 5, 10)] == [41.88, 54.01, 61.27]
    assert TABLE1[(10, "softwta")][2] == (61.27, 0.24)


# ------------------------------------------------------------------------------------ the experiment


def test_experiment_end_to_end_writes_every_output(data, tmp_path):
    results = run_experiment(TINY, data=data, out=tmp_path / "out", cache=tmp_path / "cache", progress=False)
    records = results.records
    assert len(records) == 2 * 2 * 2 and set(records["method"]) == {"hpca", "vae"}
    assert records["val_accuracy"].between(0, 100).all() and "test_accuracy" in records
    assert (records["threads"] == 1).all()  # the one_thread fixture: seconds are core-seconds
    assert (records["cpu_seconds"] > 0).all() and (records["cpu_seconds"] <= 1.5 * records["seconds"]).all()
    assert len(records.loc[0, "history"]) == TINY.finetune.epochs
    table = write_outputs(results, tmp_path / "out")
    assert table.shape == (4, 2 * 5)
    for name in ("results.sqlite", "table1.csv", "table1.md", "convergence_all.csv", "table1_heatmap.png",
                 "convergence.png"):
        assert (tmp_path / "out" / name).stat().st_size > 0
    hebbian = results.curves
    assert set(hebbian["layer"]) == set(TINY.layers) and set(hebbian["method"]) == {"hpca"}
    with ResultStore(tmp_path / "out") as store:
        assert len(store.records()) == 8
        pd.testing.assert_frame_equal(store.curves(records.loc[0, "settings"]), hebbian)
    curves = convergence_data(records, hebbian)
    assert set(curves["curve"]) == {"sgd", "hebbian"} and set(curves[curves["curve"] == "sgd"]["regime"]) == {20.0, 50.0}
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 2


def test_interrupted_run_resumes_without_recomputing_and_gives_the_same_table(data, tmp_path, monkeypatch):
    preset = replace(TINY, probe_val=0)  # every finetune call is one (method, regime, layer) entry
    reference = run_experiment(preset, data=data, out=tmp_path / "ref", cache=None, progress=False)
    calls = []
    original = experiment.finetune

    def interrupted(*args, **kwargs):
        if len(calls) == 5:
            raise KeyboardInterrupt
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(experiment, "finetune", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(preset, data=data, out=tmp_path / "run", cache=tmp_path / "cache", progress=False)
    with ResultStore(tmp_path / "run") as store:
        assert len(store.records()) == 5
    calls.clear()
    monkeypatch.setattr(experiment, "finetune", lambda *a, **k: (calls.append(1), original(*a, **k))[1])
    resumed = run_experiment(preset, data=data, out=tmp_path / "run", cache=tmp_path / "cache", progress=False)
    assert len(calls) == 3  # only the unfinished entries
    pd.testing.assert_frame_equal(table1(resumed.records), table1(reference.records))
    calls.clear()
    run_experiment(preset, data=data, out=tmp_path / "run", cache=tmp_path / "cache", progress=False)
    assert calls == []


def test_same_seed_gives_identical_numbers_and_other_seeds_differ(data, tmp_path):
    preset = replace(TINY, methods=("softwta",), probe_val=0)
    first = run_experiment(preset, data=data, cache=None, progress=False).records
    second = run_experiment(preset, data=data, cache=None, progress=False).records
    assert first["val_accuracy"].tolist() == second["val_accuracy"].tolist()
    assert first["history"].tolist() == second["history"].tolist()
    both = run_experiment(preset, data=data, seeds=2, cache=None, progress=False).records
    assert both[both["seed"] == 0]["val_accuracy"].tolist() == first["val_accuracy"].tolist()
    assert both[both["seed"] == 1]["history"].tolist() != first["history"].tolist()


def test_random_network_has_standardised_features(data):
    net = pretrain("random", data.train, width=WIDTH, progress=False)
    torch.manual_seed(0)
    assert states_equal(net.blocks[0].layer, LaganiNet(width=WIDTH).blocks[0].layer)  # weights untouched
    with torch.no_grad():
        features = net.features(data.train.float(), 5)
    assert features.mean().abs() < 0.05 and (features.var(0).mean() - 1).abs() < 0.05


def test_supervised_and_random_baselines(data):
    preset = replace(TINY, methods=("random", "supervised"), regimes=(50.0,), layers=(1,), probe_val=0)
    results = run_experiment(preset, data=data, cache=None, progress=False).records.set_index("method")
    assert len(results) == 2 and results["val_accuracy"].between(0, 100).all()


def test_cli_runs_the_smoke_preset(tmp_path, capsys):
    synthetic = synthetic_images(150, 20, seed=1)
    path = tmp_path / "tiny.npz"
    np.savez(path, x_train=synthetic.train.images.permute(0, 2, 3, 1).numpy(), y_train=synthetic.train.labels.numpy())
    code = main(["reproduce", "--preset", "smoke", "--methods", "hpca", "--regimes", "50", "--layers", "1",
                 "--data", str(path), "--out", str(tmp_path / "out"), "--cache", "none", "--no-progress"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "| 50% HPCA |" in printed and (tmp_path / "out" / "table1.md").exists()


def test_per_seed_splits_are_reproducible_shuffled_and_nested(data):
    train, val = split(data.train, 0)
    again, _ = split(data.train, 0)
    other, _ = split(data.train, 1)
    assert len(train) == 160 and len(val) == 40
    assert torch.equal(train.images, again.images) and not torch.equal(train.images, other.images)
    assert not torch.equal(train.images, data.train.images[:160])  # shuffled, not the first images
    pooled = {bytes(image.numpy()) for image in train.images} | {bytes(image.numpy()) for image in val.images}
    assert len(pooled) == len({bytes(image.numpy()) for image in data.train.images})  # a partition
    counts = [experiment.labelled_count(r, len(train)) for r in (1, 5, 10, 100)]
    assert counts == [2, 8, 16, 160]  # the labelled sets are the pool's first images, so they nest


def test_cifar10_split_keeps_the_protocol_sizes():
    full = synthetic_images(50_000, 10, seed=0)
    train, val = split(full.train, 3)
    assert (len(train), len(val)) == (40_000, 10_000)


def test_the_100_percent_regime_runs_at_smoke_scale(data):
    preset = replace(PRESETS["smoke"], layers=(1,), probe_val=0)
    results = run_experiment(preset, data=data, regimes=(100,), cache=None, progress=False).records
    assert set(results["method"]) == set(PRESETS["smoke"].methods)
    assert (results["num_labelled"] == 160).all() and results["val_accuracy"].between(0, 100).all()


def test_repeated_cli_values_are_run_once(data):
    results = run_experiment(TINY, data=data, methods=("hpca", "hpca"), regimes=(50, 50), layers=(1, 1),
                             cache=None, progress=False).records
    assert len(results) == 1


def test_scratch_differences_subtract_the_supervised_cell():
    rows = [{"method": m, "regime": 10.0, "layer": l, "seed": 0, "val_accuracy": v}
            for m, l, v in (("hpca", 1, 50.0), ("hpca", 3, 60.0), ("supervised", 1, 52.5), ("supervised", 3, 55.0))]
    diff = scratch_differences(table1(pd.DataFrame(rows)))
    assert diff.loc["10% HPCA"].tolist() == ["-2.50", "+5.00"] and list(diff.index) == ["10% HPCA"]
    assert scratch_differences(table1(pd.DataFrame(rows[:2]))).empty


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_runs_the_100_percent_regime_at_smoke_scale(data, name):
    """Each preset's own settings (schedules, selection and scoring sets, BN, whitening) with a narrow network,
    a fraction of an epoch and two fine-tuning epochs."""
    preset = PRESETS[name]
    small = replace(preset, width=WIDTH, layers=(1,), probe_val=0, seeds=1,
                    configs={m: replace(preset.config(m), epochs=0.2) for m in preset.methods
                             if lagani.make_method(m).pretrain},
                    finetune=replace(preset.finetune, epochs=2, decay_from=1, min_steps=0))
    results = run_experiment(small, data=data, regimes=(100,), cache=None, progress=False).records
    assert sorted(results["method"]) == sorted(preset.methods)
    assert (results["num_labelled"] == 160).all() and results["val_accuracy"].between(0, 100).all()


def test_too_few_images_are_an_error_not_a_table(tmp_path, capsys):
    tiny = synthetic_images(3, 1, seed=0)
    path = tmp_path / "three.npz"
    np.savez(path, x_train=tiny.train.images.permute(0, 2, 3, 1).numpy(), y_train=tiny.train.labels.numpy())
    assert main(["reproduce", "--preset", "smoke", "--data", str(path), "--out", str(tmp_path / "out"),
                 "--cache", "none", "--no-progress"]) == 2
    assert "too few images" in capsys.readouterr().err
    assert not (tmp_path / "out" / "table1.md").exists()


def test_claim_verdicts_compare_best_layers_per_regime():
    cells = {("hpca", 1): 40.0, ("hpca", 3): 44.0, ("softwta", 1): 45.0, ("vae", 2): 30.0, ("supervised", 3): 46.0}
    rows = [{"method": m, "regime": 1.0, "layer": l, "seed": 0, "val_accuracy": v} for (m, l), v in cells.items()]
    verdicts = claim_verdicts(pd.DataFrame(rows)).set_index("claim")
    assert verdicts.loc["Hebbian beats VAE", ["ours", "against", "difference"]].tolist() == [45.0, 30.0, 15.0]
    assert verdicts.loc["Hebbian beats training from scratch", "difference"] == -1.0
    assert verdicts.loc["HPCA beats soft-WTA", ["ours", "against", "difference"]].tolist() == [44.0, 45.0, -1.0]
    assert set(verdicts["verdict"]) == {"undecided (one seed)"}  # one seed: no interval, so no verdict
