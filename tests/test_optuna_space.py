"""suggest_hyperparameters: Keras Tuner's search space as Optuna distributions, define-by-run."""

import math

import keras_tuner
import numpy as np
import pytest

optuna = pytest.importorskip("optuna")

from keras_trainkit.tuning._optuna_space import (  # noqa: E402
    check_search_space,
    optuna_distributions,
    suggest_hyperparameters,
)

D = optuna.distributions


def full_space():
    hp = keras_tuner.HyperParameters()
    hp.Float("lr", 1e-5, 1e-1, sampling="log")
    hp.Float("dropout", 0.0, 0.5, step=0.05)
    hp.Float("beta", 0.1, 10.0, sampling="reverse_log")
    hp.Float("scale", 0.001, 10.0, step=10, sampling="log")
    hp.Float("x", -1.0, 1.0)
    hp.Int("layers", 1, 3)
    for i in range(3):
        with hp.conditional_scope("layers", list(range(i + 1, 4))):
            hp.Int(f"units_{i}", 16, 250, step=16)
    hp.Choice("optimizer", ["adam", "sgd", "rmsprop"])
    with hp.conditional_scope("optimizer", ["sgd"]):
        hp.Float("momentum", 0.0, 0.99)
        with hp.conditional_scope("momentum", [0.0]):  # nested scope, never active in practice
            hp.Boolean("never")
    hp.Choice("batch_size", [16, 32, 64, 128])  # numeric: ordered by default
    hp.Choice("kind", [1, 2, 3], ordered=False)
    hp.Boolean("batchnorm")
    hp.Fixed("loss", "mse")
    hp.Int("heads", 1, 100, sampling="log")
    hp.Int("width", 1, 100, sampling="reverse_log")
    hp.Int("filters", 2, 64, step=2, sampling="log")
    return hp


def test_the_mapping_table_is_pinned():
    assert optuna_distributions(full_space()) == {
        "lr": D.FloatDistribution(1e-5, 1e-1, log=True),
        "dropout": D.FloatDistribution(0.0, 0.5, step=0.05),
        "beta.reflected": D.FloatDistribution(0.1, 10.0, log=True),
        "scale.index": D.IntDistribution(0, 4),  # 0.001, 0.01, 0.1, 1, 10
        "x": D.FloatDistribution(-1.0, 1.0),
        "layers": D.IntDistribution(1, 3),
        **{f"units_{i}": D.IntDistribution(16, 240, step=16) for i in range(3)},  # last grid point <= 250
        "optimizer": D.CategoricalDistribution(["adam", "sgd", "rmsprop"]),
        "momentum": D.FloatDistribution(0.0, 0.99),
        "never": D.CategoricalDistribution([False, True]),
        "batch_size.index": D.IntDistribution(0, 3),
        "kind": D.CategoricalDistribution([1, 2, 3]),
        "batchnorm": D.CategoricalDistribution([False, True]),
        "loss": D.CategoricalDistribution(["mse"]),
        "heads": D.IntDistribution(1, 100, log=True),
        "width.reflected": D.IntDistribution(1, 100, log=True),
        "filters.index": D.IntDistribution(0, 5),  # 2, 4, ..., 64
    }


def _check_values(space, values):
    hps = space.copy()
    hps.values = dict(values)
    for hp in space.space:
        active = hps.is_active(hp)
        assert (hp.name in values) == active, (hp.name, values)
        if not active:
            continue
        v = values[hp.name]
        if isinstance(hp, keras_tuner.engine.hyperparameters.Boolean):
            assert isinstance(v, bool)
        elif isinstance(hp, keras_tuner.engine.hyperparameters.Fixed):
            assert v == hp.value
        elif isinstance(hp, keras_tuner.engine.hyperparameters.Choice):
            assert v in hp.values
        elif isinstance(hp, keras_tuner.engine.hyperparameters.Int):
            assert type(v) is int and hp.min_value <= v <= hp.max_value
        else:
            assert type(v) is float and hp.min_value <= v <= hp.max_value


def test_define_by_run_suggests_only_active_parameters_and_round_trips():
    space = full_space()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen_layers, seen_sgd = set(), set()
    for _ in range(60):
        trial = study.ask()
        values = suggest_hyperparameters(trial, space)
        study.tell(trial, 0.0)
        _check_values(space, values)
        assert list(values) == [hp.name for hp in space.space if hp.name in values]  # declaration order
        # The Optuna trial holds exactly the active parameters.
        expected = {f"units_{i}" for i in range(values["layers"])} | (
            {"momentum"} if values["optimizer"] == "sgd" else set())
        conditional = {p for p in trial.params if p.startswith("units_") or p == "momentum"}
        assert conditional == expected
        assert "never" not in trial.params  # momentum == 0.0 exactly has probability 0
        # Back from the stored params: the same Keras Tuner values.
        assert suggest_hyperparameters(optuna.trial.FixedTrial(trial.params), space) == values
        seen_layers.add(values["layers"])
        seen_sgd.add(values["optimizer"] == "sgd")
    assert seen_layers == {1, 2, 3} and seen_sgd == {True, False}


