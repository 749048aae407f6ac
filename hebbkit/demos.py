"""Small simulations for the workbook: 2-D data clouds and single neurons learning by a Hebbian rule.

Everything is seeded and runs on the CPU in milliseconds, so a notebook widget can redraw it at once.
The rules are the package's own (``hebbkit.rules``); nothing here re-implements them.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import Tensor

from .layers import HebbianConv2d
from .rules import Competitive, Rule, apply_update, check_learning_rate, instar, responses, unit_norm_, wta
from .utils import resolve_device, seed_everything


def gaussian_cloud(num_points: int = 500, angle: float = 30.0, stds: tuple[float, float] = (2.0, 0.5), seed: int = 0) -> Tensor:
    """A centred 2-D Gaussian cloud (N, 2) whose long axis (std ``stds[0]``) points at ``angle`` degrees."""
    if num_points < 2:
        raise ValueError(f"num_points must be >= 2, got {num_points}")
    generator = torch.Generator().manual_seed(seed)
    points = torch.randn(num_points, 2, generator=generator) * torch.tensor(stds)
    theta = math.radians(angle)
    rotation = torch.tensor([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    points = points @ rotation.T
    return points - points.mean(0)


def cluster_centres(num_clusters: int = 3, radius: float = 2.0) -> Tensor:
    """``num_clusters`` centres evenly spaced on a circle of ``radius`` around the origin, (K, 2)."""
    if num_clusters < 1:
        raise ValueError(f"num_clusters must be >= 1, got {num_clusters}")
    angles = torch.arange(num_clusters) * 2 * math.pi / num_clusters + math.pi / 2
    return radius * torch.stack([angles.cos(), angles.sin()], 1)


def clusters(num_points: int = 600, centres: Tensor | None = None, spread: float = 0.35, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Points (N, 2) drawn around ``centres`` (default ``cluster_centres()``) with Gaussian ``spread``,
    and the index of each point's cluster (N,)."""
    centres = cluster_centres() if centres is None else centres
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(num_points) % len(centres)
    points = centres[labels] + spread * torch.randn(num_points, 2, generator=generator)
    return points, labels


def ring_init(num_units: int, radius: float = 0.5, offset: float = 0.3) -> Tensor:
    """Initial weights (K, 2) spread evenly on a small circle, so every unit starts with a fair chance to win."""
    angles = torch.arange(num_units) * 2 * math.pi / num_units + offset
    return radius * torch.stack([angles.cos(), angles.sin()], 1)


@contextmanager
def one_thread() -> Iterator[None]:
    """Run torch on one CPU thread inside the block: the 2-D simulations are thousands of tiny operations, which
    extra threads only slow down (by 40× on a busy 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def learn(
    x: Tensor, rule: Rule, init: Tensor, lr: float, steps: int = 300, batch_size: int = 10, seed: int = 0
) -> Tensor:
    """Train weights ``init`` (K, D) on ``x`` (N, D) by ``rule`` with plain updates ``W ← W + lr·ΔW`` on
    seeded mini-batches; return the trajectory (steps + 1, K, D). A diverging rule stops growing at inf."""
    check_learning_rate(lr)
    if steps < 0 or batch_size < 1:
        raise ValueError(f"steps must be >= 0 and batch_size >= 1, got steps={steps}, batch_size={batch_size}")
    generator = torch.Generator().manual_seed(seed)
    weight = init.clone().to(x.dtype)
    trajectory = [weight.clone()]
    with one_thread():
        for _ in range(steps):
            batch = x[torch.randint(len(x), (batch_size,), generator=generator)]
            if torch.isfinite(weight).all():
                apply_update(weight, rule.update(batch, weight, responses(batch, weight)), lr)
            trajectory.append(weight.clone())
    return torch.stack(trajectory)


def learn_wta_bias(
    x: Tensor, init: Tensor, lr: float, steps: int = 300, bias_rate: float = 0.0, batch_size: int = 10, seed: int = 0
) -> tuple[Tensor, Tensor]:
    """Hard-WTA instar in which unit i competes with ``y_i − b_i``; after each mini-batch its bias moves by
    ``bias_rate · (share of the batch it won − 1/K)`` (DeSieno's "conscience": frequent winners are held
    back, a unit that never wins is helped). Seeded as :func:`learn`; returns the trajectory
    (steps + 1, K, D) and each unit's number of wins (K,)."""
    check_learning_rate(lr)
    if bias_rate < 0:
        raise ValueError(f"bias_rate must be >= 0, got {bias_rate}")
    generator = torch.Generator().manual_seed(seed)
    weight, bias = init.clone().to(x.dtype), torch.zeros(len(init), dtype=x.dtype)
    wins = torch.zeros(len(init), dtype=x.dtype)
    trajectory = [weight.clone()]
    with one_thread():
        for _ in range(steps):
            batch = x[torch.randint(len(x), (batch_size,), generator=generator)]
            r = wta(responses(batch, weight) - bias)
            apply_update(weight, instar(batch, weight, r), lr)
            bias += bias_rate * (r.mean(0) - 1 / len(weight))
            wins += r.sum(0)
            trajectory.append(weight.clone())
    return torch.stack(trajectory), wins


