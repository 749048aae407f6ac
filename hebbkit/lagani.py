"""Lagani's six-layer network with unsupervised pre-training and semi-supervised fine-tuning (SEBD 2022).

Network (no padding): conv1 5×5 3→96, ReLU, maxpool 2, BN; conv2 3×3 →128, ReLU, BN; conv3 3×3 →192, ReLU,
maxpool 2, BN; conv4 3×3 →256, ReLU, BN; fc5 →4096, ReLU, BN. "Layer L" is the net cut after the BN of
block L, followed by dropout and a new linear classifier (:class:`Classifier`). As in the reference code
(GabrieleLagani/HebbianLearning, ``models/hebb/model_6l.py`` and ``models/gdes/*_6l.py``) the Hebbian methods
use a network without biases whose blocks 3–5 end in the variance-preserving :class:`ModifiedBatchNorm`, and
soft-WTA's layers output ``w·x/‖w‖`` and see ZCA-whitened images (:class:`NetSpec`); the VAE, supervised and
random methods use the plain network.

Methods (``METHODS``, one :class:`Method` each, the one place to add another):

* ``hpca``, ``softwta``: Hebbian pre-training of all five blocks together (:func:`pretrain_hebbian`), HPCA
  with ``f = ReLU`` and Lagani's :class:`~hebbkit.rules.SoftWTA`; a Hebbian class-mean classifier on block 5
  picks the best epoch on validation images, as the reference's supervised Hebbian ``fc6`` does.
* ``vae``: the five blocks as the encoder of the reference's variational auto-encoder (:class:`VAE`).
* ``supervised``: no pre-training; the cut network is trained end to end on the labelled images.
* ``random``: no pre-training; the random blocks stay frozen and only the classifier learns.

Fine-tuning (:func:`finetune`) trains the cut network end to end by SGD with Nesterov momentum on the
labelled subset and keeps the epoch that scores best on the validation images it is given.
"""

from __future__ import annotations

import copy
import functools
import math
import sys
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from .data import ImageSet
from .layers import HebbianConv2d, HebbianLinear
from .rules import HPCA, Rule, SoftWTA, unit_norm_, weighted_instar
from .utils import check_choice, check_positive, resolve_device, seed_everything
from .whitening import ZCA

LAYERS = (1, 2, 3, 4, 5)
WIDTHS = (96, 128, 192, 256, 4096)
INPUT_SHAPE = (3, 32, 32)
NUM_CLASSES = 10

# ------------------------------------------------------------------------------------------ checks


def check_layer(layer: int) -> int:
    """Return ``layer`` if it is an integer in 1..5, else raise ``ValueError``."""
    if isinstance(layer, bool) or not isinstance(layer, int) or layer not in LAYERS:
        raise ValueError(f"layer must be an integer in 1..5, got {layer!r}")
    return layer


def _default_progress(progress: bool | None) -> bool:
    return sys.stderr.isatty() if progress is None else progress


# ----------------------------------------------------------------------------------------- network


class _VariancePreserving:
    """Lagani's modified batch norm: ``BN(x) · √((running_var + ε) / (mean(running_var) + ε))``, so channels
    stay unit-variance on average but keep their relative variances (reference: ``hebb.functional.modified_bn``)."""

    running_var: Tensor
    eps: float

    def forward(self, x: Tensor) -> Tensor:
        out = super().forward(x)  # type: ignore[misc]  # updates running_var first in training mode
        ratio = (self.running_var + self.eps) / (self.running_var.mean() + self.eps)
        return out * ratio.sqrt().view(1, -1, *[1] * (x.dim() - 2))


class ModifiedBatchNorm1d(_VariancePreserving, nn.BatchNorm1d):
    """:class:`nn.BatchNorm1d` that preserves relative variances (see :class:`_VariancePreserving`)."""


class ModifiedBatchNorm2d(_VariancePreserving, nn.BatchNorm2d):
    """:class:`nn.BatchNorm2d` that preserves relative variances (see :class:`_VariancePreserving`)."""


@dataclass(frozen=True)
class NetSpec:
    """Which of the reference's networks a method uses.

    ``hebbian``: no biases and :class:`ModifiedBatchNorm` after blocks 3–5 (the Hebbian net; plain BN there
    when ``modified_bn`` is off); else biases and plain BN (the backprop net). ``project``: layers output
    ``w·x/‖w‖`` (soft-WTA's ``vector_proj2d``). ``whiten``: ZCA-whiten the input (fitted on the pre-training
    images, stored with the weights).
    """

    hebbian: bool = False
    project: bool = False
    whiten: bool = False
    modified_bn: bool = True