class UniformTrial:
    """Draws like Optuna's RandomSampler: uniform on each distribution's own scale.

    Has only the three suggest methods, like Ray Tune's define-by-run captor.
    """

    def __init__(self, rng):
        self.rng = rng

    def suggest_float(self, name, low, high, *, step=None, log=False):
        if log:
            return float(math.exp(self.rng.uniform(math.log(low), math.log(high))))
        if step:
            return float(low + step * self.rng.integers(0, round((high - low) / step) + 1))
        return float(self.rng.uniform(low, high))

    def suggest_int(self, name, low, high, *, step=1, log=False):
        if log:
            return int(round(math.exp(self.rng.uniform(math.log(low - 0.5), math.log(high + 0.5)))))
        return int(low + step * self.rng.integers(0, (high - low) // step + 1))

    def suggest_categorical(self, name, choices):
        return choices[int(self.rng.integers(len(choices)))]


@pytest.mark.parametrize("make", [
    lambda hp: hp.Float("v", 0.1, 10.0, sampling="reverse_log"),
    lambda hp: hp.Float("v", 1e-4, 1.0, sampling="log"),
    lambda hp: hp.Float("v", -2.0, 3.0),
    lambda hp: hp.Int("v", 1, 1000, sampling="reverse_log"),
])
def test_continuous_scales_sample_like_keras_tuner(make):
    # Reference: Keras Tuner's own sampling, prob_to_value of a uniform cumulative probability.
    hp_space = keras_tuner.HyperParameters()
    make(hp_space)
    hp = hp_space.space[0]
    rng = np.random.default_rng(0)
    ours = np.array([suggest_hyperparameters(UniformTrial(rng), hp_space)["v"] for _ in range(4000)])
    reference = np.array([hp.prob_to_value(u) for u in rng.uniform(0, 1, 4000)])
    # Compare on Keras Tuner's cumulative-probability scale, where sampling noise is uniform.
    ours_p = np.array([hp.value_to_prob(v) for v in ours])
    reference_p = np.array([hp.value_to_prob(v) for v in reference])
    assert ours.min() >= hp.min_value and ours.max() <= hp.max_value
    if isinstance(hp, keras_tuner.engine.hyperparameters.Int):
        # Optuna rounds a log-uniform draw where Keras Tuner floors one over
        # [min, max + 1): the mass near max_value agrees to a few percent.
        for cut in (500, 900, 990):  # exact: 0.91 vs 0.90, 0.70 vs 0.67, 0.40 vs 0.36
            assert np.mean(ours > cut) == pytest.approx(np.mean(reference > cut), abs=0.07), cut
        return
    for q in (0.1, 0.25, 0.5, 0.75, 0.9):
        assert np.quantile(ours_p, q) == pytest.approx(np.quantile(reference_p, q), abs=0.03), q


@pytest.mark.parametrize("make", [
    lambda hp: hp.Float("v", 0.001, 10.0, step=10, sampling="log"),
    lambda hp: hp.Int("v", 2, 64, step=2, sampling="log"),
    lambda hp: hp.Int("v", 3, 300, step=3, sampling="reverse_log"),
    lambda hp: hp.Choice("v", [16, 32, 64, 128]),
    lambda hp: hp.Int("v", 0, 10, step=3),
])
def test_grids_cover_exactly_keras_tuners_values(make):
    hp_space = keras_tuner.HyperParameters()
    make(hp_space)
    hp = hp_space.space[0]
    rng = np.random.default_rng(1)
    ours = {suggest_hyperparameters(UniformTrial(rng), hp_space)["v"] for _ in range(400)}
    reference = {hp.prob_to_value(u) for u in np.linspace(0.0, 0.999, 2000)}
    assert ours == reference
    # Ordered grids go through an index, so order-aware samplers see neighbours.
    name, = optuna_distributions(hp_space)
    assert name == "v.index" or isinstance(hp, keras_tuner.engine.hyperparameters.Int)


def test_float_step_grid_matches_keras_tuner():
    hp_space = keras_tuner.HyperParameters()
    hp_space.Float("v", 0.0, 0.5, step=0.05)
    hp = hp_space.space[0]
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    ours = set()
    for _ in range(300):
        trial = study.ask()
        ours.add(round(suggest_hyperparameters(trial, hp_space)["v"], 9))
        study.tell(trial, 0.0)
    # The grid lo + k * step up to max_value, in decimals as Optuna computes it. Keras
    # Tuner's own float floor (0.5 // 0.05 == 9.0) drops max_value from its list.
    assert ours == {round(0.05 * k, 9) for k in range(11)}
    assert ours - {round(v, 9) for v in hp.values} == {0.5}


def test_incompatible_collisions_are_rejected():
    hp = keras_tuner.HyperParameters()
    hp.Choice("model", ["a", "b"])
    with hp.conditional_scope("model", ["a"]):
        hp.Int("units", 8, 64)
    with hp.conditional_scope("model", ["b"]):
        hp.Int("units", 16, 128)  # same name, same kind: Optuna allows it
    check_search_space(hp)
    with hp.conditional_scope("model", ["b"]):
        hp.Choice("act", ["relu"])
    with hp.conditional_scope("model", ["a"]):
        hp.Choice("act", ["relu", "tanh"])
    with pytest.raises(ValueError, match="'act'"):
        check_search_space(hp)
    hp2 = keras_tuner.HyperParameters()
    hp2.Choice("bs", [16, 32])
    hp2.Int("bs.index", 0, 5, step=2)
    with pytest.raises(ValueError, match="bs.index"):
        check_search_space(hp2)
