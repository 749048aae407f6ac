"""Lagani's Table 1 as an experiment: presets, the checked weight cache, the shared results store, the loop.

The unit of work is (method, seed), :func:`run_unit`: pre-train the network (or load it from the weight cache,
checked) and fine-tune every (regime, layer) cell asked for; it returns records and convergence rows and
touches no store. :func:`run_experiment` claims each unit not finished in the results store of ``out``, sends
it through a launcher (:mod:`hebbkit.launch`: here, local worker processes, or a SLURM job array) and writes
every finished cell as one record in ``out/results.sqlite`` (:class:`~hebbkit.store.ResultStore`) as results
come back, so an interrupted run resumes, and several processes on one host started with the same arguments
share the grid. :func:`grid_status` says which units are done, running (by whom, since when) or missing.
``hebbkit reproduce`` runs it and writes Table 1.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import itertools
import json
import os
import socket
import sys
import time
import warnings
from contextlib import suppress
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

import pandas as pd
import torch

from ..checks import check_positive, lookup
from ..data import CIFAR10_CLASSES, PROTOCOL_IMAGES, Dataset, ImageSet, check_percent, load_data, split
from ..launch import Job, LaunchConfig, Launcher, UnitFailed
from ..loops import accuracy, block_features, check_precision, place, predict, settle_statistics
from ..store import STORE_FILE, ResultStore, StoreError
from ..utils import atomic_path, check_output_dir, resolve_device
from .finetuning import FinetuneConfig, finetune, train_head
from .net import LaganiNet, check_layer
from .methods import (HPCAConfig, PretrainConfig, SoftWTAConfig, VAEConfig, check_config, check_method, make_method,
                      preset_methods)
from .pretraining import build_net, pretrain
from .table import write_outputs

DEFAULT_CACHE = Path.home() / ".cache" / "hebbkit" / "weights"
PROTOCOL_VERSION = 4  # bump when a change alters every method's results (one method's: its Method.revision)
LEGACY_METHODS = ("hpca", "softwta", "vae", "supervised", "random")  # the methods of protocol 3 (one shared key)
# SHA-256 of CIFAR-10's training set in its official order (torchvision's, and the offline npz's): the 50,000
# images as uint8 (N, C, H, W) bytes, then the labels as uint8 bytes
CIFAR10_TRAIN_DIGEST = "1e91790dbaf241617ca1f29a9aba08eb9a62df84cc90676b47edd05ad2ab3c94"


class CacheWarning(UserWarning):
    """A cached network could not be used and is recomputed, or could not be saved."""


@dataclass(frozen=True, kw_only=True)
class Preset:
    """One experiment's settings: what to run (methods × regimes × layers × seeds) and how.

    ``pretrain``: the pre-training settings every method shares; ``configs``: the settings of the methods that
    depart from their registered ones (:data:`~.methods.METHODS`), by method name. ``select_val``: validation
    images scored after every fine-tuning epoch to keep the best epoch (and to draw the SGD convergence curve);
    ``None`` = all, as the reference does. ``test_images``: the first test images scored (``None`` = all);
    ``max_images``: the first training images used, before the split (``None`` = all), so that a small preset
    stays small on any dataset. The
    Hebbian-convergence probe, ``probe_checkpoints`` times per pre-training epoch: a linear head trained with
    ``probe_head`` on the fixed features of the partly trained network, on ``probe_regime`` % labels, scored on
    ``probe_val`` validation images (0: no probe), after setting BN's statistics on ``probe_statistics`` images.
    ``precision``: of backprop's forward passes — fine-tuning, scoring, VAE pre-training
    (:func:`~hebbkit.loops.autocast`; ``bfloat16`` is about 1.5× faster on a CPU with AMX or a GPU); in the
    results key only when not ``float32``, so float32 keys stay as they were.
    """

    name: str
    methods: tuple[str, ...] = preset_methods()
    regimes: tuple[float, ...]
    layers: tuple[int, ...] = (1, 2, 3, 4, 5)
    seeds: int
    pretrain: PretrainConfig = PretrainConfig()
    configs: dict[str, object] = field(default_factory=dict)
    finetune: FinetuneConfig = FinetuneConfig()
    width: float = 1.0
    select_val: int | None = None
    test_images: int | None = None
    max_images: int | None = None
    probe_regime: float = 10.0
    probe_val: int = 2000
    probe_statistics: int = 2048
    probe_checkpoints: int = 1
    probe_head: FinetuneConfig = FinetuneConfig(epochs=10, decay_from=5, lr=3e-4, frozen=True)
    precision: str = "float32"

    def __post_init__(self) -> None:
        check_precision(self.precision)
        for method in self.methods:
            check_method(method)
        for method, config in self.configs.items():
            check_config(method, config)
        for regime in self.regimes:
            check_percent(regime)
        for layer in self.layers:
            check_layer(layer)
        check_positive("seeds", self.seeds, integer=True)
        check_positive("probe_statistics", self.probe_statistics, integer=True)
        check_positive("probe_checkpoints", self.probe_checkpoints, integer=True)
        for name in ("select_val", "test_images", "max_images"):
            if getattr(self, name) is not None:
                check_positive(name, getattr(self, name), integer=True)
        if not (self.methods and self.regimes and self.layers):
            raise ValueError("methods, regimes and layers must each name at least one entry")

    def config(self, method: str) -> object:
        """``method``'s settings under this preset: its entry in ``configs``, else its registered ones."""
        return self.configs.get(method, make_method(method).config)

    def probes(self, method: str) -> bool:
        """Whether ``method``'s pre-training is probed for convergence (the Hebbian methods, when ``probe_val``)."""
        return bool(self.probe_val) and make_method(method).hebbian

    def grid(self) -> set[tuple[str, float, int, int]]:
        """Every (method, regime, layer, seed) cell the preset runs."""
        return set(itertools.product(self.methods, self.regimes, self.layers, range(self.seeds)))