class Block(nn.Module):
    """``layer → [÷‖w‖] → ReLU → [maxpool 2] → BN``; ``layer`` is a (possibly plastic) conv or linear layer."""

    def __init__(self, layer: HebbianConv2d | HebbianLinear, pool: bool, modified_norm: bool, project: bool) -> None:
        super().__init__()
        self.layer, self.pool, self.project = layer, pool, project
        linear = isinstance(layer, nn.Linear)
        units = layer.out_features if linear else layer.out_channels
        norms = {(True, True): ModifiedBatchNorm1d, (True, False): nn.BatchNorm1d,
                 (False, True): ModifiedBatchNorm2d, (False, False): nn.BatchNorm2d}
        self.norm = norms[linear, modified_norm](units)

    def prepare(self, x: Tensor) -> Tensor:
        """The input as the layer takes it (flattened for the fully connected block)."""
        return x.flatten(1) if isinstance(self.layer, nn.Linear) else x

    def activation(self, x: Tensor) -> Tensor:
        """ReLU of the layer's output (divided by each unit's weight norm when ``project``)."""
        y = self.layer(self.prepare(x))
        if self.project:
            norms = self.layer.weight.flatten(1).norm(dim=1)
            y = y / torch.where(norms == 0, 1.0, norms).view(1, -1, *[1] * (y.dim() - 2))
        return F.relu(y)

    def forward(self, x: Tensor) -> Tensor:
        y = self.activation(x)
        return self.norm(F.max_pool2d(y, 2) if self.pool else y)


class LaganiNet(nn.Module):
    """Lagani's network for ``spec``; ``width`` scales every layer's units (1.0 = the paper's sizes)."""

    def __init__(self, spec: NetSpec = NetSpec(), num_classes: int = NUM_CLASSES, width: float = 1.0) -> None:
        super().__init__()
        check_positive("width", width)
        self.spec = spec
        c = [max(1, round(w * width)) for w in WIDTHS]
        bias = not spec.hebbian

        def block(layer, pool: bool, index: int) -> Block:
            return Block(layer, pool, modified_norm=spec.hebbian and spec.modified_bn and index >= 3,
                         project=spec.project)

        self.whiten = ZCA(INPUT_SHAPE) if spec.whiten else nn.Identity()
        self.blocks = nn.ModuleList(
            [
                block(HebbianConv2d(3, c[0], 5, bias=bias, plastic=False), True, 1),  # 32 → 28 → 14
                block(HebbianConv2d(c[0], c[1], 3, bias=bias, plastic=False), False, 2),  # → 12
                block(HebbianConv2d(c[1], c[2], 3, bias=bias, plastic=False), True, 3),  # → 10 → 5
                block(HebbianConv2d(c[2], c[3], 3, bias=bias, plastic=False), False, 4),  # → 3
                block(HebbianLinear(c[3] * 3 * 3, c[4], bias=bias, plastic=False), False, 5),
            ]
        )
        self.feature_dims = (c[0] * 14 * 14, c[1] * 12 * 12, c[2] * 5 * 5, c[3] * 3 * 3, c[4])
        self.fc6 = nn.Linear(c[4], num_classes)

    def features(self, x: Tensor, layer: int) -> Tensor:
        """Output of block ``layer`` (after its BN), flattened to (N, feature_dims[layer-1])."""
        x = self.whiten(x)
        for block in self.blocks[: check_layer(layer)]:
            x = block(x)
        return x.flatten(1)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc6(self.features(x, 5))


class Classifier(nn.Module):
    """Layer ``L`` of a trunk: its whitening, blocks 1..L, dropout, and a new linear classifier."""

    def __init__(self, trunk: LaganiNet, layer: int, dropout: float = 0.5, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.layer = check_layer(layer)
        self.whiten = copy.deepcopy(trunk.whiten)
        self.blocks = nn.ModuleList(copy.deepcopy(list(trunk.blocks[:layer])))
        self.head = Head(trunk.feature_dims[layer - 1], num_classes, dropout)

    def features(self, x: Tensor) -> Tensor:
        x = self.whiten(x)
        for block in self.blocks:
            x = block(x)
        return x.flatten(1)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


class Head(nn.Sequential):
    """Dropout, then a linear classifier."""

    def __init__(self, in_features: int, num_classes: int = NUM_CLASSES, dropout: float = 0.5) -> None:
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout!r}")
        super().__init__(nn.Dropout(dropout), nn.Linear(in_features, num_classes))


