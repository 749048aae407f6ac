"""Lagani's six-layer network with unsupervised pre-training and semi-supervised fine-tuning (SEBD 2022).

Network (no padding): conv1 5×5 3→96, ReLU, maxpool 2, BN; conv2 3×3 →128, ReLU, BN; conv3 3×3 →192, ReLU,
maxpool 2, BN; conv4 3×3 →256, ReLU, BN; fc5 →4096, ReLU, BN; fc6 →10. "Layer L" is the net cut after the
BN of block L, followed by dropout and a new linear classifier (:class:`Classifier`).

Methods (``METHODS``):

* ``hpca``, ``softwta``, ``wta``: Hebbian pre-training, block by block on unlabelled images, with the core's
  plastic layers (:mod:`hebbkit.layers`). HPCA uses ``f = ReLU``; the competitive rules compete on the cosine
  similarity between unit and input patch and move each unit towards the (responsibility-weighted) mean of
  the patches it wins, with unit-norm weights (:class:`CosineCompetitive`). After a block learns, its BN
  statistics are set to the exact average over the pre-training images.
* ``vae``: the same five blocks as the encoder of a variational auto-encoder trained by backprop.
* ``random``: no pre-training; the random blocks stay frozen and only the classifier learns.
* ``supervised``: no pre-training; the cut network is trained end to end on the labelled images.

Fine-tuning (:func:`finetune`) trains the cut network end to end by SGD on the labelled subset (the paper's
protocol; optionally with flips and crops, ``augment=True``), or, with ``FinetuneConfig(frozen=True)``, only
the classifier on fixed features (cheapest). Networks run in the channels-last memory layout (``FAST_LAYOUT``).
"""

from __future__ import annotations

import copy
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
from .rules import HPCA, as_rows, instar, soft_wta, unit_norm_, wta
from .utils import check_choice, check_positive, resolve_device, seed_everything

METHODS = ("hpca", "softwta", "wta", "vae", "random", "supervised")
HEBBIAN_METHODS = ("hpca", "softwta", "wta")
LAYERS = (1, 2, 3, 4, 5)
WIDTHS = (96, 128, 192, 256, 4096)
DISPLAY_NAMES = {
    "hpca": "HPCA",
    "softwta": "softWTA",
    "wta": "WTA",
    "vae": "VAE",
    "random": "random",
    "supervised": "supervised",
}

# ------------------------------------------------------------------------------------------ checks


def check_method(method: str) -> str:
    """Return ``method`` if it is one of ``METHODS``, else raise ``ValueError``."""
    return check_choice("method", method, METHODS)


def check_layer(layer: int) -> int:
    """Return ``layer`` if it is an integer in 1..5, else raise ``ValueError``."""
    if isinstance(layer, bool) or not isinstance(layer, int) or layer not in LAYERS:
        raise ValueError(f"layer must be an integer in 1..5, got {layer!r}")
    return layer


def _default_progress(progress: bool | None) -> bool:
    return sys.stderr.isatty() if progress is None else progress


# ----------------------------------------------------------------------------------------- network


class Block(nn.Module):
    """``layer → ReLU → [maxpool 2] → BN``; ``layer`` is a (possibly plastic) conv or linear layer."""

    def __init__(self, layer: HebbianConv2d | HebbianLinear, pool: bool) -> None:
        super().__init__()
        self.layer, self.pool = layer, pool
        units = layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels
        self.norm = nn.BatchNorm1d(units) if isinstance(layer, nn.Linear) else nn.BatchNorm2d(units)

    def prepare(self, x: Tensor) -> Tensor:
        """The input as the layer takes it (flattened for the fully connected block)."""
        return x.flatten(1) if isinstance(self.layer, nn.Linear) else x

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu(self.layer(self.prepare(x)))
        return self.norm(F.max_pool2d(y, 2) if self.pool else y)


