"""The optimizers reach Keras' internals only through `keras_trainkit._keras_hooks`,
and `Lookahead` exposes its inner optimizer as `inner_optimizer`."""

from __future__ import annotations

import pathlib
import re

import keras
import numpy as np
import pytest

from keras_trainkit import _keras_hooks as hooks
from keras_trainkit import optimizers as kto

# The update rules (keras_trainkit.optimizers also exports the discriminative
# optimizer, a MultiOptimizer of these, tested in test_fine_tuning.py).
RULES = sorted(n for n in kto.__all__ if n not in ("DiscriminativeOptimizer", "discriminative_optimizer"))


PACKAGE = pathlib.Path(kto.__file__).parent


def _keras_private_names():
    """Private attributes of Keras' optimizer base class, built with every option."""
    w = keras.Variable(np.ones(3, "float32"))
    optimizer = keras.optimizers.Optimizer(
        learning_rate=0.1, use_ema=True, gradient_accumulation_steps=2
    )
    optimizer.build([w])
    names = set(dir(type(optimizer))) | set(vars(optimizer))
    return {n for n in names if n.startswith("_") and not n.startswith("__")}


def test_optimizer_modules_use_no_keras_internals():
    private = _keras_private_names()
    assert {"_get_variable_index", "_use_weight_decay", "_variables"} <= private  # it can fail
    for path in sorted(PACKAGE.glob("*.py")):
        source = path.read_text()
        assert "keras.src" not in source, path.name
        used = set(re.findall(r"\.(_[A-Za-z]\w*)", source)) | set(
            re.findall(r"""["'](_[A-Za-z]\w*)["']""", source)
        )
        assert not used & private, (path.name, sorted(used & private))


def test_every_optimizer_rests_on_the_hooks():
    for name in RULES:
        assert issubclass(getattr(kto, name), hooks.OptimizerHooks), name
    assert issubclass(kto.Lookahead, hooks.WholeStepOptimizer)
    coupled = {n for n in RULES if not getattr(kto, n).decoupled_weight_decay}
    assert coupled == {"LARS", "NovoGrad"}


def test_lookahead_inner_optimizer_is_read_only_and_survives_a_round_trip():
    inner = keras.optimizers.Adam(0.01)
    opt = kto.Lookahead(inner, sync_period=3)
    assert opt.inner_optimizer is inner and opt.optimizer is inner
    with pytest.raises(AttributeError):
        opt.inner_optimizer = keras.optimizers.SGD()
    assert opt.inner_optimizer is inner
    restored = kto.Lookahead.from_config(opt.get_config())
    assert type(restored.inner_optimizer) is keras.optimizers.Adam
    assert restored.inner_optimizer.get_config() == inner.get_config()
    # The wrapper's learning rate is still the inner one's.
    opt.learning_rate = 0.02
    assert float(inner.learning_rate.numpy()) == pytest.approx(0.02)


def test_keras_swap_ema_weights_unwraps_lookahead_through_inner_optimizer():
    """Keras' SwapEMAWeights (like its TensorBoard) unwraps `inner_optimizer`, as
    for LossScaleOptimizer: it swaps in the inner optimizer's average."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((32, 3)).astype("float32")
    y = x.sum(axis=1, keepdims=True)

    def fit(optimizer):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
        model.compile(optimizer, "mse")
        swap = keras.callbacks.SwapEMAWeights(swap_on_epoch=True)
        model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[swap])
        return model

    # Found through inner_optimizer (before it existed, Keras raised here) ...
    inner = keras.optimizers.SGD(0.05, use_ema=True, ema_momentum=0.5)
    model = fit(kto.Lookahead(inner, sync_period=2))
    averages = hooks.ema_averages(inner)
    np.testing.assert_array_equal(model.trainable_variables[0].numpy(), averages[0].numpy())
    # ... so the wrapper's own average is not what Keras swaps in.
    with pytest.raises(ValueError, match="use_ema=True"):
        fit(kto.Lookahead(keras.optimizers.SGD(0.05), sync_period=2, use_ema=True))