# The quick preset's Hebbian settings: 1 epoch at 10x the reference's rate, plain BN (see the preset's comment).
_QUICK_HEBBIAN = {"epochs": 1, "lr": 0.1, "modified_bn": False}
PRESETS: dict[str, Preset] = {
    # seconds on any data, for tests, demos and a first try with one's own images (narrow network, at most 2,000
    # training and 500 test images)
    "smoke": Preset(
        name="smoke", regimes=(10.0, 50.0), layers=(1, 3), seeds=1, max_images=2_000, test_images=500,
        pretrain=PretrainConfig(statistics_images=256),
        configs={"hpca": HPCAConfig(epochs=1, batch_size=32, lr=0.05),
                 "softwta": SoftWTAConfig(epochs=1, batch_size=32, lr=0.05),
                 "vae": VAEConfig(epochs=1, batch_size=32)},
        finetune=FinetuneConfig(epochs=2, batch_size=32, decay_from=1),
        width=0.125, probe_regime=50.0, probe_val=40,
    ),
    # CPU-sized (about 1 h on 2 cores). Departs from the reference in the same way for every method: the network
    # at half width (48, 64, 96, 128 channels, 2048 units: a quarter of the arithmetic); pre-training 1 epoch
    # instead of 20 (Hebbian and VAE alike) at 10x the reference's rate for the Hebbian methods (0.1; the VAE
    # keeps 1e-3, as 1e-2 diverged); plain BN instead of the Hebbian nets' modified BN (with it, soft-WTA's few
    # winning units carry nearly all the variance of blocks 3-5 and a short fine-tuning cannot fit even the
    # labelled images); fine-tuning 8 epochs instead of 20 (halved from epoch 4, at least 200 steps for the
    # small subsets) at lr 4e-3 instead of 1e-3, with flips and crops of the labelled images; the best epoch is
    # picked on 1,000 validation images instead of all 10,000, and the first 2,000 test images are scored.
    "quick": Preset(
        name="quick", regimes=(1.0, 5.0, 10.0), seeds=1,
        configs={"hpca": HPCAConfig(**_QUICK_HEBBIAN), "softwta": SoftWTAConfig(**_QUICK_HEBBIAN),
                 "vae": VAEConfig(epochs=1, lr=1e-3)},
        finetune=FinetuneConfig(epochs=8, decay_from=4, lr=4e-3, augment=True, min_steps=200),
        width=0.5, select_val=1000, test_images=2000, probe_regime=2.0, probe_val=1000, probe_checkpoints=4,
    ),
    # the reference protocol (GPU-sized): every method at its registered settings (20 epochs of joint Hebbian
    # training, lr 1e-2, batch 64, best epoch by the Hebbian classifier; 20 VAE epochs), 20 fine-tuning epochs at
    # lr 1e-3 (Nesterov, halved from epoch 10, best validation epoch), 5 data seeds, regimes 1 / 5 / 10 / 100 %
    "paper": Preset(name="paper", regimes=(1.0, 5.0, 10.0, 100.0), seeds=5, probe_checkpoints=4),
}


def get_preset(preset: str | Preset) -> Preset:
    """A preset by name (``smoke``, ``quick``, ``paper``), or the given one."""
    return lookup("preset", preset, PRESETS)


