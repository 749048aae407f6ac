"""Lagani et al. (SEBD 2022): Hebbian pre-training of a six-layer CNN, semi-supervised fine-tuning, Table 1.

One concern per file:

* ``net.py`` — the network (sizes follow the input shape), its classifier cuts, the VAE;
* ``pretraining.py`` — ``PretrainConfig``, the method registry ``METHODS``, Hebbian and VAE pre-training;
* ``finetuning.py`` — ``FinetuneConfig``, the SGD loop, end-to-end fine-tuning and heads on fixed features;
* ``experiment.py`` — presets, the checked weight cache, the shared results store, the resumable loop, the CLI;
* ``table.py`` — intervals, Table 1 beside the paper, verdicts, heatmap and convergence plot;
* ``paper.py`` — the paper's Table 1 as data.

Batches, augmentation, prediction and batch-norm averaging are shared with Miconi's study in ``hebbkit.loops``.
A new rule goes in ``hebbkit/rules.py`` and a method using it is one ``Method`` entry in ``pretrain.METHODS``;
a new dataset needs no code here (``hebbkit.data.load_data``).
"""

from .experiment import PRESETS, Preset, Results, get_preset, run_experiment
from .finetuning import FinetuneConfig, finetune, train_head, train_sgd
from .net import LAYERS, VAE, Classifier, Head, LaganiNet, NetSpec, check_layer
from .pretraining import DISPLAY_NAMES, METHODS, Method, PretrainConfig, check_method, make_method, pretrain
from .table import (best_per_regime, claim_verdicts, confidence_interval, convergence_data, convergence_plot,
                    format_table, heatmap, scratch_differences, table1, write_outputs)

__all__ = [
    "PRESETS", "Preset", "Results", "get_preset", "run_experiment",
    "FinetuneConfig", "finetune", "train_head", "train_sgd",
    "LAYERS", "VAE", "Classifier", "Head", "LaganiNet", "NetSpec", "check_layer",
    "DISPLAY_NAMES", "METHODS", "Method", "PretrainConfig", "check_method", "make_method", "pretrain",
    "best_per_regime", "claim_verdicts", "confidence_interval", "convergence_data", "convergence_plot",
    "format_table", "heatmap", "scratch_differences", "table1", "write_outputs",
]
