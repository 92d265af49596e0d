"""Every optimizer honours Keras' base arguments and every form of learning rate.

Each check compares the optimizer with an argument against the same optimizer
without it, fed inputs transformed by an independent NumPy reference (clipped
or scaled gradients, averaged pairs, a manual decay, an EMA of the reference
trajectory). The drop-ins are also compared with Keras itself in
test_optimizers_dropins.py.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from keras_trainkit import optimizers as kto

# The update rules (keras_trainkit.optimizers also exports the discriminative
# optimizer, a MultiOptimizer of these, tested in test_fine_tuning.py).
RULES = sorted(n for n in kto.__all__ if n not in ("DiscriminativeOptimizer", "discriminative_optimizer"))


STEPS = 8
LR = 0.01


def make(name, **kwargs):
    """A fresh optimizer with rate LR (the inner rate for Lookahead)."""
    if name == "Lookahead":
        learning_rate = kwargs.pop("learning_rate", LR)
        return kto.Lookahead(kto.Adam(learning_rate), sync_period=3, **kwargs)
    if name == "LARS":
        kwargs.setdefault("learning_rate", 1.0)
    return getattr(kto, name)(**{"learning_rate": LR, **kwargs})


def grad_sequence(steps=STEPS, seed=0):
    rng = np.random.default_rng(seed)
    return [
        [3 * rng.standard_normal((3, 2)).astype("float32"), rng.standard_normal(2).astype("float32")]
        for _ in range(steps)
    ]


def trajectory(optimizer, grads, before_step=None, finalize=False):
    rng = np.random.default_rng(123)
    variables = [
        keras.Variable(rng.standard_normal((3, 2)).astype("float32"), name="kernel"),
        keras.Variable(rng.standard_normal(2).astype("float32"), name="bias"),
    ]
    optimizer.build(variables)
    out = []
    for step, g in enumerate(grads):
        if before_step is not None:
            before_step(step, variables)
        optimizer.apply([keras.ops.convert_to_tensor(x) for x in g], variables)
        out.append([v.numpy() for v in variables])
    if finalize:
        optimizer.finalize_variable_values(variables)
        out.append([v.numpy() for v in variables])
    return out


def assert_same(a, b, what):
    for step, (xs, ys) in enumerate(zip(a, b)):
        for x, y in zip(xs, ys):
            np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6, err_msg=f"{what}, step {step}")


def clip_by_norm(g, c):
    return g * min(1.0, c / float(np.sqrt(np.sum(g.astype("float64") ** 2))))


@pytest.mark.parametrize("name", RULES)
def test_base_arguments_act_as_in_keras(name):
    grads = grad_sequence()
    plain = trajectory(make(name), grads)
    moved = max(float(np.max(np.abs(a - b))) for a, b in zip(plain[-1], trajectory(make(name), grads[:1])[0]))
    assert moved > 1e-4

    # clipnorm: each gradient clipped to an L2 norm of 1.
    assert_same(
        trajectory(make(name, clipnorm=1.0), grads),
        trajectory(make(name), [[clip_by_norm(x, 1.0) for x in g] for g in grads]),
        "clipnorm",
    )
    # clipvalue: elementwise clipping.
    assert_same(
        trajectory(make(name, clipvalue=0.5), grads),
        trajectory(make(name), [[np.clip(x, -0.5, 0.5) for x in g] for g in grads]),
        "clipvalue",
    )

    # global_clipnorm: all gradients scaled together.
    def clip_global(g, c=2.0):
        norm = float(np.sqrt(sum(np.sum(x.astype("float64") ** 2) for x in g)))
        return [x * min(1.0, c / norm) for x in g]

    assert_same(
        trajectory(make(name, global_clipnorm=2.0), grads),
        trajectory(make(name), [clip_global(g) for g in grads]),
        "global_clipnorm",
    )
    # loss_scale_factor: gradients of the scaled loss are unscaled first.
    assert_same(
        trajectory(make(name, loss_scale_factor=8.0), [[8.0 * x for x in g] for g in grads]),
        plain,
        "loss_scale_factor",
    )
    # gradient_accumulation_steps: one update with the mean of each pair.
    accumulated = trajectory(make(name, gradient_accumulation_steps=2), grads)[1::2]
    pairs = [[(a + b) / 2 for a, b in zip(g1, g2)] for g1, g2 in zip(grads[::2], grads[1::2])]
    assert_same(accumulated, trajectory(make(name), pairs), "gradient_accumulation_steps")

    # use_ema: finalize_variable_values writes the EMA of the trajectory.
    with_ema = trajectory(make(name, use_ema=True, ema_momentum=0.8), grads, finalize=True)
    assert_same(with_ema[:-1], plain, "use_ema (trajectory)")
    ema = [x.copy() for x in plain[0]]
    for weights in plain[1:]:
        ema = [0.8 * e + 0.2 * w for e, w in zip(ema, weights)]
    assert_same([with_ema[-1]], [ema], "use_ema (average)")


def test_decoupled_weight_decay():
    grads = grad_sequence()

    def decay(step, variables):
        for v in variables:
            v.assign(v * (1.0 - LR * 0.1))

    for name in ["RAdam", "AdaBelief", "Yogi", "Adan", "Lookahead", "Adam", "SGD"]:
        assert_same(
            trajectory(make(name, weight_decay=0.1), grads),
            trajectory(make(name), grads, before_step=decay),
            f"{name} weight_decay",
        )


def test_coupled_weight_decay_honours_exclusions():
    """LARS and NovoGrad decay inside the update (checked against optax in
    test_optimizers_optax.py); excluded variables move as without decay."""
    grads = grad_sequence()
    for name in ["LARS", "NovoGrad"]:
        plain = trajectory(make(name), grads)
        decayed = make(name, weight_decay=0.1)
        decayed.exclude_from_weight_decay(var_names=["bias"])
        decayed = trajectory(decayed, grads)
        np.testing.assert_allclose(decayed[-1][1], plain[-1][1], rtol=1e-6, atol=1e-7)
        assert np.max(np.abs(decayed[-1][0] - plain[-1][0])) > 1e-5, name


@pytest.mark.parametrize("name", RULES)
def test_float_schedule_and_callable_learning_rates_agree(name):
    grads = grad_sequence()
    schedule = keras.optimizers.schedules.ExponentialDecay(LR, decay_steps=2, decay_rate=0.5)
    if name == "LARS":
        schedule = keras.optimizers.schedules.ExponentialDecay(1.0, decay_steps=2, decay_rate=0.5)
    reference = make(name, learning_rate=float(schedule.initial_learning_rate))

    def set_rate(step, variables):
        reference.learning_rate = float(schedule(step))

    expected = trajectory(reference, grads, before_step=set_rate)
    assert_same(trajectory(make(name, learning_rate=schedule), grads), expected, "schedule")

    rate = keras.Variable(float(schedule.initial_learning_rate), trainable=False)

    def set_variable(step, variables):
        rate.assign(float(schedule(step)))

    callable_rate = make(name, learning_rate=lambda: rate)
    assert_same(trajectory(callable_rate, grads, before_step=set_variable), expected, "callable")


def test_sparse_gradients_are_densified_by_the_optax_family():
    """IndexedSlices from an Embedding (rows repeated, most rows absent) give the
    same trajectory as the equivalent dense gradient, as in optax."""
    import tensorflow as tf

    rng = np.random.default_rng(4)
    batches = [(rng.integers(0, 6, size=(4, 3)), rng.standard_normal((4, 1))) for _ in range(6)]

    def run(name, densify):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((3,), dtype="int32"), keras.layers.Embedding(12, 2),
                                  keras.layers.Flatten(), keras.layers.Dense(1)])
        optimizer = make(name)
        for x, y in batches:
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(tf.square(model(x) - y))
            grads = tape.gradient(loss, model.trainable_variables)
            assert isinstance(grads[0], tf.IndexedSlices)
            if densify:
                grads = [tf.convert_to_tensor(g) for g in grads]
            optimizer.apply(grads, model.trainable_variables)
        return [v.numpy() for v in model.trainable_variables]

    # (Lookahead hands the gradients, sparse or not, to its inner optimizer.)
    for name in ["RAdam", "AdaBelief", "Yogi", "Adan", "LARS", "NovoGrad"]:
        sparse, dense = run(name, False), run(name, True)
        for a, b in zip(sparse, dense):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7, err_msg=name)
