"""Canaries: every Keras internal keras_trainkit relies on still has the shape we use.

Each test names the internal it pins (see docs/internals.md). When a Keras
upgrade breaks keras_trainkit, the failure shows here first, saying which
internal moved. Only `keras_trainkit/_keras_hooks.py` may touch these.
"""

from __future__ import annotations

import inspect

import keras
import numpy as np
import pytest

from keras_trainkit import _keras_hooks as hooks


def _built_sgd():
    w = keras.Variable(np.ones(3, "float32"))
    opt = keras.optimizers.SGD(0.1)
    opt.build([w])
    return opt, w


# -- optimizers --------------------------------------------------------------------
def test_optimizer_get_variable_index():
    """`Optimizer._get_variable_index(variable)`: index in the build list."""
    opt, w = _built_sgd()
    assert opt._get_variable_index(w) == 0


def test_optimizer_use_weight_decay_and_apply_weight_decay():
    """`Optimizer._use_weight_decay(variable)` and `_apply_weight_decay(variables)`."""
    opt = keras.optimizers.SGD(0.1, weight_decay=0.5)
    w = keras.Variable(np.ones(3, "float32"), name="kernel")
    opt.build([w])
    assert opt._use_weight_decay(w) is True
    opt.exclude_from_weight_decay(var_names=["kernel"])
    assert opt._use_weight_decay(w) is False
    assert "variables" in inspect.signature(keras.optimizers.Optimizer._apply_weight_decay).parameters


def test_optimizer_backend_update_step_signature():
    """`Optimizer._backend_update_step(grads, trainable_variables, learning_rate)`."""
    params = list(inspect.signature(keras.optimizers.Optimizer._backend_update_step).parameters)
    assert params == ["self", "grads", "trainable_variables", "learning_rate"]


# -- metrics, EMA, monitoring ------------------------------------------------------------
def test_compile_metrics_containers_and_metric_direction():
    """`keras.src.trainers.compile_utils.CompileMetrics/MetricsList` hold the
    compiled metrics; a metric's `_direction` is "up" or "down"."""
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse", metrics=[keras.metrics.AUC(name="auc"), "mae"])
    model.fit(np.zeros((4, 2)), np.zeros((4, 1)), verbose=0)
    found = {m.name: hooks.metric_direction(m) for m in hooks.compiled_metrics(model)}
    assert found["auc"] == "up"
    assert found["mae"] == "down"


def test_ema_moving_averages_attribute():
    """`Optimizer._model_variables_moving_average`: one average per built variable."""
    w = keras.Variable(np.ones(3, "float32"))
    opt = keras.optimizers.SGD(0.1, use_ema=True)
    opt.build([w])
    averages = hooks.ema_averages(opt)
    assert len(averages) == 1 and tuple(averages[0].shape) == (3,)
    assert hooks.ema_averages(keras.optimizers.SGD(0.1)) is None


def test_monitor_callback_class():
    """`keras.src.callbacks.monitor_callback.MonitorCallback`, base of Keras' EarlyStopping."""
    cls = hooks.monitor_callback_class()
    assert issubclass(keras.callbacks.EarlyStopping, cls)
    for name in ("_set_monitor_op", "_is_improvement"):
        assert callable(getattr(cls, name, None)), name


# -- EarlyStopping: MonitorCallback as a base class ----------------------------------
@pytest.fixture(scope="module")
def metrics_model():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse", metrics=[keras.metrics.AUC(name="auc"), "mae"])
    model.evaluate(np.zeros((4, 2)), np.zeros((4, 1)), verbose=0)  # builds the metrics
    return model


def _monitor(model=None, **kwargs):
    cb = hooks.MonitorCallbackBase(**kwargs)
    cb.set_model(model)
    return cb


def test_monitor_callback_init():
    """`MonitorCallback.__init__(monitor, mode, baseline, min_delta)`: attributes,
    `abs(min_delta)`, and a warning (not an error) on an unknown mode."""
    params = list(inspect.signature(hooks.monitor_callback_class().__init__).parameters)
    assert params == ["self", "monitor", "mode", "baseline", "min_delta"]
    cb = hooks.MonitorCallbackBase("auc", "max", baseline=0.5, min_delta=-0.1)
    assert (cb.monitor, cb.mode, cb.best, cb.min_delta, cb.monitor_op) == ("auc", "max", 0.5, 0.1, None)
    with pytest.warns(UserWarning, match="unknown"):
        assert hooks.MonitorCallbackBase(mode="minimum").mode == "auto"


