"""Pre-training: Hebbian pre-training of all blocks together, the VAE's, and :func:`pretrain`, which runs the
method registered in :data:`~.methods.METHODS` under its own settings.

* ``hpca``, ``softwta``: Hebbian pre-training of all five blocks together (:func:`pretrain_hebbian`), HPCA
  with ``f = ReLU`` and Lagani's :class:`~hebbkit.rules.SoftWTA`; a Hebbian class-mean classifier on block 5
  picks the best epoch on validation images, as the reference's supervised Hebbian ``fc6`` does.
* ``vae``: the five blocks as the encoder of the reference's variational auto-encoder (:class:`~.net.VAE`).
* ``supervised``: no pre-training; the cut network is trained end to end on the labelled images.
* ``random``: no pre-training; the random blocks stay frozen and only the classifier learns.
"""

from __future__ import annotations

import math
import pkgutil
import sys
from dataclasses import replace
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from ..data import ImageSet
from ..loops import (BestState, as_input, autocast, batches, check_precision, count_steps, lr_at, place,
                     settle_statistics, sgd, shuffled_steps)
from ..rules import Rule, make_rule, unit_norm_, weighted_instar
from ..utils import seed_everything
from ..whitening import ZCA
from .methods import HebbianConfig, PretrainConfig, VAEConfig, check_config, make_method
from .net import VAE, LaganiNet, vae_loss

Checkpoint = Callable[[LaganiNet, float], None]


def show_progress(progress: bool | None) -> bool:
    """Progress bars when asked, or by default when stderr is a terminal."""
    return sys.stderr.isatty() if progress is None else progress


def build_net(method: str, config: object, images: ImageSet, width: float) -> LaganiNet:
    """The untrained network of ``method`` under its settings ``config``, for ``images``' shape and classes."""
    spec = make_method(method).net
    if isinstance(config, HebbianConfig):
        spec = replace(spec, modified_bn=config.modified_bn)
    return LaganiNet(spec, images.shape, images.num_classes, width)


def pretrain(
    method: str,
    images: ImageSet,
    config: object | None = None,
    *,
    shared: PretrainConfig = PretrainConfig(),
    seed: int = 0,
    width: float = 1.0,
    val: ImageSet | None = None,
    device: torch.device | str = "cpu",
    progress: bool | None = None,
    checkpoint: Checkpoint | None = None,
    checkpoints_per_epoch: int = 1,
    precision: str = "float32",
) -> LaganiNet:
    """A :class:`LaganiNet` pre-trained by ``method`` on ``images`` (labels used only by the Hebbian epoch
    selection, as in the reference), with BN statistics averaged over ``images``.

    ``config``: the method's settings (default: its registered ones, the reference's; see
    :func:`~.methods.configure`); ``shared``: the settings every method shares. ``val``: images that pick the best
    pre-training epoch. ``checkpoint(net, epochs)`` is called (Hebbian methods) before training and after every
    ``1/checkpoints_per_epoch`` epoch. ``device``: where to train (an entry point resolves ``"auto"`` with
    :func:`hebbkit.utils.resolve_device` first). ``precision``: of a backprop method's forward passes (the VAE's,
    :func:`~hebbkit.loops.autocast`); Hebbian training stays float32.

    >>> from hebbkit.data import synthetic_images
    >>> from hebbkit.lagani.methods import configure
    >>> images = synthetic_images(64, seed=0)
    >>> net = pretrain("hpca", images, configure("hpca", epochs=1, batch_size=32), width=0.125, progress=False)
    >>> net.feature_dims[0] > 0
    True
    """
    spec = make_method(method)
    config = spec.config if config is None else check_config(method, config)
    device = torch.device(device)
    check_precision(precision)
    generator = seed_everything(seed)
    net = place(build_net(method, config, images, width), device)
    if shared.num_images is not None:
        images = images.subset(slice(0, shared.num_images))
    if spec.net.whiten:
        net.whiten = ZCA(images.shape, config.zca_eps).to(device)
        net.whiten.fit([x for x, _ in batches(images, 2048, device)])
    if spec.pretrain is not None:
        # a Hebbian method gets its rule, a backprop one the precision of its forward passes
        own = ({"precision": precision} if spec.rule is None
               else {"rule": make_rule(spec.rule, **config.rule_options())})
        pkgutil.resolve_name(spec.pretrain)(net, images, config, val=val, generator=generator, device=device,
                                            progress=progress, checkpoint=checkpoint,
                                            checkpoints_per_epoch=checkpoints_per_epoch, **own)
    settle_statistics(net, images.subset(slice(0, shared.statistics_images)))
    return net.eval()