# ---------------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class PretrainConfig:
    """Unsupervised pre-training settings (defaults: the reference code's).

    Hebbian: ``epochs`` of joint training of all blocks at ``batch_size``, SGD step ``lr`` on the rule's ΔW
    (HPCA's divided by √fan-in, the reference's ``adaptive_step``), soft-WTA ``temperature``; with more than one
    epoch, the epoch whose Hebbian class-mean classifier scores best on the validation images is kept.
    VAE: ``vae_epochs`` of SGD with Nesterov momentum 0.9 at ``vae_lr``, halved every epoch from
    ``vae_decay_from``, batch ``vae_batch_size``, loss ``MSE + vae_beta · KL``, ``latent_dim`` latents; the epoch
    with the best validation loss is kept. ``num_images``: images used (``None`` = all). ``zca_eps``: soft-WTA's
    whitening constant. ``checkpoints_per_epoch``: convergence probes per Hebbian epoch. ``statistics_images``:
    the first images whose average batch statistics become the BN running statistics after pre-training
    (the reference keeps the running averages of training, momentum 0.1). ``modified_bn``: the Hebbian
    networks' modified BN after blocks 3–5, as in the reference (off: plain BN).
    """

    epochs: float = 20.0
    batch_size: int = 64
    lr: float = 1e-2
    temperature: float = 0.02
    num_images: int | None = None
    zca_eps: float = 1e-2
    vae_epochs: float = 20.0
    vae_lr: float = 1e-3
    vae_batch_size: int = 64
    vae_decay_from: int = 10
    vae_beta: float = 0.5
    latent_dim: int = 256
    checkpoints_per_epoch: int = 1
    statistics_images: int = 10_000
    modified_bn: bool = True

    def __post_init__(self) -> None:
        for name in ("epochs", "lr", "temperature", "zca_eps", "vae_epochs", "vae_lr", "vae_beta"):
            check_positive(name, getattr(self, name))
        for name in ("batch_size", "vae_batch_size", "latent_dim", "checkpoints_per_epoch", "statistics_images"):
            check_positive(name, getattr(self, name), integer=True)
        if self.num_images is not None:
            check_positive("num_images", self.num_images, integer=True)
        if isinstance(self.vae_decay_from, bool) or not isinstance(self.vae_decay_from, int) or self.vae_decay_from < 0:
            raise ValueError(f"vae_decay_from must be an integer >= 0, got {self.vae_decay_from!r}")


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


def lr_at(lr: float, decay: float, decay_from: int, epoch: int) -> float:
    """``lr`` times ``decay`` once for every epoch from ``decay_from`` (0-based) up to ``epoch``."""
    return lr * decay ** max(0, epoch - decay_from + 1)


# ------------------------------------------------------------------------------------- data helpers


FAST_LAYOUT = torch.channels_last  # convolutions on (N, H, W, C) memory run faster on CPUs (and on GPUs)


def as_input(x: Tensor) -> Tensor:
    """``x`` in the layout the networks run fastest on: channels-last for image-shaped tensors."""
    return x.contiguous(memory_format=FAST_LAYOUT) if x.dim() == 4 else x


def batches(
    images: ImageSet, batch_size: int, device: torch.device, order: Tensor | None = None
) -> Iterator[tuple[Tensor, Tensor]]:
    """(float standardised images, labels) slices of ``images``, in ``order`` if given."""
    index = torch.arange(len(images)) if order is None else order
    for start in range(0, len(index), batch_size):
        part = images.subset(index[start : start + batch_size])
        yield as_input(part.float(device)), part.labels.to(device)


CROP_PADDING = 4


def augment(x: Tensor, generator: torch.Generator) -> Tensor:
    """Flip each image horizontally with probability 1/2, then crop it back to its size at a random offset
    from its ``CROP_PADDING``-pixel reflect padding (the usual CIFAR-10 augmentation)."""
    n, channels, height, width = x.shape
    flip = (torch.rand(n, generator=generator) < 0.5).to(x.device)
    x = torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
    padded = F.pad(x, (CROP_PADDING,) * 4, mode="reflect")
    dy, dx = torch.randint(0, 2 * CROP_PADDING + 1, (2, n, 1), generator=generator)
    rows = (dy + torch.arange(height)).to(x.device)[:, None, :, None]
    cols = (dx + torch.arange(width)).to(x.device)[:, None, None, :]
    return padded[torch.arange(n, device=x.device)[:, None, None, None],
                  torch.arange(channels, device=x.device)[None, :, None, None], rows, cols]


