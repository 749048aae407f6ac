"""Plastic layers: ``nn.Linear`` / ``nn.Conv2d`` that learn by a local Hebbian rule.

When ``plastic`` and in training mode, ``forward`` computes the rule's update ``ΔW`` from this batch and
accumulates ``−ΔW`` into ``weight.grad``, so any ``torch.optim`` optimizer (plain SGD: ``W ← W + lr·ΔW``)
applies it. With ``plastic=False`` the layer is exactly its ``torch.nn`` parent: freeze it, or fine-tune
it end to end by backprop. The bias takes no part in the rule.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .rules import Competitive, Rule


class _Plastic:
    """Shared plastic behaviour; mixed into ``nn.Linear`` and ``nn.Conv2d``."""

    weight: nn.Parameter
    rule: Rule
    plastic: bool
    training: bool

    def _geometry(self) -> dict:
        return {}

    def _learn(self, x: Tensor, y: Tensor) -> None:
        """Accumulate ``−ΔW`` for responses ``y`` (without bias) into ``weight.grad``."""
        with torch.no_grad():
            gradient = self.rule.update(x.detach(), self.weight, y.detach(), scale=-1.0, **self._geometry())
            if self.weight.grad is None:
                self.weight.grad = gradient
            else:
                self.weight.grad.add_(gradient)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, rule={self.rule}, plastic={self.plastic}"  # type: ignore[misc]


class HebbianLinear(_Plastic, nn.Linear):
    """``nn.Linear`` whose weight learns by ``rule`` when plastic (see module docstring)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        rule: Rule = Competitive("wta"),
        plastic: bool = True,
    ) -> None:
        super().__init__(in_features, out_features, bias, device, dtype)
        self.rule, self.plastic = rule, plastic

    def forward(self, x: Tensor) -> Tensor:
        y = nn.functional.linear(x, self.weight)
        if self.plastic and self.training:
            self._learn(x, y)
        return y if self.bias is None else y + self.bias


class HebbianConv2d(_Plastic, nn.Conv2d):
    """``nn.Conv2d`` whose weight learns by ``rule`` at every patch position when plastic.

    Supports stride, padding and dilation; ``groups`` must be 1 and ``padding_mode`` ``"zeros"``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        rule: Rule = Competitive("wta"),
        plastic: bool = True,
    ) -> None:
        if groups != 1:
            raise ValueError(f"groups must be 1 for a Hebbian convolution, got {groups}")
        if padding_mode != "zeros":
            raise ValueError(f"padding_mode must be 'zeros' for a Hebbian convolution, got {padding_mode!r}")
        if isinstance(padding, str):
            raise ValueError(f"padding must be an int or a pair of ints, got {padding!r}")
        super().__init__(
            in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, padding_mode, device, dtype
        )
        self.rule, self.plastic = rule, plastic

    def _geometry(self) -> dict:
        return {"stride": self.stride, "padding": self.padding, "dilation": self.dilation}

    def forward(self, x: Tensor) -> Tensor:
        y = self._conv_forward(x, self.weight, None)
        if self.plastic and self.training:
            self._learn(x, y)
        return y if self.bias is None else y + self.bias.view(1, -1, 1, 1)
