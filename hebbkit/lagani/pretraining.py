"""Pre-training methods: the registry (``METHODS``), Hebbian pre-training and the VAE's.

To add a method, write its pre-training function (the signature of :func:`pretrain_hebbian` after its keyword
``rule_for``/``fan_in_step``, or of :func:`pretrain_vae`) and register one :class:`Method` in ``METHODS``; a
new Hebbian rule only needs a ``rule_for`` (see ``hebbkit.rules``).

* ``hpca``, ``softwta``: Hebbian pre-training of all five blocks together (:func:`pretrain_hebbian`), HPCA
  with ``f = ReLU`` and Lagani's :class:`~hebbkit.rules.SoftWTA`; a Hebbian class-mean classifier on block 5
  picks the best epoch on validation images, as the reference's supervised Hebbian ``fc6`` does.
* ``vae``: the five blocks as the encoder of the reference's variational auto-encoder (:class:`~.net.VAE`).
* ``supervised``: no pre-training; the cut network is trained end to end on the labelled images.
* ``random``: no pre-training; the random blocks stay frozen and only the classifier learns.
"""

from __future__ import annotations

import functools
import math
import sys
from dataclasses import dataclass, replace
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from ..data import ImageSet
from ..loops import BestState, as_input, batches, count_steps, lr_at, place, settle_statistics, shuffled_steps
from ..rules import HPCA, Rule, SoftWTA, unit_norm_, weighted_instar
from ..utils import check_choice, check_positive, seed_everything
from ..whitening import ZCA
from .net import VAE, LaganiNet, NetSpec, vae_loss

Checkpoint = Callable[[LaganiNet, float], None]


def show_progress(progress: bool | None) -> bool:
    """Progress bars when asked, or by default when stderr is a terminal."""
    return sys.stderr.isatty() if progress is None else progress


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


def check_method(method: str) -> str:
    """Return ``method`` if it is registered in ``METHODS``, else raise ``ValueError``."""
    return make_method(method).name


def net_spec(method: str, config: PretrainConfig) -> NetSpec:
    """The network ``method`` pre-trains and fine-tunes under ``config``."""
    return replace(make_method(method).net, modified_bn=config.modified_bn)


def build_net(method: str, config: PretrainConfig, images: ImageSet, width: float) -> LaganiNet:
    """The untrained network of ``method`` for ``images``' shape and classes."""
    return LaganiNet(net_spec(method, config), images.shape, images.num_classes, width)


def pretrain(
    method: str,
    images: ImageSet,
    config: PretrainConfig = PretrainConfig(),
    *,
    seed: int = 0,
    width: float = 1.0,
    val: ImageSet | None = None,
    device: torch.device | str = "cpu",
    progress: bool | None = None,
    checkpoint: Checkpoint | None = None,
) -> LaganiNet:
    """A :class:`LaganiNet` pre-trained by ``method`` on ``images`` (labels used only by the Hebbian epoch
    selection, as in the reference), with BN statistics averaged over ``images``.

    ``val``: images that pick the best pre-training epoch. ``checkpoint(net, epochs)`` is called (Hebbian
    methods) before training and after every ``1/checkpoints_per_epoch`` epoch. ``device``: where to train
    (an entry point resolves ``"auto"`` with :func:`hebbkit.utils.resolve_device` first).
    """
    spec = make_method(method)
    device = torch.device(device)
    generator = seed_everything(seed)
    net = place(build_net(method, config, images, width), device)
    if config.num_images is not None:
        images = images.subset(slice(0, config.num_images))
    if spec.net.whiten:
        net.whiten = ZCA(images.shape, config.zca_eps).to(device)
        net.whiten.fit([x for x, _ in batches(images, 2048, device)])
    if spec.pretrain is not None:
        spec.pretrain(net, images, config, val=val, generator=generator, device=device, progress=progress,
                      checkpoint=checkpoint)
    settle_statistics(net, images.subset(slice(0, config.statistics_images)))
    return net.eval()


