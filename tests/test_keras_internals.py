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


def test_learning_rate_slot_is_what_the_optimizer_applies():
    """`Optimizer._learning_rate` holds the float's variable (tracked in
    `variables`) or the schedule that `learning_rate` evaluates at
    `iterations`; replacing it directly keeps the variable tracked, and the
    public setter would untrack it (why lr_find does not use it)."""
    w = keras.Variable(np.zeros(1, "float32"))
    opt = keras.optimizers.SGD(0.5)
    opt.build([w])
    own = hooks.learning_rate_slot(opt)
    assert isinstance(own, keras.Variable) and any(v is own for v in opt.variables)
    schedule = keras.optimizers.schedules.ExponentialDecay(0.25, 1, 0.5)
    hooks.set_learning_rate_slot(opt, schedule)
    opt.apply([keras.ops.ones((1,))], [w])  # update 0: rate 0.25
    opt.apply([keras.ops.ones((1,))], [w])  # update 1: rate 0.125
    assert float(w.numpy()[0]) == -0.375
    assert any(v is own for v in opt.variables)
    hooks.set_learning_rate_slot(opt, own)
    assert float(opt.learning_rate) == 0.5
    opt.learning_rate = schedule  # Keras' setter untracks the variable
    assert not any(v is own for v in opt.variables)


# -- fit(): the CallbackList, the fit frame, the train function ---------------------------
def _tiny(optimizer=None):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer or keras.optimizers.SGD(0.1), "mse")
    return model


def _xy(n=8):
    return np.ones((n, 2), "float32"), np.ones((n, 1), "float32")


