"""make_hypermodel: pinned search space, customisation, errors, every tuner, objectives, registry."""

import os

import keras
import keras_tuner
import numpy as np
import pytest

from keras_trainkit.data import load_digits
from keras_trainkit.tuning import GeneticSearch, make_hypermodel

DEFAULT_VALUES = {
    "learning_rate": 0.001, "optimizer": "adam", "batch_size": 32, "lr_schedule": "cosine",
    "cosine_alpha": 0.0, "warmup_fraction": 0.0, "l1": 1e-08, "l2": 1e-06, "dropout": 0.1,
    "activation": "relu", "num_layers": 2, "units_0": 128, "units_1": 128,
}


def test_default_search_space_is_pinned():
    hp = keras_tuner.HyperParameters()
    make_hypermodel((64,), 10).build(hp)
    assert hp.values == DEFAULT_VALUES
    names = [h.name for h in hp.space]
    assert names == [
        "learning_rate", "optimizer", "sgd_momentum", "batch_size", "lr_schedule", "cosine_alpha",
        "exponential_decay_rate", "step_gamma", "step_count", "polynomial_power",
        "inverse_time_decay_rate", "warmup_fraction", "l1", "l2", "dropout", "activation",
        "num_layers", "units_0", "units_1", "units_2", "units_3"]
    lr = hp._hps["learning_rate"][0]
    assert (lr.min_value, lr.max_value, lr.sampling) == (1e-4, 1e-1, "log")
    assert hp._hps["optimizer"][0].values == ["adam", "adamw", "sgd", "rmsprop", "radam", "adabelief"]
    assert hp._hps["batch_size"][0].values == [16, 32, 64, 128]
    warmup = hp._hps["warmup_fraction"][0]
    assert (warmup.min_value, warmup.max_value, warmup.step) == (0.0, 0.2, 0.05)
    image = keras_tuner.HyperParameters()
    make_hypermodel((8, 8, 1), 10).build(image)
    assert image.values == {**DEFAULT_VALUES, "conv_blocks": 2, "filters_0": 32, "filters_1": 32}


def test_conditional_hyperparameters_exist_only_when_active():
    hm = make_hypermodel((64,), 10)
    hp = keras_tuner.HyperParameters()
    hp.Fixed("num_layers", 3)
    hp.Fixed("optimizer", "sgd")
    hp.Fixed("lr_schedule", "step")
    model = hm.build(hp)
    assert {"units_0", "units_1", "units_2", "sgd_momentum", "step_gamma", "step_count"} <= set(hp.values)
    assert "units_3" not in hp.values and "cosine_alpha" not in hp.values
    assert sum(isinstance(layer, keras.layers.Dense) for layer in model.layers) == 4
    assert isinstance(model.optimizer, keras.optimizers.SGD) and model.optimizer.momentum == 0.9


def test_narrow_extend_and_fix():
    def backbone(hp, inputs):
        return keras.layers.Dense(hp.Int("width", 8, 32, step=8, default=16), activation="relu")(inputs)

    hm = make_hypermodel((64,), 10, build_backbone=backbone, search_space={
        "learning_rate": {"min_value": 1e-3, "max_value": 1e-2, "default": 5e-3},
        "optimizer": ["radam", "yogi"],
        "batch_size": 64,
        "lr_schedule": "exponential",
        "label_smoothing": ("Float", {"min_value": 0.0, "max_value": 0.2, "default": 0.1}),
    })
    hp = keras_tuner.HyperParameters()
    model = hm.build(hp)
    assert hp.values["learning_rate"] == 5e-3 and hp.values["optimizer"] == "radam"
    assert hp.values["batch_size"] == 64 and isinstance(hp._hps["batch_size"][0], keras_tuner.engine.hyperparameters.Fixed)
    assert hp.values["label_smoothing"] == 0.1 and hp.values["width"] == 16
    assert "num_layers" not in hp.values and "units_0" not in hp.values  # custom backbone
    assert "exponential_decay_rate" in hp.values
    assert type(model.optimizer).__name__ == "RAdam"


