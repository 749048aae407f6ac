"""Units of work (method, seed) through launchers: inline, submitit's local executor (two units in parallel),
a SLURM job array (submitted to a fake sbatch); a worker killed with -9; the grid's status; a full disk."""

import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import cloudpickle
import numpy as np
import pytest
import torch

from hebbkit import cli, launch
from hebbkit.cli import main
from hebbkit.data import synthetic_images
from hebbkit.lagani import PRESETS, experiment, run_experiment
from hebbkit.lagani.experiment import CacheWarning, format_status, grid_status, run_unit
from hebbkit.launch import LaunchConfig, Launcher
from hebbkit.store import STORE_FILE, ResultStore

SMALL = replace(PRESETS["smoke"], methods=("hpca", "supervised"), regimes=(50.0,), layers=(1, 2), probe_val=0)
CELLS = {(method, 50.0, layer, 0) for method in SMALL.methods for layer in (1, 2)}
HOW = {"seconds", "cpu_seconds", "threads", "worker"}  # how a record was made, not what it says

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data():
    return synthetic_images(200, 30, seed=0)


def _content(records) -> dict:
    return {(r["method"], r["regime"], r["layer"], r["seed"]): {k: v for k, v in r.items() if k not in HOW}
            for r in records.to_dict("records")}


@pytest.fixture(scope="module")
def inline(data, tmp_path_factory):
    """The reference: every unit run in this process."""
    torch.set_num_threads(1)
    return run_experiment(SMALL, data=data, out=tmp_path_factory.mktemp("inline"), cache=None, progress=False)


def test_the_launcher_choices_are_the_modules_own():
    assert cli.LAUNCHERS == launch.KINDS
    with pytest.raises(ValueError, match="launcher must be one of inline, local, slurm, got 'ray'"):
        LaunchConfig(kind="ray")
    with pytest.raises(ValueError, match="parallel must be an integer >= 1"):
        LaunchConfig(kind="local", parallel=0)


def test_a_unit_is_a_plain_function_that_touches_no_store(data, inline, tmp_path):
    records, rows = run_unit(SMALL, "supervised", 0, data, [(50.0, 2)], device="cpu")
    assert rows == [] and len(records) == 1 and records[0]["worker"] == f"{socket.gethostname()}:{os.getpid()}"
    assert list(tmp_path.iterdir()) == []
    expected = _content(inline.records)[("supervised", 50.0, 2, 0)]
    assert {k: v for k, v in records[0].items() if k not in HOW} == {
        k: v for k, v in expected.items() if k not in {"settings", "preset", "dataset", "cifar10"}}


def test_two_units_in_parallel_on_the_local_executor_give_the_inline_records(data, inline, tmp_path):
    assert len(inline.records) == len(CELLS)
    results = run_experiment(SMALL, data=data, out=tmp_path, cache=None, progress=False,
                             launcher=LaunchConfig(kind="local", parallel=2), threads=1)
    assert results.failed == ()
    assert _content(results.records) == _content(inline.records)  # the same numbers, to the last bit
    workers = {r["method"]: r["worker"] for r in results.records.to_dict("records")}
    assert len(set(workers.values())) == 2 and f"{socket.gethostname()}:{os.getpid()}" not in workers.values()
    assert len(list((tmp_path / "launch").glob("*_result.pkl"))) == 2  # submitit's two jobs
    with ResultStore(tmp_path) as store:
        assert store.claims() == {}  # all released


class KillsItself:
    """``run_unit``, except that the worker of ``victim`` kills itself with SIGKILL (kill -9) first."""

    def __init__(self, victim: str) -> None:
        self.victim = victim

    def __call__(self, preset, method, *args, **kwargs):
        if method == self.victim:
            os.kill(os.getpid(), signal.SIGKILL)
        return experiment.run_unit(preset, method, *args, **kwargs)


class Sabotaged(Launcher):
    def submit(self, fn, calls):
        return super().submit(KillsItself("hpca"), calls)


def test_a_worker_killed_with_minus_9_loses_and_duplicates_nothing_on_resume(data, inline, tmp_path):
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import this test module
    try:
        launcher = Sabotaged(LaunchConfig(kind="local", parallel=2), tmp_path / "launch")
        results = run_experiment(SMALL, data=data, out=tmp_path, cache=None, progress=False, launcher=launcher,
                                 threads=1)
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    (failure,) = results.failed
    assert failure.startswith("hpca seed 0: local job ") and "\n" not in failure
    assert "failed (it ended without a result: killed, or out of memory or time); its log: " in failure
    assert {r["method"] for r in results.records.to_dict("records")} == {"supervised"}  # the other unit is kept
    with ResultStore(tmp_path) as store:
        assert store.claims() == {}  # the dead worker's unit is free again
    resumed = run_experiment(SMALL, data=data, out=tmp_path, cache=None, progress=False,
                             launcher=LaunchConfig(kind="local", parallel=2), threads=1)
    assert resumed.failed == ()
    with ResultStore(tmp_path) as store:
        records = store.records()
    assert len(records) == len(CELLS)  # nothing duplicated, nothing lost
    assert _content(resumed.records) == _content(inline.records)


