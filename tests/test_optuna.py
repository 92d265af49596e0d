"""OptunaOracle / OptunaSearch in one process: study agreement, samplers, pruning on real
Keras fits, multi-objective Pareto front, importances, resume reconciliation, bad input."""

import json
import os
import warnings

import keras
import keras_tuner
import pytest

optuna = pytest.importorskip("optuna")

from _optuna_toys import EpochTuner, check_agreement, objective  # noqa: E402
from _tuning_toys import branin_objective, branin_space, hartmann6_space  # noqa: E402

from keras_trainkit.data import load_digits  # noqa: E402
from keras_trainkit.tuning import OptunaOracle, OptunaSearch, make_hypermodel  # noqa: E402
from keras_trainkit.tuning._optuna import ORPHAN_KEY, SURPLUS_KEY, TAG_KEY  # noqa: E402

TS = optuna.trial.TrialState


@pytest.fixture(autouse=True)
def _quiet_optuna():
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    yield
    optuna.logging.set_verbosity(level)


def branin_tuner(tmp_path, name="p", max_trials=12, **kwargs):
    kwargs.setdefault("hyperparameters", branin_space())
    tuner = EpochTuner(lambda v, e: branin_objective(v), objective=objective(), max_trials=max_trials,
                       directory=str(tmp_path), project_name=name, **kwargs)
    tuner.oracle.verbose = 0
    return tuner


# -- the study and Keras Tuner agree ----------------------------------------------------------
def test_every_trial_is_a_trial_of_the_study(tmp_path):
    tuner = branin_tuner(tmp_path, seed=0, overwrite=True)
    assert isinstance(tuner.oracle.sampler, optuna.samplers.TPESampler)
    assert isinstance(tuner.oracle.pruner, optuna.pruners.NopPruner)
    tuner.search(verbose=0)
    study = tuner.oracle.study
    assert isinstance(study, optuna.Study) and study.study_name == "p"
    assert study.directions == [optuna.study.StudyDirection.MINIMIZE]
    assert [t.state for t in study.trials] == [TS.COMPLETE] * 12
    by_id = check_agreement(tuner)
    assert sorted(by_id) == [f"{i:02d}" for i in range(12)]  # Keras Tuner id = Optuna number
    best = tuner.oracle.get_best_trials(1)[0]
    assert by_id[best.trial_id].number == study.best_trial.number
    assert best.score == min(branin_objective(t.hyperparameters.values) for t in tuner.oracle.trials.values())
    # The default storage: Optuna's journal file in the project directory, read by a fresh process.
    journal = tmp_path / "p" / "optuna.journal"
    again = optuna.load_study(study_name="p", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(journal))))
    assert [t.params for t in again.trials] == [t.params for t in study.trials]
    assert tuner.oracle.remaining_trials() == 0
    with open(tmp_path / "p" / "oracle.json") as f:
        assert json.load(f)["optuna"]["numbers"] == {i: t.number for i, t in by_id.items()}


def test_seed_reproduces_the_search_and_zero_is_a_seed(tmp_path):
    def values(seed, name):
        tuner = branin_tuner(tmp_path, name=name, seed=seed, max_trials=6)
        tuner.search(verbose=0)
        return [tuner.oracle.trials[t].hyperparameters.values for t in sorted(tuner.oracle.trials)]

    assert values(0, "a") == values(0, "b")
    assert values(0, "a") != values(1, "c")


def test_cmaes_sampler_samples_relatively(tmp_path):
    pytest.importorskip("cmaes")
    cma = optuna.samplers.CmaEsSampler(seed=0, n_startup_trials=3)
    tuner = EpochTuner(lambda v, e: branin_objective(v), objective=objective(), max_trials=8, sampler=cma,
                       hyperparameters=branin_space(), directory=str(tmp_path), project_name="cma")
    tuner.search(verbose=0)
    trials = tuner.oracle.study.trials
    assert all(t.state == TS.COMPLETE for t in trials)
    # CMA-ES stores its generation on the trials it sampled itself (after the random start-up).
    assert any(any(k.startswith("cma:") for k in t.system_attrs) for t in trials[3:])
    assert not any(any(k.startswith("cma:") for k in t.system_attrs) for t in trials[:3])
    check_agreement(tuner)


