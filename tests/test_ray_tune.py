"""keras_trainkit.tuning.ray_tune: the search space as Ray Tune's, configs back to
Keras Tuner values, the define-by-run space of Ray's OptunaSearch, checkpoints
that continue exactly (in process, without Ray), bad input refused before any
trial, and real Ray runs: a SIGKILLed worker restarted from its checkpoint,
ASHA stopping trials early, population-based training's exploit at the cloned
update count, and a simulated two-node cluster."""

from __future__ import annotations

import gc
import json
import math
import os
import subprocess
import sys
import textwrap

import keras
import keras_tuner
import numpy as np
import pytest

ray = pytest.importorskip("ray")

import _ray_helpers  # noqa: E402
from _ray_helpers import (  # noqa: E402
    FakeSession,
    KillOnce,
    RateRecorder,
    closed_form_rate,
    read_epochs,
    read_rates,
)
from keras_tuner.errors import FatalValueError  # noqa: E402
from ray import tune  # noqa: E402

from keras_trainkit.data import load_digits  # noqa: E402
from keras_trainkit.tuning import make_hypermodel  # noqa: E402
from keras_trainkit.tuning import ray_tune as rt  # noqa: E402
from keras_trainkit.tuning._ray_space import declared_space, hyperparameters_for  # noqa: E402
from keras_trainkit.tuning._ray_trial import (  # noqa: E402
    TrialSpec,
    read_state,
    run_trial,
)

HERE = os.path.dirname(os.path.abspath(__file__))
FIXED = {"optimizer": "adam", "lr_schedule": "cosine", "cosine_alpha": 0.0, "warmup_fraction": 0.2,
         "batch_size": 32, "dropout": 0.0, "num_layers": 1, "units_0": 32, "l1": 0.0, "l2": 0.0,
         "activation": "relu"}


@pytest.fixture(scope="module")
def digits():
    (x, y), (xv, yv) = load_digits()
    return x, y, xv, yv


def fixed_hypermodel(epochs=3, **changes):
    return make_hypermodel((64,), 10, epochs=epochs, search_space={**FIXED, **changes})


def per_epoch(n, batch):
    return math.ceil(n / batch)


# =====================================================================================
# The search space
# =====================================================================================
class EveryKind(keras_tuner.HyperModel):
    """A Keras Tuner HyperModel declaring every kind of hyperparameter."""

    def build(self, hp):
        hp.Float("lin", 0.5, 2.0)
        hp.Float("log", 1e-4, 1e-1, sampling="log")
        hp.Float("quant", 0.0, 0.5, step=0.05)
        hp.Float("offset_grid", 0.01, 0.2, step=0.05)
        hp.Float("rev", 0.1, 1.0, sampling="reverse_log")
        hp.Float("mult", 1e-3, 1.0, step=10, sampling="log")
        hp.Int("int", 1, 4)
        hp.Int("int_step", 16, 100, step=16)
        hp.Int("int_offset", 3, 20, step=4)
        hp.Int("int_log", 2, 64, sampling="log")
        hp.Int("int_mult", 2, 64, step=2, sampling="log")
        hp.Choice("choice", ["a", "b", "c"])
        hp.Choice("ordered", [16, 32, 64])
        hp.Boolean("flag")
        hp.Fixed("fixed", 7)
        with hp.conditional_scope("choice", ["b"]):
            hp.Float("only_b", 0.0, 1.0)
        model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        model.compile("adam", "mse", metrics=["mae"])
        return model


