"""Lagani's pipeline on small synthetic images: network, rules, pre-training, fine-tuning, experiment loop."""

import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from hebbkit import lagani, reproduce
from hebbkit.cli import main
from hebbkit.data import synthetic_cifar10
from hebbkit.lagani import (
    Classifier,
    CosineCompetitive,
    FinetuneConfig,
    LaganiNet,
    PretrainConfig,
    finetune,
    layer_features,
    pretrain,
    set_batchnorm_statistics,
)
from hebbkit.paper import TABLE1, best_cell, paper_table1
from hebbkit.reproduce import PRESETS, confidence_interval, format_table, run_experiment, table1, write_outputs

WIDTH = 0.125
TINY = replace(PRESETS["smoke"], methods=("hpca", "vae"), regimes=(20.0, 50.0), layers=(1, 2), probe_val=20)


@pytest.fixture(scope="module")
def data():
    return synthetic_cifar10(200, 30, seed=0)


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # identical numbers whatever the machine's core count
    yield
    torch.set_num_threads(threads)


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


def test_cosine_competitive_moves_units_to_the_weighted_mean_of_their_inputs():
    torch.manual_seed(0)
    x, w = torch.randn(50, 6), torch.nn.functional.normalize(torch.randn(4, 6), dim=1)
    rule = CosineCompetitive("soft", temperature=0.3)
    delta = rule.update(x, w, x @ w.T)
    cosine = (x @ w.T) / x.norm(dim=1, keepdim=True)
    r = torch.softmax(cosine / 0.3, dim=1)
    for i in range(4):
        target = (r[:, i : i + 1] * x).sum(0) / r[:, i].sum()
        assert torch.allclose(delta[i], target - w[i], atol=1e-5)
    hard = CosineCompetitive("wta").update(x, w, x @ w.T)
    winners = cosine.argmax(1)
    for i in winners.unique():
        assert torch.allclose(hard[i], x[winners == i].mean(0) - w[i], atol=1e-5)


def test_cosine_competitive_conv_matches_unfolded_patches():
    torch.manual_seed(1)
    x, w = torch.randn(2, 3, 6, 6), torch.nn.functional.normalize(torch.randn(5, 27), dim=1).view(5, 3, 3, 3)
    y = torch.nn.functional.conv2d(x, w)
    delta = CosineCompetitive("soft", 0.5).update(x, w, y)
    patches = torch.nn.functional.unfold(x, 3).transpose(1, 2).reshape(-1, 27)
    reference = CosineCompetitive("soft", 0.5).update(patches, w.view(5, 27), patches @ w.view(5, 27).T)
    assert torch.allclose(delta.view(5, 27), reference, atol=1e-5)


# -------------------------------------------------------------------------------------- pre-training


@pytest.mark.parametrize("method", ["hpca", "softwta", "wta"])
def test_hebbian_pretraining_changes_every_block_and_is_deterministic(data, method):
    config = PretrainConfig(epochs=1, batch_size=50)
    first = pretrain(method, data.train, config, seed=3, width=WIDTH, progress=False)
    again = pretrain(method, data.train, config, seed=3, width=WIDTH, progress=False)
    torch.manual_seed(3)
    initial = LaganiNet(width=WIDTH)  # pretrain's starting point
    assert states_equal(first, again)
    for block, start in zip(first.blocks, initial.blocks):
        assert torch.isfinite(block.layer.weight).all() and not torch.equal(block.layer.weight, start.layer.weight)
        assert not block.layer.plastic and block.layer.weight.grad is None
    if method != "hpca":  # competitive units keep unit norm
        norms = first.blocks[1].layer.weight.flatten(1).norm(dim=1)
        assert torch.allclose(norms, torch.ones_like(norms), atol=1e-5)


def test_batchnorm_statistics_are_the_exact_average_over_the_images(data):
    net = pretrain("hpca", data.train, PretrainConfig(epochs=0.5, batch_size=50), width=WIDTH, progress=False)
    x = data.train.float()
    with torch.no_grad():
        pre = torch.relu(net.blocks[0].layer(x))
        pre = torch.nn.functional.max_pool2d(pre, 2)
    norm = net.blocks[0].norm
    assert torch.allclose(norm.running_mean, pre.mean((0, 2, 3)), atol=1e-4)
    set_batchnorm_statistics(net, 1, data.train, 64, torch.device("cpu"))  # batch size does not matter
    assert torch.allclose(norm.running_mean, pre.mean((0, 2, 3)), atol=1e-4)