def pretrain_hebbian(
    net: LaganiNet,
    images: ImageSet,
    config: HebbianConfig,
    *,
    rule: Rule,
    val: ImageSet | None,
    generator: torch.Generator,
    device: torch.device,
    progress: bool | None,
    checkpoint: Checkpoint | None,
    checkpoints_per_epoch: int,
) -> None:
    """Train all blocks together, as the reference does: every batch runs through the whole network in
    training mode (batch statistics in BN) and each plastic layer learns from the output of the block below.

    SGD step ``lr`` on each layer's ΔW of ``rule``, divided by √fan-in with ``fan_in_step`` (HPCA). A class-mean
    classifier on block 5 learns alongside from the labels (the rule :func:`~hebbkit.rules.weighted_instar` with
    one-hot responsibilities, the reference's supervised Hebbian ``fc6``); with ``val`` and more than one epoch, the epoch whose classifier scores best on ``val`` is kept.
    """
    layers = [block.layer for block in net.blocks]
    groups = []
    for layer in layers:
        layer.rule, layer.plastic = rule, True
        if rule.unit_norm:
            unit_norm_(layer.weight)
        fan_in = layer.weight[0].numel()
        groups.append({"params": [layer.weight], "lr": config.lr / math.sqrt(fan_in) if config.fan_in_step else config.lr})
    optimizer = torch.optim.SGD(groups, lr=config.lr)
    means = torch.zeros(net.num_classes, net.feature_dims[4], device=device)  # the class-mean classifier
    total = count_steps(config.epochs, len(images), config.batch_size)
    per_epoch = count_steps(1, len(images), config.batch_size)
    per_checkpoint = count_steps(1 / checkpoints_per_epoch, len(images), config.batch_size)
    best = BestState(net)
    if checkpoint is not None:
        checkpoint(net, 0.0)
    steps = shuffled_steps(len(images), config.epochs, config.batch_size, generator)
    for step, index in enumerate(tqdm(steps, total=total, desc="Hebbian", disable=not show_progress(progress),
                                      leave=False), start=1):
        batch = images.subset(index)
        net.train()
        optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            features = net.features(as_input(batch.float(device)), 5)
            teacher = F.one_hot(batch.labels.to(device), net.num_classes).to(features.dtype)
            means.add_(weighted_instar(features, means, teacher), alpha=config.lr)
        optimizer.step()
        if rule.unit_norm:
            for layer in layers:
                unit_norm_(layer.weight)
        net.eval()
        if checkpoint is not None and step % per_checkpoint == 0:
            checkpoint(net, step * config.batch_size / len(images))
        if val is not None and total > per_epoch and (step % per_epoch == 0 or step == total):
            best.offer(class_mean_accuracy(net, means, val))
    if checkpoint is not None and total % per_checkpoint:  # the end of training, when not already probed
        checkpoint(net, total * config.batch_size / len(images))
    for layer in layers:
        layer.plastic, layer.weight.grad = False, None
    best.restore()


@torch.no_grad()
def class_mean_accuracy(net: LaganiNet, means: Tensor, images: ImageSet) -> float:
    """Accuracy (%) of the class-mean classifier ``argmax_c m_c·x/‖m_c‖`` on block 5's features."""
    directions = means / means.norm(dim=1, keepdim=True).clamp_min(1e-12)
    hits = [(net.features(x, 5) @ directions.T).argmax(1) == y for x, y in batches(images, 256, means.device)]
    return 100 * torch.cat(hits).float().mean().item()


def pretrain_vae(
    net: LaganiNet,
    images: ImageSet,
    config: VAEConfig,
    *,
    val: ImageSet | None,
    generator: torch.Generator,
    device: torch.device,
    progress: bool | None,
    checkpoint: Checkpoint | None,
    checkpoints_per_epoch: int,
    precision: str = "float32",
) -> None:
    """SGD with Nesterov momentum on :func:`~.net.vae_loss`, the rate halved every epoch from
    ``decay_from``; with ``val``, the encoder of the epoch with the lowest validation loss is kept (the VAE has no
    convergence probe: ``checkpoint`` is not called). The VAE's forward pass in ``precision``, its loss in
    float32."""
    vae = VAE(net, config.latent_dim).to(device)
    optimizer = sgd(vae.parameters(), lr=config.lr, momentum=0.9, nesterov=True)
    total = count_steps(config.epochs, len(images), config.batch_size)
    per_epoch = count_steps(1, len(images), config.batch_size)
    best = BestState(net, lower=True)
    steps = shuffled_steps(len(images), config.epochs, config.batch_size, generator)
    for step, index in enumerate(tqdm(steps, total=total, desc="VAE", disable=not show_progress(progress),
                                      leave=False), start=1):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(config.lr, 0.5, config.decay_from, (step - 1) // per_epoch)
        x = as_input(images.subset(index).float(device))
        vae.train()
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, precision):
            outputs = vae(x)
        loss = vae_loss(x, *(output.float() for output in outputs), beta=config.beta)
        if not torch.isfinite(loss):
            raise RuntimeError(f"VAE pre-training diverged at step {step} (loss {loss.item()}); lower the VAE's lr")
        loss.backward()
        optimizer.step()
        if val is not None and total > per_epoch and (step % per_epoch == 0 or step == total):
            best.offer(_vae_validation_loss(vae, val, config.beta, precision))
    best.restore()


@torch.no_grad()
def _vae_validation_loss(vae: VAE, images: ImageSet, beta: float, precision: str) -> float:
    vae.eval()
    device = vae.fc_mu.weight.device
    losses = []
    for x, _ in batches(images, 256, device):
        with autocast(device, precision):
            outputs = vae(x)
        losses.append(vae_loss(x, *(output.float() for output in outputs), beta=beta).item() * len(x))
    return sum(losses) / len(images)
