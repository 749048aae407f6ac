"""Lagani's pipeline against this machine's own arithmetic rate, at the quick preset's settings.

In one run: the machine's fp32 and bf16 matrix-multiply rates (1024² products, and the GPU's when run there);
each stage's images/s (per core-second on the CPU: process time, so a loaded machine's other processes count
less), its arithmetic per image counted from the layer shapes, and its achieved GFLOP/s as a
fraction of the matmul rate of the precision it runs in; beside it a plain PyTorch loop of the same shapes
(``nn.Conv2d``/``nn.Linear``, SGD-Nesterov, batch 64) timed in the same run.

  hebbian <method>   — per-image rate of joint Hebbian training (one-off costs — ZCA's fit, BN statistics —
                       timed apart); arithmetic: forward + each layer's update (correlation, and HPCA's Gram);
  vae                — VAE pre-training (encoder + decoder, backprop);
  finetune L1..L5    — end-to-end fine-tuning as the quick preset runs it (flips and crops, a validation pass
                       over a quarter as many images per epoch, as 1,000 validation images are to a 10 % cell);
  evaluate L5        — an L5 classifier's forward pass.
Synthetic CIFAR-shaped images. The last line is the efficiency line (finetune: all cuts, equal images per cut).

    python benchmarks/bench_pipeline.py [--quick] [--images N] [--threads N] [--device cpu|cuda] [--profile]
"""

from __future__ import annotations

import argparse
import contextlib
import time
from dataclasses import replace
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from hebbkit.data import ImageSet, synthetic_images
from hebbkit.lagani import LAYERS, PRESETS, Classifier, LaganiNet, finetune
from hebbkit.lagani.methods import make_method
from hebbkit.lagani.net import KERNELS, POOLED
from hebbkit.lagani.pretraining import build_net, pretrain_hebbian, pretrain_vae
from hebbkit.loops import PRECISIONS, evaluate, place, settle_statistics
from hebbkit.rules import make_rule
from hebbkit.utils import resolve_device, seed_everything
from hebbkit.whitening import ZCA

PRESET = PRESETS["quick"]
GIGA = 1e9


def timed(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds ``fn`` takes: the process's CPU time on the CPU (core-seconds, so that other processes on a loaded
    machine count less), wall time on a GPU."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        return time.perf_counter() - start
    start = time.process_time()
    fn()
    return time.process_time() - start


def matmul_rate(dtype: torch.dtype, device: torch.device, size: int = 1024, seconds: float = 0.5) -> float:
    """FLOP/s of ``size``² matrix products in ``dtype`` on ``device`` (best of a few repeats)."""
    a, b = (torch.randn(size, size, device=device).to(dtype) for _ in range(2))
    a @ b
    best, deadline = 0.0, time.process_time() + seconds
    while time.process_time() < deadline:
        count = 4
        best = max(best, count * 2 * size**3 / timed(lambda: [a @ b for _ in range(count)], device))
    return best


# ------------------------------------------------------------------------------ arithmetic per image


def layer_shapes(net: LaganiNet) -> list[tuple[int, int, int, int]]:
    """Per block (inputs per output, outputs, positions, 1 if conv else 0): a conv's fan-in C·k², its channels
    and its output positions before pooling; fc5's inputs, units and one position."""
    channels, (height, width) = net.input_shape[0], net.input_shape[1:]
    shapes = []
    for c_out, kernel, pool in zip(net.widths[:4], KERNELS, POOLED):
        height, width = height - kernel + 1, width - kernel + 1
        shapes.append((channels * kernel * kernel, c_out, height * width, 1))
        channels = c_out
        if pool:
            height, width = height // 2, width // 2
    shapes.append((channels * height * width, net.widths[4], 1, 0))
    return shapes


