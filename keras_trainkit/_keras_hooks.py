"""Every touch of a Keras internal, in one place.

No other module of keras_trainkit imports `keras.src` or reads or writes a
private attribute of a Keras object: they call the functions and classes
here. Each internal is listed in `docs/internals.md` (why we need it, the
fallback if Keras removes it) and pinned by `tests/test_keras_internals.py`,
so a Keras upgrade that moves one fails there first, with a clear message.

The tested Keras minors are bounded in pyproject.toml.
"""

from __future__ import annotations

import copy
import inspect
import os
import sys
from typing import Any

import keras

# ---------------------------------------------------------------------------
# Optimizers: the private extension points keras_trainkit's optimizers use.
# ---------------------------------------------------------------------------


class OptimizerHooks(keras.optimizers.Optimizer):
    """Base of keras_trainkit's optimizers: the Keras internals they rely on.

    Subclasses use only the public names below:

    - `variable_index(variable)`: the position of `variable` in the list the
      optimizer was built on (Keras' `_get_variable_index`), to look up the
      slots made with `add_variable_from_reference`/`add_optimizer_variables`.
    - `decoupled_weight_decay`: class attribute; `False` turns off Keras'
      decoupled weight decay (Keras' `_apply_weight_decay`) for optimizers
      whose paper couples the decay into the update.
    - `applies_weight_decay_to(variable)`: whether `weight_decay` applies to
      `variable` (Keras' `_use_weight_decay`, honouring
      `exclude_from_weight_decay()`).
    """

    decoupled_weight_decay = True

    def build(self, variables):
        """Creates the optimizer's state (slots) for `variables`."""
        super().build(variables)

    def update_step(self, gradient, variable, learning_rate):
        """Applies one update of `variable` from its `gradient` at `learning_rate`."""
        raise NotImplementedError

    def variable_index(self, variable: Any) -> int:
        """Index of `variable` among the variables the optimizer was built on."""
        return self._get_variable_index(variable)

    def applies_weight_decay_to(self, variable: Any) -> bool:
        """Whether `weight_decay` applies to `variable`."""
        return bool(self._use_weight_decay(variable))

    def _apply_weight_decay(self, variables):  # Keras internal (see the class doc)
        if self.decoupled_weight_decay:
            super()._apply_weight_decay(variables)


class WholeStepOptimizer(OptimizerHooks):
    """An optimizer whose update is not per variable (e.g. `Lookahead`).

    Keras applies an update through `_backend_update_step(grads, variables,
    learning_rate)`, after its own clipping, loss-scale unscaling, gradient
    accumulation and before its EMA; subclasses implement `whole_step` with
    the same arguments instead of `update_step`.
    """

    def whole_step(self, grads: list[Any], trainable_variables: list[Any], learning_rate: Any) -> None:
        """Applies one update to all `trainable_variables` at once."""
        raise NotImplementedError

    def _backend_update_step(self, grads, trainable_variables, learning_rate):  # Keras internal
        self.whole_step(list(grads), list(trainable_variables), learning_rate)


# ---------------------------------------------------------------------------
# fit(): the running CallbackList, the fit frame, the train function.
# ---------------------------------------------------------------------------


def dispatching_callback_list(callback: Any) -> Any:
    """The `keras.callbacks.CallbackList` dispatching `callback`'s current hook.

    Keras does not hand a callback its siblings; `fit()`'s CallbackList is the
    `self` of the CallbackList method on the call stack (its hooks loop over
    `self.callbacks`). Returns `None` when there is none (a hook called
    directly, as in unit tests).
    """
    codes = _callback_list_codes()
    frame = sys._getframe(1)
    try:
        for _ in range(32):
            if frame is None:
                return None
            if frame.f_code in codes:
                owner = frame.f_locals.get("self")
                if isinstance(owner, keras.callbacks.CallbackList) and any(
                        c is callback for c in owner.callbacks):
                    return owner
            frame = frame.f_back
        return None
    finally:
        del frame


def _callback_list_codes() -> set[Any]:
    cls = keras.callbacks.CallbackList
    return {f.__code__ for f in vars(cls).values() if inspect.isfunction(f)}