def test_stored_block_outputs_give_the_same_deeper_blocks_as_the_full_network(data):
    """Pre-training stores each finished block's outputs; the statistics of a deep block equal a pass of the
    images through the whole network, and so do the features."""
    net = pretrain("hpca", data.train, PretrainConfig(epochs=0.5, batch_size=50), width=WIDTH, progress=False)
    stored = [(b.norm.running_mean.clone(), b.norm.running_var.clone()) for b in net.blocks]
    for layer in lagani.LAYERS:
        set_batchnorm_statistics(net, layer, data.train, 64, torch.device("cpu"))
        mean, var = stored[layer - 1]
        assert torch.allclose(net.blocks[layer - 1].norm.running_mean, mean, atol=1e-4)
        assert torch.allclose(net.blocks[layer - 1].norm.running_var, var, rtol=1e-4, atol=1e-5)


def test_checkpoints_report_every_block(data):
    seen = []
    config = PretrainConfig(epochs=1, batch_size=50, checkpoints_per_epoch=2)
    pretrain("softwta", data.train, config, width=WIDTH, progress=False,
             checkpoint=lambda net, layer, epochs: seen.append((layer, epochs)))
    assert seen == [(layer, e) for layer in lagani.LAYERS for e in (0.0, 0.5, 1.0)]


def test_vae_pretraining_lowers_the_reconstruction_loss(data):
    torch.manual_seed(0)
    x = data.train.float()[:64]
    vae = lagani.VAE(LaganiNet(width=WIDTH), latent_dim=8)
    optimizer = torch.optim.Adam(vae.parameters(), lr=1e-3)
    losses = []
    for _ in range(30):
        optimizer.zero_grad()
        loss = lagani.vae_loss(x, *vae(x))
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert vae(x)[0].shape == x.shape and losses[-1] < 0.9 * losses[0]


# --------------------------------------------------------------------------------------- fine-tuning


def test_learning_rate_schedule_halves_from_epoch_ten():
    config = FinetuneConfig()
    assert [config.lr_at(e) for e in (0, 9)] == [1e-3, 1e-3]
    assert config.lr_at(10) == pytest.approx(5e-4) and config.lr_at(19) == pytest.approx(1e-3 / 2**10)