def test_param_space_maps_every_kind_to_its_ray_domain():
    from ray.tune.search import sample

    space = rt.param_space(EveryKind())
    assert set(space) == {"lin", "log", "quant", "offset_grid", "rev.reflected", "mult", "int", "int_step",
                          "int_offset", "int_log", "int_mult", "choice", "ordered", "flag", "fixed", "only_b"}

    def kind(domain):
        sampler = domain.get_sampler()
        q = getattr(sampler, "q", None)
        inner = getattr(sampler, "sampler", sampler)
        return type(domain).__name__, type(inner).__name__.lstrip("_"), q, domain.lower, domain.upper

    assert kind(space["lin"]) == ("Float", "Uniform", None, 0.5, 2.0)
    assert kind(space["log"]) == ("Float", "LogUniform", None, 1e-4, 1e-1)
    assert kind(space["quant"]) == ("Float", "Uniform", 0.05, 0.0, 0.5)
    assert kind(space["rev.reflected"]) == ("Float", "LogUniform", None, 0.1, 1.0)
    assert kind(space["int"]) == ("Integer", "Uniform", None, 1, 5)  # upper bound exclusive
    assert kind(space["int_step"]) == ("Integer", "Uniform", 16, 16, 96)  # last grid point, inclusive
    assert kind(space["int_log"]) == ("Integer", "LogUniform", None, 2, 65)
    for name, values in [("offset_grid", [0.01, 0.06, 0.11, 0.16]), ("mult", [1e-3, 1e-2, 1e-1, 1.0]),
                         ("int_offset", [3, 7, 11, 15, 19]), ("int_mult", [2, 4, 8, 16, 32, 64]),
                         ("choice", ["a", "b", "c"]), ("ordered", [16, 32, 64]), ("flag", [False, True])]:
        assert isinstance(space[name], sample.Categorical), name
        np.testing.assert_allclose(space[name].categories, values) if name not in ("choice", "flag") else None
        if name in ("choice", "flag"):
            assert space[name].categories == values
    assert space["fixed"] == 7
    # Every sampled config is a valid Keras Tuner point: on the grid, within the range.
    rng = np.random.default_rng(0)
    declared = declared_space(EveryKind())
    for _ in range(200):
        config = {k: (v.sample(random_state=rng) if isinstance(v, sample.Domain) else v) for k, v in space.items()}
        values = hyperparameters_for(declared, config).values
        assert 0.5 <= values["lin"] <= 2.0 and 1e-4 <= values["log"] <= 0.1
        assert 0.0 <= values["quant"] <= 0.5 and math.isclose(values["quant"] / 0.05, round(values["quant"] / 0.05))
        assert 0.1 <= values["rev"] <= 1.0
        assert values["rev"] == pytest.approx(1.1 - config["rev.reflected"])
        assert values["int_step"] in range(16, 97, 16) and type(values["int_step"]) is int
        assert values["int"] in (1, 2, 3, 4) and 2 <= values["int_log"] <= 64
        assert ("only_b" in values) == (values["choice"] == "b")
        assert type(values["flag"]) is bool and values["fixed"] == 7


def test_param_space_of_make_hypermodel_is_pinned():
    space = rt.param_space(make_hypermodel((64,), 10))
    assert list(space) == list(rt.hyperparameters(make_hypermodel((64,), 10), {}).space[i].name
                               for i in range(len(space)))
    assert space["learning_rate"].lower == 1e-4 and space["learning_rate"].upper == 1e-1
    assert type(space["learning_rate"].get_sampler()).__name__.lstrip("_") == "LogUniform"
    assert space["batch_size"].categories == [16, 32, 64, 128]
    assert space["optimizer"].categories == ["adam", "adamw", "sgd", "rmsprop", "radam", "adabelief"]
    assert space["warmup_fraction"].get_sampler().q == 0.05 and space["warmup_fraction"].upper == 0.2
    assert space["units_0"].get_sampler().q == 16 and space["units_0"].upper == 512
    assert "sgd_momentum" in space and "units_3" in space  # conditional ones too (see search_alg)


