"""Figures of the evaluation tasks, written as PNG (matplotlib without a display)."""

import contextlib
from pathlib import Path
from typing import Dict, Iterator, List, Tuple, Union

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
                ylabel: str) -> None:
    """One line per name over x = 1, 2, ..., y in [0, 1]."""
    with figure_file(path) as axes:
        for name, values in curves.items():
            axes.plot(range(1, len(values) + 1), values, marker="o", label=name)
        axes.set(title=title, xlabel=xlabel, ylabel=ylabel, ylim=(0, 1))
        axes.set_xticks(range(1, max(len(v) for v in curves.values()) + 1))
        axes.grid(alpha=0.3)
        axes.legend()