def forward_flops(net: LaganiNet, layer: int) -> float:
    """Multiply-adds ×2 of a classifier cut after ``layer``: blocks 1..layer and the linear head."""
    blocks = sum(2 * fan_in * out * positions for fan_in, out, positions, _ in layer_shapes(net)[:layer])
    return blocks + 2 * net.feature_dims[layer - 1] * net.num_classes


def training_flops(forward: float, first: float) -> float:
    """Forward, input gradients and weight gradients (3× forward), less the first layer's input gradient."""
    return 3 * forward - first


def hebbian_flops(net: LaganiNet, rule: str) -> float:
    """A Hebbian step per image: the forward pass through all blocks and every layer's update — the correlation
    ``f(Y)ᵀX`` (as a forward pass), HPCA's Gram ``f(Y)ᵀf(Y)`` over positions, soft-WTA's patch norms."""
    total = 0.0
    for fan_in, out, positions, _ in layer_shapes(net):
        total += 2 * 2 * fan_in * out * positions
        total += 2 * out * out * positions if rule == "hpca" else 2 * fan_in * positions
    return total


def vae_flops(net: LaganiNet, latent: int) -> float:
    """VAE training per image: 3× (encoder + latent heads + decoder), less the first layer's input gradient."""
    shapes = layer_shapes(net)
    c = net.widths
    (h4, w4), (h3, w3), (h2, w2), (h1, w1) = net.map_sizes[3], net.map_sizes[2], net.map_sizes[1], net.map_sizes[0]
    encoder = sum(2 * fan_in * out * positions for fan_in, out, positions, _ in shapes) + 2 * 2 * c[4] * latent
    decoder = 2 * (latent * c[4] + c[4] * c[3] * h4 * w4)
    # transposed convolutions: every input position spreads k² weights to every output channel
    decoder += 2 * (c[3] * c[2] * 9 * h4 * w4 + c[2] * c[1] * 9 * h3 * w3 + c[1] * c[0] * 9 * h2 * w2
                    + c[0] * net.input_shape[0] * 25 * h1 * w1)
    first = 2 * shapes[0][0] * shapes[0][1] * shapes[0][2]
    return training_flops(encoder + decoder, first)


# ------------------------------------------------------------------------------ the plain reference loop


def plain_model(net: LaganiNet, layer: int) -> nn.Sequential:
    """The cut ``layer`` of ``net``'s shapes from plain ``nn`` modules (biases, BN, ReLU, pooling, dropout)."""
    modules: list[nn.Module] = []
    channels = net.input_shape[0]
    for index, (c_out, kernel, pool) in enumerate(zip(net.widths[:4], KERNELS, POOLED)):
        if index == layer:
            break
        modules += [nn.Conv2d(channels, c_out, kernel), nn.ReLU(), *([nn.MaxPool2d(2)] if pool else []),
                    nn.BatchNorm2d(c_out)]
        channels = c_out
    modules.append(nn.Flatten())
    if layer == 5:
        modules += [nn.Linear(net.feature_dims[3], net.widths[4]), nn.ReLU(), nn.BatchNorm1d(net.widths[4])]
    return nn.Sequential(*modules, nn.Dropout(0.5), nn.Linear(net.feature_dims[layer - 1], net.num_classes))


def plain_rate(net: LaganiNet, layer: int, images: ImageSet, device: torch.device, dtype: torch.dtype) -> float:
    """Training images/s of :func:`plain_model` by SGD-Nesterov at batch 64 (autocast for bf16), on
    pre-standardised images, no augmentation, no validation."""
    torch.manual_seed(0)
    model = plain_model(net, layer).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=4e-3, momentum=0.9, nesterov=True, weight_decay=5e-2)
    x, y = images.float(device), images.labels.to(device)
    cast = torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else contextlib.nullcontext()

    def epoch(count: int) -> None:
        for start in range(0, count, 64):
            with cast:
                loss = F.cross_entropy(model(x[start : start + 64]), y[start : start + 64])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    epoch(128)  # warm-up
    return len(x) / timed(lambda: epoch(len(x)), device)