def test_config_values_back_to_keras_tuner():
    hm = make_hypermodel((64,), 10)
    hp = rt.hyperparameters(hm, {"optimizer": "sgd", "sgd_momentum": np.float64(0.5), "num_layers": np.int64(2),
                                 "units_0": 64, "units_1": 32, "units_3": 512, "batch_size": np.int64(64),
                                 "lr_schedule": "step", "cosine_alpha": 0.1})
    v = hp.values
    assert v["optimizer"] == "sgd" and v["sgd_momentum"] == 0.5 and type(v["sgd_momentum"]) is float
    assert v["num_layers"] == 2 and type(v["num_layers"]) is int and type(v["batch_size"]) is int
    assert "units_3" not in v and "cosine_alpha" not in v  # inactive: left out
    assert v["step_count"] == 2 and v["learning_rate"] == 1e-3  # missing: the defaults
    # A define-by-run config's derived keys are fine; alone, they give the value.
    assert rt.hyperparameters(hm, {"batch_size.index": 3}).values["batch_size"] == 128
    # Numbers beyond the declared range are kept (PBT perturbs beyond it).
    assert rt.hyperparameters(hm, {"learning_rate": 0.5}).values["learning_rate"] == 0.5
    with pytest.raises(FatalValueError, match=r"config\['optimizer'\] must be one of .*Received: "
                                              r"config\['optimizer'\]='adm'"):
        rt.hyperparameters(hm, {"optimizer": "adm"})
    with pytest.raises(FatalValueError, match=r"config\['num_layers'\] must be an int"):
        rt.hyperparameters(hm, {"num_layers": 1.5})
    with pytest.raises(FatalValueError, match=r"no hyperparameter of the HyperModel: \['learning_rat'\]"):
        rt.hyperparameters(hm, {"learning_rat": 0.1})


def test_search_alg_samples_conditional_parameters_only_when_active(tmp_path):
    searcher = rt.search_alg(make_hypermodel((64,), 10), seed=0)
    assert searcher.metric == "val_accuracy" and searcher.mode == "max"
    hm = make_hypermodel((64,), 10)
    seen_sgd = seen_other = 0
    for i in range(30):
        config = searcher.suggest(f"t{i}")
        values = rt.hyperparameters(hm, config).values
        assert ("sgd_momentum" in config) == (config["optimizer"] == "sgd")
        assert {k for k in config if k.startswith("units_")} == {f"units_{j}" for j in range(config["num_layers"])}
        schedule_params = {"cosine": "cosine_alpha", "step": "step_gamma", "exponential": "exponential_decay_rate"}
        for schedule, param in schedule_params.items():
            assert (param in config) == (config["lr_schedule"] == schedule)
        assert config["batch_size"] == [16, 32, 64, 128][config["batch_size.index"]]
        assert values["batch_size"] == config["batch_size"]
        seen_sgd += config["optimizer"] == "sgd"
        seen_other += config["optimizer"] != "sgd"
        searcher.on_trial_complete(f"t{i}", {"val_accuracy": float(i % 7) / 7, "training_iteration": 1})
    assert seen_sgd and seen_other
    # Seeded: the same suggestions; and Ray can checkpoint the searcher (it pickles the space).
    a, b = rt.search_alg(hm, seed=3), rt.search_alg(hm, seed=3)
    assert [a.suggest(f"x{i}") for i in range(3)] == [b.suggest(f"x{i}") for i in range(3)]
    path = str(tmp_path / "searcher.pkl")
    a.save(path)
    c = rt.search_alg(hm, seed=99)
    c.restore(path)
    assert [c.suggest(f"y{i}") for i in range(3)] == [a.suggest(f"y{i}") for i in range(3)]