@pytest.mark.long
def test_gp_sampler_runs_on_torch(tmp_path):
    pytest.importorskip("torch")  # Optuna's GPSampler runs on torch
    gp = optuna.samplers.GPSampler(seed=0, n_startup_trials=3)
    tuner = EpochTuner(lambda v, e: branin_objective(v), objective=objective(), max_trials=5, sampler=gp,
                       hyperparameters=branin_space(), directory=str(tmp_path), project_name="gp")
    tuner.search(verbose=0)
    assert [t.state for t in tuner.oracle.study.trials] == [TS.COMPLETE] * 5
    check_agreement(tuner)


# -- pruning on real Keras fits -----------------------------------------------------------------
GOOD, BAD = 0.03, 1e-7
EPOCHS = 2


def tiny_model(hp):
    lr = hp.Choice("lr", [GOOD, BAD], ordered=False)
    hp.Int("units", 8, 16, step=8)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(hp.get("units"), activation="relu"),
                              keras.layers.Dense(10, activation="softmax")])
    model.compile(optimizer=keras.optimizers.Adam(lr), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


class ValAccuracyLog(keras.callbacks.Callback):
    """The val_accuracy of every epoch of every fit (shared across Keras Tuner's deep copies)."""

    def __init__(self):
        super().__init__()
        self.fits = []

    def __deepcopy__(self, memo):
        return self

    def on_train_begin(self, logs=None):
        self.fits.append([])

    def on_epoch_end(self, epoch, logs=None):
        self.fits[-1].append(float(logs["val_accuracy"]))


@pytest.fixture(scope="module")
def digits_small():
    (x, y), (xv, yv) = load_digits()
    return (x[:400], y[:400]), (xv[:200], yv[:200])


@pytest.mark.parametrize("pruner,lrs", [
    (lambda: optuna.pruners.MedianPruner(n_startup_trials=2), [GOOD, GOOD, BAD]),
    pytest.param(lambda: optuna.pruners.PercentilePruner(40.0, n_startup_trials=2), [GOOD, GOOD, BAD],
                 marks=pytest.mark.long),
    pytest.param(lambda: optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=2),
                 [GOOD, BAD, BAD], marks=pytest.mark.long),
    # Hyperband puts trials 2 and 3 of study "p" in its aggressive bracket (crc32 of name and number).
    pytest.param(lambda: optuna.pruners.HyperbandPruner(min_resource=1, max_resource=EPOCHS, reduction_factor=3),
                 [GOOD, GOOD, GOOD, BAD], marks=pytest.mark.long),
], ids=["median", "percentile", "successive_halving", "hyperband"])
def test_pruners_stop_keras_fits_at_the_epoch(tmp_path, digits_small, pruner, lrs):
    (x, y), (xv, yv) = digits_small
    keras.utils.set_random_seed(0)
    tuner = OptunaSearch(tiny_model, objective="val_accuracy", max_trials=len(lrs), pruner=pruner(), seed=0,
                         directory=str(tmp_path), project_name="p")
    for lr in lrs:  # the order of good and bad configurations is fixed
        tuner.oracle.study.enqueue_trial({"lr": lr, "units": 16})
    log = ValAccuracyLog()
    tuner.search(x, y, validation_data=(xv, yv), epochs=EPOCHS, batch_size=64, callbacks=[log], verbose=0)
    by_id = check_agreement(tuner)
    assert len(log.fits) == len(lrs)
    pruned = []
    for (trial_id, ft), epochs in zip(sorted(by_id.items()), log.fits):
        # The study received every epoch's val_accuracy, exactly as Keras logged it, and
        # nothing after the epoch the pruner stopped: the fit really stopped there.
        assert ft.intermediate_values == dict(enumerate(epochs))
        if ft.state == TS.PRUNED:
            pruned.append(ft.params["lr"])
            assert len(epochs) - 1 == tuner.oracle._pruned[trial_id] and len(epochs) <= EPOCHS
        else:
            assert len(epochs) == EPOCHS
            assert ft.value == pytest.approx(max(epochs))  # Keras Tuner's score: the best epoch
    assert BAD in pruned  # an untrainable learning rate is pruned ...
    assert pruned.count(BAD) >= 1 and all(lr == BAD for lr in pruned[:1])
    best = tuner.oracle.get_best_trials(1)[0]  # ... and a pruned trial is never the best
    assert best.trial_id not in tuner.oracle._pruned
    assert by_id[best.trial_id].number == tuner.oracle.study.best_trial.number