@dataclass(frozen=True)
class Results:
    """What :func:`run_experiment` gives: one record per (method, regime, layer, seed) cell, the Hebbian
    convergence rows, the dataset's name, whether the paper's CIFAR-10 values apply, and the units whose
    workers failed (one line each)."""

    records: pd.DataFrame
    curves: pd.DataFrame
    dataset: str
    cifar10: bool
    failed: tuple[str, ...] = ()


def stored_results(folder: str | Path) -> Results:
    """The :class:`Results` in ``folder``'s store: each method's records and curves under that method's latest
    settings (each method has its own key, so a method re-run with new settings replaces only its own rows)."""
    folder = Path(folder)
    if not (folder / STORE_FILE).is_file():
        raise ValueError(f"no results in {folder / STORE_FILE}; run `hebbkit reproduce --out {folder}` first")
    with ResultStore(folder) as store:
        records = store.records()
        if not records:
            raise ValueError(f"no results in {folder / STORE_FILE}; run `hebbkit reproduce --out {folder}` first")
        latest_key = {record["method"]: record["settings"] for record in records}  # records come oldest first
        latest = pd.DataFrame([r for r in records if r["settings"] == latest_key[r["method"]]])
        curves = store.curves()
    if not curves.empty:
        curves = curves[curves["method"].map(latest_key) == curves["settings"]].reset_index(drop=True)
    if "dataset" not in latest:  # records from before hebbkit knew other datasets
        latest = latest.assign(dataset="CIFAR-10", cifar10=True)
    if latest["dataset"].nunique() > 1:
        raise ValueError(f"{folder / STORE_FILE} mixes datasets ({', '.join(sorted(latest['dataset'].unique()))}); "
                         "keep one dataset per results folder")
    return Results(latest, curves, latest["dataset"].iloc[0], bool(latest["cifar10"].iloc[0]))


def with_stored_methods(results: Results, folder: str | Path) -> Results:
    """``results`` plus the rows of the other methods that earlier runs stored in ``folder`` (on the same data), so
    that adding a method with ``--methods`` extends Table 1 instead of replacing it."""
    stored = stored_results(folder)
    ran = set(results.records["method"])
    others = stored.records[~stored.records["method"].isin(ran) & (stored.records["dataset"] == results.dataset)]
    if others.empty:
        return results
    curves = stored.curves
    curves = curves[curves["method"].isin(set(others["method"]))] if not curves.empty else curves
    return replace(results, records=pd.concat([results.records, others], ignore_index=True),
                   curves=pd.concat([results.curves, curves], ignore_index=True))


@dataclass(frozen=True)
class Cell:
    """One entry of the grid: a method's network of one seed, fine-tuned on ``regime`` % labels from ``layer``."""

    method: str
    seed: int
    regime: float
    layer: int


@dataclass(frozen=True)
class Split:
    """One seed's images: the pool (pre-training; each labelled set is its first images), validation, test."""

    pool: ImageSet
    val: ImageSet
    test: ImageSet | None


def settings_hash(*parts) -> str:
    """A short stable hash of dataclasses / JSON-able values."""
    plain = [asdict(p) if hasattr(p, "__dataclass_fields__") else p for p in parts]
    return hashlib.sha256(json.dumps(plain, sort_keys=True, default=str).encode()).hexdigest()[:12]


