"""The ``softhebb`` study: SoftHebb's three Hebbian blocks (one unsupervised epoch, no labels), then the authors'
linear classifier, on all labels and on Lagani's 1 / 5 / 10 % labelled subsets (with end-to-end fine-tuning as a
second row), a per-depth linear probe of the blocks, and the same network trained by Krotov–Hopfield's rule.

``hebbkit softhebb --preset smoke|quick|paper --data PATH --out DIR`` writes ``softhebb.csv``, ``softhebb.md``,
``run.json`` and pictures of each rule's blocks (``filters_<rule>_layer<depth>.png``: block 1's filters; for the deeper
blocks, the mean of each channel's top image patches).

Labelled images. 100 %: every training image the preset uses (the authors' protocol: all 50,000). Below: the
first :func:`~hebbkit.lagani.experiment.labelled_count` images of the pool of :func:`hebbkit.data.split` of the
whole training set under the seed, exactly the labelled subsets of Lagani's Table 1 (for CIFAR-10: 400 / 2,000 /
4,000 images), whatever ``max_images`` (the smoke preset: of its own 2,000 images). The Hebbian blocks learn from
the preset's training images, without labels.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd
import torch

from ..checks import check_positive, lookup
from ..data import Dataset, ImageSet, check_percent, load_data, split
from ..loops import evaluate, place
from ..utils import atomic_path, check_output_dir, resolve_device, seed_everything, to_markdown, write_text_atomic
from .net import NetConfig, SoftHebbNet
from .training import (
    ClassifierConfig,
    FinetuneConfig,
    HebbianConfig,
    block_features,
    feature_accuracy,
    finetune,
    train_classifier,
    train_hebbian,
)


@dataclass(frozen=True, kw_only=True)
class Preset:
    """One run's settings. ``max_images`` / ``test_images``: the first training / test images used (``None`` =
    all); ``regimes``: labelled percentages of the depth-3 classifier (100 = all training images);
    ``finetune_regimes``: those also fine-tuned end to end; ``depths``: SoftHebb's per-depth probe (all labels);
    ``krotov_depths``: the same network trained by Krotov–Hopfield's rule, probed at these depths (empty: not
    run); ``seeds``: networks trained (each its own initialisation, order and labelled subsets);
    ``whole_pool_labels``: the labelled subsets come from the pool of the whole training set (Lagani's exact
    subsets), else from the preset's ``max_images`` training images only."""

    name: str
    width: float
    max_images: int | None
    test_images: int | None
    seeds: int
    regimes: tuple[float, ...]
    finetune_regimes: tuple[float, ...] = ()
    whole_pool_labels: bool = True
    depths: tuple[int, ...] = ()
    krotov_depths: tuple[int, ...] = ()
    net: NetConfig = NetConfig()
    hebbian: HebbianConfig = HebbianConfig()
    classifier: ClassifierConfig = ClassifierConfig()
    finetune: FinetuneConfig = FinetuneConfig()
    krotov: NetConfig = field(default_factory=lambda: NetConfig(rule="krotov"))

    def __post_init__(self) -> None:
        check_positive("seeds", self.seeds, integer=True)
        for regime in self.regimes + self.finetune_regimes:
            check_percent(regime)
        for name in ("max_images", "test_images"):
            if getattr(self, name) is not None:
                check_positive(name, getattr(self, name), integer=True)


PRESETS: dict[str, Preset] = {
    # seconds on any data: at most 2,000 training and 500 test images, an eighth of the channels (12, 48, 192)
    "smoke": Preset(
        name="smoke", width=0.125, max_images=2_000, test_images=500, seeds=1, regimes=(10.0, 100.0),
        finetune_regimes=(10.0,), whole_pool_labels=False, depths=(1,), krotov_depths=(1,),
        net=NetConfig(width=0.125), krotov=NetConfig(width=0.125, rule="krotov"),
        classifier=ClassifierConfig(epochs=2), finetune=FinetuneConfig(epochs=1, min_steps=5),
    ),
    # CPU-sized (about 5 min of one core's time): a quarter of the channels (24, 96, 384), the Hebbian epoch on the
    # first 10,000 training images, the classifier 10 epochs (halvings need 20) on those images' labels, or on
    # Lagani's 1 / 5 / 10 % subsets (fine-tuned 3 epochs, at least 100 steps), every test image
    "quick": Preset(
        name="quick", width=0.25, max_images=10_000, test_images=None, seeds=1, regimes=(1.0, 5.0, 10.0, 100.0),
        finetune_regimes=(1.0, 5.0, 10.0), depths=(1, 2), krotov_depths=(1, 2, 3),
        net=NetConfig(width=0.25), krotov=NetConfig(width=0.25, rule="krotov"),
        classifier=ClassifierConfig(epochs=10), finetune=FinetuneConfig(epochs=3, min_steps=100),
    ),
    # the authors' protocol (4SoftHebbCnnCIFAR, CIFAR10_1, CIFAR10_50): full width, one unsupervised epoch per
    # block at batch 10 on all 50,000 images, the classifier 50 epochs at batch 64 (Adam 1e-3, dropout 0.5);
    # four seeds; plus the few-label rows, fine-tuning, the per-depth probe and Krotov–Hopfield
    "paper": Preset(
        name="paper", width=1.0, max_images=None, test_images=None, seeds=4, regimes=(1.0, 5.0, 10.0, 100.0),
        finetune_regimes=(1.0, 5.0, 10.0), depths=(1, 2), krotov_depths=(1, 2, 3),
    ),
}
COLUMNS = ["rule", "depth", "labels", "readout", "seed", "accuracy"]
PICTURE_IMAGES = 1_000  # the first test images, whose patches picture the deeper blocks' channels


