"""What each layer of a Hebbian CNN holds: linear readout, pixel-space pictures, feature statistics.

* ``layer_features``: every layer's pooled output, average-pooled to a ``grid × grid`` map (Miconi's
  "quadrants"), flattened: (N, C·grid²) per layer.
* ``fit_ridge``: ridge regression onto one-hot labels in closed form (torch, float64) on standardised
  features; the penalty is chosen on a held-out slice of the fitting set, never on the scored images.
* ``top_patch_pictures``: for every unit, the average of the image patches under its receptive field at
  its ``n_top`` strongest responses (images standardised per image, not whitened) — a faithful pixel-space
  picture of what it responds to, whatever the nonlinearities below it.
* ``picture_stats`` (size: effective extent; simplicity: mean spatial frequency; Hoyer sparseness) and
  ``response_sparsity`` (population and lifetime, Vinje–Gallant normalised Treves–Rolls).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from ..utils import atomic_path
from .net import MiconiNet, as_float_images, standardize

# ------------------------------------------------------------------------------------------ features


def _batches(images: Tensor, batch_size: int):
    for start in range(0, len(images), batch_size):
        yield start, as_float_images(images[start : start + batch_size])


def layer_features(net: MiconiNet, images: Tensor, grid: int = 2, batch_size: int = 250) -> list[Tensor]:
    """Every layer's pooled output average-pooled to ``grid × grid`` and flattened, on the CPU."""
    per_layer: list[list[Tensor]] = [[] for _ in net.layers]
    for _, batch in _batches(images, batch_size):
        for index, pooled in enumerate(net(batch)):
            per_layer[index].append(F.adaptive_avg_pool2d(pooled, grid).flatten(1).cpu())
    return [torch.cat(chunks) for chunks in per_layer]


# ------------------------------------------------------------------------------------------- readout


@dataclass
class Readout:
    """A linear classifier on standardised features: ``scores = ((x − mean)/std) W + b``."""

    weight: Tensor
    bias: Tensor
    mean: Tensor
    std: Tensor
    alpha: float

    def scores(self, features: Tensor) -> Tensor:
        x = (features.double() - self.mean) / self.std
        return x @ self.weight + self.bias

    def accuracy(self, features: Tensor, labels: Tensor) -> float:
        if len(features) != len(labels):
            raise ValueError(f"features ({len(features)}) and labels ({len(labels)}) must have the same length")
        return float((self.scores(features).argmax(1) == labels).double().mean())


class _Moments:
    """Sums ``n``, ``Σx``, ``Σt``, ``XᵀX``, ``XᵀT`` of a set of rows, from which any union's ridge solution follows."""

    def __init__(self, x: Tensor, targets: Tensor) -> None:
        self.n, self.sx, self.st = len(x), x.sum(0), targets.sum(0)
        self.xx, self.xt = x.T @ x, x.T @ targets

    def __add__(self, other: "_Moments") -> "_Moments":
        total = object.__new__(_Moments)
        total.n, total.sx, total.st = self.n + other.n, self.sx + other.sx, self.st + other.st
        total.xx, total.xt = self.xx + other.xx, self.xt + other.xt
        return total

    def solve(self, alpha: float) -> tuple[Tensor, Tensor]:
        """Ridge with an unpenalised intercept: ``W = (XcᵀXc + αI)⁻¹ XcᵀTc``, ``b = t̄ − x̄ W``."""
        x_mean, t_mean = self.sx / self.n, self.st / self.n
        gram = self.xx - self.n * torch.outer(x_mean, x_mean)
        cross = self.xt - self.n * torch.outer(x_mean, t_mean)
        gram.diagonal().add_(alpha)
        weight = torch.cholesky_solve(cross, torch.linalg.cholesky(gram))
        return weight, t_mean - x_mean @ weight