class LaganiNet(nn.Module):
    """Lagani's six-layer network; ``width`` scales every layer's units (1.0 = the paper's sizes)."""

    def __init__(self, num_classes: int = 10, width: float = 1.0) -> None:
        super().__init__()
        check_positive("width", width)
        c = [max(1, round(w * width)) for w in WIDTHS]
        self.blocks = nn.ModuleList(
            [
                Block(HebbianConv2d(3, c[0], 5, plastic=False), pool=True),  # 32 → 28 → 14
                Block(HebbianConv2d(c[0], c[1], 3, plastic=False), pool=False),  # → 12
                Block(HebbianConv2d(c[1], c[2], 3, plastic=False), pool=True),  # → 10 → 5
                Block(HebbianConv2d(c[2], c[3], 3, plastic=False), pool=False),  # → 3
                Block(HebbianLinear(c[3] * 3 * 3, c[4], plastic=False), pool=False),
            ]
        )
        self.feature_dims = (c[0] * 14 * 14, c[1] * 12 * 12, c[2] * 5 * 5, c[3] * 3 * 3, c[4])
        self.fc6 = nn.Linear(c[4], num_classes)

    def features(self, x: Tensor, layer: int) -> Tensor:
        """Output of block ``layer`` (after its BN), flattened to (N, feature_dims[layer-1])."""
        for block in self.blocks[: check_layer(layer)]:
            x = block(x)
        return x.flatten(1)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc6(self.features(x, 5))


class Classifier(nn.Module):
    """Layer ``L`` of a trunk: blocks 1..L, dropout, and a new linear classifier."""

    def __init__(self, trunk: LaganiNet, layer: int, dropout: float = 0.5, num_classes: int = 10) -> None:
        super().__init__()
        self.layer = check_layer(layer)
        self.blocks = nn.ModuleList(copy.deepcopy(list(trunk.blocks[:layer])))
        self.head = Head(trunk.feature_dims[layer - 1], num_classes, dropout)

    def features(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = block(x)
        return x.flatten(1)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


class Head(nn.Sequential):
    """Dropout, then a linear classifier."""

    def __init__(self, in_features: int, num_classes: int = 10, dropout: float = 0.5) -> None:
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout!r}")
        super().__init__(nn.Dropout(dropout), nn.Linear(in_features, num_classes))


# -------------------------------------------------------------------------------- Hebbian rules


@dataclass(frozen=True)
class CosineCompetitive:
    """Competitive learning on cosine similarity, for unit-norm weights (Lagani's soft/hard WTA).

    Responsibilities ``r = softmax(cos / T)`` over units (``competition="soft"``) or a one-hot of the
    winner (``"wta"``), where ``cos`` is the similarity of each unit with each input patch. Each unit moves
    towards the responsibility-weighted mean of its patches: ``Δw_i = Σ_n r_ni (x_n − w_i) / Σ_n r_ni``
    (the core ``instar`` rule, rescaled per unit by its share of the batch).
    """

    competition: str = "soft"
    temperature: float = 0.02

    def __post_init__(self) -> None:
        if self.competition not in ("soft", "wta"):
            raise ValueError(f"competition must be 'soft' or 'wta', got {self.competition!r}")
        check_positive("temperature", self.temperature)

    def update(self, x: Tensor, weight: Tensor, y: Tensor, *, scale: float = 1.0, **geometry) -> Tensor:
        unit_norms = weight.flatten(1).norm(dim=1).clamp_min(1e-12).view(1, -1, *[1] * (y.dim() - 2))
        cosine = y / (patch_norms(x, weight, **geometry) * unit_norms)
        r = soft_wta(cosine, self.temperature) if self.competition == "soft" else wta(cosine)
        share = as_rows(r).mean(0).clamp_min(1e-12)
        return instar(x, weight, r, scale=scale, **geometry).div_(share.view(-1, *[1] * (weight.dim() - 1)))