@pytest.mark.parametrize(("mode", "monitor", "op"), [
    ("min", "acc", "less"), ("max", "val_loss", "greater"), ("auto", "val_loss", "less"),
    ("auto", "loss", "less"), ("auto", "val_auc", "greater"), ("auto", "mae", "less"),
])
def test_monitor_callback_set_monitor_op(metrics_model, mode, monitor, op):
    """`MonitorCallback._set_monitor_op()`: `monitor_op` is `keras.ops.less` or
    `keras.ops.greater` (from the mode, or the compiled metric's `_direction`),
    and `min_delta` is negated with `ops.less`."""
    cb = _monitor(metrics_model, monitor=monitor, mode=mode, min_delta=0.25)
    cb.resolve_monitor_op()
    assert cb.monitor_op is getattr(keras.ops, op)
    assert cb.min_delta == (-0.25 if op == "less" else 0.25)
    cb.reset_monitor_op()
    assert cb.monitor_op is None and cb.min_delta == 0.25


def test_monitor_callback_set_monitor_op_raises_without_direction(metrics_model):
    """`_set_monitor_op()` raises a ValueError (and sets nothing) in "auto" mode
    for a monitor that is neither a loss nor a compiled metric with a direction."""
    cb = _monitor(metrics_model, monitor="val_mystery", min_delta=0.25)
    with pytest.raises(ValueError, match="val_mystery"):
        cb.resolve_monitor_op()
    assert cb.monitor_op is None and cb.min_delta == 0.25


def test_monitor_callback_is_improvement():
    """`MonitorCallback._is_improvement(value, reference)` is
    `reference is None or monitor_op(value - min_delta, reference)`; Keras'
    subclasses call `_is_improvement`, which our base routes to `is_improvement`."""
    cb = _monitor(monitor="loss", min_delta=0.1)
    cb.resolve_monitor_op()
    assert cb.is_improvement(5.0, None) is True
    assert [cb.is_improvement(x, 1.0) for x in (0.8, 0.9, 0.95)] == [True, False, False]
    cb = _monitor(monitor="auc", mode="max", min_delta=0.1)
    cb.resolve_monitor_op()
    assert [cb.is_improvement(x, 1.0) for x in (1.2, 1.1, 1.05)] == [True, False, False]

    class Always(hooks.MonitorCallbackBase):
        def is_improvement(self, value, reference):
            return True

    assert Always()._is_improvement(0.0, 1.0) is True


# -- lr_find: the optimizer's `_learning_rate` ------------------------------------


def test_learning_rate_object_is_what_the_optimizer_applies():
    """`Optimizer._learning_rate` holds the float's variable (tracked in
    `variables`) or the schedule that `learning_rate` evaluates at
    `iterations`; replacing it directly keeps the variable tracked, and the
    public setter would untrack it (why lr_find does not use it)."""
    w = keras.Variable(np.zeros(1, "float32"))
    opt = keras.optimizers.SGD(0.5)
    opt.build([w])
    own = hooks.learning_rate_object(opt)
    assert isinstance(own, keras.Variable) and any(v is own for v in opt.variables)
    schedule = keras.optimizers.schedules.ExponentialDecay(0.25, 1, 0.5)
    hooks.set_learning_rate_object(opt, schedule)
    opt.apply([keras.ops.ones((1,))], [w])  # update 0: rate 0.25
    opt.apply([keras.ops.ones((1,))], [w])  # update 1: rate 0.125
    assert float(w.numpy()[0]) == -0.375
    assert any(v is own for v in opt.variables)
    hooks.set_learning_rate_object(opt, own)
    assert float(opt.learning_rate) == 0.5
    opt.learning_rate = schedule  # Keras' setter untracks the variable
    assert not any(v is own for v in opt.variables)

if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(pytest.main([__file__, "-q"]))
