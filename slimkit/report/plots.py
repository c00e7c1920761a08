"""Matplotlib figures written to PNG (Agg backend, no display needed). Requires the `plot` extra."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from slimkit.errors import MissingDependencyError
from slimkit.fileio import atomic_write

__all__ = ["plot_bars", "plot_lines", "plot_scatter"]


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise MissingDependencyError('plots need matplotlib: pip install "slimkit[plot]"') from None
    return plt


def _save(fig: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110))
    _pyplot().close(fig)
    return path


def plot_bars(
    labels: Sequence[str], series: Mapping[str, Sequence[float]], path: str | Path, *, title: str = "",
    ylabel: str = "",
) -> Path:
    """Grouped bars, one group per label (e.g. channels per layer before/after pruning)."""
    plt = _pyplot()
    n, k = len(labels), max(len(series), 1)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.28 * n * k), 3.8))
    width = 0.8 / k
    for i, (name, values) in enumerate(series.items()):
        ax.bar([j + i * width for j in range(n)], values, width=width, label=name)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(n)])
    ax.set_xticklabels(labels, rotation=90, fontsize=7)
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.legend()
    return _save(fig, path)


def plot_scatter(
    points: Sequence[Mapping[str, Any]], x: str, y: str, path: str | Path, *, label: str = "label", title: str = "",
    xlabel: str | None = None, ylabel: str | None = None,
) -> Path:
    """Labelled points (e.g. accuracy vs MACs of baseline and pruned models)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4.0))
    for p in points:
        ax.scatter(p[x], p[y], s=40)
        ax.annotate(str(p.get(label, "")), (p[x], p[y]), textcoords="offset points", xytext=(5, 5), fontsize=8)
    ax.set_xlabel(xlabel or x)
    ax.set_ylabel(ylabel or y)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_lines(
    curves: Mapping[str, Sequence[float]], path: str | Path, *, bands: Mapping[str, tuple[Sequence[float],
    Sequence[float]]] | None = None, title: str = "", xlabel: str = "", ylabel: str = "", logx: bool = False,
) -> Path:
    """Named curves over a shared integer x axis, with optional (low, high) bands (e.g. best-so-far over seeds)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    for name, ys in curves.items():
        xs = range(1, len(ys) + 1)
        ax.plot(xs, ys, label=name)
        if bands and name in bands:
            lo, hi = bands[name]
            ax.fill_between(xs, lo, hi, alpha=0.2)
    if logx:
        ax.set_xscale("log")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)