def test_the_cli_exits_1_naming_a_failed_unit_and_keeps_the_others(data, tmp_path, capsys, monkeypatch):
    def failing(self, job):
        raise launch.UnitFailed(f"{job.worker} failed (KilledBySignal); its log: /x.err")

    monkeypatch.setattr(Launcher, "result", failing)
    npz = _npz(data, tmp_path)
    status = main(["reproduce", "--preset", "smoke", "--methods", "random", "--layers", "1", "--regimes", "50",
                   "--data", str(npz), "--out", str(tmp_path / "out"), "--cache", "none"])
    err = capsys.readouterr().err
    assert status == 1 and "random seed 0: this process failed (KilledBySignal); its log: /x.err" in err


# --------------------------------------------------------------------------------------------- SLURM


FAKE_SBATCH = """#!/bin/sh
# a stand-in for SLURM's sbatch: keep the script and the arguments, answer like sbatch
for last; do :; done
cp "$last" "{record}/script.sh"
echo "$@" > "{record}/args"
echo "Submitted batch job 4242"
"""


def test_slurm_submits_one_job_array_one_unit_per_task_with_a_gpu_each(data, tmp_path, monkeypatch):
    bin_dir, record = tmp_path / "bin", tmp_path / "record"
    bin_dir.mkdir()
    record.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    if shutil.which("sbatch") is None:
        with pytest.raises(ValueError, match="--launcher slurm needs SLURM's sbatch and srun on PATH"):
            Launcher(LaunchConfig(kind="slurm"), tmp_path / "launch")
    for name, text in (("sbatch", FAKE_SBATCH.format(record=record)), ("srun", "#!/bin/sh\nexit 1\n")):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod((bin_dir / name).stat().st_mode | stat.S_IEXEC)
    config = LaunchConfig(kind="slurm", parallel=3, time_min=90, partition="gpu", gpus_per_task=1, cpus_per_task=8)
    launcher = Launcher(config, tmp_path / "launch")
    calls = [((method, 0), (SMALL, method, 0, "/data/mnist.npz", ((50.0, 1),)), {"device": "auto"})
             for method in ("hpca", "softwta", "vae")]
    jobs = launcher.submit(run_unit, calls)
    assert [job.worker for job in jobs] == ["slurm job 4242_0", "slurm job 4242_1", "slurm job 4242_2"]
    assert [job.tag for job in jobs] == [("hpca", 0), ("softwta", 0), ("vae", 0)]
    script = (record / "script.sh").read_text()
    for line in ("#SBATCH --array=0-2%3", "#SBATCH --gres=gpu:1", "#SBATCH --partition=gpu", "#SBATCH --time=90",
                 "#SBATCH --cpus-per-task=8", "#SBATCH --ntasks-per-node=1", "#SBATCH --nodes=1"):
        assert line in script
    assert "submitit.core._submit" in script
    assert launcher.capacity >= 20  # the whole paper grid goes out as one array
    pickles = sorted((tmp_path / "launch").glob("*_submitted.pkl"))
    assert len(pickles) == 3
    submitted = [cloudpickle.loads(path.read_bytes()) for path in pickles]
    assert {s.args[1] for s in submitted} == {"hpca", "softwta", "vae"}
    assert all(s.function is run_unit and s.args[3] == "/data/mnist.npz" for s in submitted)


# --------------------------------------------------------------------------------------------- status


def _npz(data, folder: Path) -> Path:
    path = folder / "images.npz"
    np.savez(path, x_train=data.train.images.permute(0, 2, 3, 1).numpy(), y_train=data.train.labels.numpy(),
             x_test=data.test.images.permute(0, 2, 3, 1).numpy(), y_test=data.test.labels.numpy())
    return path


