"""Figures and widgets for the workbook.

Each ``*_figure`` function simulates (``hebbkit.demos``) and draws one complete figure, so a notebook cell
is one call, and a widget redraws it by calling it again with the slider values (``interactive_figure``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import matplotlib.pyplot as plt
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from torch import Tensor

from . import demos
from .rules import Competitive, Hebb, Oja, check_temperature, soft_wta
from .utils import atomic_path

UNIT_COLOURS = ("tab:red", "tab:blue", "tab:green", "tab:orange", "tab:purple", "tab:brown")


def save_figure(fig: Figure, folder: str | Path | None, name: str, dpi: int = 80) -> None:
    """Write ``fig`` as a small PNG ``folder/name`` (atomically); nothing when ``folder`` is None.

    Returns nothing, so that a notebook cell ending with it shows only the figure."""
    if folder is None:
        return
    path = Path(folder) / name
    with atomic_path(path) as temp:
        fig.savefig(temp, format="png", dpi=dpi, bbox_inches="tight")


def log_slider(description: str, value: float, low: float, high: float):
    """A base-10 ``FloatLogSlider`` from ``low`` to ``high`` that updates on release, not while dragging."""
    import ipywidgets as widgets

    if not 0 < low <= value <= high:
        raise ValueError(f"need 0 < low <= value <= high, got low={low}, value={value}, high={high}")
    return widgets.FloatLogSlider(
        value=value,
        base=10,
        min=math.log10(low),
        max=math.log10(high),
        step=0.1,
        description=description,
        continuous_update=False,
        readout_format=".3g",
        style={"description_width": "initial"},
    )


def interactive_figure(draw: Callable[..., Figure], **sliders):
    """Sliders above an output area that shows ``draw(**slider values)``, redrawn when a slider moves."""
    import ipywidgets as widgets

    def show(**values: float) -> None:
        draw(**values)
        plt.show()

    output = widgets.interactive_output(show, sliders)
    return widgets.VBox([widgets.HBox(list(sliders.values())), output])


# ------------------------------------------------------------------------------------- single neurons


def plot_trajectories(ax: Axes, x: Tensor, trajectory: Tensor, title: str = "", limit: float | None = None) -> None:
    """Data points in grey, each unit's weight path (``trajectory`` (T, K, 2)) from a hollow square (start) to
    a dot (end); axes ``±limit`` (default: the data's extent), labelled, with a legend for the markers."""
    ax.scatter(x[:, 0], x[:, 1], s=4, c="0.75", linewidths=0, label="data x")
    for unit in range(trajectory.shape[1]):
        colour = UNIT_COLOURS[unit % len(UNIT_COLOURS)]
        path = trajectory[:, unit]
        path = path[torch.isfinite(path).all(1)]
        ax.plot(path[:, 0], path[:, 1], "-", color=colour, lw=1.2)
        ax.plot(path[0, 0], path[0, 1], "s", color=colour, mfc="white", ms=6, label="start" if unit == 0 else None)
        ax.plot(path[-1, 0], path[-1, 1], "o", color=colour, ms=6, mec="k", label="end" if unit == 0 else None)
    limit = 1.1 * x.abs().max().item() if limit is None else limit
    ax.set(xlim=(-limit, limit), ylim=(-limit, limit), aspect="equal", title=title, xlabel="x₁, w₁", ylabel="x₂, w₂")
    ax.tick_params(labelsize=7)


def oja_figure(x: Tensor, lr: float = 0.01, steps: int = 300, seed: int = 0) -> Figure:
    """One Oja neuron on a 2-D cloud: its weight path near the unit circle, with the first principal axis,
    and its norm and angle to that axis over training."""
    trajectory = demos.learn(x, Oja(), torch.tensor([[0.2, 0.9]]), lr, steps, seed=seed)
    axis = demos.principal_axis(x)
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.8))
    limit = 1.6
    circle = torch.linspace(0, 2 * math.pi, 200)
    left.plot(circle.cos(), circle.sin(), ":", color="0.4", lw=0.8, label="‖w‖ = 1")
    left.plot([-limit * axis[0], limit * axis[0]], [-limit * axis[1], limit * axis[1]], "k--", lw=0.8, label="PC1")
    plot_trajectories(left, x, trajectory, title=f"Oja's weight path, η = {lr:.3g} (data zoomed)", limit=limit)
    left.legend(loc="lower right", fontsize=7)
    weights = trajectory[:, 0]
    angles = [demos.angle_degrees(w, axis) if torch.isfinite(w).all() else float("nan") for w in weights]
    norm_line = right.plot(weights.norm(dim=1), label="‖w‖")
    right.axhline(1.0, color="0.5", lw=0.6, ls=":")
    right.set(xlabel="step", ylabel="‖w‖", title="‖w‖ → 1 and angle → 0 when η is small enough")
    twin = right.twinx()
    angle_line = twin.plot(angles, color="tab:red", label="angle to PC1 (°)")
    twin.set_ylabel("angle to PC1 (°)", color="tab:red")
    right.legend(handles=norm_line + angle_line, fontsize=7, loc="center right")
    fig.tight_layout()
    return fig