# =====================================================================================
# Bad input, refused before Ray starts any trial
# =====================================================================================
def test_bad_input_is_refused_before_any_trial(digits):
    x, y, xv, yv = digits
    hm = make_hypermodel((64,), 10, epochs=2)
    with pytest.raises(FatalValueError, match=r"must be a keras_tuner.HyperModel.*Wrap a build function"):
        rt.trainable(lambda hp: None, x, y)
    with pytest.raises(FatalValueError, match="must be a keras_tuner.HyperModel"):
        rt.param_space(object())
    with pytest.raises(FatalValueError, match=r"`epochs` is needed.*trainable\(\.\.\., epochs=N\)"):
        rt.trainable(EveryKind(), x, y)
    with pytest.raises(FatalValueError, match=r"Argument `epochs` must be .*Received: epochs=0"):
        rt.trainable(hm, x, y, validation_data=(xv, yv), epochs=0)
    with pytest.raises(FatalValueError, match="needs validation data"):
        rt.trainable(hm, x, y)
    with pytest.raises(FatalValueError, match="`initial_epoch` cannot be passed"):
        rt.trainable(hm, x, y, validation_data=(xv, yv), initial_epoch=1)
    with pytest.raises(FatalValueError, match="tuned as the hyperparameter 'batch_size'"):
        rt.trainable(hm, x, y, validation_data=(xv, yv), batch_size=64)
    import tensorflow as tf

    with pytest.raises(FatalValueError, match="Ray cannot send to its worker processes"):
        rt.trainable(hm, tf.data.Dataset.from_tensor_slices((x, y)), validation_data=(xv, yv))
    # The metric Ray optimizes: checked against what the model logs.
    with pytest.raises(FatalValueError, match=r"'val_acc', which the model does not log: it logs loss, "
                                              r"accuracy, val_loss, val_accuracy"):
        rt.tune_config(hm, metric="val_acc", num_samples=2)
    with pytest.raises(FatalValueError, match=r"'val_acc', which the model does not log"):
        rt.tune_config(hm, scheduler=tune.schedulers.ASHAScheduler(metric="val_acc", mode="max"))
    with pytest.raises(FatalValueError, match=r"`mode` is 'min' but 'val_accuracy' is better high: pass mode='max'"):
        rt.tune_config(hm, metric="val_accuracy", mode="min")
    with pytest.raises(FatalValueError, match=r"'val_f1', which the model does not log"):
        rt.search_alg(hm, metric="val_f1")
    with pytest.raises(FatalValueError, match=r"'mae2', which the model does not log: it logs loss, mae"):
        rt.tune_config(EveryKind(), metric="mae2", mode="min")
    import optuna

    with pytest.raises(FatalValueError, match="Pass `seed` or a seeded `sampler`, not both"):
        rt.search_alg(hm, optuna.samplers.RandomSampler(), seed=1)
    config = rt.tune_config(hm, num_samples=3)
    assert (config.metric, config.mode, config.num_samples, config.reuse_actors) == ("val_accuracy", "max", 3, True)
    assert rt.tune_config(EveryKind(), metric="val_mae").mode == "min"
    scheduler = tune.schedulers.ASHAScheduler(metric="val_loss", mode="min")
    assert rt.tune_config(hm, scheduler=scheduler).metric is None  # the scheduler's own, checked
    # A searcher's own metric is checked, and the TuneConfig still gives the scheduler one.
    assert rt.tune_config(hm, search_alg=rt.search_alg(hm), scheduler=tune.schedulers.ASHAScheduler()).metric \
        == "val_accuracy"


