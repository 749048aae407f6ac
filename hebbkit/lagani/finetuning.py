"""Supervised training: the SGD loop, end-to-end fine-tuning of a cut network, and linear heads on fixed features."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..data import ImageSet
from ..loops import (BestState, accuracy, as_input, augment, autocast, block_features, check_precision, device_of,
                     evaluate, lr_at, place, sgd)
from ..checks import check_positive
from ..utils import seed_everything
from .net import Classifier, Head, LaganiNet, check_layer
from .pretraining import show_progress


@dataclass(frozen=True)
class FinetuneConfig:
    """Supervised fine-tuning on the labelled subset (defaults: the reference code's settings).

    SGD with ``momentum`` (Nesterov if ``nesterov``) and ``weight_decay``; the learning rate is multiplied by
    ``lr_decay`` at the start of every epoch from ``decay_from`` (0-based: 10 → epochs 10..19 of 20 halve it).
    The epoch with the best accuracy on the validation images given to :func:`finetune` is kept (the last one
    without them). ``frozen``: train only the classifier on fixed features (not the paper's protocol).
    ``augment``: random flips and crops of the labelled images (:func:`augment`). ``min_steps``: small labelled
    sets train for a whole multiple of the epochs that gives at least this many SGD steps (:meth:`stretched`).
    """

    epochs: int = 20
    batch_size: int = 64
    lr: float = 1e-3
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-2
    decay_from: int = 10
    lr_decay: float = 0.5
    dropout: float = 0.5
    frozen: bool = False
    augment: bool = False
    min_steps: int = 0

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            check_positive(name, getattr(self, name), integer=True)
        check_positive("lr", self.lr)
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must lie in [0, 1), got {self.momentum!r}")
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov needs momentum > 0")
        if not (self.weight_decay >= 0 and 0 < self.lr_decay <= 1 and self.decay_from >= 0):
            raise ValueError("weight_decay must be >= 0, lr_decay in (0, 1] and decay_from >= 0")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must lie in [0, 1), got {self.dropout!r}")
        if isinstance(self.min_steps, bool) or not isinstance(self.min_steps, int) or self.min_steps < 0:
            raise ValueError(f"min_steps must be an integer >= 0, got {self.min_steps!r}")

    def stretched(self, num_labelled: int) -> FinetuneConfig:
        """The schedule for ``num_labelled`` images: epochs and ``decay_from`` times the smallest whole factor
        ``k`` that reaches ``min_steps`` SGD steps, each decay step ``lr_decay ** (1/k)`` (same overall decay)."""
        steps = self.epochs * math.ceil(num_labelled / self.batch_size)
        factor = max(1, math.ceil(self.min_steps / steps)) if steps else 1
        return replace(self, epochs=self.epochs * factor, decay_from=self.decay_from * factor,
                       lr_decay=self.lr_decay ** (1 / factor), min_steps=0)

    def lr_at(self, epoch: int) -> float:
        """Learning rate of 0-based ``epoch``."""
        return lr_at(self.lr, self.lr_decay, self.decay_from, epoch)


def train_sgd(
    model: nn.Module,
    inputs: Tensor | ImageSet,
    labels: Tensor,
    config: FinetuneConfig,
    generator: torch.Generator,
    score: Callable[[nn.Module], float] | None = None,
    progress: bool | None = None,
    desc: str = "SGD",
    precision: str = "float32",
) -> list[dict]:
    """SGD on ``model`` (already on its device) over images or pre-computed inputs; history per epoch. With
    ``score``, the model ends with the weights of its best-scoring epoch (the first of equals). A schedule
    stretched ``k``-fold for a small labelled set is scored every ``k`` epochs, so every schedule is scored as
    often as the unstretched one. Forward passes and the loss in ``precision`` (:func:`~hebbkit.loops.autocast`;
    weights, gradients and momenta float32). Augmented images are flipped and cropped as stored (uint8), then
    standardised."""
    device = device_of(model)
    check_precision(precision)
    optimizer = sgd(model.parameters(), lr=config.lr, momentum=config.momentum, nesterov=config.nesterov,
                    weight_decay=config.weight_decay)
    history = []
    best = BestState(model)
    stretched = config.stretched(len(labels))
    every = stretched.epochs // config.epochs  # score once per epoch of the unstretched schedule
    config = stretched
    has_batchnorm1d = any(isinstance(m, nn.BatchNorm1d) for m in model.modules())
    for epoch in tqdm(range(config.epochs), desc=desc, disable=not show_progress(progress), leave=False):
        for group in optimizer.param_groups:
            group["lr"] = config.lr_at(epoch)
        model.train()
        order = torch.randperm(len(labels), generator=generator)
        loss_sum, correct = 0.0, 0
        for start in range(0, len(order), config.batch_size):
            index = order[start : start + config.batch_size]
            if isinstance(inputs, ImageSet):
                batch = inputs.subset(index)
                if config.augment:  # draws even for a skipped batch
                    batch = replace(batch, images=augment(batch.images.to(device), generator))
                x = as_input(batch.float(device))
            else:
                x = inputs[index].to(device)
            y = labels[index].to(device)
            if len(index) == 1 and has_batchnorm1d:
                continue  # BatchNorm cannot train on a batch of one
            with autocast(device, precision):
                logits = model(x)
                loss = F.cross_entropy(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.item() * len(index)
            correct += (logits.argmax(1) == y).sum().item()
        row = {"epoch": epoch + 1, "lr": config.lr_at(epoch), "train_loss": loss_sum / len(labels),
               "train_accuracy": 100 * correct / len(labels)}
        if score is not None and (epoch + 1) % every == 0:
            row["val_accuracy"] = score(model)
            best.offer(row["val_accuracy"])
        history.append(row)
    best.restore()
    return history


def train_head(
    features: Tensor,
    labels: Tensor,
    num_classes: int,
    config: FinetuneConfig = FinetuneConfig(frozen=True),
    *,
    seed: int = 0,
    val: tuple[Tensor, Tensor] | None = None,
    device: torch.device = torch.device("cpu"),
    progress: bool | None = None,
) -> tuple[Head, list[dict]]:
    """A dropout + linear :class:`~.net.Head` trained by SGD on fixed ``features`` (N, D); history per epoch.
    With ``val`` (features, labels) the head of the best validation epoch is returned."""
    generator = seed_everything(seed)
    head = Head(features.shape[1], num_classes, config.dropout).to(device)
    score = None if val is None else (lambda model: accuracy(model, *val))
    history = train_sgd(head, features, labels, config, generator, score, progress, "head")
    return head.eval(), history


def finetune(
    net: LaganiNet,
    layer: int,
    labelled: ImageSet,
    config: FinetuneConfig = FinetuneConfig(),
    *,
    seed: int = 0,
    val: ImageSet | None = None,
    progress: bool | None = None,
    precision: str = "float32",
) -> tuple[Classifier, list[dict]]:
    """Layer ``layer`` of ``net`` with a new classifier, trained on ``labelled`` on ``net``'s device; history
    per epoch.

    End to end by default; with ``config.frozen`` only the classifier learns (blocks fixed, in eval mode).
    ``val``: images scored after every epoch (the history's ``val_accuracy``, the SGD convergence curve);
    the classifier of the best epoch is returned. ``precision``: of end-to-end training's and scoring's forward
    passes (:func:`~hebbkit.loops.autocast`); a frozen trunk's features and its head stay float32.
    """
    check_layer(layer)
    check_precision(precision)
    device = device_of(net)
    generator = seed_everything(seed)
    classifier = place(Classifier(net, layer, config.dropout), device)
    if config.frozen:
        features = next(block_features(net, labelled, (layer,)))[1]
        val_features = None if val is None else (next(block_features(net, val, (layer,)))[1], val.labels)
        head, history = train_head(features, labelled.labels, net.num_classes, config, seed=seed, val=val_features,
                                   device=device, progress=progress)
        classifier.head.load_state_dict(head.state_dict())
        return classifier.eval(), history
    score = None if val is None else (lambda model: evaluate(model, val, precision=precision))
    history = train_sgd(classifier, labelled, labelled.labels, config, generator, score, progress,
                        f"fine-tune L{layer}", precision)
    return classifier.eval(), history