def test_a_rerun_trial_keeps_its_first_reports_without_warning(tmp_path):
    tuner = EpochTuner(lambda v, e: v["x1"] + e, epochs=3, objective=objective(), max_trials=1,
                       pruner=optuna.pruners.MedianPruner(), hyperparameters=branin_space(),
                       directory=str(tmp_path), project_name="p")
    tuner.search(verbose=0)
    oracle = tuner.oracle
    trial_id = "0"
    first = dict(oracle.study.trials[0].intermediate_values)
    # A fresh oracle (a restarted process) receives step 1 again: kept, no "already reported" warning.
    fresh = OptunaOracle(objective=objective(), max_trials=1, pruner=optuna.pruners.MedianPruner())
    fresh._set_project_dir(str(tmp_path), "p")
    fresh.reload()
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # Optuna's "already reported" warning
        response = fresh.update_trial(trial_id, {"score": 99.0, "keras_trainkit.optuna.report": 1.0}, step=1)
    assert response.status == "RUNNING"
    assert dict(fresh.study.trials[0].intermediate_values) == first


# -- multi-objective ----------------------------------------------------------------------------
def test_multi_objective_pareto_front_is_the_non_dominated_set(tmp_path):
    space = keras_tuner.HyperParameters()
    space.Float("x", 0.0, 1.0)
    space.Float("y", 0.0, 1.0)
    # Minimize a, maximize b: a = x, b = y - (x - 0.5) ** 2 conflict along x.
    fn = lambda v, e: {"a": v["x"], "b": v["y"] * v["x"]}  # noqa: E731
    tuner = EpochTuner(fn, objective=[objective("a", "min"), objective("b", "max")], max_trials=16, seed=0,
                       hyperparameters=space, directory=str(tmp_path), project_name="mo")
    tuner.search(verbose=0)
    assert isinstance(tuner.oracle.sampler, optuna.samplers.NSGAIISampler)
    assert tuner.oracle.study.directions == [optuna.study.StudyDirection.MINIMIZE,
                                             optuna.study.StudyDirection.MAXIMIZE]
    check_agreement(tuner)
    points = {t.trial_id: (t.hyperparameters.values["x"], t.hyperparameters.values["y"] * t.hyperparameters.values["x"])
              for t in tuner.oracle.trials.values()}
    # Independent reference: brute-force dominance (a smaller-or-equal, b larger-or-equal, one strictly).
    front = {i for i, (a, b) in points.items()
             if not any(a2 <= a and b2 >= b and (a2, b2) != (a, b) for a2, b2 in points.values())}
    result = tuner.pareto_front()
    assert {p.trial_id for p in result} == front and len(front) >= 2
    for p in result:
        assert p.values == {"a": points[p.trial_id][0], "b": points[p.trial_id][1]}
        assert p.hyperparameters == tuner.oracle.trials[p.trial_id].hyperparameters.values


@pytest.mark.long
def test_multi_objective_digits_accuracy_against_model_size(tmp_path, digits_small):
    (x, y), (xv, yv) = digits_small

    class ModelSize(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            logs["model_size"] = float(self.model.count_params())

    def build(hp):
        model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(hp.Int("units", 4, 64, sampling="log"),
                                                                         activation="relu"),
                                  keras.layers.Dense(10, activation="softmax")])
        model.compile(optimizer=keras.optimizers.Adam(0.03), loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"])
        return model

    tuner = OptunaSearch(build, objective=[keras_tuner.Objective("val_accuracy", "max"),
                                           keras_tuner.Objective("model_size", "min")],
                         max_trials=4, seed=0, directory=str(tmp_path), project_name="mo")
    tuner.search(x, y, validation_data=(xv, yv), epochs=1, batch_size=64, callbacks=[ModelSize()], verbose=0)
    check_agreement(tuner)
    front = tuner.pareto_front()
    for p in front:
        assert p.values["model_size"] == 64 * p.hyperparameters["units"] + p.hyperparameters["units"] + \
            10 * p.hyperparameters["units"] + 10
    # The smallest model size is always on the front.
    sizes = [t.metrics.get_last_value("model_size") for t in tuner.oracle.trials.values()]
    assert min(p.values["model_size"] for p in front) == min(sizes)


# -- introspection ------------------------------------------------------------------------------
def test_param_importances_on_a_finished_digits_search(tmp_path, digits_small):
    (x, y), (xv, yv) = digits_small
    hypermodel = make_hypermodel((64,), 10, epochs=1, early_stopping_patience=None,
                                 search_space={"num_layers": 1, "lr_schedule": "constant", "warmup_fraction": 0.0})
    tuner = OptunaSearch(hypermodel, objective="val_accuracy", max_trials=4, seed=0,
                         directory=str(tmp_path), project_name="digits")
    tuner.search(x, y, validation_data=(xv, yv), verbose=0)
    study = tuner.oracle.study
    complete = [t for t in study.trials if t.state == TS.COMPLETE]
    assert len(complete) == 4
    importances = optuna.importance.get_param_importances(study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))
    # The parameters every trial has (conditional ones are left out).
    common = set.intersection(*(set(t.params) for t in complete))
    assert set(importances) == common and "learning_rate" in common and "sgd_momentum" not in common
    assert sum(importances.values()) == pytest.approx(1.0)
    import matplotlib

    matplotlib.use("Agg")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        ax = optuna.visualization.matplotlib.plot_optimization_history(study)
    assert len(ax.collections[0].get_offsets()) == 4


