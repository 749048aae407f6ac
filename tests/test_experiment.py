"""The experiment layer around Lagani's pipeline: shared results store, checked weight cache, output paths
checked before work, and networks whose sizes follow the data."""

import os
import pickle
import shlex
import subprocess
import sys
import textwrap
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from hebbkit import lagani
from hebbkit.cli import main
from hebbkit.data import CIFAR10_CLASSES, Dataset, ImageSet, load_data, synthetic_images
from hebbkit.lagani import PRESETS, LaganiNet, VAE, experiment, run_experiment, write_outputs
from hebbkit.lagani import methods as lagani_methods
from hebbkit.lagani.experiment import CacheWarning
from hebbkit.store import ResultStore

WIDTH = 0.125
SMALL = replace(PRESETS["smoke"], methods=("hpca", "supervised"), regimes=(50.0,), layers=(1, 2), probe_val=0)


pytestmark = pytest.mark.usefixtures("one_thread")  # identical numbers whatever the machine's core count


@pytest.fixture(scope="module")
def data():
    return synthetic_images(200, 30, seed=0)


# ------------------------------------------------------------------------------------- shared store


WORKER = textwrap.dedent("""
    import sys, torch
    from dataclasses import replace
    torch.set_num_threads(1)
    from hebbkit.data import CIFAR10_CLASSES, Dataset, ImageSet, load_data, synthetic_images
    from hebbkit.lagani import PRESETS, run_experiment
    preset = replace(PRESETS["smoke"], methods=("hpca", "supervised", "vae"), regimes=(50.0,), layers=(1, 2),
                     probe_val=0)
    run_experiment(preset, data=synthetic_images(200, 30, seed=0), out=sys.argv[1], cache=None, progress=False)
""")


def test_two_processes_share_one_grid_without_losing_or_duplicating_a_cell(tmp_path):
    out = tmp_path / "shared"
    workers = [subprocess.Popen([sys.executable, "-c", WORKER, str(out)], env={**os.environ, "OMP_NUM_THREADS": "1"})
               for _ in range(2)]
    assert [worker.wait(timeout=300) for worker in workers] == [0, 0]
    with ResultStore(out) as store:
        records = store.records()
    cells = {(r["method"], r["regime"], r["layer"], r["seed"]) for r in records}
    assert len(records) == len(cells) == 3 * 2  # every cell once
    for method in ("hpca", "supervised", "vae"):  # each (method, seed) pre-trained and fine-tuned by one process
        assert len({r["worker"] for r in records if r["method"] == method}) == 1


def test_a_grid_claimed_by_a_live_process_is_left_to_it(data, tmp_path):
    preset = replace(SMALL, methods=("supervised",))
    key = experiment.results_key(preset, "supervised", data)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with ResultStore(tmp_path) as store:  # a claim as another live process on this host holds it
            store._db.execute("INSERT INTO claims (unit, owner, refreshed) VALUES (?, ?, ?)",
                              (f"supervised/seed0/{key}", f"{store.owner.rpartition(':')[0]}:{sleeper.pid}", 1e12))
        results = run_experiment(preset, data=data, out=tmp_path, cache=None, progress=False)
        assert results.records.empty
    finally:
        sleeper.kill()
        sleeper.wait()
    results = run_experiment(preset, data=data, out=tmp_path, cache=None, progress=False)  # its owner is gone
    assert len(results.records) == 2


# -------------------------------------------------------------------------------------- weight cache


def _cached_run(data, cache):
    return run_experiment(replace(SMALL, methods=("hpca",)), data=data, cache=cache, progress=False).records


def test_a_cached_network_with_a_nan_is_recomputed_not_used(data, tmp_path):
    first = _cached_run(data, tmp_path)
    (path,) = tmp_path.glob("hpca-*.pt")
    saved = torch.load(path, weights_only=True)
    saved["state"]["blocks.0.layer.weight"][0, 0, 0, 0] = float("nan")
    torch.save(saved, path)
    with pytest.warns(CacheWarning, match=rf"{path}.*non-finite.*blocks\.0\.layer\.weight.*recomputing"):
        again = _cached_run(data, tmp_path)
    assert again["val_accuracy"].tolist() == first["val_accuracy"].tolist()
    assert torch.isfinite(torch.load(path, weights_only=True)["state"]["blocks.0.layer.weight"]).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheWarning)  # the rewritten file is used without complaint
        assert _cached_run(data, tmp_path)["val_accuracy"].tolist() == first["val_accuracy"].tolist()


