"""`EarlyStopping`: Keras' callback on Keras' `MonitorCallback`, restoring the
best weights on every end and surviving interruption."""

from __future__ import annotations

import math
import os
import warnings
from typing import Any

import keras
import numpy as np

from keras_trainkit import _keras_hooks as hooks
from keras_trainkit import _validation as v
from keras_trainkit._keras_hooks import MonitorCallbackBase
from keras_trainkit.callbacks._early_stopping_state import (
    BestWeights,
    StateStore,
    weights_filename,
)

__all__ = ["EarlyStopping"]

#: Values of `stop_reason` set when this callback stops training.
OWN_REASONS = ("patience", "stopping_threshold", "divergence_threshold", "non_finite")
_F32_TINY = np.finfo(np.float32).tiny


def _f32(x: Any) -> np.float32:
    # Keras' `monitor_op` converts to float32 tensors, and TensorFlow's CPU
    # kernels flush subnormal inputs to zero: we do both first, so that the
    # decisions are the same on every backend and a value beyond float32's
    # range compares as +-inf (Keras' conversion raises).
    with np.errstate(over="ignore"):
        value = np.float32(x)
    return np.float32(0.0) if value != 0 and abs(value) < _F32_TINY else value


def _as_number(monitor: str, value: Any) -> Any:
    """`value` as one number: a Python float, or a NumPy scalar of a narrower
    float dtype (Keras computes `value - min_delta` in that dtype)."""
    array = keras.ops.convert_to_numpy(value) if keras.ops.is_tensor(value) else np.asarray(value)
    if array.size != 1 or array.dtype.kind not in "fiu":
        raise ValueError(
            f"EarlyStopping monitors one number per epoch, but the logs hold {monitor!r} with shape "
            f"{array.shape} and dtype {array.dtype}. Monitor a scalar, e.g. a per-class metric averaged "
            "into one (`keras.metrics.F1Score(average='macro')` rather than `average=None`). "
            f"Received: monitor={monitor!r}"
        )
    number = array.reshape(())[()]
    return number if array.dtype.kind == "f" and array.dtype.itemsize < 8 else float(number)


