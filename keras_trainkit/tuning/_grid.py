"""Keras Tuner's grid search, resumable (Keras Tuner issue #1055) and crash-safe."""

from __future__ import annotations

import keras_tuner

from keras_trainkit.tuning import _kt_hooks
from keras_trainkit.tuning._atomic import AtomicOracleMixin
from keras_trainkit.tuning._errors import fatal
from keras_trainkit.tuning._progress import install_display
from keras_trainkit.tuning._tuner import TrainkitTunerMixin, resolve_objective

__all__ = ["GridSearch", "GridSearchOracle"]


class GridSearchOracle(AtomicOracleMixin, keras_tuner.oracles.GridSearchOracle):
    """`keras_tuner.oracles.GridSearchOracle` that resumes after a restart.

    Keras Tuner 1.4.8's grid oracle keeps the order of the grid points it has
    visited (`_ordered_ids`) and the trials whose successors are still to be
    generated (`_populate_next`) in memory only: a search reloaded with
    `overwrite=False` fails with `KeyError: '<trial_id>'` after its first
    trial (Keras Tuner issue #1055). This oracle saves both with the oracle
    state (and saves again after `end_trial` queues the ended trial), so a
    resumed grid search, even one killed in the middle of a trial, runs the
    same trials as an uninterrupted one. Its files are written atomically.

    Args: as `keras_tuner.oracles.GridSearchOracle`.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        install_display(self)

    def get_state(self):
        state = super().get_state()
        state["grid"] = _kt_hooks.grid_state(self)
        return state

    def set_state(self, state):
        super().set_state(state)
        if "grid" in state:  # absent in a project written by Keras Tuner's own oracle
            _kt_hooks.set_grid_state(self, state["grid"])
        else:
            self._rebuild_grid_state()

    def _rebuild_grid_state(self):
        """For a project saved by Keras Tuner's oracle: order the visited points again."""
        ids = [i for i in self.start_order if i in self.trials]
        ordered = []
        for trial_id in ids:
            values = self.trials[trial_id].hyperparameters.values
            position = len(ordered)
            for k, other in enumerate(ordered):
                if self._compare(values, self.trials[other].hyperparameters.values) < 0:
                    position = k
                    break
            ordered.insert(position, trial_id)
        _kt_hooks.set_grid_state(self, {"ordered_ids": ordered, "populate_next": list(self.end_order)})

    @_kt_hooks.synchronized
    def end_trial(self, trial):
        """Ends the trial, then saves the grid's queue with the oracle."""
        super().end_trial(trial)
        # Keras Tuner queues the trial after its own save: save the queue too.
        self.save()


class GridSearch(TrainkitTunerMixin, keras_tuner.Tuner):
    """`keras_tuner.GridSearch` with a resumable grid (`GridSearchOracle`).

    Same arguments and behaviour as `keras_tuner.GridSearch`, plus what
    `TrainkitTunerMixin` adds: atomic files, "trial i of N" progress with the
    time left, `batch_size` left out for pre-batched data, and
    `SearchFailedError` when every trial failed.

    Args:
        hypermodel: A `keras_tuner.HyperModel` or a `build(hp)` function.
            Defaults to `None`.
        objective: Name or `keras_tuner.Objective` (see `GeneticSearch`).
            Defaults to `None`.
        max_trials: Trials at most; `None` runs the whole grid. Defaults to `None`.
        seed: Random seed. Defaults to `None`.
        hyperparameters: As for `keras_tuner.GridSearch`.
        tune_new_entries: As for `keras_tuner.GridSearch`.
        allow_new_entries: As for `keras_tuner.GridSearch`.
        max_retries_per_trial: As for `keras_tuner.GridSearch`.
        max_consecutive_failed_trials: As for `keras_tuner.GridSearch`.
        **kwargs: `keras_tuner.Tuner` arguments (`directory`, `project_name`,
            `overwrite`, `executions_per_trial`, ...).
    """

    def __init__(self, hypermodel=None, objective=None, max_trials=None, seed=None,
                 hyperparameters=None, tune_new_entries=True, allow_new_entries=True,
                 max_retries_per_trial=0, max_consecutive_failed_trials=3, **kwargs):
        with fatal():
            objective = resolve_objective(objective, hypermodel)
        oracle = GridSearchOracle(
            objective=objective, max_trials=max_trials, seed=seed, hyperparameters=hyperparameters,
            tune_new_entries=tune_new_entries, allow_new_entries=allow_new_entries,
            max_retries_per_trial=max_retries_per_trial,
            max_consecutive_failed_trials=max_consecutive_failed_trials)
        super().__init__(oracle=oracle, hypermodel=hypermodel, **kwargs)
