"""Cost of plasticity on the layers of Lagani's 6-layer net (batch 64), for soft-WTA and HPCA.

For each layer and rule, three timings (median of repeats, same process, same threads):
  forward  — the layer's forward pass alone (not plastic);
  plastic  — a plastic step: forward + the local update left in ``weight.grad``;
  unfold   — the same rule written the straightforward way: ``F.unfold`` patches, then the equation
             applied per patch by broadcasting (``r_i (x − w_i)``, ``f(y_i)(x − Σ_{j≤i} f(y_j) w_j)``),
             chunked over patches to bound memory.
Also ``unfold+mm``: unfold patches but the rule in matrix form (to show where the speed comes from).
plastic/forward is the median of per-pair ratios, forward and plastic timed alternately.
Targets: plastic/forward ≤ 2.5 on every layer; ≥ 10× faster than the unfold reference.

    python benchmarks/bench_layers.py [--quick] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from hebbkit import HebbianConv2d, HebbianLinear
from hebbkit.rules import HPCA, Competitive
from hebbkit.utils import resolve_device

BATCH = 64
TEMPERATURE = 0.1


@dataclass(frozen=True)
class LayerSpec:
    name: str
    in_channels: int
    out_channels: int
    kernel: int  # 0 for a fully connected layer
    size: int  # input height = width (1 for fully connected)


LAYERS = (
    LayerSpec("conv1 5x5 3->96 @32", 3, 96, 5, 32),
    LayerSpec("conv2 3x3 96->128 @14", 96, 128, 3, 14),
    LayerSpec("conv3 3x3 128->192 @12", 128, 192, 3, 12),
    LayerSpec("conv4 3x3 192->256 @5", 192, 256, 3, 5),
    LayerSpec("fc5 2304->4096", 2304, 4096, 0, 1),
)
RULES = {"softwta": Competitive("soft", temperature=TEMPERATURE), "hpca": HPCA("relu")}


def _clock(fn, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def _timeit(fn, device: torch.device, repeats: int) -> float:
    fn()  # warm-up
    return statistics.median(_clock(fn, device) for _ in range(repeats))


def _interleaved(first, second, device: torch.device, repeats: int) -> tuple[float, float, float]:
    """Median times of two functions measured alternately, and the median of their per-pair ratios
    (robust to other load on the machine, which hits both alike)."""
    first(), second()
    pairs = [(_clock(first, device), _clock(second, device)) for _ in range(repeats)]
    return (
        statistics.median(a for a, _ in pairs),
        statistics.median(b for _, b in pairs),
        statistics.median(b / a for a, b in pairs),
    )


def _patch_rows(x: torch.Tensor, spec: LayerSpec) -> torch.Tensor:
    if spec.kernel == 0:
        return x
    cols = F.unfold(x, spec.kernel)  # (N, D, L)
    return cols.transpose(1, 2).reshape(-1, cols.shape[1])


def unfold_broadcast_update(x: torch.Tensor, weight: torch.Tensor, rule: str, spec: LayerSpec) -> torch.Tensor:
    """The reference: each patch's update from the equation, by broadcasting, averaged over patches."""
    patches, flat = _patch_rows(x, spec), weight.flatten(1)
    units, dim = flat.shape
    chunk = max(1, (1 << 25) // (units * dim))
    total = torch.zeros_like(flat)
    for start in range(0, len(patches), chunk):
        p = patches[start : start + chunk]
        y = p @ flat.T
        if rule == "softwta":
            r = torch.softmax(y / TEMPERATURE, dim=1)
            total += (r[:, :, None] * (p[:, None, :] - flat[None])).sum(0)
        else:
            f = torch.relu(y)
            reconstruction = torch.cumsum(f[:, :, None] * flat[None], dim=1)
            total += (f[:, :, None] * (p[:, None, :] - reconstruction)).sum(0)
    return (total / len(patches)).view_as(weight)


def unfold_matrix_update(x: torch.Tensor, weight: torch.Tensor, rule: str, spec: LayerSpec) -> torch.Tensor:
    """Unfolded patches, the rule in matrix form (materialises the patch matrix)."""
    patches, flat = _patch_rows(x, spec), weight.flatten(1)
    y = patches @ flat.T
    if rule == "softwta":
        r = torch.softmax(y / TEMPERATURE, dim=1)
        delta = r.T @ patches - r.sum(0)[:, None] * flat
    else:
        f = torch.relu(y)
        delta = f.T @ patches - torch.tril(f.T @ f) @ flat
    return (delta / len(patches)).view_as(weight)


def make_layer(spec: LayerSpec, rule: str, device: torch.device) -> torch.nn.Module:
    if spec.kernel == 0:
        return HebbianLinear(spec.in_channels, spec.out_channels, bias=False, device=device, rule=RULES[rule])
    return HebbianConv2d(
        spec.in_channels, spec.out_channels, spec.kernel, bias=False, device=device, rule=RULES[rule]
    )


def bench(spec: LayerSpec, rule: str, device: torch.device, repeats: int) -> dict:
    torch.manual_seed(0)
    layer = make_layer(spec, rule, device)
    shape = (BATCH, spec.in_channels) if spec.kernel == 0 else (BATCH, spec.in_channels, spec.size, spec.size)
    x = torch.randn(shape, device=device)
    weight = layer.weight.detach()

    def plastic_step() -> None:
        layer.weight.grad = None
        layer(x)

    def forward_step() -> None:
        layer.plastic = False
        layer(x)
        layer.plastic = True

    with torch.no_grad():
        forward, plastic, ratio = _interleaved(forward_step, plastic_step, device, repeats)
        reference = _timeit(lambda: unfold_broadcast_update(x, weight, rule, spec), device, max(1, repeats // 5))
        matrix = _timeit(lambda: unfold_matrix_update(x, weight, rule, spec), device, repeats)
        # The three implementations agree (a benchmark of a wrong answer is worthless).
        ours = -layer.weight.grad
        for other in (unfold_broadcast_update(x, weight, rule, spec), unfold_matrix_update(x, weight, rule, spec)):
            torch.testing.assert_close(ours, other, rtol=2e-3, atol=2e-5)
    return {"forward": forward, "plastic": plastic, "ratio": ratio, "unfold": reference, "unfold_mm": matrix}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repeats (under a minute on 2 CPU cores)")
    parser.add_argument("--device", default="auto", help="auto (cuda when available), cpu or cuda")
    args = parser.parse_args()
    device = resolve_device(args.device)
    repeats = 5 if args.quick else 21
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, batch {BATCH}")
    header = f"{'layer':24} {'rule':8} {'fwd ms':>8} {'plastic ms':>10} {'plastic/fwd':>11} {'unfold ms':>10} {'speedup':>8} {'unfold+mm ms':>12}"
    print(header)
    print("-" * len(header))
    worst_ratio, worst_speedup = 0.0, float("inf")
    for spec in LAYERS:
        for rule in RULES:
            t = bench(spec, rule, device, repeats)
            ratio, speedup = t["ratio"], t["unfold"] / t["plastic"]
            worst_ratio, worst_speedup = max(worst_ratio, ratio), min(worst_speedup, speedup)
            print(
                f"{spec.name:24} {rule:8} {1e3 * t['forward']:8.2f} {1e3 * t['plastic']:10.2f} {ratio:11.2f} "
                f"{1e3 * t['unfold']:10.1f} {speedup:7.1f}x {1e3 * t['unfold_mm']:12.2f}"
            )
    print(f"worst plastic/forward ratio: {worst_ratio:.2f}; worst speedup vs unfold: {worst_speedup:.1f}")


if __name__ == "__main__":
    main()
