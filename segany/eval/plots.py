"""Figures of the evaluation tasks, written as PNG (matplotlib without a display)."""

import contextlib
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..fileio import atomic_path


@contextlib.contextmanager
def figure_file(path: Union[str, Path], size: Tuple[float, float] = (5, 3.6)) -> Iterator["object"]:
    """Yield the axes of a new figure; on leaving, save it to `path` as PNG, atomically."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(figsize=size, dpi=120)
    try:
        yield axes
        figure.tight_layout()
        with atomic_path(path) as tmp:
            figure.savefig(tmp, format="png")
    finally:
        plt.close(figure)


def plot_curves(curves: Dict[str, List[float]], path: Union[str, Path], title: str, xlabel: str,
                ylabel: str, x: Optional[Sequence[float]] = None) -> None:
    """One line per name, y in [0, 1], over `x` (default: 1, 2, ... with a tick each)."""
    with figure_file(path) as axes:
        for name, values in curves.items():
            axes.plot(range(1, len(values) + 1) if x is None else x, values, marker="o", label=name)
        axes.set(title=title, xlabel=xlabel, ylabel=ylabel, ylim=(0, 1))
        if x is None:
            axes.set_xticks(range(1, max(len(v) for v in curves.values()) + 1))
        axes.grid(alpha=0.3)
        axes.legend()


def plot_precision_recall(curves: Dict[str, Tuple[List[float], List[float]]], points: Dict[str, Tuple[float, float]],
                          path: Union[str, Path], title: str) -> None:
    """Precision over recall: a line per name of `curves` (recall, precision per threshold) and a
    marker per name of `points` (recall, precision), over grey curves of equal F-measure."""
    with figure_file(path, size=(5, 5)) as axes:
        recall = np.linspace(0.01, 1, 200)
        for f in np.arange(0.1, 1, 0.1):
            precision = f * recall / (2 * recall - f)
            shown = (precision > 0) & (precision <= 1)
            axes.plot(recall[shown], precision[shown], color="0.85", linewidth=0.8)
        for name, (recall_values, precision_values) in curves.items():
            shown = [(r, p) for r, p in zip(recall_values, precision_values) if r > 0 or p > 0]
            if shown:
                axes.plot(*zip(*shown), label=name)
        for name, (r, p) in points.items():
            axes.plot([r], [p], marker="o", linestyle="none", label=name)
        axes.set(title=title, xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1))
        axes.grid(alpha=0.3)
        axes.legend(loc="lower left")