def pretrain_hebbian(
    net: LaganiNet,
    images: ImageSet,
    config: PretrainConfig,
    *,
    rule_for: Callable[[PretrainConfig], Rule],
    fan_in_step: bool,
    val: ImageSet | None,
    generator: torch.Generator,
    device: torch.device,
    progress: bool | None,
    checkpoint: Checkpoint | None,
) -> None:
    """Train all blocks together, as the reference does: every batch runs through the whole network in
    training mode (batch statistics in BN) and each plastic layer learns from the output of the block below.

    ``rule_for(config)`` gives the rule. SGD step ``lr`` on each layer's ΔW, divided by √fan-in where
    ``fan_in_step`` (HPCA). A class-mean classifier on block 5 learns alongside from the labels (the rule
    :func:`~hebbkit.rules.weighted_instar` with one-hot responsibilities, the reference's supervised Hebbian
    ``fc6``); with ``val`` and more than one epoch, the epoch whose classifier scores best on ``val`` is kept.
    """
    rule = rule_for(config)
    layers = [block.layer for block in net.blocks]
    groups = []
    for layer in layers:
        layer.rule, layer.plastic = rule, True
        if rule.unit_norm:
            unit_norm_(layer.weight)
        fan_in = layer.weight[0].numel()
        groups.append({"params": [layer.weight], "lr": config.lr / math.sqrt(fan_in) if fan_in_step else config.lr})
    optimizer = torch.optim.SGD(groups, lr=config.lr)
    means = torch.zeros(net.num_classes, net.feature_dims[4], device=device)  # the class-mean classifier
    total = count_steps(config.epochs, len(images), config.batch_size)
    per_epoch = count_steps(1, len(images), config.batch_size)
    per_checkpoint = count_steps(1 / config.checkpoints_per_epoch, len(images), config.batch_size)
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
    config: PretrainConfig,
    *,
    val: ImageSet | None,
    generator: torch.Generator,
    device: torch.device,
    progress: bool | None,
    checkpoint: Checkpoint | None,
) -> None:
    """SGD with Nesterov momentum on :func:`~.net.vae_loss`, the rate halved every epoch from
    ``vae_decay_from``; with ``val``, the encoder of the epoch with the lowest validation loss is kept."""
    vae = VAE(net, config.latent_dim).to(device)
    optimizer = torch.optim.SGD(vae.parameters(), lr=config.vae_lr, momentum=0.9, nesterov=True)
    total = count_steps(config.vae_epochs, len(images), config.vae_batch_size)
    per_epoch = count_steps(1, len(images), config.vae_batch_size)
    best = BestState(net, lower=True)
    steps = shuffled_steps(len(images), config.vae_epochs, config.vae_batch_size, generator)
    for step, index in enumerate(tqdm(steps, total=total, desc="VAE", disable=not show_progress(progress),
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
            best.offer(_vae_validation_loss(vae, val, config.vae_beta))
    best.restore()


@torch.no_grad()
def _vae_validation_loss(vae: VAE, images: ImageSet, beta: float) -> float:
    vae.eval()
    device = vae.fc_mu.weight.device
    losses = [vae_loss(x, *vae(x), beta=beta).item() * len(x) for x, _ in batches(images, 256, device)]
    return sum(losses) / len(images)


METHODS: dict[str, Method] = {
    "hpca": Method("hpca", "HPCA", NetSpec(hebbian=True),
                   functools.partial(pretrain_hebbian, rule_for=lambda config: HPCA("relu"), fan_in_step=True)),
    "softwta": Method("softwta", "softWTA", NetSpec(hebbian=True, project=True, whiten=True),
                      functools.partial(pretrain_hebbian, rule_for=lambda config: SoftWTA(config.temperature),
                                        fan_in_step=False)),
    "vae": Method("vae", "VAE", NetSpec(), pretrain_vae),
    "supervised": Method("supervised", "supervised", NetSpec(), None),
    "random": Method("random", "random", NetSpec(), None, trains_trunk=False),
}
DISPLAY_NAMES = {name: method.display for name, method in METHODS.items()}