def get_preset(preset: str | Preset) -> Preset:
    """A preset by name (``smoke``, ``quick``, ``paper``), or the given one."""
    return lookup("preset", preset, PRESETS)


def labelled_images(train: ImageSet, regime: float, seed: int, everything: ImageSet | None = None) -> ImageSet:
    """``train`` for 100 %, else Lagani's labelled subset: the first ``regime`` % of the pool of
    ``everything`` (default ``train``: the whole training set) split by ``seed``."""
    if check_percent(regime) == 100:
        return train
    from ..lagani.experiment import labelled_count

    pool, _ = split(train if everything is None else everything, seed)
    return pool.subset(slice(0, labelled_count(regime, len(pool))))


def filter_pictures(net: SoftHebbNet) -> torch.Tensor:
    """Block 1's filters (K, C, k, k): they act on standardised pixels, so they are pixel-space pictures."""
    return net.blocks[0].layer.weight.detach().cpu().clone()


def receptive_field(net: SoftHebbNet, depth: int) -> tuple[int, int, int]:
    """(size, stride, offset) in pixels of one output position of block ``depth``: output ``(i, j)`` sees the rows
    ``offset + stride·i ... + size − 1`` (and columns alike) of the image, borders beyond it included."""
    size, stride, offset = 1, 1, 0
    for block in net.blocks[:depth]:
        spec = block.spec
        size, offset = size + (spec.kernel - 1) * stride, offset - (spec.kernel // 2) * stride
        size, offset = size + (spec.pool_kernel - 1) * stride, offset - spec.pool_padding * stride
        stride *= spec.pool_stride
    return size, stride, offset


@torch.no_grad()
def top_patch_pictures(net: SoftHebbNet, images: ImageSet, depth: int, units: int = 64, n_top: int = 20) -> torch.Tensor:
    """What the first ``units`` channels of block ``depth`` respond to: for each, the mean of the ``n_top``
    standardised image patches under its receptive field where its output is largest (zero beyond the image).
    Returns (units, C, R, R)."""
    size, stride, offset = receptive_field(net, depth)
    pixels = images.float()
    outputs = block_features(net, images, depth)[:, :units].float()
    n, k, height, width = outputs.shape
    top = outputs.movedim(1, 0).reshape(k, -1).topk(min(n_top, n * height * width), dim=1).indices
    image, row, col = top // (height * width), (top % (height * width)) // width, top % width
    pad = max(0, -offset, size)
    padded = torch.nn.functional.pad(pixels, (pad,) * 4)
    rows = (offset + pad + stride * row)[..., None] + torch.arange(size)
    cols = (offset + pad + stride * col)[..., None] + torch.arange(size)
    channel = torch.arange(pixels.shape[1])[:, None, None]
    patches = padded[image[..., None, None, None], channel, rows[..., None, :, None], cols[..., None, None, :]]
    return patches.mean(1)


def _save_pictures(net: SoftHebbNet, images: ImageSet, rule: str, out: Path) -> None:
    """Block 1's filters and, for the deeper blocks, the mean of each channel's top patches, as PNG grids."""
    from ..miconi.probe import save_picture_grid

    save_picture_grid(filter_pictures(net), out / f"filters_{rule}_layer1.png")
    for depth in range(2, net.depth + 1):
        save_picture_grid(top_patch_pictures(net, images, depth), out / f"filters_{rule}_layer{depth}.png")


def train_net(config: NetConfig, train: ImageSet, hebbian: HebbianConfig, seed: int, device: torch.device,
              progress: bool = False) -> SoftHebbNet:
    """A :class:`SoftHebbNet` initialised by ``seed`` and trained on ``train`` without labels."""
    generator = seed_everything(seed)
    net = place(SoftHebbNet(config, train.shape[0]), device)
    train_hebbian(net, train, hebbian, generator, progress)
    return net


def _probe(net: SoftHebbNet, train: ImageSet, test: ImageSet, depth: int, preset: Preset, seed: int,
           device: torch.device) -> float:
    """Test accuracy (%) of the authors' classifier on block ``depth``'s output, trained on every label of ``train``."""
    classifier = train_classifier(block_features(net, train, depth), train.labels, train.num_classes,
                                  preset.classifier, torch.Generator().manual_seed(seed), device)
    return feature_accuracy(classifier, block_features(net, test, depth), test.labels)


def run_softhebb(data: Dataset, preset: str | Preset = "quick", device: str | torch.device = "auto",
                 out: str | Path | None = None, progress: bool = False) -> pd.DataFrame:
    """Run the study on ``data`` and score its test set (a dataset without one: the validation part of
    :func:`~hebbkit.data.split` in order, the rest being the training images); return one row per (rule, depth,
    labels, readout, seed) and, with ``out``, write the outputs (the table after every row, so that a long run
    that stops keeps what it finished)."""
    spec = get_preset(preset)
    device = resolve_device(device)
    if out is not None:
        out = check_output_dir("--out", out)
    source, test = (data.train, data.test) if data.test is not None else split(data.train, None)
    train = source if spec.max_images is None else source.subset(slice(0, spec.max_images))
    if spec.test_images is not None:
        test = test.subset(slice(0, spec.test_images))
    start, rows = time.perf_counter(), []
    depth = len(spec.net.blocks)

    def record(*row) -> None:
        rows.append(row)
        if out is not None:
            _write_table(out, pd.DataFrame(rows, columns=COLUMNS))

    for seed in range(spec.seeds):
        net = train_net(spec.net, train, spec.hebbian, seed, device, progress)
        if out is not None and seed == 0:
            _save_pictures(net, test.subset(slice(0, PICTURE_IMAGES)), "softhebb", out)
        test_features = block_features(net, test, depth)
        for regime in spec.regimes:
            labelled = labelled_images(train, regime, seed, source if spec.whole_pool_labels else train)
            classifier = train_classifier(block_features(net, labelled, depth), labelled.labels, train.num_classes,
                                          spec.classifier, torch.Generator().manual_seed(seed), device)
            record("softhebb", depth, regime, "linear", seed, feature_accuracy(classifier, test_features, test.labels))
            if regime in spec.finetune_regimes:
                model = finetune(net, classifier, labelled, spec.finetune, torch.Generator().manual_seed(seed))
                record("softhebb", depth, regime, "fine-tuned", seed, evaluate(model, test))
        for probe_depth in spec.depths:
            record("softhebb", probe_depth, 100.0, "linear", seed, _probe(net, train, test, probe_depth, spec, seed,
                                                                          device))
        if spec.krotov_depths:
            krotov = train_net(spec.krotov, train, spec.hebbian, seed, device, progress)
            if out is not None and seed == 0:
                _save_pictures(krotov, test.subset(slice(0, PICTURE_IMAGES)), "krotov", out)
            for probe_depth in spec.krotov_depths:
                record("krotov", probe_depth, 100.0, "linear", seed, _probe(krotov, train, test, probe_depth, spec,
                                                                            seed, device))
    table = pd.DataFrame(rows, columns=COLUMNS)
    if out is not None:
        meta = {"preset": asdict(spec), "data": data.name, "train_images": len(train), "test_images": len(test),
                "wall_seconds": round(time.perf_counter() - start, 1), "torch_threads": torch.get_num_threads(),
                "device": str(device)}
        write_text_atomic(out / "run.json", json.dumps(meta, indent=2, default=str) + "\n")
    return table


def _write_table(out: Path, table: pd.DataFrame) -> None:
    with atomic_path(out / "softhebb.csv") as temp:
        table.to_csv(temp, index=False, float_format="%.2f")
    write_text_atomic(out / "softhebb.md", markdown_table(table))


def markdown_table(table: pd.DataFrame) -> str:
    """Mean test accuracy (± std over seeds, when more than one) per rule, depth, labels and readout."""
    groups = table.groupby(["rule", "depth", "labels", "readout"], sort=False)["accuracy"]
    summary = groups.agg(["mean", "std", "count"]).reset_index()
    summary["test accuracy"] = [f"{m:.1f} %" + (f" ± {s:.1f} ({n} seeds)" if n > 1 else "")
                                for m, s, n in zip(summary["mean"], summary["std"], summary["count"])]
    summary["labels"] = summary["labels"].map(lambda value: f"{value:g} %")
    return to_markdown(summary[["rule", "depth", "labels", "readout", "test accuracy"]], index=False)


def run_command(args: argparse.Namespace) -> int:
    """The ``hebbkit softhebb`` handler."""
    if args.threads is not None:
        check_positive("--threads", args.threads, integer=True)
        torch.set_num_threads(args.threads)
    check_output_dir("--out", args.out)
    data = load_data(args.data)
    start = time.perf_counter()
    table = run_softhebb(data, args.preset, args.device, args.out, progress=not args.no_progress)
    print(markdown_table(table))
    print(f"wall time {time.perf_counter() - start:.0f} s; results in {args.out}")
    return 0