def fit_ridge(
    features: Tensor,
    labels: Tensor,
    penalties: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0),
    val_fraction: float = 0.2,
    seed: int = 0,
) -> Readout:
    """Ridge readout onto one-hot labels (one column per class ``0..labels.max()``), fit on these images only.

    Features are standardised with their own mean and std. The penalty ``alpha = λ·n`` (``λ`` from
    ``penalties``) is chosen by accuracy on a seeded held-out ``val_fraction`` of the fitting images, then
    the readout is refit on all of them.
    """
    if features.dim() != 2 or len(features) != len(labels):
        raise ValueError(f"features must be (N, D) with N = len(labels) = {len(labels)}, got {tuple(features.shape)}")
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must lie in (0, 1), got {val_fraction!r}")
    if len(labels) < 10:
        raise ValueError(f"a readout needs at least 10 fitting images, got {len(labels)}")
    x = features.double()
    mean, std = x.mean(0), x.std(0).clamp(min=1e-8)
    x = (x - mean) / std
    targets = F.one_hot(labels).double()
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    num_val = max(1, round(val_fraction * len(x)))
    val, inner = order[:num_val], order[num_val:]
    inner_moments, val_moments = _Moments(x[inner], targets[inner]), _Moments(x[val], targets[val])
    accuracies = []
    for penalty in penalties:
        weight, bias = inner_moments.solve(penalty * len(inner))
        accuracies.append(float(((x[val] @ weight + bias).argmax(1) == labels[val]).double().mean()))
    best = max(range(len(penalties)), key=lambda i: (accuracies[i], i))  # ties → the stronger penalty
    alpha = penalties[best] * len(x)
    weight, bias = (inner_moments + val_moments).solve(alpha)
    return Readout(weight, bias, mean, std, alpha)


def decode_layers(
    fit_features: list[Tensor], fit_labels: Tensor, score_features: list[Tensor], score_labels: Tensor, seed: int = 0
) -> list[dict[str, float]]:
    """Per layer: a ridge readout fit on the fitting images, scored on the held-out ones."""
    results = []
    for fit_x, score_x in zip(fit_features, score_features):
        readout = fit_ridge(fit_x, fit_labels, seed=seed)
        results.append(
            {
                "fit_accuracy": readout.accuracy(fit_x, fit_labels),
                "accuracy": readout.accuracy(score_x, score_labels),
                "alpha": readout.alpha,
            }
        )
    return results


# ------------------------------------------------------------------------------------------ pictures


