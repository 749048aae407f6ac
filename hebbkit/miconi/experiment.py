"""The ``layers`` experiment: what each layer of Miconi's Hebbian CNN learns, with and without interventions.

For each intervention: train the network on unlabelled images (whitened by one ZCA fitted once), calibrate
the thresholds of an untrained copy (same initial weights and masks: the random-weights baseline), then per
layer fit a ridge readout on training images and score it on held-out images (the back of
:func:`hebbkit.data.split`'s validation part, never used to fit), and measure response sparsity and the
pixel-space pictures of the units. Any image dataset works: channels and class count come from the data.

``hebbkit layers --preset quick --intervention all --data PATH --out DIR`` writes ``layers.csv``,
``layers.md``, ``run.json`` and filter grids ``layers_<intervention>_layer<l>.png`` (layer 1: the filters;
layers 2 and 3: mean top-activating image patches) and ``layers_decoding.png``.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import NamedTuple

import pandas as pd
import torch

from ..data import Dataset, ImageSet, load_data, split
from ..checks import lookup
from ..utils import (
    atomic_path,
    check_output_dir,
    resolve_device,
    seed_everything,
    to_markdown,
    write_text_atomic,
)
from . import probe
from .net import (
    INTERVENTIONS,
    MICONI_LAYERS,
    LayerSpec,
    MiconiNet,
    NetConfig,
    TrainConfig,
    as_float_images,
    check_intervention,
    check_keep,
    feature_sizes,
    fit_zca,
    train_network,
    with_intervention,
)


@dataclass(frozen=True, kw_only=True)
class Preset:
    """Sizes of one run: Hebbian images and epochs, readout fitting / scored images, ZCA images, threshold
    calibration images for the random baseline, probe images for pictures and sparsity, top patches."""

    name: str
    hebbian_images: int
    epochs: int
    fit_images: int
    score_images: int
    zca_images: int
    calibration_images: int
    probe_images: int
    n_top: int
    warmup_batches: int
    batch_size: int = 100


PRESETS = {
    "smoke": Preset(name="smoke", hebbian_images=500, epochs=1, fit_images=500, score_images=250, zca_images=500,
                    calibration_images=300, probe_images=200, n_top=10, warmup_batches=2),
    "quick": Preset(name="quick", hebbian_images=10_000, epochs=1, fit_images=8_000, score_images=4_000,
                    zca_images=4_000, calibration_images=2_000, probe_images=1_000, n_top=50, warmup_batches=20),
    "full": Preset(name="full", hebbian_images=40_000, epochs=20, fit_images=40_000, score_images=10_000,
                   zca_images=10_000, calibration_images=10_000, probe_images=2_000, n_top=100, warmup_batches=200),
}


def get_preset(preset: str | Preset) -> Preset:
    """A preset by name (``smoke``, ``quick``, ``full``), or the given one."""
    return lookup("preset", preset, PRESETS)


class RunImages(NamedTuple):
    """The images of one run: Hebbian training (its front also fits the ZCA), readout fitting, scoring."""

    hebbian: ImageSet
    fit: ImageSet
    score: ImageSet


def select_images(train: ImageSet, preset: Preset) -> RunImages:
    """Hebbian and readout-fitting images from the front of :func:`hebbkit.data.split`'s pool (in order; the
    ZCA is fitted on the first ``zca_images`` Hebbian ones), scored images from the back of its validation
    part (for CIFAR-10's 50,000: the last ``score_images``)."""
    pool, val = split(train, seed=None)
    need_front = max(preset.hebbian_images, preset.fit_images, preset.zca_images)
    if need_front > len(pool) or preset.score_images > len(val):
        raise ValueError(
            f"preset {preset.name!r} needs {need_front} training and {preset.score_images} validation images, but "
            f"the {len(train)} images split into {len(pool)} and {len(val)}"
        )
    return RunImages(
        pool.subset(slice(0, preset.hebbian_images)),
        pool.subset(slice(0, preset.fit_images)),
        val.subset(slice(len(val) - preset.score_images, None)),
    )


def _image_stats(net: MiconiNet, probe_images: torch.Tensor, n_top: int) -> tuple[list[dict], list[torch.Tensor]]:
    pictures = probe.top_patch_pictures(net, probe_images, n_top)
    sparsity = probe.response_sparsity(net, probe_images)
    stats = []
    for layer_sparsity, layer_pictures in zip(sparsity, pictures):
        feature = {key: float(value.mean()) for key, value in probe.picture_stats(layer_pictures).items()}
        stats.append({**layer_sparsity, **feature})
    return stats, pictures


def run_intervention(
    images: RunImages,
    intervention: str,
    preset: Preset,
    zca: torch.Tensor,
    device: torch.device,
    base: NetConfig = NetConfig(),
    keep: float = 0.01,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Train, calibrate the random baseline, decode and measure one intervention on ``device``, with the
    whitening matrix ``zca`` fitted on the front of the Hebbian images.

    Returns ``{"rows": [per-layer dicts], "net": trained, "random": baseline, "pictures": per layer,
    "history": firing-rate deviations per batch, "train_seconds": float}``.
    """
    config = with_intervention(base, intervention, keep)
    hebbian, fit, score = images
    seed_everything(seed)
    nets = {name: MiconiNet(config, hebbian.images.shape[1], seed).to(device) for name in ("hebbian", "random")}
    for net in nets.values():
        net.zca = zca
    train = TrainConfig(preset.epochs, preset.batch_size, preset.warmup_batches, seed=seed)
    start = time.perf_counter()
    history = train_network(nets["hebbian"], hebbian.images, train, progress=progress)
    train_seconds = time.perf_counter() - start
    calibration = replace(train, epochs=1)
    train_network(nets["random"], hebbian.images[: preset.calibration_images], calibration, plastic=False, progress=progress)

    decoded, stats, pictures = {}, {}, {}
    for name, net in nets.items():
        fit_x = probe.layer_features(net, fit.images)
        score_x = probe.layer_features(net, score.images)
        decoded[name] = probe.decode_layers(fit_x, fit.labels, score_x, score.labels, seed=seed)
        stats[name], pictures[name] = _image_stats(net, score.images[: preset.probe_images], preset.n_top)

    rows = []
    fields = probe.receptive_fields(nets["hebbian"])
    for index, layer in enumerate(nets["hebbian"].layers):
        rows.append(
            {
                "preset": preset.name,
                "rule": config.rule,
                "intervention": intervention,
                "layer": index + 1,
                "channels": layer.spec.channels,
                "keep": layer.spec.keep,
                "rf_size": fields[index][0],
                "accuracy": decoded["hebbian"][index]["accuracy"],
                "random_accuracy": decoded["random"][index]["accuracy"],
                "fit_accuracy": decoded["hebbian"][index]["fit_accuracy"],
                "population_sparsity": stats["hebbian"][index]["population"],
                "lifetime_sparsity": stats["hebbian"][index]["lifetime"],
                "silent_units": stats["hebbian"][index]["silent_units"],
                "feature_extent": stats["hebbian"][index]["extent"],
                "feature_frequency": stats["hebbian"][index]["frequency"],
                "feature_sparseness": stats["hebbian"][index]["sparseness"],
                "random_feature_extent": stats["random"][index]["extent"],
                "random_feature_frequency": stats["random"][index]["frequency"],
                "hebbian_images": len(hebbian) * preset.epochs,
                "fit_images": len(fit),
                "score_images": len(score),
                "train_seconds": round(train_seconds, 1),
            }
        )
    return {
        "rows": rows,
        "net": nets["hebbian"],
        "random": nets["random"],
        "pictures": pictures["hebbian"],
        "history": history,
        "train_seconds": train_seconds,
    }


# --------------------------------------------------------------------------------------------- output

TABLE_COLUMNS = {
    "intervention": "intervention",
    "layer": "layer",
    "accuracy": "accuracy",
    "random_accuracy": "random weights",
    "population_sparsity": "population sparsity",
    "lifetime_sparsity": "lifetime sparsity",
    "feature_extent": "feature extent (px)",
    "feature_frequency": "feature frequency (c/px)",
    "feature_sparseness": "feature sparseness",
}
PERCENT_COLUMNS = ("accuracy", "random_accuracy")


def markdown_table(table: pd.DataFrame) -> str:
    """The per-layer table as GitHub Markdown (accuracies in %, three decimals elsewhere)."""
    shown = table[list(TABLE_COLUMNS)].astype(object)
    for column in TABLE_COLUMNS:
        if column in PERCENT_COLUMNS:
            shown[column] = table[column].map(lambda value: f"{100 * value:.1f} %")
        elif pd.api.types.is_float_dtype(table[column]):
            shown[column] = table[column].map(lambda value: f"{value:.3f}")
    return to_markdown(shown.rename(columns=TABLE_COLUMNS), index=False)


def save_decoding_plot(table: pd.DataFrame, path: str | Path) -> None:
    """Held-out accuracy against layer (:func:`hebbkit.viz.decoding_figure`), written as a PNG."""
    import matplotlib.pyplot as plt

    from ..viz import decoding_figure, save_figure

    figure = decoding_figure(table)
    save_figure(figure, Path(path).parent, Path(path).name, dpi=100)
    plt.close(figure)


def _write_outputs(out: Path, table: pd.DataFrame, results: dict[str, dict], meta: dict) -> None:
    with atomic_path(out / "layers.csv") as temp:
        table.to_csv(temp, index=False, float_format="%.4f")
    write_text_atomic(out / "layers.md", markdown_table(table))
    write_text_atomic(out / "run.json", json.dumps(meta, indent=2) + "\n")
    for name, result in results.items():
        probe.save_picture_grid(probe.weight_pictures(result["net"]), out / f"layers_{name}_layer1.png")
        for index, pictures in enumerate(result["pictures"][1:], start=2):
            probe.save_picture_grid(pictures, out / f"layers_{name}_layer{index}.png")
    save_decoding_plot(table, out / "layers_decoding.png")


def run_layers(
    data: Dataset,
    preset: str | Preset = "quick",
    interventions: tuple[str, ...] = INTERVENTIONS,
    rule: str = "instar",
    k: int = 1,
    layers: tuple[LayerSpec, ...] = MICONI_LAYERS,
    keep: float = 0.01,
    seed: int = 0,
    device: str | torch.device = "auto",
    out: str | Path | None = None,
    progress: bool = True,
) -> tuple[pd.DataFrame, dict[str, dict]]:
    """Run every intervention on ``data.train``; return the per-layer table and each run's result (see
    ``run_intervention``).

    ``k`` winners in every layer; ``keep``: pruning's kept fraction; ``layers``: the architecture. Every
    argument, the image size and ``out`` are checked before any training.

    With ``out``, writes ``layers.csv``, ``layers.md``, ``run.json`` and the PNG figures there (atomically).
    """
    spec = get_preset(preset)
    for name in interventions:
        check_intervention(name)
    check_keep(keep)
    base = NetConfig(layers=tuple(replace(layer, k=k) for layer in layers), rule=rule)
    feature_sizes(base, *data.train.shape[1:])
    device = resolve_device(device)
    if out is not None:
        out = check_output_dir("--out", out)
    images = select_images(data.train, spec)
    start = time.perf_counter()
    zca = fit_zca(as_float_images(images.hebbian.images[: spec.zca_images]), base.zca_eps).to(device)
    results = {
        name: run_intervention(images, name, spec, zca, device, base, keep, seed, progress) for name in interventions
    }
    table = pd.DataFrame([row for result in results.values() for row in result["rows"]])
    if out is not None:
        meta = {
            "preset": asdict(spec),
            "data": data.name,
            "image_shape": list(data.train.shape),
            "interventions": list(interventions),
            "rule": rule,
            "k": k,
            "keep": keep,
            "seed": seed,
            "learning_rates": [layer.lr for layer in base.layers],
            "wall_seconds": round(time.perf_counter() - start, 1),
            "torch_threads": torch.get_num_threads(),
        }
        _write_outputs(out, table, results, meta)
    return table, results


# ------------------------------------------------------------------------------------------------ CLI


def _run(args: argparse.Namespace) -> int:
    interventions = INTERVENTIONS if args.intervention == "all" else (check_intervention(args.intervention),)
    check_output_dir("--out", args.out)
    data = load_data(args.data)
    start = time.perf_counter()
    table, _ = run_layers(
        data, args.preset, interventions, args.rule, args.k, keep=args.keep, seed=args.seed, device=args.device, out=args.out
    )
    print(markdown_table(table))
    print(f"wall time {time.perf_counter() - start:.0f} s; results in {args.out}")
    return 0
