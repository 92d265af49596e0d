"""One table drives the family: every optimizer converges on a quadratic and on
Rosenbrock, trains an MLP on digits inside `fit`, and survives get_config /
from_config and `model.save` / `keras.saving.load_model`, continuing exactly
like an uninterrupted run."""

from __future__ import annotations

import doctest
import importlib
import inspect
import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_trainkit import optimizers as kto
from keras_trainkit.data import load_digits

# The update rules (keras_trainkit.optimizers also exports the discriminative
# optimizer, a MultiOptimizer of these, tested in test_fine_tuning.py).
RULES = sorted(n for n in kto.__all__ if n not in ("DiscriminativeOptimizer", "discriminative_optimizer"))

QUADRATIC_STEPS = 500
ROSENBROCK_STEPS = 5000


def cosine(rate, steps):
    return keras.optimizers.schedules.CosineDecay(rate, steps)


# name -> factories (fresh optimizer per call) for the three problems.
FAMILY = {
    "SGD": {
        "quadratic": lambda: kto.SGD(0.05, momentum=0.9),
        "rosenbrock": lambda: kto.SGD(1e-3, momentum=0.9),
        "digits": lambda: kto.SGD(0.1, momentum=0.9, nesterov=True),
    },
    "Adagrad": {
        "quadratic": lambda: kto.Adagrad(0.5),
        "rosenbrock": lambda: kto.Adagrad(1.5),
        "digits": lambda: kto.Adagrad(0.3),
    },
    "RMSprop": {
        "quadratic": lambda: kto.RMSprop(cosine(0.05, QUADRATIC_STEPS)),
        "rosenbrock": lambda: kto.RMSprop(1e-3, momentum=0.9, centered=True),
        "digits": lambda: kto.RMSprop(0.01),
    },
    "Adam": {
        "quadratic": lambda: kto.Adam(0.1),
        "rosenbrock": lambda: kto.Adam(0.02),
        "digits": lambda: kto.Adam(0.01, amsgrad=True),
    },
    "RAdam": {
        "quadratic": lambda: kto.RAdam(0.1),
        # The first, unrectified steps are plain momentum on gradients of ~200.
        "rosenbrock": lambda: kto.RAdam(0.02, clipnorm=10.0),
        "digits": lambda: kto.RAdam(0.03),
    },
    "AdaBelief": {
        "quadratic": lambda: kto.AdaBelief(0.1),
        "rosenbrock": lambda: kto.AdaBelief(0.02),
        "digits": lambda: kto.AdaBelief(0.01),
    },
    "Yogi": {
        "quadratic": lambda: kto.Yogi(0.1),
        "rosenbrock": lambda: kto.Yogi(0.05),
        "digits": lambda: kto.Yogi(0.01),
    },
    "Adan": {
        "quadratic": lambda: kto.Adan(0.1, beta_1=0.9),
        "rosenbrock": lambda: kto.Adan(0.02),
        "digits": lambda: kto.Adan(0.01),
    },
    "LARS": {
        "quadratic": lambda: kto.LARS(cosine(20.0, QUADRATIC_STEPS)),
        "rosenbrock": lambda: kto.LARS(cosine(10.0, ROSENBROCK_STEPS)),
        "digits": lambda: kto.LARS(5.0, weight_decay=1e-4),
    },
    "NovoGrad": {
        "quadratic": lambda: kto.NovoGrad(cosine(0.1, QUADRATIC_STEPS)),
        "rosenbrock": lambda: kto.NovoGrad(cosine(0.02, ROSENBROCK_STEPS)),
        "digits": lambda: kto.NovoGrad(0.1),
    },
    "Lookahead": {
        "quadratic": lambda: kto.Lookahead(keras.optimizers.Adam(0.1)),
        "rosenbrock": lambda: kto.Lookahead(keras.optimizers.Adam(0.05)),
        "digits": lambda: kto.Lookahead(kto.Adam(0.01), sync_period=6, slow_step_size=0.6),
    },
}
NAMES = sorted(FAMILY)


def test_table_covers_every_exported_optimizer():
    assert set(FAMILY) == set(RULES)


def _minimise(optimizer, loss_fn, x0, steps):
    """`steps` compiled updates of one variable; returns its final value."""
    x = keras.Variable(np.asarray(x0, "float32"))
    optimizer.build([x])

    @tf.function
    def train(n):
        for _ in tf.range(n):
            with tf.GradientTape() as tape:
                loss = loss_fn(x)
            optimizer.apply(tape.gradient(loss, [x]), [x])

    train(tf.constant(steps))
    return x.numpy()


QUAD_CURVATURE = np.array([1.0, 2.0, 5.0, 10.0], "float32")
QUAD_MINIMUM = np.array([1.0, -2.0, 3.0, 0.5], "float32")


def quadratic(x):
    return 0.5 * keras.ops.sum(QUAD_CURVATURE * keras.ops.square(x - QUAD_MINIMUM))