def test_import_is_light_and_ray_is_an_extra():
    code = textwrap.dedent("""
        import sys
        import keras_trainkit, keras_trainkit.tuning
        import keras_trainkit.tuning.ray_tune as rt
        assert "ray" not in sys.modules, "import keras_trainkit imported ray"
        sys.modules["ray"] = None  # as if Ray were not installed
        try:
            rt.param_space(None)
        except ImportError as e:
            print("IMPORT-ERROR:", e)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert out.returncode == 0, out.stderr
    assert 'IMPORT-ERROR: keras_trainkit.tuning.ray_tune needs Ray Tune: pip install "keras_trainkit[ray]"' in out.stdout


# =====================================================================================
# One trial in process (a session standing in for Ray's)
# =====================================================================================
def _run(tmp_path, tag, hm, data, config=None, restore=None, callbacks=(), epochs=None, **fit_kwargs):
    x, y, xv, yv = data
    d = tmp_path / tag
    d.mkdir()
    spec = TrialSpec(hm, declared_space(hm), x, y, (xv, yv), epochs or hm.epochs,
                     {"shuffle": False, **fit_kwargs}, [RateRecorder(d, tag), *callbacks])
    session = FakeSession(d / "session", restore)
    keras.utils.set_random_seed(0)
    run_trial(spec, dict(config or {}), session)
    return session, read_rates(d)


def test_restored_trial_continues_exactly(tmp_path, digits):
    """Killed after an epoch and restored: the same per-update rates (closed form),
    the same metrics, and EarlyStopping's patience and best epoch carried over."""
    x, y, xv, yv = digits
    data = (x[:96], y[:96], xv[:200], yv[:200])
    hm = make_hypermodel((64,), 10, epochs=10, objective="val_loss", early_stopping_patience=2,
                         search_space={**FIXED, "units_0": 64, "batch_size": 16, "learning_rate": 0.03})
    whole, rates = _run(tmp_path, "whole", hm, data)
    metrics = [m for m, _ in whole.reports]
    n = per_epoch(96, 16)
    total = 10 * n
    t = np.array([r["t"] for r in rates])
    np.testing.assert_array_equal(t, np.arange(len(metrics) * n))
    np.testing.assert_allclose([r["lr"] for r in rates], closed_form_rate(t, 0.03, total, round(0.2 * total)),
                               rtol=1e-6)
    # EarlyStopping stopped it before the last epoch, after a first epoch without improvement.
    stop = len(metrics)
    assert stop < 10
    assert metrics[-1]["best_epoch"] == metrics[-2]["best_epoch"] == metrics[-3]["best_epoch"] == stop - 3
    checkpoint = whole.reports[stop - 2][1]  # wait == 1 there
    state = read_state(checkpoint)
    assert state["epoch"] == stop - 1 and state["iterations"] == (stop - 1) * n
    assert state["early_stopping"] == ["early_stopping_0"]

    resumed, rates2 = _run(tmp_path, "resumed", hm, data, restore=checkpoint)
    assert [m for m, _ in resumed.reports] == metrics[stop - 1:]  # one epoch, then stopped: patience kept
    t2 = np.array([r["t"] for r in rates2])
    np.testing.assert_array_equal(t2, np.arange((stop - 1) * n, stop * n))
    np.testing.assert_array_equal([r["lr"] for r in rates2], [r["lr"] for r in rates][(stop - 1) * n:])
    # The best epoch's weights kept by EarlyStopping are the same file content.
    for a, b in [(whole.reports[-1][1], resumed.reports[-1][1])]:
        name = f"early_stopping_0/early_stopping_best-{stop - 3:06d}.npz"
        with np.load(os.path.join(a, name)) as wa, np.load(os.path.join(b, name)) as wb:
            assert all(np.array_equal(wa[k], wb[k]) for k in wa.files)



def test_new_learning_rate_rescales_the_restored_base(tmp_path, digits):
    """PBT's explore step: the schedule continues at the cloned update count with
    base restored * new / old (a rescaling the clone carried is kept)."""
    x, y, xv, yv = digits
    data = (x[:320], y[:320], xv[:100], yv[:100])
    hm = fixed_hypermodel(epochs=3, learning_rate={"min_value": 1e-4, "max_value": 0.1})
    n = per_epoch(320, 32)
    total = 3 * n
    warmup = round(0.2 * total)

    class Halve(keras.callbacks.Callback):  # ReduceLROnPlateau's way: sets optimizer.learning_rate
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                self.model.optimizer.learning_rate = 0.5 * float(self.model.optimizer.learning_rate)

    donor, rates = _run(tmp_path, "donor", hm, data, {"learning_rate": 0.01}, callbacks=[Halve()])
    t = np.array([r["t"] for r in rates])
    expected = closed_form_rate(t, 0.01, total, warmup) * np.where(t >= 2 * n, 0.5, 1.0)
    np.testing.assert_allclose([r["lr"] for r in rates], expected, rtol=1e-5)

    # Restored after the halving (kept in the rate variable): the new base is 0.5 * 0.012.
    clone, rates3 = _run(tmp_path, "clone", hm, data, {"learning_rate": 0.012}, restore=donor.reports[1][1])
    t3 = np.array([r["t"] for r in rates3])
    np.testing.assert_array_equal(t3, np.arange(2 * n, total))  # at the donor's update count
    np.testing.assert_allclose([r["lr"] for r in rates3], 0.5 * closed_form_rate(t3, 0.012, total, warmup),
                               rtol=1e-5)
    assert [m["epoch"] for m, _ in clone.reports] == [3]


def test_checkpoint_of_another_architecture_is_refused(tmp_path, digits):
    x, y, xv, yv = digits
    data = (x[:64], y[:64], xv[:64], yv[:64])
    hm = fixed_hypermodel(epochs=2, units_0=[32, 64])
    donor, _ = _run(tmp_path, "donor", hm, data, {"units_0": 32})
    with pytest.raises(ValueError, match=r"hyperparameters differ in: units_0: 32 -> 64.*other weights"):
        _run(tmp_path, "clone", hm, data, {"units_0": 64}, restore=donor.reports[0][1])


def test_keras_tuner_hypermodel_and_load_model(tmp_path, digits):
    """A plain Keras Tuner HyperModel runs and resumes too; load_model rebuilds
    the best epoch's model from a result."""
    x, y, xv, yv = digits

    class Plain(keras_tuner.HyperModel):
        def build(self, hp):
            model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(hp.Int("units", 8, 32, step=8),
                                                                             activation="relu"),
                                      keras.layers.Dense(10, activation="softmax")])
            model.compile(keras.optimizers.Adam(hp.Float("learning_rate", 1e-3, 1e-1, sampling="log")),
                          "sparse_categorical_crossentropy", metrics=["accuracy"])
            return model

    data = (x[:128], y[:128], xv[:64], yv[:64])
    plain = Plain()
    whole, _ = _run(tmp_path, "plain", plain, data, {"units": 16, "learning_rate": 0.01}, epochs=3)
    resumed, rates = _run(tmp_path, "plain2", plain, data, {"units": 16, "learning_rate": 0.01},
                          restore=whole.reports[0][1], epochs=3)
    assert [m for m, _ in resumed.reports] == [m for m, _ in whole.reports][1:]
    assert rates[0]["t"] == per_epoch(128, 32)

    hm = fixed_hypermodel(epochs=3, learning_rate=0.2)
    trial, _ = _run(tmp_path, "hm", hm, data)
    metrics = [m for m, _ in trial.reports]

    class Result:  # what load_model reads of a ray.tune.Result
        config = {}
        checkpoint = tune.Checkpoint.from_directory(trial.reports[-1][1])

    best = load_model_and_evaluate(hm, Result, data)
    assert best == pytest.approx(max(m["val_accuracy"] for m in metrics), abs=1e-6)
    last = load_model_and_evaluate(hm, Result, data, best_epoch=False)
    assert last == pytest.approx(metrics[-1]["val_accuracy"], abs=1e-6)


