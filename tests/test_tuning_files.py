"""Crash-safe tuner files, resumable grid search (Keras Tuner #1055), all-failed searches."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import keras_tuner
import pytest
from _tuning_toys import FunctionTuner

from keras_trainkit.tuning import (
    AtomicOracleMixin,
    GeneticOracle,
    GridSearchOracle,
    SearchFailedError,
    TrainkitTunerMixin,
    make_oracle_atomic,
)

HERE = os.path.dirname(os.path.abspath(__file__))


def test_a_kill_during_any_save_leaves_a_loadable_project(tmp_path):
    """Real SIGKILLs in the middle of oracle, trial, tuner and checkpoint saves."""
    run = subprocess.run([sys.executable, os.path.join(HERE, "_tuning_kill_saves.py"), str(tmp_path), "8"],
                         capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["ours"].pop("fewest_saves_before_a_kill") > 0  # each child was killed while saving
    assert out["ours"] == {"unreadable": 0, "not_reloadable": 0, "torn": 0,
                           "oracle_class": "AtomicRandomSearchOracle"}
    # The same kills against Keras Tuner's own writer break files (the test can fail).
    assert out["keras_tuner"]["unreadable"] > 0 and out["keras_tuner"]["torn"] > 0


def test_our_oracles_write_atomically_and_the_files_are_keras_tuners(tmp_path):
    assert isinstance(GeneticOracle(seed=0), AtomicOracleMixin)
    assert isinstance(GridSearchOracle(), AtomicOracleMixin)
    plain = keras_tuner.oracles.BayesianOptimizationOracle(objective="val_loss", max_trials=3)
    same = make_oracle_atomic(plain)
    assert same is plain and isinstance(plain, AtomicOracleMixin)
    assert isinstance(plain, keras_tuner.oracles.BayesianOptimizationOracle)
    assert type(make_oracle_atomic(keras_tuner.oracles.BayesianOptimizationOracle())) is type(plain)
    # A project written atomically reloads with plain Keras Tuner, and the other way round.
    space = keras_tuner.HyperParameters()
    space.Float("x", 0.0, 1.0)

    def tuner(cls, overwrite):
        oracle = keras_tuner.oracles.RandomSearchOracle(
            objective=keras_tuner.Objective("score", "min"), max_trials=4, seed=3, hyperparameters=space)
        t = cls(lambda v: v["x"], oracle=oracle, directory=str(tmp_path), project_name="p", overwrite=overwrite)
        t.oracle.verbose = 0
        return t

    class Safe(TrainkitTunerMixin, FunctionTuner):
        pass

    first = tuner(Safe, True)
    first.search(verbose=0)
    again = tuner(FunctionTuner, False)
    assert {t: v.score for t, v in again.oracle.trials.items()} == {t: v.score for t, v in first.oracle.trials.items()}
    assert sorted(n for n in os.listdir(tmp_path / "p") if not n.startswith("trial_")) == ["oracle.json", "tuner0.json"]


def test_an_unchanged_state_is_not_written_twice_but_a_changed_file_is(tmp_path):
    from keras_trainkit.tuning import _kt_hooks

    path = str(tmp_path / "oracle.json")

    def read():
        with open(path) as f:
            return json.load(f)

    _kt_hooks.write_json(path, {"a": [1, 2]})
    first = os.stat(path)
    _kt_hooks.write_json(path, {"a": [1, 2]})  # same JSON, file untouched: skipped
    assert os.stat(path).st_ino == first.st_ino  # os.replace would give a new inode
    _kt_hooks.write_json(path, {"a": [1, 3]})
    assert read() == {"a": [1, 3]} and os.stat(path).st_ino != first.st_ino
    with open(path, "w") as f:  # changed behind our back: written again
        f.write("{}")
    _kt_hooks.write_json(path, {"a": [1, 3]})
    assert read() == {"a": [1, 3]}
    os.remove(path)
    _kt_hooks.write_json(path, {"a": [1, 3]})
    assert read() == {"a": [1, 3]}
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".tmp-")]


# -- GridSearch resume (Keras Tuner issue #1055) ---------------------------------------
def grid_space():
    hp = keras_tuner.HyperParameters()
    hp.Choice("a", [1, 2, 3])
    hp.Choice("b", ["x", "y"])
    with hp.conditional_scope("b", ["y"]):
        hp.Int("c", 0, 2)
    return hp


class Interrupt(BaseException):
    """Stands for a kill in the middle of a trial (Keras Tuner catches only Exception)."""


def grid_tuner(tmp_path, oracle_cls, fn, max_trials=None, overwrite=False, name="g"):
    oracle = oracle_cls(objective=keras_tuner.Objective("score", "min"), max_trials=max_trials,
                        hyperparameters=grid_space())
    t = FunctionTuner(fn, oracle=oracle, directory=str(tmp_path), project_name=name, overwrite=overwrite)
    t.oracle.verbose = 0
    return t


def score(values):
    return values["a"] + (values.get("c", 0) if values["b"] == "y" else 0.5)


def interrupt_at(n):
    calls = []

    def fn(values):
        calls.append(1)
        if len(calls) == n:
            raise Interrupt
        return score(values)

    return fn


def grid_values(tuner):
    return sorted(json.dumps(t.hyperparameters.values, sort_keys=True) for t in tuner.oracle.trials.values())


@pytest.mark.parametrize("first", ["keras_tuner", "ours"])
def test_grid_search_resumes_after_an_interrupted_trial(tmp_path, first):
    full = grid_tuner(tmp_path, GridSearchOracle, score, overwrite=True, name="full")
    full.search(verbose=0)
    assert len(full.oracle.trials) == 12  # 3 x (1 + 3): the whole grid

    first_cls = keras_tuner.oracles.GridSearchOracle if first == "keras_tuner" else GridSearchOracle
    with pytest.raises(Interrupt):
        grid_tuner(tmp_path, first_cls, interrupt_at(5), overwrite=True).search(verbose=0)
    if first == "keras_tuner":
        # Keras Tuner's own oracle cannot resume (issue #1055)...
        with pytest.raises(KeyError):
            grid_tuner(tmp_path, keras_tuner.oracles.GridSearchOracle, score).search(verbose=0)
    # ...ours resumes a project written by either, and runs exactly the remaining grid points.
    resumed = grid_tuner(tmp_path, GridSearchOracle, score)
    resumed.search(verbose=0)
    trials = resumed.oracle.trials.values()
    assert all(t.status == "COMPLETED" for t in trials)
    assert grid_values(resumed) == grid_values(full)


RESUME_SCRIPT = textwrap.dedent("""
    import json, os, signal, sys
    import keras, numpy as np
    from keras_trainkit.data import load_digits
    from keras_trainkit.tuning import GridSearch, make_hypermodel
    directory, kill_in_fit = sys.argv[1], int(sys.argv[2])
    fits = []

    class Kill(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            fits.append(1)
        def on_train_batch_end(self, batch, logs=None):
            if len(fits) == kill_in_fit and batch == 2:
                os.kill(os.getpid(), signal.SIGKILL)

    (x, y), (xv, yv) = load_digits()
    hm = make_hypermodel((64,), 10, epochs=2, early_stopping_patience=None, search_space={
        "num_layers": 1, "units_0": [8, 16], "batch_size": [32, 64], "optimizer": "adam",
        "learning_rate": 0.01, "lr_schedule": "cosine", "cosine_alpha": 0.0, "warmup_fraction": 0.1,
        "l1": 0.0, "l2": 0.0, "dropout": 0.0, "activation": "relu"})
    tuner = GridSearch(hm, directory=directory, project_name="p", overwrite=kill_in_fit > 0)
    tuner.search(x[:300], y[:300], validation_data=(xv[:100], yv[:100]), callbacks=[Kill()], verbose=0)
    best = tuner.get_best_models(1)[0]
    accuracy = float(np.mean(np.argmax(best.predict(xv[:100], verbose=0), 1) == yv[:100]))
    trials = tuner.oracle.trials.values()
    print(json.dumps({"trials": sorted((t.hyperparameters["units_0"], t.hyperparameters["batch_size"], t.status)
                                       for t in trials),
                      "best_score": float(tuner.oracle.get_best_trials(1)[0].score),
                      "reloaded_accuracy": accuracy}))
""")


@pytest.mark.long
def test_a_search_killed_mid_trial_resumes_with_make_hypermodel(tmp_path):
    script = tmp_path / "resume.py"
    script.write_text(RESUME_SCRIPT)

    def run(kill_in_fit):
        return subprocess.run([sys.executable, str(script), str(tmp_path / "d"), str(kill_in_fit)],
                              capture_output=True, text=True, timeout=300)

    killed = run(3)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    resumed = run(0)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    out = json.loads(resumed.stdout.strip().splitlines()[-1])
    # Every grid point once, all completed: the killed trial was run again.
    assert out["trials"] == [[8, 32, "COMPLETED"], [8, 64, "COMPLETED"], [16, 32, "COMPLETED"],
                             [16, 64, "COMPLETED"]]
    # The best trial's checkpoint loads and scores what the search recorded.
    assert out["reloaded_accuracy"] == pytest.approx(out["best_score"], abs=1e-6)


# -- a search in which every trial failed --------------------------------------------------
class SafeFunctionTuner(TrainkitTunerMixin, FunctionTuner):
    pass


def failing(values):
    raise RuntimeError(f"boom at x={values['x']:.3f}")


@pytest.mark.parametrize("max_trials", [1, 2, 5])
def test_every_trial_failed_raises_the_first_trials_error(tmp_path, max_trials):
    space = keras_tuner.HyperParameters()
    space.Float("x", 0.0, 1.0)
    oracle = keras_tuner.oracles.RandomSearchOracle(
        objective=keras_tuner.Objective("score", "min"), max_trials=max_trials, seed=0, hyperparameters=space)
    tuner = SafeFunctionTuner(failing, oracle=oracle, directory=str(tmp_path), project_name="f", overwrite=True)
    with pytest.raises(SearchFailedError, match=r"All \d trials of the search failed") as info:
        tuner.search(verbose=0)
    first = tuner.oracle.trials[tuner.oracle.start_order[0]]
    assert f"boom at x={first.hyperparameters.values['x']:.3f}" in str(info.value)
    assert info.value.trial_id == first.trial_id
    # Keras Tuner alone ends quietly below its 3 consecutive failures.
    if max_trials < 3:
        oracle = keras_tuner.oracles.RandomSearchOracle(
            objective=keras_tuner.Objective("score", "min"), max_trials=max_trials, seed=0, hyperparameters=space)
        plain = FunctionTuner(failing, oracle=oracle, directory=str(tmp_path), project_name="k", overwrite=True)
        plain.search(verbose=0)


def test_one_completed_trial_is_not_a_failed_search(tmp_path):
    space = keras_tuner.HyperParameters()
    space.Float("x", 0.0, 1.0)
    oracle = keras_tuner.oracles.RandomSearchOracle(
        objective=keras_tuner.Objective("score", "min"), max_trials=3, seed=0, hyperparameters=space)
    calls = []

    def fn(values):
        calls.append(1)
        if len(calls) != 2:
            raise RuntimeError("boom")
        return values["x"]

    tuner = SafeFunctionTuner(fn, oracle=oracle, directory=str(tmp_path), project_name="o", overwrite=True)
    tuner.search(verbose=0)
    assert [t.status for t in tuner.oracle.trials.values()].count("COMPLETED") == 1
