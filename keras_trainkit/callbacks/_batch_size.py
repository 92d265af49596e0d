"""Batch-size schedules inside one `fit()`: `BatchSizeScheduler`.

The data it schedules, `ScheduledBatches`, lives in `keras_trainkit.data`
(with how Keras sizes an epoch and what that relies on).
"""

from __future__ import annotations

import math
import numbers
from typing import Any

from keras_trainkit import _validation as v
from keras_trainkit.callbacks import _lr_control
from keras_trainkit.callbacks._session import Participant, Session
from keras_trainkit.data import ScheduledBatches, _BatchCount


class BatchSizeScheduler(Participant):
    """Changes the batch size at epoch boundaries, optionally coupling the rate.

    At the start of epoch `e` the batch size becomes

    ```
    b_e = clip(round(schedule(e)), min_batch_size, max_batch_size)
    ```

    and `data` (the `ScheduledBatches` passed to `fit()`) serves that epoch as
    `ceil(n / b_e)` batches: every sample exactly once, one optimizer update
    per batch. Out-of-range sizes from the schedule are clamped (not an error);
    a bad configuration (`min_batch_size > max_batch_size`, ...) raises
    `ValueError`.

    Learning-rate coupling (`lr_scaling`) multiplies the rate of every update
    of epoch `e` by

    ```
    f_e = s(b_e / b_ref) * schedule.learning_rate_factor(e)
    s(r) = r (linear) | sqrt(r) (sqrt) | 1 (None)
    ```

    (`b_ref = base_batch_size`, by default the clamped `schedule(0)`; the
    schedule factor is 1 except for `schedules.BatchSizeIncrease` past its
    `max_batch_size`). The factor is a term of the rate computed inside the
    train step, next to keras_trainkit's learning-rate callbacks (the rate at
    update `t` of epoch `e` is `schedule(t) * f_e`) or the optimizer's own
    rate (`rate * f_e`), for each optimizer (each sub-optimizer of a
    `MultiOptimizer`). It is a function of the epoch, set at each epoch start:
    a run resumed by `BackupAndRestore` sets it again, so it is never applied
    twice, and nothing of it stays in the optimizer after `fit()`.

    Logs: `batch_size` is added to the epoch logs (History).

    Args:
        schedule: A `schedules.BatchSizeSchedule` or any callable
            `epoch -> number`.
        data: The `ScheduledBatches` given to `fit()`.
        min_batch_size: Lower clamp, an int >= 1. Defaults to `1`.
        max_batch_size: Upper clamp, an int >= min_batch_size; `None` uses the
            number of samples of array data (no upper clamp for a
            `PyDataset`). Defaults to `None`.
        lr_scaling: `"linear"`, `"sqrt"` or `None`. Defaults to `None`.
        base_batch_size: `b_ref`, an int >= 1, or `None` for the clamped
            `schedule(0)`. Defaults to `None`.
        verbose: 1 prints the batch size at each epoch start. Defaults to `0`.

    Examples:
        >>> data = ScheduledBatches(x, y)
        >>> sched = BatchSizeScheduler(schedules.BatchSizeDecay(256, decay_epochs=10),
        ...                            data, min_batch_size=16, lr_scaling="sqrt")
        >>> model.fit(data, epochs=10, callbacks=[sched])
    """

    def __init__(self, schedule: Any, data: ScheduledBatches, min_batch_size: int = 1,
                 max_batch_size: int | None = None, lr_scaling: str | None = None,
                 base_batch_size: int | None = None, verbose: int = 0):
        super().__init__()
        if not callable(schedule):
            raise ValueError(
                "Argument `schedule` must be a BatchSizeSchedule or a callable epoch -> batch "
                f"size. Received: schedule={schedule!r}")
        if not isinstance(data, ScheduledBatches):
            raise ValueError(
                "Argument `data` must be the keras_trainkit.callbacks.ScheduledBatches passed "
                f"to fit(). Received: data={type(data).__name__}")
        self.schedule = schedule
        self.data = data
        self.min_batch_size = v.integer("min_batch_size", min_batch_size, low=1)
        if max_batch_size is not None:
            max_batch_size = v.integer("max_batch_size", max_batch_size, low=1)
            if max_batch_size < self.min_batch_size:
                raise ValueError(
                    f"Argument `max_batch_size` must be >= min_batch_size={self.min_batch_size}. "
                    f"Received: max_batch_size={max_batch_size!r}")
        elif data.num_samples is not None:
            max_batch_size = max(data.num_samples, self.min_batch_size)
        self.max_batch_size = max_batch_size
        self.lr_scaling = v.one_of("lr_scaling", lr_scaling, (None, "linear", "sqrt"))
        self.base_batch_size = (None if base_batch_size is None
                                else v.integer("base_batch_size", base_batch_size, low=1))
        self.verbose = v.integer("verbose", verbose, low=0)
        self.batch_sizes: dict[int, int] = {}

    # -- the math, usable without fit() --------------------------------------------
    def batch_size_at(self, epoch: int) -> int:
        """The clamped batch size of `epoch`."""
        raw = self.schedule(epoch)
        if not isinstance(raw, numbers.Real) or isinstance(raw, bool) or not math.isfinite(raw):
            raise ValueError(
                f"The batch-size schedule must return a finite number; at epoch {epoch} it "
                f"returned {raw!r}.")
        size = max(int(math.floor(float(raw) + 0.5)), self.min_batch_size)
        return size if self.max_batch_size is None else min(size, self.max_batch_size)

    def learning_rate_factor_at(self, epoch: int) -> float:
        """`f_e`: the rate multiplier of `epoch`, relative to the base rate."""
        ref = self.base_batch_size or self.batch_size_at(0)
        ratio = self.batch_size_at(epoch) / ref
        scale = {"linear": ratio, "sqrt": math.sqrt(ratio), None: 1.0}[self.lr_scaling]
        own = getattr(self.schedule, "learning_rate_factor", None)
        return scale * (float(own(epoch)) if own is not None else 1.0)

    @property
    def _lr_role(self) -> str | None:
        """`"factor"` when this callback scales the learning rate (see `_lr_control`)."""
        scales = self.lr_scaling is not None or getattr(self.schedule, "learning_rate_factor", None) is not None
        return "factor" if scales else None

    _shared_attributes = ("data",)  # copies share it: it is what fit() iterates

    # -- hooks ---------------------------------------------------------------------
    def _check(self, session):
        steps = (self.params or {}).get("steps")
        if steps is not None and not (isinstance(steps, _BatchCount) and steps._data is self.data):
            raise ValueError(
                "BatchSizeScheduler: fit() must iterate this scheduler's ScheduledBatches "
                "(`model.fit(data, ...)`) without `steps_per_epoch`; it got other data or a fixed "
                f"number of steps. Received: steps={steps!r}")

    def on_train_begin(self, logs=None):
        Session.begin(self)
        self.batch_sizes = {}

    def on_epoch_begin(self, epoch, logs=None):
        size = self.batch_size_at(epoch)
        self.data.configure(epoch, size)
        self.batch_sizes[epoch] = size
        factor = self.learning_rate_factor_at(epoch)
        if self.model is not None:
            for controller in _lr_control.controllers(self.model):
                controller.set_factor(factor)
        if self.verbose:
            print(f"\nEpoch {epoch + 1}: batch size {size} ({len(self.data)} batches), "
                  f"learning-rate factor {factor:.6g}")

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and epoch in self.batch_sizes:
            logs["batch_size"] = self.batch_sizes[epoch]