def load_model_and_evaluate(hm, result, data, **kwargs):
    model = rt.load_model(hm, result, **kwargs)
    return model.evaluate(data[2], data[3], verbose=0, return_dict=True)["accuracy"]


# =====================================================================================
# Real Ray runs
# =====================================================================================
@pytest.fixture(scope="module")
def ray_cluster():
    """One local Ray instance for the module (2 CPUs: 2 trials at a time)."""
    ray.cloudpickle.register_pickle_by_value(_ray_helpers)  # the workers unpickle its callbacks
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()
    gc.collect()


# Ray 2.60's driver leaves a read handle of a trial's progress.csv open after a
# restore; its ResourceWarning surfaces when the handle is collected. Collected
# in the test (gc.collect() below), so that it cannot land in another test.
ray_run = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


def _run_config(tmp_path, **kwargs):
    return tune.RunConfig(storage_path=str(tmp_path / "runs"), verbose=0, **kwargs)


def _check_history(result, last):
    """Ray's record of a trial's reports: no epoch twice, in order, up to the last.

    Ray 2.60's driver copies a trial's `result.json` back from storage when the
    trial restarts (`LoggerCallback._restore_from_remote`) and can so drop rows
    logged since its last sync; it never duplicates one.
    """
    history = result.metrics_dataframe
    epochs = list(history["epoch"])
    assert epochs == sorted(set(epochs)) and epochs[-1] == last
    assert list(history["training_iteration"]) == epochs