def patch_norms(x: Tensor, weight: Tensor, stride=1, padding=0, dilation=1) -> Tensor:
    """Euclidean norm of every input patch a unit sees: (N, 1) for linear, (N, 1, H', W') for conv."""
    if weight.dim() == 2:
        return x.norm(dim=1, keepdim=True).clamp_min(1e-12)
    ones = torch.ones(1, *weight.shape[1:], dtype=x.dtype, device=x.device)
    return F.conv2d(x.square(), ones, None, stride, padding, dilation).sqrt().clamp_min(1e-12)


# ---------------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class PretrainConfig:
    """Unsupervised pre-training settings.

    ``epochs``: Hebbian epochs per block (may be fractional). ``lr``: Hebbian step, dimensionless: HPCA uses
    ``lr / E‖patch‖²`` (so ``lr·λ_max ≤ lr``), the competitive rules move a unit ``lr`` of the way to the mean
    of what it wins. ``temperature``: soft-WTA temperature on cosine similarity. ``num_images``: images
    used (``None`` = all). VAE: ``vae_epochs`` of Adam at ``vae_lr``, ``latent_dim`` latents.
    """

    epochs: float = 1.0
    batch_size: int = 64
    lr: float = 0.1
    temperature: float = 0.02
    num_images: int | None = None
    vae_epochs: float = 20.0
    vae_lr: float = 1e-3
    latent_dim: int = 256
    checkpoints_per_epoch: int = 1

    def __post_init__(self) -> None:
        for name in ("epochs", "lr", "temperature", "vae_epochs", "vae_lr"):
            check_positive(name, getattr(self, name))
        for name in ("batch_size", "latent_dim", "checkpoints_per_epoch"):
            check_positive(name, getattr(self, name), integer=True)
        if self.num_images is not None:
            check_positive("num_images", self.num_images, integer=True)


@dataclass(frozen=True)
class FinetuneConfig:
    """Supervised fine-tuning on the labelled subset (defaults: the paper's reference settings).

    SGD with ``momentum`` and ``weight_decay``; the learning rate is multiplied by ``lr_decay`` at the start of
    every epoch from ``decay_from`` (0-based: 10 → epochs 10..19 of 20 halve it). ``frozen``: train only the
    classifier on fixed features (much cheaper; not the paper's protocol). ``augment``: random horizontal flips
    and random crops of the reflect-padded labelled images (:func:`augment`; end-to-end fine-tuning only, since
    fixed features are computed once). ``min_steps``: small labelled sets train for a whole multiple of the
    epochs that gives at least this many SGD steps (:meth:`stretched`).
    """

    epochs: int = 20
    batch_size: int = 64
    lr: float = 1e-3
    momentum: float = 0.9
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
        return self.lr * self.lr_decay ** max(0, epoch - self.decay_from + 1)


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

Checkpoint = Callable[[LaganiNet, int, float], None]
PROBE_STATISTICS = 2048  # images for the BN statistics at intermediate checkpoints (the final ones use all)


def make_rule(method: str, config: PretrainConfig):
    """The plastic layers' rule for a Hebbian ``method``."""
    if method == "hpca":
        return HPCA("relu")
    if method == "softwta":
        return CosineCompetitive("soft", config.temperature)
    if method == "wta":
        return CosineCompetitive("wta", config.temperature)
    raise ValueError(f"Hebbian method must be one of {', '.join(HEBBIAN_METHODS)}, got {method!r}")


def pretrain(
    method: str,
    images: ImageSet,
    config: PretrainConfig = PretrainConfig(),
    *,
    seed: int = 0,
    width: float = 1.0,
    device: str | torch.device = "auto",
    progress: bool | None = None,
    checkpoint: Checkpoint | None = None,
) -> LaganiNet:
    """A :class:`LaganiNet` whose blocks 1..5 are pre-trained by ``method`` on ``images`` (labels unused).

    ``random`` and ``supervised`` return the seeded random initialisation (BN statistics set on ``images``).
    ``checkpoint(net, layer, epochs)``
    is called (Hebbian methods) before a block learns and after every ``1/checkpoints_per_epoch`` epoch.
    """
    check_method(method)
    device = resolve_device(device)
    generator = seed_everything(seed)
    net = LaganiNet(width=width).to(device, memory_format=FAST_LAYOUT)
    if config.num_images is not None:
        images = images.subset(slice(0, config.num_images))
    if method in HEBBIAN_METHODS:
        _pretrain_hebbian(net, make_rule(method, config), images, config, generator, device, progress, checkpoint)
    elif method == "vae":
        _pretrain_vae(net, images, config, generator, device, progress)
    else:  # random weights, but BN statistics of the images, so that the frozen features are standardised
        for layer in LAYERS:
            set_batchnorm_statistics(net, layer, images, config.batch_size, device)
    return net.eval()