DEAD_UNIT_INIT = torch.tensor([[0.0, 0.8], [0.3, 0.9], [-0.1, -0.1]])  # unit 0 starts just behind unit 1


def temperature_sweep(
    x: Tensor, temperatures: Tensor, lr: float = 0.05, steps: int = 300, seed: int = 0
) -> tuple[Tensor, Tensor]:
    """Three soft-WTA units from ``ring_init(3)`` trained at each temperature: their mean distance to the
    data's mean and to the nearest of ``cluster_centres()``, one value per temperature."""
    spread, error = [], []
    for temperature in temperatures.tolist():
        final = learn(x, Competitive("soft", temperature=temperature), ring_init(3), lr, steps, seed=seed)[-1]
        spread.append(final.sub(x.mean(0)).norm(dim=1).mean())
        error.append(nearest_distances(final, cluster_centres()).mean())
    return torch.stack(spread), torch.stack(error)


def principal_axis(x: Tensor) -> Tensor:
    """The unit-norm first principal component of ``x`` (N, D), sign fixed so its first entry is >= 0."""
    centred = x - x.mean(0)
    _, vectors = torch.linalg.eigh(centred.T @ centred / len(x))
    top = vectors[:, -1]
    return top if top[0] >= 0 else -top


def angle_degrees(u: Tensor, v: Tensor) -> float:
    """The angle between the lines spanned by ``u`` and ``v``, in degrees (0..90, sign ignored)."""
    cosine = (u @ v).abs() / (u.norm() * v.norm())
    return math.degrees(math.acos(min(1.0, cosine.item())))


def nearest_distances(points: Tensor, targets: Tensor) -> Tensor:
    """For each row of ``points``, its distance to the nearest row of ``targets``."""
    return torch.cdist(points, targets).min(1).values


