"""Training-free OptunaSearch tuners and checks shared by the Optuna tests."""

import math

import keras_tuner
import optuna

from keras_trainkit.tuning import OptunaSearch
from keras_trainkit.tuning._optuna import TAG_KEY


class _Model:
    stop_training = False


class EpochTuner(OptunaSearch):
    """Scores `fn(values, epoch)` for `epochs` epochs, reporting each through `on_epoch_end`
    exactly as a Keras fit does; `self.epochs_run[trial_id]` counts the epochs run."""

    def __init__(self, fn, epochs=1, **kwargs):
        self.fn = fn
        self.epochs = epochs
        self.epochs_run = {}
        super().__init__(hypermodel=None, **kwargs)

    def run_trial(self, trial, *args, **kwargs):
        model = _Model()
        name = self.oracle.objective.name
        history = []
        for epoch in range(self.epochs):
            result = self.fn(trial.hyperparameters.values, epoch)
            logs = result if isinstance(result, dict) else {name: result}
            history.append(logs)
            self.on_epoch_end(trial, model, epoch, logs=logs)
            if model.stop_training:
                break
        self.epochs_run[trial.trial_id] = len(history)
        objective = self.oracle.objective
        if hasattr(objective, "objectives"):  # Keras Tuner needs the combined value in a dict
            return {**history[-1], objective.name: objective.get_value(history[-1])}
        best = (max if objective.direction == "max" else min)(h[name] for h in history)
        return {name: best}

    def save_model(self, trial_id, model, step=0):
        pass


def check_agreement(tuner):
    """The Keras Tuner trials and the Optuna study describe the same search."""
    from keras_trainkit.tuning._optuna_space import suggest_hyperparameters

    oracle = tuner.oracle
    study = oracle.study
    by_id = {}
    for ft in study.get_trials(deepcopy=False):
        tag = ft.user_attrs.get(TAG_KEY)
        if tag and tag["owner"] == oracle._owner:
            by_id[tag["trial_id"]] = ft
    assert set(by_id) == set(oracle.trials)
    for trial_id, trial in oracle.trials.items():
        ft = by_id[trial_id]
        assert trial.hyperparameters.values == suggest_hyperparameters(
            optuna.trial.FixedTrial(ft.params), oracle.hyperparameters)
        if ft.state == optuna.trial.TrialState.PRUNED:
            assert trial.status == "COMPLETED" and trial_id in oracle._pruned
            assert trial.message.startswith("Pruned by")
        elif ft.state == optuna.trial.TrialState.COMPLETE:
            assert trial.status == "COMPLETED" and trial_id not in oracle._pruned
            if not oracle.multi_objective:
                assert math.isclose(ft.value, trial.score, rel_tol=1e-6)
        else:
            assert ft.state == optuna.trial.TrialState.FAIL and trial.status == "FAILED"
    return by_id


def objective(name="score", direction="min"):
    return keras_tuner.Objective(name, direction)