def _count(epochs: float, num: int, batch_size: int) -> int:
    return max(1, math.ceil(epochs * num / batch_size))


def _endless_order(num: int, generator: torch.Generator) -> Iterator[Tensor]:
    while True:
        yield torch.randperm(num, generator=generator)


def _steps(images: ImageSet, epochs: float, batch_size: int, generator: torch.Generator) -> Iterator[Tensor]:
    """Index batches for ``epochs`` (fractional allowed) passes, reshuffled every pass."""
    remaining = _count(epochs, len(images), batch_size)
    for order in _endless_order(len(images), generator):
        for start in range(0, len(order), batch_size):
            if remaining == 0:
                return
            remaining -= 1
            yield order[start : start + batch_size]


# ------------------------------------------------------------------------------------- pre-training

Checkpoint = Callable[[LaganiNet, float], None]


@dataclass(frozen=True)
class Method:
    """A pre-training method: its network, how it pre-trains (``None``: not at all) and whether fine-tuning
    trains its blocks (``False``: only the classifier learns, on frozen features)."""

    name: str
    display: str
    net: NetSpec
    pretrain: Callable[..., None] | None
    trains_trunk: bool = True


def make_method(method: str) -> Method:
    """The :class:`Method` registered as ``method`` in ``METHODS``."""
    return METHODS[check_choice("method", method, METHODS)]


def net_spec(method: str, config: PretrainConfig) -> NetSpec:
    """The network ``method`` pre-trains and fine-tunes under ``config``."""
    return replace(make_method(method).net, modified_bn=config.modified_bn)


def check_method(method: str) -> str:
    """Return ``method`` if it is registered in ``METHODS``, else raise ``ValueError``."""
    return make_method(method).name


def pretrain(
    method: str,
    images: ImageSet,
    config: PretrainConfig = PretrainConfig(),
    *,
    seed: int = 0,
    width: float = 1.0,
    val: ImageSet | None = None,
    device: str | torch.device = "auto",
    progress: bool | None = None,
    checkpoint: Checkpoint | None = None,
) -> LaganiNet:
    """A :class:`LaganiNet` pre-trained by ``method`` on ``images`` (labels used only by the Hebbian epoch
    selection, as in the reference), with BN statistics averaged over ``images``.

    ``val``: images that pick the best pre-training epoch. ``checkpoint(net, epochs)`` is called (Hebbian
    methods) before training and after every ``1/checkpoints_per_epoch`` epoch.
    """
    spec = make_method(method)
    device = resolve_device(device)
    generator = seed_everything(seed)
    net = LaganiNet(net_spec(method, config), width=width).to(device, memory_format=FAST_LAYOUT)
    if config.num_images is not None:
        images = images.subset(slice(0, config.num_images))
    if spec.net.whiten:
        net.whiten = ZCA(INPUT_SHAPE, config.zca_eps).to(device)
        net.whiten.fit([x for x, _ in batches(images, 2048, device)])
    if spec.pretrain is not None:
        spec.pretrain(net, images, config, val=val, generator=generator, device=device, progress=progress,
                      checkpoint=checkpoint)
    settle_statistics(net, images.subset(slice(0, config.statistics_images)), device=device)
    return net.eval()


