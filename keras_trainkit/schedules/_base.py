"""Base class of keras_trainkit's learning-rate schedules."""

from __future__ import annotations

import copy
import numbers
from typing import Any

import keras
import numpy as np
from keras import ops

_HOST_TYPES = (numbers.Number, np.ndarray, np.generic, list, tuple)


def is_host_value(step: Any) -> bool:
    """True for Python numbers, lists and numpy values (not backend tensors)."""
    return isinstance(step, _HOST_TYPES) and not isinstance(step, bool)


class Schedule(keras.optimizers.schedules.LearningRateSchedule):
    """A learning rate as a pure function of the optimizer's update count.

    Subclasses implement `compute(step)` on a float32 tensor of any shape with
    element-wise `keras.ops` only (no `cond`), so one call evaluates a whole
    array of steps. `__call__` accepts what Keras passes (the optimizer's
    `iterations` variable, a tensor) and returns a tensor; given a Python int,
    a list or a numpy array it returns numpy, which is handy for plotting:

    >>> ExponentialDecay(0.1, decay_steps=10, decay_rate=0.5)(np.arange(3))
    array([0.1       , 0.09330329, 0.08705506], dtype=float32)
    """

    def __call__(self, step: Any) -> Any:
        if is_host_value(step):
            values = self.compute(ops.convert_to_tensor(np.asarray(step, dtype="float32")))
            return ops.convert_to_numpy(values)
        return self.compute(ops.cast(step, "float32"))

    def compute(self, step: Any) -> Any:  # pragma: no cover - abstract
        """The rate at `step`, a float32 tensor of any shape (element-wise `keras.ops`)."""
        raise NotImplementedError

    def get_config(self) -> dict[str, Any]:  # pragma: no cover - abstract
        """The constructor's arguments (Keras serialization: `cls(**config)`)."""
        raise NotImplementedError

    #: The attribute holding the rate the schedule starts from and scales (its
    #: base), or `None` for a schedule with absolute values only.
    base_attribute: str | None = "initial_learning_rate"

    def with_base(self, base: Any) -> Schedule:
        """This schedule with its base rate replaced by `base`, a float or a tensor.

        The learning-rate callbacks use it to read the base from the
        optimizer's own learning-rate variable inside the train step, so that
        anything rescaling that variable (e.g. `ReduceLROnPlateau`) rescales
        the schedule, and checkpoints carry the rescaling. Absolute terms
        (`end_learning_rate`, a warm-up's `initial_learning_rate`) are kept.

        Raises:
            ValueError: for a schedule without a base (`base_attribute` is `None`).
        """
        if self.base_attribute is None:
            raise ValueError(f"{type(self).__name__} has no base rate to replace.")
        clone = copy.copy(self)
        setattr(clone, self.base_attribute, base)
        return clone

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


def call_schedule(schedule: Any, step: Any) -> Any:
    """Evaluates a float, one of our schedules or any Keras schedule at `step`.

    `step` is a float32 tensor of any shape. Our schedules are element-wise;
    a foreign schedule (Keras' `CosineDecay` uses `ops.cond`, for instance)
    takes one step at a time, so it is mapped over the steps (`ops.map`: a
    loop inside a compiled function, which a traced vector of steps needs).
    """
    if isinstance(schedule, Schedule):
        return schedule.compute(step)
    if isinstance(schedule, numbers.Real):
        return ops.full(ops.shape(step), float(schedule), dtype="float32")
    if not callable(schedule):  # a tensor or variable: a constant rate read in the step
        return ops.broadcast_to(ops.cast(schedule, "float32"), ops.shape(step))
    shape = ops.shape(step)
    if len(shape) == 0:
        return ops.cast(schedule(step), "float32")
    flat = step if len(shape) == 1 else ops.reshape(step, [-1])
    values = ops.map(lambda s: ops.cast(schedule(s), "float32"), flat)
    return values if len(shape) == 1 else ops.reshape(values, shape)


def serialize_schedule(schedule: Any) -> Any:
    """Floats stay floats; schedules become Keras serialization dicts."""
    if isinstance(schedule, numbers.Real):
        return float(schedule)
    return keras.saving.serialize_keras_object(schedule)


def deserialize_schedule(config: Any) -> Any:
    if isinstance(config, dict):
        return keras.saving.deserialize_keras_object(config)
    return config


def check_schedule(name: str, schedule: Any) -> Any:
    """A finite non-negative float or a LearningRateSchedule."""
    from keras_trainkit import _validation

    if isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule):
        return schedule
    if isinstance(schedule, numbers.Real) and not isinstance(schedule, bool):
        return _validation.non_negative(name, schedule)
    raise ValueError(
        f"Argument `{name}` must be a non-negative float or a "
        f"keras.optimizers.schedules.LearningRateSchedule. Received: {name}={schedule!r}"
    )
