"""SoftHebb's study (Journé et al. 2023) and Krotov–Hopfield's rule in the same convolutional blocks.

* ``net.py``: the blocks (``BlockSpec``, ``SOFTHEBB_BLOCKS``, ``NetConfig``), the triangle activation,
  ``SoftHebbNet`` and the authors' ``Classifier``.
* ``training.py``: the unsupervised epoch (block after block), the classifier on frozen features, fine-tuning.
* ``experiment.py``: presets (smoke, quick, paper), ``run_softhebb``, the pictures of each block and the
  ``hebbkit softhebb`` handler.

The rules themselves are :class:`hebbkit.rules.SoftHebb` and :class:`hebbkit.rules.KrotovHopfield`.
"""

from .experiment import (
    PRESETS,
    Preset,
    filter_pictures,
    get_preset,
    labelled_images,
    markdown_table,
    receptive_field,
    run_softhebb,
    top_patch_pictures,
)
from .net import SOFTHEBB_BLOCKS, BlockSpec, Classifier, NetConfig, SoftHebbNet, triangle
from .training import ClassifierConfig, FinetuneConfig, HebbianConfig, block_features, train_classifier, train_hebbian

__all__ = [
    "PRESETS", "SOFTHEBB_BLOCKS", "BlockSpec", "Classifier", "ClassifierConfig", "FinetuneConfig", "HebbianConfig",
    "NetConfig", "Preset", "SoftHebbNet", "block_features", "filter_pictures", "get_preset", "labelled_images",
    "markdown_table", "receptive_field", "run_softhebb", "top_patch_pictures", "train_classifier", "train_hebbian",
    "triangle",
]
