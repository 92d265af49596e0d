"""`EarlyStopping`: Keras' callback, restoring the best weights on every end and
surviving interruption."""

from __future__ import annotations

import copy
import math
import os
import shutil
import tempfile
import warnings
from typing import Any

import keras
import numpy as np

from keras_trainkit import _validation as v
from keras_trainkit.callbacks._early_stopping_state import (
    Snapshot,
    StateStore,
    load_snapshot,
    save_snapshot,
    weights_filename,
)

MODES = ("auto", "min", "max")
MIN_DELTA_KINDS = ("absolute", "relative")
#: Values of `stop_reason` set when this callback stops training.
OWN_REASONS = ("patience", "stopping_threshold", "divergence_threshold", "non_finite")


_F32_TINY = np.finfo(np.float32).tiny


def _f32(x: float) -> np.float32:
    # Keras compares through `keras.ops.less/greater`, i.e. in float32, with
    # TensorFlow's CPU kernels on the default backend, which flush subnormal
    # inputs to zero: so do we, to take the same decisions.
    with np.errstate(over="ignore"):
        value = np.float32(x)
    if value != 0 and abs(value) < _F32_TINY:
        return np.float32(0.0)
    return value


def _compiled_metrics(model: Any) -> list[Any]:
    """The metrics Keras' `MonitorCallback` searches in `mode="auto"`."""
    # No public API lists the metrics inside `compile()`'s containers.
    from keras.src.trainers.compile_utils import CompileMetrics, MetricsList

    out: list[Any] = []
    for m in getattr(model, "metrics", None) or []:
        if isinstance(m, (CompileMetrics, MetricsList)):
            out.extend(m.metrics)
    return out