# ------------------------------------------------------------------------------ the pipeline's stages


def hebbian_stage(method: str, images: ImageSet, device: torch.device,
                  wrap: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
                  ) -> tuple[float, dict[str, float], LaganiNet]:
    """Per-image rate of ``method``'s Hebbian training (one epoch over ``images``, inside ``wrap()``) and its
    one-off costs, timed apart: ZCA's fit, and the BN statistics pass (per image)."""
    spec, config = make_method(method), replace(PRESET.config(method), epochs=1)
    generator = seed_everything(0)
    net = place(build_net(method, config, images, PRESET.width), device)
    one_off = {}
    if spec.net.whiten:
        net.whiten = ZCA(images.shape, config.zca_eps).to(device)
        one_off["ZCA fit"] = timed(lambda: net.whiten.fit([images.float(device)]), device)
    rule = make_rule(spec.rule, **config.rule_options())
    with wrap():
        seconds = timed(lambda: pretrain_hebbian(net, images, config, rule=rule, val=None, generator=generator,
                                                 device=device, progress=False, checkpoint=None,
                                                 checkpoints_per_epoch=1), device)
    one_off["BN statistics (per image)"] = timed(lambda: settle_statistics(net, images), device) / len(images)
    return len(images) / seconds, one_off, net.eval()


def vae_stage(images: ImageSet, device: torch.device, precision: str) -> float:
    config = replace(PRESET.config("vae"), epochs=1)
    generator = seed_everything(0)
    net = place(build_net("vae", config, images, PRESET.width), device)
    return len(images) / timed(lambda: pretrain_vae(net, images, config, val=None, generator=generator,
                                                    device=device, progress=False, checkpoint=None,
                                                    checkpoints_per_epoch=1, precision=precision), device)