@pytest.mark.parametrize("kwargs,arg", [
    (dict(search_space={"learning_rate": {"min_value": 0.1, "max_value": 0.01}}), "learning_rate"),
    (dict(search_space={"optimizer": []}), "optimizer"),
    (dict(search_space={"optimizer": ["adam", "adamz"]}), "optimizer"),
    (dict(search_space={"optimizer": "nope"}), "optimizer"),
    (dict(search_space={"lr_schedule": ["cosine", "triangle"]}), "lr_schedule"),
    (dict(search_space={"no_such_hp": 3}), "search_space"),
    (dict(search_space={"num_layers": {"values": [1, 2]}}), "num_layers"),
    (dict(search_space={"l2": {"min_value": 0.0}}), "l2"),
    (dict(search_space={"batch_size": [0, 32]}), "batch_size"),
    (dict(search_space={"dropout": {"bogus": 1}}), "dropout"),
    (dict(num_classes=1), "num_classes"),
    (dict(task="ranking"), "task"),
    (dict(epochs=0), "epochs"),
    (dict(early_stopping_patience=-1), "early_stopping_patience"),
    (dict(objective=3), "objective"),
    # Values a built-in hyperparameter cannot take, whatever the kind.
    (dict(search_space={"learning_rate": {"min_value": -0.1, "max_value": 0.1, "sampling": "linear"}}), "learning_rate"),
    (dict(search_space={"learning_rate": 0.0}), "learning_rate"),
    (dict(search_space={"learning_rate": [0.01, -0.01]}), "learning_rate"),
    (dict(search_space={"l1": {"min_value": -1e-3, "max_value": 1e-2, "sampling": "linear"}}), "l1"),
    (dict(search_space={"l2": -1e-4}), "l2"),
    (dict(search_space={"dropout": {"max_value": 1.0}}), "dropout"),
    (dict(search_space={"dropout": 1.5}), "dropout"),
    (dict(search_space={"warmup_fraction": {"min_value": -0.1}}), "warmup_fraction"),
    (dict(search_space={"warmup_fraction": 1.5}), "warmup_fraction"),
    (dict(search_space={"units_0": {"min_value": 0}}), "units_0"),
    (dict(search_space={"units_1": [-16, 32]}), "units_1"),
    (dict(search_space={"num_layers": {"max_value": 6}}), "num_layers"),
    (dict(search_space={"num_layers": 5}), "num_layers"),
    (dict(search_space={"batch_size": [32.5]}), "batch_size"),
    (dict(search_space={"sgd_momentum": {"max_value": 1.0}}), "sgd_momentum"),
    (dict(search_space={"learning_rate": None}), "learning_rate"),
    (dict(search_space={"warmup_steps": 100}), "warmup_fraction"),
    (dict(objective=keras_tuner.Objective("val_accuracy", "up")), "objective"),
    (dict(objective=keras_tuner.Objective("val_auc", "max")), "objective"),
    (dict(objective="val_auc"), "objective"),
    (dict(metrics="accuracy"), "metrics"),
])
def test_configuration_errors_raise_before_search(kwargs, arg):
    kwargs = {"num_classes": 10, **kwargs}
    with pytest.raises(keras_tuner.errors.FatalValueError, match=arg):
        make_hypermodel((64,), **kwargs)


def test_error_messages_echo_the_value_and_the_limit():
    with pytest.raises(keras_tuner.errors.FatalValueError,
                       match=r"num_layers.*from 0 to 4.*max_value is 6"):
        make_hypermodel((64,), 10, search_space={"num_layers": {"max_value": 6}})
    image = {"conv_blocks": {"max_value": 4}}
    with pytest.raises(keras_tuner.errors.FatalValueError, match=r"conv_blocks.*from 0 to 3"):
        make_hypermodel((8, 8, 1), 10, search_space=image)
    with pytest.raises(keras_tuner.errors.FatalValueError, match=r"filters_1.*positive number of filters.*min_value is 0"):
        make_hypermodel((8, 8, 1), 10, search_space={"filters_1": {"min_value": 0}})
    with pytest.raises(keras_tuner.errors.FatalValueError, match=r"units_0.*positive number of units.*value is -8"):
        make_hypermodel((64,), 10, search_space={"units_0": -8})
    with pytest.raises(keras_tuner.errors.FatalValueError,
                       match=r"'val_auc'.*does not compile.*loss, accuracy, val_loss, val_accuracy"):
        make_hypermodel((64,), 10, objective="val_auc")
    with pytest.raises(keras_tuner.errors.FatalValueError, match=r"direction 'up'"):
        make_hypermodel((64,), 10, objective=keras_tuner.Objective("val_accuracy", "up"))
    # The limits are inclusive where they should be.
    hm = make_hypermodel((64,), 10, search_space={"num_layers": 4, "dropout": {"max_value": 0.95},
                                                  "learning_rate": {"min_value": 1e-3, "max_value": 1e-2,
                                                                    "sampling": "linear"},
                                                  "l2": 0.0, "warmup_fraction": 1.0})
    hp = keras_tuner.HyperParameters()
    hm.build(hp)
    assert hp.values["num_layers"] == 4 and hp.values["l2"] == 0.0