class EarlyStopping(keras.callbacks.Callback):
    """Stops training when a monitored quantity has stopped improving.

    A drop-in for `keras.callbacks.EarlyStopping`: the first eight arguments,
    their defaults and what Keras documents about them are the same. Each
    epoch (from `start_from_epoch` on) the monitored value `x` counts as an
    improvement over the best value `b` when::

        mode "min":  x + d < b        mode "max":  x - d > b
        d = min_delta                 (min_delta_kind="absolute")
        d = min_delta * |b|           (min_delta_kind="relative")

    compared in float32 like Keras. `wait` counts the epochs since the last
    improvement that also beat `baseline`; training stops once
    `wait >= patience`. On top of Keras it:

    - restores the best weights whenever training ends (early stop, last
      epoch, another callback stopping it); when the optimizer keeps an EMA
      (`use_ema=True`), the trainable weights get the best epoch's *EMA*
      values, which Keras' callback overwrites with raw ones;
    - stops at once on a non-finite value (`check_finite`), on reaching
      `stopping_threshold`, or on passing `divergence_threshold`;
    - optionally restores the optimizer's variables with the weights, and
      keeps the best weights on disk instead of in memory;
    - records `best`, `best_epoch`, `stopped_epoch`, `stop_reason` and writes
      the best epoch into the epoch logs (`best_epoch_key`);
    - with `backup_dir`, saves its state at each epoch end so that a run
      resumed by `keras.callbacks.BackupAndRestore` after the process died
      keeps its patience counter, best value and best weights.

    Args:
        monitor: Quantity to be monitored. Defaults to `"val_loss"`.
        min_delta: Minimum change that counts as an improvement, >= 0 (Keras
            takes the absolute value of a negative one; this raises).
            Defaults to `0`.
        patience: Epochs with no improvement after which training is stopped,
            an int >= 0. Defaults to `0`.
        verbose: 0 (silent) or 1 (print when stopping and restoring).
            Defaults to `0`.
        mode: `"auto"`, `"min"` or `"max"`. `"auto"` infers the direction from
            the monitored name like Keras (`"loss"`, or the direction of the
            compiled metric of that name, e.g. `"accuracy"`, `"acc"`, `"auc"`
            maximise) and raises if it cannot. An unknown mode raises (Keras
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
            this (`>` in "min" mode, `<` in "max" mode). Defaults to `None`.
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
        best: Best monitored value so far (`None` before the first one).
        best_epoch: 0-based epoch of `best` (0 before the first one, like Keras).
        wait: Epochs since the last improvement.
        stopped_epoch: Epoch at which this callback stopped training, else 0.
        stop_reason: `None` while training; then one of `"patience"`,
            `"stopping_threshold"`, `"divergence_threshold"`, `"non_finite"`,
            `"external"` (another callback stopped training) or `"completed"`
            (all epochs ran).
        direction: `"min"` or `"max"` once resolved (at the first epoch end).
        best_weights: The best epoch's `model.get_weights()` (in memory mode).

    Example:
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
        super().__init__()
        if not isinstance(monitor, str) or not monitor:
            raise ValueError(f"Argument `monitor` must be a non-empty string. Received: monitor={monitor!r}")
        self.monitor = monitor
        self.min_delta = v.non_negative("min_delta", min_delta)
        self.patience = v.integer("patience", patience, low=0)
        self.verbose = v.integer("verbose", int(verbose) if isinstance(verbose, bool) else verbose, low=0)
        self.mode = v.one_of("mode", mode, MODES)
        self.baseline = None if baseline is None else v.real("baseline", baseline)
        self.restore_best_weights = v.boolean("restore_best_weights", restore_best_weights)
        self.start_from_epoch = v.integer("start_from_epoch", start_from_epoch, low=0)
        self.min_delta_kind = v.one_of("min_delta_kind", min_delta_kind, MIN_DELTA_KINDS)
        self.check_finite = v.boolean("check_finite", check_finite)
        self.stopping_threshold = (
            None if stopping_threshold is None else v.real("stopping_threshold", stopping_threshold)
        )
        self.divergence_threshold = (
            None if divergence_threshold is None else v.real("divergence_threshold", divergence_threshold)
        )
        self.restore_optimizer_state = v.boolean("restore_optimizer_state", restore_optimizer_state)
        self.weights_on_disk = v.boolean("weights_on_disk", weights_on_disk)
        for name, value in (("restore_optimizer_state", restore_optimizer_state),
                            ("weights_on_disk", weights_on_disk)):
            if value and not restore_best_weights:
                raise ValueError(
                    f"Argument `{name}` needs `restore_best_weights=True`. "
                    f"Received: {name}={value!r}, restore_best_weights={restore_best_weights!r}"
                )
        if backup_dir is not None and (
            not isinstance(backup_dir, (str, os.PathLike)) or not os.fspath(backup_dir)
        ):
            raise ValueError(
                "Argument `backup_dir` must be None or a non-empty path. "
                f"Received: backup_dir={backup_dir!r}"
            )
        self.backup_dir = None if backup_dir is None else os.fspath(backup_dir)
        self.require_monitor = v.boolean("require_monitor", require_monitor)
        if best_epoch_key is not None and (not isinstance(best_epoch_key, str) or not best_epoch_key):
            raise ValueError(
                "Argument `best_epoch_key` must be None or a non-empty string. "
                f"Received: best_epoch_key={best_epoch_key!r}"
            )
        self.best_epoch_key = best_epoch_key
        if self.mode != "auto":
            self._check_thresholds(self.mode)
        self._reset()

    # ------------------------------------------------------------------ state
    def _reset(self) -> None:
        self.wait = 0
        self.stopped_epoch = 0
        self.best: float | None = None
        self.best_epoch = 0
        self.stop_reason: str | None = None
        self.direction: str | None = None  # "min" or "max" once resolved
        self._snapshot: Snapshot | None = None  # best weights, memory mode
        self._snapshot_file: str | None = None  # best weights, on disk
        self._tmp_dir: str | None = None
        self._resume_pending = False
        self._halted = False  # resumed a run this callback had already stopped

    @property
    def best_weights(self) -> list[np.ndarray] | None:
        """The best epoch's `model.get_weights()`, or `None` (disk mode)."""
        return None if self._snapshot is None else self._snapshot.weights

    def __deepcopy__(self, memo: dict) -> EarlyStopping:
        # Keras Tuner deep-copies callbacks per trial: copy the configuration
        # and results, never the model or this instance's temporary files.
        new = self.__class__.__new__(self.__class__)
        memo[id(self)] = new
        for key, value in self.__dict__.items():
            if key in ("_model", "_tmp_dir"):
                new.__dict__[key] = None
            elif key == "_snapshot_file" and self._tmp_dir is not None:
                new.__dict__[key] = None
            else:
                new.__dict__[key] = copy.deepcopy(value, memo)
        return new

    def _store(self) -> StateStore | None:
        return None if self.backup_dir is None else StateStore(self.backup_dir)

    # ------------------------------------------------------------ comparisons
    def _check_thresholds(self, direction: str) -> None:
        s, d = self.stopping_threshold, self.divergence_threshold
        if s is None or d is None:
            return
        if (direction == "min" and not s < d) or (direction == "max" and not s > d):
            raise ValueError(
                f"Argument `stopping_threshold` must be {'<' if direction == 'min' else '>'} "
                f"`divergence_threshold` in mode {direction!r}. "
                f"Received: stopping_threshold={s!r}, divergence_threshold={d!r}"
            )

    def _resolve_direction(self) -> None:
        if self.mode != "auto":
            self.direction = self.mode
            return
        name = self.monitor.removeprefix("val_")
        direction = "min" if name == "loss" else None
        for m in _compiled_metrics(self.model):
            if m.name == name and hasattr(m, "_direction"):
                direction = "max" if m._direction == "up" else "min"
        if direction is None:
            raise ValueError(
                f"EarlyStopping cannot infer whether monitor={self.monitor!r} should be "
                "minimised or maximised: no compiled metric of that name declares a "
                "direction. Pass `mode='min'` or `mode='max'`. Received: mode='auto'"
            )
        self._check_thresholds(direction)
        self.direction = direction

    def _is_improvement(self, current: float, reference: float | None) -> bool:
        if reference is None:
            return True
        delta = self.min_delta if self.min_delta_kind == "absolute" else self.min_delta * abs(reference)
        if self.direction == "min":
            return bool(_f32(current + delta) < _f32(reference))
        return bool(_f32(current - delta) > _f32(reference))

    def _better_or_equal(self, current: float, threshold: float) -> bool:
        if self.direction == "min":
            return bool(_f32(current) <= _f32(threshold))
        return bool(_f32(current) >= _f32(threshold))

    def get_monitor_value(self, logs: dict | None) -> float | None:
        logs = logs or {}
        value = logs.get(self.monitor)
        if value is None:
            available = ",".join(list(logs.keys()))
            if self.require_monitor:
                raise ValueError(
                    f"Argument `monitor` names a quantity missing from the epoch logs "
                    f"(available: {available or 'none'}). Received: monitor={self.monitor!r}"
                )
            warnings.warn(
                f"Early stopping conditioned on metric `{self.monitor}` which is not "
                f"available. Available metrics are: {available}",
                stacklevel=2,
            )
            return None
        return float(value)

    # ------------------------------------------------------------- snapshots
    def _take_snapshot(self) -> Snapshot:
        model = self.model
        snap = Snapshot(weights=[np.array(w, copy=True) for w in model.get_weights()])
        optimizer = getattr(model, "optimizer", None)
        averages = getattr(optimizer, "_model_variables_moving_average", None)
        if getattr(optimizer, "use_ema", False) and averages:
            snap.ema = [None if a is None else np.array(a.numpy(), copy=True) for a in averages]
        if self.restore_optimizer_state and optimizer is not None:
            snap.optimizer = [np.array(o.numpy(), copy=True) for o in optimizer.variables]
        return snap

    def _record_best_weights(self, epoch: int) -> None:
        snap = self._take_snapshot()
        store = self._store()
        if store is not None:
            name = store.write_snapshot(epoch, snap)
            if self.weights_on_disk:
                self._snapshot_file = store.path(name)
        elif self.weights_on_disk:
            if self._tmp_dir is None:
                self._tmp_dir = tempfile.mkdtemp(prefix="keras_trainkit_early_stopping_")
            path = os.path.join(self._tmp_dir, weights_filename(epoch))
            save_snapshot(path, snap)
            if self._snapshot_file and self._snapshot_file != path:
                os.remove(self._snapshot_file)
            self._snapshot_file = path
        if not self.weights_on_disk:
            self._snapshot = snap

    def _restore(self, snap: Snapshot) -> None:
        model = self.model
        model.set_weights(snap.weights)
        optimizer = getattr(model, "optimizer", None)
        if snap.ema is not None and getattr(optimizer, "use_ema", False):
            variables = list(model.trainable_variables)
            if len(variables) != len(snap.ema):
                raise RuntimeError(
                    f"The best epoch's EMA has {len(snap.ema)} entries but the model has "
                    f"{len(variables)} trainable variables."
                )
            for var, average in zip(variables, snap.ema, strict=True):
                if average is not None:
                    var.assign(average)
        if snap.optimizer is not None and optimizer is not None:
            variables = list(optimizer.variables)
            if len(variables) != len(snap.optimizer):
                raise RuntimeError(
                    f"The best epoch's optimizer state has {len(snap.optimizer)} variables "
                    f"but the optimizer has {len(variables)}."
                )
            for var, value in zip(variables, snap.optimizer, strict=True):
                var.assign(value)

    # ---------------------------------------------------------------- resume
    def _state_dict(self) -> dict[str, Any]:
        weights_file = None
        if self.restore_best_weights and self.best is not None:
            weights_file = weights_filename(self.best_epoch)
        return {
            "monitor": self.monitor,
            "direction": self.direction,
            "best": self.best,
            "best_epoch": self.best_epoch,
            "wait": self.wait,
            "stopped_epoch": self.stopped_epoch,
            "stop_reason": self.stop_reason,
            "weights_file": weights_file,
        }

    def _load_state(self, store: StateStore, next_epoch: int) -> None:
        state = store.read_state(next_epoch)
        if state["monitor"] != self.monitor:
            raise ValueError(
                f"Argument `backup_dir` holds the state of a run monitoring "
                f"{state['monitor']!r}, not {self.monitor!r}. Received: backup_dir={self.backup_dir!r}"
            )
        self.direction = state["direction"]
        self.best = state["best"]
        self.best_epoch = state["best_epoch"]
        self.wait = state["wait"]
        self.stopped_epoch = state["stopped_epoch"]
        self.stop_reason = state["stop_reason"]
        weights_file = state["weights_file"]
        if self.restore_best_weights and weights_file:
            path = store.path(weights_file)
            if self.weights_on_disk:
                self._snapshot_file = path
            else:
                self._snapshot = load_snapshot(path)
        if self.stop_reason in OWN_REASONS:
            # The process died after this callback stopped training but
            # before training ended: stop again.
            self._halted = True
            self.model.stop_training = True

    def _resume(self, start_epoch: int | None) -> None:
        store = self._store()
        saved = store.states() if store is not None else []
        if not saved:
            return
        if start_epoch is None or start_epoch == 0:
            if start_epoch == 0:
                store.clear()  # left by an earlier run; this one starts afresh
            return
        if start_epoch in saved:
            self._load_state(store, start_epoch)
            return
        warnings.warn(
            f"EarlyStopping found no saved state for epoch {start_epoch} in "
            f"backup_dir={self.backup_dir!r} (saved: {saved}); starting with a fresh "
            "patience counter. Put EarlyStopping before BackupAndRestore in `callbacks`.",
            stacklevel=3,
        )

    # ----------------------------------------------------------------- hooks
    def on_train_begin(self, logs=None):
        # Reusable across `fit()` calls: resuming happens at the first epoch,
        # once `BackupAndRestore` (wherever it is in the list) has set it.
        if self._tmp_dir is not None:
            shutil.rmtree(self._tmp_dir, ignore_errors=True)
        self._reset()
        self._resume_pending = self.backup_dir is not None

    def on_epoch_begin(self, epoch, logs=None):
        if self._resume_pending:
            self._resume_pending = False
            self._resume(epoch)

    def on_epoch_end(self, epoch, logs=None):
        if not self._halted:
            self._update(epoch, logs)
        if self.best_epoch_key is not None and logs is not None:
            logs[self.best_epoch_key] = self.best_epoch if self.best is not None else -1
        store = self._store()
        if store is not None:
            store.write_state(epoch + 1, self._state_dict())

    def _stop(self, epoch: int, reason: str) -> None:
        self.stopped_epoch = epoch
        self.stop_reason = reason
        self.model.stop_training = True

    def _update(self, epoch: int, logs: dict | None) -> None:
        if self.direction is None:
            # Delayed until the model's metrics are built, like Keras.
            self._resolve_direction()
        current = self.get_monitor_value(logs)
        if current is None:
            return
        if self.check_finite and not math.isfinite(current):
            self._stop(epoch, "non_finite")
            return
        if epoch < self.start_from_epoch:
            return
        self.wait += 1
        improved = self._is_improvement(current, self.best)
        if improved:
            self.best = current
            self.best_epoch = epoch
            if self.restore_best_weights:
                self._record_best_weights(epoch)
            # Only restart the count when beating both the baseline and the
            # previous best.
            if self.baseline is None or self._is_improvement(current, self.baseline):
                self.wait = 0
        if self.stopping_threshold is not None and self._better_or_equal(current, self.stopping_threshold):
            self._stop(epoch, "stopping_threshold")
        elif self.divergence_threshold is not None and not self._better_or_equal(
            current, self.divergence_threshold
        ):
            self._stop(epoch, "divergence_threshold")
        elif not improved and self.wait >= self.patience and epoch > 0:
            self._stop(epoch, "patience")

    def on_train_end(self, logs=None):
        if self._resume_pending:
            # No epoch ran: the run died after its last epoch end.
            self._resume_pending = False
            self._resume((self.params or {}).get("epochs"))
        if self.stop_reason is None:
            self.stop_reason = "external" if getattr(self.model, "stop_training", False) else "completed"
        if self.stop_reason in OWN_REASONS and self.verbose > 0:
            detail = "" if self.stop_reason == "patience" else f" ({self.stop_reason})"
            print(f"Epoch {self.stopped_epoch + 1}: early stopping{detail}")
        if self.restore_best_weights:
            snap = self._snapshot
            if snap is None and self._snapshot_file is not None:
                snap = load_snapshot(self._snapshot_file)
            if snap is not None:
                if self.verbose > 0:
                    print(f"Restoring model weights from the end of the best epoch: {self.best_epoch + 1}.")
                self._restore(snap)
        store = self._store()
        if store is not None:
            store.clear()
            if self.weights_on_disk:
                self._snapshot_file = None
        if self._tmp_dir is not None:
            shutil.rmtree(self._tmp_dir, ignore_errors=True)
            self._tmp_dir = None
            self._snapshot_file = None