def finetune_stage(net: LaganiNet, layer: int, labelled: ImageSet, val: ImageSet, device: torch.device,
                   precision: str) -> float:
    """Labelled training images/s of one epoch of the quick preset's fine-tuning (its validation pass included)."""
    config = replace(PRESET.finetune, epochs=1, min_steps=0)
    return len(labelled) / timed(lambda: finetune(net, layer, labelled, config, val=val, progress=False,
                                                  precision=precision), device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1024, help="images per stage (default 1024)")
    parser.add_argument("--quick", action="store_true", help="512 images per stage (about a minute)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--precision", choices=tuple(PRECISIONS), default=PRESET.precision,
                        help="of backprop's forward passes (default: the quick preset's)")
    parser.add_argument("--profile", action="store_true", help="where the time of fine-tuning and HPCA goes")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    n = 512 if args.quick else args.images
    images = synthetic_images(n + n // 4, 0, seed=0).train
    labelled, val = images.subset(slice(0, n)), images.subset(slice(n, n + n // 4))
    precision = args.precision
    dtype = PRECISIONS[precision] or torch.float32
    print(f"device {device}, {torch.get_num_threads()} threads, {n} images per stage, quick preset "
          f"(width {PRESET.width}, batch {PRESET.finetune.batch_size}), backprop in {precision}, Hebbian in float32")
    rates = {dtype: matmul_rate(dtype, torch.device("cpu")) for dtype in (torch.float32, torch.bfloat16)}
    print(f"CPU matmul 1024²: fp32 {rates[torch.float32] / GIGA:.0f} GFLOP/s, bf16 {rates[torch.bfloat16] / GIGA:.0f}"
          f" GFLOP/s")
    if device.type == "cuda":
        gpu = {dtype: matmul_rate(dtype, device, 4096) for dtype in (torch.float32, torch.bfloat16)}
        print(f"GPU matmul 4096²: fp32 {gpu[torch.float32] / GIGA:.0f} GFLOP/s, bf16 {gpu[torch.bfloat16] / GIGA:.0f}"
              f" GFLOP/s")
        rates = gpu
    rate = rates[dtype]  # backprop's stages against the rate of their precision, Hebbian ones against fp32's
    # (stage, images/s, FLOP per image, the matmul rate it is measured against, plain loop's images/s)
    rows: list[tuple[str, float, float, float, float | None]] = []

    def row(name: str, per_second: float, flops: float, against: float, plain: float | None = None) -> None:
        rows.append((name, per_second, flops, against, plain))

    nets, hebbian = {}, []
    for method in ("hpca", "softwta"):
        per_second, one_off, nets[method] = hebbian_stage(method, labelled, device)
        flops = hebbian_flops(nets[method], make_method(method).rule)
        row(f"hebbian {method}", per_second, flops, rates[torch.float32])
        hebbian.append((per_second, flops))
        for name, seconds in one_off.items():
            print(f"  one-off, {method}: {name} {seconds * (1e3 if 'per image' in name else 1):.3g}"
                  f" {'ms' if 'per image' in name else 's'}")
    net = nets["hpca"]
    vae_rate = vae_stage(labelled, device, precision)
    row("vae", vae_rate, vae_flops(net, PRESET.config("vae").latent_dim), rate)
    tuned = []
    for layer in LAYERS:
        per_second = finetune_stage(net, layer, labelled, val, device, precision)
        forward = forward_flops(net, layer)
        flops = training_flops(forward, forward_flops(net, 1) - 2 * net.feature_dims[0] * net.num_classes)
        flops += forward * len(val) / len(labelled)  # the validation pass, per labelled image
        row(f"finetune L{layer}", per_second, flops, rate, plain_rate(net, layer, labelled, device, dtype))
        tuned.append((per_second, flops))
    classifier = place(Classifier(net, 5), device)
    row("evaluate L5", n / timed(lambda: evaluate(classifier, labelled, precision=precision), device),
        forward_flops(net, 5), rate)

    print(f"{'stage':<16}{'images/s':>10}{'MFLOP/img':>11}{'GFLOP/s':>9}{'of matmul':>10}{'plain loop':>12}"
          f"{'ratio':>7}")
    for name, per_second, flops, against, plain in rows:
        achieved = per_second * flops
        extra = "" if plain is None else f"{plain:12.0f}{per_second / plain:7.2f}"
        print(f"{name:<16}{per_second:10.0f}{flops / 1e6:11.1f}{achieved / GIGA:9.1f}{achieved / against:10.2f}{extra}")

    def efficiency(stages: list[tuple[float, float]], against: float) -> float:
        """Total arithmetic over total time for equal images per stage, as a fraction of the matmul rate."""
        return sum(f for _, f in stages) / sum(1 / r for r, _ in stages) / against

    if args.profile:
        profile(net, labelled, val, device, precision)
    print(f"pipeline efficiency: finetune {efficiency(tuned, rate):.2f}, "
          f"hebbian {efficiency(hebbian, rates[torch.float32]):.2f}, "
          f"vae {vae_rate * vae_flops(net, PRESET.config('vae').latent_dim) / rate:.2f} "
          f"(fraction of this machine's matmul rate)")


def profile(net: LaganiNet, labelled: ImageSet, val: ImageSet, device: torch.device, precision: str) -> None:
    """torch.profiler's breakdown of one fine-tuning epoch at L3 and of one HPCA training epoch (its one-off
    costs left out)."""
    from torch.profiler import ProfilerActivity, profile as torch_profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with torch_profile(activities=activities) as prof:
        finetune_stage(net, 3, labelled, val, device, precision)
    show("finetune L3 (one epoch with its validation pass)", prof)
    holder = {}
    hebbian_stage("hpca", labelled, device, lambda: holder.setdefault("prof", torch_profile(activities=activities)))
    show("hebbian hpca (the training epoch only)", holder["prof"])


def show(name: str, prof) -> None:
    print(f"--- profile: {name}")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=14))


if __name__ == "__main__":
    main()
