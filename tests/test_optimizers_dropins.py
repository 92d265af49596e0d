"""SGD, Adagrad, RMSprop and Adam are drop-ins for Keras' classes of the same name.

Same constructor arguments and defaults, and Keras' trajectory to 1e-6 over 100
steps on random dense gradients and on the sparse (IndexedSlices) gradients of
an Embedding layer, including rows repeated within a batch.
"""

from __future__ import annotations

import inspect

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_trainkit import optimizers as kto

DROP_INS = ["SGD", "Adagrad", "RMSprop", "Adam"]
EXTRA_ARGUMENTS = {"Adam": {"bias_correction": True}}
TOL = 1e-6
STEPS = 100

# (class name, keyword arguments) applied identically to both implementations.
CONFIGS = [
    ("SGD", {}),
    ("SGD", {"learning_rate": 0.05, "momentum": 0.9}),
    ("SGD", {"learning_rate": 0.05, "momentum": 0.9, "nesterov": True}),
    ("SGD", {"momentum": 0.5, "weight_decay": 0.1, "clipnorm": 1.0}),
    ("Adagrad", {}),
    ("Adagrad", {"learning_rate": 0.1, "initial_accumulator_value": 0.0, "epsilon": 1e-3}),
    ("RMSprop", {}),
    ("RMSprop", {"learning_rate": 0.01, "rho": 0.8, "momentum": 0.9}),
    ("RMSprop", {"learning_rate": 0.01, "centered": True}),
    ("RMSprop", {"learning_rate": 0.01, "momentum": 0.5, "centered": True, "clipvalue": 0.5}),
    ("Adam", {}),
    ("Adam", {"learning_rate": 0.01, "beta_1": 0.8, "beta_2": 0.99, "epsilon": 1e-5}),
    ("Adam", {"learning_rate": 0.01, "amsgrad": True}),
    ("Adam", {"learning_rate": 0.01, "weight_decay": 0.05, "global_clipnorm": 2.0}),
    ("Adam", {"learning_rate": 0.01, "gradient_accumulation_steps": 3}),
    ("Adam", {"learning_rate": 0.01, "use_ema": True, "ema_overwrite_frequency": 7}),
    ("RMSprop", {"learning_rate": 0.01, "loss_scale_factor": 4.0, "weight_decay": 0.01}),
    ("Adagrad", {"learning_rate": 0.1, "gradient_accumulation_steps": 2, "use_ema": True}),
]
SPARSE_CONFIGS = [
    ("SGD", {"learning_rate": 0.1}),
    ("SGD", {"learning_rate": 0.1, "momentum": 0.9}),
    ("SGD", {"learning_rate": 0.1, "momentum": 0.9, "nesterov": True}),
    ("Adagrad", {"learning_rate": 0.1}),
    ("RMSprop", {"learning_rate": 0.01}),
    ("RMSprop", {"learning_rate": 0.01, "momentum": 0.9}),
    ("Adam", {"learning_rate": 0.01}),
    ("Adam", {"learning_rate": 0.01, "amsgrad": True}),
]


@pytest.mark.parametrize("name", DROP_INS)
def test_same_constructor_arguments_defaults_and_config(name):
    theirs = inspect.signature(getattr(keras.optimizers, name)).parameters
    ours = dict(inspect.signature(getattr(kto, name)).parameters)
    extras = {k: ours.pop(k).default for k in list(ours) if k not in theirs}
    assert extras == EXTRA_ARGUMENTS.get(name, {})
    assert list(ours) == list(theirs)
    for arg, param in theirs.items():
        assert ours[arg].default == param.default, arg
        assert ours[arg].kind == param.kind, arg
    config = getattr(kto, name)(name="opt").get_config()
    for extra in EXTRA_ARGUMENTS.get(name, {}):
        config.pop(extra)
    assert config == getattr(keras.optimizers, name)(name="opt").get_config()


def _dense_trajectory(optimizer, steps=STEPS, compiled=True):
    """Variables after each of `steps` random-gradient updates, then finalized.

    Compiled (as inside `fit`) unless `compiled=False`.
    """
    rng = np.random.default_rng(1)
    variables = [
        keras.Variable(rng.standard_normal((6, 4)).astype("float32")),
        keras.Variable(rng.standard_normal((4,)).astype("float32")),
    ]
    optimizer.build(variables)

    def apply(*grads):
        optimizer.apply(list(grads), variables)

    apply = tf.function(apply) if compiled else apply
    out = []
    for _ in range(steps):
        grads = [rng.standard_normal(v.shape).astype("float32") for v in variables]
        apply(*[tf.constant(g) for g in grads])
        out.append([v.numpy() for v in variables])
    optimizer.finalize_variable_values(variables)
    out.append([v.numpy() for v in variables])
    return out


# One pytest item per optimizer (each item pays for a Keras session reset);
# every configuration of the table is checked and named on failure.
@pytest.mark.parametrize("name", DROP_INS)
def test_dense_trajectory_matches_keras(name):
    for kwargs in [kw for n, kw in CONFIGS if n == name]:
        ours = _dense_trajectory(getattr(kto, name)(**kwargs))
        theirs = _dense_trajectory(getattr(keras.optimizers, name)(**kwargs))
        for step, (a, b) in enumerate(zip(ours, theirs)):
            for x, y in zip(a, b):
                np.testing.assert_allclose(x, y, rtol=TOL, atol=TOL, err_msg=f"{kwargs}, step {step}")
        assert np.max(np.abs(theirs[-1][0] - theirs[0][0])) > 1e-3, kwargs  # it moved


