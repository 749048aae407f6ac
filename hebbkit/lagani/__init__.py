"""Lagani et al. (SEBD 2022): Hebbian pre-training of a six-layer CNN, semi-supervised fine-tuning, Table 1.

One concern per file:

* ``methods.py`` — the method registry ``METHODS``: each method's network, settings (a small frozen config) and
  pre-training function; no torch, so that the command line can read it;
* ``net.py`` — the network (sizes follow the input shape), its classifier cuts, the VAE;
* ``pretraining.py`` — Hebbian and VAE pre-training, and ``pretrain``, which runs a registered method;
* ``finetuning.py`` — ``FinetuneConfig``, the SGD loop, end-to-end fine-tuning and heads on fixed features;
* ``experiment.py`` — presets, the checked weight cache, the shared results store, the resumable loop, the CLI;
* ``table.py`` — intervals, Table 1 beside the paper, verdicts, heatmap and convergence plot;
* ``paper.py`` — the paper's Table 1 as data.

Batches, augmentation, prediction and batch-norm averaging are shared with Miconi's study in ``hebbkit.loops``.
A new rule goes in ``hebbkit/rules.py`` and a method using it is one ``Method`` entry in ``methods.METHODS``;
a new dataset needs no code here (``hebbkit.data.load_data``). The names below load their module on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from . import methods  # torch-free: the command line reads the registry

_NAMES = {
    "experiment": ("PRESETS", "Preset", "Results", "get_preset", "run_experiment", "stored_results"),
    "finetuning": ("FinetuneConfig", "finetune", "train_head", "train_sgd"),
    "net": ("LAYERS", "VAE", "Classifier", "Head", "LaganiNet", "check_layer"),
    "pretraining": ("pretrain",),
    "table": ("accuracy_name", "best_layer_verdicts", "best_layers", "best_per_regime", "claim_verdicts",
              "confidence_interval", "convergence_data", "convergence_plot", "format_table", "heatmap",
              "paired_difference", "scratch_differences", "shortfalls", "table1", "verdict", "write_outputs"),
}
_NAMES["methods"] = tuple(  # the registry's room exports all it defines: a new method's config needs no entry here
    name for name, value in vars(methods).items()
    if not name.startswith("_") and (name.isupper() or getattr(value, "__module__", None) == methods.__name__))
_MODULE_OF = {name: module for module, names in _NAMES.items() for name in names}
__all__ = [*_MODULE_OF]


def __getattr__(name: str) -> Any:
    if name in _MODULE_OF:
        return getattr(importlib.import_module(f".{_MODULE_OF[name]}", __name__), name)
    raise AttributeError(f"module 'hebbkit.lagani' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
