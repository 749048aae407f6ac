"""SoftHebb's network (Journé et al. 2023, preset ``4SoftHebbCnnCIFAR``): three Hebbian convolutional blocks,
96 → 384 → 1536 channels, each ``BN (no affine) → reflect padding → Hebbian conv → triangle → pooling``.

The same blocks learn by SoftHebb's rule or by Krotov–Hopfield's (``NetConfig.rule``); ``width`` scales the
channels. A linear classifier on a block's output (the authors' ``BN → flatten → dropout → linear``) is trained
apart, on the frozen features (``training.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..checks import check_choice, check_positive
from ..layers import HebbianConv2d
from ..rules import make_rule

RULES = ("softhebb", "krotov")
POOLS = ("max", "avg")


@dataclass(frozen=True)
class BlockSpec:
    """One block: ``channels`` (at width 1), ``kernel`` (reflect padding ``kernel // 2``), the rule's softmax
    ``temperature`` (the authors' ``1 / t_invert``) and rate ``lr``, the triangle's ``power``, and the pooling
    (``pool``: max or avg, ``pool_kernel``, ``pool_stride``, ``pool_padding``)."""

    channels: int
    kernel: int
    temperature: float
    lr: float
    power: float
    pool: str
    pool_kernel: int
    pool_stride: int
    pool_padding: int

    def __post_init__(self) -> None:
        for name in ("channels", "kernel", "pool_kernel", "pool_stride"):
            check_positive(name, getattr(self, name), integer=True)
        for name in ("temperature", "lr", "power"):
            check_positive(name, getattr(self, name))
        check_choice("pool", self.pool, POOLS)


# presets.json, model "4SoftHebbCnnCIFAR": softkrotov-c96-k5-p2-t1-lr0.08-lp0.5 (triangle 0.7, max_4_2_1),
# c384-k3-p1-t0.65-lr0.005-lp0.5 (triangle 1.4, max_4_2_1), c1536-k3-p1-t0.25-lr0.01-lp0.5 (triangle 1, avg_2_2_0);
# temperature = 1 / t
SOFTHEBB_BLOCKS = (
    BlockSpec(96, 5, 1.0, 0.08, 0.7, "max", 4, 2, 1),
    BlockSpec(384, 3, 1 / 0.65, 0.005, 1.4, "max", 4, 2, 1),
    BlockSpec(1536, 3, 1 / 0.25, 0.01, 1.0, "avg", 2, 2, 0),
)


@dataclass(frozen=True)
class NetConfig:
    """The network: ``blocks``, ``width`` (channel multiplier), ``rule`` (``softhebb`` or ``krotov``), the
    initial weight norm ``radius`` (the authors' normal init with ``std = radius / √fan-in``), SoftHebb's rate
    exponent ``rate_power`` (``lp`` in the presets) and Krotov–Hopfield's ``k``, ``delta``, ``p``."""

    blocks: tuple[BlockSpec, ...] = SOFTHEBB_BLOCKS
    width: float = 1.0
    rule: str = "softhebb"
    radius: float = 25.0
    rate_power: float = 0.5
    k: int = 9
    delta: float = 0.08
    p: float = 2.0

    def __post_init__(self) -> None:
        check_choice("rule", self.rule, RULES)
        check_positive("width", self.width)
        check_positive("radius", self.radius)
        if not self.blocks:
            raise ValueError("blocks must name at least one block")

    def channels(self, index: int) -> int:
        """Block ``index``'s channels at this width (at least ``k + 1``, so that Krotov–Hopfield can rank)."""
        return max(self.k + 1, round(self.blocks[index].channels * self.width))

    def rule_for(self, block: BlockSpec):
        if self.rule == "softhebb":
            return make_rule("softhebb", temperature=block.temperature, power=self.rate_power)
        return make_rule("krotov", k=self.k, delta=self.delta, p=self.p)


def triangle(x: Tensor, power: float) -> Tensor:
    """The authors' "triangle" activation: ``relu(x − mean over channels) ** power``."""
    return F.relu(x - x.mean(1, keepdim=True)).pow(power)


class Block(nn.Module):
    """``BN (no affine) → reflect pad → Hebbian conv (no bias) → triangle → pool``."""

    def __init__(self, in_channels: int, out_channels: int, spec: BlockSpec, config: NetConfig) -> None:
        super().__init__()
        self.spec = spec
        self.norm = nn.BatchNorm2d(in_channels, affine=False, momentum=None)  # cumulative running statistics
        self.layer = HebbianConv2d(in_channels, out_channels, spec.kernel, bias=False, rule=config.rule_for(spec),
                                   plastic=False)
        fan_in = self.layer.weight[0].numel()
        with torch.no_grad():
            self.layer.weight.normal_(0, config.radius / fan_in**0.5)

    def forward(self, x: Tensor) -> Tensor:
        pad = self.spec.kernel // 2
        y = self.layer(F.pad(self.norm(x), (pad,) * 4, mode="reflect"))
        y = triangle(y, self.spec.power)
        pool = F.max_pool2d if self.spec.pool == "max" else F.avg_pool2d
        return pool(y, self.spec.pool_kernel, self.spec.pool_stride, self.spec.pool_padding)


class SoftHebbNet(nn.Module):
    """The Hebbian blocks; ``features(x, depth)`` is the output of block ``depth`` (1-based)."""

    def __init__(self, config: NetConfig, in_channels: int = 3) -> None:
        super().__init__()
        self.config = config
        blocks, channels = [], in_channels
        for index, spec in enumerate(config.blocks):
            out = config.channels(index)
            blocks.append(Block(channels, out, spec, config))
            channels = out
        self.blocks = nn.ModuleList(blocks)

    @property
    def depth(self) -> int:
        return len(self.blocks)

    def features(self, x: Tensor, depth: int | None = None) -> Tensor:
        depth = self.depth if depth is None else depth
        if not 1 <= depth <= self.depth:
            raise ValueError(f"depth must be in 1..{self.depth}, got {depth}")
        for block in self.blocks[:depth]:
            x = block(x)
        return x

    def forward(self, x: Tensor) -> Tensor:
        return self.features(x)

    def feature_shape(self, shape: tuple[int, int, int], depth: int) -> tuple[int, ...]:
        """(C, H, W) of ``features`` at ``depth`` for images of ``shape``."""
        with torch.no_grad():
            was = self.training
            self.eval()
            out = self.features(torch.zeros(1, *shape, device=self.blocks[0].layer.weight.device), depth)
            self.train(was)
        return tuple(out.shape[1:])


class Classifier(nn.Module):
    """The authors' linear readout on a block's output: ``BN (no affine) → flatten → dropout → linear``."""

    def __init__(self, shape: tuple[int, int, int], num_classes: int, dropout: float = 0.5) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(shape[0], affine=False)
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(shape[0] * shape[1] * shape[2], num_classes)

    def forward(self, features: Tensor) -> Tensor:
        return self.linear(self.dropout(self.norm(features).flatten(1)))
