"""Constant, step, exponential, polynomial and inverse-time decay."""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import ops

from keras_trainkit import _validation as v
from keras_trainkit.schedules._base import Schedule

_register = keras.saving.register_keras_serializable(package="keras_trainkit")


@_register
class Constant(Schedule):
    """A constant learning rate: `lr(t) = learning_rate`.

    Args:
        learning_rate: The rate, a finite float >= 0.
        name: Name of the schedule. Defaults to `"Constant"`.
    """

    base_attribute = "learning_rate"

    def __init__(self, learning_rate: float, name: str = "Constant"):
        super().__init__()
        self.learning_rate = v.non_negative("learning_rate", learning_rate)
        self.name = name

    def compute(self, step):
        return ops.broadcast_to(ops.cast(self.learning_rate, "float32"), ops.shape(step))

    def get_config(self):
        return {"learning_rate": self.learning_rate, "name": self.name}


@_register
class StepDecay(Schedule):
    """Multiplies the rate by `gamma` every `step_size` updates, or at milestones.

    ```
    lr(t) = initial_learning_rate * gamma ** floor(t / step_size)
    lr(t) = initial_learning_rate * gamma ** #{m in milestones : m <= t}
    ```

    The new rate applies from update `t = step_size` (or `t = m`) on, as in
    PyTorch's `StepLR`/`MultiStepLR` and optax's `piecewise_constant_schedule`.
    Note that Keras' `PiecewiseConstantDecay` switches one step later
    (at `t > boundary`).

    Args:
        initial_learning_rate: Rate at update 0, a finite float > 0.
        step_size: Decay period in updates, an int >= 1. Give this or
            `milestones`. Defaults to `None`.
        gamma: Factor in (0, 1]. Defaults to `0.1`.
        milestones: Strictly increasing update counts >= 1 at which to decay.
            Defaults to `None`.
        name: Defaults to `"StepDecay"`.

    Examples:
        >>> StepDecay(0.1, milestones=[2, 4], gamma=0.5)([0, 1, 2, 3, 4])
        array([0.1  , 0.1  , 0.05 , 0.05 , 0.025], dtype=float32)
    """

    def __init__(
        self,
        initial_learning_rate: float,
        step_size: int | None = None,
        gamma: float = 0.1,
        milestones: Sequence[int] | None = None,
        name: str = "StepDecay",
    ):
        super().__init__()
        self.initial_learning_rate = v.positive("initial_learning_rate", initial_learning_rate)
        if (step_size is None) == (milestones is None):
            raise ValueError(
                "Exactly one of `step_size` and `milestones` must be given. "
                f"Received: step_size={step_size!r}, milestones={milestones!r}"
            )
        self.step_size = None if step_size is None else v.integer("step_size", step_size, low=1)
        self.milestones = (
            None if milestones is None else v.increasing_integers("milestones", milestones, low=1)
        )
        self.gamma = v.real("gamma", gamma, low=0.0, high=1.0, low_inclusive=False)
        self.name = name

    def compute(self, step):
        if self.step_size is not None:
            k = ops.floor(step / float(self.step_size))
        else:
            milestones = ops.convert_to_tensor(self.milestones, dtype="float32")
            k = ops.sum(ops.cast(ops.expand_dims(step, -1) >= milestones, "float32"), axis=-1)
        return self.initial_learning_rate * ops.power(self.gamma, k)

    def get_config(self):
        return {
            "initial_learning_rate": self.initial_learning_rate,
            "step_size": self.step_size,
            "gamma": self.gamma,
            "milestones": self.milestones,
            "name": self.name,
        }


@_register
class ExponentialDecay(Schedule):
    """Exponential decay, Keras-compatible.

    ```
    lr(t) = initial_learning_rate * decay_rate ** (t / decay_steps)
    ```
    with `t / decay_steps` floored when `staircase=True`. Same arguments,
    defaults and values as `keras.optimizers.schedules.ExponentialDecay`,
    except that `decay_rate` must lie in (0, 1]: a growing rate overflows.

    Args:
        initial_learning_rate: Rate at update 0, a finite float > 0.
        decay_steps: Updates per factor of `decay_rate`, a finite number > 0.
        decay_rate: In (0, 1].
        staircase: Decay at discrete intervals. Defaults to `False`.
        name: Defaults to `"ExponentialDecay"`.
    """

    def __init__(self, initial_learning_rate: float, decay_steps: float, decay_rate: float,
                 staircase: bool = False, name: str = "ExponentialDecay"):
        super().__init__()
        self.initial_learning_rate = v.positive("initial_learning_rate", initial_learning_rate)
        self.decay_steps = v.positive("decay_steps", decay_steps)
        self.decay_rate = v.real("decay_rate", decay_rate, low=0.0, high=1.0, low_inclusive=False)
        self.staircase = v.boolean("staircase", staircase)
        self.name = name

    def compute(self, step):
        p = step / self.decay_steps
        if self.staircase:
            p = ops.floor(p)
        return self.initial_learning_rate * ops.power(self.decay_rate, p)

    def get_config(self):
        return {
            "initial_learning_rate": self.initial_learning_rate,
            "decay_steps": self.decay_steps,
            "decay_rate": self.decay_rate,
            "staircase": self.staircase,
            "name": self.name,
        }


