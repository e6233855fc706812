"""Figures for reports: learning curves, metric-vs-hyperparameter grids, the sampling heatmap and
spectrograms, drawn on matplotlib Figures with the Agg canvas (no pyplot, no display needed).

It never calls pyplot or changes the global matplotlib backend or style, so importing it is side-effect free.
"""

import io
import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from analysis.grids import Grid

LOG_SCALE_RATIO = 100.0  # a positive axis spanning this factor or more is drawn on a log scale
MAX_LEGEND_ENTRIES = 12


def new_figure(width_inches: float = 8.0, height_inches: float = 3.5) -> Figure:
    figure = Figure(figsize=(width_inches, height_inches), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def png_bytes(figure: Figure, dpi: int = 100) -> bytes:
    """The figure as PNG bytes (what the report embeds)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def save_png(figure: Figure, path: Path, dpi: int = 150) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", dpi=dpi)
    return path


def learning_curves(histories: pd.DataFrame, title: str = "") -> Figure | None:
    """val/bpb and train/loss (nats) against epoch, one line per trial; None without any history."""
    if histories.empty or "epoch" not in histories:
        return None
    histories = histories.copy()
    if "val/bpb" not in histories and "val/loss" in histories:
        histories["val/bpb"] = histories["val/loss"] / math.log(2)
    figure = new_figure(10.0, 3.6)
    axes = figure.subplots(1, 2)
    panels = (("val/bpb", "val bpb (bits per sample)"), ("train/loss", "train loss (nats per sample)"))
    groups = list(histories.groupby(["study", "experiment", "trial", "signature"], sort=True))
    several_experiments = histories["experiment"].nunique() > 1
    for (study, experiment, trial, _), rows in groups:
        rows = rows.sort_values("epoch")
        label = f"{experiment} {trial}" if several_experiments and experiment not in trial else trial
        if "status" in rows and rows["status"].iloc[0] != "finished":
            label += f" ({rows['status'].iloc[0]})"
        for axis, (column, _) in zip(axes, panels):
            if column in rows and rows[column].notna().any():
                axis.plot(rows["epoch"], rows[column], marker="o", markersize=3, linewidth=1.2, label=label)
    for axis, (column, ylabel) in zip(axes, panels):
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_xlabel("epoch")
        axis.set_ylabel(ylabel)
        axis.grid(alpha=0.3)
    if 0 < len(groups) <= MAX_LEGEND_ENTRIES:
        axes[1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    if title:
        figure.suptitle(title)
    return figure


def _positions(values: pd.Series) -> tuple[np.ndarray, list[str] | None, bool]:
    """x positions for a key's values: numbers as they are (log flag when wide), text as categories."""
    numeric = pd.to_numeric(values, errors="coerce")
    if numeric.notna().all():
        positive = numeric[numeric > 0]
        log = len(positive) == len(numeric) and positive.max() / positive.min() >= LOG_SCALE_RATIO
        return numeric.to_numpy(dtype=float), None, bool(log)
    categories = sorted(values.astype(str).unique())
    return np.array([categories.index(str(value)) for value in values], dtype=float), categories, False


def grid_figure(grid: Grid, metrics: tuple[str, ...] | None = None) -> Figure | None:
    """Each metric (default: the study's selection metric and test bpb) against the last varied key
    (mean ± std over seeds, seeds as dots), one panel per metric."""
    if grid.values.empty:
        return None
    metrics = metrics or tuple(dict.fromkeys((grid.metric, "final/test/bpb")))
    x_key, line_keys = grid.keys[-1], grid.keys[:-1]
    table = grid.values.reset_index()
    figure = new_figure(4.2 * len(metrics), 3.4)
    axes = np.atleast_1d(figure.subplots(1, len(metrics)))
    lines = list(table.groupby(line_keys, sort=True)) if line_keys else [((), table)]
    seeds = grid.trials
    for axis, metric in zip(axes, metrics):
        if (metric, "mean") not in grid.values:
            continue
        for line, rows in lines:
            rows = rows.sort_values(x_key)
            x, categories, log = _positions(rows[x_key])
            label = ", ".join(f"{k}={v}" for k, v in zip(line_keys, np.atleast_1d(line))) or None
            axis.errorbar(x, rows[(metric, "mean")], yerr=rows[(metric, "std")].fillna(0.0), marker="o",
                          capsize=3, linewidth=1.4, label=label)
            if categories:
                axis.set_xticks(range(len(categories)), categories)
            if log:
                axis.set_xscale("log")
        if not seeds.empty and metric in seeds and x_key in seeds:
            x, _, _ = _positions(seeds[x_key])
            axis.scatter(x, seeds[metric], s=10, color="black", alpha=0.35, zorder=3, label="seeds")
        axis.set_xlabel(x_key)
        axis.set_ylabel(metric)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    best = grid.best
    figure.suptitle(f"{grid.study}: {grid.experiment} ({grid.scale}); {grid.selection} at {x_key}={best}"
                    if best is not None else f"{grid.study}: {grid.experiment} ({grid.scale})")
    return figure


def sampling_heatmap(frame: pd.DataFrame, title: str = "") -> Figure:
    """Mean score over (temperature, top_p), lower is better; a scatter when the points are not a grid."""
    figure = new_figure(6.0, 4.6)
    axis = figure.subplots()
    best = frame.loc[frame["score"].idxmin()]
    temperatures, top_ps = sorted(frame["temperature"].unique()), sorted(frame["top_p"].unique())
    if len(temperatures) * len(top_ps) <= 3 * len(frame) and max(len(temperatures), len(top_ps)) <= 15:
        pivot = frame.pivot_table(index="temperature", columns="top_p", values="score", aggfunc="mean")
        image = axis.imshow(pivot.to_numpy(), origin="lower", aspect="auto", cmap="viridis_r")
        axis.set_xticks(range(len(pivot.columns)), [f"{value:g}" for value in pivot.columns])
        axis.set_yticks(range(len(pivot.index)), [f"{value:g}" for value in pivot.index])
        low, high = np.nanmin(pivot.to_numpy()), np.nanmax(pivot.to_numpy())
        for row, temperature in enumerate(pivot.index):
            for column, top_p in enumerate(pivot.columns):
                value = pivot.loc[temperature, top_p]
                if not math.isnan(value):
                    bright = high == low or (value - low) / (high - low) < 0.5  # viridis_r: low scores are light
                    axis.text(column, row, f"{value:.3g}", ha="center", va="center", fontsize=7,
                              color="black" if bright else "white")
        axis.scatter([list(pivot.columns).index(best["top_p"])], [list(pivot.index).index(best["temperature"])],
                     marker="*", s=250, color="red", edgecolor="white", label="best (lowest score)")
    else:
        image = axis.scatter(frame["top_p"], frame["temperature"], c=frame["score"], cmap="viridis_r", s=40)
        axis.scatter([best["top_p"]], [best["temperature"]], marker="*", s=250, color="red", edgecolor="white",
                     label="best (lowest score)")
    figure.colorbar(image, ax=axis, label="score (lower is better)")
    axis.set_xlabel("top_p")
    axis.set_ylabel("temperature")
    axis.legend(fontsize=7, loc="upper right")
    axis.set_title(title or f"best: temperature={best['temperature']:g}, top_p={best['top_p']:g}")
    return figure


def spectrogram_figure(times_seconds: np.ndarray, frequencies_hz: np.ndarray, decibels: np.ndarray,
                       title: str = "", boundary_seconds: float | None = None) -> Figure:
    """A log-magnitude spectrogram (dB re. max); a dashed line marks the prompt/continuation boundary."""
    figure = new_figure(8.0, 2.8)
    axis = figure.subplots()
    if decibels.size:
        extent = (0.0, float(times_seconds[-1]) if len(times_seconds) else 0.0, 0.0, float(frequencies_hz[-1]))
        image = axis.imshow(decibels, origin="lower", aspect="auto", extent=extent, cmap="magma", vmin=-80, vmax=0)
        figure.colorbar(image, ax=axis, label="dB")
    if boundary_seconds is not None:
        axis.axvline(boundary_seconds, color="cyan", linestyle="--", linewidth=1.5, label="prompt | continuation")
        axis.legend(fontsize=7, loc="upper right")
    axis.set_xlabel("time (s)")
    axis.set_ylabel("frequency (Hz)")
    axis.set_title(title, fontsize=9)
    return figure