def pretrain_hebbian(
    net: LaganiNet,
    images: ImageSet,
    config: PretrainConfig,
    *,
    make_rule: Callable[[PretrainConfig], Rule],
    fan_in_step: bool,
    val: ImageSet | None,
    generator: torch.Generator,
    device: torch.device,
    progress: bool | None,
    checkpoint: Checkpoint | None,
) -> None:
    """Train all blocks together, as the reference does: every batch runs through the whole network in
    training mode (batch statistics in BN) and each plastic layer learns from the output of the block below.

    ``make_rule(config)`` gives the rule. SGD step ``lr`` on each layer's ΔW, divided by √fan-in where ``fan_in_step`` (HPCA). A class-mean
    classifier on block 5 learns alongside from the labels (the rule :func:`~hebbkit.rules.weighted_instar`
    with one-hot responsibilities, the reference's supervised Hebbian ``fc6``); with ``val`` and more than
    one epoch, the epoch whose classifier scores best on ``val`` is kept.
    """
    rule = make_rule(config)
    layers = [block.layer for block in net.blocks]
    groups = []
    for layer in layers:
        layer.rule, layer.plastic = rule, True
        if rule.unit_norm:
            unit_norm_(layer.weight)
        fan_in = layer.weight[0].numel()
        groups.append({"params": [layer.weight], "lr": config.lr / math.sqrt(fan_in) if fan_in_step else config.lr})
    optimizer = torch.optim.SGD(groups, lr=config.lr)
    means = torch.zeros(NUM_CLASSES, net.feature_dims[4], device=device)  # the class-mean classifier
    total = _count(config.epochs, len(images), config.batch_size)
    per_epoch = _count(1, len(images), config.batch_size)
    per_checkpoint = _count(1 / config.checkpoints_per_epoch, len(images), config.batch_size)
    best, best_score = None, -1.0
    if checkpoint is not None:
        checkpoint(net, 0.0)
    steps = _steps(images, config.epochs, config.batch_size, generator)
    bar = tqdm(steps, total=total, desc="Hebbian", disable=not _default_progress(progress), leave=False)
    for step, index in enumerate(bar, start=1):
        batch = images.subset(index)
        net.train()
        optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            features = net.features(as_input(batch.float(device)), 5)
            teacher = F.one_hot(batch.labels.to(device), NUM_CLASSES).to(features.dtype)
            means.add_(weighted_instar(features, means, teacher), alpha=config.lr)
        optimizer.step()
        if rule.unit_norm:
            for layer in layers:
                unit_norm_(layer.weight)
        net.eval()
        if checkpoint is not None and step % per_checkpoint == 0:
            checkpoint(net, step * config.batch_size / len(images))
        if val is not None and total > per_epoch and (step % per_epoch == 0 or step == total):
            score = class_mean_accuracy(net, means, val, device)
            if score > best_score:
                best, best_score = copy.deepcopy(net.state_dict()), score
    if checkpoint is not None and total % per_checkpoint:  # the end of training, when not already probed
        checkpoint(net, total * config.batch_size / len(images))
    for layer in layers:
        layer.plastic, layer.weight.grad = False, None
    if best is not None:
        net.load_state_dict(best)


@torch.no_grad()
def class_mean_accuracy(net: LaganiNet, means: Tensor, images: ImageSet, device: torch.device) -> float:
    """Accuracy (%) of the class-mean classifier ``argmax_c m_c·x/‖m_c‖`` on block 5's features."""
    directions = means / means.norm(dim=1, keepdim=True).clamp_min(1e-12)
    hits = [(net.features(x, 5) @ directions.T).argmax(1) == y for x, y in batches(images, 256, device)]
    return 100 * torch.cat(hits).float().mean().item()


@torch.no_grad()
def settle_statistics(net: LaganiNet, images: ImageSet, batch_size: int = 256,
                      device: str | torch.device = "auto") -> None:
    """Set every block's BN running statistics to the average of its batch statistics over ``images``, block
    after block, each computed from the outputs of the blocks below with their final statistics."""
    device = resolve_device(device)
    below = None
    for layer, block in enumerate(net.blocks, start=1):
        below = _settle(net, block, images, below, batch_size, device, keep_outputs=layer < len(net.blocks))
    net.eval()


@torch.no_grad()
def _settle(net: LaganiNet, block: Block, images: ImageSet, below: Tensor | None, batch_size: int,
            device: torch.device, keep_outputs: bool) -> Tensor | None:
    chunks = torch.arange(len(images)).split(batch_size)
    with _averaging_statistics(net, block.norm):
        for index in chunks:
            block(_block_input(net, images, below, index, device))
    if not keep_outputs:
        return None
    return torch.cat([block(_block_input(net, images, below, index, device)).cpu() for index in chunks])


def _block_input(net: LaganiNet, images: ImageSet, below: Tensor | None, index: Tensor, device: torch.device) -> Tensor:
    """Batch ``index`` of a block's input: the whitened standardised images for block 1, else the stored
    outputs of the block below (kept on the CPU)."""
    if below is None:
        return as_input(net.whiten(as_input(images.subset(index).float(device))))
    return as_input(below[index].to(device))


@contextmanager
def _averaging_statistics(model: nn.Module, norm: nn.modules.batchnorm._BatchNorm) -> Iterator[None]:
    """Within the block, ``model`` runs in eval mode except ``norm``, whose running statistics restart and
    become the plain average of the batch statistics it sees; ``model`` is back in eval mode after."""
    norm.reset_running_stats()
    momentum, norm.momentum = norm.momentum, None  # cumulative average
    model.eval()
    norm.train()
    try:
        yield
    finally:
        norm.momentum = momentum
        model.eval()


