"""hebbkit: Hebbian learning for deep networks — rules, plastic layers, reproducible experiments."""

from . import rules
from .layers import HebbianConv2d, HebbianLinear
from .rules import HPCA, Competitive, Hebb, Oja, make_rule

__version__ = "0.1.0"
__all__ = ["rules", "HebbianConv2d", "HebbianLinear", "Hebb", "Oja", "Competitive", "HPCA", "make_rule"]