class FrameToken:
    """Tells whether a given `fit()` call is still running.

    Holds the call's frame (freed with the token): a frame's address can be
    reused by a later `fit()` once the first one has ended.
    """

    __slots__ = ("frame",)

    def __init__(self, frame: Any):
        self.frame = frame

    def running(self) -> bool:
        """Whether that `fit()` is still on the current thread's call stack."""
        frame = sys._getframe(1)
        try:
            while frame is not None:
                if frame is self.frame:
                    return True
                frame = frame.f_back
            return False
        finally:
            del frame


def fit_frame(model: Any) -> FrameToken | None:
    """The innermost running `model.fit(...)` call on the stack (Keras' trainer
    `fit` is a method named `fit` whose `self` is the model)."""
    frame = sys._getframe(1)
    try:
        while frame is not None:
            if frame.f_code.co_name == "fit" and frame.f_locals.get("self") is model:
                return FrameToken(frame)
            frame = frame.f_back
        return None
    finally:
        del frame


def train_function(model: Any) -> Any:
    """`model.train_function`: what `fit()` calls for every step (read anew each step)."""
    return model.__dict__.get("train_function", getattr(model, "train_function", None))


def set_train_function(model: Any, function: Any) -> None:
    """Sets `model.train_function` (fit() looks it up at every step)."""
    object.__setattr__(model, "train_function", function)


def rebuild_train_function(model: Any) -> Any:
    """`model.make_train_function(force=True)`: a new function, traced lazily
    (Keras stores it as `model.train_function`; it returns it on some backends).

    On JAX the function jitted is a new one, not the bound `model.train_step`
    Keras jits. JAX keeps a traced step by the function it jits and the shapes
    of its arguments, and the bound method is equal in every `fit()`: a step
    traced with our changes would be reused by a later fit without them (and
    the other way round), with the old rates.
    """
    if keras.backend.backend() != "jax":
        model.make_train_function(force=True)
        return model.train_function
    had_own = "train_step" in model.__dict__
    previous = model.__dict__.get("train_step")
    step = model.train_step

    def train_step(*args, **kwargs):
        return step(*args, **kwargs)

    object.__setattr__(model, "train_step", train_step)
    try:
        model.make_train_function(force=True)
    finally:
        if had_own:
            object.__setattr__(model, "train_step", previous)
        else:
            object.__delattr__(model, "train_step")
    return model.train_function


def set_instance_attribute(obj: Any, name: str, value: Any) -> None:
    """Sets an attribute on one Keras object, bypassing Keras' attribute tracking."""
    object.__setattr__(obj, name, value)


def del_instance_attribute(obj: Any, name: str) -> None:
    """Removes an attribute set by `set_instance_attribute`."""
    object.__delattr__(obj, name)


def copy_callback(callback: Any, memo: dict, runtime: tuple[str, ...] = (),
                  shared: tuple[str, ...] = ()) -> Any:
    """`copy.deepcopy` of a callback's configuration (Keras Tuner copies
    callbacks per trial): never its model (Keras' `_model`) or `params`, nor
    its run-time state (`runtime`, reset to `None`); the objects it must share
    with the caller (`shared`) are shared, not copied."""
    clone = callback.__class__.__new__(callback.__class__)
    memo[id(callback)] = clone
    for key, value in callback.__dict__.items():
        if key in ("_model", "params") or key in runtime:
            clone.__dict__[key] = None
        elif key in shared:
            clone.__dict__[key] = value
        else:
            clone.__dict__[key] = copy.deepcopy(value, memo)
    return clone


def default_hook(callback: Any, name: str) -> Any:
    """Keras' no-op `Callback.<name>` bound to `callback`: `CallbackList`
    recognises it (the `_is_default` marker) as "no batch hook", and then
    skips per-batch work (and dispatches asynchronously where it can)."""
    return getattr(keras.callbacks.Callback, name).__get__(callback)


def is_default_hook(method: Any) -> bool:
    """Whether `method` is one of Keras' no-op `Callback` hooks."""
    return bool(getattr(method, "_is_default", False))


# ---------------------------------------------------------------------------
# Optimizer internals read by the callbacks (learning rate, accumulation,
# clipping, wrappers).
# ---------------------------------------------------------------------------