def hebb_vs_oja_figure(x: Tensor, lr: float = 0.01, steps: int = 300, seed: int = 0) -> Figure:
    """‖w‖ over training for plain Hebb (grows by about (1 + ηλ₁) per step, drawn dashed) and Oja (settles
    at 1), log scale."""
    init = torch.tensor([[0.2, 0.9]])
    centred = x - x.mean(0)
    top = torch.linalg.eigvalsh(centred.T @ centred / len(x))[-1].item()
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    for label, rule in (("plain Hebb", Hebb()), ("Oja", Oja())):
        norms = demos.learn(x, rule, init, lr, steps, seed=seed)[:, 0].norm(dim=1)
        ax.semilogy(norms, label=label)
    step = torch.arange(steps + 1, dtype=torch.float64)
    growth = init.norm().item() * torch.exp(step * math.log1p(lr * top))
    ax.semilogy(step, growth.clamp(max=1e30), "k--", lw=0.8, label=f"(1 + ηλ₁)ᵗ, λ₁ = {top:.2g}")
    ax.set_ylim(bottom=0.1)
    ax.set(xlabel="step t", ylabel="‖w‖ (log scale)", title=f"plain Hebb grows at every rate (η = {lr:.3g})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def competition_figure(
    x: Tensor, temperatures: tuple[float, ...] = (0.03, 1.0, 2.0, 30.0), lr: float = 0.05, steps: int = 300, seed: int = 0
) -> Figure:
    """Three competing units on clustered data, one panel per soft-WTA temperature: cold → each unit finds
    a cluster centre, hot → all drift to the overall mean."""
    init = demos.ring_init(3)
    fig, axes = plt.subplots(1, len(temperatures), figsize=(3.2 * len(temperatures), 3.5), squeeze=False)
    for ax, temperature in zip(axes[0], temperatures):
        rule = Competitive("soft", temperature=check_temperature(temperature))
        plot_trajectories(ax, x, demos.learn(x, rule, init, lr, steps, seed=seed), title=f"soft-WTA, T = {temperature:.3g}")
    axes[0][0].legend(loc="lower left", fontsize=7)
    fig.suptitle(f"three competing units (instar + soft-WTA), η = {lr:.3g}, {steps} steps", fontsize=10)
    fig.tight_layout()
    return fig


def temperature_sweep_figure(
    x: Tensor, temperatures: Tensor | None = None, lr: float = 0.05, steps: int = 300, seed: int = 0, marked: float | None = None
) -> Figure:
    """Where three soft-WTA units end, against the temperature (log axis): their mean distance to the overall
    mean of the data and to the nearest cluster centre. The drop is the collapse (a phase transition)."""
    temperatures = torch.logspace(-1, 2, 19) if temperatures is None else temperatures
    spread, error = demos.temperature_sweep(x, temperatures, lr=lr, steps=steps, seed=seed)
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    ax.semilogx(temperatures, spread, "o-", ms=3, label="distance to the overall mean")
    ax.semilogx(temperatures, error, "s-", ms=3, label="distance to the nearest centre")
    if marked is not None:
        ax.axvline(marked, color="0.4", ls=":", lw=1)
    ax.set(xlabel="temperature T", ylabel="mean distance of a unit", title="soft-WTA: three features collapse into one")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def dead_units_figure(x: Tensor, init: Tensor, lr: float = 0.05, steps: int = 300, bias_rate: float = 0.05,
                      temperature: float = 1.0, seed: int = 0) -> Figure:
    """Three panels from the same start: hard WTA (a unit that never wins stays dead), hard WTA with a
    conscience bias (``bias_rate``), and soft-WTA at ``temperature``; each title gives the wins per unit."""
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.6))
    plain, plain_wins = demos.learn_wta_bias(x, init, lr, steps, bias_rate=0.0, seed=seed)
    biased, biased_wins = demos.learn_wta_bias(x, init, lr, steps, bias_rate=bias_rate, seed=seed)
    soft = demos.learn(x, Competitive("soft", temperature=check_temperature(temperature)), init, lr, steps, seed=seed)
    panels = (
        (plain, f"hard WTA: wins {plain_wins.int().tolist()}"),
        (biased, f"WTA + bias (rate {bias_rate:.3g}): wins {biased_wins.int().tolist()}"),
        (soft, f"soft-WTA, T = {temperature:.3g}"),
    )
    for ax, (trajectory, title) in zip(axes, panels):
        plot_trajectories(ax, x, trajectory, title=title)
        ax.title.set_fontsize(8)
    axes[0].legend(loc="lower left", fontsize=7)
    fig.suptitle("dead units: red starts just behind blue; under hard WTA it almost never wins, and green must cover two clusters", fontsize=10)
    fig.tight_layout()
    return fig