def test_fit_order_of_events_and_what_it_reads_per_step():
    """fit(): `make_train_function()` before `on_train_begin`; the CallbackList
    is `self` of the frame dispatching a hook; `model.history` is a new History
    set before `on_train_begin`; `on_epoch_begin` before the first step; the
    step looked up as `model.train_function` at every step; validation through
    `model.evaluate` with the same CallbackList; the `fit` frame has `self`."""
    model, events = _tiny(), []
    histories = []

    class Probe(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            events.append(("train_begin", model.train_function is not None))
            histories.append(model.history)
            self.callback_list = hooks.dispatching_callback_list(self)
            self.frame = hooks.fit_frame(model)
            original = model.train_function

            def counted(*args, **kwargs):
                events.append("step")
                return original(*args, **kwargs)

            hooks.set_train_function(model, counted)
            self.evaluate = model.evaluate

            def evaluate(*args, **kwargs):
                events.append(("evaluate", kwargs.get("callbacks") is self.callback_list))
                return self.evaluate(*args, **kwargs)

            hooks.set_instance_attribute(model, "evaluate", evaluate)

        def on_epoch_begin(self, epoch, logs=None):
            events.append("epoch_begin")

    probe = Probe()
    x, y = _xy()
    model.fit(x, y, batch_size=4, epochs=1, verbose=0, validation_data=(x, y), callbacks=[probe])
    assert isinstance(probe.callback_list, keras.callbacks.CallbackList)
    assert probe in probe.callback_list.callbacks
    assert probe.frame is not None and not probe.frame.running()
    assert events == [("train_begin", True), "epoch_begin", "step", "step", ("evaluate", True)]
    assert isinstance(histories[0], keras.callbacks.History) and model.history is histories[0]
    hooks.del_instance_attribute(model, "evaluate")
    model.fit(x, y, verbose=0)
    assert model.history is not histories[0]
    assert hooks.dispatching_callback_list(probe) is None  # not inside a hook


def test_train_function_captures_train_step_when_made():
    """TF/JAX trainers capture `model.train_step` in `make_train_function`;
    `make_train_function(force=True)` stores the new function as `train_function`."""
    model, calls = _tiny(), []
    original = model.train_step

    def train_step(data):
        calls.append(1)
        return original(data)

    hooks.set_instance_attribute(model, "train_step", train_step)
    function = hooks.rebuild_train_function(model)
    hooks.del_instance_attribute(model, "train_step")
    assert function is model.train_function
    x, y = _xy()
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert calls  # traced through the captured train_step


def test_optimizer_learning_rate_slot_and_callable_protocol():
    """`Optimizer._learning_rate`: the float's tracked variable; a callable in
    that slot is called with no argument to get the rate, and Keras' setter
    calls its `assign` for a number."""
    opt = keras.optimizers.SGD(0.1)
    slot = hooks.learning_rate_slot(opt)
    assert isinstance(slot, keras.Variable) and any(v is slot for v in opt.variables)

    class Callable:
        assigned = None

        def __call__(self):
            return keras.ops.convert_to_tensor(0.25)

        def assign(self, value):
            Callable.assigned = value

    hooks.set_learning_rate_slot(opt, Callable())
    assert float(opt.learning_rate) == pytest.approx(0.25)
    opt.learning_rate = 0.5
    assert Callable.assigned == 0.5
    assert any(v is slot for v in opt.variables)  # still tracked
    hooks.set_learning_rate_slot(opt, slot)


def test_optimizer_iterations_accumulators_clipping_and_build_list():
    """`_iterations` counts batches under gradient accumulation (`iterations`
    counts updates); `_accumulated_gradients[_get_variable_index(v)]`;
    `_clip_gradients(grads)`; `_trainable_variables`."""
    w = keras.Variable(np.ones(3, "float32"))
    opt = keras.optimizers.SGD(0.1, gradient_accumulation_steps=2, clipnorm=1.0)
    opt.build([w])
    for _ in range(3):
        opt.apply([keras.ops.ones(3)], [w])
    assert int(hooks.raw_iterations(opt)) == 3 and int(opt.iterations) == 1
    assert tuple(hooks.accumulated_gradient(opt, w).shape) == (3,)
    clipped = hooks.clip_gradients(opt, [keras.ops.ones(3) * 10.0])
    assert float(keras.ops.norm(clipped[0])) == pytest.approx(1.0, rel=1e-5)
    assert hooks.built_variables(opt)[0] is w


def test_wrappers_expose_inner_optimizers():
    """`LossScaleOptimizer.inner_optimizer` and `MultiOptimizer.optimizers`."""
    sgd, adam = keras.optimizers.SGD(0.1), keras.optimizers.Adam(0.1)
    lso = keras.optimizers.LossScaleOptimizer(sgd)
    assert hooks.unwrap(lso) is sgd and hooks.loss_scale_optimizer(lso) is lso
    multi = keras.optimizers.MultiOptimizer(keras.optimizers.OptimizerMap(sgd, {"x": adam}))
    assert set(map(id, hooks.inner_optimizers(multi))) == {id(sgd), id(adam)}
    assert hooks.core_optimizer(multi) is None and hooks.core_optimizer(lso) is sgd


def test_multi_optimizer_internals_for_subsets():
    """`MultiOptimizer._optimizer_map` (read by build), `_trainable_variables_indices`,
    `_var_to_optimizer_idx`, `_var_key`, `_inner_optimizers`,
    `_check_variables_are_known`, `_iterations`; `OptimizerMap._optimizer_map`."""
    a, b = keras.Variable(np.ones(2, "float32")), keras.Variable(np.ones(2, "float32"))
    sgd, adam = keras.optimizers.SGD(0.1), keras.optimizers.SGD(0.2)
    optimizer_map = keras.optimizers.OptimizerMap(sgd, {"group1": adam})
    multi = hooks.SubsetMultiOptimizer(optimizer_map)
    multi.build_with([a, b], lambda w: sgd if w is a else adam)
    assert hooks.optimizer_map_entry(multi.optimizer_map(), "group1") is adam
    multi.apply([keras.ops.ones(2)], [b])  # a subset
    np.testing.assert_allclose(keras.ops.convert_to_numpy(b), [0.8, 0.8], rtol=1e-6)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(a), [1.0, 1.0])
    assert int(multi.iterations) == 1


def test_flatten_layers():
    """`Layer._flatten_layers(include_self=...)`."""
    inner = keras.Sequential([keras.layers.Dense(1, name="d")], name="inner")
    outer = keras.Sequential([keras.Input((2,)), inner], name="outer")
    names = [layer.name for layer in hooks.flatten_layers(outer, include_self=False)]
    assert "inner" in names and "d" in names and "outer" not in names
    assert hooks.flatten_layers(outer)[0] is outer


