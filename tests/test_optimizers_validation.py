"""Bad hyperparameters raise ValueError, eagerly, naming the argument and echoing the value."""

from __future__ import annotations

import inspect
import math

import keras
import pytest

from keras_trainkit import optimizers as kto

# The update rules (keras_trainkit.optimizers also exports the discriminative
# optimizer, a MultiOptimizer of these, tested in test_fine_tuning.py).
RULES = sorted(n for n in kto.__all__ if n not in ("DiscriminativeOptimizer", "discriminative_optimizer"))


ALL = RULES

# Keras' base arguments, checked for every optimizer.
BASE_BAD = [
    ("learning_rate", -0.1),
    ("learning_rate", math.nan),
    ("learning_rate", math.inf),
    ("learning_rate", "fast"),
    ("learning_rate", True),
    ("weight_decay", -0.01),
    ("clipnorm", 0.0),
    ("clipvalue", -1.0),
    ("global_clipnorm", 0),
    ("use_ema", "yes"),
    ("ema_momentum", 1.5),
    ("ema_momentum", -0.1),
    ("ema_overwrite_frequency", 0),
    ("ema_overwrite_frequency", 2.5),
    ("loss_scale_factor", 0.0),
    ("gradient_accumulation_steps", 1),
    ("gradient_accumulation_steps", 2.0),
    ("name", 3),
]

# Each optimizer's own hyperparameters.
OWN_BAD = [
    ("SGD", "momentum", -0.1),
    ("SGD", "momentum", 1.5),
    ("SGD", "nesterov", "yes"),
    ("Adagrad", "initial_accumulator_value", -1.0),
    ("Adagrad", "epsilon", 0.0),
    ("RMSprop", "rho", 1.0),
    ("RMSprop", "rho", -0.1),
    ("RMSprop", "momentum", -0.5),
    ("RMSprop", "epsilon", 0.0),
    ("RMSprop", "centered", 1),
    ("Adam", "beta_1", 1.0),
    ("Adam", "beta_2", -0.1),
    ("Adam", "beta_2", math.nan),
    ("Adam", "epsilon", 0.0),
    ("Adam", "epsilon", -1e-7),
    ("Adam", "amsgrad", "no"),
    ("Adam", "bias_correction", None),
    ("RAdam", "beta_1", 1.0),
    ("RAdam", "beta_2", 1.2),
    ("RAdam", "epsilon", 0.0),
    ("RAdam", "epsilon_root", -1e-8),
    ("RAdam", "threshold", 3.0),
    ("RAdam", "nesterov", 1),
    ("AdaBelief", "beta_1", -0.5),
    ("AdaBelief", "beta_2", 1.0),
    ("AdaBelief", "epsilon", 0.0),
    ("AdaBelief", "epsilon_root", -1e-16),
    ("AdaBelief", "nesterov", "true"),
    ("Yogi", "beta_1", 1),
    ("Yogi", "beta_2", 1.0),
    ("Yogi", "epsilon", 0.0),
    ("Yogi", "epsilon_root", -1.0),
    ("Yogi", "initial_accumulator_value", -1e-6),
    ("Adan", "beta_1", 1.0),
    ("Adan", "beta_2", -0.08),
    ("Adan", "beta_3", 1.01),
    ("Adan", "epsilon", 0.0),
    ("Adan", "epsilon_root", -1e-8),
    ("LARS", "momentum", 1.5),
    ("LARS", "nesterov", "x"),
    ("LARS", "trust_coefficient", 0.0),
    ("LARS", "epsilon", -1.0),
    ("NovoGrad", "beta_1", 1.0),
    ("NovoGrad", "beta_2", -0.1),
    ("NovoGrad", "epsilon", 0.0),
    ("NovoGrad", "epsilon_root", -1.0),
    ("Lookahead", "sync_period", 0),
    ("Lookahead", "sync_period", 2.5),
    ("Lookahead", "slow_step_size", 1.5),
    ("Lookahead", "slow_step_size", -0.1),
    ("Lookahead", "optimizer", 42),
]


def _bad_inputs(name):
    own = [(arg, value) for n, arg, value in OWN_BAD if n == name]
    base = [(a, v) for a, v in BASE_BAD if not (name == "Lookahead" and a == "learning_rate")]
    return own + base


# One item per optimizer (each pytest item pays for a Keras session reset);
# inside, every row of the table is checked and named on failure.
@pytest.mark.parametrize("name", ALL)
def test_bad_hyperparameters_are_rejected(name):
    for arg, value in _bad_inputs(name):
        with pytest.raises(ValueError) as error:
            getattr(kto, name)(**{arg: value})
        message = str(error.value)
        assert f"`{arg}`" in message and f"{arg}={value!r}" in message, (arg, value, message)


def test_lookahead_rejects_a_learning_rate_of_its_own():
    with pytest.raises(ValueError, match=r"`learning_rate`.*learning_rate=0.1"):
        kto.Lookahead(learning_rate=0.1)


def test_every_own_hyperparameter_with_a_range_is_in_the_table():
    checked = {(name, arg) for name, arg, _ in OWN_BAD}
    free = {"learning_rate", "kwargs"} | {a for a, _ in BASE_BAD}
    for name in ALL:
        for arg in inspect.signature(getattr(kto, name)).parameters:
            if arg not in free:
                assert (name, arg) in checked, (name, arg)


def test_boundary_values_are_accepted():
    kto.SGD(learning_rate=0.0, momentum=1.0)
    kto.SGD(momentum=0)  # an int, which Keras' SGD refuses
    kto.RMSprop(rho=0.0, momentum=1.0)
    kto.Adam(beta_1=0.0, beta_2=0.0, epsilon=1e-30)
    kto.RAdam(threshold=4.0, epsilon_root=0.0)
    kto.Adagrad(initial_accumulator_value=0.0)
    kto.Yogi(initial_accumulator_value=0.0)
    kto.LARS(momentum=0.0, epsilon=0.0, weight_decay=0.0)
    kto.Lookahead(keras.optimizers.SGD(), sync_period=1, slow_step_size=0.0)
    kto.Lookahead("sgd", slow_step_size=1.0)
    kto.Adam(learning_rate=1)  # an int rate, which Keras' Adam refuses
    kto.Adam(weight_decay=0.0, clipnorm=1, ema_overwrite_frequency=1,
             gradient_accumulation_steps=2, loss_scale_factor=128.0, name="adam")


def test_learning_rate_may_be_a_schedule_or_a_callable():
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.5)
    for name in ALL:
        if name == "Lookahead":
            continue
        getattr(kto, name)(learning_rate=schedule)
        getattr(kto, name)(learning_rate=lambda: 0.01)


def test_unknown_keyword_is_rejected():
    with pytest.raises(ValueError, match="not recognized"):
        kto.Adam(beta3=0.9)
