"""Miconi's multi-layer Hebbian CNN (Miconi 2021) and the ``layers`` study of what each layer learns.

* ``net.py``: configs (``LayerSpec``, ``NetConfig``, ``TrainConfig``, interventions), the stateless maths
  (ZCA, k-WTA, the plasticity losses, pruning masks, feature sizes), the layers, ``MiconiNet`` and training.
* ``probe.py``: what a trained network holds: pooled features, the ridge readout, pixel-space pictures of
  the units, picture and response statistics, picture grids.
* ``experiment.py``: the ``layers`` experiment: presets, image selection, one run per intervention, the
  table and figures, and the ``hebbkit layers`` handler.

To add a rule: a name in ``net.RULES`` and its loss in ``net.plasticity_loss`` (and the ``RULES`` copy in
``hebbkit/cli.py``). To add an intervention: a name in ``net.INTERVENTIONS`` and what it changes in the
config in ``net.with_intervention`` (and the ``INTERVENTIONS`` copy in ``hebbkit/cli.py``).
"""

from . import probe
from .experiment import PRESETS, Preset, get_preset, markdown_table, run_intervention, run_layers, select_images
from .net import (
    INTERVENTIONS,
    MICONI_LAYERS,
    RULES,
    LayerSpec,
    MiconiNet,
    NetConfig,
    TrainConfig,
    feature_sizes,
    train_network,
    with_intervention,
)

__all__ = [
    "INTERVENTIONS", "MICONI_LAYERS", "PRESETS", "RULES", "LayerSpec", "MiconiNet", "NetConfig", "Preset",
    "TrainConfig", "feature_sizes", "get_preset", "markdown_table", "probe", "run_intervention", "run_layers",
    "select_images", "train_network", "with_intervention",
]
