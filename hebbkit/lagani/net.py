"""Lagani's six-layer network, its classifier cuts and the reference's variational auto-encoder.

Network (no padding): conv1 5×5 →96, ReLU, maxpool 2, BN; conv2 3×3 →128, ReLU, BN; conv3 3×3 →192, ReLU,
maxpool 2, BN; conv4 3×3 →256, ReLU, BN; fc5 →4096, ReLU, BN. On CIFAR-10's 3×32×32 images the maps are
28 → 14 → 12 → 10 → 5 → 3; other input shapes (any channels, at least 24×24 pixels) give their own sizes.
"Layer L" is the net cut after the BN of block L, followed by dropout and a new linear classifier
(:class:`Classifier`). As in the reference code (GabrieleLagani/HebbianLearning, ``models/hebb/model_6l.py`` and
``models/gdes/*_6l.py``) the Hebbian methods use a network without biases whose blocks 3–5 end in the
variance-preserving :class:`ModifiedBatchNorm2d`/``1d``, and soft-WTA's layers output ``w·x/‖w‖`` and see
ZCA-whitened images (:class:`NetSpec`).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..layers import HebbianConv2d, HebbianLinear
from ..checks import check_positive
from ..whitening import ZCA
from .methods import NetSpec

LAYERS = (1, 2, 3, 4, 5)
WIDTHS = (96, 128, 192, 256, 4096)
KERNELS = (5, 3, 3, 3)
POOLED = (True, False, True, False, False)
CIFAR_SHAPE = (3, 32, 32)
NUM_CLASSES = 10


def check_layer(layer: int) -> int:
    """Return ``layer`` if it is an integer in 1..5, else raise ``ValueError``."""
    if isinstance(layer, bool) or not isinstance(layer, int) or layer not in LAYERS:
        raise ValueError(f"layer must be an integer in 1..5, got {layer!r}")
    return layer


def map_sizes(input_shape: tuple[int, int, int]) -> list[tuple[int, int]]:
    """(height, width) of blocks 1–4's output maps for images of ``input_shape`` (C, H, W); a ``ValueError``
    names the shape when an image is too small for the four convolutions and two poolings."""
    if len(input_shape) != 3 or min(input_shape) < 1:
        raise ValueError(f"input_shape must be (channels, height, width), got {input_shape!r}")
    size, sizes = tuple(input_shape[1:]), []
    for kernel, pool in zip(KERNELS, POOLED):
        size = tuple((s - kernel + 1) // (2 if pool else 1) for s in size)
        sizes.append(size)
    if min(sizes[-1]) < 1:
        raise ValueError(f"images of {input_shape[1]}×{input_shape[2]} pixels are too small for Lagani's network "
                         f"(four convolutions 5, 3, 3, 3 and two 2×2 poolings need at least 24×24)")
    return sizes


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

    def response(self, x: Tensor) -> Tensor:
        """The layer's output (divided by each unit's weight norm when ``project``)."""
        y = self.layer(x.flatten(1) if isinstance(self.layer, nn.Linear) else x)
        if self.project:
            norms = self.layer.weight.flatten(1).norm(dim=1)
            y = y / torch.where(norms == 0, 1.0, norms).view(1, -1, *[1] * (y.dim() - 2))
        return y

    def activation(self, x: Tensor) -> Tensor:
        """ReLU of :meth:`response`."""
        return F.relu(self.response(x))

    def forward(self, x: Tensor) -> Tensor:
        if not self.pool:
            return self.norm(self.activation(x))
        # pooling before the ReLU: ReLU is monotone, so the same values and gradients (a window of non-positive
        # values passes none either way), on a quarter of the elements
        return self.norm(F.relu(F.max_pool2d(self.response(x), 2)))


class LaganiNet(nn.Module):
    """Lagani's network for ``spec`` on images of ``input_shape`` (C, H, W) with ``num_classes`` classes;
    ``width`` scales every layer's units (1.0 = the paper's sizes)."""

    def __init__(self, spec: NetSpec = NetSpec(), input_shape: tuple[int, int, int] = CIFAR_SHAPE,
                 num_classes: int = NUM_CLASSES, width: float = 1.0) -> None:
        super().__init__()
        check_positive("width", width)
        check_positive("num_classes", num_classes, integer=True)
        self.spec, self.input_shape, self.num_classes = spec, tuple(input_shape), num_classes
        self.map_sizes = map_sizes(self.input_shape)
        c = [max(1, round(w * width)) for w in WIDTHS]
        self.widths = tuple(c)
        bias = not spec.hebbian
        inputs = [input_shape[0], *c[:3]]
        layers: list[HebbianConv2d | HebbianLinear] = [
            HebbianConv2d(c_in, c_out, kernel, bias=bias, plastic=False)
            for c_in, c_out, kernel in zip(inputs, c[:4], KERNELS)
        ]
        height, width_4 = self.map_sizes[3]
        layers.append(HebbianLinear(c[3] * height * width_4, c[4], bias=bias, plastic=False))
        self.whiten = ZCA(self.input_shape) if spec.whiten else nn.Identity()
        self.blocks = nn.ModuleList(
            Block(layer, pool, modified_norm=spec.hebbian and spec.modified_bn and index >= 3, project=spec.project)
            for index, (layer, pool) in enumerate(zip(layers, POOLED), start=1)
        )
        self.feature_dims = (*(units * h * w for units, (h, w) in zip(c[:4], self.map_sizes)), c[4])
        self.fc6 = nn.Linear(c[4], num_classes)

    def features(self, x: Tensor, layer: int) -> Tensor:
        """Output of block ``layer`` (after its BN), flattened to (N, feature_dims[layer-1])."""
        x = self.whiten(x)
        for block in self.blocks[: check_layer(layer)]:
            x = block(x)
        return x.flatten(1)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc6(self.features(x, 5))


class Head(nn.Sequential):
    """Dropout, then a linear classifier."""

    def __init__(self, in_features: int, num_classes: int = NUM_CLASSES, dropout: float = 0.5) -> None:
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout!r}")
        super().__init__(nn.Dropout(dropout), nn.Linear(in_features, num_classes))


class Classifier(nn.Module):
    """Layer ``L`` of a trunk: its whitening, blocks 1..L, dropout, and a new linear classifier."""

    def __init__(self, trunk: LaganiNet, layer: int, dropout: float = 0.5) -> None:
        super().__init__()
        self.layer = check_layer(layer)
        self.whiten = copy.deepcopy(trunk.whiten)
        self.blocks = nn.ModuleList(copy.deepcopy(list(trunk.blocks[:layer])))
        self.head = Head(trunk.feature_dims[layer - 1], trunk.num_classes, dropout)

    def features(self, x: Tensor) -> Tensor:
        x = self.whiten(x)
        for block in self.blocks:
            x = block(x)
        return x.flatten(1)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


class VAE(nn.Module):
    """The reference's variational auto-encoder (``models/gdes/vae_6l.py``): a :class:`LaganiNet`'s five
    blocks encode; ``fc_mu``/``fc_var`` give the latent Gaussian; the decoder mirrors the encoder with
    transposed convolutions, ReLU and BN, and un-pools with the encoder's max-pooling indices."""

    def __init__(self, net: LaganiNet, latent_dim: int = 256) -> None:
        super().__init__()
        self.net = net
        c, channels = net.widths, net.input_shape[0]
        self.conv_shape = (c[3], *net.map_sizes[3])
        conv_units = c[3] * net.map_sizes[3][0] * net.map_sizes[3][1]
        self.fc_mu, self.fc_var = nn.Linear(c[4], latent_dim), nn.Linear(c[4], latent_dim)
        self.dec_fc = nn.Sequential(nn.Linear(latent_dim, c[4]), nn.ReLU(), nn.BatchNorm1d(c[4]),
                                    nn.Linear(c[4], conv_units), nn.ReLU(), nn.BatchNorm1d(conv_units))
        self.dec_conv2, self.dec_bn2 = nn.ConvTranspose2d(c[3], c[2], 3), nn.BatchNorm2d(c[2])  # 3 → 5, unpool → 10
        self.dec_conv3, self.dec_bn3 = nn.ConvTranspose2d(c[2], c[1], 3), nn.BatchNorm2d(c[1])  # → 12
        self.dec_conv4, self.dec_bn4 = nn.ConvTranspose2d(c[1], c[0], 3), nn.BatchNorm2d(c[0])  # → 14, unpool → 28
        self.dec_conv5, self.dec_bn5 = nn.ConvTranspose2d(c[0], channels, 5), nn.BatchNorm2d(channels)  # → 32

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        pools = []  # (indices, size before pooling) of each max-pooling, to un-pool to the same size
        h = self.net.whiten(x)
        for block in self.net.blocks:
            y = block.activation(h)
            if block.pool:
                size = y.shape[-2:]
                y, index = F.max_pool2d(y, 2, return_indices=True)
                pools.append((index, size))
            h = block.norm(y)
        mean, log_var = self.fc_mu(h), self.fc_var(h)
        z = mean + torch.randn_like(mean) * (0.5 * log_var).exp()
        d = self.dec_fc(z).view(-1, *self.conv_shape)
        d = self.dec_bn2(F.max_unpool2d(F.relu(self.dec_conv2(d)), pools[1][0], 2, output_size=pools[1][1]))
        d = self.dec_bn3(F.relu(self.dec_conv3(d)))
        d = self.dec_bn4(F.max_unpool2d(F.relu(self.dec_conv4(d)), pools[0][0], 2, output_size=pools[0][1]))
        return self.dec_bn5(self.dec_conv5(d)), mean, log_var


def vae_loss(x: Tensor, reconstruction: Tensor, mean: Tensor, log_var: Tensor, beta: float = 0.5) -> Tensor:
    """The reference's ELBO loss: mean squared error over pixels plus ``beta`` times the KL divergence to the
    unit Gaussian (summed over latents, averaged over images)."""
    kl = (-0.5 * (1 + log_var - mean.square() - log_var.exp()).sum(1)).mean()
    return F.mse_loss(reconstruction, x) + beta * kl
