"""Every touch of a Keras internal, in one place.

No other module of keras_trainkit imports `keras.src` or reads or writes a
private attribute of a Keras object: they call the functions and classes
here. Each internal is listed in `docs/internals.md` (why we need it, the
fallback if Keras removes it) and pinned by `tests/test_keras_internals.py`,
so a Keras upgrade that moves one fails there first, with a clear message.

The tested Keras minors are bounded in pyproject.toml.
"""

from __future__ import annotations

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