def train_conv_filters(
    images: Tensor,
    rule,
    channels: int = 32,
    kernel_size: int = 5,
    lr: float = 0.1,
    epochs: float = 1.0,
    batch_size: int = 64,
    unit_norm: bool = False,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> Tensor:
    """Train one plastic ``HebbianConv2d`` (no bias) by ``rule`` on float images (N, C, H, W) with plain SGD
    (``W ← W + lr·ΔW``), seeded; ``unit_norm`` rescales every filter to norm 1 after each step (for rules that
    compete on cosine similarity). Returns the filters (K, C, k, k) on the CPU."""
    check_learning_rate(lr)
    if channels < 1 or epochs <= 0 or batch_size < 1:
        raise ValueError(f"channels and batch_size must be >= 1 and epochs > 0, got {channels}, {batch_size}, {epochs}")
    device = resolve_device(device)
    generator = seed_everything(seed)
    layer = HebbianConv2d(images.shape[1], channels, kernel_size, bias=False, rule=rule).to(device)
    optimizer = torch.optim.SGD(layer.parameters(), lr=lr)

    def renormalise() -> None:
        if unit_norm:
            unit_norm_(layer.weight)

    renormalise()
    num_steps = max(1, math.ceil(epochs * len(images) / batch_size))
    order = torch.cat([torch.randperm(len(images), generator=generator) for _ in range(math.ceil(epochs) + 1)])
    for step in range(num_steps):
        batch = images[order[step * batch_size : (step + 1) * batch_size]].to(device)
        optimizer.zero_grad(set_to_none=True)
        layer(batch)  # the forward pass leaves −ΔW in weight.grad
        optimizer.step()
        renormalise()
    return layer.weight.detach().cpu()


def patch_principal_components(images: Tensor, kernel_size: int, count: int) -> Tensor:
    """The top ``count`` principal directions (count, C, k, k) of all k×k patches of ``images`` (uncentred,
    as a Hebbian layer without bias sees them), largest first."""
    patches = torch.nn.functional.unfold(images, kernel_size).transpose(1, 2).reshape(-1, images.shape[1] * kernel_size**2)
    _, vectors = torch.linalg.eigh(patches.T.double() @ patches.double() / len(patches))
    return vectors[:, -count:].flip(1).T.float().reshape(count, images.shape[1], kernel_size, kernel_size)


def check_exercise(name: str, answer: Any, test: Callable[[Any], bool], hint: str) -> None:
    """Check a learner's answer: say so when it is still ``None``/``...``, else assert ``test(answer)``."""
    if answer is None or answer is Ellipsis:
        print(f"{name}: not attempted yet ({hint})")
        return
    assert test(answer), f"{name}: not yet right. Hint: {hint}"
    print(f"{name}: correct!")


def image_patches(images: Tensor, size: int, count: int, seed: int = 0) -> Tensor:
    """``count`` random ``size``×``size`` patches of ``images`` (N, C, H, W), flattened to (count, C·size²), seeded."""
    if count < 1 or not 1 <= size <= min(images.shape[-2:]):
        raise ValueError(f"need count >= 1 and 1 <= size <= {min(images.shape[-2:])}, got count={count}, size={size}")
    generator = torch.Generator().manual_seed(seed)
    n, _, height, width = images.shape
    which = torch.randint(n, (count,), generator=generator)
    top = torch.randint(height - size + 1, (count, 1), generator=generator)
    left = torch.randint(width - size + 1, (count, 1), generator=generator)
    rows = (top + torch.arange(size))[:, None, :, None]
    cols = (left + torch.arange(size))[:, None, None, :]
    channels = torch.arange(images.shape[1])[None, :, None, None]
    return images[which[:, None, None, None], channels, rows, cols].flatten(1)


# ------------------------------------------------------------------------------- layers and own images

LAGANI_FIELDS = {1: (6, 2), 2: (10, 2), 3: (16, 4), 4: (24, 4), 5: (32, 32)}
"""(size, stride) in input pixels of a unit at the output of each block of Lagani's network (32×32 inputs):
conv 5 and pool 2, conv 3, conv 3 and pool 2, conv 3, fully connected."""


@torch.no_grad()
def lagani_pictures(net: torch.nn.Module, images: Tensor, layer: int, units: int = 16, n_top: int = 20,
                    batch_size: int = 250) -> Tensor:
    """What the first ``units`` units of block ``layer`` of a ``lagani.LaganiNet`` respond to: for each, the
    mean of the ``n_top`` image patches under its receptive field (``LAGANI_FIELDS``) where its output is
    largest over ``images`` (N, 3, 32, 32, standardised). Returns (units, 3, R, R)."""
    size, stride = LAGANI_FIELDS[layer]
    channels = net.blocks[layer - 1].norm.num_features
    device = next(net.parameters()).device
    outputs = []
    for start in range(0, len(images), batch_size):
        features = net.eval().features(images[start : start + batch_size].to(device), layer).cpu()
        outputs.append(features.view(len(features), channels, -1)[:, :units])
    out = torch.cat(outputs)  # (N, units, positions)
    positions, side = out.shape[2], math.isqrt(out.shape[2])
    top = out.permute(1, 0, 2).reshape(out.shape[1], -1).topk(n_top, dim=1).indices
    image, position = top // positions, top % positions
    rows = ((position // side) * stride)[..., None] + torch.arange(size)
    cols = ((position % side) * stride)[..., None] + torch.arange(size)
    channel = torch.arange(images.shape[1])[:, None, None]
    patches = images[image[..., None, None, None], channel, rows[..., None, :, None], cols[..., None, None, :]]
    return patches.mean(1)


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def load_image_folder(folder: str | Path, size: int = 64, max_images: int = 300) -> Tensor:
    """Up to ``max_images`` pictures found under ``folder`` (recursively, sorted by path) as RGB (N, 3, size,
    size) in [0, 1]: each resized so that its shorter side is ``size``, then centre-cropped."""
    from PIL import Image
    from torchvision.transforms import functional as TF

    paths = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)[:max_images]
    if not paths:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {folder}")
    pictures = []
    for path in paths:
        with Image.open(path) as image:
            tensor = TF.pil_to_tensor(image.convert("RGB"))
        pictures.append(TF.center_crop(TF.resize(tensor, size, antialias=True), size))
    return torch.stack(pictures).float() / 255


def whitened_patches(images: Tensor, size: int = 8, count: int = 20_000, eps: float = 0.1, seed: int = 0) -> Tensor:
    """``count`` random ``size``×``size`` patches of ``images`` (N, C, H, W), each centred and divided by its
    standard deviation (regularised by a tenth of the average patch variance, so flat patches such as sky are
    not blown up into noise), then ZCA-whitened together (``whitening.ZCA``, ``eps``). Returns (count, C·size²):
    the preprocessing under which competitive learning finds Gabor-like filters (Coates et al., 2011)."""
    from .whitening import ZCA

    patches = image_patches(images, size, count, seed)
    patches = patches - patches.mean(1, keepdim=True)
    variance = patches.var(1, keepdim=True)
    patches = patches / (variance + 0.1 * variance.mean()).sqrt()
    return ZCA((patches.shape[1],), eps).fit(patches)(patches)