def learning_rate_slot(optimizer: Any) -> Any:
    """What the optimizer holds as its learning rate (`_learning_rate`): a
    variable, a `LearningRateSchedule` or a callable."""
    return optimizer._learning_rate


def set_learning_rate_slot(optimizer: Any, value: Any) -> None:
    """Replaces `_learning_rate` without Keras' setter, which would untrack the
    optimizer's learning-rate variable (and so change what checkpoints hold)."""
    object.__setattr__(optimizer, "_learning_rate", value)


def raw_iterations(optimizer: Any) -> Any:
    """The batch counter (`_iterations`): under gradient accumulation it
    counts batches, where the public `iterations` counts real updates."""
    return optimizer._iterations


def accumulated_gradient(optimizer: Any, variable: Any) -> Any:
    """The gradient accumulator of `variable` (`gradient_accumulation_steps`)."""
    return optimizer._accumulated_gradients[optimizer._get_variable_index(variable)]


def clip_gradients(optimizer: Any, grads: list[Any]) -> list[Any]:
    """The optimizer's own clipping (`clipnorm`, `clipvalue`, `global_clipnorm`)."""
    return optimizer._clip_gradients(grads)


def built_variables(optimizer: Any) -> list[Any]:
    """The variables the optimizer was built on (`_trainable_variables`)."""
    return list(optimizer._trainable_variables)


def unwrap(optimizer: Any) -> Any:
    """`optimizer` with its wrappers removed: each wrapper exposes its inner
    optimizer as `inner_optimizer` (Keras' `LossScaleOptimizer`,
    keras_trainkit's `Lookahead`)."""
    while getattr(optimizer, "inner_optimizer", None) is not None:
        optimizer = optimizer.inner_optimizer
    return optimizer


def inner_optimizers(optimizer: Any) -> list[Any]:
    """The optimizers that really apply updates, unwrapping wrappers.

    A wrapper exposes its inner optimizer as `inner_optimizer` (Keras'
    `LossScaleOptimizer`, keras_trainkit's `Lookahead`); a `MultiOptimizer`
    (and keras_trainkit's `DiscriminativeOptimizer`) lists its sub-optimizers
    in `optimizers`. Public attributes both; kept here as the one place that
    knows the convention.
    """
    optimizer = unwrap(optimizer)
    if isinstance(optimizer, keras.optimizers.MultiOptimizer):
        return [o for inner in optimizer.optimizers for o in inner_optimizers(inner)]
    return [optimizer]


def core_optimizer(optimizer: Any) -> Any:
    """The single optimizer whose clipping and accumulation apply, or `None`
    for a `MultiOptimizer` (each sub-optimizer has its own)."""
    optimizer = unwrap(optimizer)
    return None if isinstance(optimizer, keras.optimizers.MultiOptimizer) else optimizer


def loss_scale_optimizer(optimizer: Any) -> Any:
    """The `LossScaleOptimizer` among `optimizer` and its wrapped ones, or `None`."""
    while optimizer is not None:
        if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
            return optimizer
        optimizer = getattr(optimizer, "inner_optimizer", None)
    return None


# ---------------------------------------------------------------------------
# Layers and MultiOptimizer internals (fine-tuning).
# ---------------------------------------------------------------------------


def flatten_layers(layer: Any, include_self: bool = True) -> list[Any]:
    """`layer` and all its sublayers, recursively (Keras' `_flatten_layers`)."""
    return list(layer._flatten_layers(include_self=include_self))


