"""The optimizers' shared building blocks (`keras_trainkit/optimizers/_blocks.py`)
against closed-form NumPy, one block at a time.

The optimizers built from them are checked end to end against Keras (bitwise
for the drop-ins) and optax in the other test_optimizers_* files; these tests
pin each block's own contract, so a change to a block fails here by name.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from keras_trainkit import optimizers as kto
from keras_trainkit.optimizers import _blocks as blocks

RNG = np.random.default_rng(0)


def _values(n=12, shape=(5,)):
    return [RNG.standard_normal(shape).astype("float32") for _ in range(n)]


def _owner(*variables):
    """A built optimizer whose assign* the blocks use (any optimizer does)."""
    optimizer = kto.SGD(0.1)
    optimizer.build(list(variables))
    return optimizer


def test_update_moment_is_an_exponential_moving_average_with_an_offset():
    for offset in (0.0, 1e-3):
        moment = keras.Variable(np.zeros(5, "float32"))
        owner = _owner(moment)
        expected = np.zeros(5)
        for x in _values():
            returned = blocks.update_moment(owner, moment, ops.convert_to_tensor(x), 0.9, offset)
            expected = 0.9 * expected + 0.1 * x + offset
            assert returned is moment
            np.testing.assert_allclose(moment.numpy(), expected, rtol=1e-5, atol=1e-6)


def test_moving_average_and_trace():
    average = np.zeros(5)
    trace = keras.Variable(np.zeros(5, "float32"))
    trace_value_first = keras.Variable(np.zeros(5, "float32"))
    owner = _owner(trace, trace_value_first)
    expected_trace = np.zeros(5)
    for x in _values():
        new = blocks.moving_average(ops.convert_to_tensor(average.astype("float32")), x, 0.8)
        average = 0.8 * average + 0.2 * x
        np.testing.assert_allclose(ops.convert_to_numpy(new), average, rtol=1e-5, atol=1e-6)
        blocks.update_trace(owner, trace, x, 0.7)
        blocks.update_trace(owner, trace_value_first, x, 0.7, value_first=True)
        expected_trace = 0.7 * expected_trace + x
        np.testing.assert_allclose(trace.numpy(), expected_trace, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(trace_value_first.numpy(), expected_trace, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("nesterov", [False, True])
def test_apply_momentum(nesterov):
    w = keras.Variable(np.ones(5, "float32"))
    trace = keras.Variable(np.zeros(5, "float32"))
    owner = _owner(w, trace)
    w_ref, b_ref = np.ones(5), np.zeros(5)
    for g in _values():
        step = -0.1 * g
        blocks.apply_momentum(owner, w, trace, ops.convert_to_tensor(step), 0.9, nesterov)
        b_ref = 0.9 * b_ref + step
        w_ref = w_ref + (0.9 * b_ref + step if nesterov else b_ref)
        np.testing.assert_allclose(w.numpy(), w_ref, rtol=1e-5, atol=1e-6)


def test_bias_correction_and_debias_remove_the_zero_start():
    t = ops.convert_to_tensor(np.arange(1, 30, dtype="float32"))
    np.testing.assert_allclose(
        ops.convert_to_numpy(blocks.bias_correction(0.9, t)), 1 - 0.9 ** np.arange(1, 30), rtol=1e-6
    )
    # A zero-started average of a constant, debiased, is that constant at every step.
    moment = keras.Variable(np.zeros(3, "float32"))
    owner = _owner(moment)
    constant = np.array([2.0, -1.0, 0.5], "float32")
    for step in range(1, 30):
        blocks.update_moment(owner, moment, constant, 0.99)
        count = ops.convert_to_tensor(float(step))
        factor = blocks.debias(0.99, count, "float32", scale=0.5)
        np.testing.assert_allclose(
            ops.convert_to_numpy(ops.multiply(moment, factor)), 0.5 * constant, rtol=2e-5
        )
    assert ops.convert_to_numpy(factor).dtype == np.float32


def test_nesterov_debiased_is_optaxs_formula():
    m = RNG.standard_normal(4).astype("float32")
    g = RNG.standard_normal(4).astype("float32")
    b1, t, scale = 0.8, 3.0, 0.01
    expected = scale * (b1 * m / (1 - b1 ** (t + 1)) + (1 - b1) * g / (1 - b1**t))
    got = blocks.nesterov_debiased(
        ops.convert_to_tensor(m), ops.convert_to_tensor(g), b1, ops.convert_to_tensor(t),
        ops.convert_to_tensor(scale),
    )
    np.testing.assert_allclose(ops.convert_to_numpy(got), expected, rtol=1e-5)


def test_scale_by_root():
    u = RNG.standard_normal(6).astype("float32")
    s = RNG.uniform(0.0, 2.0, 6).astype("float32")
    got = blocks.scale_by_root(u, s, epsilon=1e-3, scale=2.0, epsilon_root=1e-4)
    np.testing.assert_allclose(
        ops.convert_to_numpy(got), u / (np.sqrt(s * 2.0 + 1e-4) + 1e-3), rtol=1e-5
    )
    np.testing.assert_allclose(
        ops.convert_to_numpy(blocks.scale_by_root(u, s, epsilon=0.0, epsilon_root=0.1)),
        u / np.sqrt(s + 0.1),
        rtol=1e-5,
    )
    # Zero epsilons add no operation: a sparse numerator stays sparse (Adagrad's row update).
    rows = tf.IndexedSlices(tf.ones((2, 3)), tf.constant([0, 2]), tf.constant([4, 3]))
    sparse = blocks.scale_by_root(rows, tf.fill((4, 3), 4.0), epsilon=0.0)
    assert isinstance(sparse, tf.IndexedSlices)
    np.testing.assert_allclose(sparse.values.numpy(), np.full((2, 3), 0.5))


def test_add_decayed_weights_is_coupled_decay_and_honours_exclusions():
    kernel = keras.Variable(np.full(3, 2.0, "float32"), name="kernel")
    bias = keras.Variable(np.full(3, 2.0, "float32"), name="bias")
    update = ops.ones(3)
    lars = kto.LARS(weight_decay=0.1)
    lars.exclude_from_weight_decay(var_names=["bias"])
    lars.build([kernel, bias])
    np.testing.assert_allclose(
        ops.convert_to_numpy(blocks.add_decayed_weights(lars, update, kernel)), [1.2] * 3, rtol=1e-6
    )
    assert blocks.add_decayed_weights(lars, update, bias) is update
    assert blocks.add_decayed_weights(kto.NovoGrad(), update, kernel) is update  # no decay set
    # An optimizer on Keras' decoupled decay must not decay a second time.
    with pytest.raises(TypeError, match="decoupled_weight_decay = False"):
        blocks.add_decayed_weights(kto.Adam(weight_decay=0.1), update, kernel)


def test_norms_and_trust_ratio():
    w = RNG.standard_normal((3, 4)).astype("float32")
    u = RNG.standard_normal((3, 4)).astype("float32")
    np.testing.assert_allclose(float(blocks.l2_norm(w)), np.linalg.norm(w), rtol=1e-6)
    np.testing.assert_allclose(float(blocks.squared_l2_norm(w)), np.sum(w**2), rtol=1e-6)
    ratio = blocks.trust_ratio(keras.Variable(w), u, 0.01, 1e-3)
    np.testing.assert_allclose(
        float(ratio), 0.01 * np.linalg.norm(w) / (np.linalg.norm(u) + 1e-3), rtol=1e-6
    )
    zeros = np.zeros((3, 4), "float32")
    assert float(blocks.trust_ratio(keras.Variable(zeros), u, 0.01, 0.0)) == 1.0
    assert float(blocks.trust_ratio(keras.Variable(w), zeros, 0.01, 0.0)) == 1.0


def test_dense_gradient_sums_repeated_rows_and_casts():
    variable = keras.Variable(np.zeros((4, 2), "float16"))
    rows = tf.IndexedSlices(
        tf.constant([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]), tf.constant([1, 3, 1]), tf.constant([4, 2])
    )
    assert blocks.is_indexed_slices(rows) and not blocks.is_indexed_slices(tf.ones(2))
    dense = blocks.dense_gradient(rows, variable)
    assert dense.dtype == tf.float16
    np.testing.assert_array_equal(dense.numpy(), [[0, 0], [6, 8], [0, 0], [3, 4]])
    assert blocks.dense_gradient(tf.ones((4, 2)), variable).dtype == tf.float16


def test_update_count_is_one_based():
    optimizer = _owner(keras.Variable(np.zeros(2, "float32")))
    assert float(blocks.update_count(optimizer)) == 1.0
    optimizer.iterations.assign(41)
    assert float(blocks.update_count(optimizer, "float16")) == 42.0
