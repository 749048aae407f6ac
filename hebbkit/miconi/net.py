"""Miconi's multi-layer Hebbian CNN (Miconi 2021, "Hebbian learning with gradients").

Three Hebbian convolutions (5×5→100, 3×3→196, 3×3→400 channels), each followed by 2×2 average pooling,
on whole-image ZCA-whitened input of any channel count (RGB for CIFAR-10). In every layer:

1. the input is standardised per image (mean 0, std 1 over channels and positions);
2. responses ``y = conv(x, W)`` (no padding, no bias) minus adaptive thresholds ``θ`` give ``z = y − θ``;
3. k-WTA across channels at every position: the ``k`` largest ``z`` win if positive; the winners are the
   post-synaptic factor ``r`` of plasticity (binary by default, as in Miconi's code);
4. the rule is learnt through the core's LOSS form: ``rules.hebb_loss`` / ``instar_loss`` / ``oja_loss``
   with ``r`` as post-synaptic factor, summed over patches (Miconi's convention, so his learning rates
   1e-4, 1e-4, 1e-3 carry over), autograd and a plain ``torch.optim.SGD`` step;
5. weights are renormalised to unit norm after each step; ``θ_i += rate · (firing_i − k/N)`` keeps every
   unit's winning rate near ``k/N``;
6. the output passed upward is ``r`` itself, or, with the *sparse plasticity* intervention, the dense
   ``relu(z − mean_c z)`` (Coates' "triangle" code) while only the k-WTA winners stay plastic.

The *pruning* intervention gives every unit of layers 2 and 3 a fixed random subset of its input channels
(``keep`` of them, e.g. 1 %); the mask never changes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from .. import rules
from ..loops import random_flip
from ..rules import unit_norm_
from ..checks import check_choice, check_positive

RULES = ("hebb", "instar", "oja")
INTERVENTIONS = ("none", "sparse-plasticity", "pruning", "both")

# ------------------------------------------------------------------------------------------- configs


def check_keep(keep: float) -> float:
    """Return ``keep`` if it lies in (0, 1], else raise ``ValueError``."""
    if isinstance(keep, bool) or not isinstance(keep, (int, float)) or not 0 < keep <= 1:
        raise ValueError(f"keep (fraction of input channels kept by pruning) must lie in (0, 1], got {keep!r}")
    return float(keep)


@dataclass(frozen=True)
class LayerSpec:
    """One Hebbian convolution: output ``channels``, square ``kernel``, SGD ``lr`` (for the loss summed over
    patches), ``k`` winners per position, and the fraction ``keep`` of input channels each unit sees."""

    channels: int
    kernel: int
    lr: float
    k: int = 1
    keep: float = 1.0

    def __post_init__(self) -> None:
        check_positive("channels", self.channels, integer=True)
        check_positive("kernel", self.kernel, integer=True)
        rules.check_learning_rate(self.lr)
        rules.check_k(self.k, self.channels)
        check_keep(self.keep)


MICONI_LAYERS = (LayerSpec(100, 5, 1e-4), LayerSpec(196, 3, 1e-4), LayerSpec(400, 3, 1e-3))


@dataclass(frozen=True)
class NetConfig:
    """The network: its layers, the rule, whether the output passed upward is dense (intervention a),
    binary or graded plasticity factors, the threshold adaptation rate and the ZCA regulariser.

    With binary factors (the default, as in Miconi's code) Oja's rule equals instar, since ``r² = r``;
    ``binary=False`` makes the factor the winner's ``z`` and the two rules differ."""

    layers: tuple[LayerSpec, ...] = MICONI_LAYERS
    rule: str = "instar"
    dense: bool = False
    binary: bool = True
    threshold_rate: float = 3.0
    pool: int = 2
    zca_eps: float = 1e-3

    def __post_init__(self) -> None:
        check_choice("rule", self.rule, RULES)
        if not self.layers:
            raise ValueError("layers must hold at least one LayerSpec")
        if not (math.isfinite(self.threshold_rate) and self.threshold_rate >= 0):
            raise ValueError(f"threshold_rate must be a finite number >= 0, got {self.threshold_rate!r}")
        check_positive("pool", self.pool, integer=True)
        if not (self.zca_eps > 0):
            raise ValueError(f"zca_eps must be > 0, got {self.zca_eps!r}")


def check_intervention(name: str) -> str:
    """Return ``name`` if it is one of ``INTERVENTIONS``, else raise ``ValueError``."""
    return check_choice("intervention", name, INTERVENTIONS)


def with_intervention(config: NetConfig, intervention: str, keep: float = 0.01) -> NetConfig:
    """``config`` with an intervention switched on: ``"sparse-plasticity"`` (dense output, sparse
    plasticity), ``"pruning"`` (layers 2+ keep a fraction ``keep`` of their input channels), ``"both"``,
    or ``"none"`` (unchanged)."""
    check_intervention(intervention)
    check_keep(keep)
    if intervention in ("sparse-plasticity", "both"):
        config = replace(config, dense=True)
    if intervention in ("pruning", "both"):
        layers = (config.layers[0],) + tuple(replace(spec, keep=keep) for spec in config.layers[1:])
        config = replace(config, layers=layers)
    return config


@dataclass(frozen=True)
class TrainConfig:
    """Hebbian training: epochs over the images, batch size, batches at the start during which only the
    thresholds adapt, random horizontal flips, seed."""

    epochs: int = 1
    batch_size: int = 100
    warmup_batches: int = 20
    flip: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        check_positive("epochs", self.epochs, integer=True)
        check_positive("batch_size", self.batch_size, integer=True)
        if isinstance(self.warmup_batches, bool) or not isinstance(self.warmup_batches, int) or self.warmup_batches < 0:
            raise ValueError(f"warmup_batches must be an integer >= 0, got {self.warmup_batches!r}")


# ------------------------------------------------------------------------------------ stateless maths


def as_float_images(images: Tensor) -> Tensor:
    """Images (N, C, H, W) as float: uint8 is scaled to [0, 1], float passes through."""
    if images.dim() != 4:
        raise ValueError(f"images must have shape (N, C, H, W), got {tuple(images.shape)}")
    return images.float().div(255) if images.dtype == torch.uint8 else images.float()


def standardize(x: Tensor, eps: float = 1e-8) -> Tensor:
    """Per-sample standardisation over all but the first dimension (mean 0, std 1)."""
    dims = tuple(range(1, x.dim()))
    x = x - x.mean(dims, keepdim=True)
    return x / (x.std(dims, keepdim=True) + eps)


def fit_zca(images: Tensor, eps: float = 1e-3) -> Tensor:
    """Whole-image ZCA matrix ``(C + eps·I)^(-1/2) = E (Λ + eps)^(-1/2) Eᵀ`` of images (N, C, H, W), each
    standardised first (``C = XᵀX / N``, uncentred across images as in Miconi's code).

    With fewer images than dimensions the eigenvectors come from the N×N Gram matrix instead (same result:
    directions outside the images' span get ``eps^(-1/2)``), which is much faster.
    """
    flat = standardize(images.flatten(1).double())
    num, dim = flat.shape
    if num >= dim:
        eigenvalues, eigenvectors = torch.linalg.eigh(flat.T @ flat / num)
        scale = (eigenvalues.clamp(min=0) + eps).rsqrt()
        return ((eigenvectors * scale) @ eigenvectors.T).to(images.dtype)
    gram_values, gram_vectors = torch.linalg.eigh(flat @ flat.T / num)
    kept = gram_values > 1e-10 * gram_values.max()
    eigenvalues = gram_values[kept]
    eigenvectors = flat.T @ gram_vectors[:, kept] / (eigenvalues * num).sqrt()  # orthonormal columns
    scale = (eigenvalues + eps).rsqrt() - eps**-0.5
    zca = (eigenvectors * scale) @ eigenvectors.T
    zca.diagonal().add_(eps**-0.5)
    return zca.to(images.dtype)


def apply_zca(images: Tensor, zca: Tensor) -> Tensor:
    """Images (N, C, H, W) standardised per image and multiplied by the ZCA matrix (symmetric)."""
    return (standardize(images.flatten(1)) @ zca).view_as(images)


def feature_sizes(config: NetConfig, height: int, width: int) -> list[tuple[int, int]]:
    """Every layer's pooled output size (H, W) for images of ``height × width`` pixels; a ``ValueError``
    naming the image size and the smallest one that fits when an image is too small for the network."""
    need = 1  # the smallest side each layer's pooled output may have, from the top down
    for spec in reversed(config.layers):
        need = config.pool * need + spec.kernel - 1
    sizes, size = [], (height, width)
    for index, spec in enumerate(config.layers):
        problem, layer = None, f"layer {index + 1}'s"
        if min(size) < spec.kernel:
            problem = f"{layer} input is {size[0]}×{size[1]}, smaller than its {spec.kernel}×{spec.kernel} kernel"
        else:
            size = (size[0] - spec.kernel + 1, size[1] - spec.kernel + 1)
            if min(size) < config.pool:
                problem = f"{layer} output is {size[0]}×{size[1]}, smaller than the {config.pool}×{config.pool} pooling"
        if problem:
            raise ValueError(
                f"images of {height}×{width} pixels are too small for this network ({problem}); it needs at least "
                f"{need}×{need}"
            )
        size = (size[0] // config.pool, size[1] // config.pool)
        sizes.append(size)
    return sizes


def winners(z: Tensor, k: int, binary: bool = True) -> Tensor:
    """k-WTA across channels of ``z = y − θ``: the ``k`` largest win where positive. Binary (1 for a
    winner) or graded (the winner's ``z``)."""
    win = rules.kwta(z, k) * (z > 0)
    return win if binary else win * z


def dense_output(z: Tensor) -> Tensor:
    """Coates' "triangle" code ``relu(z − mean over channels of z)``: dense, and zero below average."""
    return torch.relu(z - z.mean(1, keepdim=True))


def plasticity_loss(rule: str, y: Tensor, weight: Tensor, r: Tensor) -> Tensor:
    """The core's loss for ``rule`` with post-synaptic factor ``r``, summed over patches.

    ``−∇_W`` of it is ``Σ r x`` (hebb), ``Σ r (x − w)`` (instar) or ``Σ r (x − r w)`` (oja). Hebb and Oja
    take the factor from the value of ``y``, so they see ``y + (r − y).detach()``: the value of ``r`` with
    the gradient of ``y`` (Miconi's trick).
    """
    num_patches = r.numel() // r.shape[1]
    if rule == "instar":
        loss = rules.instar_loss(y, weight, r)
    elif rule == "hebb":
        loss = rules.hebb_loss(y + (r - y).detach(), weight)
    elif rule == "oja":
        loss = rules.oja_loss(y + (r - y).detach(), weight)
    else:
        raise ValueError(f"rule must be one of {', '.join(RULES)}, got {rule!r}")
    return loss * num_patches


def channel_mask(out_channels: int, in_channels: int, keep: float, generator: torch.Generator) -> Tensor:
    """(K, C, 1, 1) mask giving every unit ``max(1, round(keep·C))`` random input channels."""
    check_keep(keep)
    num_kept = max(1, round(keep * in_channels))
    order = torch.rand(out_channels, in_channels, generator=generator).argsort(1)
    mask = torch.zeros(out_channels, in_channels).scatter_(1, order[:, :num_kept], 1.0)
    return mask.view(out_channels, in_channels, 1, 1)


# ------------------------------------------------------------------------------------------- modules


@dataclass
class LayerState:
    """One layer's tensors for a batch: standardised input, responses ``y``, ``z = y − θ``, plasticity
    factor ``r`` (the winners), ``output`` passed upward before pooling, and the ``pooled`` output."""

    x: Tensor
    y: Tensor
    z: Tensor
    r: Tensor
    output: Tensor
    pooled: Tensor


class HebbianConvLayer(nn.Module):
    """One layer: unit-norm weights (K, C, k, k), adaptive thresholds (K,), a fixed mask (K, C, 1, 1)."""

    def __init__(self, in_channels: int, spec: LayerSpec, generator: torch.Generator) -> None:
        super().__init__()
        self.spec = spec
        mask = channel_mask(spec.channels, in_channels, spec.keep, generator)
        weight = torch.randn(spec.channels, in_channels, spec.kernel, spec.kernel, generator=generator) * mask
        unit_norm_(weight)
        self.weight = nn.Parameter(weight)
        self.register_buffer("mask", mask)
        self.register_buffer("threshold", torch.zeros(spec.channels))

    @property
    def target_rate(self) -> float:
        return self.spec.k / self.spec.channels

    def project_(self) -> None:
        """After an optimizer step: re-apply the fixed mask, renormalise to unit norm."""
        with torch.no_grad():
            self.weight.mul_(self.mask)
            unit_norm_(self.weight)

    def adapt_thresholds_(self, r: Tensor, rate: float) -> None:
        """``θ_i += rate · (fraction of positions where unit i won − k/N)``."""
        firing = (r > 0).float().mean((0, 2, 3))
        self.threshold.add_(rate * (firing - self.target_rate))

    def extra_repr(self) -> str:
        return f"{self.weight.shape[1]}→{self.spec.channels}, kernel={self.spec.kernel}, k={self.spec.k}, keep={self.spec.keep}"


class MiconiNet(nn.Module):
    """Miconi's Hebbian CNN. ``fit_zca`` before use; ``states`` runs it; ``train_network`` trains it."""

    def __init__(self, config: NetConfig = NetConfig(), in_channels: int = 3, seed: int = 0) -> None:
        super().__init__()
        self.config = config
        generator = torch.Generator().manual_seed(seed)
        channels = [in_channels] + [spec.channels for spec in config.layers]
        self.layers = nn.ModuleList(
            HebbianConvLayer(c_in, spec, generator) for c_in, spec in zip(channels, config.layers)
        )
        self.register_buffer("zca", None)

    def fit_zca(self, images: Tensor) -> None:
        """Fit the whole-image ZCA matrix on images (N, C, H, W), uint8 or float."""
        images = as_float_images(images)
        if images.shape[1] != self.layers[0].weight.shape[1]:
            raise ValueError(
                f"images must have shape (N, {self.layers[0].weight.shape[1]}, H, W), got {tuple(images.shape)}"
            )
        self.zca = fit_zca(images, self.config.zca_eps).to(self.layers[0].weight.device)

    def whiten(self, images: Tensor) -> Tensor:
        """Float images (N, C, H, W) → network input (ZCA-whitened if fitted, standardised otherwise); images
        too small for the network are a ``ValueError`` (see :func:`feature_sizes`)."""
        feature_sizes(self.config, *images.shape[-2:])
        if self.zca is None:
            return standardize(images)
        if images[0].numel() != self.zca.shape[0]:
            raise ValueError(f"images of {images[0].numel()} values per image do not fit the ZCA ({self.zca.shape[0]})")
        return apply_zca(images, self.zca)

    def layer_step(self, index: int, x: Tensor) -> LayerState:
        """Run layer ``index`` on its input; ``y`` keeps its autograd graph to the weight."""
        layer, config = self.layers[index], self.config
        x = standardize(x)
        y = F.conv2d(x, layer.weight)
        with torch.no_grad():
            z = y.detach() - layer.threshold.view(1, -1, 1, 1)
            r = winners(z, layer.spec.k, config.binary)
            output = dense_output(z) if config.dense else r
            pooled = F.avg_pool2d(output, config.pool)
        return LayerState(x, y, z, r, output, pooled)

    @torch.no_grad()
    def states(self, images: Tensor) -> list[LayerState]:
        """Every layer's state for images (N, C, H, W), uint8 or float, without learning."""
        x, out = self.whiten(as_float_images(images).to(self.layers[0].weight.device)), []
        for index in range(len(self.layers)):
            state = self.layer_step(index, x)
            out.append(state)
            x = state.pooled
        return out

    def forward(self, images: Tensor) -> list[Tensor]:
        """Every layer's pooled output for images (N, C, H, W), uint8 or float."""
        return [state.pooled for state in self.states(images)]


# ------------------------------------------------------------------------------------------ training


def make_optimizer(net: MiconiNet) -> torch.optim.SGD:
    """Plain SGD with each layer's learning rate: a step is ``W += lr · ΔW`` (ΔW summed over patches)."""
    return torch.optim.SGD([{"params": [layer.weight], "lr": layer.spec.lr} for layer in net.layers])


def learn_batch(net: MiconiNet, optimizer: torch.optim.Optimizer, images: Tensor, plastic: bool = True) -> list[float]:
    """One batch through all layers: thresholds adapt; if ``plastic``, every layer takes one loss-form step.

    Each layer learns from its own input (the layers below are not changed by its gradient: inputs are
    detached). Returns every layer's mean absolute deviation of firing rates from ``k/N``.
    """
    x = net.whiten(images)
    losses, deviations = [], []
    for index, layer in enumerate(net.layers):
        state = net.layer_step(index, x)
        if plastic:
            losses.append(plasticity_loss(net.config.rule, state.y, layer.weight, state.r))
        firing = (state.r > 0).float().mean((0, 2, 3))
        deviations.append(float((firing - layer.target_rate).abs().mean()))
        layer.adapt_thresholds_(state.r, net.config.threshold_rate)
        x = state.pooled
    if plastic:
        optimizer.zero_grad(set_to_none=True)
        torch.stack(losses).sum().backward()
        optimizer.step()
        for layer in net.layers:
            layer.project_()
    return deviations


def train_network(
    net: MiconiNet,
    images: Tensor,
    config: TrainConfig = TrainConfig(),
    plastic: bool = True,
    progress: bool = True,
) -> list[list[float]]:
    """Hebbian training on images (N, C, H, W), uint8 or float, seeded shuffles and flips.

    The first ``warmup_batches`` only adapt thresholds; ``plastic=False`` never changes the weights (the
    random-weights baseline, calibrated like the trained network). Returns, per batch, each layer's mean
    absolute deviation of firing rates from ``k/N``.
    """
    images = as_float_images(images)
    if net.zca is None:
        raise RuntimeError("fit the ZCA whitening first: net.fit_zca(images)")
    device = net.layers[0].weight.device
    generator = torch.Generator().manual_seed(config.seed)
    optimizer = make_optimizer(net)
    history: list[list[float]] = []
    num_batches = math.ceil(len(images) / config.batch_size)
    bar = tqdm(total=config.epochs * num_batches, desc="hebbian" if plastic else "calibrate", disable=not progress)
    for _ in range(config.epochs):
        order = torch.randperm(len(images), generator=generator)
        for start in range(0, len(images), config.batch_size):
            batch = images[order[start : start + config.batch_size]]
            if config.flip:
                batch = random_flip(batch, generator)
            learning = plastic and len(history) >= config.warmup_batches
            history.append(learn_batch(net, optimizer, batch.to(device), learning))
            bar.update()
            bar.set_postfix(rate_dev=f"{history[-1][-1]:.4f}")
    bar.close()
    return history
