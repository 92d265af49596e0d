"""Batch-size schedules inside one `fit()`: a data wrapper and its callback.

How Keras 3.15 sizes an epoch, and what this relies on
------------------------------------------------------
`fit()` builds one `EpochIterator` per call. It reads the data's
`num_batches` when it is built and in `reset()`, which `fit()` calls once
before the first epoch, and keeps that value (`EpochIterator._num_batches`) for
every epoch: each epoch then runs exactly that many steps. A `PyDataset` whose
plain `__len__` changes between epochs therefore runs the wrong number of steps
(too few drops samples; too many hits "Your input ran out of data;
interrupting training" and stops the epoch). `steps_per_epoch` is fixed per
`fit()` as well.

`ScheduledBatches.num_batches` returns a small live integer proxy instead of an
int: every numeric use (`range(n)`, comparisons, `%d`, arithmetic) reads the
batch count of the epoch the wrapper is currently set to. Keras' epoch loop
(`range(0, steps, steps_per_execution)` and the `_steps_seen >= num_batches`
check), the `PyDataset` adapter's generator (`range(num_batches)`, re-entered
every epoch) and the progress bar all do their arithmetic when the epoch
starts, after `BatchSizeScheduler.on_epoch_begin` has set the epoch's batch
size. So each epoch runs exactly `ceil(n / b_epoch)` steps over a partition
of the samples: every sample once, no warning. `tests/test_batch_size.py` pins
this Keras behaviour (and what a plain changing `__len__` does).
"""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Callable
from typing import Any

import keras
import numpy as np

from keras_trainkit import _validation as v
from keras_trainkit.callbacks import _lr_control
from keras_trainkit.callbacks._session import Participant, Session


class _BatchCount:
    """An int whose value is the wrapper's current number of batches."""

    __slots__ = ("_data",)

    def __init__(self, data: ScheduledBatches):
        self._data = data

    def __index__(self) -> int:
        return self._data._plan[2]

    __int__ = __index__

    def __float__(self) -> float:
        return float(int(self))

    def __bool__(self) -> bool:
        return int(self) != 0

    def __neg__(self) -> int:
        return -int(self)

    def __pos__(self) -> int:
        return int(self)

    def __abs__(self) -> int:
        return int(self)

    def __round__(self, ndigits=None) -> int:
        return int(self)

    def __repr__(self) -> str:
        return repr(int(self))

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return format(int(self), spec)

    __hash__ = object.__hash__


def _forward(op: Callable[[Any, Any], Any]):
    return lambda self, other: op(int(self), other)


def _reflected(op: Callable[[Any, Any], Any]):
    return lambda self, other: op(other, int(self))


for _name in ("lt", "le", "gt", "ge", "eq", "ne"):
    setattr(_BatchCount, f"__{_name}__", _forward(getattr(operator, _name)))
for _name in ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow"):
    setattr(_BatchCount, f"__{_name}__", _forward(getattr(operator, _name)))
    setattr(_BatchCount, f"__r{_name}__", _reflected(getattr(operator, _name)))


