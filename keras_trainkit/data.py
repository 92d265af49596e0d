"""Data helpers: small offline datasets, and batches whose size can change.

- `load_digits`: scikit-learn's digits (nothing is downloaded), for
  examples, tests and benchmarks.
- `ScheduledBatches`: a `keras.utils.PyDataset` over arrays (or another
  PyDataset) whose batch size `callbacks.BatchSizeScheduler` changes between
  epochs of one `fit()`, every sample seen once per epoch.

How Keras 3.15 sizes an epoch, and what `ScheduledBatches` relies on
------------------------------------------------------------------
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

__all__ = ["ScheduledBatches", "load_digits"]


def load_digits(validation_split: float = 0.25, seed: int = 0, images: bool = False):
    """scikit-learn's 8x8 handwritten digits (1797 samples, 10 classes).

    Pixels are scaled to [0, 1] and the split is stratified and reproducible.

    Args:
        validation_split: Fraction held out, in (0, 1). Defaults to `0.25`.
        seed: Seed of the split. Defaults to `0`.
        images: Return `(n, 8, 8, 1)` images instead of `(n, 64)` vectors.
            Defaults to `False`.

    Returns:
        `((x_train, y_train), (x_val, y_val))` with float32 inputs and int32
        labels.
    """
    from sklearn.datasets import load_digits as _load
    from sklearn.model_selection import train_test_split

    if not 0.0 < validation_split < 1.0:
        raise ValueError(
            "Argument `validation_split` must be in (0, 1). "
            f"Received: validation_split={validation_split!r}"
        )
    x, y = _load(return_X_y=True)
    x = (x / 16.0).astype("float32")
    if images:
        x = x.reshape(-1, 8, 8, 1)
    y = y.astype("int32")
    x_tr, x_va, y_tr, y_va = train_test_split(
        x, y, test_size=validation_split, random_state=seed, stratify=y
    )
    return (x_tr, y_tr), (x_va, y_va)


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

    Examples:
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
