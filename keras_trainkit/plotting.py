"""Optional matplotlib helpers (install the `examples` extra for matplotlib)."""

from __future__ import annotations

from typing import Any

import numpy as np


def schedule_values(schedule: Any, steps: Any) -> np.ndarray:
    """Evaluates any schedule (ours, Keras', a float) at an array of steps."""
    from keras import ops

    from keras_trainkit.schedules._base import call_schedule

    steps = np.asarray(steps, dtype="float32")
    return np.asarray(ops.convert_to_numpy(call_schedule(schedule, ops.convert_to_tensor(steps))))


def plot_schedule(schedule: Any, total_steps: int, path: str | None = None, ax: Any = None,
                  observed: tuple[Any, Any] | None = None, title: str | None = None):
    """Plots `schedule` over updates `0 .. total_steps - 1`.

    Args:
        schedule: Any learning-rate schedule or float.
        total_steps: Number of updates to plot, an int >= 1.
        path: Save the figure there (PNG by extension) when given. Defaults to `None`.
        ax: Matplotlib axes to draw on; a new figure when `None`. Defaults to `None`.
        observed: Optional `(updates, rates)` measured during training, drawn
            as markers over the curve. Defaults to `None`.
        title: Axes title. Defaults to `None`.

    Returns:
        The matplotlib `Figure`.
    """
    if not isinstance(total_steps, (int, np.integer)) or total_steps < 1:
        raise ValueError(f"Argument `total_steps` must be an integer >= 1. Received: total_steps={total_steps!r}")
    import matplotlib

    if ax is None:
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 3.5))
    else:
        fig = ax.figure
    steps = np.arange(total_steps)
    ax.plot(steps, schedule_values(schedule, steps), label="schedule")
    if observed is not None:
        ax.plot(*observed, "o", markersize=3, label="observed in fit()")
        ax.legend()
    ax.set_xlabel("optimizer update")
    ax.set_ylabel("learning rate")
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=100)
    return fig