@pytest.mark.parametrize("damage", ["empty", "truncated", "random", "other network"])
def test_an_unreadable_cache_file_is_named_and_recomputed(data, tmp_path, damage):
    first = _cached_run(data, tmp_path)
    (path,) = tmp_path.glob("hpca-*.pt")
    content = path.read_bytes()
    if damage == "other network":
        torch.save({"state": LaganiNet(width=0.25).state_dict(), "convergence": []}, path)
    else:
        path.write_bytes({"empty": b"", "truncated": content[: len(content) // 2],
                          "random": np.random.default_rng(0).bytes(4096)}[damage])
    with pytest.warns(CacheWarning, match=rf"{path} cannot be read as this network's weights"):
        again = _cached_run(data, tmp_path)
    assert again["val_accuracy"].tolist() == first["val_accuracy"].tolist()


class Payload:
    """Unpickling it runs ``touch MARKER``: what a hostile file in the weight cache would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


HOSTILE = {
    "zip .pt": lambda path, marker: torch.save({"state": Payload(marker), "convergence": []}, path),
    "legacy .pt": lambda path, marker: torch.save({"state": Payload(marker), "convergence": []}, path,
                                                  _use_new_zipfile_serialization=False),
    "raw pickle": lambda path, marker: path.write_bytes(pickle.dumps({"state": Payload(marker), "convergence": []})),
}


def test_the_hostile_cache_files_are_live():
    """Loading each file unsafely (``torch.load(weights_only=False)``, ``pickle.load`` for the raw pickle, which torch
    refuses as a bad magic number), in a child process, runs its payload: so the test below would fail if the weight
    cache unpickled them."""
    script = textwrap.dedent("""
        import pickle, tempfile, torch
        from pathlib import Path
        from tests.test_experiment import HOSTILE
        with tempfile.TemporaryDirectory() as name:
            folder = Path(name)
            for index, (kind, make) in enumerate(HOSTILE.items()):
                make(folder / f"{index}.pt", folder / f"ran-{index}")
                if kind == "raw pickle":
                    pickle.loads((folder / f"{index}.pt").read_bytes())
                else:
                    torch.load(folder / f"{index}.pt", weights_only=False)
            print(sorted(path.name for path in folder.glob("ran-*")))
    """)
    ran = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1]).stdout
    assert ran.strip() == str([f"ran-{index}" for index in range(len(HOSTILE))])


@pytest.mark.parametrize("kind", HOSTILE)
def test_a_hostile_pickle_in_the_weight_cache_runs_nothing(data, tmp_path, kind):
    cache, marker = tmp_path / "cache", tmp_path / "payload-ran"
    first = _cached_run(data, cache)
    (path,) = cache.glob("hpca-*.pt")
    HOSTILE[kind](path, marker)
    with pytest.warns(CacheWarning, match=rf"{path} cannot be read as this network's weights"):
        again = _cached_run(data, cache)
    assert not marker.exists()
    assert again["val_accuracy"].tolist() == first["val_accuracy"].tolist()  # recomputed, and cached anew
    assert set(torch.load(path, weights_only=True)) == {"state", "convergence"}


def _stored(out):
    with ResultStore(out) as store:
        return {(r["method"], r["regime"], r["layer"], r["seed"], r["settings"]) for r in store.records()}


def test_one_methods_settings_leave_every_other_methods_results_and_networks_valid(data, tmp_path, monkeypatch):
    preset = replace(SMALL, methods=("hpca", "softwta", "vae"))
    run_experiment(preset, data=data, out=tmp_path / "out", cache=tmp_path / "cache", progress=False)
    before, networks = _stored(tmp_path / "out"), sorted(p.name for p in (tmp_path / "cache").glob("*.pt"))
    warmer = replace(preset, configs={**preset.configs, "softwta": replace(preset.config("softwta"), temperature=0.5)})
    pretrained = []
    monkeypatch.setattr(experiment, "pretrain", lambda method, *a, **k: pretrained.append(method) or
                        lagani.pretrain(method, *a, **k))
    run_experiment(warmer, data=data, out=tmp_path / "out", cache=tmp_path / "cache", progress=False)
    after = _stored(tmp_path / "out")
    assert pretrained == ["softwta"]  # the other networks came from the cache, their cells from the store
    assert before < after and {r for r in after - before if r[0] != "softwta"} == set()
    assert len(after - before) == 2  # softwta's two cells, under a new key beside the old ones
    assert set(networks) < {p.name for p in (tmp_path / "cache").glob("*.pt")}


def test_adding_a_method_or_raising_one_revision_changes_no_other_key(data, monkeypatch):
    preset = replace(SMALL, methods=("hpca", "vae"))
    keys = {method: experiment.results_key(preset, method, data) for method in lagani.METHODS}
    registry = dict(lagani.METHODS)
    registry["hpca"] = replace(registry["hpca"], revision=2)
    registry["hpca2"] = replace(registry["hpca"], name="hpca2", display="HPCA 2")
    monkeypatch.setattr(lagani_methods, "METHODS", registry)
    assert experiment.results_key(preset, "hpca", data) != keys["hpca"]
    assert {m: experiment.results_key(preset, m, data) for m in keys if m != "hpca"} == {
        m: key for m, key in keys.items() if m != "hpca"}


def test_records_under_the_protocol_3_key_move_to_each_methods_key_without_recomputing(data, tmp_path, monkeypatch):
    preset = replace(SMALL, methods=("hpca", "supervised"))
    old = experiment.legacy_results_key(preset, data)
    rows = [{"method": m, "regime": r, "layer": l, "seed": 0, "settings": old, "val_accuracy": 50.0 + l,
             "history": []} for m in preset.methods for r in preset.regimes for l in preset.layers]
    with ResultStore(tmp_path) as store:
        for row in rows:
            store.put(row)
        store.put_curves(old, [{"curve": "hebbian", "method": "hpca", "seed": 0, "layer": 1, "epoch": 0.0,
                                "val_accuracy": 30.0}])
    monkeypatch.setattr(experiment, "pretrained", lambda *a, **k: pytest.fail("recomputed a migrated cell"))
    results = run_experiment(preset, data=data, out=tmp_path, cache=None, progress=False)
    assert len(results.records) == len(rows) and (results.records["val_accuracy"] > 50).all()
    assert set(results.records["settings"]) == {experiment.results_key(preset, m, data) for m in preset.methods}
    assert results.curves["settings"].tolist() == [experiment.results_key(preset, "hpca", data)]
    with ResultStore(tmp_path) as store:
        assert store.done(old) == set() and store.rekey(old, "hpca", "anything") == 0  # idempotent


def test_the_committed_quick_run_is_under_the_current_keys():
    """No committed result is orphaned: every record of results/quick is found under the quick preset's key (the
    preset's methods, and methods added later to the same store with `--methods`)."""
    from hebbkit.data import load_data
    source = os.environ.get("HEBBKIT_DATA")
    if not source or not os.path.exists(source):
        pytest.skip("needs CIFAR-10 ($HEBBKIT_DATA) for the data's fingerprint")
    preset, cifar10 = PRESETS["quick"], load_data(source)
    with ResultStore(Path(__file__).resolve().parents[1] / "results" / "quick") as store:
        stored = {(r["method"], r["settings"]) for r in store.records()}
    methods = {method for method, _ in stored}
    assert set(preset.methods) <= methods
    assert stored == {(m, experiment.results_key(preset, m, cifar10)) for m in methods}


# ------------------------------------------------------------------------------- paths, before work


@pytest.mark.parametrize("option", ["--out", "--cache", "--figures"])
def test_an_output_path_that_is_a_file_fails_before_any_work(tmp_path, capsys, monkeypatch, option):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setattr(experiment, "load_data", lambda *a, **k: pytest.fail("data read before the paths"))
    args = {"--out": str(tmp_path / "out"), "--cache": "none", "--figures": str(tmp_path / "figures")}
    args[option] = str(blocker / "below") if option == "--cache" else str(blocker)
    argv = ["reproduce", "--preset", "smoke", "--no-progress", *[x for pair in args.items() for x in pair]]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"hebbkit reproduce: error: {option}" in err and str(blocker) in err and "Traceback" not in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into read-only folders")
def test_a_read_only_output_folder_fails_before_any_work(tmp_path, capsys, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    monkeypatch.setattr(experiment, "load_data", lambda *a, **k: pytest.fail("data read before the paths"))
    assert main(["reproduce", "--preset", "smoke", "--out", str(locked), "--cache", "none"]) == 2
    assert "cannot be written" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["workbook", "figures"])
def test_workbook_and_figures_check_their_output_folder_first(tmp_path, capsys, command):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert main([command, "--out", str(blocker)]) == 2
    err = capsys.readouterr().err
    assert f"hebbkit {command}: error: --out must be a folder, but {blocker} is a file" in err
    assert blocker.read_text() == "not a folder"


# --------------------------------------------------------------------------- networks from the data


@pytest.mark.parametrize("shape", [(3, 32, 32), (1, 28, 28), (3, 27, 31), (2, 24, 24)])
def test_the_network_and_the_vae_follow_the_input_shape(shape):
    net = LaganiNet(input_shape=shape, num_classes=7, width=WIDTH).eval()
    x = torch.randn(4, *shape)
    assert net(x).shape == (4, 7)
    for layer, size in enumerate(net.feature_dims, start=1):
        assert net.features(x, layer).shape == (4, size)
    reconstruction, mean, _ = VAE(net, latent_dim=3).eval()(x)
    assert reconstruction.shape == x.shape and mean.shape == (4, 3)


def test_images_too_small_for_the_network_are_named():
    with pytest.raises(ValueError, match="20×20 pixels are too small.*at least 24×24"):
        LaganiNet(input_shape=(3, 20, 20))


def test_a_one_channel_dataset_runs_through_the_experiment(tmp_path):
    mnist_like = synthetic_images(150, 20, channels=1, size=28, num_classes=4, seed=1)
    preset = replace(SMALL, methods=("hpca", "softwta", "vae", "supervised"))
    results = run_experiment(preset, data=mnist_like, out=tmp_path, cache=None, progress=False)
    assert len(results.records) == 4 * 2 and not results.cifar10
    table = write_outputs(results, tmp_path)
    assert table.xs("paper", axis=1, level=1).isna().all().all()  # the paper's CIFAR-10 values do not apply
    assert "synthetic test accuracy" in (tmp_path / "table1.md").read_text()  # the paper reports test accuracy


def test_reproduce_runs_on_a_folder_of_grayscale_pngs(tmp_path, capsys):
    from PIL import Image

    generated = synthetic_images(120, 0, channels=1, size=28, num_classes=3, seed=2).train
    for index, (image, label) in enumerate(zip(generated.images, generated.labels)):
        folder = tmp_path / "images" / f"class-{int(label)}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image[0].numpy(), mode="L").save(folder / f"{index}.png")
    code = main(["reproduce", "--preset", "smoke", "--methods", "hpca", "--regimes", "50", "--layers", "1",
                 "--data", str(tmp_path / "images"), "--out", str(tmp_path / "out"), "--cache", "none",
                 "--no-progress"])
    assert code == 0
    assert "| 50% HPCA |" in capsys.readouterr().out
    with ResultStore(tmp_path / "out") as store:
        (record,) = store.records()
    assert record["dataset"] == "images" and 0 <= record["val_accuracy"] <= 100


# ------------------------------------------------------------------------------ the smoke preset, any data


def test_the_smoke_preset_caps_the_images_and_reports_each_cell_when_not_on_a_terminal(capsys):
    big = synthetic_images(2_600, 700, seed=1)
    preset = replace(PRESETS["smoke"], methods=("supervised",), regimes=(10.0,), layers=(1,))
    results = run_experiment(preset, data=big, cache=None).records  # progress=None: stderr is not a terminal here
    assert results["num_labelled"].tolist() == [160]  # 10 % of the pool of the first 2,000 images (1,600)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("supervised seed 0, 10 % labels, L1: validation ")
    run_experiment(preset, data=big, cache=None, progress=False)
    assert capsys.readouterr().err == ""


# -------------------------------------------------------------------------------- CIFAR-10 itself


def test_cifar10_shaped_data_is_not_taken_for_cifar10():
    lookalike = ImageSet(torch.zeros(50_000, 3, 32, 32, dtype=torch.uint8), torch.arange(50_000) % 10, CIFAR10_CLASSES,
                         (0.5,) * 3, (0.25,) * 3)  # 50,000 32×32 colour images in CIFAR-10's ten classes
    assert not experiment.is_cifar10(Dataset(lookalike, None))
    assert not experiment.is_cifar10(synthetic_images(200, 0))


def test_cifar10_is_recognised_and_its_subsets_and_relabellings_are_not(cifar_npz):
    data = load_data(cifar_npz)
    assert experiment.is_cifar10(data) and experiment.is_cifar10(Dataset(data.train, None, "renamed"))
    assert not experiment.is_cifar10(Dataset(data.train.subset(slice(0, 1000)), data.test))
    shuffled = data.train.subset(slice(None))
    shuffled.labels = shuffled.labels[torch.randperm(50_000, generator=torch.Generator().manual_seed(0))]
    assert not experiment.is_cifar10(Dataset(shuffled, data.test))
    flipped = data.train.subset(slice(None))
    flipped.images = flipped.images.clone()
    flipped.images[123, 0, 4, 5] ^= 1  # one pixel, one bit
    assert not experiment.is_cifar10(Dataset(flipped, data.test))


def test_a_method_added_later_extends_the_table_without_recomputing(tmp_path, capsys):
    """`--methods random` into a folder that holds HPCA's results: Table 1 shows both; HPCA is not recomputed."""
    synthetic = synthetic_images(150, 20, seed=1)
    path = tmp_path / "tiny.npz"
    np.savez(path, x_train=synthetic.train.images.permute(0, 2, 3, 1).numpy(), y_train=synthetic.train.labels.numpy(),
             x_test=synthetic.test.images.permute(0, 2, 3, 1).numpy(), y_test=synthetic.test.labels.numpy())
    common = ["--regimes", "50", "--layers", "1", "--data", str(path), "--out", str(tmp_path / "out"), "--cache",
              "none", "--no-progress"]
    assert main(["reproduce", "--preset", "smoke", "--methods", "hpca", *common]) == 0
    with ResultStore(tmp_path / "out") as store:
        first = store.records()
    assert main(["reproduce", "--preset", "smoke", "--methods", "random", *common]) == 0
    table = (tmp_path / "out" / "table1.md").read_text()
    assert "| 50% HPCA |" in table and "| 50% random |" in table
    with ResultStore(tmp_path / "out") as store:
        hpca = [r for r in store.records() if r["method"] == "hpca"]
    assert hpca == [r for r in first if r["method"] == "hpca"]  # kept, not recomputed


def test_softhebb_and_krotov_add_their_rows_and_change_no_other_key(data, tmp_path, monkeypatch):
    assert {"softhebb", "krotov"}.isdisjoint(lagani.preset_methods())  # the committed quick table is unchanged
    keys = {method: experiment.results_key(SMALL, method, data) for method in lagani.preset_methods()}
    registry = {name: method for name, method in lagani.METHODS.items() if name not in ("softhebb", "krotov")}
    monkeypatch.setattr(lagani_methods, "METHODS", registry)
    assert {m: experiment.results_key(SMALL, m, data) for m in keys} == keys  # the same keys without them
    monkeypatch.undo()
    preset = replace(SMALL, methods=("hpca", "softhebb", "krotov"),
                     configs={**SMALL.configs, "softhebb": lagani.SoftHebbConfig(batch_size=32),
                              "krotov": lagani.KrotovConfig(batch_size=32)})
    results = run_experiment(preset, data=data, out=tmp_path, cache=None, progress=False)
    assert set(results.records["method"]) == {"hpca", "softhebb", "krotov"}
    assert results.records["val_accuracy"].notna().all()
    assert experiment.results_key(preset, "hpca", data) == keys["hpca"]