def _by_trial(records):
    out = {}
    for r in records:
        out.setdefault(r["trial"], []).append(r)
    return out


@ray_run
def test_asha_stops_bad_trials_early_and_a_killed_worker_restarts(ray_cluster, tmp_path, digits):
    """ASHA stops a bad trial at a rung and the search finds >= 0.9 on digits. One
    trial's worker is SIGKILLed in the middle of its third epoch: Ray restarts it
    (max_failures=1) from its second epoch's checkpoint, and it finishes with every
    epoch reported once and the per-update rates of an uninterrupted run."""
    from ray.tune.search import BasicVariantGenerator

    x, y, xv, yv = digits
    n = per_epoch(len(x), 32)
    total, warmup = 4 * n, round(0.2 * 4 * n)
    hm = make_hypermodel((64,), 10, epochs=4, early_stopping_patience=None, search_space={
        **FIXED, "units_0": 64, "learning_rate": {"min_value": 1e-5, "max_value": 0.1}})
    rates, marker = tmp_path / "rates", tmp_path / "killed"
    rates.mkdir()
    points = [{"learning_rate": lr} for lr in (0.01, 1e-5, 0.003, 2e-5)]
    tuner = tune.Tuner(
        rt.trainable(hm, x, y, validation_data=(xv, yv),
                     callbacks=[RateRecorder(rates), KillOnce(marker, epoch=2, batch=4)]),
        param_space=rt.param_space(hm),
        tune_config=rt.tune_config(
            hm, num_samples=4, reuse_actors=True,
            search_alg=BasicVariantGenerator(points_to_evaluate=points, random_state=0),
            scheduler=tune.schedulers.ASHAScheduler(max_t=4, grace_period=1, reduction_factor=2)),
        run_config=_run_config(tmp_path, failure_config=tune.FailureConfig(max_failures=1)))
    grid = tuner.fit()
    gc.collect()
    assert not grid.errors
    epochs = {r.config["learning_rate"]: r.metrics["epoch"] for r in grid}
    assert epochs[2e-5] < 4  # stopped at a rung, after 1 or 2 of its 4 epochs
    assert sum(epochs.values()) < 16
    best = grid.get_best_result()
    assert best.metrics["val_accuracy"] >= 0.9 and best.config["learning_rate"] in (0.01, 0.003)
    assert best.metrics["epoch"] == 4

    # The killed trial.
    assert marker.exists()
    killer = int(marker.read_text())
    records = _by_trial(read_rates(rates))
    killed = [r for r in grid if any(rec["pid"] == killer for rec in records[r.metrics["trial_id"]])]
    assert len(killed) == 1
    killed = killed[0]
    mine = records[killed.metrics["trial_id"]]
    epochs_reported = [(r["epoch"], r["pid"]) for r in read_epochs(rates) if r["trial"] == killed.metrics["trial_id"]]
    restarted = epochs_reported[-1][1]
    assert epochs_reported == [(1, killer), (2, killer), (3, restarted), (4, restarted)] and restarted != killer
    _check_history(killed, last=4)
    assert [r["t"] for r in mine if r["pid"] == killer] == list(range(2 * n + 5))  # the 5th update of epoch 3
    assert [r["t"] for r in mine if r["pid"] == restarted] == list(range(2 * n, 4 * n))  # from epoch 2's end
    t = np.array([r["t"] for r in mine])
    np.testing.assert_allclose([r["lr"] for r in mine],
                               closed_form_rate(t, killed.config["learning_rate"], total, warmup),
                               rtol=1e-5, atol=1e-10)