class SubsetMultiOptimizer(keras.optimizers.MultiOptimizer):
    """Keras' `MultiOptimizer` with the two internals fine-tuning needs.

    - `build_with(var_list, optimizer_of)`: builds with `optimizer_of(var)`
      choosing each variable's sub-optimizer (Keras' build reads its
      `_optimizer_map`).
    - `apply` accepts a subset of the variables it was built on (Keras'
      requires a gradient for every one), dispatching through Keras'
      variable-to-optimizer index.
    """

    def optimizer_map(self) -> Any:
        """The `OptimizerMap` the optimizer was created with."""
        return self._optimizer_map

    def build_with(self, var_list: list[Any], optimizer_of: Any) -> None:
        """Builds on `var_list`, with `optimizer_of(variable)` picking each sub-optimizer."""
        optimizer_map = self._optimizer_map
        object.__setattr__(self, "_optimizer_map", optimizer_of)
        try:
            keras.optimizers.MultiOptimizer.build(self, var_list)
        finally:
            object.__setattr__(self, "_optimizer_map", optimizer_map)

    def apply(self, grads, trainable_variables=None):
        if trainable_variables is None or not self.built:
            return super().apply(grads, trainable_variables)
        trainable_variables = list(trainable_variables)
        if len(trainable_variables) == len(self._trainable_variables_indices):
            return super().apply(grads, trainable_variables)
        if len(grads) == 0:
            return
        self._check_variables_are_known(trainable_variables)
        per_optimizer: list[list[Any]] = [[] for _ in self._inner_optimizers]
        for grad, var in zip(grads, trainable_variables):
            per_optimizer[self._var_to_optimizer_idx[self._var_key(var)]].append((grad, var))
        for optimizer, pairs in zip(self._inner_optimizers, per_optimizer):
            if pairs:
                optimizer.apply([g for g, _ in pairs], [w for _, w in pairs])
        self._iterations.assign_add(1)


def optimizer_map_entry(optimizer_map: Any, key: str) -> Any:
    """The optimizer stored under `key` in a `keras.optimizers.OptimizerMap`."""
    return optimizer_map._optimizer_map[key]


# ---------------------------------------------------------------------------
# TensorBoard: Keras' callback without per-batch work, epoch scalars as records.
# ---------------------------------------------------------------------------


def tensorboard_train_dir(callback: Any) -> str:
    """The `train` run directory of a `keras.callbacks.TensorBoard`."""
    return os.fspath(getattr(callback, "_train_dir", os.path.join(callback.log_dir, "train")))


class TensorBoardHooks(keras.callbacks.TensorBoard):
    """Keras' TensorBoard with its epoch scalars handed to `write_scalars`.

    Subclasses implement `write_scalars(run_dir, scalars, step)`. Internals
    used: `_should_trace`, `_should_write_train_graph`,
    `_write_keras_model_train_graph`, `_log_epoch_metrics` (overridden),
    `_collect_learning_rate`, `_compute_steps_per_second`, `_train_dir`,
    `_val_dir`, `_pop_writer`.
    """

    def traces_batches(self) -> bool:
        """Whether the profiler is set to trace some batches (`profile_batch`)."""
        return bool(self._should_trace)

    def write_train_graph_once(self) -> None:
        """Writes the train graph now if Keras has not yet (it does after the first batch)."""
        if self._should_write_train_graph:
            self._write_keras_model_train_graph()
            self._should_write_train_graph = False

    def write_scalars(self, run_dir: str, scalars: dict[str, float], step: int) -> None:
        raise NotImplementedError

    def _log_epoch_metrics(self, epoch, logs):  # Keras internal: the epoch scalars
        if not logs:
            return
        train_logs = {k: v for k, v in logs.items() if not k.startswith("val_")}
        val_logs = {k[4:]: v for k, v in logs.items() if k.startswith("val_")}
        train_logs = self._collect_learning_rate(train_logs)
        if self.write_steps_per_second:
            train_logs["steps_per_second"] = self._compute_steps_per_second()
        self.write_scalars(os.fspath(self._train_dir), {f"epoch_{k}": v for k, v in train_logs.items()}, epoch)
        self.write_scalars(os.fspath(self._val_dir), {f"epoch_{k}": v for k, v in val_logs.items()}, epoch)

    def on_test_end(self, logs=None):
        optimizer = self.model.optimizer
        if logs and optimizer is not None and hasattr(optimizer, "iterations"):
            step = int(keras.ops.convert_to_numpy(optimizer.iterations))
            self.write_scalars(os.fspath(self._val_dir),
                               {f"evaluation_{k}_vs_iterations": v for k, v in logs.items()}, step)
        self._pop_writer()


# ---------------------------------------------------------------------------
# Metrics, EMA and monitoring (EarlyStopping).
# ---------------------------------------------------------------------------


def compiled_metrics(model: Any) -> list[Any]:
    """The metrics inside `compile()`'s containers, which Keras' `MonitorCallback`
    searches in `mode="auto"` (no public API lists them)."""
    from keras.src.trainers.compile_utils import CompileMetrics, MetricsList

    out: list[Any] = []
    for m in getattr(model, "metrics", None) or []:
        if isinstance(m, (CompileMetrics, MetricsList)):
            out.extend(m.metrics)
    return out