def test_importance_finds_the_only_parameter_that_matters(tmp_path):
    space = hartmann6_space()
    tuner = EpochTuner(lambda v, e: (v["x0"] - 0.3) ** 2 + 1e-4 * v["x1"], objective=objective(), max_trials=24,
                       sampler=optuna.samplers.RandomSampler(seed=0), hyperparameters=space,
                       directory=str(tmp_path), project_name="p")
    tuner.search(verbose=0)
    importances = optuna.importance.get_param_importances(
        tuner.oracle.study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))
    assert importances["x0"] > 0.8


# -- resume: the storage is the source of truth ------------------------------------------------
def test_resume_adopts_a_trial_the_project_never_saved(tmp_path):
    tuner = branin_tuner(tmp_path, seed=0, max_trials=5)
    tuner.search(verbose=0)
    oracle = tuner.oracle
    # A process dies right after ask(): the study holds a tagged, half-sampled trial.
    orphan = oracle.study.ask()
    orphan.set_user_attr(TAG_KEY, {"owner": oracle._owner, "trial_id": "5"})
    x1 = orphan.suggest_float("x1", -5.0, 10.0)
    # ... and an untagged one from a process killed between ask() and tagging.
    untagged = oracle.study.ask()
    resumed = branin_tuner(tmp_path, seed=0, max_trials=7)
    resumed.oracle.orphan_grace_seconds = 0.0
    resumed.search(verbose=0)
    trials = resumed.oracle.study.trials
    assert trials[orphan.number].state == TS.COMPLETE and trials[orphan.number].params["x1"] == x1
    assert resumed.oracle.trials["5"].hyperparameters.values["x1"] == x1
    assert trials[untagged.number].state == TS.FAIL and trials[untagged.number].user_attrs[ORPHAN_KEY]
    assert sorted(resumed.oracle.trials) == ["0", "1", "2", "3", "4", "5", "7"]  # 6 is the untagged
    check_agreement(resumed)
    assert resumed.oracle.remaining_trials() == 0


def test_resume_tells_a_result_optuna_did_not_hear(tmp_path, monkeypatch):
    tuner = branin_tuner(tmp_path, seed=0, max_trials=3)
    told = OptunaOracle._tell
    calls = []

    def lossy(self, trial):  # the process dies between Keras Tuner's save and Optuna's tell
        calls.append(trial.trial_id)
        if trial.trial_id != "1":
            told(self, trial)

    monkeypatch.setattr(OptunaOracle, "_tell", lossy)
    tuner.search(verbose=0)
    monkeypatch.setattr(OptunaOracle, "_tell", told)
    assert tuner.oracle.study.trials[1].state == TS.RUNNING
    resumed = branin_tuner(tmp_path, seed=0, max_trials=3)
    resumed.search(verbose=0)
    assert [t.state for t in resumed.oracle.study.trials] == [TS.COMPLETE] * 3
    check_agreement(resumed)