@_register
class PolynomialDecay(Schedule):
    """Polynomial decay, Keras-compatible.

    ```
    lr(t) = (initial_learning_rate - end_learning_rate)
            * (1 - min(t, decay_steps) / decay_steps) ** power + end_learning_rate
    ```
    With `end_learning_rate=0` this is the guides' `lr * (1 - t/T) ** beta`.
    Past `decay_steps` the rate holds at `end_learning_rate`, unless
    `cycle=True`, in which case `decay_steps` is stretched to the next multiple
    of itself above `t` (Keras' behaviour). Same arguments, defaults and values
    as `keras.optimizers.schedules.PolynomialDecay`.

    Args:
        initial_learning_rate: Rate at update 0, a finite float > 0.
        decay_steps: Length of the decay in updates, a finite number > 0.
        end_learning_rate: Final rate, a finite float >= 0. Defaults to `0.0001`.
        power: Exponent, a finite float >= 0. Defaults to `1.0`.
        cycle: Restart the decay past `decay_steps`. Defaults to `False`.
        name: Defaults to `"PolynomialDecay"`.
    """

    def __init__(self, initial_learning_rate: float, decay_steps: float,
                 end_learning_rate: float = 0.0001, power: float = 1.0,
                 cycle: bool = False, name: str = "PolynomialDecay"):
        super().__init__()
        self.initial_learning_rate = v.positive("initial_learning_rate", initial_learning_rate)
        self.decay_steps = v.positive("decay_steps", decay_steps)
        self.end_learning_rate = v.non_negative("end_learning_rate", end_learning_rate)
        self.power = v.non_negative("power", power)
        self.cycle = v.boolean("cycle", cycle)
        self.name = name

    def compute(self, step):
        decay_steps = ops.full(ops.shape(step), self.decay_steps, dtype="float32")
        if self.cycle:
            multiplier = ops.where(ops.equal(step, 0.0), 1.0, ops.ceil(step / self.decay_steps))
            decay_steps = decay_steps * multiplier
        else:
            step = ops.minimum(step, decay_steps)
        # <= 1 exactly; with `cycle`, decay_steps * ceil(t / decay_steps) can round
        # below t in float32 at large t (Keras' then gives NaN or a negative rate).
        p = ops.minimum(step / decay_steps, 1.0)
        span = self.initial_learning_rate - self.end_learning_rate
        return span * ops.power(1.0 - p, self.power) + self.end_learning_rate

    def get_config(self):
        return {
            "initial_learning_rate": self.initial_learning_rate,
            "decay_steps": self.decay_steps,
            "end_learning_rate": self.end_learning_rate,
            "power": self.power,
            "cycle": self.cycle,
            "name": self.name,
        }


@_register
class InverseTimeDecay(Schedule):
    """Inverse-time decay, Keras-compatible.

    ```
    lr(t) = initial_learning_rate / (1 + decay_rate * t / decay_steps)
    ```
    with `t / decay_steps` floored when `staircase=True`. With
    `decay_rate=1` this is the guides' `lr / (1 + t/T)`. Same arguments,
    defaults and values as `keras.optimizers.schedules.InverseTimeDecay`.

    Args:
        initial_learning_rate: Rate at update 0, a finite float > 0.
        decay_steps: A finite number > 0.
        decay_rate: A finite float >= 0.
        staircase: Decay at discrete intervals. Defaults to `False`.
        name: Defaults to `"InverseTimeDecay"`.
    """

    def __init__(self, initial_learning_rate: float, decay_steps: float, decay_rate: float,
                 staircase: bool = False, name: str = "InverseTimeDecay"):
        super().__init__()
        self.initial_learning_rate = v.positive("initial_learning_rate", initial_learning_rate)
        self.decay_steps = v.positive("decay_steps", decay_steps)
        self.decay_rate = v.non_negative("decay_rate", decay_rate)
        self.staircase = v.boolean("staircase", staircase)
        self.name = name

    def compute(self, step):
        p = step / self.decay_steps
        if self.staircase:
            p = ops.floor(p)
        return self.initial_learning_rate / (1.0 + self.decay_rate * p)

    def get_config(self):
        return {
            "initial_learning_rate": self.initial_learning_rate,
            "decay_steps": self.decay_steps,
            "decay_rate": self.decay_rate,
            "staircase": self.staircase,
            "name": self.name,
        }