def test_augment_flips_and_crops_each_image_independently():
    x = torch.arange(6 * 2 * 7 * 7, dtype=torch.float32).view(6, 2, 7, 7)
    out = lagani.augment(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    again = lagani.augment(x, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)
    pad = lagani.CROP_PADDING
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
    again, _ = finetune(net, 2, data.train, config, seed=1, progress=False)
    assert states_equal(classifier, again)
    assert not torch.equal(classifier.blocks[0].layer.weight, net.blocks[0].layer.weight)  # end to end
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert lagani.evaluate(classifier, data.train) > 40  # chance is 10 %
    assert [h["epoch"] for h in history] == list(range(1, 7)) and "val_accuracy" in history[0]


def test_frozen_finetuning_trains_only_the_head_and_matches_train_head(data):
    net = pretrain("softwta", data.train, PretrainConfig(epochs=0.5, batch_size=50), width=WIDTH, progress=False)
    config = FinetuneConfig(epochs=3, batch_size=20, frozen=True)
    classifier, history = finetune(net, 3, data.train, config, seed=2, val=data.test, progress=False)
    for mine, theirs in zip(classifier.blocks, net.blocks):
        assert states_equal(mine, theirs)
    (_, features), = layer_features(net, data.test, (3,))
    with torch.no_grad():
        direct = classifier(data.test.float()).argmax(1)
    assert torch.equal(direct, classifier.head(features).argmax(1))
    assert history[-1]["val_accuracy"] == pytest.approx(lagani.evaluate(classifier, data.test), abs=1e-9)


def test_layer_features_yield_each_requested_layer(data):
    net = LaganiNet(width=WIDTH).eval()
    got = dict(layer_features(net, data.test, (2, 4), batch_size=7))
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
        PretrainConfig(temperature=0)
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
    best = reproduce.best_per_regime(table)
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
    assert len(results) == 2 * 2 * 2 and set(results["method"]) == {"hpca", "vae"}
    assert results["val_accuracy"].between(0, 100).all() and "test_accuracy" in results
    assert len(results.loc[0, "history"]) == TINY.finetune.epochs
    table = write_outputs(results, tmp_path / "out")
    assert table.shape == (4, 2 * 5)
    for name in ("results.jsonl", "table1.csv", "table1.md", "convergence.csv", "convergence_all.csv",
                 "table1_heatmap.png", "convergence.png"):
        assert (tmp_path / "out" / name).stat().st_size > 0
    hebbian = pd.read_csv(tmp_path / "out" / "convergence.csv")
    assert set(hebbian["layer"]) == set(lagani.LAYERS) and set(hebbian["method"]) == {"hpca"}
    pd.testing.assert_frame_equal(results.attrs["hebbian_convergence"], hebbian)
    curves = reproduce.convergence_data(results)
    assert set(curves["curve"]) == {"sgd", "hebbian"} and set(curves[curves["curve"] == "sgd"]["regime"]) == {50.0}
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 2


def test_interrupted_run_resumes_without_recomputing_and_gives_the_same_table(data, tmp_path, monkeypatch):
    preset = replace(TINY, probe_val=0)  # every train_head call is then one (method, regime, layer) entry
    reference = run_experiment(preset, data=data, out=tmp_path / "ref", cache=None, progress=False)
    calls = []
    original = lagani.train_head

    def interrupted(*args, **kwargs):
        if len(calls) == 5:
            raise KeyboardInterrupt
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(lagani, "train_head", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(preset, data=data, out=tmp_path / "run", cache=tmp_path / "cache", progress=False)
    assert len((tmp_path / "run" / "results.jsonl").read_text().splitlines()) == 5
    calls.clear()
    monkeypatch.setattr(lagani, "train_head", lambda *a, **k: (calls.append(1), original(*a, **k))[1])
    resumed = run_experiment(preset, data=data, out=tmp_path / "run", cache=tmp_path / "cache", progress=False)
    assert len(calls) == 3  # only the unfinished entries
    pd.testing.assert_frame_equal(table1(resumed), table1(reference))
    calls.clear()
    run_experiment(preset, data=data, out=tmp_path / "run", cache=tmp_path / "cache", progress=False)
    assert calls == []


def test_same_seed_gives_identical_numbers_and_other_seeds_differ(data, tmp_path):
    preset = replace(TINY, methods=("softwta",), probe_val=0)
    first = run_experiment(preset, data=data, cache=None, progress=False)
    second = run_experiment(preset, data=data, cache=None, progress=False)
    assert first["val_accuracy"].tolist() == second["val_accuracy"].tolist()
    assert first["history"].tolist() == second["history"].tolist()
    both = run_experiment(preset, data=data, seeds=2, cache=None, progress=False)
    assert both[both["seed"] == 0]["val_accuracy"].tolist() == first["val_accuracy"].tolist()
    assert both[both["seed"] == 1]["history"].tolist() != first["history"].tolist()


def test_random_network_has_standardised_features(data):
    net = pretrain("random", data.train, PretrainConfig(batch_size=50), width=WIDTH, progress=False)
    torch.manual_seed(0)
    assert states_equal(net.blocks[0].layer, LaganiNet(width=WIDTH).blocks[0].layer)  # weights untouched
    with torch.no_grad():
        features = net.features(data.train.float(), 5)
    assert features.mean().abs() < 0.05 and (features.var(0).mean() - 1).abs() < 0.05


def test_supervised_and_random_baselines(data):
    preset = replace(TINY, methods=("random", "supervised"), regimes=(50.0,), layers=(1,), probe_val=0)
    results = run_experiment(preset, data=data, cache=None, progress=False).set_index("method")
    assert len(results) == 2 and results["val_accuracy"].between(0, 100).all()


def test_cli_runs_the_smoke_preset(tmp_path, capsys):
    synthetic = synthetic_cifar10(150, 20, seed=1)
    path = tmp_path / "tiny.npz"
    np.savez(path, x_train=synthetic.train.images.permute(0, 2, 3, 1).numpy(), y_train=synthetic.train.labels.numpy())
    code = main(["reproduce", "--preset", "smoke", "--methods", "hpca", "--regimes", "50", "--layers", "1",
                 "--data", str(path), "--out", str(tmp_path / "out"), "--cache", "none", "--no-progress"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "| 50% HPCA |" in printed and (tmp_path / "out" / "table1.md").exists()