def metric_direction(metric: Any) -> str | None:
    """`"up"`, `"down"` or `None`: the direction a Keras metric declares."""
    return getattr(metric, "_direction", None)


def ema_averages(optimizer: Any) -> list[Any] | None:
    """The optimizer's moving averages of the model variables (`use_ema=True`),
    one per variable it was built on, or `None` when it keeps none."""
    if optimizer is None or not getattr(optimizer, "use_ema", False):
        return None
    return getattr(optimizer, "_model_variables_moving_average", None) or None


def monitor_callback_class() -> type:
    """Keras' `MonitorCallback` (the base of its EarlyStopping, ModelCheckpoint
    and ReduceLROnPlateau), which Keras does not export."""
    from keras.src.callbacks.monitor_callback import MonitorCallback

    return MonitorCallback


# ---------------------------------------------------------------------------
# EarlyStopping: Keras' MonitorCallback as a base class.
# ---------------------------------------------------------------------------


class MonitorCallbackBase(monitor_callback_class()):
    """Keras' `MonitorCallback` (not exported), its private steps behind
    public names.

    `MonitorCallback.__init__(monitor, mode, baseline, min_delta)` sets
    `monitor`, `mode`, `best = baseline`, `min_delta = abs(min_delta)` and
    `monitor_op = None`; it *warns* on an unknown `mode`, so validate first.
    Subclasses use:

    - `resolve_monitor_op()` (Keras' `_set_monitor_op`): sets `monitor_op` to
      `keras.ops.less` (mode `"min"`; `"auto"` with a `loss` monitor or a
      compiled metric of that name declaring direction `"down"`) or
      `keras.ops.greater`, and negates `min_delta` with `ops.less`; raises a
      `ValueError` in `"auto"` mode when it finds no direction.
    - `reset_monitor_op()`: undoes it, to resolve again in the next `fit()`.
    - `is_improvement(value, reference)`: Keras' `_is_improvement`, i.e.
      `reference is None or monitor_op(value - min_delta, reference)`;
      override it to change the rule (Keras' `_is_improvement` calls it).
    """

    def resolve_monitor_op(self) -> None:
        """Sets `monitor_op` and the sign of `min_delta` (see the class doc)."""
        self._set_monitor_op()

    def reset_monitor_op(self) -> None:
        """`monitor_op = None` and `min_delta >= 0`, as after `__init__`."""
        self.monitor_op = None
        self.min_delta = abs(self.min_delta)

    def is_improvement(self, value: Any, reference: Any) -> bool:
        """Whether `value` improves on `reference` (Keras' rule)."""
        return bool(super()._is_improvement(value, reference))

    def _is_improvement(self, monitor_value, reference_value):  # Keras internal
        return self.is_improvement(monitor_value, reference_value)


# ---------------------------------------------------------------------------
# GradientNormLogger: threading its state through JAX's stateless train step.
# ---------------------------------------------------------------------------


def add_model_metric(model: Any, metric: Any) -> None:
    """Puts `metric` among `model.metrics` (Keras' `_metrics` list), so that
    `model.metrics_variables` includes its variables: Keras' JAX trainer
    passes those into and out of every train step (read at each epoch start,
    written back by `jax_state_sync()`). Not saved with the model (saving walks
    attributes, and `_metrics` is skipped)."""
    model._metrics.append(metric)


def remove_model_metric(model: Any, metric: Any) -> None:
    """Undoes `add_model_metric`."""
    model._metrics[:] = [m for m in model._metrics if m is not metric]


def jax_step_metrics_values(state: Any) -> list[Any]:
    """The metrics' variable values in the state a JAX `train_step(state, data)`
    returns: `(trainable, non_trainable, optimizer, metrics)` values, the
    metrics' in `model.metrics_variables` order."""
    return list(state[3])


def jax_step_state_with_metrics(state: Any, metrics_values: list[Any]) -> Any:
    """`state` with its metrics' values replaced (same structure)."""
    return (*tuple(state)[:3], list(metrics_values))