def test_default_callback_hooks_are_recognised_by_callback_list():
    """Keras' no-op `Callback` hooks carry `_is_default`, which `CallbackList`
    reads to skip per-batch work."""

    class CB(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            pass

    cb = CB()
    assert not hooks.is_default_hook(cb.on_train_batch_end)
    cb.on_train_batch_end = hooks.default_hook(cb, "on_train_batch_end")
    assert hooks.is_default_hook(cb.on_train_batch_end)


def test_callback_model_attribute_for_copies():
    """`Callback._model` holds the model (`copy_callback` leaves it out)."""
    import copy

    cb, model = keras.callbacks.Callback(), _tiny()
    cb.set_model(model)
    assert cb.__dict__["_model"] is model
    clone = hooks.copy_callback(cb, {})
    assert clone.model is None and clone.params is None
    assert copy.deepcopy(cb).__class__ is keras.callbacks.Callback


def test_tensorboard_internals(tmp_path):
    """TensorBoard's `_should_trace`, `_should_write_train_graph`,
    `_write_keras_model_train_graph`, `_log_epoch_metrics(epoch, logs)`,
    `_collect_learning_rate`, `_compute_steps_per_second`, `_train_dir`,
    `_val_dir`, `_pop_writer`."""
    tb = keras.callbacks.TensorBoard(str(tmp_path))
    tb.set_model(_tiny())  # sets _should_write_train_graph
    for name in ("_should_write_train_graph", "_write_keras_model_train_graph", "_collect_learning_rate",
                 "_compute_steps_per_second", "_pop_writer", "_should_trace"):
        assert hasattr(tb, name), name
    assert list(inspect.signature(tb._log_epoch_metrics).parameters) == ["epoch", "logs"]
    assert hooks.tensorboard_train_dir(tb).endswith("train") and str(tb._val_dir).endswith("validation")


def test_epoch_iterator_reads_the_batch_count_each_epoch():
    """BatchSizeScheduler's live batch count: Keras' epoch iterator does its
    arithmetic with a PyDataset's `num_batches` when each epoch starts (pinned
    in detail by tests/test_batch_size.py)."""
    from keras_trainkit import callbacks as C
    from keras_trainkit import schedules as S
    from keras_trainkit.data import ScheduledBatches

    data = ScheduledBatches(np.ones((12, 2), "float32"), np.ones((12, 1), "float32"), batch_size=2)
    steps = []
    model = _tiny()
    model.fit(data, epochs=2, verbose=0, callbacks=[
        C.BatchSizeScheduler(S.BatchSizeIncrease(2, factor=2, step_size=1), data),
        keras.callbacks.LambdaCallback(on_train_batch_end=lambda b, logs: steps.append(b))])
    assert steps == [0, 1, 2, 3, 4, 5, 0, 1, 2]


def test_no_module_outside_the_hooks_touches_keras_internals():
    """No other module imports `keras.src` or reads or writes a private
    attribute that a Keras class or object has."""
    import ast
    import os

    import keras_trainkit

    model = _tiny()
    model.optimizer.build(model.trainable_variables)
    owners = [keras.optimizers.Optimizer, keras.optimizers.MultiOptimizer, keras.optimizers.LossScaleOptimizer,
              keras.Model, keras.layers.Layer, keras.callbacks.Callback, keras.callbacks.CallbackList,
              keras.callbacks.TensorBoard, keras.callbacks.EarlyStopping, keras.Variable, keras.metrics.Metric,
              keras.optimizers.schedules.LearningRateSchedule, keras.utils.PyDataset, model, model.optimizer,
              model.layers[0]]
    private = {n for o in owners for n in dir(o) if n.startswith("_") and not n.startswith("__")}
    private |= {n for o in (model, model.optimizer) for n in vars(o) if n.startswith("_") and not n.startswith("__")}
    root = os.path.dirname(keras_trainkit.__file__)
    found = []
    for dirpath, _, files in os.walk(root):
        for name in files:
            if not name.endswith(".py") or name == "_keras_hooks.py":
                continue
            path = os.path.join(dirpath, name)
            with open(path) as f:
                tree = ast.parse(f.read())
            for node in ast.walk(tree):
                if isinstance(node, ast.Attribute) and node.attr in private:
                    found.append(f"{os.path.relpath(path, root)}:{node.lineno}: .{node.attr}")
                elif isinstance(node, (ast.Import, ast.ImportFrom)):
                    names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
                    found += [f"{os.path.relpath(path, root)}:{node.lineno}: import {n}" for n in names
                              if n.startswith("keras.src")]
    assert found == []


# -- GradientNormLogger: state threaded through JAX's stateless step ----------------------
def test_model_metrics_list_feeds_metrics_variables_and_is_not_saved(tmp_path):
    """`Model._metrics`: a metric appended there is in `model.metrics` (so in
    `reset_metrics()` and `get_metrics_result()`) and its variables in
    `model.metrics_variables`; saving skips it."""

    class Probe(keras.metrics.Metric):
        def __init__(self):
            super().__init__(name="probe")
            self.total = self.add_variable(shape=(2,), initializer="zeros", name="total")

        def update_state(self, *args, **kwargs):
            pass

        def result(self):
            return {}

    model, probe = _tiny(), Probe()
    x, y = _xy()
    model.fit(x, y, verbose=0)
    count = len(model.metrics_variables)
    hooks.add_model_metric(model, probe)
    assert model.metrics[-1] is probe and model.metrics_variables[-1] is probe.total
    assert len(model.metrics_variables) == count + 1
    model.save(str(tmp_path / "m.keras"))
    hooks.remove_model_metric(model, probe)
    assert probe not in model.metrics and len(model.metrics_variables) == count
    loaded = keras.saving.load_model(str(tmp_path / "m.keras"))
    assert len(loaded.metrics_variables) <= count


@pytest.mark.skipif(__import__("importlib").util.find_spec("jax") is None, reason="jax is not installed")
def test_jax_trainer_threads_metrics_variables_through_the_step():
    """Keras' JAX trainer: `train_step(state, data) -> (logs, state)` with
    state `(trainable, non_trainable, optimizer, metrics)` values, the metrics'
    in `model.metrics_variables` order; `fit()` reads that state at each epoch
    start (after `on_epoch_begin`) and writes it back with `jax_state_sync()`
    (also in its `finally`); `make_train_function` fixes the metrics' output
    shardings under a distribution, as `make_test_function` does (made once,
    reused by `evaluate()`); `optimizer.stateless_apply(optimizer_variables,
    grads, trainable_variables)` applies in a `StatelessScope`."""
    from keras.src.backend.jax.trainer import JAXTrainer

    assert list(inspect.signature(JAXTrainer.train_step).parameters) == ["self", "state", "data"]
    train_step = inspect.getsource(JAXTrainer.train_step)
    assert "(\n            trainable_variables,\n            non_trainable_variables,\n            optimizer_variables,\n" \
           "            metrics_variables,\n        ) = state" in train_step
    assert "self.optimizer.stateless_apply(" in train_step
    fit = inspect.getsource(JAXTrainer.fit)
    assert fit.index("callbacks.on_epoch_begin(epoch)") < fit.index("metrics_variables=True")
    assert "self._jax_state_synced = True" in fit and "finally:\n            self.jax_state_sync()" in fit
    assert "zip(self.metrics_variables, metrics_variables)" in inspect.getsource(JAXTrainer.jax_state_sync)
    assert "self.metrics_variables" in inspect.getsource(JAXTrainer._get_state_sharding_spec)
    assert "self.make_test_function()" in inspect.getsource(JAXTrainer.evaluate)
    params = list(inspect.signature(keras.optimizers.Optimizer.stateless_apply).parameters)
    assert params == ["self", "optimizer_variables", "grads", "trainable_variables"]
    state = ([1], [2], [3], [4, 5])
    assert hooks.jax_step_metrics_values(state) == [4, 5]
    assert hooks.jax_step_state_with_metrics(state, [6, 7]) == ([1], [2], [3], [6, 7])


def test_torch_facts_the_eager_paths_rely_on():
    """What torch's eager paths (`callbacks/_eager.py`, the rate table of
    `_lr_control`, GradientNormLogger's rows) assume: Keras' torch variables
    assign in place (the tensor's `_version` counter moves, so a rate table
    built for an older base rate is seen to be stale); Keras' torch trainer
    runs one step per train-function call (the bound on the updates a table
    must cover); `torch._foreach_norm` takes an output dtype."""
    torch = pytest.importorskip("torch")
    from keras.src.backend.torch import core as torch_core
    from keras.src.backend.torch import trainer as torch_trainer

    assert "self.value.copy_(value)" in inspect.getsource(torch_core.Variable._direct_assign)
    make = inspect.getsource(torch_trainer.TorchTrainer.make_train_function)
    assert "`steps_per_execution` must be 1 with the PyTorch backend" in make
    t = torch.zeros(3)
    before = t._version
    t.copy_(torch.ones(3))
    assert t._version == before + 1
    norms = torch._foreach_norm([torch.full((4,), 2.0), torch.ones(2, dtype=torch.float16)], 2, dtype=torch.float32)
    assert [n.dtype for n in norms] == [torch.float32, torch.float32]
    assert [float(n) for n in norms] == [4.0, pytest.approx(2 ** 0.5)]


@pytest.mark.skipif(__import__("importlib").util.find_spec("jax") is None, reason="jax is not installed")
def test_jax_reuses_a_step_traced_for_an_equal_function():
    """Why `rebuild_train_function` jits a function of its own on JAX: Keras' JAX trainer
    jits the bound `self.train_step` (captured when the function is made), and
    JAX reuses the trace of an equal function with arguments of the same shapes
    while the first jitted function lives (our session holds Keras' own
    function to restore it). A function of its own is traced anew."""
    import jax
    from keras.src.backend.jax.trainer import JAXTrainer

    assert "step_fn = self.train_step" in inspect.getsource(JAXTrainer.make_train_function)

    class Model:
        traces = 0

        def train_step(self, x):
            Model.traces += 1
            return x + 1

    model = Model()
    first = jax.jit(model.train_step)
    first(1.0)
    jax.jit(model.train_step)(1.0)  # another bound method, equal to the first
    assert Model.traces == 1

    def own(x):
        return model.train_step(x)

    jax.jit(own)(1.0)
    assert Model.traces == 2


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(pytest.main([__file__, "-q"]))