# ----------------------------------------------------------------------------------------------- VAE


class VAE(nn.Module):
    """The reference's variational auto-encoder (``models/gdes/vae_6l.py``): a :class:`LaganiNet`'s five
    blocks encode; ``fc_mu``/``fc_var`` give the latent Gaussian; the decoder mirrors the encoder with
    transposed convolutions, ReLU and BN, and un-pools with the encoder's max-pooling indices."""

    def __init__(self, net: LaganiNet, latent_dim: int = 256) -> None:
        super().__init__()
        self.net = net
        c = [b.layer.out_features if isinstance(b.layer, nn.Linear) else b.layer.out_channels for b in net.blocks]
        self.conv_shape = (c[3], 3, 3)
        self.fc_mu, self.fc_var = nn.Linear(c[4], latent_dim), nn.Linear(c[4], latent_dim)
        self.dec_fc = nn.Sequential(nn.Linear(latent_dim, c[4]), nn.ReLU(), nn.BatchNorm1d(c[4]),
                                    nn.Linear(c[4], c[3] * 9), nn.ReLU(), nn.BatchNorm1d(c[3] * 9))
        self.dec_conv2, self.dec_bn2 = nn.ConvTranspose2d(c[3], c[2], 3), nn.BatchNorm2d(c[2])  # 3 → 5, unpool → 10
        self.dec_conv3, self.dec_bn3 = nn.ConvTranspose2d(c[2], c[1], 3), nn.BatchNorm2d(c[1])  # → 12
        self.dec_conv4, self.dec_bn4 = nn.ConvTranspose2d(c[1], c[0], 3), nn.BatchNorm2d(c[0])  # → 14, unpool → 28
        self.dec_conv5, self.dec_bn5 = nn.ConvTranspose2d(c[0], 3, 5), nn.BatchNorm2d(3)  # → 32

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        indices = []
        h = self.net.whiten(x)
        for block in self.net.blocks:
            y = block.activation(h)
            if block.pool:
                y, index = F.max_pool2d(y, 2, return_indices=True)
                indices.append(index)
            h = block.norm(y)
        mean, log_var = self.fc_mu(h), self.fc_var(h)
        z = mean + torch.randn_like(mean) * (0.5 * log_var).exp()
        d = self.dec_fc(z).view(-1, *self.conv_shape)
        d = self.dec_bn2(F.max_unpool2d(F.relu(self.dec_conv2(d)), indices[1], 2))
        d = self.dec_bn3(F.relu(self.dec_conv3(d)))
        d = self.dec_bn4(F.max_unpool2d(F.relu(self.dec_conv4(d)), indices[0], 2))
        return self.dec_bn5(self.dec_conv5(d)), mean, log_var


def vae_loss(x: Tensor, reconstruction: Tensor, mean: Tensor, log_var: Tensor, beta: float = 0.5) -> Tensor:
    """The reference's ELBO loss: mean squared error over pixels plus ``beta`` times the KL divergence to the
    unit Gaussian (summed over latents, averaged over images)."""
    kl = (-0.5 * (1 + log_var - mean.square() - log_var.exp()).sum(1)).mean()
    return F.mse_loss(reconstruction, x) + beta * kl