def _block_input(images: ImageSet, below: Tensor | None, index: Tensor, device: torch.device) -> Tensor:
    """Batch ``index`` of a block's input: standardised images for block 1, else the stored outputs of the
    block below (kept on the CPU)."""
    return as_input(images.subset(index).float(device) if below is None else below[index].to(device))


def _pretrain_hebbian(
    net: LaganiNet,
    rule,
    images: ImageSet,
    config: PretrainConfig,
    generator: torch.Generator,
    device: torch.device,
    progress: bool | None,
    checkpoint: Checkpoint | None,
) -> None:
    """Train the blocks one after the other. The outputs of the finished blocks are computed once per block
    and stored (on the CPU), so every Hebbian step costs only the plastic block's forward pass and update."""
    competitive = isinstance(rule, CosineCompetitive)
    per_checkpoint = _count(1 / config.checkpoints_per_epoch, len(images), config.batch_size)
    below: Tensor | None = None
    for layer, block in enumerate(net.blocks, start=1):
        plastic = block.layer
        with torch.no_grad():
            nn.init.zeros_(plastic.bias)
            if competitive:
                unit_norm_(plastic.weight)
        net.eval()
        if checkpoint is not None:
            checkpoint(net, layer, 0.0)
        plastic.rule, plastic.plastic = rule, True
        optimizer = None
        steps = _steps(images, config.epochs, config.batch_size, generator)
        total = _count(config.epochs, len(images), config.batch_size)
        for step, index in enumerate(tqdm(steps, total=total, desc=f"{rule.__class__.__name__} L{layer}",
                                          disable=not _default_progress(progress), leave=False), start=1):
            x = block.prepare(_block_input(images, below, index, device))
            if optimizer is None:  # dimensionless step: scaled by the input's power (HPCA)
                lr = config.lr if competitive else config.lr / patch_norms(x, plastic.weight).square().mean().item()
                optimizer = torch.optim.SGD([plastic.weight], lr=lr)
            plastic.train()
            optimizer.zero_grad(set_to_none=True)
            plastic(x)
            optimizer.step()
            plastic.eval()
            if competitive:
                with torch.no_grad():
                    unit_norm_(plastic.weight)
            if checkpoint is not None and step % per_checkpoint == 0 and step < total:
                first = slice(0, PROBE_STATISTICS)
                _settle(block, images.subset(first), None if below is None else below[first], config.batch_size,
                        device, keep_outputs=False)
                checkpoint(net, layer, step * config.batch_size / len(images))
        plastic.plastic = False
        plastic.weight.grad = None
        below = _settle(block, images, below, config.batch_size, device, keep_outputs=layer < len(net.blocks))
        if checkpoint is not None:
            checkpoint(net, layer, config.epochs)


@torch.no_grad()
def _settle(block: Block, images: ImageSet, below: Tensor | None, batch_size: int, device: torch.device,
            keep_outputs: bool) -> Tensor | None:
    """Set a trained block's BN statistics to the average of its batch statistics over all inputs (as
    :func:`set_batchnorm_statistics`) and return its outputs for every image (CPU), if ``keep_outputs``."""
    chunks = torch.arange(len(images)).split(max(batch_size, 256))
    with _averaging_statistics(block, block.norm):
        for index in chunks:
            block(_block_input(images, below, index, device))
    if not keep_outputs:
        return None
    return torch.cat([block(_block_input(images, below, index, device)).cpu() for index in chunks])