def _tiles(pictures: Tensor, columns: int) -> Tensor:
    """Pictures (K, C, h, w) tiled into one RGB image (h', w', 3), each scaled symmetrically around grey."""
    from torchvision.utils import make_grid

    scale = pictures.flatten(1).abs().amax(1).clamp_min(1e-12).view(-1, 1, 1, 1)
    shown = 0.5 + 0.5 * pictures / scale
    if shown.shape[1] != 3:
        shown = shown.mean(1, keepdim=True).expand(-1, 3, -1, -1)
    grid = make_grid(shown, nrow=min(columns, len(pictures)), padding=1, pad_value=1.0)
    return grid.permute(1, 2, 0).clamp(0, 1)


def filters_figure(filters: Tensor, title: str = "", columns: int = 16, ax: Axes | None = None,
                   tile: float = 0.6) -> Figure:
    """Filters (K, 3, k, k) as RGB tiles of ``tile`` inches, each scaled symmetrically around grey (0 → grey)."""
    if ax is None:
        rows = math.ceil(len(filters) / columns)
        _, ax = plt.subplots(figsize=(tile * min(columns, len(filters)) + 0.4, tile * rows + 0.6))
    ax.imshow(_tiles(filters, columns).numpy(), interpolation="nearest")
    ax.set_axis_off()
    ax.set_title(title, fontsize=10)
    return ax.figure


def filters_row_figure(filters: dict[str, Tensor], columns: int = 8) -> Figure:
    """Several filter banks side by side, one titled panel per ``{title: filters (K, 3, k, k)}``."""
    rows = max(math.ceil(len(bank) / columns) for bank in filters.values())
    tile = 0.6
    fig, axes = plt.subplots(1, len(filters), figsize=(tile * columns * len(filters) + 0.6, tile * rows + 0.8), squeeze=False)
    for ax, (title, bank) in zip(axes[0], filters.items()):
        filters_figure(bank, title, columns, ax)
    fig.tight_layout()
    return fig


def layer_pictures_figure(pictures: dict[str, list[Tensor]], subtitles: list[str], columns: int = 4) -> Figure:
    """One row per network (``{name: [pictures of layer 1, layer 2, ...]}``, each (K, 3, R, R)), one column per
    layer, each panel titled with the network, the layer, ``subtitles[layer - 1]`` and the picture size."""
    names = list(pictures)
    layers = len(pictures[names[0]])
    fig, axes = plt.subplots(len(names), layers, figsize=(2.7 * layers, 3.0 * len(names)), squeeze=False)
    for row, name in enumerate(names):
        for column, bank in enumerate(pictures[name]):
            ax = axes[row][column]
            ax.imshow(_tiles(bank, columns).numpy(), interpolation="nearest")
            ax.set_axis_off()
            size = bank.shape[-1]
            ax.set_title(f"{name} · layer {column + 1}\n{subtitles[column]} ({size}×{size} px)", fontsize=9)
    fig.tight_layout()
    return fig


def image_files_figure(paths: dict[str, str | Path], columns: int = 3, width: float = 4.0) -> Figure:
    """PNG files side by side (``{title: path}``), ``width`` inches each, titled: pictures written by a run."""
    rows = math.ceil(len(paths) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(width * columns, width * rows + 0.3 * rows), squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, (title, path) in zip(axes.flat, paths.items()):
        ax.imshow(plt.imread(path), interpolation="nearest")
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def decoding_figure(table) -> Figure:
    """Held-out decoding accuracy against layer from a ``hebbkit layers`` table, one line per intervention,
    the random-weights baseline dashed in the same colour."""
    fig, ax = plt.subplots(figsize=(5, 3.4))
    for index, (name, part) in enumerate(table.groupby("intervention", sort=False)):
        ax.plot(part["layer"], 100 * part["accuracy"], "o-", color=f"C{index}", label=name)
        ax.plot(part["layer"], 100 * part["random_accuracy"], "x--", color=f"C{index}", alpha=0.5)
    ax.set(xlabel="layer", ylabel="held-out accuracy (%)", xticks=sorted(table["layer"].unique()))
    ax.set_title("ridge readout per layer (dashed: random weights)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def responsibilities_figure(y: Tensor, temperatures: tuple[float, ...] = (0.05, 0.5, 5.0)) -> Figure:
    """Bars of ``softmax(y / T)`` for one response vector ``y`` (K,) at each temperature."""
    fig, axes = plt.subplots(1, len(temperatures), figsize=(2.8 * len(temperatures), 2.6), sharey=True, squeeze=False)
    for ax, temperature in zip(axes[0], temperatures):
        r = soft_wta(y.view(1, -1), temperature)[0]
        ax.bar(range(len(y)), r.tolist(), color=[UNIT_COLOURS[i % len(UNIT_COLOURS)] for i in range(len(y))])
        ax.set(title=f"T = {temperature:.3g}", xlabel="unit", ylim=(0, 1.05))
    axes[0][0].set_ylabel("responsibility r")
    fig.tight_layout()
    return fig