class EarlyStopping(MonitorCallbackBase):
    """Stops training when a monitored quantity has stopped improving.

    A drop-in for `keras.callbacks.EarlyStopping` (same first eight arguments,
    defaults and decisions), built like it on Keras' `MonitorCallback`, which
    resolves the direction, `monitor_op` and the sign of `min_delta`. At each
    epoch end from `start_from_epoch` on, the monitored value `x` improves on
    the best `b` when `monitor_op(x - min_delta, b)`, i.e.::

        mode "min":  x + d < b        mode "max":  x - d > b
        d = min_delta                 (min_delta_kind="absolute")
        d = min_delta * |b|           (min_delta_kind="relative")

    in float32 like Keras. `wait` counts the epochs since the last improvement
    that also beat `baseline`; an epoch that does not improve stops training
    once `wait >= patience`. `x` may be a scalar, a 0-d tensor or a
    one-element array (e.g. `keras.metrics.F1Score(average=None)` on one
    output). On top of Keras it restores the best weights however training
    ends (the best epoch's *EMA* weights with `use_ema=True`), stops on NaN/inf
    and on thresholds, can restore the optimizer state, records why it
    stopped, and with `backup_dir` resumes after the process died. See
    `docs/early_stopping.md`.

    Args:
        monitor: Quantity to be monitored. Defaults to `"val_loss"`.
        min_delta: Minimum change that counts as an improvement, >= 0 (Keras
            takes the absolute value of a negative one; this raises).
            Defaults to `0`.
        patience: Epochs with no improvement after which training is stopped,
            an int >= 0. Defaults to `0`.
        verbose: 0 (silent) or 1 (print when stopping and restoring).
            Defaults to `0`.
        mode: `"auto"`, `"min"` or `"max"`. `"auto"` infers the direction like
            Keras (`"loss"`, or the direction the compiled metric of that name
            declares) and raises if it cannot. An unknown mode raises (Keras
            warns and falls back to `"auto"`). Defaults to `"auto"`.
        baseline: If not `None`, training stops unless the model improves on
            this value within `patience` epochs. Defaults to `None`.
        restore_best_weights: Restore the weights of the best epoch when
            training ends. Defaults to `False`.
        start_from_epoch: Epochs to wait before monitoring, an int >= 0.
            Defaults to `0`.
        min_delta_kind: `"absolute"` or `"relative"` (a fraction of the best
            value's magnitude). Defaults to `"absolute"`.
        check_finite: Stop at once when the monitored value is NaN or
            infinite, even during `start_from_epoch`. Defaults to `False`
            (Keras' behaviour: a NaN never improves on a finite best).
        stopping_threshold: Stop once the monitored value is at least this
            good (`<=` in "min" mode, `>=` in "max" mode). Defaults to `None`.
        divergence_threshold: Stop once the monitored value is worse than
            this (`>` in "min" mode, `<` in "max" mode; NaN counts as worse).
            Defaults to `None`.
        restore_optimizer_state: Also restore the optimizer's variables
            (moments, iteration count, learning rate, EMA) of the best epoch.
            Needs `restore_best_weights=True`. Defaults to `False`.
        weights_on_disk: Keep the best weights in a `.npz` file (in
            `backup_dir`, else a temporary directory removed when training
            ends) instead of in memory. Needs `restore_best_weights=True`.
            Defaults to `False`.
        backup_dir: Directory where the state is saved at every epoch end, for
            resuming with `keras.callbacks.BackupAndRestore`. Use one directory
            per run and put this callback *before* `BackupAndRestore` in
            `callbacks`. Emptied when training ends. Defaults to `None`.
        require_monitor: Raise a `ValueError` naming `monitor` when it is
            missing from an epoch's logs, instead of Keras' warning.
            Defaults to `False`.
        best_epoch_key: Key under which the best epoch (0-based, -1 before the
            first monitored epoch) is written into every epoch's logs, so
            `History`, `CSVLogger` and `TensorBoard` record it; `None` to write
            nothing. Defaults to `"best_epoch"`.

    Attributes:
        best: Best monitored value so far, a float (`None` before the first).
        best_epoch: 0-based epoch of `best` (0 before the first one, like Keras).
        wait: Epochs since the last improvement.
        stopped_epoch: Epoch at which this callback stopped training, else 0.
        stop_reason: `None` while training; then one of `"patience"`,
            `"stopping_threshold"`, `"divergence_threshold"`, `"non_finite"`,
            `"external"` (another callback stopped training) or `"completed"`.
        monitor_op: As in Keras: `None` until the first epoch end of each
            `fit()`, then `keras.ops.less` ("min") or `keras.ops.greater`
            ("max"); `min_delta` is then negated in "min" mode, as in Keras.
        direction: `"min"` or `"max"` once `monitor_op` is set, else `None`.
        best_weights: The best epoch's `model.get_weights()` (in memory mode).

    Examples:
        >>> cb = EarlyStopping(monitor="val_loss", patience=3,
        ...                    restore_best_weights=True, check_finite=True)
        >>> model.fit(x, y, validation_split=0.2, epochs=100, callbacks=[cb])
        >>> cb.best_epoch, cb.stop_reason
        (12, 'patience')
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        min_delta: float = 0,
        patience: int = 0,
        verbose: int = 0,
        mode: str = "auto",
        baseline: float | None = None,
        restore_best_weights: bool = False,
        start_from_epoch: int = 0,
        *,
        min_delta_kind: str = "absolute",
        check_finite: bool = False,
        stopping_threshold: float | None = None,
        divergence_threshold: float | None = None,
        restore_optimizer_state: bool = False,
        weights_on_disk: bool = False,
        backup_dir: str | os.PathLike | None = None,
        require_monitor: bool = False,
        best_epoch_key: str | None = "best_epoch",
    ):
        # Everything is validated before Keras' constructor, which warns on an
        # unknown mode and takes the absolute value of min_delta.
        if not isinstance(monitor, str) or not monitor:
            raise ValueError(f"Argument `monitor` must be a non-empty string. Received: monitor={monitor!r}")
        min_delta = v.non_negative("min_delta", min_delta)
        v.one_of("mode", mode, ("auto", "min", "max"))
        self.patience = v.integer("patience", patience, low=0)
        self.verbose = v.integer("verbose", int(verbose) if isinstance(verbose, bool) else verbose, low=0)
        self.baseline = None if baseline is None else v.real("baseline", baseline)
        self.restore_best_weights = v.boolean("restore_best_weights", restore_best_weights)
        self.start_from_epoch = v.integer("start_from_epoch", start_from_epoch, low=0)
        self.min_delta_kind = v.one_of("min_delta_kind", min_delta_kind, ("absolute", "relative"))
        self.check_finite = v.boolean("check_finite", check_finite)
        self.stopping_threshold = None if stopping_threshold is None else v.real(
            "stopping_threshold", stopping_threshold)
        self.divergence_threshold = None if divergence_threshold is None else v.real(
            "divergence_threshold", divergence_threshold)
        self.restore_optimizer_state = v.boolean("restore_optimizer_state", restore_optimizer_state)
        self.weights_on_disk = v.boolean("weights_on_disk", weights_on_disk)
        for name, value in (("restore_optimizer_state", restore_optimizer_state),
                            ("weights_on_disk", weights_on_disk)):
            if value and not restore_best_weights:
                raise ValueError(f"Argument `{name}` needs `restore_best_weights=True`. Received: "
                                 f"{name}={value!r}, restore_best_weights={restore_best_weights!r}")
        if backup_dir is not None and (not isinstance(backup_dir, (str, os.PathLike)) or not os.fspath(backup_dir)):
            raise ValueError(f"Argument `backup_dir` must be None or a non-empty path. Received: backup_dir={backup_dir!r}")
        self.backup_dir = None if backup_dir is None else os.fspath(backup_dir)
        self.require_monitor = v.boolean("require_monitor", require_monitor)
        if best_epoch_key is not None and (not isinstance(best_epoch_key, str) or not best_epoch_key):
            raise ValueError("Argument `best_epoch_key` must be None or a non-empty string. "
                             f"Received: best_epoch_key={best_epoch_key!r}")
        self.best_epoch_key = best_epoch_key
        if mode != "auto":
            self._check_thresholds(mode)
        super().__init__(monitor, mode, min_delta=min_delta)
        self._reset()

    def _reset(self) -> None:
        self.reset_monitor_op()
        self.wait = self.stopped_epoch = self.best_epoch = 0
        self.best: float | None = None
        self.stop_reason: str | None = None
        self._best_weights = BestWeights(self.weights_on_disk, self.backup_dir, self.restore_optimizer_state)
        self._resume_pending = False
        self._halted = False  # resumed a run this callback had already stopped

    @property
    def direction(self) -> str | None:
        """`"min"` or `"max"` once `monitor_op` is set, else `None`."""
        if self.monitor_op is None:
            return None
        return "min" if self.monitor_op is keras.ops.less else "max"

    @property
    def best_weights(self) -> list[np.ndarray] | None:
        """The best epoch's `model.get_weights()`, or `None` (disk mode)."""
        snapshot = self._best_weights.snapshot
        return None if snapshot is None else snapshot.weights

    def __deepcopy__(self, memo: dict) -> EarlyStopping:
        """Keras Tuner deep-copies callbacks per trial: the copy has no model
        and no `params` (as fresh from `Callback.__init__`) and deep copies of
        everything else (`BestWeights` leaves out its temporary directory)."""
        return hooks.copy_callback(self, memo)

    # ------------------------------------------------------------ comparisons
    def _check_thresholds(self, direction: str) -> None:
        s, d = self.stopping_threshold, self.divergence_threshold
        if s is not None and d is not None and not (s < d if direction == "min" else s > d):
            raise ValueError(
                f"Argument `stopping_threshold` must be {'<' if direction == 'min' else '>'} "
                f"`divergence_threshold` in mode {direction!r}. "
                f"Received: stopping_threshold={s!r}, divergence_threshold={d!r}"
            )

    def _resolve_monitor_op(self) -> None:
        try:
            self.resolve_monitor_op()
        except ValueError as error:
            raise ValueError(
                f"EarlyStopping cannot infer whether monitor={self.monitor!r} should be "
                "minimised or maximised: no compiled metric of that name declares a "
                "direction. Pass `mode='min'` or `mode='max'`. Received: mode='auto'"
            ) from error
        self._check_thresholds(self.direction)

    def _compare(self, a: Any, b: Any) -> bool:
        a, b = _f32(a), _f32(b)
        # Keras' two operations, on the host: the same float32 comparison
        # without a tensor conversion (on JAX the first call compiles `less`).
        if self.monitor_op is keras.ops.less:
            return bool(a < b)
        if self.monitor_op is keras.ops.greater:
            return bool(a > b)
        return bool(self.monitor_op(a, b))

    def is_improvement(self, value: Any, reference: Any) -> bool:
        """Whether `value` improves on `reference` (always when it is `None`):
        Keras' `monitor_op(value - min_delta, reference)`, with `min_delta`
        scaled by `|reference|` when `min_delta_kind="relative"`."""
        if reference is None:
            return True
        scale = abs(reference) if self.min_delta_kind == "relative" else 1.0
        return self._compare(value - self.min_delta * scale, reference)

    def _reached(self, value: Any, threshold: float) -> bool:
        """Whether `value` is at least as good as `threshold` (never if NaN)."""
        return bool(_f32(value) == _f32(threshold)) or self._compare(value, threshold)

    def get_monitor_value(self, logs: dict | None) -> Any:
        """The monitored value in `logs` as one number, or `None` (with
        Keras' warning, or a `ValueError` with `require_monitor`) if missing."""
        logs = logs or {}
        value = logs.get(self.monitor)
        if value is not None:
            return _as_number(self.monitor, value)
        available = ",".join(list(logs.keys()))
        if self.require_monitor:
            raise ValueError(f"Argument `monitor` names a quantity missing from the epoch logs "
                             f"(available: {available or 'none'}). Received: monitor={self.monitor!r}")
        warnings.warn(f"Early stopping conditioned on metric `{self.monitor}` which is not "
                      f"available. Available metrics are: {available}", stacklevel=2)
        return None

    # ----------------------------------------------------------------- hooks
    def on_train_begin(self, logs=None):
        # Reusable across `fit()` calls: resuming happens at the first epoch,
        # once `BackupAndRestore` (wherever it is in the list) has set it.
        self._best_weights.release()  # the temporary files of a fit() that raised
        self._reset()
        self._resume_pending = self.backup_dir is not None

    def on_epoch_begin(self, epoch, logs=None):
        if self._resume_pending:
            self._resume_pending = False
            self._resume(epoch)

    def on_epoch_end(self, epoch, logs=None):
        if self.monitor_op is None:
            self._resolve_monitor_op()  # once the metrics are built, like Keras
        if not self._halted:
            self._update(epoch, logs)
        if self.best_epoch_key is not None and logs is not None:
            logs[self.best_epoch_key] = self.best_epoch if self.best is not None else -1
        if self.backup_dir is not None:
            StateStore(self.backup_dir).write_state(epoch + 1, self._state_dict())

    def _update(self, epoch: int, logs: dict | None) -> None:
        current = self.get_monitor_value(logs)
        if current is None:
            return
        if self.check_finite and not math.isfinite(current):
            self._stop(epoch, "non_finite")
            return
        if epoch < self.start_from_epoch:
            return
        self.wait += 1
        improved = self.is_improvement(current, self.best)
        if improved:
            self.best, self.best_epoch = float(current), epoch
            if self.restore_best_weights:
                self._best_weights.keep(epoch, self.model)
            # Only restart the count when beating both the baseline and the previous best.
            if self.baseline is None or self.is_improvement(current, self.baseline):
                self.wait = 0
        if self.stopping_threshold is not None and self._reached(current, self.stopping_threshold):
            self._stop(epoch, "stopping_threshold")
        elif self.divergence_threshold is not None and not self._reached(current, self.divergence_threshold):
            self._stop(epoch, "divergence_threshold")
        elif not improved and self.wait >= self.patience and epoch > 0:
            self._stop(epoch, "patience")

    def _stop(self, epoch: int, reason: str) -> None:
        self.stopped_epoch, self.stop_reason = epoch, reason
        self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self._resume_pending:  # no epoch ran: the run died after its last epoch end
            self._resume_pending = False
            self._resume((self.params or {}).get("epochs"))
        if self.stop_reason is None:
            self.stop_reason = "external" if getattr(self.model, "stop_training", False) else "completed"
        if self.stop_reason in OWN_REASONS and self.verbose > 0:
            detail = "" if self.stop_reason == "patience" else f" ({self.stop_reason})"
            print(f"Epoch {self.stopped_epoch + 1}: early stopping{detail}")
        snapshot = self._best_weights.get() if self.restore_best_weights else None
        if snapshot is not None:
            if self.verbose > 0:
                print(f"Restoring model weights from the end of the best epoch: {self.best_epoch + 1}.")
            snapshot.restore(self.model)
        if self.backup_dir is not None:
            StateStore(self.backup_dir).clear()
        self._best_weights.release()

    # ---------------------------------------------------------------- resume
    def _state_dict(self) -> dict[str, Any]:
        kept = self.restore_best_weights and self.best is not None
        return {
            "monitor": self.monitor, "direction": self.direction, "best": self.best,
            "best_epoch": self.best_epoch, "wait": self.wait, "stopped_epoch": self.stopped_epoch,
            "stop_reason": self.stop_reason, "weights_file": weights_filename(self.best_epoch) if kept else None,
        }

    def _resume(self, start_epoch: int | None) -> None:
        store = StateStore(self.backup_dir)
        state = store.state_to_resume(start_epoch)
        if state is None:
            return
        if state["monitor"] != self.monitor or self.mode not in ("auto", state["direction"] or self.mode):
            raise ValueError(
                f"Argument `backup_dir` holds the state of a run monitoring {state['monitor']!r} "
                f"({state['direction']}), not {self.monitor!r} (mode {self.mode!r}). "
                f"Received: backup_dir={self.backup_dir!r}"
            )
        self.best, self.best_epoch, self.wait = state["best"], state["best_epoch"], state["wait"]
        self.stopped_epoch, self.stop_reason = state["stopped_epoch"], state["stop_reason"]
        if self.restore_best_weights and state["weights_file"]:
            self._best_weights.adopt(store.path(state["weights_file"]))
        if self.stop_reason in OWN_REASONS:
            # The process died after this callback stopped training but
            # before training ended: stop again.
            self._halted = True
            self.model.stop_training = True