def test_optimizers_registry_is_read_only_and_extensible():
    from keras_trainkit import tuning

    assert tuning.OPTIMIZERS is tuning._registry.OPTIMIZERS
    with pytest.raises(TypeError):
        tuning.OPTIMIZERS["mine"] = lambda lr, hp: keras.optimizers.SGD(lr)  # noqa: ARG005
    with pytest.raises(keras_tuner.errors.FatalValueError, match="optimizer names"):
        make_hypermodel((64,), 10, search_space={"optimizer": ["adam", "sgd_nesterov_test"]})
    try:
        tuning.register_optimizer(
            "sgd_nesterov_test", lambda lr, hp: keras.optimizers.SGD(lr, momentum=hp.get("nesterov_momentum"), nesterov=True))
        assert "sgd_nesterov_test" in tuning.OPTIMIZERS
        hm = make_hypermodel((64,), 10, search_space={
            "optimizer": "sgd_nesterov_test", "nesterov_momentum": ("Float", {"min_value": 0.5, "max_value": 0.99, "default": 0.8})})
        hp = keras_tuner.HyperParameters()
        model = hm.build(hp)
        assert isinstance(model.optimizer, keras.optimizers.SGD)
        assert model.optimizer.nesterov and model.optimizer.momentum == pytest.approx(0.8)
        with pytest.raises(keras_tuner.errors.FatalValueError, match="already registered"):
            tuning.register_optimizer("sgd_nesterov_test", lambda lr, hp: keras.optimizers.SGD(lr))
        tuning.register_optimizer("sgd_nesterov_test", lambda lr, hp: "not an optimizer", overwrite=True)
        with pytest.raises(keras_tuner.errors.FatalValueError, match="must return a keras.optimizers.Optimizer"):
            hm.build(keras_tuner.HyperParameters())
    finally:
        tuning._registry._REGISTRY.pop("sgd_nesterov_test", None)
    for kwargs, arg in [(dict(name="", factory=lambda lr, hp: None), "name"),
                        (dict(name=3, factory=lambda lr, hp: None), "name"),
                        (dict(name="x", factory="adam"), "factory"),
                        (dict(name="x", factory=lambda lr: None), "factory"),
                        (dict(name="adam", factory=lambda lr, hp: None), "name")]:
        with pytest.raises(keras_tuner.errors.FatalValueError, match=f"`{arg}`"):
            tuning.register_optimizer(**kwargs)
    assert "x" not in tuning.OPTIMIZERS and "" not in tuning.OPTIMIZERS


@pytest.fixture(scope="module")
def digits():
    (x, y), (xv, yv) = load_digits()
    return (x[:480], y[:480]), (xv[:240], yv[:240])


SMALL = {"num_layers": 1, "units_0": [32, 64], "dropout": 0.0, "optimizer": ["adam", "radam"],
         "learning_rate": {"min_value": 3e-3, "max_value": 3e-2}, "batch_size": [32, 64],
         "lr_schedule": ["cosine", "exponential"], "warmup_fraction": {"min_value": 0.0, "max_value": 0.2, "step": 0.1}}