def pretrain_vae(
    net: LaganiNet,
    images: ImageSet,
    config: PretrainConfig,
    *,
    val: ImageSet | None,
    generator: torch.Generator,
    device: torch.device,
    progress: bool | None,
    checkpoint: Checkpoint | None,
) -> None:
    """SGD with Nesterov momentum on :func:`vae_loss`, the rate halved every epoch from ``vae_decay_from``;
    with ``val``, the encoder of the epoch with the lowest validation loss is kept."""
    vae = VAE(net, config.latent_dim).to(device)
    optimizer = torch.optim.SGD(vae.parameters(), lr=config.vae_lr, momentum=0.9, nesterov=True)
    total = _count(config.vae_epochs, len(images), config.vae_batch_size)
    per_epoch = _count(1, len(images), config.vae_batch_size)
    best, best_loss = None, math.inf
    steps = _steps(images, config.vae_epochs, config.vae_batch_size, generator)
    for step, index in enumerate(tqdm(steps, total=total, desc="VAE", disable=not _default_progress(progress),
                                      leave=False), start=1):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(config.vae_lr, 0.5, config.vae_decay_from, (step - 1) // per_epoch)
        x = as_input(images.subset(index).float(device))
        vae.train()
        optimizer.zero_grad(set_to_none=True)
        loss = vae_loss(x, *vae(x), beta=config.vae_beta)
        if not torch.isfinite(loss):
            raise RuntimeError(f"VAE pre-training diverged at step {step} (loss {loss.item()}); lower vae_lr")
        loss.backward()
        optimizer.step()
        if val is not None and total > per_epoch and (step % per_epoch == 0 or step == total):
            score = _vae_validation_loss(vae, val, config.vae_beta, device)
            if score < best_loss:
                best, best_loss = copy.deepcopy(net.state_dict()), score
    if best is not None:
        net.load_state_dict(best)


@torch.no_grad()
def _vae_validation_loss(vae: VAE, images: ImageSet, beta: float, device: torch.device) -> float:
    vae.eval()
    losses = [vae_loss(x, *vae(x), beta=beta).item() * len(x) for x, _ in batches(images, 256, device)]
    return sum(losses) / len(images)


# ----------------------------------------------------------------------------- features and heads


@torch.no_grad()
def layer_features(
    net: LaganiNet,
    images: ImageSet,
    layers: tuple[int, ...] = LAYERS,
    batch_size: int = 256,
    device: str | torch.device = "auto",
) -> Iterator[tuple[int, Tensor]]:
    """Yield ``(layer, features)`` for each requested layer, computing every block once for all images.

    Only the current block's outputs are held (on the CPU), so memory is one layer's features at a time.
    """
    device = resolve_device(device)
    for layer in layers:
        check_layer(layer)
    net = net.to(device, memory_format=FAST_LAYOUT).eval()
    chunks = torch.arange(len(images)).split(batch_size)
    current = None
    for layer, block in enumerate(net.blocks[: max(layers)], start=1):
        current = torch.cat([block(_block_input(net, images, current, index, device)).cpu() for index in chunks])
        if layer in layers:
            yield layer, current.flatten(1)


def _train(
    model: nn.Module,
    inputs: Tensor | ImageSet,
    labels: Tensor,
    config: FinetuneConfig,
    generator: torch.Generator,
    device: torch.device,
    evaluate_epoch: Callable[[nn.Module], float] | None,
    progress: bool | None,
    desc: str,
) -> list[dict]:
    """SGD on ``model``; with ``evaluate_epoch``, the model ends with the weights of its best-scoring epoch
    (the first of equals). A schedule stretched ``k``-fold for a small labelled set is scored every ``k``
    epochs, so every schedule is scored as often as the unstretched one."""
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                                nesterov=config.nesterov, weight_decay=config.weight_decay)
    history = []
    best, best_score = None, -1.0
    stretched = config.stretched(len(labels))
    every = stretched.epochs // config.epochs  # score once per epoch of the unstretched schedule
    config = stretched
    has_batchnorm1d = any(isinstance(m, nn.BatchNorm1d) for m in model.modules())
    for epoch in tqdm(range(config.epochs), desc=desc, disable=not _default_progress(progress), leave=False):
        for group in optimizer.param_groups:
            group["lr"] = config.lr_at(epoch)
        model.train()
        order = torch.randperm(len(labels), generator=generator)
        loss_sum, correct = 0.0, 0
        for start in range(0, len(order), config.batch_size):
            index = order[start : start + config.batch_size]
            if isinstance(inputs, ImageSet):
                x = inputs.subset(index).float(device)
                x = as_input(augment(x, generator) if config.augment else x)
            else:
                x = inputs[index].to(device)
            y = labels[index].to(device)
            if len(index) == 1 and has_batchnorm1d:
                continue  # BatchNorm cannot train on a batch of one
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.item() * len(index)
            correct += (logits.argmax(1) == y).sum().item()
        row = {"epoch": epoch + 1, "lr": config.lr_at(epoch), "train_loss": loss_sum / len(labels),
               "train_accuracy": 100 * correct / len(labels)}
        if evaluate_epoch is not None and (epoch + 1) % every == 0:
            row["val_accuracy"] = evaluate_epoch(model)
            if row["val_accuracy"] > best_score:
                best, best_score = copy.deepcopy(model.state_dict()), row["val_accuracy"]
        history.append(row)
    if best is not None:
        model.load_state_dict(best)
    return history