def test_status_lists_done_running_by_whom_since_when_and_missing(data, tmp_path, capsys):
    npz, out = _npz(data, tmp_path), tmp_path / "out"
    preset = replace(PRESETS["smoke"], methods=("hpca", "supervised", "random", "vae"), regimes=(50.0,), layers=(1, 2))
    args = ["reproduce", "--preset", "smoke", "--methods", "hpca", "supervised", "random", "vae", "--regimes", "50",
            "--layers", "1", "2", "--data", str(npz), "--out", str(out)]
    assert main([*args, "--status"]) == 0  # nothing stored yet: all missing, and no store made
    assert capsys.readouterr().out.splitlines()[-1] == "0 done, 0 running, 4 missing"
    assert not (out / STORE_FILE).exists()
    assert main([*args[:4], "random", *args[8:], "--cache", "none"]) == 0  # one unit done
    capsys.readouterr()
    loaded = experiment.load_data(npz)
    key = {method: experiment.results_key(preset, method, loaded) for method in preset.methods}
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with ResultStore(out) as store:
            owner = f"{socket.gethostname()}:{sleeper.pid}"
            store._db.execute("INSERT INTO claims VALUES (?, ?, ?, ?, ?)",
                              (f"hpca/seed0/{key['hpca']}", owner, time.time() - 5, 1_800_000_000.0, "local job 77"))
            store._db.execute("INSERT INTO claims VALUES (?, ?, ?, ?, ?)",
                              (f"vae/seed0/{key['vae']}", "elsewhere:3", time.time() - 3600, 1_700_000_000.0, None))
        assert main([*args, "--status"]) == 0
    finally:
        sleeper.kill()
        sleeper.wait()
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{out}: 4 units (method, seed)"
    by_method = {line.split()[0]: line for line in lines[1:-1]}
    assert by_method["random"].split()[3:5] == ["done", "2/2"]
    assert by_method["supervised"].split()[3:5] == ["missing", "0/2"]
    assert by_method["hpca"].split()[3:5] == ["running", "0/2"]
    assert f"by {owner} (local job 77) since 2027-01-15 08:00:00 UTC, heartbeat 5 s ago" in by_method["hpca"]
    assert by_method["vae"].split()[3] == "missing" and "stale claim by elsewhere:3" in by_method["vae"]
    assert lines[-1] == "1 done, 1 running, 2 missing"
    rows = grid_status(preset, loaded, out)
    assert [row["state"] for row in rows] == ["missing", "missing", "done", "missing"]  # the sleeper is gone
    assert format_status(rows, out).splitlines()[-1] == "1 done, 0 running, 3 missing"


# ------------------------------------------------------------------------------------ faults in one line


def test_a_cache_that_cannot_be_saved_is_one_warning_naming_the_file_and_the_run_goes_on(data, inline, tmp_path,
                                                                                         monkeypatch):
    def full_disk(obj, path):
        Path(path).write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(experiment.torch, "save", full_disk)
    with pytest.warns(CacheWarning) as caught:
        results = run_experiment(SMALL, data=data, cache=tmp_path, progress=False)
    messages = sorted(str(w.message) for w in caught)
    assert len(messages) == 2  # one per unit (hpca, supervised)
    for method, message in zip(("hpca", "supervised"), messages):
        assert message.startswith(f"cached network {tmp_path / method}-seed0-") and "\n" not in message
        assert message.endswith(".pt could not be saved (No space left on device); going on without it")
    assert _content(results.records) == _content(inline.records)
    assert list(tmp_path.iterdir()) == []  # no partial file left behind


def test_a_store_that_cannot_be_opened_is_one_line_and_exit_2(data, tmp_path, capsys):
    npz = _npz(data, tmp_path)
    (tmp_path / "out" / STORE_FILE).mkdir(parents=True)
    status = main(["reproduce", "--preset", "smoke", "--methods", "random", "--layers", "1", "--data", str(npz),
                   "--out", str(tmp_path / "out"), "--cache", "none"])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1
    assert err.startswith(f"hebbkit reproduce: error: {tmp_path / 'out' / STORE_FILE} is a folder")


def test_a_disk_full_mid_run_is_one_line_naming_the_store_not_the_cleanup(data, tmp_path, capsys, monkeypatch):
    import sqlite3

    from hebbkit import store as store_module

    def full(self, record):
        raise sqlite3.OperationalError("database or disk is full")

    def no_room(obj, path):
        raise RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed")

    npz = _npz(data, tmp_path)
    monkeypatch.setattr(store_module.ResultStore, "_insert", full)
    monkeypatch.setattr(experiment.torch, "save", no_room)
    with pytest.warns(CacheWarning, match="could not be saved \\(PytorchStreamWriter failed writing file"):
        status = main(["reproduce", "--preset", "smoke", "--methods", "supervised", "--layers", "1", "--data",
                       str(npz), "--out", str(tmp_path / "out"), "--cache", str(tmp_path / "cache")])
    err = capsys.readouterr().err.splitlines()
    assert status == 2 and err == [f"hebbkit reproduce: error: {tmp_path / 'out' / STORE_FILE} cannot be written: "
                                   f"the disk is full (database or disk is full); free some space and run again "
                                   f"(stored results are kept)"]
    with ResultStore(tmp_path / "out") as store:
        assert store.claims() == {}  # released on the way out
