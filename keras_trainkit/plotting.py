"""Optional matplotlib helpers (install the `examples` extra for matplotlib)."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["plot_schedule", "plot_search", "schedule_values", "search_results"]


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


def _matplotlib():
    try:
        import matplotlib  # noqa: F401
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError(
            'plot_search needs matplotlib: pip install "keras_trainkit[examples]"') from None
    from matplotlib.figure import Figure

    return Figure


def search_results(tuner: Any) -> dict[str, Any]:
    """The data `plot_search` draws, from a tuner (or its oracle).

    Args:
        tuner: A Keras Tuner tuner after (or during) `search()`, or its oracle.

    Returns:
        A dict with `objective` (name), `direction`, `trial_ids`, `scores`
        (completed trials in the order they ended), `best_so_far` (running
        best by the direction), `values` (one dict of hyperparameter values
        per trial), `hyperparameters` (the space's entries, by name) and
        `failed` (ids of trials that did not complete).
    """
    oracle = getattr(tuner, "oracle", tuner)
    objective = oracle.objective
    direction = getattr(objective, "direction", "min")
    order = [t for t in getattr(oracle, "end_order", []) if t in oracle.trials]
    order += [t for t in sorted(oracle.trials) if t not in order]
    ids, scores, values, failed = [], [], [], []
    for trial_id in order:
        trial = oracle.trials[trial_id]
        if trial.status != "COMPLETED" or trial.score is None or not np.isfinite(trial.score):
            failed.append(trial_id)
            continue
        ids.append(trial_id)
        scores.append(float(trial.score))
        values.append({k: v for k, v in trial.hyperparameters.values.items() if not k.startswith("tuner/")})
    scores_arr = np.asarray(scores, dtype=float)
    best = (np.maximum.accumulate(scores_arr) if direction == "max"
            else np.minimum.accumulate(scores_arr)) if len(scores) else scores_arr
    space = {hp.name: hp for hp in oracle.get_space().space if not hp.name.startswith("tuner/")}
    return {"objective": getattr(objective, "name", str(objective)), "direction": direction,
            "trial_ids": ids, "scores": scores_arr, "best_so_far": best, "values": values,
            "hyperparameters": space, "failed": failed}


def plot_search(tuner: Any, path: str | None = None, hyperparameters: list[str] | None = None,
                ncols: int = 3, title: str | None = None):
    """Plots a search: score per trial with the best so far, and score against each hyperparameter.

    The first panel shows each completed trial's score in the order trials
    ended, with the running best (by the objective's direction) as a step
    line. Then one panel per hyperparameter: the score of every trial against
    its value - a log axis for log-sampled numbers, one column per value for
    choices and booleans - with the best trial starred. Trials where a
    conditional hyperparameter is inactive are not drawn in its panel.

    Args:
        tuner: A Keras Tuner tuner (any: keras_trainkit's or Keras Tuner's),
            or its oracle.
        path: Save the figure there (PNG by extension) when given. Defaults to `None`.
        hyperparameters: Names of the hyperparameters to draw, in order.
            Defaults to `None` (every one some completed trial has; `Fixed`
            ones left out).
        ncols: Panels per row for the hyperparameters. Defaults to `3`.
        title: Figure title. Defaults to `None` (the objective).

    Returns:
        The matplotlib `Figure` (made without pyplot: it does not change the
        matplotlib backend).

    Raises:
        ValueError: if no trial has completed, or a name in `hyperparameters`
            is not in the search.
        ImportError: without matplotlib.

    Examples:
        >>> tuner.search(x, y, validation_data=(x_val, y_val))
        >>> plot_search(tuner, path="search.png")
    """
    if not isinstance(ncols, (int, np.integer)) or isinstance(ncols, bool) or ncols < 1:
        raise ValueError(f"Argument `ncols` must be an integer >= 1. Received: ncols={ncols!r}")
    results = search_results(tuner)
    if not len(results["scores"]):
        raise ValueError("Argument `tuner` has no completed trial to plot. Received: "
                         f"{len(results['failed'])} trials, none completed")
    space = results["hyperparameters"]
    seen = [n for n in space if any(n in v for v in results["values"])]
    if hyperparameters is None:
        names = [n for n in seen if type(space[n]).__name__ != "Fixed"]
    else:
        unknown = [n for n in hyperparameters if n not in seen]
        if unknown:
            raise ValueError(f"Argument `hyperparameters` names {unknown}, not in the search "
                             f"(it has {seen}). Received: hyperparameters={hyperparameters!r}")
        names = list(hyperparameters)
    Figure = _matplotlib()
    from matplotlib.ticker import MaxNLocator, NullFormatter

    rows = 1 + -(-len(names) // ncols)
    fig = Figure(figsize=(4.2 * ncols, 3.2 * rows), layout="constrained")
    grid = fig.add_gridspec(rows, ncols)
    scores, best = results["scores"], results["best_so_far"]
    objective = results["objective"]
    best_index = int(np.argmax(scores) if results["direction"] == "max" else np.argmin(scores))
    ax = fig.add_subplot(grid[0, :])
    steps = np.arange(1, len(scores) + 1)
    ax.plot(steps, scores, "o", label="trial")
    ax.step(steps, best, where="post", label="best so far")
    ax.set_xlabel("trial (in the order they ended)")
    ax.set_ylabel(objective)
    ax.set_title(title or f"{objective} ({results['direction']}imize)"
                 + (f", {len(results['failed'])} failed" if results["failed"] else ""))
    ax.grid(alpha=0.3)
    ax.legend()
    for k, name in enumerate(names):
        ax = fig.add_subplot(grid[1 + k // ncols, k % ncols])
        idx = [i for i, v in enumerate(results["values"]) if name in v]
        xs = [results["values"][i][name] for i in idx]
        ys = scores[idx]
        hp = space.get(name)
        numeric = all(isinstance(x, (int, float, np.number)) and not isinstance(x, bool) for x in xs)
        if numeric and type(hp).__name__ != "Choice":
            ax.plot(xs, ys, "o", alpha=0.8)
            if getattr(hp, "sampling", None) == "log":
                ax.set_xscale("log")
                ax.xaxis.set_minor_formatter(NullFormatter())
            elif type(hp).__name__ == "Int":
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            positions = xs
        else:
            choices = list(getattr(hp, "values", None) or sorted({str(x) for x in xs}))
            labels = [str(c) for c in choices]
            positions = [labels.index(str(x)) if str(x) in labels else len(labels) for x in xs]
            ax.plot(positions, ys, "o", alpha=0.8)
            ax.set_xticks(range(len(labels)), labels, rotation=30 if len(labels) > 3 else 0)
            ax.set_xlim(-0.5, len(labels) - 0.5)  # every choice shown, tried or not
        if best_index in idx:
            j = idx.index(best_index)
            ax.plot([positions[j]], [ys[j]], "*", markersize=14, label="best")
        ax.set_xlabel(name)
        ax.set_ylabel(objective)
        ax.grid(alpha=0.3)
    if path is not None:
        fig.savefig(path, dpi=100)
    return fig
