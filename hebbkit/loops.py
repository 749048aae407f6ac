"""The loops every experiment shares: batches and their memory layout, augmentation, step counting, prediction,
block-by-block features, batch-norm averaging and keeping a model's best state.

Stateless helpers over :class:`~hebbkit.data.ImageSet`; a model's device is read from its parameters, never
resolved again here (the entry point resolves it once).
"""

from __future__ import annotations

import contextlib
import copy
import math
from contextlib import contextmanager
from typing import ContextManager, Iterator, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .checks import PRECISION_NAMES
from .data import ImageSet

CROP_PADDING = 4
# the arithmetic of backprop's forward passes: float32, or bfloat16 autocast (float32 weights, gradients, optimizer)
PRECISIONS = dict(zip(PRECISION_NAMES, (None, torch.bfloat16)))  # None: no autocast


def sgd(params, **options) -> torch.optim.SGD:
    """``torch.optim.SGD`` over ``params`` with its multi-tensor (``foreach``) implementation on every device:
    the per-parameter loop's arithmetic bit for bit, in fewer passes. (Not ``fused``: on the CPU, PyTorch 2.14's
    fused SGD mixes up the elements of a channels-last weight whose gradient is contiguous.)"""
    return torch.optim.SGD(params, foreach=True, **options)


def check_precision(precision: str) -> str:
    """Return ``precision`` if it is one of :data:`PRECISIONS`, else raise ``ValueError`` naming them."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


def autocast(device: torch.device, precision: str = "float32") -> ContextManager:
    """The context a forward pass runs in: nothing for ``float32``; for ``bfloat16``, autocast on ``device``'s
    type (convolutions and matrix products in bf16 with float32 accumulation, losses and BN in float32), so the
    master weights, their gradients and the optimizer's state stay float32."""
    dtype = PRECISIONS[check_precision(precision)]
    return contextlib.nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


def as_input(x: Tensor) -> Tensor:
    """``x`` in the layout the networks run fastest on: channels-last for image batches (CPU and GPU alike)."""
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