def fingerprint(images: ImageSet) -> str:
    """A short digest of a set's size, every 64th-part image and all labels."""
    digest = hashlib.sha256(images.images[:: max(1, len(images) // 64)].numpy().tobytes())
    digest.update(images.labels.numpy().tobytes())
    return f"{len(images)}-{digest.hexdigest()[:12]}"


def labelled_count(regime: float, pool: int) -> int:
    """How many of the pool's first images are labelled in ``regime`` % (at least one)."""
    return max(1, round(check_percent(regime) / 100 * pool))


def is_cifar10(data: Dataset) -> bool:
    """Whether ``data``'s training set is CIFAR-10's, image for image and label for label (and so the paper's
    Table 1 applies): a subset, a relabelled copy or other 32×32 colour images in ten classes are not. Data of
    another size costs nothing; CIFAR-10-sized data one SHA-256 pass (about 0.1 s)."""
    train = data.train
    if (len(train), train.shape, train.num_classes) != (PROTOCOL_IMAGES, (3, 32, 32), len(CIFAR10_CLASSES)):
        return False
    digest = hashlib.sha256(memoryview(train.images.contiguous().numpy()).cast("B"))
    digest.update(train.labels.to(torch.uint8).numpy().tobytes())
    return digest.hexdigest() == CIFAR10_TRAIN_DIGEST


# ------------------------------------------------------------------------------------------ the loop


def run_experiment(
    preset: str | Preset = "quick",
    *,
    data: Dataset | str | Path | None = None,
    methods: tuple[str, ...] | None = None,
    regimes: tuple[float, ...] | None = None,
    layers: tuple[int, ...] | None = None,
    seeds: int | None = None,
    out: str | Path | None = None,
    cache: str | Path | None = DEFAULT_CACHE,
    device: str | torch.device = "auto",
    progress: bool | None = None,
    launcher: LaunchConfig | Launcher | None = None,
    threads: int | None = None,
) -> Results:
    """Run (or resume, or share with other processes) an experiment; return its :class:`Results`.

    ``data``: a :class:`~hebbkit.data.Dataset` or a source for :func:`~hebbkit.data.load_data`.
    ``methods``/``regimes``/``layers``/``seeds`` override the preset's (repeated values count once). With
    ``out``, records go to ``out/results.sqlite`` and finished cells are skipped; ``cache=None`` disables the
    weight cache. Output folders are checked before any work. ``launcher``: where the units (method, seed) run
    (:mod:`hebbkit.launch`; default: here, one after the other); this process alone writes the store, as
    results come back, and a unit whose worker failed is named in ``Results.failed``. ``threads``: torch CPU
    threads in each worker (default, local workers: this host's cores shared among them)."""
    chosen = _choose(get_preset(preset), methods, regimes, layers, seeds)
    out = None if out is None else check_output_dir("out", out)
    cache = None if cache is None else check_output_dir("cache", cache)
    config = launcher.config if isinstance(launcher, Launcher) else launcher or LaunchConfig()
    if config.kind == "slurm":
        resolved, unit_device = None, device  # the parent may run on a node without the tasks' GPUs
    else:
        resolved = resolve_device(device)
        unit_device = resolved if config.kind == "inline" else ("cuda" if resolved.type == "cuda" else resolved.type)
    if not isinstance(launcher, Launcher):
        gpus = torch.cuda.device_count() if resolved is not None and resolved.type == "cuda" else 0
        launcher = Launcher(config, None if out is None else out / "launch", gpus=gpus)
    if config.kind == "local" and threads is None:  # the workers share this host's cores
        threads = max(1, (os.cpu_count() or 1) // launcher.capacity)
    source = data
    data = _capped(data if isinstance(data, Dataset) else load_data(data), chosen)
    if config.kind != "inline" and not isinstance(source, Dataset):  # workers read the data themselves
        source = str(Path(source).resolve()) if source is not None and Path(source).exists() else source
    else:
        source = data
    report = progress is None and not sys.stderr.isatty()  # no progress bars: one line per finished cell
    keys, cifar10 = {method: results_key(chosen, method, data) for method in chosen.methods}, is_cifar10(data)
    expect, failed = fingerprint(data.train), []
    with ResultStore(out) as store, store.heartbeat():
        migrate_legacy_keys(store, chosen, data)

        def keep(method: str, records: list[dict], rows: list[dict]) -> None:
            """Write a unit's results as they come back (only this process writes the store)."""
            if rows:
                store.put_curves(keys[method], rows)
            for record in records:
                if store.put({**record, "settings": keys[method], "preset": chosen.name, "dataset": data.name,
                              "cifar10": cifar10}) and report:
                    print(f"{method} seed {record['seed']}, {record['regime']:g} % labels, L{record['layer']}: "
                          f"validation {record['val_accuracy']:.1f} % ({record['seconds']:.0f} s)",
                          file=sys.stderr, flush=True)

        pending = [(method, seed) for seed in range(chosen.seeds) for method in chosen.methods]
        running: list[Job] = []
        held: set[str] = set()  # the units this process has claimed and not yet released
        try:
            while pending or running:
                calls = []
                while pending and len(running) + len(calls) < launcher.capacity:
                    method, seed = pending.pop(0)
                    done = store.done(keys[method])
                    cells = tuple((regime, layer) for layer in chosen.layers for regime in chosen.regimes
                                  if (method, regime, layer, seed) not in done)
                    unit = f"{method}/seed{seed}/{keys[method]}"
                    if not cells or not store.claim(unit):
                        continue  # finished, or another process works on it
                    held.add(unit)
                    here = config.kind == "inline"  # records are written one by one as the unit makes them
                    calls.append(((method, seed, unit), (chosen, method, seed, source, cells),
                                  {"cache": cache, "device": unit_device, "progress": progress,
                                   "threads": None if here else threads, "expect": expect,
                                   "emit": functools.partial(keep, method) if here else None}))
                for job in launcher.submit(run_unit, calls):
                    running.append(job)
                    if config.kind != "inline":
                        store.claim(job.tag[2], worker=job.worker)
                for job in launcher.wait(running):
                    running.remove(job)
                    method, seed, unit = job.tag
                    try:
                        records, rows = launcher.result(job)
                    except UnitFailed as error:
                        failed.append(f"{method} seed {seed}: {error}")
                        print(f"{method} seed {seed}: {error}", file=sys.stderr, flush=True)
                    else:
                        if config.kind != "inline":
                            keep(method, records, rows)
                    store.release(unit)
                    held.discard(unit)
        except BaseException:
            launcher.cancel(running)
            for unit in held:
                with suppress(StoreError):  # the first error (a full disk, say) is the one to report
                    store.release(unit)
            raise
        wanted = chosen.grid()
        records = [r for method in chosen.methods for r in store.records(keys[method])  # methods may share a key
                   if r["method"] == method and (r["method"], r["regime"], r["layer"], r["seed"]) in wanted]
        curves = [rows[rows["method"] == method] for method in chosen.methods
                  if not (rows := store.curves(keys[method])).empty]
        return Results(pd.DataFrame(records), pd.concat(curves, ignore_index=True) if curves else pd.DataFrame(),
                       data.name, cifar10, tuple(failed))


def run_unit(preset: Preset, method: str, seed: int, data: Dataset | str | Path | None,
             cells: Sequence[tuple[float, int]], *, cache: Path | None = None, device: str | torch.device = "auto",
             progress: bool | None = False, threads: int | None = None, expect: str | None = None,
             emit: Callable[[list[dict], list[dict]], None] | None = None) -> tuple[list[dict], list[dict]]:
    """One unit of work, (``method``, ``seed``): its network pre-trained (or loaded from ``cache``), then
    fine-tuned and scored for each (regime, layer) of ``cells``; return its records and convergence rows.

    It touches no store, so it runs anywhere (in a worker process, on a cluster node): ``data`` is a
    :class:`~hebbkit.data.Dataset` or a source read here (capped to the preset's ``max_images``; ``expect``: the
    fingerprint it must have). ``emit`` (in the parent process) is given the rows after pre-training and each
    record as it is made, so that an interrupted unit keeps its finished cells. Each record names its
    ``worker`` (``host:pid``)."""
    if threads is not None:
        torch.set_num_threads(threads)
    device = resolve_device(device)
    data = _capped(data if isinstance(data, Dataset) else load_data(data), preset)
    if expect is not None and fingerprint(data.train) != expect:
        raise RuntimeError(f"the images of {data.name} differ from those the run started with; run it again")
    images = Split(*split(data.train, seed), data.test)
    net, rows = pretrained(method, seed, images, preset, cache=cache, device=device, progress=progress)
    if emit is not None:
        emit([], rows)
    worker, records = f"{socket.gethostname()}:{os.getpid()}", []
    for regime, layer in cells:
        record = {**finetune_cell(net, Cell(method, seed, regime, layer), images, preset, progress), "worker": worker}
        records.append(record)
        if emit is not None:
            emit([record], [])
    return records, rows


def _capped(data: Dataset, preset: Preset) -> Dataset:
    """``data`` with at most the preset's ``max_images`` training images (the first ones)."""
    if preset.max_images is not None and len(data.train) > preset.max_images:
        return replace(data, train=data.train.subset(slice(0, preset.max_images)))
    return data


def grid_status(preset: Preset, data: Dataset, out: Path) -> list[dict]:
    """Each unit (method, seed) of ``preset`` on ``data`` in ``out``'s store: ``state`` (``done``, ``running``
    or ``missing``), ``cells`` done of ``total``, and the claim on it (``None`` if none), as
    :meth:`~hebbkit.store.ResultStore.claims` gives it. Reads the store (safe while a run writes it)."""
    data = _capped(data, preset)
    keys = {method: results_key(preset, method, data) for method in preset.methods}
    done: dict[str, set] = {method: set() for method in preset.methods}
    claims: dict[str, dict] = {}
    if (out / STORE_FILE).exists():
        with ResultStore(out) as store:
            done = {method: store.done(keys[method]) for method in preset.methods}
            claims = store.claims()
    rows = []
    for seed in range(preset.seeds):
        for method in preset.methods:
            count = sum((method, regime, layer, seed) in done[method] for regime in preset.regimes
                        for layer in preset.layers)
            total, claim = len(preset.regimes) * len(preset.layers), claims.get(f"{method}/seed{seed}/{keys[method]}")
            state = "done" if count == total else "running" if claim is not None and not claim["stale"] else "missing"
            rows.append({"method": method, "seed": seed, "state": state, "cells": count, "total": total,
                         "claim": claim})
    return rows


def format_status(rows: list[dict], out: Path, now: float | None = None) -> str:
    """:func:`grid_status`'s rows as text: one line per unit, then the counts."""
    now = time.time() if now is None else now
    lines = [f"{out}: {len(rows)} units (method, seed)"]
    for row in rows:
        line = f"  {row['method']:<12} seed {row['seed']:<3} {row['state']:<8} {row['cells']}/{row['total']} cells"
        claim = row["claim"]
        if claim is not None and row["state"] != "done":
            who = claim["owner"] + (f" ({claim['worker']})" if claim["worker"] else "")
            since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(claim["since"]))
            beat = f"heartbeat {now - claim['refreshed']:.0f} s ago"
            line += (f"  by {who} since {since}, {beat}" if row["state"] == "running"
                     else f"  (stale claim by {who}, {beat}: the next run takes it over)")
        lines.append(line)
    counts = {state: sum(row["state"] == state for row in rows) for state in ("done", "running", "missing")}
    lines.append(", ".join(f"{count} {state}" for state, count in counts.items()))
    return "\n".join(lines)


def results_key(preset: Preset, method: str, data: Dataset) -> str:
    """The settings key of ``method``'s records and curves under ``preset`` on ``data``: the settings every
    method shares (fine-tuning, shared pre-training, width, scoring sets; the probe's, for a probed method),
    ``method``'s own config and revision, the data's fingerprint and the protocol version. Another method's
    settings are not in it, so changing them, or adding a method, leaves these results valid."""
    return settings_hash(preset.finetune, preset.pretrain, type(preset.config(method)).__name__,
                         preset.config(method), make_method(method).revision, preset.width, preset.select_val,
                         preset.test_images, _probe_settings(preset, method), fingerprint(data.train),
                         PROTOCOL_VERSION, *_precision_setting(preset))


def _precision_setting(preset: Preset) -> tuple[str, ...]:
    """The precision as a key part when it is not float32 (float32 keys predate the setting)."""
    return () if preset.precision == "float32" else (preset.precision,)


def _probe_settings(preset: Preset, method: str) -> list | None:
    """The probe's settings where ``method`` is probed (they shape its convergence rows), else ``None``."""
    if not preset.probes(method):
        return None
    return [preset.probe_regime, preset.probe_val, preset.probe_statistics, preset.probe_checkpoints,
            preset.probe_head]


def legacy_results_key(preset: Preset, data: Dataset) -> str | None:
    """The key under which hebbkit before per-method settings (protocol 3) stored all of ``preset``'s records
    (one key for every method, over one pre-training config that held every method's settings), or ``None``
    when ``preset``'s Hebbian methods do not share the settings that config had room for once."""
    hebbian = [preset.config(method) for method in ("hpca", "softwta")]
    common = {(c.epochs, c.batch_size, c.lr, c.modified_bn) for c in hebbian}
    if len(common) != 1 or hebbian[0].nonlinearity != "relu" or not hebbian[0].fan_in_step or hebbian[1].fan_in_step:
        return None
    (epochs, batch_size, lr, modified_bn), softwta, vae = common.pop(), hebbian[1], preset.config("vae")
    old = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "temperature": softwta.temperature,
           "num_images": preset.pretrain.num_images, "zca_eps": softwta.zca_eps, "vae_epochs": vae.epochs,
           "vae_lr": vae.lr, "vae_batch_size": vae.batch_size, "vae_decay_from": vae.decay_from,
           "vae_beta": vae.beta, "latent_dim": vae.latent_dim, "checkpoints_per_epoch": preset.probe_checkpoints,
           "statistics_images": preset.pretrain.statistics_images, "modified_bn": modified_bn}
    return settings_hash(preset.finetune, old, preset.width, preset.select_val, preset.test_images,
                         preset.probe_regime, preset.probe_val, preset.probe_statistics, preset.probe_head,
                         fingerprint(data.train), 3)


def migrate_legacy_keys(store: ResultStore, preset: Preset, data: Dataset) -> int:
    """Move the records and curves that ``store`` holds under ``preset``'s protocol-3 key to each method's key
    (:func:`results_key`), without recomputing anything; return how many records moved."""
    old = legacy_results_key(preset, data)
    if old is None:
        return 0
    return sum(store.rekey(old, method, results_key(preset, method, data)) for method in LEGACY_METHODS)


def _choose(base: Preset, methods, regimes, layers, seeds) -> Preset:
    """``base`` with the given overrides, each repeated value counted once."""
    return replace(
        base,
        methods=tuple(dict.fromkeys(methods)) if methods else base.methods,
        regimes=tuple(dict.fromkeys(float(check_percent(r)) for r in regimes)) if regimes else base.regimes,
        layers=tuple(dict.fromkeys(layers)) if layers else base.layers,
        seeds=base.seeds if seeds is None else seeds,
    )


def pretrained(method: str, seed: int, images: Split, preset: Preset, *, cache: Path | None,
               device: torch.device, progress: bool | None) -> tuple[LaganiNet, list[dict]]:
    """The pre-trained network of (method, seed) and its Hebbian convergence rows, from ``cache`` when a
    usable copy is there (a damaged one is named in a :class:`CacheWarning` and recomputed)."""
    train, val = images.pool, images.val
    probe = None
    if preset.probes(method):
        probe = ConvergenceProbe(method, seed, train.subset(slice(0, labelled_count(preset.probe_regime, len(train)))),
                                 val.subset(slice(0, preset.probe_val)), preset, device)
    config = preset.config(method)
    key = settings_hash(method, seed, preset.pretrain, type(config).__name__, config, make_method(method).revision,
                        preset.width, fingerprint(train), fingerprint(val), _probe_settings(preset, method),
                        PROTOCOL_VERSION, *(() if make_method(method).hebbian else _precision_setting(preset)))
    path = None if cache is None else cache / f"{method}-seed{seed}-{key}.pt"
    cached = None if path is None or not path.exists() else load_cached(path, build_net(method, config, train,
                                                                                         preset.width))
    if cached is not None:
        net, rows = cached
        return place(net, device).eval(), rows
    start = time.perf_counter()
    net = pretrain(method, train, config, shared=preset.pretrain, seed=seed, width=preset.width, val=val,
                   device=device, progress=progress, checkpoint=probe, checkpoints_per_epoch=preset.probe_checkpoints,
                   precision=preset.precision)
    rows = [] if probe is None else [{**row, "pretrain_seconds": time.perf_counter() - start} for row in probe.rows]
    if path is not None:
        try:
            with atomic_path(path) as temp:
                torch.save({"state": net.state_dict(), "convergence": rows}, temp)
        except (OSError, RuntimeError) as error:  # a full disk: torch says RuntimeError, the file system OSError
            reason = getattr(error, "strerror", None) or str(error).splitlines()[0][:200]
            warnings.warn(f"cached network {path} could not be saved ({reason}); going on without it",
                          CacheWarning, stacklevel=2)
    return net, rows


def load_cached(path: Path, net: LaganiNet) -> tuple[LaganiNet, list[dict]] | None:
    """``net`` with the weights saved at ``path`` and the saved convergence rows, or ``None`` (with a
    :class:`CacheWarning` naming the file) when the file is unreadable, does not fit ``net`` or holds
    non-finite numbers."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        net.load_state_dict(saved["state"])
        rows = list(saved["convergence"])
    except Exception as error:  # truncated, random, 0-byte, foreign or mismatched files alike
        problem = f"cannot be read as this network's weights ({type(error).__name__}: {str(error)[:200]})"
    else:
        bad = [name for name, value in net.state_dict().items() if value.is_floating_point()
               and not torch.isfinite(value).all()]
        if not bad:
            return net, rows
        problem = f"holds non-finite numbers in {', '.join(bad[:3])}"
    warnings.warn(f"cached network {path} {problem}; recomputing it", CacheWarning, stacklevel=2)
    return None


class ConvergenceProbe:
    """A pre-training checkpoint (:data:`~.pretraining.Checkpoint`) that measures how far the Hebbian blocks
    have come: BN statistics set on the first ``probe_statistics`` labelled images, then per layer a linear
    head trained on the fixed features of ``labelled`` and scored on ``val``; one row per call and layer."""

    def __init__(self, method: str, seed: int, labelled: ImageSet, val: ImageSet, preset: Preset,
                 device: torch.device) -> None:
        self.method, self.seed, self.labelled, self.val = method, seed, labelled, val
        self.preset, self.device = preset, device
        self.rows: list[dict] = []

    def __call__(self, net: LaganiNet, epochs: float) -> None:
        preset, labelled, val = self.preset, self.labelled, self.val
        layers = tuple(sorted(preset.layers))
        settle_statistics(net, labelled.subset(slice(0, preset.probe_statistics)))
        for (layer, train_x), (_, val_x) in zip(block_features(net, labelled, layers), block_features(net, val, layers)):
            head, _ = train_head(train_x, labelled.labels, net.num_classes, preset.probe_head, seed=self.seed,
                                 device=self.device, progress=False)
            self.rows.append({"curve": "hebbian", "method": self.method, "seed": self.seed, "layer": layer,
                              "epoch": epochs, "regime": preset.probe_regime,
                              "val_accuracy": accuracy(head, val_x, val.labels)})


def finetune_cell(net: LaganiNet, cell: Cell, images: Split, preset: Preset, progress: bool | None) -> dict:
    """One cell's record: fine-tune the cell's layer on the first ``regime`` % of the pool, keep the best epoch on
    ``select_val`` validation images, score validation (primary) and test images (all and pixel-exact ones).
    Only the classifier learns for a method that does not train its trunk, and for a pre-trained one under a
    frozen preset (``supervised`` always trains end to end)."""
    method, seed, regime, layer = cell.method, cell.seed, cell.regime, cell.layer
    train, val, test = images.pool, images.val, images.test
    spec = make_method(method)
    frozen = not spec.trains_trunk or (preset.finetune.frozen and spec.pretrain is not None)
    labelled = train.subset(slice(0, labelled_count(regime, len(train))))
    start, cpu_start = time.perf_counter(), time.process_time()
    classifier, history = finetune(net, layer, labelled, replace(preset.finetune, frozen=frozen), seed=seed,
                                   val=val.subset(slice(0, preset.select_val)), progress=progress,
                                   precision=preset.precision)
    record = {"method": method, "regime": float(regime), "layer": int(layer), "seed": int(seed),
              "num_labelled": len(labelled), "history": history,
              "best_epoch": max(history, key=lambda row: row.get("val_accuracy", -1))["epoch"] if history else 0,
              "val_accuracy": _percent(predict(classifier, val, precision=preset.precision) == val.labels),
              "threads": torch.get_num_threads()}  # seconds × threads = core-seconds
    if test is not None:
        test = test.subset(slice(0, preset.test_images))
        hits = predict(classifier, test, precision=preset.precision) == test.labels
        record["test_accuracy"] = _percent(hits)
        if test.exact is not None and bool(test.exact.any()):
            record["test_exact_accuracy"] = _percent(hits[test.exact])
    record["seconds"] = time.perf_counter() - start
    record["cpu_seconds"] = time.process_time() - cpu_start  # core-seconds, whatever else the machine runs
    return record


def _percent(hits: torch.Tensor) -> float:
    return 100 * hits.float().mean().item() if len(hits) else float("nan")


# --------------------------------------------------------------------------------------------- CLI


def run_command(args: argparse.Namespace) -> int:
    """``hebbkit reproduce``: every output path is checked before the data are read or anything is trained;
    ``--status`` only reports the grid. Exit status 1 when a unit's worker failed."""
    preset = _choose(get_preset(args.preset), args.methods, args.regimes, args.layers, args.seeds)
    if args.precision is not None:
        preset = replace(preset, precision=args.precision)
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    out = check_output_dir("--out", args.out or Path("results") / preset.name)
    if args.status:
        print(format_status(grid_status(preset, load_data(args.data), out), out))
        return 0
    launcher = LaunchConfig(kind=args.launcher, parallel=args.parallel, time_min=args.time_min,
                            partition=args.partition, gpus_per_task=args.gpus_per_task,
                            cpus_per_task=args.cpus_per_task)
    figures = None if args.figures is None else check_output_dir("--figures", args.figures)
    cache = None if args.cache == "none" else check_output_dir("--cache", args.cache)
    start = time.perf_counter()
    results = run_experiment(preset, data=args.data, out=out, cache=cache, device=args.device,
                             progress=False if args.no_progress else None, launcher=launcher, threads=args.threads)
    cells = len(preset.grid())
    if results.failed:
        print(f"{len(results.failed)} units failed (named above); run this again to retry them", file=sys.stderr)
    if results.records.empty:
        if not results.failed:
            print(f"all {cells} cells are being computed by other processes; run this again when they finish")
        return 1 if results.failed else 0
    write_outputs(with_stored_methods(results, out), out, figures)
    print((out / "table1.md").read_text())
    missing = cells - len(results.records)
    if missing and not results.failed:
        print(f"{missing} of {cells} cells are still being computed by other processes; run this again when they "
              f"finish to complete the table", file=sys.stderr)
    print(f"{len(results.records)} results in {out} ({time.perf_counter() - start:.0f} s)")
    return 1 if results.failed else 0