def _tuner(kind, tmp_path, hypermodel, max_trials=3):
    common = dict(objective=hypermodel.objective, directory=str(tmp_path), project_name=kind, overwrite=True)
    if kind == "random":
        return keras_tuner.RandomSearch(hypermodel, max_trials=max_trials, seed=0, **common)
    if kind == "grid":
        return keras_tuner.GridSearch(hypermodel, max_trials=max_trials, **common)
    if kind == "bayesian":
        return keras_tuner.BayesianOptimization(hypermodel, max_trials=max_trials, num_initial_points=2, seed=0, **common)
    if kind == "hyperband":
        return keras_tuner.Hyperband(hypermodel, max_epochs=2, factor=2, hyperband_iterations=1, seed=0, **common)
    return GeneticSearch(hypermodel, max_trials=max_trials, population_size=2, tournament_size=2, seed=0, **common)


@pytest.mark.parametrize("kind", ["random", pytest.param("grid", marks=pytest.mark.long),
                                  pytest.param("bayesian", marks=pytest.mark.long), "hyperband", "genetic"])
def test_runs_under_every_tuner(tmp_path, digits, kind):
    (x, y), (xv, yv) = digits
    space = dict(SMALL)
    if kind == "grid":  # a finite grid
        space["learning_rate"] = 0.01
        space["warmup_fraction"] = 0.0
    hm = make_hypermodel((64,), 10, search_space=space, epochs=2)
    tuner = _tuner(kind, tmp_path, hm)
    # Hyperband sets the epochs itself: ours (7) must not be passed a second time.
    tuner.search(x, y, validation_data=(xv, yv), verbose=0, **({"epochs": 7} if kind == "hyperband" else {}))
    if kind == "hyperband":
        assert {t.hyperparameters.values["tuner/epochs"] for t in tuner.oracle.trials.values()} <= {1, 2}
    trials = [t for t in tuner.oracle.trials.values() if t.status == "COMPLETED"]
    assert len(trials) >= 3
    for t in trials:
        assert "batch_size" in t.hyperparameters.values  # seen from trial 1
    best = tuner.get_best_hyperparameters(1)[0]
    model = tuner.hypermodel.build(best)
    assert model.count_params() > 0
    assert max(t.score for t in trials) > 0.5


def test_fit_tunes_batch_size_and_schedule(digits):
    (x, y), (xv, yv) = digits
    hm = make_hypermodel((64,), 10, search_space={"batch_size": 64, "lr_schedule": "polynomial",
                                                  "warmup_fraction": {"max_value": 0.5, "default": 0.25}},
                         epochs=2)
    hp = keras_tuner.HyperParameters()
    model = hm.build(hp)
    history = hm.fit(hp, model, x, y, validation_data=(xv, yv), verbose=0)
    assert int(model.optimizer.iterations) == 2 * int(np.ceil(480 / 64))
    rates = history.history["learning_rate"]
    assert rates[0] > rates[1]  # polynomial decay to 0 over the 12 updates after the 4 of warm-up
    assert rates[1] == pytest.approx(1e-3 * (1 - 11 / 12) ** 1.0, rel=1e-4)  # update 15: (15-4)/(16-4)
    with pytest.raises(keras_tuner.errors.FatalValueError, match="batch_size"):
        hm.fit(hp, hm.build(hp), x, y, batch_size=8, validation_data=(xv, yv), verbose=0)
    with pytest.raises(keras_tuner.errors.FatalValueError, match="needs validation data"):
        hm.fit(hp, hm.build(hp), x, y, verbose=0)


