"""Hooks that run inside the compiled train step, without per-batch Python.

Two mechanisms, shared by every keras_trainkit callback that needs in-graph
work:

- `add_train_logs(model, owner, fn)`: `fn()` is traced into the train step and
  the tensors it returns are added to the step's logs (so they reach History
  and the progress bar at no per-step Python cost). It wraps the model's
  `train_step` for the duration of `fit()` and rebuilds the train function.
- `target_optimizers(model)`: the optimizers that really apply updates
  (`LossScaleOptimizer` unwrapped, `MultiOptimizer` expanded).
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable
from typing import Any

import keras

_LOG_FNS = "_keras_trainkit_log_fns"
_ORIGINAL_STEP = "_keras_trainkit_original_train_step"


def target_optimizers(model: keras.Model) -> list[keras.optimizers.Optimizer]:
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None:
        raise ValueError("The model must be compiled with an optimizer before fit().")
    while hasattr(optimizer, "inner_optimizer"):
        optimizer = optimizer.inner_optimizer
    if hasattr(optimizer, "optimizers"):
        return list(optimizer.optimizers)
    return [optimizer]


def strategy_scope(model: keras.Model):
    """The model's `tf.distribute` strategy scope (TensorFlow), else a no-op."""
    strategy = getattr(model, "distribute_strategy", None) if keras.backend.backend() == "tensorflow" else None
    return strategy.scope() if strategy is not None else contextlib.nullcontext()


def check_backend() -> None:
    backend = keras.backend.backend()
    if backend not in ("tensorflow", "torch"):
        raise RuntimeError(
            "keras_trainkit's in-graph callbacks run on the tensorflow and torch "
            f"backends (whose train_step(data) returns logs). Current backend: {backend!r}."
        )


def add_train_logs(model: keras.Model, owner: Any, fn: Callable[[], dict[str, Any]]) -> None:
    """Adds `fn()`'s tensors to the logs of every train step until removed."""
    check_backend()
    fns = model.__dict__.get(_LOG_FNS)
    if fns is None:
        fns = {}
        original = model.train_step

        def train_step(data):
            logs = original(data)
            if isinstance(logs, dict):
                logs = dict(logs)
                for log_fn in list(fns.values()):
                    logs.update(log_fn())
            return logs

        object.__setattr__(model, _LOG_FNS, fns)
        object.__setattr__(model, _ORIGINAL_STEP, original)
        object.__setattr__(model, "train_step", train_step)
    fns[id(owner)] = fn
    model.make_train_function(force=True)


def remove_train_logs(model: keras.Model, owner: Any) -> None:
    fns = model.__dict__.get(_LOG_FNS)
    if fns is None or fns.pop(id(owner), None) is None:
        return
    if not fns:
        original = model.__dict__[_ORIGINAL_STEP]
        for name in (_LOG_FNS, _ORIGINAL_STEP, "train_step"):
            object.__delattr__(model, name)
        if getattr(original, "__self__", None) is not model:
            object.__setattr__(model, "train_step", original)
    model.make_train_function(force=True)


def sibling_callbacks(callback: keras.callbacks.Callback) -> list[keras.callbacks.Callback]:
    """The other callbacks of the running `fit()`, found from Keras' CallbackList.

    Keras does not hand a callback its siblings; the CallbackList that is
    dispatching the current hook is on the call stack. Returns [] when it is not
    (a hook called directly, as in unit tests).
    """
    frame = inspect.currentframe()
    try:
        for _ in range(8):
            frame = frame.f_back if frame is not None else None
            if frame is None:
                break
            owner = frame.f_locals.get("self")
            if isinstance(owner, keras.callbacks.CallbackList) and any(
                c is callback for c in owner.callbacks
            ):
                return [c for c in owner.callbacks if c is not callback]
    finally:
        del frame
    return []
