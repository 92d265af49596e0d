"""Warm-up around any schedule, and joining schedules at step boundaries."""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Any

import keras
from keras import ops

from keras_trainkit import _validation as v
from keras_trainkit.schedules._base import (
    Schedule,
    call_schedule,
    check_schedule,
    deserialize_schedule,
    serialize_schedule,
)

_register = keras.saving.register_keras_serializable(package="keras_trainkit")

SHAPES = ("linear", "exponential", "cosine")


@_register
class WarmUp(Schedule):
    """Ramps the rate up for `warmup_steps` updates, then follows `schedule`.

    With `offset=True` (the default) the wrapped schedule starts at its own
    step 0 when the warm-up ends, so its `decay_steps` count the updates
    *after* the warm-up and the whole run lasts `warmup_steps + decay_steps`
    (Keras' `CosineDecay(warmup_steps=...)` does the same)::

        lr(t) = ramp(t)                      for t < W
        lr(t) = schedule(t - W)              for t >= W,   peak = schedule(0)

    With `offset=False` the wrapped schedule keeps counting from update 0 and
    the warm-up overrides its first `W` values (the Hugging Face convention:
    `decay_steps` then include the warm-up)::

        lr(t) = ramp(t)  for t < W,   lr(t) = schedule(t)  for t >= W,
        peak = schedule(W)

    The ramp goes from `initial_learning_rate` at `t = 0` towards the peak:

    - `"linear"`: `init + (peak - init) * t / W`
    - `"exponential"`: `init * (peak / init) ** (t / W)` (needs `init > 0`)
    - `"cosine"`: `init + (peak - init) * (1 - cos(pi * t / W)) / 2`

    Args:
        schedule: What follows the warm-up: a float >= 0 or any
            `keras.optimizers.schedules.LearningRateSchedule` (ours or Keras').
        warmup_steps: Length of the ramp in updates, an int >= 0 (0: no ramp).
        initial_learning_rate: Rate at update 0, a float >= 0. Defaults to `0.0`.
        shape: `"linear"`, `"exponential"` or `"cosine"`. Defaults to `"linear"`.
        offset: Start `schedule` at its step 0 after the ramp. Defaults to `True`.
        name: Defaults to `"WarmUp"`.

    References:
        Goyal et al., 2017. Accurate, Large Minibatch SGD: Training ImageNet in
        1 Hour. https://arxiv.org/abs/1706.02677

    Examples:
        >>> sched = WarmUp(CosineDecay(0.1, decay_steps=1000), warmup_steps=100)
        >>> float(sched(50)), float(sched(100))
        (0.05, 0.1)
    """

    def __init__(self, schedule: Any, warmup_steps: int, initial_learning_rate: float = 0.0,
                 shape: str = "linear", offset: bool = True, name: str = "WarmUp"):
        super().__init__()
        self.schedule = check_schedule("schedule", schedule)
        self.warmup_steps = v.integer("warmup_steps", warmup_steps, low=0)
        self.initial_learning_rate = v.non_negative("initial_learning_rate", initial_learning_rate)
        self.shape = v.one_of("shape", shape, SHAPES)
        if shape == "exponential" and self.initial_learning_rate <= 0:
            raise ValueError(
                "An exponential warm-up needs `initial_learning_rate` > 0. "
                f"Received: initial_learning_rate={initial_learning_rate!r}"
            )
        self.offset = v.boolean("offset", offset)
        self.name = name

    def with_base(self, base):
        """Warms up to the wrapped schedule rebased on `base` (see `Schedule.with_base`);
        the ramp's own `initial_learning_rate` is absolute and kept."""
        clone = copy.copy(self)
        inner = self.schedule
        clone.schedule = inner.with_base(base) if isinstance(inner, Schedule) else base
        return clone

    def compute(self, step):
        w = float(self.warmup_steps)
        if self.warmup_steps == 0:
            return call_schedule(self.schedule, step)
        after = ops.maximum(step - w, 0.0) if self.offset else ops.maximum(step, w)
        tail = call_schedule(self.schedule, after)
        peak_step = ops.full(ops.shape(step), 0.0 if self.offset else w, dtype="float32")
        peak = call_schedule(self.schedule, peak_step)
        frac = ops.clip(step / w, 0.0, 1.0)
        init = self.initial_learning_rate
        if self.shape == "linear":
            ramp = init + (peak - init) * frac
        elif self.shape == "cosine":
            ramp = init + (peak - init) * 0.5 * (1.0 - ops.cos(math.pi * frac))
        else:
            ramp = init * ops.power(peak / init, frac)
        return ops.where(step < w, ramp, tail)

    def get_config(self):
        return {
            "schedule": serialize_schedule(self.schedule),
            "warmup_steps": self.warmup_steps,
            "initial_learning_rate": self.initial_learning_rate,
            "shape": self.shape,
            "offset": self.offset,
            "name": self.name,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["schedule"] = deserialize_schedule(config["schedule"])
        return cls(**config)


@_register
class JoinSchedules(Schedule):
    """Runs `schedules[i]` between `boundaries[i-1]` and `boundaries[i]`.

    Each schedule restarts at its own step 0 at its boundary, as in optax's
    `join_schedules`::

        lr(t) = schedules[i](t - boundaries[i-1])   for boundaries[i-1] <= t < boundaries[i]

    Args:
        schedules: Two or more floats or LearningRateSchedules.
        boundaries: `len(schedules) - 1` strictly increasing update counts >= 1.
        name: Defaults to `"JoinSchedules"`.

    Examples:
        >>> sched = JoinSchedules([0.1, ExponentialDecay(0.1, 10, 0.5)], [5])
        >>> sched([0, 4, 5, 15])
        array([0.1 , 0.1 , 0.1 , 0.05], dtype=float32)
    """

    base_attribute = None

    def __init__(self, schedules: Sequence[Any], boundaries: Sequence[int],
                 name: str = "JoinSchedules"):
        super().__init__()
        if isinstance(schedules, (str, bytes)) or not isinstance(schedules, Sequence) or len(schedules) < 2:
            raise ValueError(
                "Argument `schedules` must be a sequence of at least two schedules. "
                f"Received: schedules={schedules!r}"
            )
        self.schedules = [check_schedule(f"schedules[{i}]", s) for i, s in enumerate(schedules)]
        self.boundaries = v.increasing_integers("boundaries", boundaries, low=1)
        if len(self.boundaries) != len(self.schedules) - 1:
            raise ValueError(
                "Argument `boundaries` must have one element fewer than `schedules` "
                f"({len(self.schedules)}). Received: boundaries={boundaries!r}"
            )
        self.name = name

    def compute(self, step):
        starts = [0, *self.boundaries]
        result = call_schedule(self.schedules[0], step)
        for start, schedule in zip(starts[1:], self.schedules[1:]):
            value = call_schedule(schedule, ops.maximum(step - float(start), 0.0))
            result = ops.where(step >= float(start), value, result)
        return result

    def get_config(self):
        return {
            "schedules": [serialize_schedule(s) for s in self.schedules],
            "boundaries": self.boundaries,
            "name": self.name,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["schedules"] = [deserialize_schedule(s) for s in config["schedules"]]
        return cls(**config)