def train_head(
    features: Tensor,
    labels: Tensor,
    config: FinetuneConfig = FinetuneConfig(frozen=True),
    *,
    seed: int = 0,
    val: tuple[Tensor, Tensor] | None = None,
    device: str | torch.device = "auto",
    progress: bool | None = None,
) -> tuple[Head, list[dict]]:
    """A dropout + linear :class:`Head` trained by SGD on fixed ``features``; history per epoch. With ``val``
    (features, labels) the head of the best validation epoch is returned."""
    device = resolve_device(device)
    generator = seed_everything(seed)
    head = Head(features.shape[1], NUM_CLASSES, config.dropout).to(device)
    evaluate_epoch = None if val is None else (lambda model: accuracy(model, *val, device=device))
    history = _train(head, features, labels, config, generator, device, evaluate_epoch, progress, "head")
    return head.eval(), history


def finetune(
    net: LaganiNet,
    layer: int,
    labelled: ImageSet,
    config: FinetuneConfig = FinetuneConfig(),
    *,
    seed: int = 0,
    val: ImageSet | None = None,
    device: str | torch.device = "auto",
    progress: bool | None = None,
) -> tuple[Classifier, list[dict]]:
    """Layer ``layer`` of ``net`` with a new classifier, trained on ``labelled``; history per epoch.

    End to end by default; with ``config.frozen`` only the classifier learns (blocks fixed, in eval mode).
    ``val``: images scored after every epoch (the history's ``val_accuracy``, the SGD convergence curve);
    the classifier of the best epoch is returned.
    """
    check_layer(layer)
    device = resolve_device(device)
    generator = seed_everything(seed)
    classifier = Classifier(net, layer, config.dropout).to(device, memory_format=FAST_LAYOUT)
    if config.frozen:
        features = next(layer_features(net, labelled, (layer,), device=device))[1]
        val_features = None if val is None else (next(layer_features(net, val, (layer,), device=device))[1], val.labels)
        head, history = train_head(features, labelled.labels, config, seed=seed, val=val_features, device=device,
                                   progress=progress)
        classifier.head.load_state_dict(head.state_dict())
        return classifier.eval(), history
    evaluate_epoch = None if val is None else (lambda model: evaluate(model, val, device=device))
    history = _train(classifier, labelled, labelled.labels, config, generator, device, evaluate_epoch, progress,
                     f"fine-tune L{layer}")
    return classifier.eval(), history


@torch.no_grad()
def predict(model: nn.Module, inputs: Tensor | ImageSet, batch_size: int = 256,
            device: str | torch.device = "auto") -> Tensor:
    """Predicted classes (on the CPU) of ``model`` for images, or for pre-computed inputs such as features."""
    device = resolve_device(device)
    was_training = model.training
    model.eval()
    if isinstance(inputs, ImageSet):
        parts = [model(x).argmax(1).cpu() for x, _ in batches(inputs, batch_size, device)]
    else:
        parts = [model(inputs[i : i + batch_size].to(device)).argmax(1).cpu()
                 for i in range(0, len(inputs), batch_size)]
    model.train(was_training)
    return torch.cat(parts) if parts else torch.empty(0, dtype=torch.int64)


def accuracy(model: nn.Module, inputs: Tensor, labels: Tensor, batch_size: int = 1024,
             device: str | torch.device = "auto") -> float:
    """Top-1 accuracy (%) of ``model`` on pre-computed inputs (e.g. features for a :class:`Head`)."""
    return 100 * (predict(model, inputs, batch_size, device) == labels).float().mean().item() if len(labels) else 0.0


def evaluate(model: nn.Module, images: ImageSet, batch_size: int = 256, device: str | torch.device = "auto") -> float:
    """Top-1 accuracy (%) of an image classifier on ``images``."""
    return accuracy(model, images, images.labels, batch_size, device)


METHODS: dict[str, Method] = {
    "hpca": Method("hpca", "HPCA", NetSpec(hebbian=True),
                   functools.partial(pretrain_hebbian, make_rule=lambda config: HPCA("relu"), fan_in_step=True)),
    "softwta": Method("softwta", "softWTA", NetSpec(hebbian=True, project=True, whiten=True),
                      functools.partial(pretrain_hebbian, make_rule=lambda config: SoftWTA(config.temperature),
                                        fan_in_step=False)),
    "vae": Method("vae", "VAE", NetSpec(), pretrain_vae),
    "supervised": Method("supervised", "supervised", NetSpec(), None),
    "random": Method("random", "random", NetSpec(), None, trains_trunk=False),
}
DISPLAY_NAMES = {name: method.display for name, method in METHODS.items()}