def place(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` moved to ``device`` with its convolution weights channels-last (see :func:`as_input`)."""
    return model.to(device, memory_format=torch.channels_last)


def device_of(model: nn.Module) -> torch.device:
    """The device of ``model``'s parameters (or buffers); the CPU for a model without either."""
    tensor = next(model.parameters(), None)
    if tensor is None:
        tensor = next(model.buffers(), None)
    return torch.device("cpu") if tensor is None else tensor.device


def batches(images: ImageSet, batch_size: int, device: torch.device,
            order: Tensor | None = None) -> Iterator[tuple[Tensor, Tensor]]:
    """(float standardised images, labels) slices of ``images`` on ``device``, in ``order`` if given."""
    index = torch.arange(len(images)) if order is None else order
    for start in range(0, len(index), batch_size):
        part = images.subset(index[start : start + batch_size])
        yield as_input(part.float(device)), part.labels.to(device)


def random_flip(x: Tensor, generator: torch.Generator) -> Tensor:
    """Each image of ``x`` (N, C, H, W) flipped left to right with probability 1/2."""
    flip = (torch.rand(len(x), generator=generator) < 0.5).to(x.device)
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)


def augment(x: Tensor, generator: torch.Generator) -> Tensor:
    """Each image of ``x`` (N, C, H, W; any dtype, best the stored uint8) flipped left to right with probability
    1/2 (as :func:`random_flip`, same draws), then cropped back to its size at a random offset from its
    ``CROP_PADDING``-pixel reflect padding (the usual CIFAR-10 augmentation). One gather: the padding is never
    built, each output pixel reads its reflected source directly."""
    n, channels, height, width = x.shape
    flip = (torch.rand(n, generator=generator) < 0.5)[:, None]
    dy, dx = torch.randint(0, 2 * CROP_PADDING + 1, (2, n, 1), generator=generator)
    rows = _reflect(dy - CROP_PADDING + torch.arange(height), height)
    cols = _reflect(dx - CROP_PADDING + torch.arange(width), width)
    cols = torch.where(flip, width - 1 - cols, cols)
    return x[torch.arange(n, device=x.device)[:, None, None, None],
             torch.arange(channels, device=x.device)[None, :, None, None],
             rows.to(x.device)[:, None, :, None], cols.to(x.device)[:, None, None, :]]


def _reflect(index: Tensor, size: int) -> Tensor:
    """Indices into ``size`` pixels of positions up to ``size - 1`` beyond either edge, reflected (edge not
    repeated: ``F.pad``'s ``reflect``)."""
    index = index.abs()
    return torch.where(index > size - 1, 2 * (size - 1) - index, index)


def count_steps(epochs: float, num: int, batch_size: int) -> int:
    """SGD steps of ``batch_size`` in ``epochs`` (fractional allowed) passes over ``num`` items (at least one)."""
    return max(1, math.ceil(epochs * num / batch_size))


def shuffled_steps(num: int, epochs: float, batch_size: int, generator: torch.Generator) -> Iterator[Tensor]:
    """Index batches for ``epochs`` passes over ``num`` items, reshuffled every pass."""
    remaining = count_steps(epochs, num, batch_size)
    while remaining:
        order = torch.randperm(num, generator=generator)
        for start in range(0, num, batch_size):
            if remaining == 0:
                return
            remaining -= 1
            yield order[start : start + batch_size]


def lr_at(lr: float, decay: float, decay_from: int, epoch: int) -> float:
    """``lr`` times ``decay`` once for every epoch from ``decay_from`` (0-based) up to ``epoch``."""
    return lr * decay ** max(0, epoch - decay_from + 1)


class BestState:
    """Keeps a copy of ``module``'s state at its best score so far (the first of equals); ``lower``: lower
    scores are better. ``restore()`` loads it back (nothing happens if no score was offered)."""

    def __init__(self, module: nn.Module, lower: bool = False) -> None:
        self.module, self.lower = module, lower
        self.state: dict | None = None
        self.score = math.inf if lower else -math.inf

    def offer(self, score: float) -> bool:
        """Keep the module's current state if ``score`` beats the best so far; return whether it did."""
        if not (score < self.score if self.lower else score > self.score):
            return False
        self.state, self.score = copy.deepcopy(self.module.state_dict()), score
        return True

    def restore(self) -> None:
        if self.state is not None:
            self.module.load_state_dict(self.state)


@torch.no_grad()
def predict(model: nn.Module, inputs: Tensor | ImageSet, batch_size: int = 256, precision: str = "float32") -> Tensor:
    """Predicted classes (on the CPU) of ``model`` for images, or for pre-computed inputs such as features;
    the forward passes in ``precision`` (:func:`autocast`)."""
    device = device_of(model)
    was_training = model.training
    model.eval()
    with autocast(device, precision):
        if isinstance(inputs, ImageSet):
            parts = [model(x).argmax(1).cpu() for x, _ in batches(inputs, batch_size, device)]
        else:
            parts = [model(inputs[i : i + batch_size].to(device)).argmax(1).cpu()
                     for i in range(0, len(inputs), batch_size)]
    model.train(was_training)
    return torch.cat(parts) if parts else torch.empty(0, dtype=torch.int64)


def accuracy(model: nn.Module, inputs: Tensor | ImageSet, labels: Tensor, batch_size: int = 1024,
             precision: str = "float32") -> float:
    """Top-1 accuracy (%) of ``model`` on images or pre-computed inputs (0 for none)."""
    hits = predict(model, inputs, batch_size, precision) == labels
    return 100 * hits.float().mean().item() if len(labels) else 0.0


def evaluate(model: nn.Module, images: ImageSet, batch_size: int = 256, precision: str = "float32") -> float:
    """Top-1 accuracy (%) of an image classifier on ``images``."""
    return accuracy(model, images, images.labels, batch_size, precision)


class BlockNet(Protocol):
    """A network run block by block: ``whiten`` the input, then ``blocks`` in turn."""

    whiten: nn.Module
    blocks: nn.ModuleList


def block_input(net: BlockNet, images: ImageSet, below: Tensor | None, index: Tensor,
                device: torch.device) -> Tensor:
    """Batch ``index`` of a block's input: the whitened standardised images for the first block, else the
    stored outputs of the block below (kept on the CPU)."""
    if below is None:
        return as_input(net.whiten(as_input(images.subset(index).float(device))))
    return as_input(below[index].to(device))


@torch.no_grad()
def block_features(net: BlockNet, images: ImageSet, layers: tuple[int, ...],
                   batch_size: int = 256) -> Iterator[tuple[int, Tensor]]:
    """Yield ``(layer, features)`` (1-based, flattened, on the CPU) for each requested layer of ``net`` in eval
    mode, computing every block once for all images; only one block's outputs are held at a time."""
    device = device_of(net)
    net.eval()
    chunks = torch.arange(len(images)).split(batch_size)
    current = None
    for layer, block in enumerate(net.blocks[: max(layers)], start=1):
        current = torch.cat([block(block_input(net, images, current, index, device)).cpu() for index in chunks])
        if layer in layers:
            yield layer, current.flatten(1)


@torch.no_grad()
def settle_statistics(net: BlockNet, images: ImageSet, norm_of=lambda block: block.norm,
                      batch_size: int = 256) -> None:
    """Set each block's batch-norm running statistics (``norm_of(block)``) to the plain average of its batch
    statistics over ``images``, block after block, each from the outputs of the blocks below with their final
    statistics; ``net`` ends in eval mode."""
    device = device_of(net)
    chunks = torch.arange(len(images)).split(batch_size)
    below = None
    for layer, block in enumerate(net.blocks, start=1):
        with _averaging_statistics(net, norm_of(block)):
            for index in chunks:
                block(block_input(net, images, below, index, device))
        if layer < len(net.blocks):
            below = torch.cat([block(block_input(net, images, below, index, device)).cpu() for index in chunks])
    net.eval()


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