def rosenbrock(x):
    return keras.ops.square(1.0 - x[0]) + 100.0 * keras.ops.square(x[1] - keras.ops.square(x[0]))


@pytest.mark.parametrize("name", NAMES)
def test_converges_on_quadratic_and_rosenbrock(name):
    x = _minimise(FAMILY[name]["quadratic"](), quadratic, np.zeros(4), QUADRATIC_STEPS)
    assert np.linalg.norm(x - QUAD_MINIMUM) < 1e-3, x
    x = _minimise(FAMILY[name]["rosenbrock"](), rosenbrock, [-1.2, 1.0], ROSENBROCK_STEPS)
    assert np.linalg.norm(x - 1.0) < 1e-2, x


def test_convergence_check_can_fail():
    x = _minimise(kto.Adam(1e-4), rosenbrock, [-1.2, 1.0], ROSENBROCK_STEPS)
    assert np.linalg.norm(x - 1.0) > 1e-2


@pytest.fixture(scope="module")
def digits():
    return load_digits()


def _mlp():
    return keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_fits_digits_and_resumes_exactly_after_save_and_load(name, digits, tmp_path):
    (x_train, y_train), (x_val, y_val) = digits
    model = _mlp()
    model.compile(optimizer=FAMILY[name]["digits"](), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    fit = {"batch_size": 64, "shuffle": False, "verbose": 0}
    model.fit(x_train, y_train, epochs=5, **fit)

    path = tmp_path / "model.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    assert type(restored.optimizer) is type(model.optimizer)
    assert restored.optimizer.get_config() == model.optimizer.get_config()
    assert int(restored.optimizer.iterations) == int(model.optimizer.iterations) > 0

    # The uninterrupted run and the restored one take the same next epoch.
    model.fit(x_train, y_train, epochs=1, **fit)
    restored.fit(x_train, y_train, epochs=1, **fit)
    for a, b in zip(model.weights, restored.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
    assert len(restored.optimizer.variables) == len(model.optimizer.variables)
    for a, b in zip(model.optimizer.variables, restored.optimizer.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)

    accuracy = model.evaluate(x_val, y_val, verbose=0, batch_size=512)[1]
    assert accuracy >= 0.9, f"{name}: validation accuracy {accuracy:.3f}"


def _trajectory(optimizer, steps=10):
    rng = np.random.default_rng(0)
    variables = [keras.Variable(rng.standard_normal((3, 2)).astype("float32")),
                 keras.Variable(np.zeros(2, "float32"))]
    for _ in range(steps):
        grads = [rng.standard_normal(v.shape).astype("float32") for v in variables]
        optimizer.apply([keras.ops.convert_to_tensor(g) for g in grads], variables)
    return [v.numpy() for v in variables]


def _with_schedule(optimizer):
    schedule = keras.optimizers.schedules.ExponentialDecay(0.01, 5, 0.5)
    if isinstance(optimizer, kto.Lookahead):
        return kto.Lookahead(kto.Adam(schedule), sync_period=3)
    config = optimizer.get_config()
    config["learning_rate"] = keras.optimizers.schedules.serialize(schedule)
    return type(optimizer).from_config(config)


@pytest.mark.parametrize("name", NAMES)
def test_config_round_trip_gives_the_same_optimizer(name):
    for optimizer in (FAMILY[name]["digits"](), _with_schedule(FAMILY[name]["digits"]())):
        config = optimizer.get_config()
        clone = type(optimizer).from_config(config)
        assert type(clone) is type(optimizer)
        assert clone.get_config() == config
        serialized = keras.optimizers.serialize(optimizer)
        assert serialized["registered_name"] == f"keras_trainkit>{name}"
        assert type(keras.optimizers.deserialize(serialized)) is type(optimizer)
        for a, b in zip(_trajectory(optimizer), _trajectory(clone)):
            np.testing.assert_array_equal(a, b)


def _documented_args(doc):
    """`{name: entry}` from a Google-style `Args:` section."""
    section = doc.split("Args:")[1].split("References:")[0]
    entries = {}
    name = None
    for line in section.splitlines():
        if line.startswith(" " * 8) and not line.startswith(" " * 9) and ": " in line:
            name, text = line.strip().split(": ", 1)
            entries[name] = text
        elif name and line.strip():
            entries[name] += " " + line.strip()
    return entries


@pytest.mark.parametrize("name", NAMES)
def test_docstring_has_rule_reference_args_and_a_running_example(name):
    cls = getattr(kto, name)
    result = doctest.testmod(importlib.import_module(cls.__module__))
    assert result.attempted > 0 and result.failed == 0
    doc = cls.__doc__
    assert "<-" in doc  # the update rule
    assert "References:" in doc and "https://" in doc.split("References:")[1]
    assert "Examples:" in doc
    documented = _documented_args(doc)
    signature = [p for p in inspect.signature(cls).parameters if p != "kwargs"]
    assert sorted(documented) == sorted(signature)
    for arg, entry in documented.items():
        assert re.search(r"Defaults to `[^`]+`\.$", entry), (arg, entry)