@ray_run
def test_pbt_exploit_continues_at_the_cloned_update_count(ray_cluster, tmp_path, digits):
    """The worse trial clones the better one's checkpoint after epoch 2 with a
    perturbed learning rate: its next update is at the donor's update count, at
    the rate of the schedule with the new base."""
    x, y, xv, yv = digits
    n = per_epoch(320, 32)
    total, warmup = 3 * n, round(0.6 * n)
    hm = fixed_hypermodel(epochs=3, learning_rate={"min_value": 1e-6, "max_value": 1.0})
    rates = tmp_path / "rates"
    rates.mkdir()
    pbt = tune.schedulers.PopulationBasedTraining(
        time_attr="training_iteration", perturbation_interval=2, quantile_fraction=0.5,
        resample_probability=0.0, hyperparam_mutations={"learning_rate": tune.loguniform(1e-4, 0.1)},
        synch=True)
    tuner = tune.Tuner(
        rt.trainable(hm, x[:320], y[:320], validation_data=(xv, yv), shuffle=False,
                     callbacks=[RateRecorder(rates)]),
        param_space={"learning_rate": tune.grid_search([0.01, 1e-5])},
        tune_config=rt.tune_config(hm, scheduler=pbt, reuse_actors=True),
        run_config=_run_config(tmp_path))
    grid = tuner.fit()
    gc.collect()
    assert not grid.errors
    donor, clone = sorted(grid, key=lambda r: r.config["learning_rate"] == 0.01, reverse=True)
    assert donor.config["learning_rate"] == 0.01
    factor = clone.config["learning_rate"] / 0.01
    assert factor == pytest.approx(0.8) or factor == pytest.approx(1.2)
    # Each epoch reported once: what the trial reported, and what Ray's history keeps of it.
    reported = [r["epoch"] for r in read_epochs(rates) if r["trial"] == clone.metrics["trial_id"]]
    assert reported == [1, 2, 3]
    _check_history(clone, last=3)
    records = _by_trial(read_rates(rates))
    before = [r for r in records[clone.metrics["trial_id"]] if r["t"] < 2 * n]
    after = [r for r in records[clone.metrics["trial_id"]] if r["t"] >= 2 * n]
    assert [r["t"] for r in before] == list(range(2 * n)) and [r["t"] for r in after] == list(range(2 * n, 3 * n))
    t0, t1 = np.arange(2 * n), np.arange(2 * n, 3 * n)
    np.testing.assert_allclose([r["lr"] for r in before], closed_form_rate(t0, 1e-5, total, warmup), rtol=1e-5)
    np.testing.assert_allclose([r["lr"] for r in after], closed_form_rate(t1, 0.01 * factor, total, warmup),
                               rtol=1e-5)
    # The donor, paused and resumed by synchronous PBT, continued exactly too.
    d = records[donor.metrics["trial_id"]]
    td = np.array([r["t"] for r in d])
    np.testing.assert_array_equal(np.unique(td), np.arange(3 * n))
    np.testing.assert_allclose([r["lr"] for r in d], closed_form_rate(td, 0.01, total, warmup), rtol=1e-5)


@pytest.mark.long
def test_search_on_a_two_node_cluster(tmp_path):
    """Ray's simulated cluster (a head and a worker node, one CPU each) in its own
    process: the two trials of a define-by-run search (search_alg) run one on each
    node and finish; conditional hyperparameters appear only where active."""
    out = subprocess.run([sys.executable, os.path.join(HERE, "_ray_cluster_worker.py"), str(tmp_path)],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["errors"] == [] and report["epochs"] == [2, 2]
    assert len(report["nodes"]) == 2
    assert sorted(report["trial_nodes"].values()) == report["nodes"]  # one trial on each node
    for config in report["configs"]:
        assert ("units_1" in config) == (config["num_layers"] == 2)
        assert ("sgd_momentum" in config) == (config["optimizer"] == "sgd")


@pytest.mark.long
def test_example_script_runs(tmp_path):
    script = os.path.join(os.path.dirname(HERE), "examples", "tune_digits_ray.py")
    out = subprocess.run([sys.executable, script, "--trials", "2", "--epochs", "2", "--optuna",
                          "--storage", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    best = float(out.stdout.split("best val_accuracy ")[1].split()[0])
    reloaded = float(out.stdout.split("reloaded best model: val_accuracy ")[1].split()[0])
    assert 0.1 < best <= 1 and reloaded >= best - 1e-4  # the best epoch kept by EarlyStopping