@torch.no_grad()
def set_batchnorm_statistics(
    net: LaganiNet, layer: int, images: ImageSet, batch_size: int, device: torch.device
) -> None:
    """Set block ``layer``'s BN running statistics to the average of its batch statistics over ``images``."""
    with _averaging_statistics(net, net.blocks[layer - 1].norm):
        for x, _ in batches(images, max(batch_size, 256), device):
            net.features(x, layer)


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


class VAE(nn.Module):
    """Variational auto-encoder whose encoder is a :class:`LaganiNet`'s five blocks."""

    def __init__(self, net: LaganiNet, latent_dim: int = 256) -> None:
        super().__init__()
        self.net = net
        c = [b.layer.out_features if isinstance(b.layer, nn.Linear) else b.layer.out_channels for b in net.blocks]
        self.mean = nn.Linear(c[4], latent_dim)
        self.log_var = nn.Linear(c[4], latent_dim)
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim, c[4]), nn.ReLU(),
            nn.Linear(c[4], c[3] * 3 * 3), nn.ReLU(), nn.Unflatten(1, (c[3], 3, 3)),
            nn.ConvTranspose2d(c[3], c[2], 3), nn.ReLU(), nn.Upsample(scale_factor=2),  # 5 → 10
            nn.ConvTranspose2d(c[2], c[1], 3), nn.ReLU(),  # → 12
            nn.ConvTranspose2d(c[1], c[0], 3), nn.ReLU(), nn.Upsample(scale_factor=2),  # → 14 → 28
            nn.ConvTranspose2d(c[0], 3, 5),  # → 32
        )

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        h = self.net.features(x, 5)
        mean, log_var = self.mean(h), self.log_var(h)
        z = mean + torch.randn_like(mean) * (0.5 * log_var).exp()
        return self.decoder(z), mean, log_var


def vae_loss(x: Tensor, reconstruction: Tensor, mean: Tensor, log_var: Tensor) -> Tensor:
    """Negative ELBO per image: squared reconstruction error plus KL to the unit Gaussian."""
    error = (reconstruction - x).square().flatten(1).sum(1)
    kl = 0.5 * (mean.square() + log_var.exp() - 1 - log_var).sum(1)
    return (error + kl).mean()


def _pretrain_vae(
    net: LaganiNet,
    images: ImageSet,
    config: PretrainConfig,
    generator: torch.Generator,
    device: torch.device,
    progress: bool | None,
) -> None:
    vae = VAE(net, config.latent_dim).to(device).train()
    optimizer = torch.optim.Adam(vae.parameters(), lr=config.vae_lr)
    total = _count(config.vae_epochs, len(images), config.batch_size)
    steps = _steps(images, config.vae_epochs, config.batch_size, generator)
    for index in tqdm(steps, total=total, desc="VAE", disable=not _default_progress(progress), leave=False):
        x, _ = next(batches(images.subset(index), len(index), device))
        optimizer.zero_grad(set_to_none=True)
        vae_loss(x, *vae(x)).backward()
        optimizer.step()
    for layer in LAYERS:
        set_batchnorm_statistics(net, layer, images, config.batch_size, device)


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
        current = torch.cat([block(_block_input(images, current, index, device)).cpu() for index in chunks])
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
    optimizer = torch.optim.SGD(
        model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )
    history = []
    config = config.stretched(len(labels))
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
        if evaluate_epoch is not None:
            row["val_accuracy"] = evaluate_epoch(model)
        history.append(row)
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
    """A dropout + linear :class:`Head` trained by SGD on fixed ``features``; history per epoch."""
    device = resolve_device(device)
    generator = seed_everything(seed)
    head = Head(features.shape[1], 10, config.dropout).to(device)
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
    ``val`` adds a per-epoch validation accuracy to the history (the SGD convergence curve).
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
