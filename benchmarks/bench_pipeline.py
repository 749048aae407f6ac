"""Throughput (images/s) of Lagani's pipeline stages on the full-width six-layer network.

  pretrain <method>   — Hebbian pre-training, one block after another (each finished block's outputs stored
                        as the next block's input, as in ``hebbkit.lagani.pretrain``), images through all blocks;
  vae                 — VAE pre-training (encoder + decoder, backprop);
  finetune L1 / L5    — end-to-end SGD fine-tuning of the net cut after layer 1 / 5 (the paper's protocol),
                        and L3 with flips and crops (the quick preset's protocol);
  head L1             — classifier-only training on fixed layer-1 features (the quick preset's protocol);
  features L1..L5     — one pass computing every layer's features (evaluation, frozen fine-tuning);
  evaluate L5         — an end-to-end classifier's forward pass.
Synthetic CIFAR-shaped images; the ratios printed at the end compare the stages with plain evaluation, and the
last lines the channels-last memory layout the pipeline uses (``hebbkit.loops.as_input``) with PyTorch's default.

    python benchmarks/bench_pipeline.py [--images 512] [--device cpu|cuda] [--threads N]
"""

from __future__ import annotations

import argparse
import time

import torch

from hebbkit import lagani
from hebbkit.data import synthetic_images
from hebbkit.lagani import FinetuneConfig, configure
from hebbkit.loops import block_features, evaluate, place
from hebbkit.utils import resolve_device


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    images = synthetic_images(args.images, 0, seed=0).train
    n = len(images)
    print(f"device {device}, {torch.get_num_threads()} threads, {n} images, full width")
    rates: dict[str, float] = {}
    nets = {}
    for method in ("hpca", "softwta"):
        config = configure(method, epochs=1, batch_size=64)
        seconds = timed(lambda: nets.setdefault(method, lagani.pretrain(method, images, config, device=device,
                                                                         progress=False)))
        rates[f"pretrain {method} (5 blocks, incl. BN statistics)"] = n / seconds
    vae_images = images.subset(slice(0, max(64, n // 4)))
    config = configure("vae", epochs=1, batch_size=64)
    rates["vae pretrain (1 epoch)"] = len(vae_images) / timed(
        lambda: lagani.pretrain("vae", vae_images, config, device=device, progress=False))
    net = nets["hpca"]
    labelled = images.subset(slice(0, max(64, n // 4)))
    for layer in (1, 5):
        config = FinetuneConfig(epochs=1)
        rates[f"finetune L{layer} end to end"] = len(labelled) / timed(
            lambda: lagani.finetune(net, layer, labelled, config, progress=False))
    rates["finetune L3 end to end, augmented"] = len(labelled) / timed(
        lambda: lagani.finetune(net, 3, labelled, FinetuneConfig(epochs=1, augment=True), progress=False))
    (_, features), = block_features(net, labelled, (1,))
    rates["head L1 on fixed features"] = len(labelled) / timed(
        lambda: lagani.train_head(features, labelled.labels, net.num_classes, FinetuneConfig(epochs=1, frozen=True),
                                  device=device, progress=False))
    rates["features L1..L5 (one pass)"] = n / timed(lambda: list(block_features(net, images, lagani.LAYERS)))
    classifier, _ = lagani.finetune(net, 5, labelled, FinetuneConfig(epochs=1), progress=False)
    rates["evaluate L5 classifier"] = n / timed(lambda: evaluate(classifier, images))
    reference = rates["evaluate L5 classifier"]
    width = max(map(len, rates))
    for name, rate in rates.items():
        print(f"{name:<{width}}  {rate:9.0f} images/s   {reference / rate:6.1f}× the cost of evaluation")
    x = images.subset(slice(0, 256)).float(device)
    layouts = []
    for layout in (torch.contiguous_format, torch.channels_last):  # the pipeline uses channels-last
        model, batch = classifier.to(memory_format=layout).eval(), x.contiguous(memory_format=layout)
        with torch.no_grad():
            layouts.append(len(batch) / timed(lambda: model(batch)))
    place(classifier, device)
    print(f"channels-last vs default layout: evaluate L5 {layouts[1] / layouts[0]:.2f}× the images/s")

if __name__ == "__main__":
    main()