def test_objective_direction_is_inferred_for_keras_metrics():
    metrics = [keras.metrics.AUC(name="auc"), keras.metrics.Precision(name="precision"),
               keras.metrics.Recall(name="recall"), keras.metrics.F1Score(name="f1_score"), "accuracy", "mae"]
    for name, direction in [("val_auc", "max"), ("val_precision", "max"), ("val_recall", "max"),
                            ("val_f1_score", "max"), ("val_accuracy", "max"), ("val_loss", "min"),
                            ("val_mae", "min"), ("loss", "min"), ("f1_score", "max")]:
        assert make_hypermodel((4,), 2, metrics=metrics, objective=name).objective.direction == direction
    custom = keras_tuner.Objective("val_recall", "min")
    assert make_hypermodel((4,), 2, metrics=metrics, objective=custom).objective is custom
    # The examples: all errors, all minimized.
    regression = ["root_mean_squared_error", "mean_absolute_percentage_error", "kl_divergence", "hinge"]
    for name in regression:
        hm = make_hypermodel((4,), task="regression", metrics=regression, objective=f"val_{name}")
        assert hm.objective.direction == "min", name
    for name in ["sparse_categorical_crossentropy", "false_positives"]:
        metric = keras.metrics.FalsePositives(name=name) if name == "false_positives" else name
        hm = make_hypermodel((4,), 3, metrics=[metric], objective=f"val_{name}")
        assert hm.objective.direction == "min", name


@pytest.mark.parametrize("objective,direction", [("val_f1_score", "max"), ("val_loss", "min")])
def test_search_on_any_keras_metric_either_direction(tmp_path, objective, direction):
    from sklearn.datasets import load_breast_cancer

    x, y = load_breast_cancer(return_X_y=True)
    x = ((x - x.mean(0)) / x.std(0)).astype("float32")
    y = y.astype("float32").reshape(-1, 1)
    metrics = [keras.metrics.AUC(name="auc"), keras.metrics.Precision(name="precision"),
               keras.metrics.Recall(name="recall"), keras.metrics.F1Score(average="micro", threshold=0.5, name="f1_score")]
    hm = make_hypermodel((30,), 2, metrics=metrics, objective=objective, epochs=2,
                         # optimizer and schedule fixed: fewer conditional branches for the
                         # tuner's constructor to build
                         search_space={"num_layers": 1, "units_0": 16, "learning_rate": {"min_value": 1e-3, "max_value": 3e-2},
                                       "optimizer": "adam", "lr_schedule": "cosine"})
    assert hm.objective.direction == direction
    tuner = keras_tuner.RandomSearch(hm, objective=hm.objective, max_trials=2, seed=1, directory=str(tmp_path),
                                     project_name="o", overwrite=True)
    tuner.search(x[:400], y[:400], validation_data=(x[400:], y[400:]), verbose=0)
    trials = list(tuner.oracle.trials.values())
    scores = [t.score for t in trials]
    best = tuner.oracle.get_best_trials(1)[0].score
    assert best == (max(scores) if direction == "max" else min(scores))


@pytest.mark.parametrize("tensorboard", ["keras", "keras_trainkit"])
def test_tensorboard_run_per_trial_with_hparams_and_scalars(tmp_path, digits, tensorboard):
    from keras_trainkit import callbacks as C

    board = {"keras": keras.callbacks.TensorBoard, "keras_trainkit": C.TensorBoard}[tensorboard]
    (x, y), (xv, yv) = digits
    hm = make_hypermodel((64,), 10, search_space={**SMALL, "warmup_fraction": 0.1}, epochs=1, log_grad_norm=5)
    tuner = keras_tuner.RandomSearch(hm, objective="val_accuracy", max_trials=2, seed=0,
                                     directory=str(tmp_path), project_name="tb", overwrite=True)
    logs = tmp_path / "logs"
    tuner.search(x, y, validation_data=(xv, yv), verbose=0, callbacks=[board(str(logs))])
    from tensorboard.backend.event_processing import event_multiplexer

    mux = event_multiplexer.EventMultiplexer()
    mux.AddRunsFromDirectory(str(logs))
    mux.Reload()
    runs = mux.Runs()
    trial_runs = {r.split(os.sep)[0] for r in runs}
    assert len(trial_runs) == 2  # one run per trial
    for trial in trial_runs:
        train = [r for r in runs if r.startswith(trial) and r.endswith("train")]
        assert train, runs
        tags = set()
        for r in train:
            tags |= set(mux.Runs()[r].get("tensors", []))
        assert {"learning_rate", "grad_norm"} <= tags, tags
        hparams = [r for r in runs if r.startswith(trial)]
        assert any("_hparams_/session_start_info" in (mux.Runs()[r].get("tensors", []) or []) or
                   mux.PluginRunToTagToContent("hparams").get(r) for r in hparams)
