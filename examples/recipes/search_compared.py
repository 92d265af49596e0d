"""Recipe (f): grid vs random vs Bayesian vs genetic search (and Optuna's TPE) at equal budget.

Every tuner gets the same budget - `--trials` trials of `--epochs` epochs -
on the same two hyperparameters of the digits MLP (Adam, batch 32, 640
training digits so that a trial takes about a second), maximizing the
validation accuracy:

- `learning_rate`: log-uniform in [1e-4, 1];
- `l2` (kernel penalty of both layers): log-uniform in [1e-6, 1e-1].

Tuners: Keras Tuner's `GridSearch` (on the grid learning_rate in
{1e-3, 1e-2, 1e-1} x l2 in {1e-6, 1e-3}: the 6 points of the default
budget, visited in order), `RandomSearch` and `BayesianOptimization`,
keras_trainkit's `GeneticSearch`, and - when optuna is installed and
keras_trainkit provides `tuning.OptunaSearch` - Optuna's TPE sampler. The
model-based ones start with the same 3 random trials (`num_initial_points`,
`population_size`, `n_startup_trials`).

This is a one-seed, one-minute illustration: at such a budget luck decides
much of the ranking. benchmarks/search_efficiency.py compares the tuners
over many seeds and larger budgets.

Prints a table (best accuracy, its hyperparameters, the trial that found it)
and saves DIR/recipe_search.png (best-so-far per trial, the points each
tuner tried).

    python examples/recipes/search_compared.py [--out DIR] [--smoke] [--trials N]
"""

from __future__ import annotations

import os
import sys
import tempfile
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _recipe_common as C  # noqa: E402
import keras  # noqa: E402
import keras_tuner  # noqa: E402
import numpy as np  # noqa: E402

from keras_trainkit import tuning  # noqa: E402

STARTUP = 3  # random trials before a model-based tuner takes over


class DigitsHyperModel(keras_tuner.HyperModel):
    """The MLP with a tuned learning rate and L2 penalty (on a grid when `grid=True`)."""

    def __init__(self, grid: bool = False):
        super().__init__()
        self.grid = grid

    def build(self, hp):
        if self.grid:  # 3 x 2 points of the space below: the budget of 6 trials
            lr = hp.Float("learning_rate", 1e-3, 1e-1, step=10, sampling="log")
            l2 = hp.Float("l2", 1e-6, 1e-3, step=1000, sampling="log")
        else:
            lr = hp.Float("learning_rate", 1e-4, 1.0, sampling="log")
            l2 = hp.Float("l2", 1e-6, 1e-1, sampling="log")
        return C.mlp(keras.optimizers.Adam(lr), regularizer=keras.regularizers.L2(l2))


def optuna_tpe(seed):
    """Optuna's TPE through keras_trainkit, or None (and why) when unavailable."""
    try:
        import optuna
    except ImportError:
        return None, "optuna is not installed"
    try:
        search = tuning.OptunaSearch
    except AttributeError:
        return None, "this keras_trainkit has no tuning.OptunaSearch"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(n_startup_trials=STARTUP, seed=seed)
    return (lambda **kw: search(DigitsHyperModel(), sampler=sampler, **kw)), None


def tuners(seed):
    makers = {
        "grid": lambda **kw: keras_tuner.GridSearch(DigitsHyperModel(grid=True), **kw),
        "random": lambda **kw: keras_tuner.RandomSearch(DigitsHyperModel(), seed=seed, **kw),
        "Bayesian (GP)": lambda **kw: keras_tuner.BayesianOptimization(
            DigitsHyperModel(), num_initial_points=STARTUP, seed=seed, **kw),
        "genetic (ours)": lambda **kw: tuning.GeneticSearch(
            DigitsHyperModel(), population_size=STARTUP, seed=seed, **kw),
    }
    tpe, why = optuna_tpe(seed)
    if tpe is None:
        print(f"Optuna TPE skipped: {why}.")
    else:
        makers["Optuna TPE"] = tpe
    return makers


def main(argv=None):
    args = C.parse(__doc__, argv, trials=(int, 6, "trials per tuner"), epochs=(int, 2, "epochs per trial"))
    trials, epochs = (1, 1) if args.smoke else (args.trials, args.epochs)
    # 640 = 20 batches of 32, and the validation set in one batch: no partial
    # batch, so each trial traces its train and test steps once.
    (x, y), (x_val, y_val) = C.digits(args.smoke, train=640)
    rows, history = [], {}
    with tempfile.TemporaryDirectory() as directory:
        for name, make in tuners(args.seed).items():
            tuner = make(objective="val_accuracy", max_trials=trials, directory=directory,
                         project_name=name.split()[0].lower(), overwrite=True)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the GP's L-BFGS convergence warnings
                tuner.search(x, y, validation_data=(x_val, y_val), epochs=epochs, batch_size=32,
                             validation_batch_size=len(x_val), verbose=0)
            done = [t for _, t in sorted(tuner.oracle.trials.items()) if t.score is not None]
            scores = np.array([t.score for t in done])
            best = int(np.argmax(scores))
            values = done[best].hyperparameters.values
            history[name] = (scores, [(t.hyperparameters.values["learning_rate"], t.hyperparameters.values["l2"])
                                      for t in done])
            rows.append({"tuner": name, "trials": len(done), "best val accuracy": float(scores[best]),
                         "learning_rate": values["learning_rate"], "l2": values["l2"],
                         "found at trial": best + 1})
    C.table(rows, list(rows[0]), f"{trials} trials of {epochs} epochs each, {len(x)} training digits:")

    fig, (curves, points) = C.figure(2)
    markers = "osD^v"
    for i, (name, (scores, tried)) in enumerate(history.items()):
        curves.plot(np.arange(1, len(scores) + 1), np.maximum.accumulate(scores), marker=markers[i], ms=4,
                    color=f"C{i}", label=name)
        lr, l2 = np.array(tried).T
        points.scatter(lr, l2, s=20 + 60 * np.clip(scores, 0, 1) ** 4, marker=markers[i], facecolors="none",
                       edgecolors=f"C{i}", label=name)
    curves.set_xlabel("trial")
    curves.set_ylabel("best validation accuracy so far")
    curves.set_title("equal budget")
    curves.grid(alpha=0.3)
    curves.legend(fontsize=8)
    points.set_xscale("log")
    points.set_yscale("log")
    points.set_xlabel("learning_rate")
    points.set_ylabel("l2")
    points.set_title("points tried (larger: better)")
    points.legend(fontsize=7, loc="best")
    C.save(fig, args.out, "recipe_search.png")
    return {"rows": rows}


if __name__ == "__main__":
    main()