@pytest.mark.parametrize("name", DROP_INS)
def test_schedule_and_callable_learning_rates_match_keras_eagerly(name):
    for make in (
        lambda: keras.optimizers.schedules.ExponentialDecay(0.05, 10, 0.5),
        lambda: (lambda: 0.02),
    ):
        ours = _dense_trajectory(getattr(kto, name)(learning_rate=make()), 20, compiled=False)
        theirs = _dense_trajectory(
            getattr(keras.optimizers, name)(learning_rate=make()), 20, compiled=False
        )
        np.testing.assert_allclose(ours[-1][0], theirs[-1][0], rtol=TOL, atol=TOL)


def test_adam_without_bias_correction_follows_the_uncorrected_formula():
    """Checked against a NumPy transcription of the guides' formula."""
    lr, b1, b2, eps = 0.01, 0.9, 0.999, 1e-7
    opt = kto.Adam(learning_rate=lr, bias_correction=False)
    rng = np.random.default_rng(3)
    w0 = rng.standard_normal(5).astype("float32")
    w = keras.Variable(w0)
    ref = w0.astype("float64")
    m = np.zeros(5)
    v = np.zeros(5)
    for _ in range(50):
        g = rng.standard_normal(5).astype("float32")
        opt.apply([keras.ops.convert_to_tensor(g)], [w])
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g.astype("float64") ** 2
        ref = ref - lr * m / (np.sqrt(v) + eps)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(w), ref, rtol=1e-5, atol=1e-5)
    corrected = _dense_trajectory(kto.Adam(learning_rate=lr), steps=5)
    uncorrected = _dense_trajectory(kto.Adam(learning_rate=lr, bias_correction=False), steps=5)
    assert not np.allclose(corrected[-1][0], uncorrected[-1][0])


def _embedding_model(seed):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((5,), dtype="int32"),
            keras.layers.Embedding(20, 4),
            keras.layers.GlobalAveragePooling1D(),
            keras.layers.Dense(1),
        ]
    )
    return model


def _sparse_trajectory(optimizer, steps=STEPS, repeated_rows=True):
    """Weights of an Embedding model after each compiled training step."""
    model = _embedding_model(0)
    variables = model.trainable_variables
    optimizer.build(variables)
    rng = np.random.default_rng(2)

    def gradients(x, y):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(x) - y))
        return tape.gradient(loss, variables)

    @tf.function
    def train_step(x, y):
        optimizer.apply(gradients(x, y), variables)

    out = []
    for step in range(steps):
        if repeated_rows:
            # Ids 0..7 only, so rows repeat within the batch and rows 8..19
            # never get a gradient (lazy versus dense updates would differ).
            x = rng.integers(0, 8, size=(6, 5)).astype("int32")
        else:
            x = rng.choice(15, size=10, replace=False).reshape(2, 5).astype("int32")
        y = rng.standard_normal((len(x), 1)).astype("float32")
        if step == 0:
            grads = gradients(x, y)
            assert isinstance(grads[0], tf.IndexedSlices)
            unique = len(np.unique(grads[0].indices.numpy()))
            assert (unique < len(grads[0].indices)) == repeated_rows
        train_step(tf.constant(x), tf.constant(y))
        out.append([v.numpy() for v in variables])
    return out


@pytest.mark.parametrize("name", DROP_INS)
def test_sparse_embedding_trajectory_matches_keras(name):
    for kwargs in [kw for n, kw in SPARSE_CONFIGS if n == name]:
        ours = _sparse_trajectory(getattr(kto, name)(**kwargs))
        theirs = _sparse_trajectory(getattr(keras.optimizers, name)(**kwargs))
        for step, (a, b) in enumerate(zip(ours, theirs)):
            for x, y in zip(a, b):
                np.testing.assert_allclose(x, y, rtol=TOL, atol=TOL, err_msg=f"{kwargs}, step {step}")
        embeddings = theirs[-1][0]
        assert np.max(np.abs(embeddings[:8] - ours[0][0][:8])) > 1e-3, kwargs  # it moved


def test_sparse_centered_rmsprop_matches_keras_without_repeated_rows():
    """With rows repeated in a batch Keras' own centered RMSprop can take the root
    of a negative variance (it squares slices before summing them) and fails;
    ours does the same arithmetic, so compare where Keras works."""
    for momentum in (0.0, 0.9):
        kwargs = {"learning_rate": 0.01, "momentum": momentum, "centered": True}
        ours = _sparse_trajectory(kto.RMSprop(**kwargs), repeated_rows=False)
        theirs = _sparse_trajectory(keras.optimizers.RMSprop(**kwargs), repeated_rows=False)
        for a, b in zip(ours, theirs):
            for x, y in zip(a, b):
                np.testing.assert_allclose(x, y, rtol=TOL, atol=TOL, err_msg=str(kwargs))


def test_sparse_check_can_fail():
    """Densifying before squaring (a plausible slip) breaks the sparse match."""

    class DenseFirstAdagrad(kto.Adagrad):
        def update_step(self, gradient, variable, learning_rate):
            super().update_step(tf.convert_to_tensor(gradient), variable, learning_rate)

    ours = _sparse_trajectory(DenseFirstAdagrad(learning_rate=0.1), steps=10)
    theirs = _sparse_trajectory(keras.optimizers.Adagrad(learning_rate=0.1), steps=10)
    assert np.max(np.abs(ours[-1][0] - theirs[-1][0])) > TOL