class ScheduledBatches(keras.utils.PyDataset):
    """A `PyDataset` whose batch size can change between epochs of one `fit()`.

    Pass it to `model.fit()` together with a `BatchSizeScheduler` that owns it;
    on its own it is a plain fixed-size batcher.

    Two sources are supported:

    - arrays: `x` (an array, or a dict/list/tuple of arrays), optional `y` and
      `sample_weight`, all with the same number of samples `n`. Each epoch the
      samples (shuffled per epoch when `shuffle=True`) are cut into
      `ceil(n / b)` consecutive batches of `b` (the last one smaller): every
      sample exactly once per epoch.
    - a `keras.utils.PyDataset` with a settable integer `batch_size`
      attribute that its `__len__` and `__getitem__` use (the usual pattern).
      The wrapper sets `x.batch_size` at each epoch and serves `x[i]`; the
      sample accounting is then that dataset's own. Its `on_epoch_begin`/
      `on_epoch_end` are forwarded; its `workers` settings are not used (the
      wrapper loads batches in-process).

    Keras reads a `PyDataset`'s length once per `fit()`; see this module's
    docstring for how the wrapper makes every epoch run its own number of
    steps.

    Args:
        x: Input arrays, or a `PyDataset` with a `batch_size` attribute.
        y: Targets (arrays only). Defaults to `None`.
        sample_weight: Per-sample weights (arrays only). Defaults to `None`.
        batch_size: Batch size until a scheduler sets one, an int >= 1.
            Defaults to `32`.
        shuffle: Reshuffle the samples every epoch (arrays only). Keras'
            `fit(shuffle=True)` only reorders whole batches. Defaults to `True`.
        seed: Seed of the per-epoch permutations, an int >= 0; `None` draws one
            from numpy's global generator (seeded by
            `keras.utils.set_random_seed`). Defaults to `None`.

    Example:
        >>> data = ScheduledBatches(x, y, batch_size=32)
        >>> model.fit(data, epochs=10, callbacks=[BatchSizeScheduler(
        ...     schedules.BatchSizeIncrease(32, factor=2, step_size=3), data)])
    """

    def __init__(self, x: Any, y: Any = None, sample_weight: Any = None, batch_size: int = 32,
                 shuffle: bool = True, seed: int | None = None):
        super().__init__()
        self._batch_size = v.integer("batch_size", batch_size, low=1)
        self.shuffle = v.boolean("shuffle", shuffle)
        if seed is not None:
            seed = v.integer("seed", seed, low=0)
        self.seed = int(np.random.randint(2**31 - 1)) if seed is None else seed
        self._epoch: int | None = None
        self._prepared = False
        if isinstance(x, keras.utils.PyDataset):
            for name, value in (("y", y), ("sample_weight", sample_weight)):
                if value is not None:
                    raise ValueError(
                        f"Argument `{name}` must be None when `x` is a PyDataset (it yields "
                        f"its own batches). Received: {name}={type(value).__name__}")
            if not isinstance(getattr(x, "batch_size", None), numbers.Integral):
                raise ValueError(
                    "Argument `x` must be arrays or a keras.utils.PyDataset with an integer "
                    "`batch_size` attribute that its __len__ and __getitem__ use. Received: "
                    f"x={type(x).__name__} with batch_size={getattr(x, 'batch_size', None)!r}")
            self._source = x
            self._arrays = None
            self.num_samples: int | None = None
        else:
            self._source = None
            self._arrays = self._check_arrays(x, y, sample_weight)
            self.num_samples = len(keras.tree.flatten(self._arrays)[0])
        self._plan: tuple[np.ndarray | None, int, int] = (None, 0, 0)
        self._make_plan(0, self._batch_size)

    @staticmethod
    def _check_arrays(x, y, sample_weight):
        parts = tuple(p for p in (x, y, sample_weight) if p is not None)
        if x is None:
            raise ValueError("Argument `x` must be given. Received: x=None")
        if y is None and sample_weight is not None:
            raise ValueError("Argument `sample_weight` needs `y`. Received: y=None")
        parts = keras.tree.map_structure(
            lambda a: a if isinstance(a, np.ndarray) else np.asarray(a), parts)
        sizes = {name: {len(a) if np.ndim(a) else -1 for a in keras.tree.flatten(p)}
                 for name, p in zip(("x", "y", "sample_weight"), parts)}
        all_sizes = set().union(*sizes.values())
        if len(all_sizes) != 1 or -1 in all_sizes or 0 in all_sizes:
            shown = {k: sorted(s) for k, s in sizes.items()}
            raise ValueError(
                "Arguments `x`, `y` and `sample_weight` must be arrays of rank >= 1 with the "
                f"same number (>= 1) of samples. Received sizes: {shown}")
        return parts

    # -- plan of the current epoch -------------------------------------------------
    def _make_plan(self, epoch: int, batch_size: int) -> None:
        self._epoch, self._batch_size = epoch, batch_size
        if self._source is not None:
            self._source.batch_size = batch_size
            count = len(self._source)
            self._plan = (None, batch_size, int(count))
            return
        n = self.num_samples
        order = (np.random.default_rng([self.seed, epoch]).permutation(n) if self.shuffle
                 else np.arange(n))
        self._plan = (order, batch_size, math.ceil(n / batch_size))

    def configure(self, epoch: int, batch_size: int) -> None:
        """Prepares the batches of `epoch` at `batch_size` (what the scheduler calls).

        Call it between epochs (from a callback's `on_epoch_begin`), never while
        Keras iterates an epoch.
        """
        epoch = v.integer("epoch", epoch, low=0)
        batch_size = v.integer("batch_size", batch_size, low=1)
        self._make_plan(epoch, batch_size)
        self._prepared = True

    @property
    def batch_size(self) -> int:
        """The batch size of the current epoch."""
        return self._plan[1]

    @property
    def epoch(self) -> int | None:
        """The epoch the current batches are for (`None` before the first)."""
        return self._epoch

    @property
    def num_batches(self) -> Any:
        """The current epoch's number of batches, as a live int (see the module doc)."""
        return _BatchCount(self)

    def __len__(self) -> int:
        return self._plan[2]

    def __getitem__(self, index: int):
        order, batch_size, count = self._plan
        if not 0 <= index < count:
            raise IndexError(f"Batch index {index} out of range for {count} batches.")
        if self._source is not None:
            return self._source[index]
        idx = order[index * batch_size:(index + 1) * batch_size]
        return keras.tree.map_structure(lambda a: a[idx], self._arrays)

    def on_epoch_begin(self):
        if self._prepared:  # set by the scheduler for this epoch
            self._prepared = False
        else:  # no scheduler: next permutation, same size
            self._make_plan(0 if self._epoch is None else self._epoch + 1, self._batch_size)
        if self._source is not None:
            self._source.on_epoch_begin()

    def on_epoch_end(self):
        if self._source is not None:
            self._source.on_epoch_end()


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

    Example:
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
