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

from hebbkit.cli import main
from hebbkit.data import CIFAR10_CLASSES, Dataset, ImageSet, load_data, synthetic_images
from hebbkit.lagani import PRESETS, LaganiNet, VAE, experiment, run_experiment, write_outputs
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
    key = experiment.results_key(preset, data)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with ResultStore(tmp_path) as store:  # a claim as another live process on this host holds it
            store._db.execute("INSERT INTO claims VALUES (?, ?, ?)",
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


def test_the_cache_key_holds_the_pretraining_code_version(data, tmp_path, monkeypatch):
    _cached_run(data, tmp_path)
    monkeypatch.setattr(experiment, "pretrain_code_version", lambda: "edited-code")
    _cached_run(data, tmp_path)
    assert len(list(tmp_path.glob("hpca-*.pt"))) == 2  # weights from other code are not reused


def test_the_code_version_covers_the_rules():
    from hebbkit import rules

    assert rules in experiment.PRETRAIN_CODE and len(experiment.pretrain_code_version()) == 12


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
    assert "synthetic validation accuracy" in (tmp_path / "table1.md").read_text()


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