def receptive_fields(net: MiconiNet) -> list[tuple[int, int]]:
    """(size, stride) in input pixels of every layer's units (convolutions of stride 1, then pooling)."""
    pool, fields = net.config.pool, []
    size, step = 0, 1
    for index, layer in enumerate(net.layers):
        size = layer.spec.kernel if index == 0 else size + (pool - 1) * (step // pool) + (layer.spec.kernel - 1) * step
        fields.append((size, step))
        step *= pool
    return fields


def weight_pictures(net: MiconiNet) -> Tensor:
    """Layer 1's filters (K, C, k, k): they act on whitened pixels, so they are pixel-space pictures."""
    return net.layers[0].weight.detach().cpu().clone()


@torch.no_grad()
def top_patch_pictures(net: MiconiNet, images: Tensor, n_top: int = 50, batch_size: int = 250) -> list[Tensor]:
    """Per layer (K, C, R, R): the mean image patch (standardised per image) under each unit's receptive field
    at its ``n_top`` largest responses ``y`` over the images."""
    if n_top < 1:
        raise ValueError(f"n_top must be >= 1, got {n_top}")
    fields, num_layers = receptive_fields(net), len(net.layers)
    pixels, best_values, best_where, sizes = [], [None] * num_layers, [None] * num_layers, [(0, 0)] * num_layers
    for start, batch in _batches(images, batch_size):
        pixels.append(standardize(batch))
        for index, state in enumerate(net.states(batch)):
            y = state.y.cpu()
            n, k, h, w = y.shape
            sizes[index] = (h, w)
            flat = y.movedim(1, 0).reshape(k, -1)
            positions = torch.arange(flat.shape[1]) + start * h * w  # global (image, i, j) index
            values = flat if best_values[index] is None else torch.cat([best_values[index], flat], 1)
            where = positions.expand(k, -1) if best_where[index] is None else torch.cat(
                [best_where[index], positions.expand(k, -1)], 1
            )
            top = values.topk(min(n_top, values.shape[1]), dim=1)
            best_values[index], best_where[index] = top.values, where.gather(1, top.indices)
    inputs = torch.cat(pixels)
    pictures = []
    for index, (size, step) in enumerate(fields):
        (h, w), where = sizes[index], best_where[index]
        image, i, j = where // (h * w), (where % (h * w)) // w, where % w
        rows = (i * step).unsqueeze(-1) + torch.arange(size)  # (K, n, R)
        cols = (j * step).unsqueeze(-1) + torch.arange(size)
        patches = inputs[image[..., None, None], :, rows[..., :, None], cols[..., None, :]]  # (K, n, R, R, C)
        pictures.append(patches.mean(1).permute(0, 3, 1, 2).contiguous())
    return pictures


def picture_stats(pictures: Tensor) -> dict[str, Tensor]:
    """Per picture (K, C, R, R): ``extent`` (√ of the effective area, in pixels, of its energy),
    ``frequency`` (power-weighted mean spatial frequency, cycles/pixel) and ``sparseness`` (Hoyer)."""
    centred = pictures - pictures.mean((2, 3), keepdim=True)
    energy = centred.square().sum(1).flatten(1)
    share = energy / energy.sum(1, keepdim=True).clamp(min=1e-30)
    extent = share.square().sum(1).clamp(min=1e-30).rsqrt()  # √(1 / Σ p²) = √(effective area)
    size = pictures.shape[-1]
    freqs = torch.fft.fftfreq(size)
    radius = (freqs.view(-1, 1).square() + freqs.view(1, -1).square()).sqrt()
    power = torch.fft.fft2(centred).abs().square().sum(1).flatten(1)
    frequency = (power * radius.flatten()).sum(1) / power.sum(1).clamp(min=1e-30)
    flat, n = centred.flatten(1), centred[0].numel()
    ratio = flat.abs().sum(1) / flat.norm(dim=1).clamp(min=1e-30)
    sparseness = (math.sqrt(n) - ratio) / (math.sqrt(n) - 1)
    return {"extent": extent, "frequency": frequency, "sparseness": sparseness}


def _treves_rolls(r: Tensor, dim: int) -> Tensor:
    """Vinje–Gallant sparseness ``(1 − (Σr/n)² / (Σr²/n)) / (1 − 1/n)`` along ``dim``; NaN where all zero."""
    n = r.shape[dim]
    mean_sq = r.mean(dim).square()
    sq_mean = r.square().mean(dim)
    return (1 - mean_sq / sq_mean) / (1 - 1 / n)  # 0/0 → NaN for silent vectors, skipped by nanmean


@torch.no_grad()
def response_sparsity(net: MiconiNet, images: Tensor, batch_size: int = 250) -> list[dict[str, float]]:
    """Per layer, sparseness of the output passed upward (before pooling): ``population`` (across channels
    at each image position, mean over non-silent positions), ``lifetime`` (each unit across images and
    positions, mean over units that ever respond) and the fraction of ``silent_units``."""
    population = [[] for _ in net.layers]
    sums = [0.0] * len(net.layers)  # per unit: Σ r, Σ r² over images and positions, and their number
    squares = [0.0] * len(net.layers)
    positions = [0] * len(net.layers)
    for _, batch in _batches(images, batch_size):
        for index, state in enumerate(net.states(batch)):
            out = state.output.cpu().double().abs()
            per_position = _treves_rolls(out, 1).flatten()
            population[index].append(per_position[~per_position.isnan()])
            sums[index] = sums[index] + out.sum((0, 2, 3))
            squares[index] = squares[index] + out.square().sum((0, 2, 3))
            positions[index] += out.shape[0] * out.shape[2] * out.shape[3]
    results = []
    for index, state_sum in enumerate(sums):
        mean, mean_sq = state_sum / positions[index], squares[index] / positions[index]
        lifetime = (1 - mean.square() / mean_sq) / (1 - 1 / positions[index])  # NaN for silent units
        per_position = torch.cat(population[index])
        results.append(
            {
                "population": float(per_position.mean()) if len(per_position) else float("nan"),
                "lifetime": float(lifetime.nanmean()),
                "silent_units": float((state_sum == 0).double().mean()),
            }
        )
    return results


# ------------------------------------------------------------------------------------------- figures


def picture_grid(pictures: Tensor, max_units: int = 100, scale: int | None = None) -> Tensor:
    """The first ``max_units`` pictures (K, C, R, R) tiled into one RGB image (3, H, W) in [0, 1], each
    scaled around grey (0 → 0.5) by its own largest magnitude, shown in grey (the channels' mean) unless
    C = 3; ``plt.imshow(grid.permute(1, 2, 0))``."""
    from torchvision.utils import make_grid

    pictures = pictures[:max_units].detach().cpu().float()
    peak = pictures.flatten(1).abs().amax(1).clamp(min=1e-12).view(-1, 1, 1, 1)
    shown = 0.5 + 0.5 * pictures / peak
    if shown.shape[1] != 3:
        shown = shown.mean(1, keepdim=True).expand(-1, 3, -1, -1)
    if scale is None:
        scale = max(1, 12 // pictures.shape[-1] + 1)
    shown = F.interpolate(shown, scale_factor=scale, mode="nearest")
    return make_grid(shown, nrow=math.ceil(math.sqrt(len(shown))), padding=1, pad_value=1.0)


def save_picture_grid(pictures: Tensor, path: str | Path, max_units: int = 100, scale: int | None = None) -> None:
    """Save ``picture_grid(pictures, max_units, scale)`` as a PNG (atomically)."""
    from torchvision.utils import save_image

    with atomic_path(path) as temp:
        save_image(picture_grid(pictures, max_units, scale), temp, format="png")
