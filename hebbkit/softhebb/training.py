"""Training SoftHebb's network: one unsupervised epoch per block, trained one block after the other (the
authors' ``successive`` mode), then a linear classifier on the frozen features, and optionally end-to-end
fine-tuning by backprop.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..checks import check_positive
from ..data import ImageSet
from ..loops import accuracy, as_input, batches, count_steps, shuffled_steps
from .net import Classifier, SoftHebbNet


@dataclass(frozen=True)
class HebbianConfig:
    """Unsupervised training: ``epochs`` per block at ``batch_size`` (the authors' ``CIFAR10_1``: 1 epoch, batch
    10); each block's rate is its spec's ``lr`` (SoftHebb: constant, the per-neuron adaptive rate anneals it), or
    ``krotov_lr`` decayed linearly to 0 over the block's training (Krotov & Hopfield's schedule)."""

    epochs: float = 1.0
    batch_size: int = 10
    krotov_lr: float = 0.02

    def __post_init__(self) -> None:
        check_positive("epochs", self.epochs)
        check_positive("batch_size", self.batch_size, integer=True)
        check_positive("krotov_lr", self.krotov_lr)


@dataclass(frozen=True)
class ClassifierConfig:
    """The linear classifier (the authors' ``CIFAR10_50``): ``epochs`` of Adam at ``lr``, batch ``batch_size``,
    ``dropout`` before the linear layer, the rate halved at the authors' fractions of the epochs."""

    epochs: int = 50
    batch_size: int = 64
    lr: float = 1e-3
    dropout: float = 0.5

    def __post_init__(self) -> None:
        check_positive("epochs", self.epochs, integer=True)
        check_positive("batch_size", self.batch_size, integer=True)
        check_positive("lr", self.lr)
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must lie in [0, 1), got {self.dropout!r}")


@dataclass(frozen=True)
class FinetuneConfig:
    """End-to-end fine-tuning by backprop from the trained blocks and classifier: ``epochs`` of Adam at ``lr``,
    batch ``batch_size``, at least ``min_steps`` steps (for the smallest labelled sets)."""

    epochs: int = 20
    batch_size: int = 64
    lr: float = 1e-4
    min_steps: int = 200

    def __post_init__(self) -> None:
        check_positive("epochs", self.epochs, integer=True)
        check_positive("batch_size", self.batch_size, integer=True)
        check_positive("lr", self.lr)


def halving_epochs(epochs: int) -> tuple[int, ...]:
    """The epochs after which the authors' ``CustomStepLR`` halves the rate (none under 20 epochs)."""
    if epochs < 20:
        return ()
    fractions = (0.5, 0.75) if epochs < 50 else (0.2, 0.35, 0.5, 0.6, 0.7, 0.8, 0.9)
    return tuple(int(epochs * fraction) for fraction in fractions)


def train_hebbian(net: SoftHebbNet, images: ImageSet, config: HebbianConfig, generator: torch.Generator,
                  progress: bool = False) -> None:
    """Train the blocks one after the other, each for ``config.epochs`` on ``images`` (labels unused): the
    blocks below run in evaluation mode, the block's own input BN gathers its statistics, and its layer takes
    SGD steps on the rule's update (``W ← W + lr · ΔW``)."""
    device = net.blocks[0].layer.weight.device
    krotov = net.config.rule == "krotov"
    total = count_steps(config.epochs, len(images), config.batch_size)
    for index, block in enumerate(net.blocks):
        net.eval()
        block.train()
        block.layer.plastic = True
        rate = config.krotov_lr if krotov else block.spec.lr
        optimizer = torch.optim.SGD([block.layer.weight], lr=rate)
        steps = shuffled_steps(len(images), config.epochs, config.batch_size, generator)
        for step, order in enumerate(tqdm(steps, total=total, desc=f"block {index + 1}", disable=not progress,
                                          leave=False)):
            if krotov:
                optimizer.param_groups[0]["lr"] = rate * (1 - step / total)
            x = as_input(images.subset(order).float(device))
            with torch.no_grad():
                for below in net.blocks[:index]:
                    x = below(x)
                block(x)
            optimizer.step()
            block.layer.weight.grad = None
        block.layer.plastic = False
    net.eval()


@torch.no_grad()
def block_features(net: SoftHebbNet, images: ImageSet, depth: int, batch_size: int = 256) -> Tensor:
    """The output of block ``depth`` for every image, as float16 on the CPU (N, C, H, W)."""
    device = net.blocks[0].layer.weight.device
    net.eval()
    return torch.cat([net.features(x, depth).half().cpu() for x, _ in batches(images, batch_size, device)])


def train_classifier(features: Tensor, labels: Tensor, num_classes: int, config: ClassifierConfig,
                     generator: torch.Generator, device: torch.device) -> Classifier:
    """The authors' classifier trained on fixed ``features`` (N, C, H, W): Adam, cross-entropy, the rate halved
    at :func:`halving_epochs`; BN with batch statistics while training."""
    classifier = Classifier(tuple(features.shape[1:]), num_classes, config.dropout).to(device)
    optimizer = torch.optim.Adam(classifier.parameters(), lr=config.lr)
    halve = halving_epochs(config.epochs)
    for epoch in range(config.epochs):
        classifier.train()
        for order in shuffled_steps(len(labels), 1, config.batch_size, generator):
            if len(order) < 2:
                continue  # BN needs two samples
            x = features[order].to(device).float()
            loss = F.cross_entropy(classifier(x), labels[order].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if epoch + 1 in halve:
            for group in optimizer.param_groups:
                group["lr"] *= 0.5
    return classifier.eval()


def feature_accuracy(classifier: Classifier, features: Tensor, labels: Tensor) -> float:
    """Top-1 accuracy (%) of ``classifier`` on fixed features."""
    return accuracy(_Float(classifier), features, labels)


class _Float(nn.Module):
    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: Tensor) -> Tensor:
        return self.module(x.float())


def finetune(net: SoftHebbNet, classifier: Classifier, images: ImageSet, config: FinetuneConfig,
             generator: torch.Generator) -> nn.Module:
    """A copy of blocks + classifier trained end to end by backprop (Adam, cross-entropy) on ``images``."""
    model = nn.Sequential(copy.deepcopy(net), copy.deepcopy(classifier))
    for block in model[0].blocks:
        block.layer.plastic = False
    device = net.blocks[0].layer.weight.device
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    epochs = max(config.epochs, config.min_steps * config.batch_size / len(images))
    model.train()
    for order in shuffled_steps(len(images), epochs, config.batch_size, generator):
        if len(order) < 2:
            continue
        batch = images.subset(order)
        loss = F.cross_entropy(model(as_input(batch.float(device))), batch.labels.to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return model.eval()
