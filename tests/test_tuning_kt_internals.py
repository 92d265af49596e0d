"""Canaries for the Keras Tuner internals keras_trainkit.tuning uses (see tuning/_kt_hooks.py).

A Keras Tuner upgrade that moves one of them fails here first, with its name.
"""

import inspect

import keras_tuner
from _tuning_toys import FunctionTuner
from keras_tuner.src.engine import base_tuner, oracle, tuner, tuner_utils
from keras_tuner.src.tuners import gridsearch, hyperband

from keras_trainkit.tuning import _kt_hooks


def test_oracle_save_paths_and_display():
    for name in ("save", "_save_trial", "_get_oracle_fname", "_get_trial_dir"):
        assert callable(getattr(oracle.Oracle, name, None)), name
    assert list(inspect.signature(oracle.Oracle._save_trial).parameters) == ["self", "trial"]
    o = keras_tuner.oracles.RandomSearchOracle()
    assert isinstance(o._display, oracle.Display)
    display = o._display
    for name in ("on_trial_begin", "on_trial_end", "format_value", "format_duration", "get_state", "set_state"):
        assert callable(getattr(display, name)), name
    assert {"search_start", "trial_start", "trial_number"} <= set(display.get_state())
    assert isinstance(display.col_width, int) and display.oracle is o
    assert _kt_hooks.Display is oracle.Display


def test_every_oracle_and_trial_file_goes_through_the_two_overridden_methods(tmp_path):
    # Oracle.save and Oracle._save_trial are the only writers: spy on both.
    written = []

    class Spy(keras_tuner.oracles.RandomSearchOracle):
        def save(self):
            written.append("oracle")
            super().save()

        def _save_trial(self, trial):
            written.append("trial")
            super()._save_trial(trial)

    space = keras_tuner.HyperParameters()
    space.Float("x", 0, 1)
    t = FunctionTuner(lambda v: v["x"], oracle=Spy(objective=keras_tuner.Objective("score", "min"),
                                                  max_trials=2, hyperparameters=space),
                      directory=str(tmp_path), project_name="p")
    t.oracle.verbose = 0
    t.search(verbose=0)
    files = sorted(p.relative_to(tmp_path / "p").as_posix() for p in (tmp_path / "p").rglob("*") if p.is_file())
    assert files == ["oracle.json", "trial_0/trial.json", "trial_1/trial.json", "tuner0.json"]
    assert written.count("oracle") >= 2 and written.count("trial") >= 4


def test_tuner_internals():
    for name in ("save", "_get_tuner_fname", "_is_worker"):
        assert callable(getattr(base_tuner.BaseTuner, name, None)), name
    for name in ("_build_and_fit_model", "_try_build", "_get_build_config_fname", "_get_checkpoint_fname"):
        assert callable(getattr(tuner.Tuner, name, None)), name
    assert list(inspect.signature(tuner.Tuner._build_and_fit_model).parameters) == ["self", "trial", "args", "kwargs"]
    assert _kt_hooks.SaveBestEpoch is tuner_utils.SaveBestEpoch
    cb = tuner_utils.SaveBestEpoch(keras_tuner.Objective("val_loss", "min"), "/tmp/x.weights.h5")
    assert cb.filepath == "/tmp/x.weights.h5" and cb.objective.name == "val_loss"
    assert callable(tuner_utils.SaveBestEpoch._save_model)
    assert callable(tuner_utils.validate_trial_results)
    # run_trial hands its SaveBestEpoch to _build_and_fit_model in `callbacks`.
    source = inspect.getsource(tuner.Tuner.run_trial)
    assert "SaveBestEpoch" in source and 'copied_kwargs["callbacks"] = callbacks' in source
    # Hyperband passes its epochs through fit()'s keyword arguments.
    source = inspect.getsource(hyperband.Hyperband.run_trial)
    assert 'fit_kwargs["epochs"]' in source and 'fit_kwargs["initial_epoch"]' in source


def test_grid_search_oracle_state():
    o = keras_tuner.oracles.GridSearchOracle()
    assert isinstance(o._ordered_ids, gridsearch.LinkedList) and o._populate_next == []
    linked = o._ordered_ids
    for name in ("_memory", "_data_to_index", "_next_index"):
        assert hasattr(linked, name), name
    linked.insert("a")
    linked.insert("c")
    linked.insert("b", "a")
    assert _kt_hooks.grid_state(o)["ordered_ids"] == ["a", "b", "c"]
    # Keras Tuner 1.4.8 does not save the grid state (issue #1055): if it ever does, our
    # GridSearchOracle's extra "grid" entry can go.
    assert "ordered_ids" not in str(o.get_state()) and "populate_next" not in str(o.get_state())


def test_oracle_create_trial_internals_for_optuna_oracle():
    """`Oracle._retry_queue` (a list of trial ids), `_record_values(trial)`,
    `_save_trial(trial)`, `_set_project_dir(directory, project_name)`, and the
    public bookkeeping `ongoing_trials`, `tuner_ids`, `start_order`,
    `end_order` that `OptunaOracle.create_trial` keeps as Keras Tuner's does."""
    o = keras_tuner.oracles.RandomSearchOracle()
    assert _kt_hooks.retry_queue(o) == [] and isinstance(_kt_hooks.retry_queue(o), list)
    assert list(inspect.signature(oracle.Oracle._record_values).parameters) == ["self", "trial"]
    assert list(inspect.signature(oracle.Oracle._set_project_dir).parameters) == ["self", "directory",
                                                                                  "project_name"]
    assert isinstance(o.ongoing_trials, dict) and isinstance(o.tuner_ids, set)
    assert o.start_order == [] and o.end_order == []
    source = inspect.getsource(oracle.Oracle)  # create_trial is wrapped by `synchronized`
    for name in ("_retry_queue", "_record_values", "_save_trial", "_display.on_trial_begin", "start_order"):
        assert name in source, name

    seen = []

    class Probe(_kt_hooks.ProjectDirHook, keras_tuner.oracles.RandomSearchOracle):
        def on_project_dir(self, directory, project_name):
            seen.append((directory, project_name))

    Probe()._set_project_dir("d", "p")
    assert seen == [("d", "p")]


def test_synchronized_keeps_the_docstring_and_still_locks():
    class Synchronized(keras_tuner.oracles.RandomSearchOracle):
        @_kt_hooks.synchronized
        def end_trial(self, trial):
            """Doc kept."""
            return super().end_trial(trial)

    assert Synchronized.end_trial.__doc__ == "Doc kept." and Synchronized.end_trial.__name__ == "end_trial"
    assert "LOCKS" in inspect.getsource(oracle.synchronized)