def test_surplus_trials_of_a_racing_worker_are_not_counted(tmp_path):
    tuner = branin_tuner(tmp_path, seed=0, max_trials=3)
    tuner.search(verbose=0)
    study = tuner.oracle.study
    # Another worker's trial past the budget (as a race leaves it) is failed and not counted.
    other = branin_tuner(tmp_path, name="other", study_name="p", storage=tuner.oracle._storage, max_trials=3)
    other.oracle._reconciled = True
    assert other.oracle.create_trial("tuner0").status == "STOPPED"
    assert len(study.trials) == 3
    other.oracle.max_trials = 4
    real_ask = other.oracle.study.ask

    def racing_ask(*args, **kwargs):  # another worker asks between our count and our ask
        real_ask().set_user_attr(TAG_KEY, {"owner": "someone", "trial_id": "3"})
        return real_ask(*args, **kwargs)

    other.oracle.study.ask = racing_ask
    assert other.oracle.create_trial("tuner0").status == "STOPPED"
    surplus = study.trials[-1]
    assert surplus.state == TS.FAIL and surplus.user_attrs[SURPLUS_KEY]


def test_an_in_memory_study_cannot_resume_and_says_so(tmp_path):
    memory = optuna.storages.InMemoryStorage()
    tuner = branin_tuner(tmp_path, storage=memory, max_trials=2)
    tuner.search(verbose=0)
    with pytest.raises(keras_tuner.errors.FatalValueError, match="not in the Optuna study"):
        branin_tuner(tmp_path, storage=optuna.storages.InMemoryStorage(), max_trials=4).search(verbose=0)


# -- bad input ----------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs,match", [
    (dict(sampler="tpe"), "`sampler`"),
    (dict(sampler=optuna.pruners.MedianPruner()), "`sampler`"),
    (dict(pruner=optuna.samplers.TPESampler()), "`pruner`"),
    (dict(pruner="median"), "`pruner`"),
    (dict(storage="sqlite:////nonexistent-dir/x/study.db"), "`storage` cannot be opened"),
    (dict(storage="nodialect://u:secret@host/db"), "`storage` cannot be opened"),
    (dict(storage=3), "`storage`"),
    (dict(seed=-1), "`seed`"),
    (dict(seed=1, sampler=optuna.samplers.TPESampler()), "`seed`"),
    (dict(max_trials=0), "`max_trials`"),
    (dict(study_name=""), "`study_name`"),
    (dict(objective=["val_loss", "val_accuracy"], pruner=optuna.pruners.MedianPruner()), "`pruner`"),
])
def test_bad_arguments_raise_before_the_first_trial(tmp_path, kwargs, match):
    kwargs = {"objective": "val_loss", **kwargs}
    with pytest.raises(keras_tuner.errors.FatalValueError, match=match) as info:
        OptunaOracle(**kwargs)
    assert "secret" not in str(info.value)  # passwords in URLs are not echoed
    with pytest.raises(ValueError, match=match):
        OptunaSearch(lambda hp: None, directory=str(tmp_path), **kwargs)
    assert not os.listdir(tmp_path)  # nothing written


def test_existing_study_with_other_directions_is_rejected(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    optuna.create_study(storage=url, study_name="s", direction="maximize")
    with pytest.raises(keras_tuner.errors.FatalValueError, match=r"optimizes \['maximize'\]"):
        OptunaOracle(objective="val_loss", storage=url, study_name="s")
    # With the default study name (the project name), before anything is written.
    with pytest.raises(keras_tuner.errors.FatalValueError, match="minimize"):
        OptunaSearch(lambda hp: None, objective="val_loss", storage=url, directory=str(tmp_path / "d"),
                     project_name="s")
    assert not (tmp_path / "d").exists()
    # Multi-objective against a single-objective study.
    with pytest.raises(keras_tuner.errors.FatalValueError, match="optimizes"):
        OptunaOracle(objective=["val_accuracy", "val_loss"], storage=url, study_name="s")
    OptunaOracle(objective="val_accuracy", storage=url, study_name="s")  # matching: fine


def test_pruning_needs_one_execution_per_trial(tmp_path):
    with pytest.raises(ValueError, match="executions_per_trial=1"):
        OptunaSearch(lambda hp: None, objective="val_loss", pruner=optuna.pruners.MedianPruner(),
                     executions_per_trial=2, directory=str(tmp_path))
    OptunaSearch(lambda hp: None, objective="val_loss", executions_per_trial=2, directory=str(tmp_path))


def test_without_optuna_the_error_names_the_extra(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "optuna", None)
    with pytest.raises(ImportError, match=r'pip install "keras_trainkit\[optuna\]"'):
        OptunaSearch(lambda hp: None, objective="val_loss")

